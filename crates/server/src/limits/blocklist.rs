//! The fail2ban-style block list: sources blocked until an instant, bounded in size.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;

use super::lock;

/// How many sources the block list holds at most. An entry takes about a hundred bytes (map
/// and order), so this caps it near ten megabytes whatever a flood of spoofed sources makes
/// the SIP core block.
const MAX_BLOCKED: usize = 100_000;

/// Sources blocked until an instant. Written by the SIP core, read by transports (which
/// drop a blocked source's messages before parsing them).
///
/// Bounded: when full, blocking a new source forgets the block that ends soonest (the one
/// that costs least to forget), so a new offender is never refused.
#[derive(Debug, Clone)]
pub struct Blocklist {
    inner: Arc<BlockTable>,
}

#[derive(Debug)]
struct BlockTable {
    /// What transports read, on every message: sharded, so readers rarely wait.
    until: DashMap<IpAddr, Instant>,
    /// The same blocks by end, soonest first, to pick what to forget without a scan.
    /// Writers (block, purge) hold this lock while they change both, so the two agree.
    by_end: Mutex<BTreeSet<(Instant, IpAddr)>>,
    capacity: usize,
}

impl Default for Blocklist {
    fn default() -> Blocklist {
        Blocklist::with_capacity(MAX_BLOCKED)
    }
}

impl Blocklist {
    /// A block list of at most `capacity` sources (at least 1).
    pub fn with_capacity(capacity: usize) -> Blocklist {
        Blocklist {
            inner: Arc::new(BlockTable {
                until: DashMap::new(),
                by_end: Mutex::new(BTreeSet::new()),
                capacity: capacity.max(1),
            }),
        }
    }

    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.inner.until.get(&ip).is_some_and(|until| now < *until)
    }

    /// Blocks `ip` until `until` (replacing any block it had).
    pub fn block(&self, ip: IpAddr, until: Instant) {
        let t = &*self.inner;
        let mut by_end = lock(&t.by_end);
        match t.until.insert(ip, until) {
            Some(previous) => {
                by_end.remove(&(previous, ip));
            }
            // Over capacity: the block that ends soonest goes (`ip` is not in `by_end`
            // yet, so it is never the one).
            None if t.until.len() > t.capacity => {
                if let Some((_, soonest)) = by_end.pop_first() {
                    t.until.remove(&soonest);
                }
            }
            None => {}
        }
        by_end.insert((until, ip));
    }

    /// Forgets expired blocks.
    pub fn purge(&self, now: Instant) {
        let t = &*self.inner;
        let mut by_end = lock(&t.by_end);
        while let Some(&(end, ip)) = by_end.first() {
            if now < end {
                break;
            }
            by_end.pop_first();
            t.until.remove(&ip);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.until.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.inner.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

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

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i))
    }

    #[test]
    fn a_full_blocklist_drops_the_block_that_ends_soonest_and_blocks_the_new_offender() {
        let t0 = Instant::now();
        let b = Blocklist::with_capacity(3);
        let secs = Duration::from_secs;
        b.block(ip(1), t0 + secs(300));
        b.block(ip(2), t0 + secs(100)); // ends soonest
        b.block(ip(3), t0 + secs(600));
        b.block(ip(4), t0 + secs(200));
        assert_eq!(b.len(), 3);
        assert!(!b.is_blocked(ip(2), t0), "the block ending soonest stays");
        for i in [1, 3, 4] {
            assert!(b.is_blocked(ip(i), t0), "{i} unblocked");
        }
        // Blocking again an address already blocked takes no more room.
        b.block(ip(4), t0 + secs(900));
        assert_eq!(b.len(), 3);
        b.block(ip(5), t0 + secs(50));
        assert!(b.is_blocked(ip(5), t0), "a new offender refused");
        assert!(!b.is_blocked(ip(1), t0));
        assert!(b.is_blocked(ip(4), t0 + secs(800)));
        // A flood of offenders keeps the table at its size.
        for i in 100..1000 {
            b.block(ip(i), t0 + secs(600));
            assert!(b.is_blocked(ip(i), t0));
            assert!(b.len() <= 3);
        }
        b.purge(t0 + secs(601));
        assert!(b.is_blocked(ip(4), t0 + secs(601)));
        assert_eq!(b.len(), 1);
    }
}
