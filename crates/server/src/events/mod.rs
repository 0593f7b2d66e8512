//! Call status events: `call.ringing`, `call.answered`, `call.transferred`, `call.ended`
//! (with the CDR), `fork.started`, `fork.stopped`, posted as JSON to `[events] urls` and to
//! the call's own `callback_url`.
//!
//! Emitting never waits: the event is formatted once and put on each destination's bounded
//! queue (full: dropped and counted). One task per destination delivers its queue in
//! order, retrying the event at the head with exponential backoff until it is accepted or
//! `give_up_s` passes, so a call's events reach a receiver in the order they happened,
//! and a receiver that is down for a while gets everything that fit the queue once back.

mod delivery;
pub mod sign;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::EventsConfig;
use crate::counters::{Counters, inc};

/// The kinds of event, by their wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    CallRinging,
    CallAnswered,
    /// The caller was moved to another target (`POST /api/calls/{id}/transfer`, REFER).
    CallTransferred,
    CallEnded,
    ForkStarted,
    ForkStopped,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::CallRinging => "call.ringing",
            EventKind::CallAnswered => "call.answered",
            EventKind::CallTransferred => "call.transferred",
            EventKind::CallEnded => "call.ended",
            EventKind::ForkStarted => "fork.started",
            EventKind::ForkStopped => "fork.stopped",
        }
    }
}

/// One queued event: its body, formatted once for every destination.
#[derive(Debug)]
struct Envelope {
    body: Bytes,
    queued: tokio::time::Instant,
}

/// The handle every part of Siphon emits through (cheap to clone).
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    config: EventsConfig,
    counters: Arc<Counters>,
    /// `[events] urls`.
    fixed: Vec<mpsc::Sender<Arc<Envelope>>>,
    /// Each call's callback URL, while the call is up.
    callbacks: DashMap<String, String>,
    /// Calls that had their `call.ringing` (one per call, however many 180s and 183s).
    rung: DashMap<String, ()>,
    /// Destinations of callback URLs, started on first use (at most `max_callback_urls`).
    by_url: Mutex<HashMap<String, mpsc::Sender<Arc<Envelope>>>>,
    sequence: AtomicU64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("urls", &self.inner.config.urls)
            .finish()
    }
}

impl Events {
    /// Starts a delivery task per configured URL (must run inside the tokio runtime).
    pub fn start(config: Option<&EventsConfig>, counters: Arc<Counters>) -> Events {
        let config = config.cloned().unwrap_or_default();
        let fixed = config
            .urls
            .iter()
            .map(|url| delivery::spawn(url.clone(), &config, counters.clone()))
            .collect();
        Events {
            inner: Arc::new(Inner {
                config,
                counters,
                fixed,
                callbacks: DashMap::new(),
                rung: DashMap::new(),
                by_url: Mutex::new(HashMap::new()),
                sequence: AtomicU64::new(0),
            }),
        }
    }

    /// The call's own callback URL, besides `[events] urls` (until [`Self::forget_call`]).
    pub fn set_callback(&self, call_id: &str, url: Option<&str>) {
        if let Some(url) = url {
            self.inner
                .callbacks
                .insert(call_id.to_string(), url.to_string());
        }
    }

    pub fn forget_call(&self, call_id: &str) {
        self.inner.callbacks.remove(call_id);
        self.inner.rung.remove(call_id);
    }

    /// Queues `kind` for `call_id` with `data` on every destination; never waits.
    /// `call.ringing` goes out once per call.
    pub fn emit(&self, call_id: &str, kind: EventKind, data: Value) {
        let inner = &self.inner;
        let callback = inner.callbacks.get(call_id).map(|u| u.value().clone());
        if inner.fixed.is_empty() && callback.is_none() {
            return;
        }
        if kind == EventKind::CallRinging && inner.rung.insert(call_id.to_string(), ()).is_some() {
            return;
        }
        let sequence = inner.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now();
        let body = json!({
            "id": format!("evt_{:016x}", rand::random::<u64>()),
            "type": kind.name(),
            "sequence": sequence,
            "timestamp": crate::cdr::format_time(now),
            "call_id": call_id,
            "data": data,
        });
        let envelope = Arc::new(Envelope {
            body: Bytes::from(body.to_string()),
            queued: tokio::time::Instant::now(),
        });
        for tx in &inner.fixed {
            self.enqueue(tx, &envelope);
        }
        if let Some(url) = callback
            && let Some(tx) = self.callback_destination(&url)
        {
            self.enqueue(&tx, &envelope);
        }
    }

    fn enqueue(&self, tx: &mpsc::Sender<Arc<Envelope>>, envelope: &Arc<Envelope>) {
        if tx.try_send(envelope.clone()).is_err() {
            inc(&self.inner.counters.events.dropped);
        }
    }

    fn callback_destination(&self, url: &str) -> Option<mpsc::Sender<Arc<Envelope>>> {
        let inner = &self.inner;
        let mut by_url = inner.by_url.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = by_url.get(url) {
            return Some(tx.clone());
        }
        if by_url.len() >= inner.config.max_callback_urls {
            // Destinations no live call names any more are let go: their task delivers
            // what it holds, then ends (its queue's sender is gone). Per-call URLs (a query
            // string per call) would otherwise use up the slots for good.
            by_url.retain(|u, _| inner.callbacks.iter().any(|c| c.value() == u));
        }
        if by_url.len() >= inner.config.max_callback_urls {
            warn!(
                max = inner.config.max_callback_urls,
                "too many distinct callback URLs; event dropped"
            );
            inc(&inner.counters.events.dropped);
            return None;
        }
        let tx = delivery::spawn(url.to_string(), &inner.config, inner.counters.clone());
        by_url.insert(url.to_string(), tx.clone());
        Some(tx)
    }
}

/// Unix seconds now (the signature's `t`).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `fork.started` and `fork.stopped` for every fork, from the forks' registry.
pub fn observe_forks(events: &Events, forks: &crate::fork_metrics::ForkMetrics) {
    let events = events.clone();
    forks.set_observer(Box::new(move |info, stopped| {
        let url = siphon_fork::redact_url(&info.url);
        match stopped {
            None => events.emit(
                &info.call_id,
                EventKind::ForkStarted,
                json!({ "fork_id": info.fork_id, "url": url, "mode": info.mode.as_str() }),
            ),
            Some((frames_sent, frames_dropped, failed)) => events.emit(
                &info.call_id,
                EventKind::ForkStopped,
                json!({
                    "fork_id": info.fork_id,
                    "url": url,
                    "mode": info.mode.as_str(),
                    "frames_sent": frames_sent,
                    "frames_dropped": frames_dropped,
                    "failed": failed,
                }),
            ),
        }
    }));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Receives events on `listener` (one per connection), answering 204.
    async fn receive(listener: tokio::net::TcpListener, out: mpsc::UnboundedSender<Value>) {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if raw.len() >= i + 4 + len {
                    break Some(raw[i + 4..i + 4 + len].to_vec());
                }
            };
            let _ = s
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .await;
            if let Some(body) = body {
                let _ = out.send(serde_json::from_slice(&body).unwrap());
            }
        }
    }

    #[tokio::test]
    async fn a_receiver_down_gets_what_fit_the_queue_in_order_and_the_rest_is_counted() {
        // A port with nobody listening (yet).
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let counters = Arc::new(Counters::default());
        let config = EventsConfig {
            urls: vec![format!("http://127.0.0.1:{port}/events")],
            secret: Some("k".into()),
            queue: 3,
            retry_min_ms: 10,
            retry_max_ms: 50,
            ..EventsConfig::default()
        };
        let events = Events::start(Some(&config), counters.clone());
        for n in 0..10 {
            events.emit("call-1", EventKind::ForkStarted, json!({ "n": n }));
        }
        // 3 wait in the queue, at most 1 is being retried: the rest are dropped at once.
        let dropped = counters.events.dropped.load(Relaxed);
        assert!((6..=7).contains(&dropped), "dropped {dropped}");
        // The delivery task tries, fails and backs off while the receiver is down...
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while counters.events.retries.load(Relaxed) < 2 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("attempts while the receiver is down");
        // ...then the receiver comes up: what was kept arrives, in order, nothing fails.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(receive(listener, tx));
        let kept = 10 - dropped;
        let mut got = Vec::new();
        while (got.len() as u64) < kept {
            let e = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
                .await
                .expect("kept events arrive")
                .unwrap();
            got.push(e["data"]["n"].as_u64().unwrap());
        }
        // In emission order: the first events were kept, the tail dropped.
        assert_eq!(got, (0..kept).collect::<Vec<_>>());
        // The last `sent` is counted once its answer is read, a moment after it arrived.
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while counters.events.sent.load(Relaxed) < kept {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every kept event counted as sent");
        assert_eq!(counters.events.failed.load(Relaxed), 0);
        let dropped = counters.events.dropped.load(Relaxed);
        events.emit("call-2", EventKind::CallRinging, json!({}));
        events.emit("call-2", EventKind::CallRinging, json!({}));
        let e = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e["type"], "call.ringing");
        assert_eq!(counters.events.dropped.load(Relaxed), dropped);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "one call.ringing per call"
        );
    }

    #[tokio::test]
    async fn callback_urls_of_ended_calls_free_their_slots() {
        let counters = Arc::new(Counters::default());
        let config = EventsConfig {
            max_callback_urls: 2,
            ..EventsConfig::default()
        };
        let events = Events::start(Some(&config), counters.clone());
        let dropped = || counters.events.dropped.load(Relaxed);
        for call in ["a", "b"] {
            events.set_callback(call, Some(&format!("http://127.0.0.1:9/{call}")));
            events.emit(call, EventKind::CallAnswered, json!({}));
        }
        events.set_callback("c", Some("http://127.0.0.1:9/c"));
        events.emit("c", EventKind::CallAnswered, json!({}));
        assert_eq!(dropped(), 1, "a and b still up: no slot for c");
        events.forget_call("a");
        events.emit("c", EventKind::CallAnswered, json!({}));
        assert_eq!(dropped(), 1, "a ended: its slot went to c");
    }
}
