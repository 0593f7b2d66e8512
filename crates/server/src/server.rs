//! Wires the pieces together: `Server::bind` opens the sockets, `run` serves until the
//! shutdown future completes (mini-redis style), drains, then stops every task it started.
//!
//! Draining: `/readyz` fails and new INVITEs get 503 with Retry-After at once; calls in
//! progress go on until they end or `[sip] drain_timeout_s` passes, when they get BYE. The
//! media tasks then get a moment to finish (RTCP BYE, forks' `stop`) before the transports
//! and the HTTP listener close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use siphon_sip::message::ParseLimits;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::{CallSummary, Command};
use crate::counters::Counters;
use crate::endpoint::Endpoint;
use crate::http::{self, HttpContext};
use crate::limits::Blocklist;
use crate::rtp_ports::PortPool;
use crate::state_db::{AorBindings, StateDb};
use crate::transport;

/// After the last call ended, how long media tasks (and forks' `stop`) may take.
const MEDIA_GRACE: Duration = Duration::from_secs(5);
/// How long open HTTP connections may take to finish at the very end.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Ended streams whose records the in-process analytics service keeps.
const ANALYTICS_KEEP_ENDED: usize = 64;

/// How many parsed messages may wait for the SIP core before new ones are dropped.
const CORE_QUEUE: usize = 8192;

pub struct Server {
    config: Arc<Config>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    sip_addr: SocketAddr,
    /// SIP over TLS, when `[sip] tls_listen` is set: its listener, address and acceptor.
    tls: Option<(TcpListener, SocketAddr, tokio_rustls::TlsAcceptor)>,
    http: http::HttpListener,
    http_addr: SocketAddr,
    counters: Arc<Counters>,
    calls: Arc<DashMap<String, CallSummary>>,
    ports: Arc<PortPool>,
    /// The reference analytics service, when the configuration asks for it.
    analytics: Option<siphon_analytics::Handle>,
    /// Signs digest nonces: from `[auth] nonce_secret_file` (so nonces survive a restart),
    /// else random.
    nonce_secret: [u8; crate::secret_file::KEY_LEN],
    /// The TLS client setup of each trunk reached over TLS, by trunk name.
    trunk_tls: std::collections::HashMap<String, Arc<rustls::ClientConfig>>,
    /// `[registrar] store`, with the bindings it held at start.
    state: Option<(Arc<StateDb>, AorBindings)>,
}

impl Server {
    /// Binds UDP and TCP on `config.sip.listen` and the HTTP listener on
    /// `config.http.listen`. Port 0 picks a free port (tests). Errors name the address.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let context = |what: &'static str, addr: SocketAddr| {
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
        };
        let (udp, tcp) = transport::bind(config.sip.listen)
            .await
            .map_err(context("SIP", config.sip.listen))?;
        let sip_addr = udp.local_addr()?;
        let tls = match (
            &config.sip.tls_listen,
            &config.sip.tls_cert,
            &config.sip.tls_key,
        ) {
            (Some(addr), Some(cert), Some(key)) => {
                let acceptor = crate::tls::acceptor(cert, key)?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(context("SIP over TLS", *addr))?;
                let local = listener.local_addr()?;
                Some((listener, local, acceptor))
            }
            _ => None,
        };
        let http = TcpListener::bind(config.http.listen)
            .await
            .map_err(context("HTTP", config.http.listen))?;
        let http_addr = http.local_addr()?;
        let http = match (&config.http.tls_cert, &config.http.tls_key) {
            (Some(cert), Some(key)) => http::HttpListener::Tls(http::tls::TlsListener::new(
                http,
                crate::tls::acceptor(cert, key)?,
            )?),
            _ => http::HttpListener::Plain(http),
        };
        let nonce_secret = match &config.auth.nonce_secret_file {
            Some(path) => crate::secret_file::load_or_create(path)?,
            None => {
                let mut key = [0u8; crate::secret_file::KEY_LEN];
                rand::fill(&mut key);
                key
            }
        };
        let counters = Counters::default();
        let state = match &config.registrar.store {
            Some(path) => {
                let (db, loaded) =
                    StateDb::open(path).map_err(|e| std::io::Error::other(e.to_string()))?;
                let bindings: usize = loaded.bindings.iter().map(|(_, b)| b.len()).sum();
                info!(
                    store = %path.display(),
                    bindings,
                    expired_while_down = loaded.expired,
                    calls_cut_off = loaded.calls_cut_off,
                    "registrar store loaded"
                );
                if loaded.calls_cut_off > 0 {
                    warn!(
                        calls = loaded.calls_cut_off,
                        "the previous run stopped without ending these calls (a crash?)"
                    );
                }
                counters
                    .calls_cut_off_at_start
                    .store(loaded.calls_cut_off, Ordering::Relaxed);
                Some((Arc::new(db), loaded.bindings))
            }
            None => None,
        };
        let ports = PortPool::new(config.rtp.port_min, config.rtp.port_max);
        let analytics = match &config.analytics {
            Some(a) => {
                let opts = siphon_analytics::Options {
                    echo: a.echo,
                    out_dir: a.out_dir.clone(),
                    record_audio: false,
                    // Running for months: a few recent streams for the logs' sake, not
                    // every call ever forked (issue 16: ~15 KB per forked call).
                    keep_ended_streams: Some(ANALYTICS_KEEP_ENDED),
                    keep_ended_for: Some(Duration::from_secs(600)),
                    ..siphon_analytics::Options::default()
                };
                let handle = siphon_analytics::bind(&a.listen.to_string(), opts).await?;
                info!(addr = %handle.local_addr(), "reference analytics service listening");
                Some(handle)
            }
            None => None,
        };
        // A trunk's CA file that cannot be read stops Siphon now, not at its first call.
        let mut trunk_tls = std::collections::HashMap::new();
        for t in &config.trunks {
            if t.transport == crate::config::TrunkTransport::Tls {
                let client = crate::dialer::tls_client(t.tls_ca_file.as_deref()).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("trunk {}: {e}", t.name),
                    )
                })?;
                trunk_tls.insert(t.name.clone(), client);
            }
        }
        Ok(Server {
            analytics,
            nonce_secret,
            trunk_tls,
            state,
            counters: {
                let c = counters;
                c.sip_trace.store(
                    config.sip.trace_messages,
                    std::sync::atomic::Ordering::Relaxed,
                );
                Arc::new(c)
            },
            config: Arc::new(config),
            udp: Arc::new(udp),
            tcp,
            sip_addr,
            tls,
            http,
            http_addr,
            calls: Arc::new(DashMap::new()),
            ports,
        })
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Where SIP over TLS listens, if it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, addr, _)| *addr)
    }

    /// Where metrics, health and the admin API are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Live calls by Call-ID.
    pub fn calls(&self) -> Arc<DashMap<String, CallSummary>> {
        self.calls.clone()
    }

    pub fn ports(&self) -> Arc<PortPool> {
        self.ports.clone()
    }

    /// Serves until `shutdown` completes, then drains (see the module documentation).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// Like `run`; `force` completing during the drain (a second signal) cuts it short:
    /// the calls left get BYE at once.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) {
        let (stop_tx, _) = broadcast::channel::<()>(1);
        let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let limits = ParseLimits {
            max_message_size: self.config.sip.max_message_size,
        };
        let (out, dial_requests) = transport::outbound(self.udp.clone(), self.counters.clone());
        let blocklist = Blocklist::default();
        let l = &self.config.limits;
        let ctx = transport::TransportContext {
            core: core_tx,
            out: out.clone(),
            counters: self.counters.clone(),
            limits,
            blocklist: blocklist.clone(),
            per_source_rate: l.messages_per_source_per_second,
            max_tcp_connections: l.max_tcp_connections,
            max_tcp_connections_per_source: l.max_tcp_connections_per_source,
            tcp_idle_timeout: Duration::from_secs(l.tcp_idle_timeout_s.max(1)),
            // 0 would drop every connection at its first write or handshake.
            tcp_write_timeout: Duration::from_secs(l.tcp_write_timeout_s.max(1)),
            tls_handshake_timeout: Duration::from_secs(l.tls_handshake_timeout_s.max(1)),
        };
        let tls_addr = self.tls_addr();
        let state = self.state;
        let state_db = state.as_ref().map(|(db, _)| db.clone());
        let mut endpoint = Endpoint::new(
            self.config.clone(),
            self.sip_addr,
            out.clone(),
            self.ports.clone(),
            self.counters.clone(),
            cmd_tx.clone(),
            self.calls.clone(),
            blocklist,
            self.nonce_secret,
            state,
        );
        if let Some(addr) = tls_addr {
            endpoint.set_tls_addr(addr);
        }
        endpoint.set_trunk_tls(self.trunk_tls);
        let events =
            crate::events::Events::start(self.config.events.as_ref(), self.counters.clone());
        crate::events::observe_forks(&events, &self.counters.forks);
        endpoint.set_events(events);
        let http_context = Arc::new(HttpContext::new(
            self.config.clone(),
            self.counters.clone(),
            self.calls.clone(),
            self.ports.clone(),
            endpoint.location_store(),
            cmd_tx.clone(),
        ));
        let mut http_stop = stop_tx.subscribe();
        let http_task = tokio::spawn(http::serve(self.http, http_context, async move {
            let _ = http_stop.recv().await;
        }));
        let tasks = [
            tokio::spawn(transport::run_udp(
                self.udp.clone(),
                ctx.clone(),
                stop_tx.subscribe(),
            )),
            tokio::spawn(transport::run_tcp(
                self.tcp,
                ctx.clone(),
                stop_tx.subscribe(),
            )),
            tokio::spawn(crate::dialer::run(
                dial_requests,
                ctx.clone(),
                stop_tx.subscribe(),
            )),
            match self.tls {
                Some((listener, _, acceptor)) => tokio::spawn(transport::run_tls(
                    listener,
                    acceptor,
                    ctx,
                    stop_tx.subscribe(),
                )),
                None => tokio::spawn(async {}),
            },
            tokio::spawn(endpoint.run(core_rx, cmd_rx, stop_tx.subscribe())),
        ];
        match tls_addr {
            Some(tls) => {
                info!(sip = %self.sip_addr, %tls, http = %self.http_addr, "Siphon listening (SIP on UDP and TCP, and TLS)")
            }
            None => {
                info!(sip = %self.sip_addr, http = %self.http_addr, "Siphon listening (SIP on UDP and TCP)")
            }
        }
        shutdown.await;
        tokio::pin!(force);
        let timeout = Duration::from_secs(self.config.sip.drain_timeout_s);
        tokio::select! {
            () = drain(&self.counters, &cmd_tx, timeout) => {}
            () = &mut force => {
                warn!("second signal: ending the calls left now");
                let _ = tokio::time::timeout(MEDIA_GRACE, drain(&self.counters, &cmd_tx, Duration::ZERO)).await;
            }
        }
        info!("shutting down");
        let _ = stop_tx.send(());
        for t in tasks {
            let _ = t.await;
        }
        let abort = http_task.abort_handle();
        if tokio::time::timeout(HTTP_GRACE, http_task).await.is_err() {
            abort.abort();
        }
        if let Some(analytics) = self.analytics {
            analytics.shutdown().await;
        }
        if let Some(db) = state_db {
            // Every call has ended: the journal ends empty and the bindings are written.
            let _ = tokio::task::spawn_blocking(move || db.close()).await;
        }
        info!("stopped");
    }
}

/// Refuses new calls, waits for the calls in progress to end (the SIP core BYEs them at
/// `timeout`), then gives their media tasks a moment to finish.
async fn drain(counters: &Counters, commands: &mpsc::Sender<Command>, timeout: Duration) {
    counters.draining.store(true, Ordering::Relaxed);
    info!(?timeout, "draining: refusing new calls");
    let (done, drained) = oneshot::channel();
    if commands
        .send(Command::Drain { timeout, done })
        .await
        .is_ok()
    {
        // The SIP core answers once no call is left; it hangs up at `timeout` itself.
        let _ = tokio::time::timeout(timeout + MEDIA_GRACE, drained).await;
    }
    let deadline = Instant::now() + MEDIA_GRACE;
    while counters.media_legs_active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
