//! The 20 ms send clock and RTP header state for one outgoing stream.
//!
//! Everything Siphon sends on a call leg (echo, tone, prompt, injected fork audio, DTMF
//! events) goes through one [`Pacer`], which is what keeps the stream well-formed whatever the
//! source: one random SSRC, sequence numbers that never skip or repeat, timestamps that
//! advance by 160 per 20 ms slot, and the marker bit on the first packet of each talk spurt.
//!
//! # Timing
//!
//! Deadlines are absolute: deadline *n* = `start + n × 20 ms`, computed from `n` every time,
//! never `previous + 20 ms` or `now + 20 ms`, so there is no accumulated drift however late
//! individual wake-ups are (180 000 packets in an hour, the last deadline exactly on the
//! hour). The driver sleeps until [`Pacer::poll_timeout`], then asks
//! [`Pacer::handle_timeout`] how many slots are due and fills each one with
//! [`Pacer::build`] (audio), [`Pacer::build_event`] (RFC 4733) or [`Pacer::idle`] (nothing to
//! send).
//!
//! # Stalls
//!
//! A wake-up up to `max_lag` late (60 ms by default) gets the backlog sent back to back:
//! timer slop and scheduler hiccups, which a receiver's jitter buffer absorbs. Later than that
//! (the process stalled, the host was suspended) the backlog is **skipped**, not burst: only
//! one slot is due and the missed slots are dropped. Their timestamps are skipped too, so the
//! stream stays in real time and the receiver sees a gap (which it conceals) rather than
//! seconds of stale audio arriving at once or a permanently grown delay; sequence numbers
//! stay continuous (nothing was lost on the wire), and the next packet carries the marker bit
//! as the start of a new talk spurt.

use std::time::{Duration, Instant};

use rand::RngExt;

use crate::packet::{RtpError, RtpPacket};
use crate::{FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};

const FRAME_NANOS: u64 = FRAME_DURATION.as_nanos() as u64;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    /// Index of the next deadline.
    tick: u64,
    /// Index of the next slot to fill (its timestamp is `initial_ts + 160 × slot`).
    slot: u64,
    max_lag: Duration,
    ssrc: u32,
    seq: u16,
    initial_ts: u32,
    marker_pending: bool,
    packets_sent: u32,
    octets_sent: u32,
    skipped: u64,
}

impl Pacer {
    /// Default lateness beyond which missed slots are skipped rather than burst.
    pub const DEFAULT_MAX_LAG: Duration = Duration::from_millis(60);

    /// A pacer whose first deadline is `start`, with explicit initial header values (tests,
    /// or a stream that must continue another one).
    pub fn new(start: Instant, ssrc: u32, initial_seq: u16, initial_ts: u32) -> Self {
        Pacer {
            start,
            tick: 0,
            slot: 0,
            max_lag: Self::DEFAULT_MAX_LAG,
            ssrc,
            seq: initial_seq,
            initial_ts,
            marker_pending: true,
            packets_sent: 0,
            octets_sent: 0,
            skipped: 0,
        }
    }

    /// A pacer with a random SSRC, initial sequence number and initial timestamp, as RFC
    /// 3550 §5.1 asks (random starting values make known-plaintext attacks on SRTP harder
    /// and let receivers tell restarts apart).
    pub fn random(start: Instant) -> Self {
        let mut rng = rand::rng();
        Self::new(start, rng.random(), rng.random(), rng.random())
    }

    /// Changes the stall threshold (see the module doc).
    pub fn with_max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = max_lag;
        self
    }

    fn deadline(&self, n: u64) -> Instant {
        self.start + Duration::from_nanos(n.saturating_mul(FRAME_NANOS))
    }

    /// When the next slot is due.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline(self.tick)
    }

    /// Returns how many slots are due at `now` (0 if called early). Each must be filled
    /// with one [`build`](Self::build), [`build_event`](Self::build_event) or
    /// [`idle`](Self::idle) call.
    pub fn handle_timeout(&mut self, now: Instant) -> u32 {
        let next = self.deadline(self.tick);
        if now < next {
            return 0;
        }
        let elapsed = now.duration_since(self.start).as_nanos() / u128::from(FRAME_NANOS);
        let newest = u64::try_from(elapsed).unwrap_or(u64::MAX);
        let mut due = newest - self.tick + 1;
        if now.duration_since(next) > self.max_lag {
            let skipped = due - 1;
            self.tick += skipped;
            self.slot = self.slot.max(self.tick);
            self.skipped += skipped;
            self.marker_pending = true;
            due = 1;
        }
        self.tick += due;
        u32::try_from(due).unwrap_or(u32::MAX)
    }

    /// The nominal time of the next slot to fill: what a jitter buffer popping in step with
    /// this pacer should be given as `now`.
    pub fn slot_time(&self) -> Instant {
        self.deadline(self.slot)
    }

    /// RTP timestamp of the next slot to fill.
    pub fn timestamp(&self) -> u32 {
        self.slot_timestamp(self.slot)
    }

    fn slot_timestamp(&self, slot: u64) -> u32 {
        // Truncating the slot count is the intended modulo-2^32 wrap.
        self.initial_ts
            .wrapping_add((slot as u32).wrapping_mul(FRAME_SAMPLES as u32))
    }

    /// The RTP timestamp corresponding to `now` on this stream's timeline (for SRs).
    pub fn rtp_timestamp_at(&self, now: Instant) -> u32 {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        let samples = nanos * u128::from(SAMPLE_RATE) / 1_000_000_000;
        self.initial_ts.wrapping_add(samples as u32)
    }

    /// Builds the audio packet for the next slot into `out`, returning its length. The
    /// marker bit is set on the first packet and on the first after an [`idle`](Self::idle)
    /// slot or a skip.
    pub fn build(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let packet = RtpPacket {
            marker: self.marker_pending,
            payload_type,
            sequence_number: self.seq,
            timestamp: self.timestamp(),
            ssrc: self.ssrc,
            payload,
        };
        let n = packet.write_to(out)?;
        self.marker_pending = false;
        self.commit(payload.len());
        Ok(n)
    }

    /// Builds a packet for the next slot with the caller's timestamp and marker: RFC 4733
    /// events keep the timestamp of the event start across all their packets. The slot's
    /// audio timestamp still advances underneath, so audio resumes in real time afterwards.
    pub fn build_event(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let packet = RtpPacket {
            marker,
            payload_type,
            sequence_number: self.seq,
            timestamp,
            ssrc: self.ssrc,
            payload,
        };
        let n = packet.write_to(out)?;
        self.commit(payload.len());
        Ok(n)
    }

    fn commit(&mut self, payload_len: usize) {
        self.seq = self.seq.wrapping_add(1);
        self.slot += 1;
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// Leaves the next slot empty (the source is silent or paused). The timestamp advances,
    /// the sequence number does not, and the next audio packet starts a talk spurt.
    pub fn idle(&mut self) {
        self.slot += 1;
        self.marker_pending = true;
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence_number(&self) -> u16 {
        self.seq
    }

    /// Packets built so far (for the SR sender info; wraps like the field).
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    /// Payload octets built so far (for the SR sender info; wraps like the field).
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    /// Slots skipped because the driver was late by more than `max_lag`.
    pub fn skipped_slots(&self) -> u64 {
        self.skipped
    }
}
