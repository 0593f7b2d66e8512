//! RFC 3261 timer values in one place (§17.1.1.1, Table 4).

use std::time::Duration;

/// T1/T2/T4 and the timers derived from them. Configurable because some networks need a
/// longer T1 (satellite links) and tests want short ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; the initial retransmission interval. Default 500 ms.
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses. Default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network. Default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// Timer B, F, H, J (unreliable) and L: 64·T1.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D on unreliable transports: "at least 32 s".
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.t1x64())
    }
}
