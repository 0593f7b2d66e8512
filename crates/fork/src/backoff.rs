//! Reconnect delays: exponential with jitter, and the small random source behind them and
//! behind stream ids. Pure: the caller supplies the seed.

use std::time::Duration;

/// SplitMix64: tiny, fast, good enough for jitter and unique-looking ids (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Exponential backoff: the n-th consecutive failure waits a random time in
/// `[d/2, d]` where `d = min(min_delay × 2^n, max_delay)` ("equal jitter"), so a service
/// coming back is not hit by every fork at once, and waits never collapse to zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: Rng,
}

impl Backoff {
    /// Backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration, rng: Rng) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng,
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.rng.next_u64() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Back to the shortest delay (after a successful connection).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(1000),
            Rng::new(7),
        );
        let bounds = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for ceiling in bounds {
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d} not in [{}, {ceiling}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_varies() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), Rng::new(1));
        let a: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(
            Duration::from_millis(1),
            Duration::from_secs(5),
            Rng::new(3),
        );
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
    }
}
