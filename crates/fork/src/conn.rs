//! One fork's connection: [`Core`] owns the fork's state — its socket, its outgoing buffer,
//! its codec — and nothing shared with other calls. It is a poll-driven state machine, so it
//! runs either inside the call's media task ([`crate::start_inline`]: the media task puts a
//! frame in the backlog and writes it to the socket in the same wake-up, no channel and no
//! second task) or in a task of its own ([`Task`], [`crate::start`]: frames and control
//! arrive over bounded channels).
//!
//! [`Core::poll_drive`] drives the socket (read and write together without blocking
//! either), a connection attempt in progress, and one timer (ping, keepalive, reconnect).
//! Audio always goes through a bounded backlog; when the socket cannot take it
//! (disconnected, or a slow reader) the oldest frames are dropped and counted, so the media
//! task never waits on the network.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::ForkConfig;
use crate::connect::{Target, Ws, connect};
use crate::playback::PlaybackQueue;
use crate::protocol::{Codec, Incoming, ProtocolError, ServiceCommand, WireMsg};
use crate::stats::{ForkState, ForkStats};

/// DTMF and mark echoes waiting for a connection; the oldest go first past this.
const MAX_CONTROL: usize = 256;

/// One audio frame from the media task.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub data: Bytes,
    pub index: u64,
    pub arrival: Instant,
}

/// Non-audio input from the media task.
#[derive(Debug)]
pub(crate) enum Control {
    Dtmf(char, u32),
    MarkPlayed(String),
    /// A transfer's progress: target, status, reason.
    Transfer(String, String, Option<String>),
}

/// What the fork task shares with its [`crate::Fork`] handle (and only with it).
#[derive(Debug)]
pub(crate) struct Shared {
    pub playback: Mutex<PlaybackQueue>,
    pub notify: Notify,
    pub done: AtomicBool,
}

impl Shared {
    pub(crate) fn new(playback: PlaybackQueue) -> Self {
        Shared {
            playback: Mutex::new(playback),
            notify: Notify::new(),
            done: AtomicBool::new(false),
        }
    }

    /// The playback queue. A panic while holding it cannot leave it inconsistent in a way
    /// that matters more than losing the call's audio, so poisoning is ignored.
    pub(crate) fn queue(&self) -> MutexGuard<'_, PlaybackQueue> {
        self.playback.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// A control message, encoded only when it is written (Twilio numbers messages per
/// connection).
#[derive(Debug)]
enum ControlOut {
    Dtmf(char, u32),
    Mark(String, bool),
    Transfer(String, String, Option<String>),
}

/// Everything waiting to be written, in priority order.
struct Outbox {
    codec: Codec,
    /// Messages of the current connection already built (start, a frame's second track,
    /// pings, close).
    pending: VecDeque<Message>,
    control: VecDeque<ControlOut>,
    backlog: VecDeque<OutFrame>,
    backlog_cap: usize,
    /// Arrival times of frames started but not yet flushed.
    in_flight: Vec<Instant>,
    scratch: Vec<WireMsg>,
}

impl Outbox {
    fn has_more(&self) -> bool {
        !self.pending.is_empty() || !self.control.is_empty() || !self.backlog.is_empty()
    }

    fn next(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        while let Some(c) = self.control.pop_front() {
            let wire = match c {
                ControlOut::Dtmf(d, ms) => Some(self.codec.dtmf(d, ms)),
                ControlOut::Mark(name, cleared) => Some(self.codec.mark(&name, cleared)),
                ControlOut::Transfer(target, status, reason) => {
                    self.codec.transfer(&target, &status, reason.as_deref())
                }
            };
            if let Some(wire) = wire {
                return Some(to_message(wire));
            }
        }
        let frame = self.backlog.pop_front()?;
        self.in_flight.push(frame.arrival);
        self.scratch.clear();
        self.codec
            .audio(&frame.data, frame.index, &mut self.scratch);
        let mut msgs = self.scratch.drain(..).map(to_message);
        let first = msgs.next();
        self.pending.extend(msgs);
        first.or_else(|| self.pending.pop_front())
    }
}

fn to_message(w: WireMsg) -> Message {
    match w {
        WireMsg::Text(s) => Message::Text(s.into()),
        WireMsg::Binary(b) => Message::Binary(b),
    }
}

enum IoEvent {
    Msg(Message),
    Error(tungstenite::Error),
    Closed,
}

/// The socket and what goes out on it.
struct Io {
    ws: Option<Box<Ws>>,
    out: Outbox,
    needs_flush: bool,
    stats: Arc<ForkStats>,
}

impl Io {
    /// Writes whatever is waiting (as far as the socket takes it), then reads the next
    /// message. Writing first means a service that floods us cannot starve our audio.
    /// Pending forever while disconnected.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<IoEvent> {
        let Some(ws) = self.ws.as_mut() else {
            return Poll::Pending;
        };
        if let Err(e) = Self::poll_write(ws, &mut self.out, &mut self.needs_flush, &self.stats, cx)
        {
            return Poll::Ready(IoEvent::Error(e));
        }
        match ws.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(m))) => Poll::Ready(IoEvent::Msg(m)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(IoEvent::Error(e)),
            Poll::Ready(None) => Poll::Ready(IoEvent::Closed),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Moves messages into the socket while it is ready, then flushes. Returns `Ok` both
    /// when done and when the socket is full (the waker is registered then).
    fn poll_write(
        ws: &mut Ws,
        out: &mut Outbox,
        needs_flush: &mut bool,
        stats: &ForkStats,
        cx: &mut Context<'_>,
    ) -> Result<(), tungstenite::Error> {
        while out.has_more() {
            match ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                // The socket is full: frames wait in the backlog (bounded, oldest dropped).
                Poll::Pending => return Ok(()),
            }
            let Some(msg) = out.next() else { break };
            ForkStats::add(&stats.bytes_sent, msg.len() as u64);
            ws.start_send_unpin(msg)?;
            *needs_flush = true;
        }
        if *needs_flush {
            match ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    *needs_flush = false;
                    let now = Instant::now();
                    let n = out.in_flight.len() as u64;
                    for arrival in out.in_flight.drain(..) {
                        stats.latency.record(now.saturating_duration_since(arrival));
                    }
                    ForkStats::add(&stats.frames_sent, n);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Writes and flushes everything waiting. Messages read meanwhile are dropped (only
    /// used while ending).
    async fn flush_all(&mut self) -> Result<(), String> {
        poll_fn(|cx| {
            loop {
                if self.ws.is_none() {
                    return Poll::Ready(Err("not connected".to_string()));
                }
                match self.poll_io(cx) {
                    Poll::Ready(IoEvent::Msg(Message::Ping(_) | Message::Close(_))) => {
                        self.needs_flush = true;
                    }
                    Poll::Ready(IoEvent::Msg(_)) => {}
                    Poll::Ready(IoEvent::Error(e)) => return Poll::Ready(Err(e.to_string())),
                    Poll::Ready(IoEvent::Closed) => {
                        return Poll::Ready(Err("connection closed".to_string()));
                    }
                    Poll::Pending => {
                        if !self.out.has_more() && !self.needs_flush {
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }

    /// Reads until the peer's close (or the end of the stream).
    async fn drain_until_closed(&mut self) {
        let Some(ws) = self.ws.as_mut() else { return };
        while let Some(Ok(_)) = ws.next().await {}
    }
}

/// Why a fork ends.
pub(crate) enum Ending {
    /// [`crate::Fork::stop`] or the handle dropped.
    Stop(String),
    /// The service closed with 1000.
    ClosedByService(String),
    /// The service broke the protocol.
    Fatal(ProtocolError),
    /// A required fork could not connect in time.
    Failed(String),
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Ws, String>> + Send>>;

/// Socket events handled in one [`Core::poll_drive`] before it yields: a service flooding
/// the socket cannot keep the call's media task (which may be the one polling) from its
/// own work.
const EVENTS_PER_POLL: usize = 32;

/// One fork's connection state, driven by [`Core::poll_drive`] from whichever task owns it.
pub(crate) struct Core {
    config: ForkConfig,
    target: Target,
    stream_id: String,
    shared: Arc<Shared>,
    stats: Arc<ForkStats>,
    io: Io,
    connecting: Option<ConnectFuture>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    ever_connected: bool,
    first_deadline: Instant,
    last_rx: Instant,
    next_ping: Instant,
    /// The ping/keepalive/reconnect timer, allocated once and reset only when its deadline
    /// moves; `timer_at` is what it is set to (`None`: nothing to wait for).
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// `begin_connect` has run (the first poll starts the connection).
    started: bool,
}

/// What [`Core::new`] needs.
pub(crate) struct CoreParts {
    pub config: ForkConfig,
    pub codec: Codec,
    pub stream_id: String,
    pub shared: Arc<Shared>,
    pub stats: Arc<ForkStats>,
    pub backoff: Backoff,
}

/// A fork in a task of its own: the media task reaches it over channels.
pub(crate) struct Task {
    core: Core,
    audio_rx: mpsc::Receiver<OutFrame>,
    ctl_rx: mpsc::Receiver<Control>,
    stop_rx: oneshot::Receiver<String>,
}

impl Task {
    pub(crate) fn new(
        core: Core,
        audio_rx: mpsc::Receiver<OutFrame>,
        ctl_rx: mpsc::Receiver<Control>,
        stop_rx: oneshot::Receiver<String>,
    ) -> Self {
        Task {
            core,
            audio_rx,
            ctl_rx,
            stop_rx,
        }
    }

    /// Runs the fork until it stops or fails.
    pub(crate) async fn run(mut self) {
        let ending = loop {
            tokio::select! {
                stop = &mut self.stop_rx => {
                    break Ending::Stop(stop.unwrap_or_else(|_| "fork dropped".to_string()));
                }
                frame = self.audio_rx.recv() => match frame {
                    Some(f) => {
                        self.core.push_frame(f);
                        while let Ok(f) = self.audio_rx.try_recv() {
                            self.core.push_frame(f);
                        }
                    }
                    // The handle is gone: stopped (the reason is waiting) or dropped.
                    None => {
                        break Ending::Stop(self.stop_rx.try_recv().unwrap_or_else(|_| "fork dropped".to_string()));
                    }
                },
                Some(c) = self.ctl_rx.recv() => self.core.on_control(c),
                ending = poll_fn(|cx| self.core.poll_drive(cx)) => break ending,
            }
        };
        if matches!(ending, Ending::Stop(_)) {
            while let Ok(f) = self.audio_rx.try_recv() {
                self.core.push_frame(f);
            }
        }
        // Frames still in the channel after the end are lost: count them so that
        // pushed = sent + dropped.
        self.audio_rx.close();
        let mut lost = 0u64;
        while self.audio_rx.try_recv().is_ok() {
            lost += 1;
        }
        ForkStats::add(&self.core.stats.frames_dropped_disconnected, lost);
        self.core.finish(ending).await;
    }
}

impl Core {
    pub(crate) fn new(p: CoreParts) -> Self {
        let now = Instant::now();
        let target = Target::new(&p.config, p.codec.subprotocol());
        let backlog_cap = p.config.buffer_frames();
        Core {
            first_deadline: now + p.config.connect_timeout,
            target,
            stream_id: p.stream_id,
            shared: p.shared,
            stats: p.stats.clone(),
            io: Io {
                ws: None,
                out: Outbox {
                    codec: p.codec,
                    pending: VecDeque::new(),
                    control: VecDeque::new(),
                    // Grows to what it holds: a connected fork keeps one or two frames.
                    backlog: VecDeque::with_capacity(backlog_cap.min(4)),
                    backlog_cap,
                    in_flight: Vec::with_capacity(4),
                    scratch: Vec::with_capacity(2),
                },
                needs_flush: false,
                stats: p.stats,
            },
            connecting: None,
            retry_at: None,
            backoff: p.backoff,
            ever_connected: false,
            last_rx: now,
            next_ping: now,
            timer: Box::pin(sleep_until(now)),
            timer_at: None,
            started: false,
            config: p.config,
        }
    }

    /// Makes progress on everything the fork waits for — the connection attempt, the socket
    /// (writes what is waiting, then reads), the timer — and returns `Ready` when the fork
    /// must end ([`Core::finish`] next). Registers `cx` for whatever it is waiting on.
    pub(crate) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        if !self.started {
            self.started = true;
            if let Some(e) = self.begin_connect() {
                return Poll::Ready(e);
            }
        }
        for _ in 0..EVENTS_PER_POLL {
            if let Some(f) = self.connecting.as_mut()
                && let Poll::Ready(res) = f.as_mut().poll(cx)
            {
                self.connecting = None;
                if let Some(e) = self.on_connect_result(res) {
                    return Poll::Ready(e);
                }
                continue;
            }
            if let Poll::Ready(ev) = self.io.poll_io(cx) {
                if let Some(e) = self.on_io(ev) {
                    return Poll::Ready(e);
                }
                continue;
            }
            let deadline = self.next_deadline();
            if deadline != self.timer_at {
                self.timer_at = deadline;
                if let Some(at) = deadline {
                    self.timer.as_mut().reset(at);
                }
            }
            if self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
                self.timer_at = None;
                if let Some(e) = self.on_timer() {
                    return Poll::Ready(e);
                }
                continue;
            }
            return Poll::Pending;
        }
        // Budget spent with more to do: come back after the owner's other work.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
    fn connected(&self) -> bool {
        self.io.ws.is_some()
    }

    /// When the timer must fire next: the next ping while connected, the next attempt
    /// while waiting to reconnect, nothing otherwise.
    fn next_deadline(&self) -> Option<Instant> {
        if self.connected() {
            (!self.config.ping_interval.is_zero()).then_some(self.next_ping)
        } else if self.connecting.is_none() {
            self.retry_at
        } else {
            None
        }
    }

    /// Queues one frame for the socket (written at the next [`Core::poll_drive`]); past the
    /// backlog bound the oldest is dropped and counted.
    pub(crate) fn push_frame(&mut self, f: OutFrame) {
        let out = &mut self.io.out;
        if out.backlog.len() >= out.backlog_cap {
            out.backlog.pop_front();
            let counter = if self.io.ws.is_some() {
                &self.stats.frames_dropped_slow
            } else {
                &self.stats.frames_dropped_disconnected
            };
            ForkStats::add(counter, 1);
        }
        out.backlog.push_back(f);
    }

    fn push_control(&mut self, c: ControlOut) {
        let control = &mut self.io.out.control;
        if control.len() >= MAX_CONTROL {
            control.pop_front();
            debug!(stream = %self.stream_id, "control queue full; dropped the oldest event");
        }
        control.push_back(c);
    }

    pub(crate) fn on_control(&mut self, c: Control) {
        match c {
            Control::Dtmf(d, ms) => self.push_control(ControlOut::Dtmf(d, ms)),
            Control::MarkPlayed(name) => self.push_control(ControlOut::Mark(name, false)),
            Control::Transfer(target, status, reason) => {
                self.push_control(ControlOut::Transfer(target, status, reason))
            }
        }
    }

    fn begin_connect(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let mut budget = self.config.connect_timeout;
        if self.config.required && !self.ever_connected {
            let left = self.first_deadline.saturating_duration_since(now);
            if left < Duration::from_millis(1) {
                return Some(Ending::Failed(format!(
                    "could not connect to {} within {} ms",
                    crate::redact_url(&self.config.url),
                    self.config.connect_timeout.as_millis()
                )));
            }
            budget = budget.min(left);
        }
        self.stats.set_state(if self.ever_connected {
            ForkState::Reconnecting
        } else {
            ForkState::Connecting
        });
        self.retry_at = None;
        self.connecting = Some(Box::pin(connect(self.target.clone(), budget)));
        None
    }

    fn on_connect_result(&mut self, res: Result<Ws, String>) -> Option<Ending> {
        let now = Instant::now();
        match res {
            Ok(ws) => {
                let resumed = self.ever_connected;
                ForkStats::add(&self.stats.connects, 1);
                if resumed {
                    ForkStats::add(&self.stats.reconnects, 1);
                }
                self.ever_connected = true;
                self.backoff.reset();
                self.last_rx = now;
                self.next_ping = now + self.config.ping_interval;
                let out = &mut self.io.out;
                out.scratch.clear();
                out.codec.on_connect(resumed, &mut out.scratch);
                let first: Vec<Message> = out.scratch.drain(..).map(to_message).collect();
                for m in first.into_iter().rev() {
                    out.pending.push_front(m);
                }
                self.io.ws = Some(Box::new(ws));
                self.stats.set_state(ForkState::Connected);
                info!(
                    stream = %self.stream_id,
                    url = %crate::redact_url(&self.config.url),
                    resumed,
                    buffered_frames = self.io.out.backlog.len(),
                    "fork connected"
                );
                None
            }
            Err(e) => {
                ForkStats::add(&self.stats.connect_failures, 1);
                let failures = ForkStats::get(&self.stats.connect_failures);
                if failures == 1 || failures.is_power_of_two() {
                    warn!(stream = %self.stream_id, url = %crate::redact_url(&self.config.url), error = %e, failures, "fork connection attempt failed");
                } else {
                    debug!(stream = %self.stream_id, error = %e, failures, "fork connection attempt failed");
                }
                let first = self.config.required && !self.ever_connected;
                if first && now >= self.first_deadline {
                    return Some(Ending::Failed(format!(
                        "could not connect to {}: {e}",
                        crate::redact_url(&self.config.url)
                    )));
                }
                let mut at = now + self.backoff.next_delay();
                if first {
                    at = at.min(self.first_deadline);
                }
                self.retry_at = Some(at);
                None
            }
        }
    }

    fn disconnect(&mut self, why: &str) {
        self.io.ws = None;
        self.io.needs_flush = false;
        self.io.out.pending.clear();
        let lost = self.io.out.in_flight.len() as u64;
        self.io.out.in_flight.clear();
        ForkStats::add(&self.stats.frames_dropped_disconnected, lost);
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        self.stats.set_state(ForkState::Reconnecting);
        warn!(
            stream = %self.stream_id,
            reason = why,
            lost_in_flight = lost,
            retry_in_ms = delay.as_millis() as u64,
            "fork disconnected; buffering and reconnecting"
        );
    }

    fn on_timer(&mut self) -> Option<Ending> {
        let now = Instant::now();
        if self.connected() {
            let interval = self.config.ping_interval;
            if !interval.is_zero() && now >= self.next_ping {
                if now.saturating_duration_since(self.last_rx) >= interval.saturating_mul(2) {
                    self.disconnect("keepalive timeout");
                } else {
                    self.io.out.pending.push_back(Message::Ping(Bytes::new()));
                    self.next_ping = now + interval;
                }
            }
        } else if self.connecting.is_none() && self.retry_at.is_some_and(|t| now >= t) {
            return self.begin_connect();
        }
        None
    }

    fn on_io(&mut self, ev: IoEvent) -> Option<Ending> {
        match ev {
            IoEvent::Msg(m) => {
                self.last_rx = Instant::now();
                match m {
                    Message::Text(t) => return self.on_service(Incoming::Text(t.as_str())),
                    Message::Binary(b) => return self.on_service(Incoming::Binary(&b)),
                    Message::Ping(_) => self.io.needs_flush = true,
                    Message::Pong(_) | Message::Frame(_) => {}
                    Message::Close(frame) => {
                        // tungstenite queued the reply; let it go out.
                        self.io.needs_flush = true;
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        if code == 1000 {
                            return Some(Ending::ClosedByService(reason));
                        }
                        info!(stream = %self.stream_id, code, reason = %reason, "service closed the connection");
                    }
                }
                None
            }
            IoEvent::Closed => {
                self.disconnect("connection closed");
                None
            }
            IoEvent::Error(e) => self.on_ws_error(e),
        }
    }

    fn on_ws_error(&mut self, e: tungstenite::Error) -> Option<Ending> {
        use tungstenite::error::{CapacityError, ProtocolError as WsProtocol};
        match e {
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                Some(Ending::Fatal(ProtocolError::TooLarge {
                    size,
                    max: max_size,
                }))
            }
            tungstenite::Error::Utf8(_) => Some(Ending::Fatal(ProtocolError::InvalidJson(
                "text frame is not UTF-8".to_string(),
            ))),
            tungstenite::Error::Protocol(WsProtocol::ResetWithoutClosingHandshake) => {
                self.disconnect("connection reset");
                None
            }
            tungstenite::Error::Protocol(p) => {
                Some(Ending::Fatal(ProtocolError::WebSocket(p.to_string())))
            }
            other => {
                self.disconnect(&other.to_string());
                None
            }
        }
    }

    fn on_service(&mut self, msg: Incoming<'_>) -> Option<Ending> {
        match self.io.out.codec.decode(msg) {
            Ok(Some(cmd)) => {
                self.deliver(cmd);
                None
            }
            Ok(None) => None,
            Err(e) if e.is_fatal() => Some(Ending::Fatal(e)),
            Err(e) => {
                ForkStats::add(&self.stats.messages_ignored, 1);
                debug!(stream = %self.stream_id, error = %e, "ignored a message from the service");
                None
            }
        }
    }

    fn deliver(&mut self, cmd: ServiceCommand) {
        let stats = &self.stats;
        let mut cleared = Vec::new();
        {
            let mut q = self.shared.queue();
            match cmd {
                ServiceCommand::Audio { format, data } => {
                    ForkStats::add(&stats.frames_received, 1);
                    ForkStats::add(&stats.bytes_received, data.len() as u64);
                    let pushed = q.push_audio(format, data);
                    ForkStats::add(&stats.playback_dropped, pushed.frames_dropped);
                }
                ServiceCommand::Clear => {
                    ForkStats::add(&stats.clears, 1);
                    cleared = q.clear().0;
                }
                other => {
                    if matches!(other, ServiceCommand::Mark(_)) {
                        ForkStats::add(&stats.marks, 1);
                    }
                    if !q.push_command(other) {
                        ForkStats::add(&stats.messages_ignored, 1);
                        debug!(stream = %self.stream_id, "playback queue full of commands; one dropped");
                    }
                }
            }
        }
        self.shared.notify.notify_one();
        for name in cleared {
            self.push_control(ControlOut::Mark(name, true));
        }
    }

    /// Ends the fork as `ending` says (a graceful `stop` within the stop timeout, a close
    /// code, or a failure for the server), then accounts for every frame not sent.
    pub(crate) async fn finish(mut self, ending: Ending) {
        self.connecting = None;
        let deadline = Instant::now() + self.config.stop_timeout;
        let final_state = match ending {
            Ending::Stop(reason) => {
                self.graceful_stop(&reason, deadline).await;
                info!(stream = %self.stream_id, reason = %reason, sent = ForkStats::get(&self.stats.frames_sent), dropped = self.stats.frames_dropped(), "fork stopped");
                ForkState::Stopped
            }
            Ending::ClosedByService(reason) => {
                let _ = timeout_at(deadline, self.io.flush_all()).await;
                info!(stream = %self.stream_id, reason = %reason, "service ended the fork");
                ForkState::Stopped
            }
            Ending::Fatal(e) => {
                warn!(stream = %self.stream_id, error = %e, "closing the fork: the service broke the protocol (the call continues)");
                self.close(e.close_code(), &e.close_reason(), deadline)
                    .await;
                ForkState::Failed
            }
            Ending::Failed(reason) => {
                warn!(stream = %self.stream_id, reason = %reason, required = self.config.required, "fork failed");
                if self.config.required {
                    self.shared
                        .queue()
                        .push_front(ServiceCommand::Failed(reason));
                }
                ForkState::Failed
            }
        };
        self.account_leftovers();
        self.stats.set_state(final_state);
        self.shared.finish();
    }

    async fn graceful_stop(&mut self, reason: &str, deadline: Instant) {
        if !self.connected() {
            return;
        }
        if let Ok(Err(e)) | Err(e) = timeout_at(deadline, self.io.flush_all())
            .await
            .map_err(|_| "timed out flushing".to_string())
        {
            debug!(stream = %self.stream_id, error = %e, "could not flush before stop");
            // Frames that could not be written in time were lost to a slow service.
            let out = &mut self.io.out;
            let left = (out.backlog.len() + out.in_flight.len()) as u64;
            out.backlog.clear();
            out.in_flight.clear();
            let counter = if self.io.ws.is_some() {
                &self.stats.frames_dropped_slow
            } else {
                &self.stats.frames_dropped_disconnected
            };
            ForkStats::add(counter, left);
            if self.io.ws.is_none() {
                return;
            }
        }
        let counters = self.stats.stop_counters();
        let stop = self.io.out.codec.stop(reason, &counters);
        self.close_with(Some(stop), 1000, reason, deadline).await;
    }

    async fn close(&mut self, code: u16, reason: &str, deadline: Instant) {
        self.close_with(None, code, reason, deadline).await;
    }

    async fn close_with(
        &mut self,
        last: Option<WireMsg>,
        code: u16,
        reason: &str,
        deadline: Instant,
    ) {
        let Some(ws) = self.io.ws.as_mut() else {
            return;
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: crate::protocol::truncate_utf8(reason, 123)
                .to_string()
                .into(),
        };
        let send = async {
            if let Some(m) = last {
                ws.feed(to_message(m)).await?;
            }
            ws.send(Message::Close(Some(frame))).await
        };
        match timeout_at(deadline, send).await {
            Ok(Ok(())) => {
                let _ = timeout_at(deadline, self.io.drain_until_closed()).await;
            }
            Ok(Err(e)) => debug!(stream = %self.stream_id, error = %e, "closing the socket"),
            Err(_) => debug!(stream = %self.stream_id, "timed out closing the socket"),
        }
        self.io.ws = None;
    }

    /// Everything not delivered by now is lost: count it so that pushed = sent + dropped.
    fn account_leftovers(&mut self) {
        let out = &mut self.io.out;
        let lost = (out.backlog.len() + out.in_flight.len()) as u64;
        out.backlog.clear();
        out.in_flight.clear();
        ForkStats::add(&self.stats.frames_dropped_disconnected, lost);
    }
}
