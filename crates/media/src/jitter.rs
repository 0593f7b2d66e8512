//! Adaptive jitter buffer for one incoming 8 kHz audio stream.
//!
//! # API and driving
//!
//! * [`JitterBuffer::push`] with the arrival time, the packet's RTP fields and its payload
//!   already decoded to linear PCM (the buffer is codec-agnostic; decoding into a reused
//!   scratch buffer is the caller's job, see `session`).
//! * [`JitterBuffer::pop`] once per 20 ms playout tick, with the tick's **nominal** time (the
//!   pacer deadline, not the wake-up time: two ticks handled in one late wake-up must still be
//!   20 ms apart). It writes one 160-sample frame into a caller-provided array and says what
//!   it is ([`FrameKind`]), or returns `None` while there is nothing to play yet (before the
//!   first packet, and while (re)buffering after a reset): treat that as silence.
//!
//! # How it works
//!
//! Samples, not packets, are stored: a ring of samples indexed by the extended (unwrapped)
//! RTP timestamp, with a "filled" flag per sample. The ring holds twice the largest delay
//! (at least [`MIN_CAPACITY`], at most [`CAPACITY`]): 512 ms with the default 200 ms bound.
//! So reordering is free (each packet lands at its timestamp), any packetisation (10, 20,
//! 30 ms) plays out in 20 ms frames, duplicates are packets whose first sample is already
//! filled, and a packet whose samples have all been played is too late.
//!
//! Playout delay is controlled against the *fastest* packet: `transit = arrival − timestamp`
//! (both in samples) and `base` = the minimum transit over the last 2–4 s (two rolling
//! windows, so it follows clock drift and route changes). A packet arriving `s = transit −
//! base` samples after the fastest one is on time if we play `s` or more samples behind the
//! fastest arrival. `spread` is a peak detector on `s` (instant attack, decays by ~10 % per
//! second at 50 packets/s), and the target delay is `spread` plus 5 ms of margin, clamped to
//! `[min_delay, max_delay]` (20–200 ms by default).
//!
//! At every pop the actual delay `now − base − play_position` is compared with the target:
//! below it, one frame is inserted (concealment, play position held); 30 ms or more above it,
//! one frame is dropped, or all the excess at once when it exceeds 100 ms (after a timestamp
//! jump). The asymmetric band stops it from oscillating between insert and drop.
//!
//! # Loss concealment
//!
//! A missing frame is filled by **repeating the last frame once, then silence** until audio
//! comes back. Repeating is nearly free and hides a single lost packet well for speech; past
//! 20 ms a repeated frame buzzes, so silence is the better choice. A frame that is only partly
//! present (overlapping or odd-sized packets) gets zeros for the missing samples.
//!
//! # Discontinuities
//!
//! * Sequence and timestamp wrap-around: timestamps are unwrapped to `i64` relative to the
//!   newest one; sequence numbers are compared with wrapping arithmetic.
//! * SSRC change: the buffer resets completely (new source, new timeline, adaptation state
//!   back to the initial delay) and rebuffers.
//! * Timestamp jump within one SSRC (a B2BUA switching sources, a sender restart): a packet
//!   that is the newest by sequence number but would land more than `max_delay` in the past,
//!   or beyond the ring, resyncs the timeline to it (the adaptation state is kept: the network
//!   did not change).

use std::time::{Duration, Instant};

use crate::g711::G711;
use crate::{FRAME_SAMPLES, SAMPLE_RATE};

/// Largest ring in samples (1.024 s at 8 kHz), for a `max_delay` of 500 ms.
pub const CAPACITY: usize = 8192;
/// Smallest ring in samples (512 ms at 8 kHz): twice the default 200 ms delay bound with
/// room to spare, and half of it (a packet's largest size) still exceeds any G.711 payload
/// that fits a 2 KiB datagram. Every call has a ring, so its size is most of a call's
/// memory: 8 KiB of samples here, against 16 KiB at [`CAPACITY`].
pub const MIN_CAPACITY: usize = 4096;

/// The ring size for a largest delay of `max_delay` samples: room for the delay twice over
/// (a burst arriving on top of a full delay), a power of two so a slot is a mask.
fn capacity_for(max_delay: i64) -> usize {
    usize::try_from(2 * max_delay)
        .unwrap_or(0)
        .next_power_of_two()
        .clamp(MIN_CAPACITY, CAPACITY)
}

/// Which ring slots hold a sample: a bitset over the ring's slots.
#[derive(Debug, Clone)]
struct Filled(Box<[u64]>);

impl Filled {
    fn new(capacity: usize) -> Self {
        Filled(vec![0; capacity / 64].into_boxed_slice())
    }
    /// `k` is a ring slot (see `slot`, always below the capacity).
    fn get(&self, k: usize) -> bool {
        self.0.get(k / 64).is_some_and(|w| w & (1 << (k % 64)) != 0)
    }
    fn set(&mut self, k: usize) {
        if let Some(w) = self.0.get_mut(k / 64) {
            *w |= 1 << (k % 64);
        }
    }
    fn unset(&mut self, k: usize) {
        if let Some(w) = self.0.get_mut(k / 64) {
            *w &= !(1 << (k % 64));
        }
    }
    fn clear_all(&mut self) {
        self.0.fill(0);
    }
}

const FRAME: i64 = FRAME_SAMPLES as i64;
/// Margin added to the measured delay spread (5 ms).
const MARGIN: i64 = 40;
/// Drop a frame when the delay exceeds the target by this much (30 ms).
const SHRINK_ABOVE: i64 = 240;
/// Drop all the excess at once past this (100 ms).
const JUMP_ABOVE: i64 = 800;
/// Length of one `base` window.
const BASE_WINDOW: Duration = Duration::from_secs(2);
/// Per-packet decay of the delay-spread peak detector.
const SPREAD_DECAY: f64 = 0.998;

/// Bounds for the adaptive delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest target delay (default 20 ms).
    pub min_delay: Duration,
    /// Largest target delay (default 200 ms; at most 500 ms). The ring is sized from it:
    /// 512 ms up to a 256 ms bound, 1.024 s above.
    pub max_delay: Duration,
    /// Delay to buffer before playing a new stream, before anything is measured (60 ms).
    pub initial_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            initial_delay: Duration::from_millis(60),
        }
    }
}

/// The RTP fields the buffer needs from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp (8 kHz).
    pub timestamp: u32,
    /// RTP SSRC.
    pub ssrc: u32,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Buffered,
    /// Stored after a full reset because the SSRC changed.
    NewSource,
    /// Stored after a timeline resync (timestamp jump within the same SSRC).
    Resynced,
    /// Its samples were already there.
    Duplicate,
    /// Its samples were already played.
    TooLate,
    /// Empty, longer than half the ring, or absurdly far ahead while older by sequence.
    Rejected,
}

/// What a played frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Received audio, complete.
    Audio,
    /// Received audio with some samples missing (zeros there).
    Partial,
    /// Concealment: the previous frame repeated (first frame of a gap).
    Repeat,
    /// Concealment or idle: silence.
    Silence,
}

/// One played frame's description (the samples go to the caller's array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// What the samples are.
    pub kind: FrameKind,
    /// RTP timestamp of the first sample of the frame's slot on the sender's timeline (for
    /// inserted frames, the slot that was held back).
    pub timestamp: u32,
}

/// Counters, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Packets stored.
    pub buffered: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Packets dropped as too late.
    pub late: u64,
    /// Packets rejected (empty, oversized, nonsense position).
    pub rejected: u64,
    /// Timeline resyncs within one SSRC.
    pub resyncs: u64,
    /// SSRC changes.
    pub source_changes: u64,
    /// Frames played from received audio (complete or partial).
    pub frames_audio: u64,
    /// Frames concealed by repetition.
    pub frames_repeated: u64,
    /// Silent frames (concealment past one frame, or no audio).
    pub frames_silent: u64,
    /// Frames inserted to grow the delay.
    pub frames_inserted: u64,
    /// Frames dropped to shrink the delay.
    pub frames_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Buffering { since: Instant },
    Playing,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    min_delay: i64,
    max_delay: i64,
    initial_delay: i64,
    /// The ring; its length is a power of two (see `capacity_for`).
    samples: Box<[i16]>,
    /// One bit per sample of `samples` (a bitset: 1 KiB a call instead of 8 with `bool`s).
    filled: Filled,
    state: State,
    ssrc: Option<u32>,
    /// Origin of the arrival clock (first packet of the current source).
    epoch: Option<Instant>,
    /// Extended timestamp of the newest packet (the unwrap reference).
    newest_ts: i64,
    newest_seq: u16,
    /// End (exclusive) of the furthest sample received.
    highest_end: i64,
    /// Extended timestamp of the next frame to play.
    play_ts: i64,
    base_current: i64,
    base_previous: i64,
    base_window_start: Option<Instant>,
    spread: f64,
    target: i64,
    last_frame: [i16; FRAME_SAMPLES],
    can_repeat: bool,
    stats: JitterStats,
}

fn samples_of(d: Duration) -> i64 {
    (d.as_nanos() * u128::from(SAMPLE_RATE) / 1_000_000_000) as i64
}

// The capacities are powers of two, so masking the two's-complement value is the Euclidean
// remainder without a division (this runs three times per sample).
const _: () = assert!(CAPACITY.is_power_of_two() && MIN_CAPACITY.is_power_of_two());

impl JitterBuffer {
    /// Creates an empty buffer. This is the only allocation (the ring: 8.5 KiB with the
    /// default bounds, 17 KiB for a `max_delay` above 256 ms).
    pub fn new(config: JitterConfig) -> Self {
        let max_delay = samples_of(config.max_delay).clamp(FRAME, (CAPACITY / 2) as i64);
        let capacity = capacity_for(max_delay);
        let min_delay = samples_of(config.min_delay).clamp(0, max_delay);
        let initial_delay = samples_of(config.initial_delay).clamp(min_delay, max_delay);
        JitterBuffer {
            min_delay,
            max_delay,
            initial_delay,
            samples: vec![0; capacity].into_boxed_slice(),
            filled: Filled::new(capacity),
            state: State::Idle,
            ssrc: None,
            epoch: None,
            newest_ts: 0,
            newest_seq: 0,
            highest_end: 0,
            play_ts: 0,
            base_current: i64::MAX,
            base_previous: i64::MAX,
            base_window_start: None,
            spread: 0.0,
            target: initial_delay,
            last_frame: [0; FRAME_SAMPLES],
            can_repeat: false,
            stats: JitterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current target playout delay.
    pub fn target_delay(&self) -> Duration {
        Duration::from_nanos((self.target as u64) * 1_000_000_000 / u64::from(SAMPLE_RATE))
    }

    /// Audio buffered ahead of the play position (received span, holes included).
    pub fn buffered(&self) -> Duration {
        let span = (self.highest_end - self.play_ts).max(0) as u64;
        Duration::from_nanos(span * 1_000_000_000 / u64::from(SAMPLE_RATE))
    }

    /// The SSRC currently played, if any.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Whether frames are being played (as opposed to idle or buffering).
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// The ring's size in samples.
    pub fn capacity(&self) -> usize {
        self.samples.len()
    }

    fn slot(&self, ts: i64) -> usize {
        (ts as usize) & (self.samples.len() - 1)
    }

    /// Stores a packet's decoded samples. See [`PushOutcome`] for what can happen.
    pub fn push(&mut self, now: Instant, info: PacketInfo, pcm: &[i16]) -> PushOutcome {
        self.push_with(now, info, pcm, |s| s)
    }

    /// Stores a G.711 packet, decoding it straight into the ring (no scratch buffer: a
    /// packet-sized one per call would be as large as the ring).
    pub fn push_g711(
        &mut self,
        now: Instant,
        info: PacketInfo,
        law: G711,
        payload: &[u8],
    ) -> PushOutcome {
        self.push_with(now, info, payload, |code| law.decode_sample(code))
    }

    /// [`JitterBuffer::push`] of `input`'s samples converted by `decode`, one each.
    fn push_with<T: Copy>(
        &mut self,
        now: Instant,
        info: PacketInfo,
        input: &[T],
        decode: impl Fn(T) -> i16,
    ) -> PushOutcome {
        let capacity = self.capacity();
        let len = input.len() as i64;
        if input.is_empty() || input.len() > capacity / 2 {
            self.stats.rejected += 1;
            return PushOutcome::Rejected;
        }
        let mut outcome = PushOutcome::Buffered;
        if self.ssrc != Some(info.ssrc) {
            if self.ssrc.is_some() {
                self.stats.source_changes += 1;
                outcome = PushOutcome::NewSource;
            }
            self.reset_source(info.ssrc);
        }
        if self.state == State::Idle {
            self.start_timeline(now, info);
        }

        let delta = info.timestamp.wrapping_sub(self.newest_ts as u32) as i32;
        let mut ts = self.newest_ts + i64::from(delta);
        let seq_delta = info.sequence_number.wrapping_sub(self.newest_seq) as i16;
        let newest_by_seq = seq_delta > 0;

        let buffering = matches!(self.state, State::Buffering { .. });
        let too_far_ahead = ts + len > self.play_ts + capacity as i64;
        // While buffering, earlier packets simply move the start of playout back.
        let too_far_behind = if buffering {
            ts < self.highest_end - capacity as i64 + len
        } else {
            ts + len <= self.play_ts && self.play_ts - ts > self.max_delay
        };
        if too_far_ahead || too_far_behind {
            if !newest_by_seq {
                if too_far_ahead {
                    self.stats.rejected += 1;
                    return PushOutcome::Rejected;
                }
                self.stats.late += 1;
                return PushOutcome::TooLate;
            }
            self.stats.resyncs += 1;
            self.clear_ring();
            self.state = State::Idle;
            self.start_timeline(now, info);
            ts = self.newest_ts;
            if outcome == PushOutcome::Buffered {
                outcome = PushOutcome::Resynced;
            }
        }

        if buffering && ts < self.play_ts {
            self.play_ts = ts;
        }
        let mut start = ts;
        if start < self.play_ts {
            if ts + len <= self.play_ts {
                self.stats.late += 1;
                self.observe(now, ts);
                return PushOutcome::TooLate;
            }
            start = self.play_ts; // keep the part not yet played
        }
        if self.filled.get(self.slot(start)) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        let from = input.get((start - ts) as usize..).unwrap_or_default();
        for (i, &s) in from.iter().enumerate() {
            let k = self.slot(start + i as i64);
            self.samples[k] = decode(s);
            self.filled.set(k);
        }
        if newest_by_seq || ts > self.newest_ts {
            self.newest_ts = self.newest_ts.max(ts);
            self.newest_seq = if newest_by_seq {
                info.sequence_number
            } else {
                self.newest_seq
            };
        }
        self.highest_end = self.highest_end.max(ts + len);
        self.observe(now, ts);
        self.stats.buffered += 1;
        outcome
    }

    /// Updates the delay model with one arrival.
    fn observe(&mut self, now: Instant, ts: i64) {
        let Some(epoch) = self.epoch else { return };
        let arrival = samples_of(now.saturating_duration_since(epoch));
        let transit = arrival - ts;
        let window_start = *self.base_window_start.get_or_insert(now);
        if now.saturating_duration_since(window_start) >= BASE_WINDOW {
            if self.base_current != i64::MAX {
                self.base_previous = self.base_current;
            }
            self.base_current = i64::MAX;
            self.base_window_start = Some(now);
        }
        self.base_current = self.base_current.min(transit);
        let base = self.base();
        let s = (transit - base) as f64;
        self.spread = (self.spread * SPREAD_DECAY).max(s);
        self.target = (self.spread as i64 + MARGIN).clamp(self.min_delay, self.max_delay);
    }

    fn base(&self) -> i64 {
        self.base_current.min(self.base_previous)
    }

    fn reset_source(&mut self, ssrc: u32) {
        self.clear_ring();
        self.ssrc = Some(ssrc);
        self.state = State::Idle;
        // The initial delay is the prior: it decays towards what is measured (~13 s from
        // 60 ms to 20 ms on a clean network) instead of being forgotten at the first packet.
        self.spread = (self.initial_delay - MARGIN).max(0) as f64;
        self.target = self.initial_delay;
        self.can_repeat = false;
    }

    /// Anchors a new timeline (arrival clock, timestamps, base) on this packet.
    fn start_timeline(&mut self, now: Instant, info: PacketInfo) {
        // Extended timestamps start one wrap up so that reordered packets from before the
        // first one never go negative.
        let ts = (1i64 << 32) + i64::from(info.timestamp);
        self.epoch = Some(now);
        self.newest_ts = ts;
        self.newest_seq = info.sequence_number;
        self.highest_end = ts;
        self.play_ts = ts;
        self.base_current = i64::MAX;
        self.base_previous = i64::MAX;
        self.base_window_start = None;
        self.state = State::Buffering { since: now };
    }

    fn clear_ring(&mut self) {
        self.filled.clear_all();
    }

    /// Plays one 20 ms frame; `now` is the tick's nominal time. See the module doc.
    pub fn pop(&mut self, now: Instant, out: &mut [i16; FRAME_SAMPLES]) -> Option<Frame> {
        match self.state {
            State::Idle => return None,
            State::Buffering { since } => {
                let waited = samples_of(now.saturating_duration_since(since));
                if waited < self.target {
                    return None;
                }
                self.state = State::Playing;
            }
            State::Playing => {}
        }
        let base = self.base();
        let delay = match self.epoch {
            Some(epoch) if base != i64::MAX => {
                samples_of(now.saturating_duration_since(epoch)) - base - self.play_ts
            }
            _ => self.target,
        };
        if delay < self.target {
            // Grow: hold the play position for one frame.
            self.stats.frames_inserted += 1;
            let timestamp = self.play_ts as u32;
            return Some(self.conceal(out, timestamp));
        }
        let excess = delay - self.target;
        if excess >= SHRINK_ABOVE {
            let frames = if excess > JUMP_ABOVE {
                (excess - MARGIN) / FRAME
            } else {
                1
            };
            if frames * FRAME >= self.capacity() as i64 {
                // Nothing buffered can survive a jump this long (pop was not called for a
                // while): clear everything once instead of frame by frame.
                self.clear_ring();
                self.play_ts += frames * FRAME;
            } else {
                for _ in 0..frames {
                    self.clear_frame(self.play_ts);
                    self.play_ts += FRAME;
                }
            }
            self.stats.frames_dropped += frames as u64;
        }

        let timestamp = self.play_ts as u32;
        let mut present = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let k = self.slot(self.play_ts + i as i64);
            if self.filled.get(k) {
                *o = self.samples[k];
                self.filled.unset(k);
                present += 1;
            } else {
                *o = 0;
            }
        }
        self.play_ts += FRAME;
        if present == 0 {
            return Some(self.conceal(out, timestamp));
        }
        self.last_frame.copy_from_slice(out);
        self.can_repeat = true;
        self.stats.frames_audio += 1;
        let kind = if present == FRAME_SAMPLES {
            FrameKind::Audio
        } else {
            FrameKind::Partial
        };
        Some(Frame { kind, timestamp })
    }

    fn conceal(&mut self, out: &mut [i16; FRAME_SAMPLES], timestamp: u32) -> Frame {
        let kind = if self.can_repeat {
            self.can_repeat = false;
            out.copy_from_slice(&self.last_frame);
            self.stats.frames_repeated += 1;
            FrameKind::Repeat
        } else {
            out.fill(0);
            self.stats.frames_silent += 1;
            FrameKind::Silence
        };
        Frame { kind, timestamp }
    }

    fn clear_frame(&mut self, ts: i64) {
        for i in 0..FRAME {
            let k = self.slot(ts + i);
            self.filled.unset(k);
        }
    }
}
