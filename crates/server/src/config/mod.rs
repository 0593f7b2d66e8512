//! Configuration: a TOML file, strongly typed so that a mistake is reported with its line
//! and column before anything starts (never half-applied).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use siphon_sip::acl::IpAcl;

/// The default configuration, embedded in the binary; the same text as `configs/siphon.toml`.
mod call_action;
mod events;
mod outbound_proxy;
mod routes;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use call_action::{CallAction, sip_uri_addr, valid_number};
pub use events::EventsConfig;
pub use outbound_proxy::OutboundProxy;
pub use routes::{Account, AccountKind, Action, Route, RouteAuth};
pub use sections::{
    Algorithm, AnalyticsConfig, AuthConfig, CdrConfig, DnsConfig, HttpConfig, LimitsConfig,
    RegistrarConfig, RtpConfig, SipConfig, TrunkAddress, TrunkConfig, TrunkTransport,
};

pub const EMBEDDED_DEFAULT: &str = include_str!("../../../../configs/siphon.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub registrar: RegistrarConfig,
    #[serde(default)]
    pub rtp: RtpConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub accounts: Vec<Account>,
    #[serde(default)]
    pub dialplan: Vec<Route>,
    /// Upstream SIP providers that `trunk` routes send calls to.
    #[serde(default)]
    pub trunks: Vec<TrunkConfig>,
    #[serde(default)]
    pub dns: DnsConfig,
    /// The reference analytics service, run inside Siphon for demos and tests (number 700
    /// of the default configuration forks to it). Absent: not started.
    pub analytics: Option<AnalyticsConfig>,
    /// Call detail records. Absent: none are written.
    pub cdr: Option<CdrConfig>,
    /// Call status events posted to applications (`call.ringing`, `call.ended`, ...).
    /// Absent: only per-call `callback_url`s get events, with the defaults.
    pub events: Option<EventsConfig>,
}

/// A configuration problem, with where it is when known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}, column {column}: {message}")]
    At {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// The embedded default.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text)?;
        config.resolve_state_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// State files (the registrar store, the nonce key) given as relative paths belong to
    /// the configuration, not to wherever Siphon was started from: two copies of a
    /// configuration in two directories never share, and so never overwrite, each other's
    /// registrations.
    fn resolve_state_paths(&mut self, dir: &Path) {
        for path in [&mut self.registrar.store, &mut self.auth.nonce_secret_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }

    /// Parses and validates; every error names its line.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::At {
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        config.validate(text)?;
        Ok(config)
    }

    pub fn timers(&self) -> siphon_sip::TimerConfig {
        siphon_sip::TimerConfig {
            t1: Duration::from_millis(self.sip.t1_ms),
            t2: Duration::from_millis(self.sip.t2_ms),
            t4: Duration::from_millis(self.sip.t4_ms),
        }
    }

    /// The addresses written into SDP, Contact and Via, one per address family: configured,
    /// or the SIP listen address, or — when that is a wildcard (0.0.0.0 / ::), which a peer
    /// cannot send to and which in SDP means "on hold" — the address the host routes from.
    /// Listening on `[::]` is dual-stack (Linux accepts IPv4 on it), so both families get
    /// an address; otherwise only the listen address's family does. Probes the routing
    /// table: computed once, at start.
    pub fn advertised_addresses(&self) -> Advertised {
        let listen = self.sip.listen.ip();
        let configured = self.rtp.advertised_address;
        let v6_configured = self
            .rtp
            .advertised_address_v6
            .map(IpAddr::V6)
            .or(configured.filter(IpAddr::is_ipv6));
        let v4_configured = configured.filter(IpAddr::is_ipv4);
        let v4 = v4_configured.unwrap_or_else(|| match listen {
            IpAddr::V4(ip) if !ip.is_unspecified() => listen,
            _ => primary_address(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        });
        let v6 = v6_configured.unwrap_or_else(|| {
            if listen.is_unspecified() {
                primary_address(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
            } else {
                listen
            }
        });
        match listen {
            IpAddr::V6(ip) if ip.is_unspecified() => Advertised {
                v4: Some(v4),
                v6: Some(v6),
            },
            IpAddr::V6(_) => Advertised {
                v4: v4_configured,
                v6: Some(v6),
            },
            IpAddr::V4(_) => Advertised {
                v4: Some(v4),
                v6: v6_configured,
            },
        }
    }

    /// Where a call's RTP sockets bind for a peer at `peer`: the SIP listen address, except
    /// that a dual-stack listener (`[::]`) binds IPv4 peers' media to `0.0.0.0`, so their
    /// packets arrive with plain IPv4 sources (not `::ffff:` mapped ones) that compare
    /// equal to the addresses their SDP names.
    pub fn rtp_bind_address(&self, peer: IpAddr) -> IpAddr {
        let listen = self.sip.listen.ip();
        match (listen, peer.to_canonical()) {
            (IpAddr::V6(l), IpAddr::V4(_)) if l.is_unspecified() => {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            }
            _ => listen,
        }
    }

    pub fn account(&self, username: &str) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.username.get_ref() == username)
    }

    /// The trunk account whose allowed_ips admit `ip`.
    pub fn trunk_for_ip(&self, ip: IpAddr) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| !a.allowed_ips.is_empty() && IpAcl::new(a.allowed_ips.clone()).contains(ip))
    }

    /// The route for a dialled number from anyone (routes limited to `callers` excluded).
    pub fn route(&self, number: &str) -> Option<&Route> {
        self.route_for(number, None)
    }

    /// The route for a dialled number from `caller` (an account or trunk name): an exact
    /// number first, else the first pattern (`_...`) that matches, in file order; a route
    /// with `callers` only when they include `caller`.
    pub fn route_for(&self, number: &str, caller: Option<&str>) -> Option<&Route> {
        let admits = |r: &&Route| {
            r.callers.is_empty() || caller.is_some_and(|c| r.callers.iter().any(|k| k == c))
        };
        self.dialplan
            .iter()
            .filter(admits)
            .find(|r| r.number.get_ref() == number)
            .or_else(|| {
                self.dialplan.iter().filter(admits).find(|r| {
                    r.number
                        .get_ref()
                        .strip_prefix('_')
                        .is_some_and(|p| crate::patterns::pattern_matches(p, number))
                })
            })
    }

    pub fn trunk(&self, name: &str) -> Option<&TrunkConfig> {
        self.trunks.iter().find(|t| t.name == name)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Siphon's own address for each address family it serves (see
/// `Config::advertised_addresses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertised {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

impl Advertised {
    /// The address a peer at `peer` can reach Siphon at: one of its own family, or (for a
    /// family Siphon does not listen on, which cannot reach it anyway) the other one.
    pub fn for_peer(&self, peer: IpAddr) -> IpAddr {
        let (same, other) = match peer.to_canonical() {
            IpAddr::V4(_) => (self.v4, self.v6),
            IpAddr::V6(_) => (self.v6, self.v4),
        };
        same.or(other)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }
}

/// The host's source address towards the public internet, found the way the kernel would
/// choose it: connecting a UDP socket sends nothing, it only picks a route and a source.
/// A host with no default route gets loopback, the only address a peer can surely reach.
fn primary_address(family: IpAddr) -> IpAddr {
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
    // Documentation prefixes (RFC 5737 / RFC 3849): routed like any public address.
    let (bind, probe, fallback): (IpAddr, IpAddr, IpAddr) = match family {
        IpAddr::V4(_) => (
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::LOCALHOST.into(),
        ),
        IpAddr::V6(_) => (
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::LOCALHOST.into(),
        ),
    };
    UdpSocket::bind((bind, 0))
        .and_then(|s| s.connect((probe, 9)).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(fallback)
}
