#![forbid(unsafe_code)]
//! `siphon-analytics`: the reference analytics service for Siphon's media fork.
//!
//! It accepts WebSocket connections speaking any of the fork's three protocols — chosen by
//! URL path (`/native`, `/twilio`, `/audio-fork`), by subprotocol (`audio.jambonz.org` →
//! audio_fork), by [`Options::default_mode`], or recognised from the first message — and:
//!
//! - records everything it receives per stream (the start message, every audio frame in
//!   order, DTMF, mark echoes, stop, the close frame) for tests to inspect field by field;
//! - writes each stream's audio to a WAV file (per track for Twilio) in an output directory;
//! - logs levels (dBFS, once a second) and DTMF;
//! - optionally echoes the audio back, plays a tone on each DTMF digit, and sends marks.
//!
//! It parses Siphon's messages with plain `serde_json::Value`s, independently of the fork
//! crate's types, so that tests catch a wrong field name.
//!
//! As a library: [`serve`] (or [`bind`]) starts it on a listener and returns a [`Handle`].

mod wav;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use siphon_media::g711::G711;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

/// Subprotocols that mean audio_fork.
pub const AUDIO_FORK_SUBPROTOCOLS: [&str; 2] = ["audio.jambonz.org", "audio.drachtio.org"];

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Siphon's native protocol.
    Native,
    /// Twilio Media Streams.
    Twilio,
    /// mod_audio_fork / jambonz `listen`.
    AudioFork,
}

impl Mode {
    /// The URL path that selects the mode.
    pub fn path(self) -> &'static str {
        match self {
            Mode::Native => "/native",
            Mode::Twilio => "/twilio",
            Mode::AudioFork => "/audio-fork",
        }
    }

    fn from_path(path: &str) -> Option<Mode> {
        let first = path.trim_start_matches('/').split(['/', '?']).next()?;
        match first {
            "native" => Some(Mode::Native),
            "twilio" => Some(Mode::Twilio),
            "audio-fork" | "audio_fork" | "jambonz" | "listen" => Some(Mode::AudioFork),
            _ => None,
        }
    }

    /// Parses `native`, `twilio`, `audio_fork`/`audio-fork`.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::from_path(s)
    }
}

/// What the service does besides recording.
#[derive(Debug, Clone)]
pub struct Options {
    /// Write one WAV file per stream (per track for Twilio) here.
    pub out_dir: Option<PathBuf>,
    /// Send the caller's audio back (as the mode's playback messages).
    pub echo: bool,
    /// Play a 300 ms tone (then a mark named `tone-<digit>`) for each DTMF digit.
    pub tone_on_dtmf: bool,
    /// With `echo`, send a mark named `echo-<n>` after every `n` echoed frames.
    pub mark_every: Option<u32>,
    /// Mode for connections whose path and subprotocol say nothing (otherwise the first
    /// message decides).
    pub default_mode: Option<Mode>,
    /// Largest message accepted from Siphon.
    pub max_message_bytes: usize,
    /// Log a level line per stream per second.
    pub log_levels: bool,
    /// Keep every received audio frame in the stream records (tests read them). A
    /// long-running demo service turns this off so memory does not grow with every call.
    pub record_audio: bool,
    /// How many ended streams' records to keep (the oldest go first). `None` keeps every
    /// record (tests inspect them); a service running for months inside Siphon keeps a few
    /// recent ones, or it would grow with every call it ever served.
    pub keep_ended_streams: Option<usize>,
    /// Ended streams' records older than this go too (with `keep_ended_streams`).
    pub keep_ended_for: Option<std::time::Duration>,
    /// A voicebot handing off to a human: after this many frames of the caller's audio, a
    /// native stream sends `{"event":"transfer","to": <target>}` once (Siphon's native
    /// transfer command, docs/fork-protocols.md).
    pub transfer_after: Option<(u64, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            out_dir: None,
            echo: false,
            tone_on_dtmf: false,
            mark_every: None,
            default_mode: None,
            max_message_bytes: 16 << 20,
            log_levels: true,
            record_audio: true,
            keep_ended_streams: None,
            keep_ended_for: None,
            transfer_after: None,
        }
    }
}

/// One audio frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Twilio's `media.track`; `None` for binary frames.
    pub track: Option<String>,
    /// Twilio's `sequenceNumber`.
    pub sequence_number: Option<String>,
    /// Twilio's `media.chunk`.
    pub chunk: Option<String>,
    /// Twilio's `media.timestamp`.
    pub timestamp: Option<String>,
    /// The audio bytes (base64-decoded for Twilio).
    pub data: Bytes,
    /// When the service received it (latency measurements in tests).
    pub received_at: std::time::Instant,
    /// Which connection of the stream (0 first, 1 after the first reconnect, ...).
    pub connection: u32,
}

/// Everything received on one stream (all its connections).
#[derive(Debug, Clone, Default)]
pub struct StreamRecord {
    /// Native `streamId`, Twilio `streamSid`, audio_fork `callSid`.
    pub stream_id: String,
    /// The protocol.
    pub mode: Option<Mode>,
    /// Request path of the first connection.
    pub path: String,
    /// Subprotocol agreed on the first connection.
    pub subprotocol: Option<String>,
    /// Upgrade request headers of the first connection (names lower-case).
    pub headers: Vec<(String, String)>,
    /// Connections seen.
    pub connections: u32,
    /// Twilio `connected` messages, one per connection.
    pub connected: Vec<Value>,
    /// `start` (native, Twilio) or the preamble (audio_fork), one per connection.
    pub starts: Vec<Value>,
    /// Every audio frame, in order.
    pub audio: Vec<AudioFrame>,
    /// DTMF events.
    pub dtmf: Vec<Value>,
    /// Mark echoes.
    pub marks: Vec<Value>,
    /// `stop`.
    pub stop: Option<Value>,
    /// Every text message, parsed (or as a JSON string if it was not JSON), in order.
    pub texts: Vec<Value>,
    /// Close frames received, per ended connection (`None`: no close frame).
    pub closes: Vec<Option<(u16, String)>>,
    /// Things that did not follow the protocol.
    pub errors: Vec<String>,
}

impl StreamRecord {
    /// The first connection's start message.
    pub fn start(&self) -> Option<&Value> {
        self.starts.first()
    }

    /// All audio bytes of a track (`None` = binary frames) concatenated.
    pub fn audio_bytes(&self, track: Option<&str>) -> Vec<u8> {
        self.audio
            .iter()
            .filter(|f| f.track.as_deref() == track)
            .flat_map(|f| f.data.iter().copied())
            .collect()
    }

    /// Number of audio frames on a track (`None` = binary frames).
    pub fn frame_count(&self, track: Option<&str>) -> usize {
        self.audio
            .iter()
            .filter(|f| f.track.as_deref() == track)
            .count()
    }

    /// True once all the stream's connections have ended.
    pub fn closed(&self) -> bool {
        self.closes.len() as u32 >= self.connections && self.connections > 0
    }
}

/// A message to send to Siphon on a stream (tests use it to play the service's part).
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
    /// A close frame.
    Close(u16, String),
}

impl Outgoing {
    /// A text frame holding `value`.
    pub fn json(value: Value) -> Self {
        Outgoing::Text(value.to_string())
    }
}

#[derive(Debug, Default)]
struct State {
    streams: BTreeMap<String, StreamRecord>,
    order: Vec<String>,
    senders: HashMap<String, mpsc::UnboundedSender<Outgoing>>,
    /// Streams whose connections have all ended, oldest first, with when: what
    /// `keep_ended_streams`/`keep_ended_for` prune.
    ended: std::collections::VecDeque<(std::time::Instant, String)>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    opts: Options,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut StreamRecord)) {
        {
            let mut st = self.state();
            if !st.streams.contains_key(id) {
                st.order.push(id.to_string());
            }
            let rec = st.streams.entry(id.to_string()).or_default();
            rec.stream_id = id.to_string();
            f(rec);
        }
        self.bump();
    }

    /// A connection of stream `id` ended: if that was its last, its record becomes
    /// prunable, and records beyond the retention go (oldest first).
    fn connection_ended(&self, id: &str) {
        let (Some(max), now) = (self.opts.keep_ended_streams, std::time::Instant::now()) else {
            return;
        };
        let mut guard = self.state();
        let st = &mut *guard;
        if !st.streams.get(id).is_some_and(StreamRecord::closed) {
            return;
        }
        st.ended.retain(|(_, e)| e != id);
        st.ended.push_back((now, id.to_string()));
        let age = self.opts.keep_ended_for;
        let mut pruned = Vec::new();
        while let Some((at, front)) = st.ended.front() {
            let too_old = age.is_some_and(|a| now.duration_since(*at) > a);
            if st.ended.len() <= max && !too_old {
                break;
            }
            // A stream that reconnected since is live again: keep its record.
            if st.streams.get(front).is_some_and(StreamRecord::closed) {
                st.streams.remove(front);
                pruned.push(front.clone());
            }
            st.ended.pop_front();
        }
        if !pruned.is_empty() {
            st.order.retain(|o| !pruned.contains(o));
        }
    }
}

/// A running service. Dropping the handle shuts the service down (connections get a 1001
/// close) without waiting for it.
#[derive(Debug)]
pub struct Handle {
    addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

/// Binds `addr` and serves.
pub async fn bind(addr: &str, opts: Options) -> std::io::Result<Handle> {
    let listener = TcpListener::bind(addr).await?;
    serve(listener, opts)
}

/// Serves on `listener` (spawns the accept loop; needs a tokio runtime).
pub fn serve(listener: TcpListener, opts: Options) -> std::io::Result<Handle> {
    let addr = listener.local_addr()?;
    let (version, _) = watch::channel(0u64);
    let inner = Arc::new(Inner {
        state: Mutex::new(State::default()),
        version,
        opts,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, inner.clone(), shutdown_rx));
    Ok(Handle {
        addr,
        inner,
        shutdown,
        accept,
    })
}

impl Handle {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/<mode path>`.
    pub fn url(&self, mode: Mode) -> String {
        format!("ws://{}{}", self.addr, mode.path())
    }

    /// Every stream so far, in order of arrival.
    pub fn streams(&self) -> Vec<StreamRecord> {
        let st = self.inner.state();
        st.order
            .iter()
            .filter_map(|id| st.streams.get(id).cloned())
            .collect()
    }

    /// One stream.
    pub fn stream(&self, id: &str) -> Option<StreamRecord> {
        self.inner.state().streams.get(id).cloned()
    }

    /// Waits until stream `id` exists and satisfies `pred`; `None` after `timeout`.
    pub async fn wait_stream(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&StreamRecord) -> bool,
    ) -> Option<StreamRecord> {
        let mut rx = self.inner.version.subscribe();
        let wait = async {
            loop {
                if let Some(rec) = self.stream(id)
                    && pred(&rec)
                {
                    return rec;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Sends to the latest connection of stream `id`. False if there is none.
    pub fn send(&self, id: &str, msg: Outgoing) -> bool {
        let st = self.inner.state();
        st.senders.get(id).is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Stops abruptly, as a crashing service would: no close frames, sockets and the
    /// listener dropped. Returns once they are.
    pub async fn kill(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }

    /// Stops gracefully: every connection gets a 1001 close, WAV files are finalised.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.accept)
            .await
            .is_err()
        {
            warn!("analytics: connections did not finish in time");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((sock, peer)) => {
                    next_id += 1;
                    let _ = sock.set_nodelay(true);
                    conns.spawn(connection(sock, peer, next_id, inner.clone(), shutdown.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "analytics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

#[derive(Debug, Default)]
struct Upgrade {
    path: String,
    headers: Vec<(String, String)>,
    subprotocol: Option<String>,
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
) {
    let mut upgrade = Upgrade::default();
    // The signature is tungstenite's callback type; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        upgrade.path = req.uri().path().to_string();
        upgrade.headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| AUDIO_FORK_SUBPROTOCOLS.contains(p))
            .map(str::to_string);
        if let Some(p) = &offered
            && let Ok(v) = HeaderValue::from_str(p)
        {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        upgrade.subprotocol = offered;
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(inner.opts.max_message_bytes))
        .max_frame_size(Some(inner.opts.max_message_bytes));
    let ws =
        match tokio_tungstenite::accept_hdr_async_with_config(sock, callback, Some(config)).await {
            Ok(ws) => ws,
            Err(e) => {
                debug!(%peer, error = %e, "analytics: handshake failed");
                return;
            }
        };
    let mode = Mode::from_path(&upgrade.path)
        .or(upgrade.subprotocol.as_ref().map(|_| Mode::AudioFork))
        .or(inner.opts.default_mode);
    debug!(%peer, conn_id, path = %upgrade.path, ?mode, "analytics: connection");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        inner,
        upgrade,
        mode,
        stream_id: None,
        format: None,
        connection: 0,
        early: Vec::new(),
        tx,
        echoed: 0,
        inbound_frames: 0,
        transfer_sent: false,
        levels: HashMap::new(),
        wavs: HashMap::new(),
    };
    conn.run(ws, rx, shutdown).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Pcmu,
    Pcma,
    L16,
}

#[derive(Debug, Clone, Copy)]
struct Format {
    enc: Enc,
    rate: u32,
    channels: u16,
}

impl Format {
    fn decode(&self, data: &[u8]) -> Vec<i16> {
        match self.enc {
            Enc::Pcmu => data.iter().map(|&b| G711::Pcmu.decode_sample(b)).collect(),
            Enc::Pcma => data.iter().map(|&b| G711::Pcma.decode_sample(b)).collect(),
            Enc::L16 => data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect(),
        }
    }

    fn encode(&self, samples: &[i16]) -> Vec<u8> {
        match self.enc {
            Enc::Pcmu => samples
                .iter()
                .map(|&s| G711::Pcmu.encode_sample(s))
                .collect(),
            Enc::Pcma => samples
                .iter()
                .map(|&s| G711::Pcma.encode_sample(s))
                .collect(),
            Enc::L16 => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        }
    }

    /// The first channel of interleaved audio.
    fn first_channel(&self, data: &Bytes) -> Bytes {
        if self.channels <= 1 {
            return data.clone();
        }
        let width = if self.enc == Enc::L16 { 2 } else { 1 };
        let step = width * usize::from(self.channels);
        let mut out = Vec::with_capacity(data.len() / usize::from(self.channels));
        for chunk in data.chunks_exact(step) {
            out.extend_from_slice(&chunk[..width]);
        }
        Bytes::from(out)
    }
}

#[derive(Debug, Default)]
struct Level {
    sum_sq: f64,
    samples: u64,
}

/// One connection's state.
struct Conn {
    inner: Arc<Inner>,
    upgrade: Upgrade,
    mode: Option<Mode>,
    stream_id: Option<String>,
    format: Option<Format>,
    connection: u32,
    /// Messages received before the stream id was known (Twilio's `connected`).
    early: Vec<Value>,
    tx: mpsc::UnboundedSender<Outgoing>,
    echoed: u64,
    /// Caller frames received, and whether the `transfer_after` command went out.
    inbound_frames: u64,
    transfer_sent: bool,
    levels: HashMap<String, Level>,
    wavs: HashMap<String, wav::WavSink>,
}

type Ws = WebSocketStream<TcpStream>;

impl Conn {
    async fn run(
        &mut self,
        mut ws: Ws,
        mut rx: mpsc::UnboundedReceiver<Outgoing>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut close: Option<(u16, String)> = None;
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Close(frame))) => {
                        close = Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new())));
                        // Let tungstenite answer the close, then end.
                        while let Some(Ok(_)) = ws.next().await {}
                        break;
                    }
                    Some(Ok(m)) => {
                        let replies = self.on_message(m).await;
                        for r in replies {
                            if send(&mut ws, r).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        self.error(format!("read error: {e}"));
                        break;
                    }
                    None => break,
                },
                Some(out) = rx.recv() => {
                    if send(&mut ws, out).await.is_err() {
                        break;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Away, reason: "service shutting down".into() }))).await;
                    while let Some(Ok(_)) = ws.next().await {}
                    break;
                }
            }
        }
        for (name, w) in &mut self.wavs {
            if let Err(e) = w.finalize() {
                warn!(file = %name, error = %e, "analytics: could not finalise WAV");
            }
        }
        let id = self
            .stream_id
            .clone()
            .unwrap_or_else(|| format!("unidentified-{}", self.upgrade.path));
        let tx = self.tx.clone();
        {
            let mut st = self.inner.state();
            if st.senders.get(&id).is_some_and(|s| s.same_channel(&tx)) {
                st.senders.remove(&id);
            }
        }
        if let Some((code, reason)) = &close {
            info!(stream = %id, code, reason = %reason, "analytics: stream connection closed");
        } else {
            info!(stream = %id, "analytics: stream connection ended without a close frame");
        }
        self.inner.update(&id, |r| r.closes.push(close));
        self.inner.connection_ended(&id);
    }

    fn error(&self, e: String) {
        warn!(stream = ?self.stream_id, error = %e, "analytics: protocol problem");
        let id = self
            .stream_id
            .clone()
            .unwrap_or_else(|| format!("unidentified-{}", self.upgrade.path));
        self.inner.update(&id, |r| r.errors.push(e));
    }

    async fn on_message(&mut self, m: Message) -> Vec<Outgoing> {
        match m {
            Message::Text(t) => {
                let value: Value = match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.error(format!("text frame is not JSON: {e}"));
                        if let Some(id) = &self.stream_id {
                            let raw = Value::String(t.to_string());
                            self.inner.update(id, |r| r.texts.push(raw));
                        }
                        return Vec::new();
                    }
                };
                if self.mode.is_none() {
                    self.mode = detect(&value);
                }
                match self.mode {
                    Some(Mode::Native) => self.native_text(value).await,
                    Some(Mode::Twilio) => self.twilio_text(value).await,
                    Some(Mode::AudioFork) => self.audio_fork_text(value).await,
                    None => {
                        self.error(format!("cannot tell the protocol from {value}"));
                        Vec::new()
                    }
                }
            }
            Message::Binary(b) => match self.mode {
                Some(Mode::Twilio) => {
                    self.error("binary frame on a Twilio stream".to_string());
                    Vec::new()
                }
                _ if self.stream_id.is_none() => {
                    self.error("audio before the start message".to_string());
                    Vec::new()
                }
                _ => self.audio(None, None, None, None, b).await,
            },
            _ => Vec::new(),
        }
    }

    /// The stream is identified: register it and this connection.
    fn identify(&mut self, id: &str, start: Value) {
        self.stream_id = Some(id.to_string());
        let early = std::mem::take(&mut self.early);
        let tx = self.tx.clone();
        let mut connection = 0;
        let (up, mode) = (&self.upgrade, self.mode);
        self.inner.update(id, |r| {
            if r.connections == 0 {
                r.path = up.path.clone();
                r.headers = up.headers.clone();
                r.subprotocol = up.subprotocol.clone();
                r.mode = mode;
            }
            connection = r.connections;
            r.connections += 1;
            for e in &early {
                if e.get("event").and_then(Value::as_str) == Some("connected") {
                    r.connected.push(e.clone());
                }
                r.texts.push(e.clone());
            }
            r.texts.push(start.clone());
            r.starts.push(start);
        });
        self.connection = connection;
        self.inner.state().senders.insert(id.to_string(), tx);
        info!(stream = %id, ?mode, connection, "analytics: stream started");
    }

    fn record_text(&self, v: Value, f: impl FnOnce(&mut StreamRecord, Value)) {
        if let Some(id) = &self.stream_id {
            self.inner.update(id, |r| {
                r.texts.push(v.clone());
                f(r, v);
            });
        } else {
            self.error(format!("message before the start: {v}"));
        }
    }

    async fn native_text(&mut self, v: Value) -> Vec<Outgoing> {
        match v.get("event").and_then(Value::as_str) {
            Some("start") => {
                let Some(id) = v
                    .get("streamId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    self.error("native start without streamId".to_string());
                    return Vec::new();
                };
                let mf = &v["mediaFormat"];
                self.format = Some(Format {
                    enc: match mf["encoding"].as_str() {
                        Some("pcmu") => Enc::Pcmu,
                        Some("pcma") => Enc::Pcma,
                        _ => Enc::L16,
                    },
                    rate: mf["sampleRate"].as_u64().unwrap_or(8000) as u32,
                    channels: mf["channels"].as_u64().unwrap_or(1) as u16,
                });
                self.identify(&id, v);
                Vec::new()
            }
            Some("dtmf") => {
                let digit = v["digit"].as_str().unwrap_or("?").to_string();
                self.record_text(v, |r, v| r.dtmf.push(v));
                self.on_dtmf(&digit)
            }
            Some("mark") => {
                self.record_text(v, |r, v| r.marks.push(v));
                Vec::new()
            }
            Some("stop") => {
                info!(stream = ?self.stream_id, stop = %v, "analytics: stop");
                self.record_text(v, |r, v| r.stop = Some(v));
                Vec::new()
            }
            Some("transfer") => {
                // Siphon's progress of a transfer of this call (trying, answered, failed).
                info!(stream = ?self.stream_id, transfer = %v, "analytics: transfer");
                self.record_text(v, |_, _| {});
                Vec::new()
            }
            _ => {
                self.error(format!("unknown native message {v}"));
                self.record_text(v, |_, _| {});
                Vec::new()
            }
        }
    }

    async fn twilio_text(&mut self, v: Value) -> Vec<Outgoing> {
        match v.get("event").and_then(Value::as_str) {
            Some("connected") => {
                self.early.push(v);
                Vec::new()
            }
            Some("start") => {
                let Some(id) = v
                    .get("streamSid")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    self.error("twilio start without streamSid".to_string());
                    return Vec::new();
                };
                self.format = Some(Format {
                    enc: Enc::Pcmu,
                    rate: 8000,
                    channels: 1,
                });
                self.identify(&id, v);
                Vec::new()
            }
            Some("media") => {
                let media = &v["media"];
                let Some(payload) = media["payload"].as_str() else {
                    self.error("twilio media without payload".to_string());
                    return Vec::new();
                };
                let Ok(data) = BASE64.decode(payload) else {
                    self.error("twilio media payload is not base64".to_string());
                    return Vec::new();
                };
                let s = |x: &Value| x.as_str().map(str::to_string);
                let (track, seq, chunk, ts) = (
                    s(&media["track"]),
                    s(&v["sequenceNumber"]),
                    s(&media["chunk"]),
                    s(&media["timestamp"]),
                );
                if self.stream_id.is_none() {
                    self.error("media before start".to_string());
                    return Vec::new();
                }
                self.record_text(v, |_, _| {});
                self.audio(track, seq, chunk, ts, Bytes::from(data)).await
            }
            Some("dtmf") => {
                let digit = v["dtmf"]["digit"].as_str().unwrap_or("?").to_string();
                self.record_text(v, |r, v| r.dtmf.push(v));
                self.on_dtmf(&digit)
            }
            Some("mark") => {
                self.record_text(v, |r, v| r.marks.push(v));
                Vec::new()
            }
            Some("stop") => {
                info!(stream = ?self.stream_id, "analytics: stop");
                self.record_text(v, |r, v| r.stop = Some(v));
                Vec::new()
            }
            _ => {
                self.error(format!("unknown twilio message {v}"));
                Vec::new()
            }
        }
    }

    async fn audio_fork_text(&mut self, v: Value) -> Vec<Outgoing> {
        if self.stream_id.is_none() {
            // The first text frame is the preamble.
            let Some(id) = v.get("callSid").and_then(Value::as_str).map(str::to_string) else {
                self.error(format!("audio_fork preamble without callSid: {v}"));
                return Vec::new();
            };
            self.format = Some(Format {
                enc: Enc::L16,
                rate: v["sampleRate"].as_u64().unwrap_or(8000) as u32,
                channels: if v["mixType"].as_str() == Some("stereo") {
                    2
                } else {
                    1
                },
            });
            self.identify(&id, v);
            return Vec::new();
        }
        if v.get("type").and_then(Value::as_str) == Some("mark") {
            self.record_text(v, |r, v| r.marks.push(v));
            return Vec::new();
        }
        match v.get("event").and_then(Value::as_str) {
            Some("dtmf") => {
                let digit = v["dtmf"].as_str().unwrap_or("?").to_string();
                self.record_text(v, |r, v| r.dtmf.push(v));
                self.on_dtmf(&digit)
            }
            Some("stop") => {
                info!(stream = ?self.stream_id, stop = %v, "analytics: stop");
                self.record_text(v, |r, v| r.stop = Some(v));
                Vec::new()
            }
            _ => {
                self.error(format!("unknown audio_fork message {v}"));
                self.record_text(v, |_, _| {});
                Vec::new()
            }
        }
    }

    async fn audio(
        &mut self,
        track: Option<String>,
        sequence_number: Option<String>,
        chunk: Option<String>,
        timestamp: Option<String>,
        data: Bytes,
    ) -> Vec<Outgoing> {
        let (Some(id), Some(format)) = (self.stream_id.clone(), self.format) else {
            return Vec::new();
        };
        let frame = AudioFrame {
            track: track.clone(),
            sequence_number,
            chunk,
            timestamp,
            data: data.clone(),
            received_at: std::time::Instant::now(),
            connection: self.connection,
        };
        if self.inner.opts.record_audio {
            self.inner.update(&id, |r| r.audio.push(frame));
        }
        let samples = format.decode(&data);
        let key = track.clone().unwrap_or_else(|| "audio".to_string());
        self.level(&id, &key, &samples, format);
        self.write_wav(&id, track.as_deref(), &samples, format);

        let mut out = Vec::new();
        let inbound = track.as_deref().is_none_or(|t| t == "inbound");
        if inbound {
            self.inbound_frames += 1;
        }
        if let Some((after, to)) = &self.inner.opts.transfer_after
            && self.mode == Some(Mode::Native)
            && !self.transfer_sent
            && self.inbound_frames >= *after
        {
            info!(stream = %id, %to, "analytics: asking Siphon to transfer the call");
            self.transfer_sent = true;
            out.push(Outgoing::json(json!({ "event": "transfer", "to": to })));
        }
        if self.inner.opts.echo && inbound {
            let mono = format.first_channel(&data);
            out.push(self.play(&mono, format));
            self.echoed += 1;
            if let Some(n) = self.inner.opts.mark_every
                && n > 0
                && self.echoed.is_multiple_of(u64::from(n))
            {
                out.push(self.mark(&format!("echo-{}", self.echoed)));
            }
        }
        out
    }

    fn level(&mut self, id: &str, key: &str, samples: &[i16], format: Format) {
        if !self.inner.opts.log_levels {
            return;
        }
        let l = self.levels.entry(key.to_string()).or_default();
        for s in samples {
            l.sum_sq += f64::from(*s) * f64::from(*s);
        }
        l.samples += samples.len() as u64;
        let per_second = u64::from(format.rate) * u64::from(format.channels.max(1));
        if l.samples >= per_second {
            let rms = (l.sum_sq / l.samples as f64).sqrt();
            let dbfs = if rms > 0.0 {
                20.0 * (rms / 32768.0).log10()
            } else {
                -120.0
            };
            info!(stream = %id, track = %key, dbfs = format!("{dbfs:.1}"), "analytics: level");
            *l = Level::default();
        }
    }

    fn write_wav(&mut self, id: &str, track: Option<&str>, samples: &[i16], format: Format) {
        let Some(dir) = self.inner.opts.out_dir.clone() else {
            return;
        };
        let name = match track {
            Some(t) => format!("{}-{t}.wav", sanitize(id)),
            None => format!("{}.wav", sanitize(id)),
        };
        if !self.wavs.contains_key(&name) {
            match wav::WavSink::open(&dir.join(&name), format.channels, format.rate) {
                Ok(w) => {
                    self.wavs.insert(name.clone(), w);
                }
                Err(e) => {
                    warn!(file = %name, error = %e, "analytics: cannot open WAV");
                    return;
                }
            }
        }
        if let Some(w) = self.wavs.get_mut(&name)
            && let Err(e) = w.write(samples)
        {
            warn!(file = %name, error = %e, "analytics: WAV write failed");
        }
    }

    fn on_dtmf(&mut self, digit: &str) -> Vec<Outgoing> {
        info!(stream = ?self.stream_id, digit, "analytics: DTMF");
        if !self.inner.opts.tone_on_dtmf {
            return Vec::new();
        }
        let Some(format) = self.format else {
            return Vec::new();
        };
        let mono = Format {
            channels: 1,
            ..format
        };
        let n = (mono.rate as usize) * 300 / 1000;
        let samples: Vec<i16> = (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(mono.rate);
                (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect();
        let mut out = Vec::new();
        match self.mode {
            Some(Mode::AudioFork) => out.push(Outgoing::json(json!({
                "type": "playAudio",
                "data": {
                    "audioContentType": "raw",
                    "sampleRate": mono.rate,
                    "audioContent": BASE64.encode(mono.encode(&samples)),
                }
            }))),
            Some(Mode::Twilio) => out.push(self.play(&Bytes::from(mono.encode(&samples)), mono)),
            _ => {
                let per_frame = mono.rate as usize / 50;
                for chunk in samples.chunks(per_frame) {
                    out.push(self.play(&Bytes::from(mono.encode(chunk)), mono));
                }
            }
        }
        out.push(self.mark(&format!("tone-{digit}")));
        out
    }

    /// Audio to play, in the mode's playback message.
    fn play(&self, mono: &Bytes, _format: Format) -> Outgoing {
        match self.mode {
            Some(Mode::Twilio) => Outgoing::json(json!({
                "event": "media",
                "streamSid": self.stream_id,
                "media": { "payload": BASE64.encode(mono) },
            })),
            _ => Outgoing::Binary(mono.clone()),
        }
    }

    fn mark(&self, name: &str) -> Outgoing {
        match self.mode {
            Some(Mode::Twilio) => Outgoing::json(json!({
                "event": "mark",
                "streamSid": self.stream_id,
                "mark": { "name": name },
            })),
            Some(Mode::AudioFork) => Outgoing::json(json!({
                "type": "mark",
                "data": { "name": name },
            })),
            _ => Outgoing::json(json!({ "event": "mark", "name": name })),
        }
    }
}

/// Guesses the protocol from the first text message.
fn detect(v: &Value) -> Option<Mode> {
    match v.get("event").and_then(Value::as_str) {
        Some("connected") => Some(Mode::Twilio),
        Some("start") if v.get("streamSid").is_some() => Some(Mode::Twilio),
        Some("start") if v.get("streamId").is_some() => Some(Mode::Native),
        _ if v.get("sampleRate").is_some() && v.get("mixType").is_some() => Some(Mode::AudioFork),
        _ => None,
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn send(ws: &mut Ws, out: Outgoing) -> Result<(), tungstenite::Error> {
    let msg = match out {
        Outgoing::Text(t) => Message::Text(t.into()),
        Outgoing::Binary(b) => Message::Binary(b),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    };
    ws.send(msg).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn modes_from_paths_and_messages() {
        assert_eq!(Mode::from_path("/native"), Some(Mode::Native));
        assert_eq!(Mode::from_path("/twilio/x?y"), Some(Mode::Twilio));
        assert_eq!(Mode::from_path("/audio-fork"), Some(Mode::AudioFork));
        assert_eq!(Mode::from_path("/"), None);
        assert_eq!(detect(&json!({"event":"connected"})), Some(Mode::Twilio));
        assert_eq!(
            detect(&json!({"event":"start","streamId":"x"})),
            Some(Mode::Native)
        );
        assert_eq!(
            detect(&json!({"callSid":"x","sampleRate":8000,"mixType":"mono"})),
            Some(Mode::AudioFork)
        );
        assert_eq!(detect(&json!({"hello":1})), None);
    }

    /// Issue 16: inside Siphon the service ran for months keeping every stream's record.
    /// With a retention only the newest ended streams stay, and a live one is never pruned.
    #[tokio::test]
    async fn ended_streams_beyond_the_retention_are_forgotten() {
        let opts = Options {
            log_levels: false,
            record_audio: false,
            keep_ended_streams: Some(2),
            keep_ended_for: Some(Duration::from_secs(600)),
            ..Options::default()
        };
        let svc = bind("127.0.0.1:0", opts).await.unwrap();
        let url = svc.url(Mode::Native);
        let start = |id: &str| {
            json!({"event": "start", "streamId": id,
                   "mediaFormat": {"encoding": "L16", "sampleRate": 8000, "channels": 1}})
            .to_string()
        };
        // One stream stays connected throughout.
        let (mut live, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        live.send(Message::Text(start("live").into()))
            .await
            .unwrap();
        for i in 0..5 {
            let id = format!("s{i}");
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            ws.send(Message::Text(start(&id).into())).await.unwrap();
            ws.close(None).await.unwrap();
            assert!(
                svc.wait_stream(&id, Duration::from_secs(30), StreamRecord::closed)
                    .await
                    .is_some(),
                "{id} never ended"
            );
        }
        let ids: Vec<String> = svc.streams().into_iter().map(|s| s.stream_id).collect();
        assert_eq!(ids, ["live", "s3", "s4"]);
        assert!(svc.stream("s0").is_none());
        live.close(None).await.unwrap();
        svc.shutdown().await;
    }

    /// The voicebot handing off: after `transfer_after` frames of the caller, one native
    /// `transfer` command, and no second one however long the caller goes on.
    #[tokio::test]
    async fn a_native_stream_asks_for_the_transfer_once_after_n_frames() {
        let opts = Options {
            log_levels: false,
            transfer_after: Some((3, "user:1003".into())),
            ..Options::default()
        };
        let svc = bind("127.0.0.1:0", opts).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(svc.url(Mode::Native).as_str())
            .await
            .unwrap();
        let start = json!({"event": "start", "streamId": "bot",
               "mediaFormat": {"encoding": "L16", "sampleRate": 8000, "channels": 1}});
        ws.send(Message::Text(start.to_string().into()))
            .await
            .unwrap();
        for _ in 0..10 {
            ws.send(Message::Binary(Bytes::from(vec![0u8; 320])))
                .await
                .unwrap();
        }
        let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(text) = first else {
            panic!("not a text frame: {first:?}");
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"event": "transfer", "to": "user:1003"}));
        // Nothing more comes (no second command): the close handshake is next.
        ws.close(None).await.unwrap();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            assert!(matches!(m, Message::Close(_)), "unexpected {m:?}");
        }
        let rec = svc.stream("bot").unwrap();
        assert_eq!(rec.audio.len(), 10);
        svc.shutdown().await;
    }

    #[test]
    fn first_channel_of_stereo() {
        let f = Format {
            enc: Enc::L16,
            rate: 8000,
            channels: 2,
        };
        let d = Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&f.first_channel(&d)[..], &[1, 2, 5, 6]);
        let f = Format {
            enc: Enc::Pcmu,
            rate: 8000,
            channels: 2,
        };
        assert_eq!(&f.first_channel(&d)[..], &[1, 3, 5, 7]);
    }
}
