//! Sequence numbers and timestamps of relayed RTP (see [`Restamp`]).

use tokio::time::Instant;

/// Rewrites the sequence numbers and timestamps of relayed packets so that the receiver
/// sees one continuous stream under one SSRC, even when the sender changes (early media
/// from one phone, then the answer from another; a phone that restarts its stream).
///
/// Within one source, numbers move by a fixed offset, so the receiver still sees the
/// sender's own gaps (loss) and order. When the source changes, the next packet continues
/// right after the last one sent, its timestamp advanced by the wall-clock time between
/// them, and carries the marker bit (a new talk spurt).
#[derive(Debug, Clone)]
pub(super) struct Restamp {
    pub(super) ssrc: u32,
    source: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// The highest sequence number sent so far, its timestamp and when it went.
    last: Option<(u16, u32, Instant)>,
    /// Where the first stream starts (random, RFC 3550 §5.1).
    first_seq: u16,
    first_ts: u32,
}

impl Restamp {
    pub(super) fn new(ssrc: u32, first_seq: u16, first_ts: u32) -> Restamp {
        Restamp {
            ssrc,
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            first_seq,
            first_ts,
        }
    }

    /// The sequence number and timestamp to send for a packet of `ssrc`, and whether it
    /// starts a new source.
    pub(super) fn stamp(&mut self, ssrc: u32, seq: u16, ts: u32, now: Instant) -> (u16, u32, bool) {
        let new_source = self.source != Some(ssrc);
        if new_source {
            let (next_seq, next_ts) = match self.last {
                Some((last_seq, last_ts, at)) => {
                    // 8 kHz clock (G.711 and telephone-event); at least one 20 ms frame on.
                    let elapsed = now.saturating_duration_since(at).as_micros() / 125;
                    let step = u32::try_from(elapsed).unwrap_or(u32::MAX).max(160);
                    (last_seq.wrapping_add(1), last_ts.wrapping_add(step))
                }
                None => (self.first_seq, self.first_ts),
            };
            self.seq_offset = next_seq.wrapping_sub(seq);
            self.ts_offset = next_ts.wrapping_sub(ts);
            self.source = Some(ssrc);
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        // Only a packet newer than the last one sent moves the continuation point.
        let newer = match self.last {
            Some((last_seq, _, _)) => (out_seq.wrapping_sub(last_seq) as i16) > 0,
            None => true,
        };
        if newer || new_source {
            self.last = Some((out_seq, out_ts, now));
        }
        (out_seq, out_ts, new_source)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_source_keeps_its_gaps_under_a_fixed_offset() {
        let t0 = Instant::now();
        let mut r = Restamp::new(7, 1000, 50_000);
        assert_eq!(r.stamp(99, 65535, 4_294_967_200, t0), (1000, 50_000, true));
        // Wrapping input, one packet lost (seq 1 missing), one late: offsets hold.
        assert_eq!(r.stamp(99, 0, 64, t0), (1001, 50_160, false));
        assert_eq!(r.stamp(99, 2, 384, t0), (1003, 50_480, false));
        assert_eq!(r.stamp(99, 1, 224, t0), (1002, 50_320, false));
    }

    #[test]
    fn a_new_source_continues_the_stream_and_is_marked() {
        let t0 = Instant::now();
        let mut r = Restamp::new(7, 10, 0);
        for i in 0..5u16 {
            r.stamp(1, 500 + i, 8000 + u32::from(i) * 160, t0);
        }
        // The early-media phone stops; the answering phone starts 100 ms later with its
        // own numbering. The receiver sees the next sequence number and 100 ms of time.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(r.stamp(2, 40_000, 123, later), (15, 640 + 800, true));
        assert_eq!(r.stamp(2, 40_001, 283, later), (16, 640 + 960, false));
        // A source change right away still moves time by one frame.
        assert_eq!(r.stamp(3, 9, 9, later), (17, 640 + 1120, true));
    }
}
