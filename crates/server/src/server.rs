//! Wires the pieces together: `Server::bind` opens the sockets, `run` serves until the
//! shutdown future completes (mini-redis style), then stops every task it started.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use siphon_sip::message::ParseLimits;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tracing::info;

use crate::config::Config;
use crate::counters::Counters;
use crate::endpoint::{CallSummary, Endpoint};
use crate::limits::Blocklist;
use crate::rtp_ports::PortPool;
use crate::transport;

/// How many parsed messages may wait for the SIP core before new ones are dropped.
const CORE_QUEUE: usize = 8192;

pub struct Server {
    config: Arc<Config>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    sip_addr: SocketAddr,
    counters: Arc<Counters>,
    calls: Arc<DashMap<String, CallSummary>>,
    ports: Arc<PortPool>,
    /// The reference analytics service, when the configuration asks for it.
    analytics: Option<siphon_analytics::Handle>,
}

impl Server {
    /// Binds UDP and TCP on `config.sip.listen`. Port 0 picks a free port (tests).
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let (udp, tcp) = transport::bind(config.sip.listen).await?;
        let sip_addr = udp.local_addr()?;
        let ports = PortPool::new(config.rtp.port_min, config.rtp.port_max);
        let analytics = match &config.analytics {
            Some(a) => {
                let opts = siphon_analytics::Options {
                    echo: a.echo,
                    out_dir: a.out_dir.clone(),
                    record_audio: false,
                    ..siphon_analytics::Options::default()
                };
                let handle = siphon_analytics::bind(&a.listen.to_string(), opts).await?;
                info!(addr = %handle.local_addr(), "reference analytics service listening");
                Some(handle)
            }
            None => None,
        };
        Ok(Server {
            analytics,
            config: Arc::new(config),
            udp: Arc::new(udp),
            tcp,
            sip_addr,
            counters: Arc::new(Counters::default()),
            calls: Arc::new(DashMap::new()),
            ports,
        })
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
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

    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, _) = broadcast::channel::<()>(1);
        let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let limits = ParseLimits {
            max_message_size: self.config.sip.max_message_size,
        };
        let out = transport::outbound(self.udp.clone(), self.counters.clone());
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
            tcp_idle_timeout: std::time::Duration::from_secs(l.tcp_idle_timeout_s.max(1)),
        };
        let endpoint = Endpoint::new(
            self.config.clone(),
            self.sip_addr,
            out.clone(),
            self.ports.clone(),
            self.counters.clone(),
            cmd_tx,
            self.calls.clone(),
            blocklist,
        );
        let tasks = [
            tokio::spawn(transport::run_udp(
                self.udp.clone(),
                ctx.clone(),
                stop_tx.subscribe(),
            )),
            tokio::spawn(transport::run_tcp(self.tcp, ctx, stop_tx.subscribe())),
            tokio::spawn(endpoint.run(core_rx, cmd_rx, stop_tx.subscribe())),
        ];
        info!(sip = %self.sip_addr, "Siphon listening (UDP and TCP)");
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(());
        for t in tasks {
            let _ = t.await;
        }
        if let Some(analytics) = self.analytics {
            analytics.shutdown().await;
        }
        info!("stopped");
    }
}
