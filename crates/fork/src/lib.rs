#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Siphon's media fork: the WebSocket side of streaming a call's audio to an analytics
//! service and playing back what it returns.
//!
//! The server starts one fork per forked call with [`start`]. Each fork is **one tokio task**
//! (the design's "forker thread" for that call) that owns the fork's state: its socket, its
//! outgoing buffer and its protocol codec. The server's media task talks to it through a
//! [`Fork`] handle whose methods never block:
//!
//! - [`Fork::send_audio`] hands over one 20 ms frame already in [`ForkConfig::effective_format`]
//!   (the server does G.711 and resampling). The channel is bounded: when the fork task is
//!   behind, the frame is dropped and counted. While the service is unreachable or reads too
//!   slowly, up to [`ForkConfig::buffer`] of audio waits, the oldest dropped past it.
//! - [`Fork::try_recv`] / [`Fork::recv`] return what the service asked for, in order, with its
//!   audio cut into 20 ms pieces for the pacer. Each pacer tick takes commands until it gets
//!   one [`ServiceCommand::Audio`] (or none): a [`ServiceCommand::Mark`] met on the way has been
//!   reached, so the server calls [`Fork::mark_played`]. Audio arriving faster than real time
//!   waits up to [`ForkConfig::playback_buffer`], the oldest dropped past it. `clear` is acted on
//!   by the fork at once (queued audio and marks dropped, marks echoed back as cleared) and
//!   reaches the server first.
//! - [`Fork::stop`] sends the protocol's `stop` with the reason and counters and closes the
//!   socket, within [`ForkConfig::stop_timeout`].
//!
//! The wire protocols (`native`, `twilio`, `audio_fork`) are pure encoders/decoders in
//! [`protocol`]; `docs/fork-protocols.md` documents every message.
//!
//! Failure policy: the call never waits on the network and never ends because of it, except
//! that a [`ForkConfig::required`] fork that cannot connect within
//! [`ForkConfig::connect_timeout`] yields [`ServiceCommand::Failed`] (the server ends the
//! call). A lost connection is retried with exponential backoff and jitter while the call
//! lasts. A malformed or oversized message from the service closes the fork (WebSocket close
//! code and reason, a log line, [`ForkState::Failed`]); the call continues without it.

mod backoff;
pub mod config;
mod conn;
mod connect;
pub mod playback;
pub mod protocol;
mod redact;
pub mod stats;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, warn};

pub use config::{
    AudioFormat, CallMeta, ConfigError, Encoding, ForkConfig, Mix, Mode, TlsRoots, Tracks,
};
pub use protocol::{ProtocolError, ServiceCommand};
pub use redact::redact_url;
pub use stats::{ForkState, ForkStats};
pub use tokio::time::Instant;

use backoff::{Backoff, Rng};
use conn::{Control, OutFrame, Shared, Task, TaskParts};
use playback::PlaybackQueue;
use protocol::{Codec, StreamInfo, is_dtmf_digit};

/// Control events (DTMF, mark echoes) that may wait for the fork task.
const CONTROL_QUEUE: usize = 256;

/// The server's handle on one fork. Dropping it stops the fork (reason `fork dropped`).
#[derive(Debug)]
pub struct Fork {
    audio_tx: mpsc::Sender<OutFrame>,
    ctl_tx: mpsc::Sender<Control>,
    stop_tx: Option<oneshot::Sender<String>>,
    shared: Arc<Shared>,
    stats: Arc<ForkStats>,
    stream_id: String,
    format: AudioFormat,
    task: Option<JoinHandle<()>>,
}

/// Starts a fork of the call `meta` (spawns its task; needs a tokio runtime) and returns at
/// once. An invalid configuration, or no runtime, gives a fork that is already
/// [`ForkState::Failed`] (with [`ServiceCommand::Failed`] queued if it is required).
pub fn start(config: ForkConfig, meta: CallMeta) -> Fork {
    let mut rng = Rng::new(seed(&meta.call_id));
    let stream_id = format!("MZ{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    let format = config.effective_format();
    let stats = Arc::new(ForkStats::default());
    let shared = Arc::new(Shared::new(PlaybackQueue::new(
        u64::try_from(config.playback_buffer.as_micros()).unwrap_or(u64::MAX),
    )));
    let (audio_tx, audio_rx) = mpsc::channel(config.queue_frames.clamp(1, 100_000));
    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut fork = Fork {
        audio_tx,
        ctl_tx,
        stop_tx: Some(stop_tx),
        shared: shared.clone(),
        stats: stats.clone(),
        stream_id: stream_id.clone(),
        format,
        task: None,
    };

    let problem = match (config.validate(), tokio::runtime::Handle::try_current()) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(()), Err(_)) => Err("no tokio runtime to run the fork in".to_string()),
        (Ok(()), Ok(rt)) => Ok(rt),
    };
    let rt = match problem {
        Ok(rt) => rt,
        Err(reason) => {
            warn!(stream = %stream_id, call = %meta.call_id, reason = %reason, "fork not started");
            if config.required {
                shared.queue().push_front(ServiceCommand::Failed(reason));
            }
            stats.set_state(ForkState::Failed);
            shared.finish();
            return fork;
        }
    };

    let span = tracing::info_span!(
        "fork",
        stream = %stream_id,
        call = %meta.call_id,
        mode = config.mode.as_str()
    );
    let codec = Codec::new(
        config.mode,
        StreamInfo::new(stream_id.clone(), &config, meta),
    );
    let backoff = Backoff::new(
        config.reconnect_min,
        config.reconnect_max,
        Rng::new(rng.next_u64()),
    );
    let task = Task::new(TaskParts {
        config,
        codec,
        stream_id,
        shared,
        stats,
        audio_rx,
        ctl_rx,
        stop_rx,
        backoff,
    });
    fork.task = Some(rt.spawn(task.run().instrument(span)));
    fork
}

/// A seed for stream ids and jitter: std's randomly keyed hasher over the time, a process
/// counter and the call id.
fn seed(call_id: &str) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write(call_id.as_bytes());
    h.finish()
}

impl Fork {
    /// One 20 ms frame in [`ForkConfig::effective_format`] (channels interleaved, inbound
    /// first). Never blocks: if the fork task's queue is full the frame is dropped and
    /// counted. `rtp_arrival` is when its RTP packet arrived, for the latency statistics.
    pub fn send_audio(&self, frame: Bytes, rtp_arrival: Instant) {
        let index = self.stats.frames_pushed.fetch_add(1, Ordering::Relaxed);
        let out = OutFrame {
            data: frame,
            index,
            arrival: rtp_arrival,
        };
        match self.audio_tx.try_send(out) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                ForkStats::add(&self.stats.frames_dropped_queue_full, 1);
            }
            Err(TrySendError::Closed(_)) => {
                ForkStats::add(&self.stats.frames_dropped_disconnected, 1);
            }
        }
    }

    /// The caller pressed `digit` (`0`–`9`, `*`, `#`, `A`–`D`) for `duration_ms`.
    pub fn send_dtmf(&self, digit: char, duration_ms: u32) {
        let digit = digit.to_ascii_uppercase();
        if !is_dtmf_digit(digit) {
            debug!(stream = %self.stream_id, ?digit, "not a DTMF digit; not forwarded");
            return;
        }
        if self
            .ctl_tx
            .try_send(Control::Dtmf(digit, duration_ms))
            .is_err()
        {
            debug!(stream = %self.stream_id, "fork control queue full or closed; DTMF not forwarded");
        }
    }

    /// The call is being transferred to `target`: `status` is `trying`, `answered` or
    /// `failed` (with `reason`). Sent as the native mode's `transfer` event; the other
    /// modes have no such message.
    pub fn send_transfer(&self, target: &str, status: &str, reason: Option<&str>) {
        let msg = Control::Transfer(
            target.to_string(),
            status.to_string(),
            reason.map(str::to_string),
        );
        if self.ctl_tx.try_send(msg).is_err() {
            debug!(stream = %self.stream_id, "fork control queue full or closed; transfer event not sent");
        }
    }

    /// Playback reached the mark `name` (a [`ServiceCommand::Mark`] the server took): tells
    /// the service.
    pub fn mark_played(&self, name: String) {
        if self.ctl_tx.try_send(Control::MarkPlayed(name)).is_err() {
            debug!(stream = %self.stream_id, "fork control queue full or closed; mark not echoed");
        }
    }

    /// The next command from the service, if one is waiting. Never blocks (a per-fork mutex
    /// held for a queue operation).
    pub fn try_recv(&mut self) -> Option<ServiceCommand> {
        self.shared.queue().pop()
    }

    /// The next command from the service; `None` once the fork has ended and everything it
    /// received was taken ([`Fork::state`] says why it ended).
    pub async fn recv(&mut self) -> Option<ServiceCommand> {
        loop {
            if let Some(c) = self.try_recv() {
                return Some(c);
            }
            if self.shared.done.load(Ordering::Acquire) {
                return self.try_recv();
            }
            self.shared.notify.notified().await;
        }
    }

    /// Ends the fork: buffered audio is flushed, then `stop` (reason and counters) is sent
    /// and the socket closed, all within [`ForkConfig::stop_timeout`]. Returns at once; the
    /// returned handle can be awaited for completion.
    pub fn stop(mut self, reason: &str) -> Stopping {
        if let Some(tx) = self.stop_tx.take() {
            // The task may already have ended; then there is nothing to stop.
            let _ = tx.send(reason.to_string());
        }
        Stopping {
            task: self.task.take(),
            stats: self.stats.clone(),
        }
    }

    /// The fork's counters (shared, live).
    pub fn stats(&self) -> Arc<ForkStats> {
        self.stats.clone()
    }

    /// Where the fork is in its life.
    pub fn state(&self) -> ForkState {
        self.stats.state()
    }

    /// The fork's unique stream id (`MZ` + 32 hex digits), as sent to the service.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The format [`Fork::send_audio`] expects.
    pub fn format(&self) -> AudioFormat {
        self.format
    }
}

/// Returned by [`Fork::stop`]; await [`Stopping::wait`] to know the fork has finished.
#[derive(Debug)]
pub struct Stopping {
    task: Option<JoinHandle<()>>,
    stats: Arc<ForkStats>,
}

impl Stopping {
    /// Waits for the fork task to end and returns its final counters.
    pub async fn wait(self) -> Arc<ForkStats> {
        if let Some(task) = self.task
            && let Err(e) = task.await
        {
            warn!(error = %e, "fork task ended abnormally");
        }
        self.stats
    }
}
