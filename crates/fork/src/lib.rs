#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Siphon's media fork: the WebSocket side of streaming a call's audio to an analytics
//! service and playing back what it returns.
//!
//! The server starts one fork per forked call. A fork's state — its socket, its outgoing
//! buffer and its protocol codec — is owned by one task and shared with no other call:
//!
//! - [`start_inline`]: the call's own media task owns it (the design's "forker thread per
//!   call" taken literally) and polls [`Fork::drive`] in its select loop, so a frame goes
//!   from the RTP packet to the WebSocket in one wake-up, without a channel or a second task;
//! - [`start`]: a tokio task of its own, fed over bounded channels.
//!
//! The server's media task talks to it through a [`Fork`] handle whose methods never block:
//!
//! - [`Fork::send_audio`] hands over one 20 ms frame already in [`ForkConfig::effective_format`]
//!   (the server does G.711 and resampling). A fork in its own task is fed over a bounded
//!   channel: when the task is behind, the frame is dropped and counted. While the service
//!   is unreachable or reads too slowly, up to [`ForkConfig::buffer`] of audio waits, the
//!   oldest dropped past it.
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
use std::task::{Context, Poll};
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
use conn::{Control, Core, CoreParts, Ending, OutFrame, Shared, Task};
use playback::PlaybackQueue;
use protocol::{Codec, StreamInfo, is_dtmf_digit};

/// Control events (DTMF, mark echoes) that may wait for the fork task.
const CONTROL_QUEUE: usize = 256;

/// The server's handle on one fork. Dropping it stops the fork (reason `fork dropped`).
#[derive(Debug)]
pub struct Fork {
    driver: Driver,
    shared: Arc<Shared>,
    stats: Arc<ForkStats>,
    stream_id: String,
    format: AudioFormat,
}

/// Where the fork's connection runs.
enum Driver {
    /// In a task of its own ([`start`]), reached over channels.
    Task {
        audio_tx: mpsc::Sender<OutFrame>,
        ctl_tx: mpsc::Sender<Control>,
        stop_tx: Option<oneshot::Sender<String>>,
        task: Option<JoinHandle<()>>,
    },
    /// Inside the task that holds the handle ([`start_inline`]), which polls
    /// [`Fork::drive`]. Once the fork ends, its closing runs in a task of its own
    /// (`closing`) and `core` is gone.
    Inline {
        core: Option<Box<Core>>,
        span: tracing::Span,
        closing: Option<JoinHandle<()>>,
    },
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Driver::Task { .. } => f.write_str("Task"),
            Driver::Inline { core, .. } => f
                .debug_struct("Inline")
                .field("running", &core.is_some())
                .finish(),
        }
    }
}

/// Starts a fork of the call `meta` in a task of its own (needs a tokio runtime) and
/// returns at once. Frames and control reach the task over bounded channels
/// ([`ForkConfig::queue_frames`]). An invalid configuration, or no runtime, gives a fork that
/// is already [`ForkState::Failed`] (with [`ServiceCommand::Failed`] queued if it is
/// required).
pub fn start(config: ForkConfig, meta: CallMeta) -> Fork {
    let (audio_tx, audio_rx) = mpsc::channel(config.queue_frames.clamp(1, 100_000));
    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    let driver = Driver::Task {
        audio_tx,
        ctl_tx,
        stop_tx: Some(stop_tx),
        task: None,
    };
    let (mut fork, ready) = prepare(config, meta, driver);
    if let Some((core, span, rt)) = ready {
        let task = Task::new(*core, audio_rx, ctl_rx, stop_rx);
        if let Driver::Task { task: slot, .. } = &mut fork.driver {
            *slot = Some(rt.spawn(task.run().instrument(span)));
        }
    }
    fork
}

/// Starts a fork of the call `meta` that runs inside the caller's task: the "forker thread
/// per call" taken literally. [`Fork::send_audio`] puts the frame in the fork's backlog and
/// the caller's next [`Fork::drive`] writes it to the socket, so a frame costs no channel
/// hand-over and no second task's wake-up; the service's messages are read by the same
/// polls. The caller must poll [`Fork::drive`] whenever it is woken (it registers the
/// caller's waker for the socket, the connection attempt and the fork's timer). Stopping
/// (or dropping) the handle moves the closing handshake to a task of its own.
///
/// Without a tokio runtime, or with an invalid configuration, the fork is already
/// [`ForkState::Failed`], as with [`start`].
pub fn start_inline(config: ForkConfig, meta: CallMeta) -> Fork {
    let driver = Driver::Inline {
        core: None,
        span: tracing::Span::none(),
        closing: None,
    };
    let (mut fork, ready) = prepare(config, meta, driver);
    if let Some((core, new_span, _rt)) = ready
        && let Driver::Inline {
            core: slot, span, ..
        } = &mut fork.driver
    {
        *slot = Some(core);
        *span = new_span;
    }
    fork
}

/// What a fork needs to run: its state, its log span and the runtime it runs in.
type Ready = (Box<Core>, tracing::Span, tokio::runtime::Handle);

/// The handle and, unless the fork cannot run, its connection state.
fn prepare(config: ForkConfig, meta: CallMeta, driver: Driver) -> (Fork, Option<Ready>) {
    let mut rng = Rng::new(seed(&meta.call_id));
    let stream_id = format!("MZ{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    let format = config.effective_format();
    let stats = Arc::new(ForkStats::default());
    let shared = Arc::new(Shared::new(PlaybackQueue::new(
        u64::try_from(config.playback_buffer.as_micros()).unwrap_or(u64::MAX),
    )));
    let fork = Fork {
        driver,
        shared: shared.clone(),
        stats: stats.clone(),
        stream_id: stream_id.clone(),
        format,
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
            return (fork, None);
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
    let core = Box::new(Core::new(CoreParts {
        config,
        codec,
        stream_id,
        shared,
        stats,
        backoff,
    }));
    (fork, Some((core, span, rt)))
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
    pub fn send_audio(&mut self, frame: Bytes, rtp_arrival: Instant) {
        let index = self.stats.frames_pushed.fetch_add(1, Ordering::Relaxed);
        let out = OutFrame {
            data: frame,
            index,
            arrival: rtp_arrival,
        };
        match &mut self.driver {
            Driver::Task { audio_tx, .. } => match audio_tx.try_send(out) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    ForkStats::add(&self.stats.frames_dropped_queue_full, 1);
                }
                Err(TrySendError::Closed(_)) => {
                    ForkStats::add(&self.stats.frames_dropped_disconnected, 1);
                }
            },
            Driver::Inline {
                core: Some(core), ..
            } => core.push_frame(out),
            Driver::Inline { core: None, .. } => {
                ForkStats::add(&self.stats.frames_dropped_disconnected, 1);
            }
        }
    }

    /// Drives an inline fork ([`start_inline`]): writes what is waiting, reads what the
    /// service sent (into the queue [`Fork::try_recv`] takes from), connects, reconnects and
    /// pings. Never blocks; registers `cx` for what it waits on. When the fork ends (the
    /// service closed it, broke the protocol, or a required fork could not connect) its
    /// closing moves to a task of its own and what the server must know is queued for
    /// [`Fork::try_recv`]. Does nothing for a fork started with [`start`].
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        let Driver::Inline {
            core: slot,
            span,
            closing,
        } = &mut self.driver
        else {
            return;
        };
        let Some(core) = slot.as_mut() else { return };
        let ending = {
            let _entered = span.enter();
            match core.poll_drive(cx) {
                Poll::Ready(ending) => ending,
                Poll::Pending => return,
            }
        };
        if let Some(core) = slot.take() {
            *closing = Some(tokio::spawn(core.finish(ending).instrument(span.clone())));
        }
    }

    /// Sends a control message: over the channel, or into an inline fork's outbox.
    fn control(&mut self, c: Control) -> bool {
        match &mut self.driver {
            Driver::Task { ctl_tx, .. } => ctl_tx.try_send(c).is_ok(),
            Driver::Inline {
                core: Some(core), ..
            } => {
                core.on_control(c);
                true
            }
            Driver::Inline { core: None, .. } => false,
        }
    }

    /// The caller pressed `digit` (`0`–`9`, `*`, `#`, `A`–`D`) for `duration_ms`.
    pub fn send_dtmf(&mut self, digit: char, duration_ms: u32) {
        let digit = digit.to_ascii_uppercase();
        if !is_dtmf_digit(digit) {
            debug!(stream = %self.stream_id, ?digit, "not a DTMF digit; not forwarded");
            return;
        }
        if !self.control(Control::Dtmf(digit, duration_ms)) {
            debug!(stream = %self.stream_id, "fork control queue full or closed; DTMF not forwarded");
        }
    }

    /// The call is being transferred to `target`: `status` is `trying`, `answered` or
    /// `failed` (with `reason`). Sent as the native mode's `transfer` event; the other
    /// modes have no such message.
    pub fn send_transfer(&mut self, target: &str, status: &str, reason: Option<&str>) {
        let msg = Control::Transfer(
            target.to_string(),
            status.to_string(),
            reason.map(str::to_string),
        );
        if !self.control(msg) {
            debug!(stream = %self.stream_id, "fork control queue full or closed; transfer event not sent");
        }
    }

    /// Playback reached the mark `name` (a [`ServiceCommand::Mark`] the server took): tells
    /// the service.
    pub fn mark_played(&mut self, name: String) {
        if !self.control(Control::MarkPlayed(name)) {
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
        let task = match &mut self.driver {
            Driver::Task { stop_tx, task, .. } => {
                if let Some(tx) = stop_tx.take() {
                    // The task may already have ended; then there is nothing to stop.
                    let _ = tx.send(reason.to_string());
                }
                task.take()
            }
            Driver::Inline { .. } => self.close_inline(reason),
        };
        Stopping {
            task,
            stats: self.stats.clone(),
        }
    }

    /// An inline fork's ending: its closing (flush, `stop`, close handshake) in a task of
    /// its own, or the one already under way.
    fn close_inline(&mut self, reason: &str) -> Option<JoinHandle<()>> {
        let Driver::Inline {
            core,
            span,
            closing,
        } = &mut self.driver
        else {
            return None;
        };
        match core.take() {
            Some(core) => {
                let ending = Ending::Stop(reason.to_string());
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => Some(rt.spawn(core.finish(ending).instrument(span.clone()))),
                    // No runtime left (shutting down): nothing can be sent any more.
                    Err(_) => None,
                }
            }
            None => closing.take(),
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

/// An inline fork whose handle is dropped without [`Fork::stop`] still says goodbye (a
/// fork in its own task sees its channels close and does the same).
impl Drop for Fork {
    fn drop(&mut self) {
        if let Driver::Inline { core: Some(_), .. } = &self.driver {
            let _closing = self.close_inline("fork dropped");
        }
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
