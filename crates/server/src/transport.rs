//! SIP over UDP and TCP on one address, and over TLS on its own. The transport tasks parse what arrives (a datagram
//! or one Content-Length-framed stream message), answer unusable requests statelessly
//! with the error response the parser built, and hand good messages to the SIP core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use rsip::prelude::*;
use siphon_sip::message::{self, Framed, ParseLimits};
use siphon_sip::{Peer, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::counters::{Counters, inc};
use crate::limits::{Blocklist, SourceLimiter};

/// A message that passed parsing, on its way to the SIP core.
#[derive(Debug)]
pub struct Inbound {
    pub message: rsip::SipMessage,
    pub source: SocketAddr,
    pub transport: Transport,
}

/// Sends bytes to a peer over the transport it uses. Cloned into every task that sends.
#[derive(Clone)]
pub struct Outbound {
    udp: Arc<UdpSocket>,
    /// Writers of open TCP connections, by remote address: a response goes back over the
    /// connection its request came in on.
    tcp: Arc<DashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
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
                let sent = self
                    .tcp
                    .get(&peer.addr)
                    .map(|tx| tx.try_send(bytes).is_ok())
                    .unwrap_or(false);
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

pub fn outbound(udp: Arc<UdpSocket>, counters: Arc<Counters>) -> Outbound {
    Outbound {
        udp,
        tcp: Arc::new(DashMap::new()),
        counters,
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
    pub max_tcp_connections: usize,
    pub tcp_idle_timeout: Duration,
}

/// Hands a parsed message to the core, or answers/drops one that failed to parse.
fn deliver(
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
                let peer = match transport {
                    Transport::Udp => {
                        let via = response
                            .headers
                            .iter()
                            .find_map(|h| match h {
                                rsip::Header::Via(v) => Some(v.value().to_string()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        Peer::new(message::response_address(&via, source), transport)
                    }
                    _ => Peer::new(source, transport),
                };
                out.send(peer, response.to_string().into_bytes());
            }
        }
    }
}

pub async fn run_udp(
    socket: Arc<UdpSocket>,
    ctx: TransportContext,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut buf = vec![0u8; 65536];
    // Owned by this task alone: per-source flood control without a lock.
    let mut flood = SourceLimiter::new(ctx.per_source_rate, std::time::Instant::now());
    loop {
        let (len, source) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable from an earlier send shows up here on some
                    // platforms; it is not fatal for a UDP server.
                    debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let now = std::time::Instant::now();
        if ctx.blocklist.is_blocked(source.ip(), now) {
            inc(&ctx.counters.blocked_drops);
            continue;
        }
        if !flood.allow(source.ip(), now) {
            inc(&ctx.counters.flood_drops);
            continue;
        }
        let data = &buf[..len];
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue; // keepalive (RFC 5626 §3.5.1 over UDP uses STUN; CRLF is common too)
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
}

pub async fn run_tcp(
    listener: TcpListener,
    ctx: TransportContext,
    shutdown: broadcast::Receiver<()>,
) {
    run_streams(listener, None, ctx, shutdown).await;
}

/// SIP over TLS: as TCP, each connection first completing a TLS handshake (bounded by the
/// idle timeout, so a client that never finishes it holds no slot for long).
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
    let open = Arc::new(AtomicUsize::new(0));
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
        if ctx
            .blocklist
            .is_blocked(peer.ip(), std::time::Instant::now())
        {
            inc(&ctx.counters.blocked_drops);
            continue; // dropping the stream closes it
        }
        if open.load(Ordering::Relaxed) >= ctx.max_tcp_connections {
            inc(&ctx.counters.tcp_rejected);
            debug!(%peer, "TCP connection limit reached; closing");
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let conn = Connection {
            ctx: ctx.clone(),
            peer,
            transport: if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
        };
        let shutdown = shutdown.resubscribe();
        let open = open.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => conn.run(stream, shutdown).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(conn.ctx.tcp_idle_timeout, handshake).await {
                        Ok(Ok(stream)) => conn.run(stream, shutdown).await,
                        Ok(Err(e)) => {
                            inc(&conn.ctx.counters.tls_handshake_failures);
                            debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            inc(&conn.ctx.counters.tls_handshake_failures);
                            debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

struct Connection {
    ctx: TransportContext,
    peer: SocketAddr,
    transport: Transport,
}

impl Connection {
    async fn run<S>(self, stream: S, mut shutdown: broadcast::Receiver<()>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        self.ctx.out.tcp.insert(self.peer, tx.clone());
        let writer_task = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 8192];
        'read: loop {
            let n = tokio::select! {
                r = tokio::time::timeout(self.ctx.tcp_idle_timeout, reader.read(&mut chunk)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        debug!(peer = %self.peer, "closing idle TCP connection");
                        break;
                    }
                },
                _ = shutdown.recv() => break,
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                match message::frame(&buf, self.ctx.limits) {
                    Ok(Framed::Incomplete) => break,
                    Ok(Framed::Keepalive(k)) => {
                        // A double-CRLF ping gets a single CRLF pong (RFC 5626 §3.5.1).
                        if buf[..k].windows(4).any(|w| w == b"\r\n\r\n") {
                            let _ = tx.try_send(b"\r\n".to_vec());
                        }
                        buf.drain(..k);
                    }
                    Ok(Framed::Message(len)) => {
                        trace_message(
                            &self.ctx.counters,
                            "in",
                            self.peer,
                            self.transport,
                            &buf[..len],
                        );
                        let parsed = message::parse(&buf[..len], self.peer, self.ctx.limits);
                        let c = &self.ctx;
                        deliver(
                            parsed,
                            self.peer,
                            self.transport,
                            &c.core,
                            &c.out,
                            &c.counters,
                        );
                        buf.drain(..len);
                    }
                    Err(e) => {
                        // The stream has lost its framing; nothing after this point can
                        // be trusted to start a message, so the connection ends.
                        self.ctx.counters.parse_error(e.kind());
                        debug!(peer = %self.peer, error = %e, "closing TCP connection");
                        break 'read;
                    }
                }
            }
        }
        self.ctx.out.tcp.remove(&self.peer);
        drop(tx);
        let _ = writer_task.await;
    }
}
