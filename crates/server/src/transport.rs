//! SIP over UDP and TCP on one address, and over TLS on its own. The transport tasks parse what arrives (a datagram
//! or one Content-Length-framed stream message), answer unusable requests statelessly
//! with the error response the parser built, and hand good messages to the SIP core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rustls::pki_types::ServerName;
use siphon_sip::message::{self, Framed, ParseLimits};
use siphon_sip::{Peer, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::counters::{Counters, inc};
use crate::limits::{Blocklist, ConnectionSlots, SourceLimiter};
use crate::udp_batch::{ANY_DATAGRAM, RecvBatch, try_recv_batch};

/// A message that passed parsing, on its way to the SIP core.
#[derive(Debug)]
pub struct Inbound {
    pub message: rsip::SipMessage,
    pub source: SocketAddr,
    pub transport: Transport,
}

/// How to open a connection to one peer.
#[derive(Clone)]
pub struct Dial {
    /// For TLS: the name the certificate must carry (and SNI), and the client setup.
    pub tls: Option<(ServerName<'static>, Arc<rustls::ClientConfig>)>,
}

/// A connection for `peer` to open; `tx`/`rx` is its writer queue, already in the
/// transport's table with the first message in it.
pub struct DialRequest {
    pub peer: Peer,
    pub dial: Dial,
    pub tx: mpsc::Sender<Vec<u8>>,
    pub rx: mpsc::Receiver<Vec<u8>>,
}

/// Sends bytes to a peer over the transport it uses. Cloned into every task that sends.
#[derive(Clone)]
pub struct Outbound {
    udp: Arc<UdpSocket>,
    /// Writers of open TCP connections, by remote address: a response goes back over the
    /// connection its request came in on.
    tcp: Arc<DashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    /// Peers Siphon may open a connection to itself (trunks over TCP/TLS), and how.
    dialable: Arc<DashMap<SocketAddr, Dial>>,
    /// Connections to open, for the dialer task.
    dial_requests: mpsc::Sender<DialRequest>,
    counters: Arc<Counters>,
}

/// Logs a whole SIP message when tracing is on (`[sip] trace_messages`, or switched on at
/// runtime with `PUT /api/sip-trace`). One relaxed load when it is off.
pub fn trace_message(
    counters: &Counters,
    direction: &str,
    peer: SocketAddr,
    transport: Transport,
    bytes: &[u8],
) {
    if counters
        .sip_trace
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        tracing::info!(
            target: "siphon::sip_trace",
            direction,
            %peer,
            transport = transport.via_token(),
            len = bytes.len(),
            "\n{}",
            crate::sip_trace::redact(bytes)
        );
    }
}

impl Outbound {
    pub fn send(&self, peer: Peer, bytes: Vec<u8>) {
        trace_message(&self.counters, "out", peer.addr, peer.transport, &bytes);
        match peer.transport {
            Transport::Udp => {
                // try_send_to never waits: the SIP core must not stall on one full socket
                // buffer. A datagram lost here is recovered by SIP retransmission.
                match self.udp.try_send_to(&bytes, peer.addr) {
                    Ok(_) => self.counters.message_out(&bytes),
                    Err(e) => {
                        debug!(%peer.addr, error = %e, "UDP send failed");
                        inc(&self.counters.send_failures);
                    }
                }
            }
            Transport::Tcp | Transport::Tls => {
                self.counters.message_out(&bytes);
                let sent = match self.tcp.get(&peer.addr) {
                    Some(tx) => tx.try_send(bytes).is_ok(),
                    None => self.dial(peer, bytes),
                };
                if !sent {
                    debug!(%peer.addr, "no open connection for TCP send");
                    inc(&self.counters.send_failures);
                }
            }
        }
    }
}

/// Binds UDP and TCP on `addr` (port 0 picks one port free for both).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        return Ok((udp, tcp));
    }
    // An ephemeral UDP port may be taken on TCP; try a few.
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port_addr = udp.local_addr()?;
        match TcpListener::bind(port_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}

/// The sending side of the transports, and the requests for connections Siphon opens
/// itself (for the dialer task, `crate::dialer::run`).
pub fn outbound(
    udp: Arc<UdpSocket>,
    counters: Arc<Counters>,
) -> (Outbound, mpsc::Receiver<DialRequest>) {
    let (dial_requests, requests) = mpsc::channel(256);
    let out = Outbound {
        udp,
        tcp: Arc::new(DashMap::new()),
        dialable: Arc::new(DashMap::new()),
        dial_requests,
        counters,
    };
    (out, requests)
}

impl Outbound {
    /// `peer` may be connected to by Siphon (a trunk over TCP or TLS), as `dial` says.
    pub fn allow_dial(&self, peer: SocketAddr, dial: Dial) {
        self.dialable.insert(peer, dial);
    }

    /// No connection to `peer`: when Siphon may open one, queue `bytes` on a new
    /// connection's writer (what is sent while it opens waits there too) and ask the
    /// dialer for it. Never waits.
    fn dial(&self, peer: Peer, bytes: Vec<u8>) -> bool {
        // An ACK never opens a connection: the response it acknowledges came over one,
        // and an ACK for the 503 of a connection that failed has nowhere to go.
        if bytes.starts_with(b"ACK ") {
            return false;
        }
        let Some(dial) = self.dialable.get(&peer.addr).map(|d| d.clone()) else {
            return false;
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        match self.tcp.entry(peer.addr) {
            // Another sender opened it in the meantime.
            dashmap::Entry::Occupied(e) => return e.get().try_send(bytes).is_ok(),
            dashmap::Entry::Vacant(e) => {
                e.insert(tx.clone());
            }
        }
        let _ = tx.try_send(bytes);
        let request = DialRequest { peer, dial, tx, rx };
        if self.dial_requests.try_send(request).is_err() {
            self.tcp.remove(&peer.addr);
            return false;
        }
        true
    }

    /// Forgets `peer`'s writer if it is still `tx` (a newer connection keeps its own).
    pub(crate) fn forget_connection(&self, peer: SocketAddr, tx: &mpsc::Sender<Vec<u8>>) {
        self.tcp
            .remove_if(&peer, |_, current| current.same_channel(tx));
    }
}

/// What every transport task needs, cloned into each.
#[derive(Clone)]
pub struct TransportContext {
    pub core: mpsc::Sender<Inbound>,
    pub out: Outbound,
    pub counters: Arc<Counters>,
    pub limits: ParseLimits,
    /// Sources the SIP core blocked (failed authentication): dropped before parsing.
    pub blocklist: Blocklist,
    /// Messages per second per source before drops (0 = unlimited).
    pub per_source_rate: f64,
    /// Open connections per stream listener (TCP, TLS), and from one source address.
    pub max_tcp_connections: usize,
    pub max_tcp_connections_per_source: usize,
    pub tcp_idle_timeout: Duration,
    /// How long one message may take to go out before the peer counts as stalled.
    pub tcp_write_timeout: Duration,
    pub tls_handshake_timeout: Duration,
}

/// Hands a parsed message to the core, or answers/drops one that failed to parse.
pub(crate) fn deliver(
    result: Result<rsip::SipMessage, message::Rejection>,
    source: SocketAddr,
    transport: Transport,
    core: &mpsc::Sender<Inbound>,
    out: &Outbound,
    counters: &Counters,
) {
    match result {
        Ok(message) => {
            counters.message_in(&message);
            let inbound = Inbound {
                message,
                source,
                transport,
            };
            if core.try_send(inbound).is_err() {
                // The core is behind; dropping is the only answer that does not spread
                // the backlog to the socket. The peer retransmits.
                inc(&counters.overload_drops);
            }
        }
        Err(rejection) => {
            counters.parse_error(rejection.error.kind());
            debug!(%source, error = %rejection.error, "rejected message");
            if let Some(mut response) = rejection.response {
                message::finish(&mut response.headers, b"");
                // Back to the packet's source, as the endpoint answers (see its
                // `handle_inbound`): the Via's sent-by may be a NATed phone's private address.
                let peer = Peer::new(source, transport);
                out.send(peer, message::to_bytes(&response));
            }
        }
    }
}

pub async fn run_udp(
    socket: Arc<UdpSocket>,
    ctx: TransportContext,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut batch = RecvBatch::new(ANY_DATAGRAM);
    // Owned by this task alone: per-source flood control without a lock.
    let mut flood = SourceLimiter::new(ctx.per_source_rate, std::time::Instant::now());
    loop {
        tokio::select! {
            r = socket.readable() => if let Err(e) = r {
                // Only when the runtime's I/O driver is gone: nothing more will arrive.
                warn!(error = %e, "SIP UDP socket no longer readable; receive loop ends");
                return;
            },
            _ = shutdown.recv() => return,
        }
        match try_recv_batch(&socket, &mut batch) {
            Ok(_) => {}
            Err(e) => {
                // ICMP port unreachable from an earlier send shows up here on some
                // platforms; it is not fatal for a UDP server.
                debug!(error = %e, "UDP receive error");
                continue;
            }
        }
        for (data, source) in batch.packets() {
            receive_datagram(&ctx, &mut flood, data, source);
        }
    }
}

/// One datagram from the SIP UDP socket: dropped if its source is blocked or flooding, or
/// if it is a keepalive; otherwise parsed and delivered.
fn receive_datagram(
    ctx: &TransportContext,
    flood: &mut SourceLimiter,
    data: &[u8],
    source: SocketAddr,
) {
    let source = canonical(source);
    let now = std::time::Instant::now();
    if ctx.blocklist.is_blocked(source.ip(), now) {
        inc(&ctx.counters.blocked_drops);
        return;
    }
    if !flood.allow(source.ip(), now) {
        inc(&ctx.counters.flood_drops);
        return;
    }
    if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
        return; // keepalive (RFC 5626 §3.5.1 over UDP uses STUN; CRLF is common too)
    }
    trace_message(&ctx.counters, "in", source, Transport::Udp, data);
    let parsed = message::parse(data, source, ctx.limits);
    deliver(
        parsed,
        source,
        Transport::Udp,
        &ctx.core,
        &ctx.out,
        &ctx.counters,
    );
}

pub async fn run_tcp(
    listener: TcpListener,
    ctx: TransportContext,
    shutdown: broadcast::Receiver<()>,
) {
    run_streams(listener, None, ctx, shutdown).await;
}

/// SIP over TLS: as TCP, each connection first completing a TLS handshake within its own
/// timeout, so a client that never finishes it holds no slot for long.
pub async fn run_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: TransportContext,
    shutdown: broadcast::Receiver<()>,
) {
    run_streams(listener, Some(acceptor), ctx, shutdown).await;
}

async fn run_streams(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: TransportContext,
    mut shutdown: broadcast::Receiver<()>,
) {
    let slots = ConnectionSlots::new(ctx.max_tcp_connections, ctx.max_tcp_connections_per_source);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let peer = canonical(peer);
        if ctx
            .blocklist
            .is_blocked(peer.ip(), std::time::Instant::now())
        {
            inc(&ctx.counters.blocked_drops);
            continue; // dropping the stream closes it
        }
        let slot = match slots.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                inc(&ctx.counters.tcp_rejected);
                debug!(%peer, ?refused, "TCP connection limit reached; closing");
                continue;
            }
        };
        let conn = Connection {
            ctx: ctx.clone(),
            peer,
            transport: if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
            outbound: false,
        };
        let shutdown = shutdown.resubscribe();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Held for as long as the connection lives; given back however the task ends.
            let _slot = slot;
            match tls {
                None => conn.run(stream, shutdown).await,
                Some(acceptor) => conn.run_tls(acceptor, stream, shutdown).await,
            }
        });
    }
}

/// How often a connection Siphon opened sends a CRLF keepalive (RFC 5626 §4.4.1): well
/// inside the shortest NAT TCP timeouts seen in practice.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Why a connection's read loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The peer closed, went silent, lost the framing or was blocked; or shutdown.
    Reader,
    /// The writer gave up (the peer stopped reading, or the connection broke).
    Writer,
}

pub(crate) struct Connection {
    pub(crate) ctx: TransportContext,
    pub(crate) peer: SocketAddr,
    pub(crate) transport: Transport,
    /// Siphon opened it (to a trunk): kept open while idle, for the trunk's own requests
    /// and because opening it again costs a handshake; CRLF keepalives hold NATs open.
    pub(crate) outbound: bool,
}

impl Connection {
    async fn run_tls(
        self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        shutdown: broadcast::Receiver<()>,
    ) {
        let handshake = acceptor.accept(stream);
        match tokio::time::timeout(self.ctx.tls_handshake_timeout, handshake).await {
            Ok(Ok(stream)) => self.run(stream, shutdown).await,
            Ok(Err(e)) => {
                inc(&self.ctx.counters.tls_handshake_failures);
                debug!(peer = %self.peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                inc(&self.ctx.counters.tls_handshake_failures);
                debug!(peer = %self.peer, "TLS handshake timed out");
            }
        }
    }

    async fn run<S>(self, stream: S, shutdown: broadcast::Receiver<()>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        self.ctx.out.tcp.insert(self.peer, tx.clone());
        self.serve(stream, tx, rx, shutdown).await;
    }

    /// Reads and writes a connection whose writer queue (`tx`, `rx`) is in the table.
    pub(crate) async fn serve<S>(
        self,
        stream: S,
        tx: mpsc::Sender<Vec<u8>>,
        rx: mpsc::Receiver<Vec<u8>>,
        mut shutdown: broadcast::Receiver<()>,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let mut writer_task = tokio::spawn(write_loop(
            writer,
            rx,
            self.ctx.tcp_write_timeout,
            self.ctx.counters.clone(),
            self.peer,
        ));
        let end = self
            .read_loop(reader, &tx, &mut writer_task, &mut shutdown)
            .await;
        self.ctx.out.forget_connection(self.peer, &tx);
        drop(tx);
        if end == End::Reader {
            // What was queued may still go out, but for no longer than one write timeout:
            // a peer that stopped reading must not hold this task (or shutdown) up.
            let abort = writer_task.abort_handle();
            if tokio::time::timeout(self.ctx.tcp_write_timeout, writer_task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Reads and frames messages until the connection should end, and says why.
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
        tx: &mpsc::Sender<Vec<u8>>,
        writer: &mut JoinHandle<()>,
        shutdown: &mut broadcast::Receiver<()>,
    ) -> End {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 8192];
        // Connections Siphon opened stay open (a keepalive goes out every interval); the
        // ones peers opened close when idle.
        let (idle, mut keepalive) = if self.outbound {
            (
                Duration::MAX,
                Some(tokio::time::interval(KEEPALIVE_INTERVAL)),
            )
        } else {
            (self.ctx.tcp_idle_timeout, None)
        };
        loop {
            let n = tokio::select! {
                _ = async { keepalive.as_mut()?.tick().await; Some(()) }, if keepalive.is_some() => {
                    // RFC 5626 §4.4.1 ping; a full queue means traffic is flowing anyway.
                    let _ = tx.try_send(b"\r\n\r\n".to_vec());
                    continue;
                }
                r = tokio::time::timeout(idle, reader.read(&mut chunk)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => return End::Reader,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        debug!(peer = %self.peer, "closing idle TCP connection");
                        return End::Reader;
                    }
                },
                // The writer ends only when it gave up on the peer: so does the connection.
                _ = &mut *writer => return End::Writer,
                _ = shutdown.recv() => return End::Reader,
            };
            buf.extend_from_slice(&chunk[..n]);
            if !self.take_messages(&mut buf, tx) {
                return End::Reader;
            }
        }
    }

    /// Handles every whole message and keepalive at the front of `buf`, leaving a partial
    /// one; false when the connection must end.
    fn take_messages(&self, buf: &mut Vec<u8>, tx: &mpsc::Sender<Vec<u8>>) -> bool {
        loop {
            match message::frame(buf, self.ctx.limits) {
                Ok(Framed::Incomplete) => return true,
                Ok(Framed::Keepalive(k)) => {
                    // A double-CRLF ping gets a single CRLF pong (RFC 5626 §3.5.1).
                    if buf[..k].windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = tx.try_send(b"\r\n".to_vec());
                    }
                    buf.drain(..k);
                }
                Ok(Framed::Message(len)) => {
                    if self.source_blocked() {
                        return false;
                    }
                    self.deliver(&buf[..len]);
                    buf.drain(..len);
                }
                Err(e) => {
                    // The stream has lost its framing; nothing after this point can
                    // be trusted to start a message, so the connection ends.
                    self.ctx.counters.parse_error(e.kind());
                    debug!(peer = %self.peer, error = %e, "closing TCP connection");
                    return false;
                }
            }
        }
    }

    /// A source blocked while its connection was open (it was brute-forcing over it) gets
    /// nothing more: the message is dropped and counted as on UDP, and the connection
    /// closed so it stops costing a slot.
    fn source_blocked(&self) -> bool {
        let blocked = self
            .ctx
            .blocklist
            .is_blocked(self.peer.ip(), std::time::Instant::now());
        if blocked {
            inc(&self.ctx.counters.blocked_drops);
            debug!(peer = %self.peer, "source blocked; closing its connection");
        }
        blocked
    }

    fn deliver(&self, bytes: &[u8]) {
        let c = &self.ctx;
        trace_message(&c.counters, "in", self.peer, self.transport, bytes);
        let parsed = message::parse(bytes, self.peer, c.limits);
        deliver(
            parsed,
            self.peer,
            self.transport,
            &c.core,
            &c.out,
            &c.counters,
        );
    }
}

/// Sends what the SIP core queues for the connection. A message that cannot be written
/// (and flushed: TLS buffers inside its session) within `timeout` means the peer stopped
/// reading; the writer then gives up, which ends the connection and frees its slot,
/// rather than stall with a full queue.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: mpsc::Receiver<Vec<u8>>,
    timeout: Duration,
    counters: Arc<Counters>,
    peer: SocketAddr,
) {
    while let Some(bytes) = queue.recv().await {
        let write = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TCP write failed; closing");
                return;
            }
            Err(_) => {
                inc(&counters.tcp_write_timeouts);
                debug!(%peer, "TCP peer stopped reading (write timed out); closing");
                return;
            }
        }
    }
}

/// A dual-stack listener (`[::]`) sees IPv4 peers as `::ffff:a.b.c.d`. Everything past
/// the socket (trunk IPs, blocklists, Via `received`, where replies go) knows them by
/// their IPv4 address; the kernel sends to a plain IPv4 address from the same socket.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
