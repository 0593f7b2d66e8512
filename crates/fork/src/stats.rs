//! Lock-free counters of one fork, shared between the fork task, the call's media task and
//! whoever exports metrics.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::StopCounters;

/// Where a fork is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForkState {
    /// First connection attempt(s).
    Connecting,
    /// Streaming.
    Connected,
    /// Lost the service; buffering and retrying.
    Reconnecting,
    /// Gave up: a required fork could not connect, the configuration is unusable, or the
    /// service broke the protocol (the call goes on).
    Failed,
    /// Ended by [`crate::Fork::stop`], by the service closing normally, or by the handle
    /// being dropped.
    Stopped,
}

impl ForkState {
    fn to_u8(self) -> u8 {
        match self {
            ForkState::Connecting => 0,
            ForkState::Connected => 1,
            ForkState::Reconnecting => 2,
            ForkState::Failed => 3,
            ForkState::Stopped => 4,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => ForkState::Connecting,
            1 => ForkState::Connected,
            2 => ForkState::Reconnecting,
            3 => ForkState::Failed,
            _ => ForkState::Stopped,
        }
    }

    /// Failed or Stopped: the fork task has ended or is ending.
    pub fn is_final(self) -> bool {
        matches!(self, ForkState::Failed | ForkState::Stopped)
    }

    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ForkState::Connecting => "connecting",
            ForkState::Connected => "connected",
            ForkState::Reconnecting => "reconnecting",
            ForkState::Failed => "failed",
            ForkState::Stopped => "stopped",
        }
    }
}

/// Upper bounds (µs) of the latency histogram buckets; a last bucket takes the rest.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];

/// Fork latency (RTP arrival → WebSocket write flushed): sum, count, max and a histogram.
///
/// Hand-written rather than a `prometheus::Histogram`, though not for speed (recording
/// costs 12.5 ns here against 13-14 ns for `observe`, measured in release over 20 M
/// samples): each fork needs its own max and quantiles (logged when it ends), which a
/// `prometheus` histogram does not keep, and the per-mode family adds the buckets of live
/// and ended forks, which needs the counts as integers (`buckets`) rather than read back
/// from a `prometheus` histogram's exposition.
#[derive(Debug, Default)]
pub struct Latency {
    sum_us: AtomicU64,
    count: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
}

impl Latency {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Mean latency, if any sample.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| Duration::from_micros(self.sum_us.load(Ordering::Relaxed) / n))
    }

    /// Sum of all samples (for a Prometheus histogram's `_sum`).
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// Largest latency seen.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }

    /// Counts per bucket (see [`LATENCY_BUCKETS_US`]).
    pub fn buckets(&self) -> [u64; LATENCY_BUCKETS_US.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// The upper bound of the bucket holding the `q`-quantile (0.0–1.0): an over-estimate
    /// by at most one bucket; the max for the last bucket.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let buckets = self.buckets();
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = LATENCY_BUCKETS_US
                    .get(i)
                    .copied()
                    .unwrap_or(self.max_us.load(Ordering::Relaxed));
                return Some(Duration::from_micros(
                    bound.min(self.max_us.load(Ordering::Relaxed)).max(1),
                ));
            }
        }
        Some(self.max())
    }
}

/// Counters of one fork. All `Relaxed`: each is read on its own for metrics.
#[derive(Debug, Default)]
pub struct ForkStats {
    /// Frames handed to [`crate::Fork::send_audio`].
    pub frames_pushed: AtomicU64,
    /// Frames written and flushed to the service.
    pub frames_sent: AtomicU64,
    /// Frames refused because the fork task's queue was full.
    pub frames_dropped_queue_full: AtomicU64,
    /// Frames lost while the service was unreachable (buffer overflow, in flight when the
    /// connection broke, left over at stop, or pushed after the fork ended).
    pub frames_dropped_disconnected: AtomicU64,
    /// Frames dropped (oldest first) because the service read too slowly.
    pub frames_dropped_slow: AtomicU64,
    /// Bytes of WebSocket data messages written (all kinds).
    pub bytes_sent: AtomicU64,
    /// Audio messages received from the service.
    pub frames_received: AtomicU64,
    /// Bytes of audio received from the service (decoded).
    pub bytes_received: AtomicU64,
    /// 20 ms pieces of service audio dropped because it came faster than it plays.
    pub playback_dropped: AtomicU64,
    /// Messages from the service ignored (unknown type, unsupported audio, command flood).
    pub messages_ignored: AtomicU64,
    /// Successful connections: the first and every reconnection.
    pub connects: AtomicU64,
    /// Successful reconnections.
    pub reconnects: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
    /// Marks received from the service.
    pub marks: AtomicU64,
    /// Clears received from the service.
    pub clears: AtomicU64,
    /// RTP arrival → write flushed.
    pub latency: Latency,
    state: AtomicU8,
}

impl ForkStats {
    /// Current state.
    pub fn state(&self) -> ForkState {
        ForkState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: ForkState) {
        self.state.store(s.to_u8(), Ordering::Release);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// All audio frames lost so far.
    pub fn frames_dropped(&self) -> u64 {
        Self::get(&self.frames_dropped_queue_full)
            + Self::get(&self.frames_dropped_disconnected)
            + Self::get(&self.frames_dropped_slow)
    }

    /// The counters reported in `stop`.
    pub fn stop_counters(&self) -> StopCounters {
        StopCounters {
            frames_sent: Self::get(&self.frames_sent),
            frames_dropped: self.frames_dropped(),
            dropped_queue_full: Self::get(&self.frames_dropped_queue_full),
            dropped_disconnected: Self::get(&self.frames_dropped_disconnected),
            dropped_slow: Self::get(&self.frames_dropped_slow),
            reconnects: Self::get(&self.reconnects),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn state_round_trips() {
        let s = ForkStats::default();
        assert_eq!(s.state(), ForkState::Connecting);
        for st in [
            ForkState::Connected,
            ForkState::Reconnecting,
            ForkState::Failed,
            ForkState::Stopped,
        ] {
            s.set_state(st);
            assert_eq!(s.state(), st);
        }
    }

    #[test]
    fn latency_summary() {
        let l = Latency::default();
        assert_eq!(l.quantile(0.5), None);
        for ms in [1u64, 1, 1, 1, 1, 1, 1, 1, 30, 700] {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 10);
        assert_eq!(l.max(), Duration::from_millis(700));
        assert_eq!(l.mean(), Some(Duration::from_micros(73_800)));
        assert_eq!(l.sum(), Duration::from_millis(738));
        assert_eq!(l.quantile(0.5), Some(Duration::from_millis(1)));
        assert_eq!(l.quantile(0.9), Some(Duration::from_millis(50)));
        assert_eq!(l.quantile(1.0), Some(Duration::from_millis(700)));
        assert_eq!(l.buckets().iter().sum::<u64>(), 10);
    }
}
