//! Failed digest attempts per source and per account in a sliding window, and the
//! verdict that blocks a source.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failure counts within a window, by key, for at most `capacity` keys. When it is full a
/// new key forgets the key whose window started first (the nearest to being forgotten
/// anyway): a new source is always counted, and a flood of spoofed sources costs bounded
/// memory.
#[derive(Debug)]
struct WindowCounts<K> {
    capacity: usize,
    entries: HashMap<K, WindowCount>,
    /// Keys by window start, oldest first; the sequence number tells apart windows that
    /// started at the same instant.
    by_start: BTreeMap<(Instant, u64), K>,
    next_seq: u64,
}

#[derive(Debug)]
struct WindowCount {
    failures: u32,
    start: Instant,
    seq: u64,
}

impl<K: Hash + Eq + Clone> WindowCounts<K> {
    fn new(capacity: usize) -> WindowCounts<K> {
        WindowCounts {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_start: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Counts one failure for `key` at `now`, starting a new window when the last one
    /// ended; the failures in the window so far.
    fn bump<Q>(&mut self, key: &Q, now: Instant, window: Duration) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(entry) = self.entries.get_mut(key) else {
            self.insert(key.to_owned(), now, seq);
            return 1;
        };
        if now.saturating_duration_since(entry.start) > window {
            // A new window: it moves to the young end of the order.
            let owned = self.by_start.remove(&(entry.start, entry.seq));
            *entry = WindowCount {
                failures: 0,
                start: now,
                seq,
            };
            let owned = owned.unwrap_or_else(|| key.to_owned());
            self.by_start.insert((now, seq), owned);
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.failures
    }

    /// A new key with one failure, making room first when the table is full.
    fn insert(&mut self, key: K, now: Instant, seq: u64) {
        if self.entries.len() >= self.capacity {
            self.forget_oldest();
        }
        self.by_start.insert((now, seq), key.clone());
        let first = WindowCount {
            failures: 1,
            start: now,
            seq,
        };
        self.entries.insert(key, first);
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.by_start.pop_first() {
            self.entries.remove(&key);
        }
    }

    fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(entry) = self.entries.remove(key) {
            self.by_start.remove(&(entry.start, entry.seq));
        }
    }

    /// Forgets windows that ended: the oldest first, stopping at the first still open.
    fn purge(&mut self, now: Instant, window: Duration) {
        while let Some((&(start, _), _)) = self.by_start.first_key_value() {
            if now.saturating_duration_since(start) <= window {
                break;
            }
            self.forget_oldest();
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Sources and accounts each table of `AuthFailures` counts at most.
const MAX_COUNTED: usize = 100_000;

/// Counts failed digest attempts per source and per account in a sliding window; a source
/// past the threshold is blocked for a while. Accounts are counted (and logged) but never
/// locked: locking an account would let anyone lock its owner out.
#[derive(Debug)]
pub struct AuthFailures {
    threshold: u32,
    window: Duration,
    block_for: Duration,
    by_source: WindowCounts<IpAddr>,
    by_account: WindowCounts<String>,
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
        AuthFailures::with_capacity(threshold, window, block_for, MAX_COUNTED)
    }

    /// Counting at most `capacity` sources and as many accounts.
    pub fn with_capacity(
        threshold: u32,
        window: Duration,
        block_for: Duration,
        capacity: usize,
    ) -> AuthFailures {
        AuthFailures {
            threshold,
            window,
            block_for,
            by_source: WindowCounts::new(capacity),
            by_account: WindowCounts::new(capacity),
        }
    }

    pub fn record(&mut self, ip: IpAddr, account: &str, now: Instant) -> Verdict {
        let source_failures = self.by_source.bump(&ip, now, self.window);
        // Long names share one entry: a scanner cycling huge names cannot make each entry
        // big, and the table's size bounds how many there are.
        let key = if account.len() <= 64 { account } else { "" };
        let account_failures = self.by_account.bump(key, now, self.window);
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
        self.by_source.purge(now, self.window);
        self.by_account.purge(now, self.window);
    }

    /// Sources and accounts counted.
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_source.len(), self.by_account.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Distinct addresses from 198.51.100.0/22 onwards.
    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i))
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
    fn a_full_source_table_forgets_the_oldest_and_still_counts_a_new_source() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut f = AuthFailures::with_capacity(5, window, Duration::from_secs(600), 3);
        // Source 0 started failing first, then 1, 2, 3 (a second apart).
        for i in 0..4 {
            let at = t0 + Duration::from_secs(u64::from(i));
            f.record(ip(i), "a", at);
            f.record(ip(i), "a", at);
        }
        let later = t0 + Duration::from_secs(10);
        assert!(f.tracked().0 <= 3, "{:?}", f.tracked());
        // The newest sources kept their counts; the oldest one starts again.
        for i in [2, 3] {
            assert!(matches!(
                f.record(ip(i), "a", later),
                Verdict::Counted {
                    source_failures: 3,
                    ..
                }
            ));
        }
        assert!(matches!(
            f.record(ip(0), "a", later),
            Verdict::Counted {
                source_failures: 1,
                ..
            }
        ));
        // A flood of new sources: each one counted from 1, the table at its size.
        for i in 100..1000 {
            assert!(matches!(
                f.record(ip(i), "a", later),
                Verdict::Counted {
                    source_failures: 1,
                    ..
                }
            ));
            assert!(f.tracked().0 <= 3);
        }
    }

    #[test]
    fn a_full_account_table_forgets_the_oldest_and_still_counts_a_new_account() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut f = AuthFailures::with_capacity(0, window, Duration::from_secs(600), 3);
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            f.record(ip(0), name, at);
        }
        assert!(f.tracked().1 <= 3, "{:?}", f.tracked());
        let later = t0 + Duration::from_secs(10);
        // A name never seen is counted from 1, never refused; "d" kept its count.
        assert_eq!(
            f.record(ip(0), "e", later),
            Verdict::Counted {
                source_failures: 5,
                account_failures: 1
            }
        );
        assert_eq!(
            f.record(ip(0), "d", later),
            Verdict::Counted {
                source_failures: 6,
                account_failures: 2
            }
        );
        assert!(f.tracked().1 <= 3, "{:?}", f.tracked());
    }
}
