//! Trunks given by host name (RFC 3263 §4): which addresses a call to the trunk tries, in
//! which order. The transport is the trunk's configured one, so the lookups are SRV for it
//! (`_sip._udp`, `_sip._tcp`, `_sips._tcp`), each target's A/AAAA, and without SRV records
//! the name's own A/AAAA on the transport's default port; a name with a port gets A/AAAA
//! only (§4.2). NAPTR is not consulted: it only picks the transport, which is configured.
//!
//! The SIP core never waits for DNS: one task per named trunk resolves it, again when the
//! records expire (their TTL, hickory-resolver's cache), and publishes the candidates
//! through a `watch` channel; a failed lookup keeps the last good answer. A call takes
//! the current candidates and orders them by priority, and by weight within a priority
//! (RFC 2782), so its attempts fail over along that order (`endpoint::b2bua::failover`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use siphon_sip::Transport;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, TrunkAddress, TrunkConfig};

/// One address a trunk's calls may go to, with its SRV priority and weight (0 and 0 for
/// an A/AAAA answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub priority: u16,
    pub weight: u16,
}

/// How long an answer is used before it is asked for again, whatever its TTL says: a
/// zero TTL must not make the task spin, and a day-long one must not hide a move.
const MIN_REFRESH: Duration = Duration::from_secs(5);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const RETRY: Duration = Duration::from_secs(5);

/// The default port of a transport (RFC 3263 §4.2).
fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls => 5061,
        _ => 5060,
    }
}

/// Whether a failed attempt's code sends the call to the next address: timeouts, and
/// server failures (503 above all; a 5xx says that server could not, not that the call
/// is unwanted). 4xx and 6xx are the far end's answer and end the call. Also the rule
/// for the legs Siphon places itself (`endpoint::leg_attempts`): RFC 3263 §4.3.
pub fn fails_over(code: u16) -> bool {
    code == 408 || (500..=599).contains(&code)
}

/// The SRV name for a transport (RFC 3263 §4.2, RFC 5630 for `_sips._tcp`).
fn srv_name(host: &str, transport: Transport) -> String {
    let service = match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
    };
    format!("{service}.{host}.")
}

/// A resolver asking `servers`, or the system's (/etc/resolv.conf) when there are none.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let builder = if servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| format!("system DNS configuration: {e}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                ns.connections = vec![udp, tcp];
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), name_servers),
            provider,
        )
    };
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

/// Resolves `host` for `transport` (RFC 3263 §4.2): the candidates, and until when the
/// answer is valid.
pub async fn resolve(
    resolver: &TokioResolver,
    host: &str,
    port: Option<u16>,
    transport: Transport,
) -> Result<(Vec<Candidate>, Instant), String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port.unwrap_or(default_port(transport)));
        let far = Instant::now() + MAX_REFRESH;
        return Ok((
            vec![Candidate {
                addr,
                priority: 0,
                weight: 0,
            }],
            far,
        ));
    }
    if port.is_none()
        && let Ok(srv) = resolver.srv_lookup(srv_name(host, transport)).await
    {
        let mut until = Instant::from_std(srv.valid_until());
        let mut candidates = Vec::new();
        for record in srv.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            // A target of "." says the service is not offered there (RFC 2782).
            if srv.target.is_root() {
                continue;
            }
            match resolver.lookup_ip(srv.target.clone()).await {
                Ok(ips) => {
                    until = until.min(Instant::from_std(ips.valid_until()));
                    candidates.extend(ips.iter().map(|ip| Candidate {
                        addr: SocketAddr::new(ip, srv.port),
                        priority: srv.priority,
                        weight: srv.weight,
                    }));
                }
                Err(e) => warn!(target = %srv.target, error = %e, "SRV target does not resolve"),
            }
        }
        if !candidates.is_empty() {
            // DNS servers rotate their answers; a stable order shows real changes only.
            candidates.sort_by_key(|c| (c.priority, c.weight, c.addr));
            return Ok((candidates, until));
        }
    }
    let ips = resolver
        .lookup_ip(format!("{host}."))
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    let port = port.unwrap_or(default_port(transport));
    let mut candidates: Vec<Candidate> = ips
        .iter()
        .map(|ip| Candidate {
            addr: SocketAddr::new(ip, port),
            priority: 0,
            weight: 0,
        })
        .collect();
    candidates.sort_by_key(|c| c.addr);
    Ok((candidates, Instant::from_std(ips.valid_until())))
}

/// The order one call tries `candidates` in: by priority, lowest first; within a priority
/// by weight, at random (RFC 2782: each pick among the rest with probability in
/// proportion to its weight, weight-0 records first in the running sum so they have a
/// small chance). `random(n)` returns a number in `0..=n`.
pub fn order(candidates: &[Candidate], mut random: impl FnMut(u32) -> u32) -> Vec<SocketAddr> {
    let mut rest: Vec<Candidate> = candidates.to_vec();
    rest.sort_by_key(|c| (c.priority, c.weight != 0));
    let mut out = Vec::with_capacity(rest.len());
    while let Some(first) = rest.first().copied() {
        let group: Vec<Candidate> = rest
            .iter()
            .copied()
            .filter(|c| c.priority == first.priority)
            .collect();
        let total: u32 = group.iter().map(|c| u32::from(c.weight)).sum();
        let pick = random(total);
        let mut running = 0u32;
        let chosen = group
            .iter()
            .find(|c| {
                running += u32::from(c.weight);
                running >= pick
            })
            .copied()
            .unwrap_or(first);
        out.push(chosen.addr);
        if let Some(i) = rest.iter().position(|c| *c == chosen) {
            rest.remove(i);
        }
    }
    out
}

/// The current candidates of every named trunk, kept fresh by one task each.
#[derive(Default)]
pub struct TrunkTargets {
    named: HashMap<String, watch::Receiver<Arc<Vec<Candidate>>>>,
}

impl TrunkTargets {
    /// Starts resolving every trunk given by name (needs a tokio runtime). A resolver that
    /// cannot be built is logged: those trunks then have no address and their calls fail.
    pub fn spawn(config: &Config) -> TrunkTargets {
        let named: Vec<&TrunkConfig> = config
            .trunks
            .iter()
            .filter(|t| matches!(t.address, TrunkAddress::Host { .. }))
            .collect();
        if named.is_empty() {
            return TrunkTargets::default();
        }
        let resolver = match resolver(&config.dns.servers) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                warn!(error = %e, "cannot resolve trunk names");
                return TrunkTargets::default();
            }
        };
        let mut targets = TrunkTargets::default();
        for trunk in named {
            let TrunkAddress::Host { name, port } = trunk.address.clone() else {
                continue;
            };
            let (tx, rx) = watch::channel(Arc::new(Vec::new()));
            targets.named.insert(trunk.name.clone(), rx);
            let transport = trunk.transport.into();
            let resolver = resolver.clone();
            let trunk_name = trunk.name.clone();
            tokio::spawn(async move {
                loop {
                    let wait = match resolve(&resolver, &name, port, transport).await {
                        Ok((candidates, until)) if !candidates.is_empty() => {
                            if **tx.borrow() != candidates {
                                info!(trunk = %trunk_name, host = %name, ?candidates, "trunk resolved");
                            }
                            tx.send_replace(Arc::new(candidates));
                            until
                                .saturating_duration_since(Instant::now())
                                .clamp(MIN_REFRESH, MAX_REFRESH)
                        }
                        Ok(_) => {
                            warn!(trunk = %trunk_name, host = %name, "trunk name has no address");
                            RETRY
                        }
                        Err(e) => {
                            // The last good answer stays in use.
                            warn!(trunk = %trunk_name, error = %e, "cannot resolve trunk");
                            RETRY
                        }
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = tx.closed() => return,
                    }
                }
            });
        }
        targets
    }

    /// The addresses a new call to `trunk` tries, in order (empty while a name has not
    /// resolved yet).
    pub fn for_call(&self, trunk: &TrunkConfig) -> Vec<SocketAddr> {
        match &trunk.address {
            TrunkAddress::Socket(addr) => vec![*addr],
            TrunkAddress::Host { .. } => match self.named.get(&trunk.name) {
                Some(rx) => order(&rx.borrow(), |n| rand::random_range(0..=n)),
                None => Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn c(port: u16, priority: u16, weight: u16) -> Candidate {
        Candidate {
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
            priority,
            weight,
        }
    }

    #[test]
    fn priority_first_then_weight() {
        let cands = [c(3, 20, 0), c(1, 10, 60), c(2, 10, 40)];
        // Picking at the top of the range chooses the last of the running sum.
        let ports = |v: Vec<SocketAddr>| v.iter().map(SocketAddr::port).collect::<Vec<_>>();
        assert_eq!(ports(order(&cands, |n| n)), vec![2, 1, 3]);
        // Picking 0 takes the first record of the running sum.
        assert_eq!(ports(order(&cands, |_| 0)), vec![1, 2, 3]);
    }

    #[test]
    fn weights_share_the_first_attempts() {
        // Weights 3:1 in one priority: over every pick value the heavier one comes first
        // three times as often (RFC 2782's selection, exhaustively).
        let cands = [c(1, 10, 3), c(2, 10, 1)];
        let first: Vec<u16> = (0..=4)
            .map(|pick| order(&cands, |_| pick)[0].port())
            .collect();
        let heavy = first.iter().filter(|p| **p == 1).count();
        let light = first.iter().filter(|p| **p == 2).count();
        // pick 0..=3 -> port 1 (running sum 3), pick 4 -> port 2.
        assert_eq!((heavy, light), (4, 1));
    }

    #[test]
    fn zero_weights_are_all_tried() {
        let cands = [c(1, 1, 0), c(2, 1, 0), c(3, 1, 0)];
        let mut got = order(&cands, |_| 0);
        got.sort();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got.iter().map(SocketAddr::port).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn only_timeouts_and_server_failures_fail_over() {
        for code in [408, 500, 502, 503, 504] {
            assert!(fails_over(code), "{code}");
        }
        for code in [403, 404, 486, 487, 603] {
            assert!(!fails_over(code), "{code}");
        }
    }

    #[test]
    fn srv_names_per_transport() {
        assert_eq!(
            srv_name("carrier.test", Transport::Tls),
            "_sips._tcp.carrier.test."
        );
        assert_eq!(
            srv_name("carrier.test", Transport::Udp),
            "_sip._udp.carrier.test."
        );
        assert_eq!(default_port(Transport::Tls), 5061);
    }

    #[test]
    fn trunk_addresses_parse() {
        let p = |s: &str| TrunkAddress::try_from(s.to_string());
        assert_eq!(
            p("198.51.100.7:5060").unwrap(),
            TrunkAddress::Socket("198.51.100.7:5060".parse().unwrap())
        );
        assert_eq!(
            p("sip.carrier.example").unwrap(),
            TrunkAddress::Host {
                name: "sip.carrier.example".into(),
                port: None
            }
        );
        assert_eq!(
            p("sip.carrier.example:5080").unwrap(),
            TrunkAddress::Host {
                name: "sip.carrier.example".into(),
                port: Some(5080)
            }
        );
        assert!(p("198.51.100.7").is_err(), "an IP needs its port");
        assert!(p("bad host").is_err());
        assert!(p("host:port").is_err());
    }
}
