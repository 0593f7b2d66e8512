//! A log-linear histogram of `u64` values (microseconds here): exact below 64, then 32
//! buckets per power of two (at most 3.2 % relative error), plus exact count, sum, min and max.
//! Recording is an index computation and an increment; histograms merge by addition and
//! serialise sparsely, so the sink can ship its own to the generator.

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS; // 32
const LINEAR: u64 = 2 * SUB; // exact below 64
const BUCKETS: usize = (LINEAR + (64 - (SUB_BITS as u64 + 1)) * SUB) as usize;

/// The histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros()); // >= 6
    let shift = msb - u64::from(SUB_BITS);
    (LINEAR + (msb - u64::from(SUB_BITS) - 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// Highest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let k = (i - LINEAR) / SUB;
    let r = (i - LINEAR) % SUB;
    let shift = k + 1;
    let lower = (SUB + r) << shift;
    lower.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    /// Adds one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds everything in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value (exact); `None` when empty.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean; `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at percentile `p` (0–100): the upper edge of the bucket holding the
    /// ⌈p·n/100⌉-th smallest value, never more than the exact maximum. `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i).min(self.max).max(self.min));
            }
        }
        Some(self.max)
    }

    /// Sparse, serialisable form.
    pub fn to_wire(&self) -> WireHistogram {
        WireHistogram {
            count: self.count,
            sum: self.sum as u64,
            min: if self.count > 0 { self.min } else { 0 },
            max: self.max,
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u32, *c))
                .collect(),
        }
    }

    /// Back from the sparse form (unknown bucket indices are ignored).
    pub fn from_wire(w: &WireHistogram) -> Histogram {
        let mut h = Histogram::default();
        for &(i, c) in &w.buckets {
            if let Some(slot) = h.counts.get_mut(i as usize) {
                *slot += c;
            }
        }
        h.count = w.count;
        h.sum = u128::from(w.sum);
        h.min = if w.count > 0 { w.min } else { u64::MAX };
        h.max = w.max;
        h
    }

    /// p50 / p99 / max in one go, for reports.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            p50: self.percentile(50.0),
            p99: self.percentile(99.0),
            max: self.max(),
            mean: self.mean(),
        }
    }
}

/// A histogram on the wire: `(bucket index, count)` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireHistogram {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    pub buckets: Vec<(u32, u64)>,
}

/// Percentiles of a histogram, for the results file.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<f64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = None;
        for v in (0..200_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(upper(i) >= v, "v={v} upper={}", upper(i));
            if let Some((pv, pi)) = prev
                && v == pv + 1
            {
                assert!(i == pi || i == pi + 1, "gap at {v}");
            }
            // Relative width at most 1/32.
            if v >= LINEAR {
                assert!((upper(i) - v) as f64 <= v as f64 / 32.0 + 1.0);
            }
            prev = Some((v, i));
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.max(), Some(100));
        assert_eq!(h.mean(), Some(50.5));
        let mut big = Histogram::default();
        for _ in 0..99 {
            big.record(1000);
        }
        big.record(50_000);
        let p99 = big.percentile(99.0).unwrap();
        assert!((1000..=1031).contains(&p99), "{p99}");
        assert_eq!(big.percentile(100.0), Some(50_000));
    }

    #[test]
    fn merge_and_wire_round_trip() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in [3, 700, 20_000] {
            a.record(v);
        }
        for v in [5, 1_000_000] {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 5);
        assert_eq!(a.max(), Some(1_000_000));
        let w = a.to_wire();
        assert_eq!(w.buckets.len(), 5);
        let back = Histogram::from_wire(
            &serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap(),
        );
        assert_eq!(back.summary(), a.summary());
        assert_eq!(Histogram::from_wire(&WireHistogram::default()).count(), 0);
    }
}
