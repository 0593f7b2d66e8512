//! Sequence accounting for one received stream: 16-bit numbers (RTP sequence numbers, marker
//! counters) extended to 64 bits, counting what arrived new, what repeated (a jitter buffer
//! concealing a loss by repeating a frame), what came late, and the gaps.

/// Tracks one stream of 16-bit sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    first: Option<u64>,
    highest: u64,
    /// Numbers seen for the first time, in increasing order.
    pub fresh: u64,
    /// The same number as the highest so far, again.
    pub repeats: u64,
    /// Lower than the highest so far (reordered, or a duplicate of an older one).
    pub late: u64,
}

/// What one number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Beyond everything so far; `gap` numbers were skipped.
    Fresh { gap: u64 },
    /// Equal to the highest so far.
    Repeat,
    /// Below the highest so far.
    Late,
}

impl SeqTracker {
    /// Records `seq` and says what it was.
    pub fn push(&mut self, seq: u16) -> Arrival {
        let Some(_) = self.first else {
            let ext = u64::from(seq) + (1 << 16); // room to go back below the first
            self.first = Some(ext);
            self.highest = ext;
            self.fresh = 1;
            return Arrival::Fresh { gap: 0 };
        };
        // The extension closest to the highest number seen.
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        let ext = (self.highest as i64 + i64::from(delta)).max(0) as u64;
        if ext > self.highest {
            let gap = ext - self.highest - 1;
            self.highest = ext;
            self.fresh += 1;
            Arrival::Fresh { gap }
        } else if ext == self.highest {
            self.repeats += 1;
            Arrival::Repeat
        } else {
            self.late += 1;
            Arrival::Late
        }
    }

    /// First and highest number seen, extended (the first is stored as `65536 + seq`).
    pub fn span(&self) -> Option<(u64, u64)> {
        self.first.map(|f| (f, self.highest))
    }

    /// Numbers from the first to the highest seen (what should have arrived).
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    /// Expected but never seen as fresh (late arrivals are counted as lost: a real-time
    /// consumer could not use them).
    pub fn missing(&self) -> u64 {
        self.expected().saturating_sub(self.fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gaps_repeats_late_and_wraps() {
        let mut t = SeqTracker::default();
        assert_eq!(t.push(65534), Arrival::Fresh { gap: 0 });
        assert_eq!(t.push(65535), Arrival::Fresh { gap: 0 });
        assert_eq!(t.push(1), Arrival::Fresh { gap: 1 }); // 0 lost across the wrap
        assert_eq!(t.push(1), Arrival::Repeat);
        assert_eq!(t.push(0), Arrival::Late);
        assert_eq!(t.push(2), Arrival::Fresh { gap: 0 });
        assert_eq!(t.expected(), 5);
        assert_eq!(t.fresh, 4);
        assert_eq!(t.missing(), 1);
        assert_eq!((t.repeats, t.late), (1, 1));
    }

    #[test]
    fn empty_stream() {
        let t = SeqTracker::default();
        assert_eq!((t.expected(), t.missing()), (0, 0));
    }

    #[test]
    fn long_stream_many_wraps() {
        let mut t = SeqTracker::default();
        for i in 0..200_000u32 {
            if i % 1000 != 999 {
                t.push(i as u16);
            }
        }
        assert_eq!(t.expected(), 199_999);
        assert_eq!(t.missing(), 199);
    }
}
