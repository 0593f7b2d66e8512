//! `[events]`: where call status events go and how they are signed and retried.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Every event goes to each of these (http:// or https://).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Signs each body: `X-Siphon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    /// "<t>.<body>">` (absent: events go unsigned).
    pub secret: Option<String>,
    /// Events waiting per destination; past it new events are dropped and counted
    /// (`siphon_events_total{result="dropped"}`), never waited for.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Backoff between attempts doubles from `retry_min_ms` up to `retry_max_ms`...
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// ...and an event still undelivered this long after it was queued is given up
    /// (`result="failed"`).
    #[serde(default = "default_give_up_s")]
    pub give_up_s: u64,
    /// One attempt (connect, send, answer) may take this long.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Distinct callback URLs of live calls delivered to at once (a URL no live call
    /// names any more frees its slot); events to more are dropped and counted.
    #[serde(default = "default_max_callback_urls")]
    pub max_callback_urls: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            urls: Vec::new(),
            secret: None,
            queue: default_queue(),
            retry_min_ms: default_retry_min_ms(),
            retry_max_ms: default_retry_max_ms(),
            give_up_s: default_give_up_s(),
            timeout_ms: default_timeout_ms(),
            max_callback_urls: default_max_callback_urls(),
        }
    }
}

fn default_queue() -> usize {
    1000
}
fn default_retry_min_ms() -> u64 {
    250
}
fn default_retry_max_ms() -> u64 {
    2000
}
fn default_give_up_s() -> u64 {
    300
}
fn default_timeout_ms() -> u64 {
    3000
}
fn default_max_callback_urls() -> usize {
    64
}
