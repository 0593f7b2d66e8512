//! Where the media tasks register their forks so that metrics and the admin API can see
//! them.
//!
//! A fork's counters live in its own [`ForkStats`] (atomics written by the fork task and
//! the call's media task); registering only shares that `Arc` with this registry. The
//! per-frame path therefore touches nothing shared between calls: the fork task bumps its
//! `ForkStats`, and the media task bumps its [`ForkRegistration`]'s own atomics
//! ([`ForkRegistration::frame_played`], [`ForkRegistration::mark_played`]).
//!
//! The registry's mutex is taken when a fork is registered or retired (once per fork) and
//! when someone reads (a scrape, an admin request). Retiring folds the fork's final counts
//! into per-mode totals under that same lock, so exported counters never go backwards.
//!
//! How the media task uses it:
//!
//! ```text
//! let fork = siphon_fork::start(config.clone(), meta);
//! let reg = counters.forks.register(
//!     ForkInfo { call_id, fork_id, url: config.url.clone(), mode: config.mode },
//!     fork.stats(),
//! );
//! // per 20 ms of service audio played into the call:
//! reg.frame_played();
//! // when a Mark command is reached and `fork.mark_played(name)` is called:
//! reg.mark_played();
//! // at the end: stop the fork, wait for it, then drop the registration so that the
//! // counts of its last moments (flush, `stop`) are in the totals.
//! let stopping = fork.stop("call ended");
//! stopping.wait().await;
//! drop(reg);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use siphon_fork::stats::{LATENCY_BUCKETS_US, Latency};
use siphon_fork::{ForkState, ForkStats, Mode};
use tokio::time::Instant;

/// The modes, in the order of the per-mode arrays.
pub const MODES: [Mode; 3] = [Mode::Native, Mode::Twilio, Mode::AudioFork];

/// The states, in the order of [`ModeTotals::states`].
pub const STATES: [ForkState; 5] = [
    ForkState::Connecting,
    ForkState::Connected,
    ForkState::Reconnecting,
    ForkState::Failed,
    ForkState::Stopped,
];

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Native => 0,
        Mode::Twilio => 1,
        Mode::AudioFork => 2,
    }
}

fn state_index(state: ForkState) -> usize {
    STATES.iter().position(|s| *s == state).unwrap_or(0)
}

/// What identifies a fork to operators.
#[derive(Debug, Clone)]
pub struct ForkInfo {
    /// The call's SIP Call-ID.
    pub call_id: String,
    /// Unique in the process (see [`ForkMetrics::new_fork_id`]); the admin API's `{fork}`.
    pub fork_id: String,
    pub url: String,
    pub mode: Mode,
}

#[derive(Debug)]
struct Entry {
    info: ForkInfo,
    stats: Arc<ForkStats>,
    started: Instant,
    frames_played: AtomicU64,
    marks_played: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<u64, Arc<Entry>>,
    retired: [ModeTotals; 3],
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ForkMetrics {
    inner: Mutex<Inner>,
    next_key: AtomicU64,
    next_id: AtomicU64,
    /// Told when a fork starts and stops (the status events); set once at start.
    observer: std::sync::OnceLock<ForkObserver>,
}

/// A fork's start (`None`) or stop (`Some(frames sent, frames dropped, failed)`).
pub type ForkObserverFn = dyn Fn(&ForkInfo, Option<(u64, u64, bool)>) + Send + Sync;

pub struct ForkObserver(Box<ForkObserverFn>);

impl std::fmt::Debug for ForkObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForkObserver")
    }
}

/// Totals of one mode's forks, live and ended (counters), or live only (`active`, `states`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModeTotals {
    pub started: u64,
    /// Forks that ended in [`ForkState::Failed`].
    pub failed: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub reconnects: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub dropped_queue_full: u64,
    pub dropped_disconnected: u64,
    pub dropped_slow: u64,
    pub playback_dropped: u64,
    pub messages_ignored: u64,
    pub marks: u64,
    pub clears: u64,
    pub frames_played: u64,
    pub marks_played: u64,
    /// Per-bucket counts for [`LATENCY_BUCKETS_US`], the last one unbounded.
    pub latency_buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum: Duration,
    /// Live forks by state ([`STATES`] order).
    pub states: [u64; 5],
}

impl ModeTotals {
    fn add_live(&mut self, e: &Entry) {
        let s = &e.stats;
        let g = ForkStats::get;
        self.connects += g(&s.connects);
        self.connect_failures += g(&s.connect_failures);
        self.reconnects += g(&s.reconnects);
        self.frames_sent += g(&s.frames_sent);
        self.bytes_sent += g(&s.bytes_sent);
        self.frames_received += g(&s.frames_received);
        self.bytes_received += g(&s.bytes_received);
        self.dropped_queue_full += g(&s.frames_dropped_queue_full);
        self.dropped_disconnected += g(&s.frames_dropped_disconnected);
        self.dropped_slow += g(&s.frames_dropped_slow);
        self.playback_dropped += g(&s.playback_dropped);
        self.messages_ignored += g(&s.messages_ignored);
        self.marks += g(&s.marks);
        self.clears += g(&s.clears);
        self.frames_played += g(&e.frames_played);
        self.marks_played += g(&e.marks_played);
        add_latency(&mut self.latency_buckets, &mut self.latency_sum, &s.latency);
    }

    fn add(&mut self, o: &ModeTotals) {
        self.started += o.started;
        self.failed += o.failed;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.reconnects += o.reconnects;
        self.frames_sent += o.frames_sent;
        self.bytes_sent += o.bytes_sent;
        self.frames_received += o.frames_received;
        self.bytes_received += o.bytes_received;
        self.dropped_queue_full += o.dropped_queue_full;
        self.dropped_disconnected += o.dropped_disconnected;
        self.dropped_slow += o.dropped_slow;
        self.playback_dropped += o.playback_dropped;
        self.messages_ignored += o.messages_ignored;
        self.marks += o.marks;
        self.clears += o.clears;
        self.frames_played += o.frames_played;
        self.marks_played += o.marks_played;
        for (a, b) in self.latency_buckets.iter_mut().zip(o.latency_buckets) {
            *a += b;
        }
        self.latency_sum += o.latency_sum;
        for (a, b) in self.states.iter_mut().zip(o.states) {
            *a += b;
        }
    }

    /// Live forks (not yet retired) in any state.
    pub fn active(&self) -> u64 {
        self.states.iter().sum()
    }

    pub fn latency_count(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }
}

fn add_latency(buckets: &mut [u64], sum: &mut Duration, latency: &Latency) {
    for (a, b) in buckets.iter_mut().zip(latency.buckets()) {
        *a += b;
    }
    *sum += latency.sum();
}

/// What the admin API shows of one fork.
#[derive(Debug, Clone)]
pub struct ForkView {
    pub info: ForkInfo,
    pub state: ForkState,
    pub age: Duration,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    pub frames_received: u64,
    pub frames_played: u64,
    pub reconnects: u64,
    pub latency_mean: Option<Duration>,
}

impl ForkMetrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain numbers behind: still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fork id unique in this process: `f1`, `f2`, ...
    pub fn new_fork_id(&self) -> String {
        format!("f{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Who hears of forks starting and stopping (once; later calls are ignored).
    pub fn set_observer(&self, observer: Box<ForkObserverFn>) {
        let _ = self.observer.set(ForkObserver(observer));
    }

    /// Makes a running fork visible. Keep the returned registration as long as the fork
    /// lives; dropping it retires the fork into the totals.
    pub fn register(self: &Arc<Self>, info: ForkInfo, stats: Arc<ForkStats>) -> ForkRegistration {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            info,
            stats,
            started: Instant::now(),
            frames_played: AtomicU64::new(0),
            marks_played: AtomicU64::new(0),
        });
        let mut inner = self.lock();
        inner.retired[mode_index(entry.info.mode)].started += 1;
        inner.live.insert(key, entry.clone());
        drop(inner);
        if let Some(o) = self.observer.get() {
            (o.0)(&entry.info, None);
        }
        ForkRegistration {
            metrics: self.clone(),
            key,
            entry,
        }
    }

    fn retire(&self, key: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.live.remove(&key) {
            let mut t = ModeTotals::default();
            t.add_live(&entry);
            if entry.stats.state() == ForkState::Failed {
                t.failed = 1;
            }
            inner.retired[mode_index(entry.info.mode)].add(&t);
            drop(inner);
            if let Some(o) = self.observer.get() {
                let dropped = t.dropped_queue_full + t.dropped_disconnected + t.dropped_slow;
                (o.0)(&entry.info, Some((t.frames_sent, dropped, t.failed == 1)));
            }
        }
    }

    /// Per-mode totals ([`MODES`] order): counters over every fork registered so far,
    /// states over live ones.
    pub fn totals(&self) -> [ModeTotals; 3] {
        let inner = self.lock();
        let mut out = inner.retired.clone();
        for e in inner.live.values() {
            let t = &mut out[mode_index(e.info.mode)];
            t.add_live(e);
            t.states[state_index(e.stats.state())] += 1;
        }
        out
    }

    /// Live forks of one call (all calls with `None`), oldest first.
    pub fn forks_of(&self, call_id: Option<&str>) -> Vec<ForkView> {
        let inner = self.lock();
        let mut out: Vec<(Instant, ForkView)> = inner
            .live
            .values()
            .filter(|e| call_id.is_none_or(|c| e.info.call_id == c))
            .map(|e| {
                let s = &e.stats;
                let g = ForkStats::get;
                let view = ForkView {
                    info: e.info.clone(),
                    state: s.state(),
                    age: e.started.elapsed(),
                    frames_sent: g(&s.frames_sent),
                    frames_dropped: s.frames_dropped(),
                    frames_received: g(&s.frames_received),
                    frames_played: g(&e.frames_played),
                    reconnects: g(&s.reconnects),
                    latency_mean: s.latency.mean(),
                };
                (e.started, view)
            })
            .collect();
        drop(inner);
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, v)| v).collect()
    }
}

/// A registered fork; dropping it retires the fork (see [`ForkMetrics::register`]).
#[derive(Debug)]
pub struct ForkRegistration {
    metrics: Arc<ForkMetrics>,
    key: u64,
    entry: Arc<Entry>,
}

impl ForkRegistration {
    /// One 20 ms frame of the service's audio was played into the call.
    pub fn frame_played(&self) {
        self.entry.frames_played.fetch_add(1, Ordering::Relaxed);
    }

    /// Playback reached a mark of the service's.
    pub fn mark_played(&self) {
        self.entry.marks_played.fetch_add(1, Ordering::Relaxed);
    }

    pub fn info(&self) -> &ForkInfo {
        &self.entry.info
    }
}

impl Drop for ForkRegistration {
    fn drop(&mut self) {
        self.metrics.retire(self.key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn info(call: &str, id: &str, mode: Mode) -> ForkInfo {
        ForkInfo {
            call_id: call.into(),
            fork_id: id.into(),
            url: "ws://127.0.0.1:9/x".into(),
            mode,
        }
    }

    #[tokio::test]
    async fn live_and_retired_forks_add_up_and_never_go_backwards() {
        let m = Arc::new(ForkMetrics::default());
        let a = Arc::new(ForkStats::default());
        let b = Arc::new(ForkStats::default());
        let ra = m.register(info("c1", "f1", Mode::Native), a.clone());
        let rb = m.register(info("c2", "f2", Mode::Twilio), b.clone());
        a.frames_sent.fetch_add(10, Ordering::Relaxed);
        a.connects.fetch_add(1, Ordering::Relaxed);
        a.latency.record(Duration::from_millis(3));
        b.frames_dropped_slow.fetch_add(2, Ordering::Relaxed);
        ra.frame_played();
        let t = m.totals();
        assert_eq!(t[0].started, 1);
        assert_eq!(t[0].frames_sent, 10);
        assert_eq!(t[0].frames_played, 1);
        assert_eq!(t[0].latency_count(), 1);
        assert_eq!(t[0].states[state_index(ForkState::Connecting)], 1);
        assert_eq!(t[1].dropped_slow, 2);
        assert_eq!(m.forks_of(Some("c1")).len(), 1);
        assert_eq!(m.forks_of(None).len(), 2);

        drop(ra);
        a.frames_sent.fetch_add(5, Ordering::Relaxed); // after retirement: not seen
        let t2 = m.totals();
        assert_eq!(t2[0].frames_sent, 10);
        assert_eq!(t2[0].active(), 0);
        assert_eq!(t2[0].latency_sum, Duration::from_millis(3));
        assert!(m.forks_of(Some("c1")).is_empty());
        drop(rb);
        assert_eq!(m.totals()[1].dropped_slow, 2);
        assert_ne!(m.new_fork_id(), m.new_fork_id());
    }
}
