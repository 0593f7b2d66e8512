//! Rate limits: a token bucket (calls and REGISTERs per second) and the per-source flood
//! limiter of the UDP transport, on `governor`'s GCRA driven by the caller's instant.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// `governor` reads the time from its clock, but these limiters are given the time by
/// their caller (the transport's receive instant; tests pass virtual time). So each one
/// owns a fake clock and moves it forward to the instant it is given before deciding.
#[derive(Debug, Clone)]
struct GivenTime {
    clock: FakeRelativeClock,
    last: Instant,
}

impl GivenTime {
    fn new(now: Instant) -> GivenTime {
        GivenTime {
            clock: FakeRelativeClock::default(),
            last: now,
        }
    }

    /// Moves the clock to `now` (never backwards).
    fn set(&mut self, now: Instant) {
        let step = now.saturating_duration_since(self.last);
        if !step.is_zero() {
            self.clock.advance(step);
            self.last = now;
        }
    }
}

/// `rate` per second with `burst` saved up (at least 1, fractions dropped), or `None` for
/// unlimited: a rate of 0 (or less), or one too fast for a nanosecond period.
fn quota(rate: f64, burst: f64) -> Option<Quota> {
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / rate).ok()?;
    let burst = NonZeroU32::new(burst.clamp(1.0, f64::from(u32::MAX)) as u32)?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

type Direct = RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>;
type Keyed =
    RateLimiter<IpAddr, HashMapStateStore<IpAddr>, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    /// `None`: unlimited.
    limiter: Option<Direct>,
    time: GivenTime,
}

impl TokenBucket {
    /// A full bucket. A rate of 0 means unlimited.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let time = GivenTime::new(now);
        TokenBucket {
            limiter: quota(rate, burst)
                .map(|q| RateLimiter::direct_with_clock(q, time.clock.clone())),
            time,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        self.time.set(now);
        limiter.check().is_ok()
    }
}

/// Per-source message limiter for a transport task: one bucket per source address, so one
/// flooding source is dropped while everyone else is served. A second's worth of burst lets
/// a phone's normal bursts (REGISTER + SUBSCRIBE + a call) through.
///
/// Memory stays bounded under spoofed-source floods: once a minute, and whenever the table
/// reaches `max_sources`, sources whose bucket has refilled are forgotten (they would get
/// the same full bucket back). If the table is still over half full after that, every
/// source is forgotten: a new source is never refused for want of room, and a flooding
/// source is tracked again from its next datagram.
#[derive(Debug)]
pub struct SourceLimiter {
    /// `None`: unlimited.
    limiter: Option<(Quota, Keyed)>,
    time: GivenTime,
    max_sources: usize,
    last_sweep: Instant,
}

impl SourceLimiter {
    pub fn new(rate_per_source: f64, now: Instant) -> SourceLimiter {
        SourceLimiter::with_capacity(rate_per_source, 100_000, now)
    }

    fn with_capacity(rate_per_source: f64, max_sources: usize, now: Instant) -> SourceLimiter {
        let time = GivenTime::new(now);
        SourceLimiter {
            limiter: quota(rate_per_source, rate_per_source)
                .map(|q| (q, RateLimiter::hashmap_with_clock(q, time.clock.clone()))),
            time,
            max_sources,
            last_sweep: now,
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some((quota, limiter)) = &mut self.limiter else {
            return true;
        };
        self.time.set(now);
        let sweep_due = now.saturating_duration_since(self.last_sweep) > Duration::from_secs(60);
        if sweep_due || limiter.len() >= self.max_sources {
            limiter.retain_recent();
            if limiter.len() > self.max_sources / 2 {
                *limiter = RateLimiter::hashmap_with_clock(*quota, self.time.clock.clone());
            }
            limiter.shrink_to_fit();
            self.last_sweep = now;
        }
        limiter.check_key(&ip).is_ok()
    }

    /// Sources with a bucket of their own.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |(_, l)| l.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bucket_allows_the_rate_and_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| b.allow(t0)).count(), 5);
        // One second later: 10 more tokens, capped at the burst of 5.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| b.allow(t1)).count(), 5);
        let t2 = t1 + Duration::from_millis(100);
        assert!(b.allow(t2));
        assert!(!b.allow(t2));
        let mut unlimited = TokenBucket::new(0.0, 0.0, t0);
        assert!((0..1000).all(|_| unlimited.allow(t0)));
    }

    #[test]
    fn one_flooding_source_does_not_limit_another() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(50.0, t0);
        let flood: IpAddr = "192.0.2.1".parse().unwrap();
        let honest: IpAddr = "192.0.2.2".parse().unwrap();
        let passed = (0..1000).filter(|_| l.allow(flood, t0)).count();
        assert_eq!(passed, 50);
        assert!(l.allow(honest, t0));
    }

    #[test]
    fn the_source_table_stays_bounded_and_never_refuses_a_new_source() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::with_capacity(1.0, 100, t0);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + i));
        // A spoofed flood: every source new, all within the same instant.
        for i in 0..1000 {
            assert!(l.allow(ip(i), t0), "source {i} refused");
            assert!(l.tracked() <= 100);
        }
        // A flooder is still limited right after the table was emptied.
        let flood = ip(5000);
        assert!(l.allow(flood, t0));
        assert!(!l.allow(flood, t0));
        // Idle sources are forgotten by the minute's sweep.
        let later = t0 + Duration::from_secs(61);
        assert!(l.allow(ip(7000), later));
        assert_eq!(l.tracked(), 1);
    }
}
