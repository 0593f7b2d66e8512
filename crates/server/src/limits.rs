//! Overload and abuse control: rate limits (token buckets), the per-source flood limiter of
//! the UDP transport, and the fail2ban-style block list fed by failed digest attempts.
//! Pure logic with explicit time; the tasks that use them own their instances (no locks),
//! except the block list, which transports read and the SIP core writes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A rate of 0 means unlimited.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source message limiter for a transport task: one bucket per source address, so one
/// flooding source is dropped while everyone else is served. Buckets idle for a minute are
/// forgotten (bounded memory under spoofed-source floods: at most `max_sources`).
#[derive(Debug)]
pub struct SourceLimiter {
    rate: f64,
    buckets: HashMap<IpAddr, TokenBucket>,
    max_sources: usize,
    last_sweep: Instant,
}

impl SourceLimiter {
    pub fn new(rate_per_source: f64, now: Instant) -> SourceLimiter {
        SourceLimiter {
            rate: rate_per_source,
            buckets: HashMap::new(),
            max_sources: 100_000,
            last_sweep: now,
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if now.saturating_duration_since(self.last_sweep) > Duration::from_secs(60) {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(60));
            self.last_sweep = now;
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_sources {
            return false;
        }
        // A second's worth of burst lets a phone's normal bursts (REGISTER + SUBSCRIBE +
        // a call) through.
        let rate = self.rate;
        self.buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, rate, now))
            .allow(now)
    }
}

/// Sources blocked until an instant. Written by the SIP core, read by transports (which
/// drop a blocked source's datagrams before parsing them).
#[derive(Debug, Default, Clone)]
pub struct Blocklist {
    until: Arc<DashMap<IpAddr, Instant>>,
}

impl Blocklist {
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.until.get(&ip).is_some_and(|until| now < *until)
    }

    pub fn block(&self, ip: IpAddr, until: Instant) {
        self.until.insert(ip, until);
    }

    /// Forgets expired blocks.
    pub fn purge(&self, now: Instant) {
        self.until.retain(|_, until| now < *until);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// Counts failed digest attempts per source and per account in a sliding window; a source
/// past the threshold is blocked for a while. Accounts are counted (and logged) but never
/// locked: locking an account would let anyone lock its owner out.
#[derive(Debug)]
pub struct AuthFailures {
    threshold: u32,
    window: Duration,
    block_for: Duration,
    by_source: HashMap<IpAddr, (u32, Instant)>,
    by_account: HashMap<String, (u32, Instant)>,
}

/// What a failure led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; below the threshold.
    Counted {
        source_failures: u32,
        account_failures: u32,
    },
    /// The source crossed the threshold: block it until this instant.
    Block {
        until: Instant,
        source_failures: u32,
    },
}

impl AuthFailures {
    pub fn new(threshold: u32, window: Duration, block_for: Duration) -> AuthFailures {
        AuthFailures {
            threshold,
            window,
            block_for,
            by_source: HashMap::new(),
            by_account: HashMap::new(),
        }
    }

    pub fn record(&mut self, ip: IpAddr, account: &str, now: Instant) -> Verdict {
        let window = self.window;
        let bump = |entry: &mut (u32, Instant)| {
            if now.saturating_duration_since(entry.1) > window {
                *entry = (0, now);
            }
            entry.0 += 1;
            entry.0
        };
        let source_failures = bump(self.by_source.entry(ip).or_insert((0, now)));
        // Bounded in name length and count: a scanner cycling names cannot grow this map
        // without limit.
        let key = if account.len() <= 64 { account } else { "" };
        let room = self.by_account.len() < 100_000;
        let account_failures = if room || self.by_account.contains_key(key) {
            bump(self.by_account.entry(key.to_string()).or_insert((0, now)))
        } else {
            0
        };
        if self.threshold > 0 && source_failures >= self.threshold {
            self.by_source.remove(&ip);
            return Verdict::Block {
                until: now + self.block_for,
                source_failures,
            };
        }
        Verdict::Counted {
            source_failures,
            account_failures,
        }
    }

    /// A successful authentication clears the source's count.
    pub fn success(&mut self, ip: IpAddr) {
        self.by_source.remove(&ip);
    }

    /// Forgets windows that ended.
    pub fn purge(&mut self, now: Instant) {
        let window = self.window;
        self.by_source
            .retain(|_, (_, start)| now.saturating_duration_since(*start) <= window);
        self.by_account
            .retain(|_, (_, start)| now.saturating_duration_since(*start) <= window);
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
    fn failures_past_the_threshold_block_the_source_only() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(3, Duration::from_secs(60), Duration::from_secs(600));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(matches!(f.record(ip, "1001", t0), Verdict::Counted { .. }));
        assert!(matches!(f.record(ip, "1001", t0), Verdict::Counted { .. }));
        assert_eq!(
            f.record(ip, "1001", t0),
            Verdict::Block {
                until: t0 + Duration::from_secs(600),
                source_failures: 3
            }
        );
        // Another source trying the same account is only counted.
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        assert_eq!(
            f.record(other, "1001", t0),
            Verdict::Counted {
                source_failures: 1,
                account_failures: 4
            }
        );
    }

    #[test]
    fn the_window_slides_and_success_clears() {
        let t0 = Instant::now();
        let mut f = AuthFailures::new(3, Duration::from_secs(60), Duration::from_secs(600));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        f.record(ip, "a", t0);
        f.record(ip, "a", t0);
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(
            f.record(ip, "a", later),
            Verdict::Counted {
                source_failures: 1,
                ..
            }
        ));
        f.success(ip);
        assert!(matches!(
            f.record(ip, "a", later),
            Verdict::Counted {
                source_failures: 1,
                ..
            }
        ));
    }

    #[test]
    fn blocklist_expires() {
        let t0 = Instant::now();
        let b = Blocklist::default();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        b.block(ip, t0 + Duration::from_secs(10));
        assert!(b.is_blocked(ip, t0));
        assert!(!b.is_blocked(ip, t0 + Duration::from_secs(10)));
        b.purge(t0 + Duration::from_secs(11));
        assert!(b.is_empty());
    }
}
