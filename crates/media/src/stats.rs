//! Receiver statistics for one remote source, as RFC 3550 Appendix A defines them: sequence
//! tracking with probation (A.1), expected/lost counts and the fraction lost per reporting
//! interval (A.3), and the interarrival jitter estimator (A.8).
//!
//! The code follows the RFC's reference C closely on purpose, so that the numbers we put in
//! receiver reports mean what the peer's monitoring expects them to mean. One deliberate
//! difference: A.8 as printed also feeds the very first packet into the estimator, against an
//! initial transit of 0, which yields a meaningless first jump; we start the estimator at the
//! second packet, as most implementations do.

use std::time::{Duration, Instant};

use crate::rtcp::ReportBlock;

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// What [`ReceiverStats::update`] made of a packet's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// Counted (in order, reordered within `MAX_MISORDER`, or a duplicate: A.1 counts those).
    Valid,
    /// The source is still on probation (fewer than two sequential packets seen).
    Probation,
    /// A jump of more than `MAX_DROPOUT` ahead or `MAX_MISORDER` behind; a second packet
    /// continuing from it restarts the sequence (the peer restarted its stream).
    BadJump,
}

/// The RFC 3550 A.8 interarrival jitter estimator, in timestamp units.
///
/// `J += (|D| - J) / 16` where `D` is the difference in relative transit time between two
/// consecutive arrivals. Kept as `f64` (the RFC's floating-point form); reports truncate it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InterarrivalJitter {
    transit: Option<i32>,
    jitter: f64,
}

impl InterarrivalJitter {
    /// Feeds one arrival: `arrival` is the arrival time converted to timestamp units (any
    /// origin, wrapping), `timestamp` the packet's RTP timestamp.
    pub fn update(&mut self, arrival: u32, timestamp: u32) {
        // Wrapping arithmetic makes the timestamp and arrival-clock wrap-arounds cancel out.
        let transit = arrival.wrapping_sub(timestamp) as i32;
        if let Some(prev) = self.transit {
            let d = f64::from(transit.wrapping_sub(prev)).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// The current estimate in timestamp units (fractional).
    pub fn value(&self) -> f64 {
        self.jitter
    }
}

/// Statistics about one remote SSRC, fed with every RTP packet from it.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    ssrc: u32,
    clock_rate: u32,
    epoch: Instant,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    jitter: InterarrivalJitter,
    /// Middle 32 bits of the NTP time in the peer's last SR, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiverStats {
    /// Starts tracking a source from its first packet (which, per A.1, puts it on probation:
    /// the statistics proper start with the second of two sequential packets).
    pub fn new(ssrc: u32, clock_rate: u32, first_seq: u16, now: Instant) -> Self {
        ReceiverStats {
            ssrc,
            clock_rate,
            epoch: now,
            max_seq: first_seq.wrapping_sub(1),
            cycles: 0,
            base_seq: u32::from(first_seq),
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: InterarrivalJitter::default(),
            last_sr: None,
        }
    }

    /// The source these statistics are about.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// Feeds one packet (A.1 `update_seq` plus the A.8 jitter update).
    pub fn update(&mut self, now: Instant, seq: u16, timestamp: u32) -> SeqVerdict {
        self.jitter.update(self.arrival_units(now), timestamp);
        self.update_seq(seq)
    }

    fn update_seq(&mut self, seq: u16) -> SeqVerdict {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return SeqVerdict::Valid;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqVerdict::Probation;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the sender restarted.
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return SeqVerdict::BadJump;
            }
        } else {
            // Duplicate or reordered within MAX_MISORDER: counted, max_seq unchanged.
        }
        self.received = self.received.wrapping_add(1);
        SeqVerdict::Valid
    }

    /// Arrival time in timestamp units since the first packet, wrapping like a timestamp.
    fn arrival_units(&self, now: Instant) -> u32 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        (nanos * u128::from(self.clock_rate) / 1_000_000_000) as u32
    }

    /// Extended highest sequence number received (cycles in the top 16 bits).
    pub fn extended_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets counted as received (A.1: duplicates included, probation excluded).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Packets expected since the sequence base (A.3).
    pub fn expected(&self) -> u32 {
        if self.probation > 0 {
            return 0;
        }
        self.extended_highest_seq()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Cumulative packets lost, clamped to the 24-bit signed field of a report block. It is
    /// negative when duplicates outnumber losses.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = i64::from(self.expected()) - i64::from(self.received);
        lost.clamp(-0x80_0000, 0x7F_FFFF) as i32
    }

    /// Interarrival jitter in timestamp units, truncated as it goes into a report.
    pub fn jitter(&self) -> u32 {
        self.jitter.value() as u32
    }

    /// Interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        Duration::from_secs_f64(self.jitter.value() / f64::from(self.clock_rate))
    }

    /// Records the peer's sender report (for LSR/DLSR in our next report block).
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// Fraction lost since the previous call, as the 8-bit fixed-point value of a report
    /// block (A.3). Closes the interval: call it once per report.
    pub fn fraction_lost_since_last(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        }
    }

    /// Builds the report block for our next SR/RR and closes the reporting interval.
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let fraction_lost = self.fraction_lost_since_last();
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => {
                // DLSR is in units of 1/65536 s.
                let delay = now.saturating_duration_since(at);
                let units = delay.as_nanos() * 65_536 / 1_000_000_000;
                (lsr, units.min(u128::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}
