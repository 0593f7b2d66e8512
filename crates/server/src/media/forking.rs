//! The server's side of one media fork: turns a call leg's 20 ms frames (8 kHz linear, the
//! caller's and what Siphon plays) into the fork's wire format, and the service's audio back
//! into 8 kHz linear for the pacer. The WebSocket itself lives in `siphon_fork`; this owns
//! only the per-fork conversion state (resampler histories, a reusable frame buffer), so the
//! media task converts without locks and without touching other calls.

use bytes::{BufMut, BytesMut};
use siphon_fork::{AudioFormat, Encoding, Fork, ForkConfig, Mix, ServiceCommand, Tracks};
use siphon_media::FRAME_SAMPLES;
use siphon_media::g711::G711;
use siphon_media::resample::{Downsampler, Upsampler};
use tokio::time::Instant;

use crate::fork_metrics::ForkRegistration;

const WIDE: usize = 2 * FRAME_SAMPLES;

/// What a fork's service asked for during one pacer slot, beyond audio.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Hang up the call.
    Hangup,
    /// A required fork could not connect: end the call.
    Failed(String),
    /// Send these digits to the caller.
    Dtmf(String),
    /// Transfer the caller to this target (the native `transfer` command).
    Transfer(String),
}

pub struct ForkTap {
    /// The fork's name in the admin API and metrics.
    pub id: String,
    pub fork: Fork,
    /// Metrics registration; dropping it moves the fork's counts into the totals.
    pub registration: ForkRegistration,
    pub required: bool,
    format: AudioFormat,
    tracks: Tracks,
    mix: Mix,
    up_in: Upsampler,
    up_out: Upsampler,
    down: Downsampler,
    frame: BytesMut,
    /// Caller frames waiting for their slot's outbound frame (tracks = both), so the two
    /// tracks of a stereo frame belong to the same 20 ms.
    pending_inbound: std::collections::VecDeque<([i16; FRAME_SAMPLES], Instant)>,
    /// The service's next piece of audio, taken one slot ahead of playing it: a 20 ms
    /// cushion, so a frame of a real-time stream that reaches us a little late (WebSocket
    /// and scheduling jitter) still plays in its slot instead of leaving a silent one.
    ahead: Option<(AudioFormat, bytes::Bytes)>,
    /// Service audio is playing (the cushion is primed).
    playing: bool,
}

/// Polls every fork of a call (see `siphon_fork::Fork::drive`); pending forever, so the
/// media task's select loop wakes for a fork's socket or timer, lets the forks act, and
/// waits again. Answered and bridged calls both run their forks this way (inline).
pub fn drive_forks(taps: &mut [ForkTap]) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        for tap in taps.iter_mut() {
            tap.fork.drive(cx);
        }
        std::task::Poll::Pending
    })
}

/// Most caller frames kept waiting for a slot (tracks = both): 200 ms.
const MAX_PENDING: usize = 10;
/// Frames the encode buffer holds before it is reclaimed or replaced.
const FRAME_BUFFER: usize = 2;

impl ForkTap {
    pub fn new(
        id: String,
        fork: Fork,
        config: &ForkConfig,
        registration: ForkRegistration,
    ) -> ForkTap {
        let format = config.effective_format();
        ForkTap {
            id,
            registration,
            fork,
            required: config.required,
            format,
            tracks: config.tracks,
            mix: config.effective_mix(),
            up_in: Upsampler::new(),
            up_out: Upsampler::new(),
            down: Downsampler::new(),
            // Room for two frames: the fork writes a frame to its socket as soon as it is
            // built, so the buffer is usually free again by the next one (`push` reclaims it).
            frame: BytesMut::with_capacity(format.frame_bytes() * FRAME_BUFFER),
            // Caller frames wait for their slot only when both tracks are forked.
            pending_inbound: std::collections::VecDeque::with_capacity(
                if config.tracks == Tracks::Both {
                    MAX_PENDING
                } else {
                    0
                },
            ),
            ahead: None,
            playing: false,
        }
    }

    /// Which tracks this fork takes.
    pub fn tracks(&self) -> Tracks {
        self.tracks
    }

    /// A caller frame, as soon as it is in order (see [`InOrder`]): sent at once when only
    /// the caller's track is forked, else kept for the next slot.
    pub fn on_inbound(&mut self, frame: &[i16; FRAME_SAMPLES], arrival: Instant) {
        match self.tracks {
            Tracks::Inbound => self.push(Some(frame), None, arrival),
            Tracks::Outbound => {}
            Tracks::Both => {
                if self.pending_inbound.len() == MAX_PENDING {
                    self.pending_inbound.pop_front();
                }
                self.pending_inbound.push_back((*frame, arrival));
            }
        }
    }

    /// A pacer slot: what Siphon played in it (if anything) goes out on the outbound track,
    /// paired with the oldest waiting caller frame when both tracks are forked.
    pub fn on_slot(&mut self, played: Option<&[i16; FRAME_SAMPLES]>, now: Instant) {
        match self.tracks {
            Tracks::Inbound => {}
            Tracks::Outbound => self.push(None, played, now),
            Tracks::Both => {
                let inbound = self.pending_inbound.pop_front();
                let arrival = inbound.as_ref().map_or(now, |(_, at)| *at);
                self.push(inbound.as_ref().map(|(f, _)| f), played, arrival);
            }
        }
    }

    /// Sends one frame's audio to the fork. `None` for a track means nothing was heard or
    /// played in this slot; it is sent as silence when the other track has audio, so both
    /// tracks stay aligned slot by slot.
    fn push(
        &mut self,
        inbound: Option<&[i16; FRAME_SAMPLES]>,
        outbound: Option<&[i16; FRAME_SAMPLES]>,
        arrival: Instant,
    ) {
        let silence = [0i16; FRAME_SAMPLES];
        let (a, b) = match self.tracks {
            Tracks::Inbound => match inbound {
                Some(i) => (i, None),
                None => return,
            },
            Tracks::Outbound => match outbound {
                Some(o) => (o, None),
                None => return,
            },
            Tracks::Both => {
                if inbound.is_none() && outbound.is_none() {
                    return;
                }
                (
                    inbound.unwrap_or(&silence),
                    Some(outbound.unwrap_or(&silence)),
                )
            }
        };
        encode_frame(
            self.format,
            self.mix,
            a,
            b,
            (&mut self.up_in, &mut self.up_out),
            &mut self.frame,
        );
        // `split` hands the bytes over without copying; the buffer's spare capacity is
        // reused for the next frames until it runs out.
        let bytes = self.frame.split().freeze();
        if self.frame.capacity() < self.format.frame_bytes() {
            // Reuses the allocation in place once the frames cut from it are written;
            // a new one only while they still wait (a slow or disconnected service).
            self.frame.reserve(self.format.frame_bytes() * FRAME_BUFFER);
        }
        self.fork.send_audio(bytes, arrival);
    }

    /// This slot's service audio, decoded into `out` (returns true then), and the commands
    /// that came before it. Audio plays one slot behind its arrival: the first piece after
    /// silence waits a slot (priming), and while playing, the next piece is taken as the
    /// current one plays, so one late piece costs no gap. Marks are acknowledged as the
    /// audio before them goes out.
    pub fn take_playback(
        &mut self,
        out: &mut [i16; FRAME_SAMPLES],
        requests: &mut Vec<Request>,
    ) -> bool {
        if self.ahead.is_none() {
            self.ahead = self.next_audio(requests);
            if self.ahead.is_some() && !self.playing {
                self.playing = true;
                return false;
            }
        }
        let Some((format, data)) = self.ahead.take() else {
            self.playing = false;
            return false;
        };
        self.ahead = self.next_audio(requests);
        let played = decode_frame(format, &data, &mut self.down, out);
        if played {
            self.registration.frame_played();
        }
        played
    }

    /// Runs the service's commands up to its next piece of audio, which it returns.
    fn next_audio(&mut self, requests: &mut Vec<Request>) -> Option<(AudioFormat, bytes::Bytes)> {
        while let Some(cmd) = self.fork.try_recv() {
            match cmd {
                ServiceCommand::Audio { format, data } => return Some((format, data)),
                ServiceCommand::Mark(name) => {
                    self.registration.mark_played();
                    self.fork.mark_played(name);
                }
                // The fork dropped its queue; the piece in hand goes too.
                ServiceCommand::Clear => {
                    self.ahead = None;
                    self.playing = false;
                }
                ServiceCommand::Hangup => requests.push(Request::Hangup),
                ServiceCommand::Dtmf(digits) => requests.push(Request::Dtmf(digits)),
                ServiceCommand::Transfer(to) => requests.push(Request::Transfer(to)),
                ServiceCommand::Failed(reason) => {
                    if self.required {
                        requests.push(Request::Failed(reason));
                    } else {
                        tracing::warn!(%reason, "best-effort fork failed; the call goes on");
                    }
                }
                ServiceCommand::Event { name, data } => {
                    tracing::info!(%name, %data, "fork event");
                }
            }
        }
        None
    }
}

/// Writes one 20 ms frame in `format`: `a` alone (mono), or `a` and `b` as stereo
/// (interleaved, a = left) or mixed to mono, at 8 or 16 kHz, G.711 or 16-bit little-endian.
pub fn encode_frame(
    format: AudioFormat,
    mix: Mix,
    a: &[i16; FRAME_SAMPLES],
    b: Option<&[i16; FRAME_SAMPLES]>,
    upsamplers: (&mut Upsampler, &mut Upsampler),
    out: &mut BytesMut,
) {
    let mut mixed = [0i16; FRAME_SAMPLES];
    let (a, b) = match (b, mix, format.channels) {
        (Some(b), Mix::Mono, _) | (Some(b), _, 1) => {
            for ((m, x), y) in mixed.iter_mut().zip(a).zip(b) {
                *m = x.saturating_add(*y);
            }
            (&mixed, None)
        }
        (b, _, _) => (a, b),
    };
    let mut wide_a = [0i16; WIDE];
    let mut wide_b = [0i16; WIDE];
    let (sa, sb): (&[i16], Option<&[i16]>) = if format.sample_rate == 16000 {
        upsamplers.0.process_frame(a, &mut wide_a);
        let sb = b.map(|b| {
            upsamplers.1.process_frame(b, &mut wide_b);
            &wide_b[..]
        });
        (&wide_a[..], sb)
    } else {
        (&a[..], b.map(|b| &b[..]))
    };
    let law = match format.encoding {
        Encoding::Pcmu => Some(G711::Pcmu),
        Encoding::Pcma => Some(G711::Pcma),
        Encoding::L16 => None,
    };
    let mut put = |s: i16| match law {
        Some(law) => out.put_u8(law.encode_sample(s)),
        None => out.put_i16_le(s),
    };
    match sb {
        Some(sb) => {
            for (x, y) in sa.iter().zip(sb) {
                put(*x);
                put(*y);
            }
        }
        None => sa.iter().for_each(|x| put(*x)),
    }
}

/// Decodes one piece of service audio into 20 ms of 8 kHz linear (first channel when
/// several); a short piece is padded with silence. Returns false for nothing usable.
pub fn decode_frame(
    format: AudioFormat,
    data: &[u8],
    down: &mut Downsampler,
    out: &mut [i16; FRAME_SAMPLES],
) -> bool {
    let channels = usize::from(format.channels.max(1));
    let law = match format.encoding {
        Encoding::Pcmu => Some(G711::Pcmu),
        Encoding::Pcma => Some(G711::Pcma),
        Encoding::L16 => None,
    };
    let width = if law.is_some() { 1 } else { 2 };
    let sample = |i: usize| -> i16 {
        let at = i * channels * width;
        match law {
            Some(law) => data.get(at).map_or(0, |b| law.decode_sample(*b)),
            None => match (data.get(at), data.get(at + 1)) {
                (Some(lo), Some(hi)) => i16::from_le_bytes([*lo, *hi]),
                _ => 0,
            },
        }
    };
    let frames_in = data.len() / (channels * width);
    if frames_in == 0 {
        return false;
    }
    if format.sample_rate == 16000 {
        let mut wide = [0i16; WIDE];
        for (i, w) in wide.iter_mut().enumerate() {
            *w = sample(i);
        }
        down.process_frame(&wide, out);
    } else {
        for (i, o) in out.iter_mut().enumerate() {
            *o = sample(i);
        }
    }
    true
}

/// Most samples one RTP packet may carry for the fork path (60 ms).
const MAX_PACKET: usize = 3 * FRAME_SAMPLES;
/// Out-of-order packets held while waiting for a missing one.
const HOLD: usize = 4;
/// A jump in sequence numbers this large is a new stream, not loss.
const RESTART_GAP: u16 = 100;

/// The caller's audio for forks: packets in sequence order as soon as they can be, cut into
/// 20 ms frames. Unlike the playout jitter buffer it never waits for a playout slot, never
/// conceals and never drops audio to shrink its delay: services get every frame the caller
/// sent, in order, with only loopback-scale latency. A packet arriving early (a gap before
/// it) is held until the gap fills or [`HOLD`] packets are waiting (or a slot tick finds
/// them older than 60 ms); then the gap is skipped.
pub struct InOrder {
    expected: Option<u16>,
    ssrc: Option<u32>,
    held: Vec<(u16, usize, [i16; MAX_PACKET], Instant)>,
    carry: [i16; FRAME_SAMPLES],
    carried: usize,
    /// Packets that came too late (already skipped) or twice.
    pub discarded: u64,
}

impl Default for InOrder {
    fn default() -> Self {
        InOrder {
            expected: None,
            ssrc: None,
            held: Vec::with_capacity(HOLD),
            carry: [0; FRAME_SAMPLES],
            carried: 0,
            discarded: 0,
        }
    }
}

impl InOrder {
    /// Takes one decoded packet; `emit` gets every 20 ms frame that became ready.
    pub fn push(
        &mut self,
        ssrc: u32,
        seq: u16,
        samples: &[i16],
        arrival: Instant,
        emit: &mut impl FnMut(&[i16; FRAME_SAMPLES], Instant),
    ) {
        let samples = &samples[..samples.len().min(MAX_PACKET)];
        if self.ssrc != Some(ssrc) {
            self.flush_held(emit);
            self.ssrc = Some(ssrc);
            self.expected = None;
        }
        let Some(expected) = self.expected else {
            self.expected = Some(seq.wrapping_add(1));
            self.cut(samples, arrival, emit);
            return;
        };
        let ahead = seq.wrapping_sub(expected);
        if ahead == 0 {
            self.expected = Some(seq.wrapping_add(1));
            self.cut(samples, arrival, emit);
            self.release_in_order(emit);
        } else if ahead >= u16::MAX / 2 || self.held.iter().any(|h| h.0 == seq) {
            self.discarded += 1; // late (its gap was skipped) or a duplicate
        } else if ahead > RESTART_GAP {
            self.flush_held(emit);
            self.expected = Some(seq.wrapping_add(1));
            self.cut(samples, arrival, emit);
        } else {
            let mut buf = [0i16; MAX_PACKET];
            buf[..samples.len()].copy_from_slice(samples);
            self.held.push((seq, samples.len(), buf, arrival));
            if self.held.len() >= HOLD {
                self.flush_held(emit);
            }
        }
    }

    /// Called every slot: gives up on a gap once the held packets are 60 ms old.
    pub fn tick(&mut self, now: Instant, emit: &mut impl FnMut(&[i16; FRAME_SAMPLES], Instant)) {
        if self
            .held
            .iter()
            .any(|h| now.saturating_duration_since(h.3) >= std::time::Duration::from_millis(60))
        {
            self.flush_held(emit);
        }
    }

    fn release_in_order(&mut self, emit: &mut impl FnMut(&[i16; FRAME_SAMPLES], Instant)) {
        while let Some(expected) = self.expected
            && let Some(i) = self.held.iter().position(|h| h.0 == expected)
        {
            let (seq, len, buf, at) = self.held.swap_remove(i);
            self.expected = Some(seq.wrapping_add(1));
            self.cut(&buf[..len], at, emit);
        }
    }

    /// Skips the gap: releases everything held, in sequence order.
    fn flush_held(&mut self, emit: &mut impl FnMut(&[i16; FRAME_SAMPLES], Instant)) {
        let Some(expected) = self.expected else {
            self.held.clear();
            return;
        };
        self.held.sort_by_key(|h| h.0.wrapping_sub(expected));
        let held = std::mem::take(&mut self.held);
        for (seq, len, buf, at) in &held {
            self.expected = Some(seq.wrapping_add(1));
            self.cut(&buf[..*len], *at, emit);
        }
        self.held = held;
        self.held.clear();
    }

    fn cut(
        &mut self,
        mut samples: &[i16],
        arrival: Instant,
        emit: &mut impl FnMut(&[i16; FRAME_SAMPLES], Instant),
    ) {
        while !samples.is_empty() {
            let take = (FRAME_SAMPLES - self.carried).min(samples.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&samples[..take]);
            self.carried += take;
            samples = &samples[take..];
            if self.carried == FRAME_SAMPLES {
                self.carried = 0;
                emit(&self.carry, arrival);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn fmt(encoding: Encoding, sample_rate: u32, channels: u8) -> AudioFormat {
        AudioFormat {
            encoding,
            sample_rate,
            channels,
        }
    }

    fn ramp(start: i16) -> [i16; FRAME_SAMPLES] {
        std::array::from_fn(|i| start + i as i16)
    }

    #[test]
    fn l16_mono_is_little_endian_samples() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let a = ramp(100);
        encode_frame(
            fmt(Encoding::L16, 8000, 1),
            Mix::Mono,
            &a,
            None,
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(out.len(), 320);
        assert_eq!(i16::from_le_bytes([out[0], out[1]]), 100);
        assert_eq!(i16::from_le_bytes([out[318], out[319]]), 259);
    }

    #[test]
    fn stereo_interleaves_caller_left() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let (a, b) = (ramp(0), ramp(1000));
        encode_frame(
            fmt(Encoding::L16, 8000, 2),
            Mix::Stereo,
            &a,
            Some(&b),
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(out.len(), 640);
        let s = |i: usize| i16::from_le_bytes([out[2 * i], out[2 * i + 1]]);
        assert_eq!((s(0), s(1), s(2), s(3)), (0, 1000, 1, 1001));
    }

    #[test]
    fn mono_mix_sums_with_saturation() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let a = [30000i16; FRAME_SAMPLES];
        let b = [10000i16; FRAME_SAMPLES];
        encode_frame(
            fmt(Encoding::L16, 8000, 1),
            Mix::Mono,
            &a,
            Some(&b),
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(i16::from_le_bytes([out[0], out[1]]), i16::MAX);
    }

    #[test]
    fn ulaw_passthrough_is_one_byte_per_sample_and_round_trips() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let mut a = [0i16; FRAME_SAMPLES];
        G711::Pcmu.decode(&[0x12; FRAME_SAMPLES], &mut a);
        encode_frame(
            fmt(Encoding::Pcmu, 8000, 1),
            Mix::Mono,
            &a,
            None,
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(&out[..], &[0x12; FRAME_SAMPLES][..]);
    }

    #[test]
    fn wideband_doubles_the_samples_and_comes_back() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let mut down = Downsampler::new();
        let mut back = [0i16; FRAME_SAMPLES];
        // A 500 Hz tone survives 8 -> 16 -> 8 kHz (after the filters' delay).
        let mut energy = 0f64;
        for n in 0..10 {
            let a: [i16; FRAME_SAMPLES] = std::array::from_fn(|i| {
                let t = (n * FRAME_SAMPLES + i) as f64 / 8000.0;
                (10000.0 * (2.0 * std::f64::consts::PI * 500.0 * t).sin()) as i16
            });
            out.clear();
            encode_frame(
                fmt(Encoding::L16, 16000, 1),
                Mix::Mono,
                &a,
                None,
                (&mut u1, &mut u2),
                &mut out,
            );
            assert_eq!(out.len(), 640);
            assert!(decode_frame(
                fmt(Encoding::L16, 16000, 1),
                &out,
                &mut down,
                &mut back
            ));
            if n >= 5 {
                energy += back.iter().map(|s| (*s as f64).powi(2)).sum::<f64>();
            }
        }
        let rms = (energy / (5.0 * FRAME_SAMPLES as f64)).sqrt();
        assert!((rms - 10000.0 / 2f64.sqrt()).abs() < 300.0, "rms {rms}");
    }

    fn run(order: &[u16]) -> (Vec<i16>, u64) {
        let mut q = InOrder::default();
        let now = Instant::now();
        let mut out = Vec::new();
        for seq in order {
            let frame = [*seq as i16; FRAME_SAMPLES];
            q.push(7, *seq, &frame, now, &mut |f, _| out.push(f[0]));
        }
        q.tick(now + std::time::Duration::from_millis(100), &mut |f, _| {
            out.push(f[0])
        });
        (out, q.discarded)
    }

    #[test]
    fn in_order_passes_straight_through() {
        assert_eq!(run(&[1, 2, 3, 4]).0, vec![1, 2, 3, 4]);
    }

    #[test]
    fn reordered_packets_come_out_in_order_and_duplicates_are_dropped() {
        assert_eq!(run(&[1, 3, 2, 4, 4, 2]), (vec![1, 2, 3, 4], 2));
    }

    #[test]
    fn a_lost_packet_is_skipped_after_the_hold_or_the_tick() {
        assert_eq!(run(&[1, 3, 4, 5, 6, 7]).0, vec![1, 3, 4, 5, 6, 7]);
        assert_eq!(run(&[1, 3]).0, vec![1, 3]);
        // The lost one arriving after it was skipped is discarded, not replayed.
        assert_eq!(run(&[1, 3, 4, 5, 6, 2]), (vec![1, 3, 4, 5, 6], 1));
    }

    #[test]
    fn sequence_wraps_and_new_streams_restart() {
        assert_eq!(run(&[65534, 65535, 0, 1]).0, vec![-2, -1, 0, 1]);
        assert_eq!(run(&[10, 11, 5000, 5001]).0, vec![10, 11, 5000, 5001]);
    }

    #[test]
    fn thirty_ms_packets_are_cut_into_20_ms_frames() {
        let mut q = InOrder::default();
        let now = Instant::now();
        let mut frames = 0;
        for seq in 0..4u16 {
            q.push(1, seq, &[1i16; 240], now, &mut |_, _| frames += 1);
        }
        assert_eq!(frames, 6);
    }

    #[test]
    fn decode_takes_the_first_channel_and_pads_short_pieces() {
        let mut down = Downsampler::new();
        let mut out = [7i16; FRAME_SAMPLES];
        let data: Vec<u8> = [5i16, -5, 6, -6]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert!(decode_frame(
            fmt(Encoding::L16, 8000, 2),
            &data,
            &mut down,
            &mut out
        ));
        assert_eq!(&out[..3], &[5, 6, 0]);
        assert!(!decode_frame(
            fmt(Encoding::L16, 8000, 1),
            &[1],
            &mut down,
            &mut out
        ));
    }
}
