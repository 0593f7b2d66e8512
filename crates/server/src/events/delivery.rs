//! One destination's delivery task: its bounded queue, delivered in order, the event at
//! the head retried with exponential backoff until accepted or too old.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Envelope, sign, unix_now};
use crate::config::EventsConfig;
use crate::counters::{Counters, inc};

/// The wait before attempt `failures + 1`: `min` doubled per failure, at most `max`.
pub(super) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

pub(super) fn spawn(
    url: String,
    config: &EventsConfig,
    counters: Arc<Counters>,
) -> mpsc::Sender<Arc<Envelope>> {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    tokio::spawn(run(url, config.clone(), counters, rx));
    tx
}

async fn run(
    url: String,
    config: EventsConfig,
    counters: Arc<Counters>,
    mut queue: mpsc::Receiver<Arc<Envelope>>,
) {
    let secret = config.secret.clone().map(String::into_bytes);
    let min = Duration::from_millis(config.retry_min_ms.max(1));
    let max = Duration::from_millis(config.retry_max_ms.max(config.retry_min_ms.max(1)));
    let give_up = Duration::from_secs(config.give_up_s);
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    while let Some(event) = queue.recv().await {
        let mut failures = 0u32;
        loop {
            // Signed at each attempt: `t` says when this delivery was made.
            let mut headers = Vec::new();
            if let Some(secret) = &secret {
                let value = sign::header_value(secret, unix_now(), &event.body);
                headers.push((sign::HEADER.to_string(), value));
            }
            let result =
                crate::http_post::post_json(&url, &headers, event.body.clone(), timeout, timeout)
                    .await;
            match result {
                Ok(a) if (200..300).contains(&a.status) => {
                    inc(&counters.events.sent);
                    break;
                }
                Ok(a) => debug!(%url, status = a.status, "event refused; will retry"),
                Err(e) => debug!(%url, error = %e, "event not delivered; will retry"),
            }
            if event.queued.elapsed() >= give_up {
                warn!(%url, "event given up after retrying");
                inc(&counters.events.failed);
                break;
            }
            inc(&counters.events.retries);
            tokio::time::sleep(backoff(failures, min, max)).await;
            failures = failures.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(2));
        let waits: Vec<u128> = (0..6).map(|f| backoff(f, min, max).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }
}
