//! Overload and abuse control: rate limits (`governor`'s GCRA, a token bucket in all but
//! name), the per-source flood limiter of the UDP transport, and the fail2ban-style block
//! list fed by failed digest attempts.
//! Pure logic with explicit time; the tasks that use them own their instances (no locks),
//! except the block list, which transports read and the SIP core writes, and the stream
//! connection slots, which connection tasks give back when they end. Every table of
//! sources is bounded in size, and a full one makes room rather than refuse a new source.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
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

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.until.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.inner.until.is_empty()
    }
}

/// Open stream connections (TCP or TLS) of one listener: at most `max_total` in all, and
/// at most `max_per_source` from one address (0: no limit per address), so one address
/// cannot take every slot. A slot is given back when its [`Slot`] is dropped, however the
/// connection's task ends.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    table: Arc<Mutex<SlotTable>>,
}

#[derive(Debug)]
struct SlotTable {
    max_total: usize,
    max_per_source: usize,
    total: usize,
    /// Only addresses with a connection open, so never more entries than `max_total`.
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// Every slot is taken.
    Full,
    /// The connection's address has all the slots one address may have.
    SourceFull,
}

/// One open connection's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Mutex<SlotTable>>,
    ip: IpAddr,
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_source: usize) -> ConnectionSlots {
        ConnectionSlots {
            table: Arc::new(Mutex::new(SlotTable {
                max_total,
                max_per_source,
                total: 0,
                by_source: HashMap::new(),
            })),
        }
    }

    /// A slot for a connection from `ip`, if the limits leave one.
    pub fn acquire(&self, ip: IpAddr) -> Result<Slot, SlotRefused> {
        let mut t = lock(&self.table);
        if t.total >= t.max_total {
            return Err(SlotRefused::Full);
        }
        let from_source = t.by_source.get(&ip).copied().unwrap_or(0);
        if t.max_per_source > 0 && from_source >= t.max_per_source {
            return Err(SlotRefused::SourceFull);
        }
        t.total += 1;
        t.by_source.insert(ip, from_source + 1);
        Ok(Slot {
            table: self.table.clone(),
            ip,
        })
    }

    /// Connections open in all, and addresses they come from.
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let t = lock(&self.table);
        (t.total, t.by_source.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.by_source.remove(&self.ip);
            }
        }
    }
}

/// The data behind a lock stays consistent even if a holder panicked (each writer changes
/// it in a few infallible steps), so a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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

    #[cfg(test)]
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
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.by_source.len(), self.by_account.len())
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

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i))
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

    #[test]
    fn one_address_cannot_take_every_connection_slot() {
        let slots = ConnectionSlots::new(4, 2);
        let a = ip(1);
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(a).unwrap_err(), SlotRefused::SourceFull);
        let _b = slots.acquire(ip(2)).unwrap();
        let _c = slots.acquire(ip(3)).unwrap();
        assert_eq!(slots.acquire(ip(4)).unwrap_err(), SlotRefused::Full);
        // A slot given back can be taken again, by anyone.
        drop(first);
        assert_eq!(slots.open(), (3, 3));
        let _again = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(ip(5)).unwrap_err(), SlotRefused::Full);
        // 0: no limit per address, only the total.
        let open = ConnectionSlots::new(3, 0);
        let held: Vec<Slot> = (0..3).map(|_| open.acquire(a).unwrap()).collect();
        assert_eq!(open.acquire(a).unwrap_err(), SlotRefused::Full);
        drop(held);
        assert_eq!(open.open(), (0, 0));
    }
}
