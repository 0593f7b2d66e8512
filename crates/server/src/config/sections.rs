//! The sections of the configuration file other than accounts and the dialplan, with
//! their defaults.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use siphon_sip::auth::DigestAlgorithm;

/// An upstream provider (a SIP trunk Siphon places calls through).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    /// Where Siphon sends requests for this trunk: `IP:port`, or a host name (RFC 3263:
    /// SRV records for the transport, else A/AAAA on the transport's default port), or
    /// `host:port` (A/AAAA only).
    pub address: TrunkAddress,
    /// The transport to the trunk. TCP and TLS connections are opened by Siphon, kept and
    /// reused, and opened again when they close.
    #[serde(default)]
    pub transport: TrunkTransport,
    /// PEM CA certificates that sign the trunk's TLS certificate; default: the system's.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// When an attempt to one of the trunk's addresses has had no response at all for
    /// this long, the next address (by SRV priority and weight) is tried (RFC 3263 §4.3
    /// also fails over on 503, other 5xx and transport errors).
    #[serde(default = "default_failover_timeout")]
    pub failover_timeout_s: u64,
    /// Host part of the Request-URI, To and From of calls to the trunk (default: the
    /// address).
    pub domain: Option<String>,
    /// Credentials for when the trunk challenges Siphon (401/407).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Siphon registers itself to the trunk (as `username`), refreshes before expiry and
    /// retries with backoff when the trunk refuses or does not answer.
    #[serde(default)]
    pub register: bool,
    /// The registration lifetime Siphon asks for.
    #[serde(default = "default_trunk_expires")]
    pub register_expires_s: u32,
    /// The address the trunk sees Siphon at, when Siphon is behind a NAT and knows it (the
    /// Contact of its REGISTER). Without it Siphon learns it from `received`/`rport` in
    /// the trunk's 200 to REGISTER and registers again with it.
    pub public_address: Option<SocketAddr>,
    /// Seconds between keepalives (a CRLF pair, RFC 5626 §4.4.1) to a registered trunk,
    /// which keep a NAT's mapping open between refreshes (0: none).
    #[serde(default)]
    pub keepalive_s: u64,
    /// Caller IDs this trunk lets Siphon present (the provider's numbers of the customer):
    /// the `from` an originate or transfer to this trunk may give, besides an account's
    /// name or `caller_ids`.
    #[serde(default)]
    pub caller_ids: Vec<String>,
}

impl TrunkConfig {
    pub fn domain(&self) -> String {
        self.domain.clone().unwrap_or_else(|| match &self.address {
            TrunkAddress::Socket(a) => a.to_string(),
            TrunkAddress::Host { name, .. } => name.clone(),
        })
    }

    /// Username and password, when both are configured.
    pub fn credentials(&self) -> Option<(String, String)> {
        Some((self.username.clone()?, self.password.clone()?))
    }
}

fn default_failover_timeout() -> u64 {
    4
}

/// A trunk's `address`: a socket address, or a host name to resolve (RFC 3263).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TrunkAddress {
    Socket(SocketAddr),
    Host { name: String, port: Option<u16> },
}

impl TryFrom<String> for TrunkAddress {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(TrunkAddress::Socket(addr));
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => (
                name,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| format!("{text}: not IP:port, host or host:port"))?,
                ),
            ),
            None => (text.as_str(), None),
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid || name.parse::<IpAddr>().is_ok() {
            return Err(format!("{text}: not IP:port, host or host:port"));
        }
        Ok(TrunkAddress::Host {
            name: name.trim_end_matches('.').to_string(),
            port,
        })
    }
}

/// The transport Siphon uses to a trunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl From<TrunkTransport> for siphon_sip::Transport {
    fn from(t: TrunkTransport) -> Self {
        match t {
            TrunkTransport::Udp => siphon_sip::Transport::Udp,
            TrunkTransport::Tcp => siphon_sip::Transport::Tcp,
            TrunkTransport::Tls => siphon_sip::Transport::Tls,
        }
    }
}

/// Name resolution for trunks given by host name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers to ask (`IP:port`); empty: the system's (/etc/resolv.conf).
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrConfig {
    /// One JSON line per call is appended here (created if missing).
    pub path: std::path::PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub listen: SocketAddr,
    /// Send each caller's audio back through the fork (so the caller hears the round trip).
    #[serde(default)]
    pub echo: bool,
    /// Write one WAV per stream here.
    pub out_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub listen: SocketAddr,
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    #[serde(default = "default_t2")]
    pub t2_ms: u64,
    #[serde(default = "default_t4")]
    pub t4_ms: u64,
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_s: u64,
    /// On shutdown, how long calls may go on before they get BYE.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_s: u64,
    /// Log every SIP message sent and received in full (target `siphon::sip_trace`).
    /// Switchable at runtime: `PUT /api/sip-trace`.
    #[serde(default)]
    pub trace_messages: bool,
    /// The smallest session interval (RFC 4028 `Session-Expires`) accepted; shorter ones
    /// get 422 with this as `Min-SE`. RFC 4028 says 90 s at least; less is for tests.
    #[serde(default = "default_session_min_se")]
    pub session_min_se_s: u32,
    /// SIP over TLS (RFC 3261 §26.2) listens here when set; `tls_cert` and `tls_key` (PEM
    /// files) are then required.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// A node behind SIP edges: calls to `user` routes go to the AOR through this proxy
    /// (which owns the location service), not to the local registrar's bindings. One URI
    /// or a list (the next edge when one does not answer in time or answers 5xx).
    #[serde(
        default,
        deserialize_with = "super::outbound_proxy::deserialize_proxies"
    )]
    pub outbound_proxy: Vec<super::outbound_proxy::OutboundProxy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/api/*`. Without one, only loopback clients of a loopback listener
    /// may use the API, and not through a proxy (see `http/mod.rs`); the binary refuses to
    /// start with a listener off loopback and no token.
    pub token: Option<String>,
    /// HTTPS: a PEM certificate chain and key. Both or neither.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Where `POST /api/calls/{id}/forks` may send a call's audio, besides the services of
    /// the dialplan's own forks (their `scheme://host:port`, always allowed): URLs that
    /// start with one of these. Without it, and without `allow_any_fork_url`, the API can
    /// only fork to the dialplan's services, so whoever holds the API cannot make Siphon
    /// connect to an address of their choosing (SSRF).
    #[serde(default)]
    pub fork_url_prefixes: Vec<ForkUrlPrefix>,
    /// Lets the API fork to any `ws://`/`wss://` URL (trusted API clients only).
    #[serde(default)]
    pub allow_any_fork_url: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tls_cert: None,
            tls_key: None,
            fork_url_prefixes: Vec::new(),
            allow_any_fork_url: false,
        }
    }
}

impl HttpConfig {
    /// Whether the admin API may attach a fork that connects to `url`:
    /// `allow_any_fork_url`, a match of `fork_url_prefixes`, or the service
    /// (`scheme://host:port`, any path) of one of `dialplan_fork_urls`.
    pub fn admits_fork_url<'a>(
        &self,
        url: &str,
        dialplan_fork_urls: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        self.allow_any_fork_url
            || self.fork_url_prefixes.iter().any(|p| p.admits(url))
            || dialplan_fork_urls
                .into_iter()
                .filter_map(ForkUrlPrefix::origin_of)
                .any(|p| p.admits(url))
    }
}

/// An allowed start of fork URLs (`[http] fork_url_prefixes`): a `ws://` or `wss://` URL
/// naming a host, with or without a path. A URL is admitted when its scheme and
/// `host[:port]` are the prefix's (compared whole, host names in any case, so
/// `wss://a.example` never admits `wss://a.example.evil.net` or `wss://a.example:444`) and
/// what follows starts with the prefix's path, at a `/` (`/stream` admits `/stream/x` and
/// `/stream?k=v`, not `/streamx`). User info is ignored in the URL and refused in a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ForkUrlPrefix {
    /// `wss` rather than `ws`.
    secure: bool,
    /// `host[:port]`, lower case.
    host: String,
    /// Path (and anything after it) as written; empty: any.
    path: String,
}

impl ForkUrlPrefix {
    /// The service a fork URL goes to (`scheme://host:port`, any path), or None if it is
    /// not a usable WebSocket URL.
    fn origin_of(url: &str) -> Option<ForkUrlPrefix> {
        let (secure, host, _) = split_ws_url(url)?;
        Some(ForkUrlPrefix {
            secure,
            host,
            path: String::new(),
        })
    }

    /// Whether `url` is one this prefix allows (see the type's documentation). A URL that
    /// cannot be read the way the WebSocket client will read it is never admitted.
    fn admits(&self, url: &str) -> bool {
        let Some((secure, host, rest)) = split_ws_url(url) else {
            return false;
        };
        if secure != self.secure || host != self.host {
            return false;
        }
        let Some(after) = rest.strip_prefix(self.path.as_str()) else {
            return false;
        };
        self.path.is_empty()
            || self.path.ends_with('/')
            || after.is_empty()
            || after.starts_with(['/', '?', '#'])
    }
}

impl TryFrom<String> for ForkUrlPrefix {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = |why: &str| format!("fork_url_prefixes: {text:?} {why}");
        let (secure, host, path) =
            split_ws_url(&text).ok_or_else(|| bad("is not a ws:// or wss:// URL with a host"))?;
        if authority(&text).is_some_and(|a| a.contains('@')) {
            return Err(bad(
                "has user info (credentials do not belong in an allow list)",
            ));
        }
        Ok(ForkUrlPrefix {
            secure,
            host,
            path: path.to_string(),
        })
    }
}

/// What follows `ws://` or `wss://`, up to the path: where the WebSocket client (an
/// `http::Uri`) ends the authority too.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))?;
    rest.split(['/', '?', '#']).next()
}

/// A WebSocket URL's scheme (`wss` or not), `host[:port]` (lower case, user info dropped) and the rest
/// (path, query, fragment). None for anything the WebSocket client might read otherwise:
/// another scheme, no host, blanks or controls, a backslash, more than one `@`.
fn split_ws_url(url: &str) -> Option<(bool, String, &str)> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        (true, url.strip_prefix("wss://")?)
    };
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = match authority.split_once('@') {
        Some((_, h)) if !h.contains('@') => h,
        Some(_) => return None,
        None => authority,
    };
    if host.is_empty() || host.starts_with(':') {
        return None;
    }
    Some((secure, host.to_ascii_lowercase(), path))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime_s: u64,
    /// A file holding the key that signs nonces (created with a random key when missing,
    /// readable by Siphon only). With it, nonces issued before a restart stay valid, so
    /// phones that re-send cached credentials are not challenged again. Without it the key
    /// is random per process: after a restart such phones get one `stale=true` challenge
    /// (never a failure count). A relative path is relative to the configuration file's
    /// directory (the working directory for the embedded configuration).
    pub nonce_secret_file: Option<std::path::PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: default_algorithms(),
            nonce_lifetime_s: default_nonce_lifetime(),
            nonce_secret_file: None,
        }
    }
}

/// Digest algorithm names as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

impl From<Algorithm> for DigestAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Sha256 => DigestAlgorithm::Sha256,
            Algorithm::Md5 => DigestAlgorithm::Md5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarConfig {
    #[serde(default = "default_min_expires")]
    pub min_expires: u32,
    #[serde(default = "default_max_expires")]
    pub max_expires: u32,
    #[serde(default = "default_max_expires")]
    pub default_expires: u32,
    #[serde(default = "default_max_bindings")]
    pub max_bindings_per_account: usize,
    /// Seconds between OPTIONS keepalives to each phone registered over UDP (0: none).
    /// They keep the phone's NAT mapping open, and a binding whose phone stops answering
    /// one (the transaction times out, 64·T1) is dropped, so its calls stop ringing
    /// nowhere.
    #[serde(default)]
    pub keepalive_interval_s: u64,
    /// An SQLite file keeping the bindings (and a journal of the calls that are up) across
    /// restarts and crashes; created with its directory when missing. A relative path is
    /// relative to the configuration file's directory (the working directory for the
    /// embedded configuration). Absent: bindings live in memory only.
    pub store: Option<std::path::PathBuf>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            default_expires: default_max_expires(),
            max_bindings_per_account: default_max_bindings(),
            keepalive_interval_s: 0,
            store: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpConfig {
    #[serde(default = "default_port_min")]
    pub port_min: u16,
    #[serde(default = "default_port_max")]
    pub port_max: u16,
    pub advertised_address: Option<IpAddr>,
    /// The IPv6 address to advertise to IPv6 peers when Siphon listens on both families
    /// (`[::]`) and `advertised_address` is an IPv4 one.
    pub advertised_address_v6: Option<std::net::Ipv6Addr>,
    #[serde(default = "default_inactivity")]
    pub inactivity_timeout_s: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            port_min: default_port_min(),
            port_max: default_port_max(),
            advertised_address: None,
            advertised_address_v6: None,
            inactivity_timeout_s: default_inactivity(),
        }
    }
}

/// Overload and abuse limits. Past a limit Siphon answers 503 with Retry-After (or, for a
/// flood from one source, drops) and counts it; calls already up keep their audio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent calls.
    pub max_calls: usize,
    /// New calls (INVITEs) per second.
    pub calls_per_second: f64,
    /// REGISTERs per second.
    pub registers_per_second: f64,
    /// SIP messages per second from one source address; beyond it datagrams are dropped
    /// unanswered (0 = no limit).
    pub messages_per_source_per_second: f64,
    /// Open TCP connections (and as many TLS connections).
    pub max_tcp_connections: usize,
    /// Open TCP (and TLS) connections from one source address, so one address cannot
    /// take every slot (0 = no per-source limit).
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection silent this long is closed.
    pub tcp_idle_timeout_s: u64,
    /// A TCP/TLS peer that takes no data for this long (it stopped reading) loses its
    /// connection.
    pub tcp_write_timeout_s: u64,
    /// A TLS connection that has not finished its handshake this long after it opened is
    /// closed.
    pub tls_handshake_timeout_s: u64,
    /// Live SIP transactions; past it new requests get 503.
    pub max_transactions: usize,
    /// Failed digest attempts from one source within `auth_failure_window_s` that get the
    /// source blocked (0 = never block).
    pub auth_failures_to_block: u32,
    pub auth_failure_window_s: u64,
    /// How long a blocked source is ignored.
    pub auth_block_s: u64,
    /// Retry-After (seconds) on 503s.
    pub retry_after_s: u32,
    /// Webhook requests (`action = "webhook"`) in flight at once; a call past it takes
    /// its route's fallback at once.
    pub webhooks_in_flight: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 2000,
            calls_per_second: 100.0,
            registers_per_second: 500.0,
            messages_per_source_per_second: 0.0,
            max_tcp_connections: 1024,
            max_tcp_connections_per_source: 64,
            tcp_idle_timeout_s: 600,
            tcp_write_timeout_s: 10,
            tls_handshake_timeout_s: 5,
            max_transactions: 20_000,
            auth_failures_to_block: 10,
            auth_failure_window_s: 60,
            auth_block_s: 600,
            retry_after_s: 5,
            webhooks_in_flight: 64,
        }
    }
}

fn default_trunk_expires() -> u32 {
    600
}
fn default_realm() -> String {
    "siphon".into()
}
fn default_max_message_size() -> usize {
    siphon_sip::message::DEFAULT_MAX_MESSAGE_SIZE
}
fn default_t1() -> u64 {
    500
}
fn default_t2() -> u64 {
    4000
}
fn default_t4() -> u64 {
    5000
}
fn default_ring_timeout() -> u64 {
    30
}
fn default_drain_timeout() -> u64 {
    30
}
fn default_session_min_se() -> u32 {
    siphon_sip::session_timer::RFC_MIN_SE
}
/// MD5 only: offering SHA-256 as well breaks clients that refuse a 401 holding any
/// algorithm they lack (baresip 1.0); see `[auth] algorithms` in configs/siphon.toml.
fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Md5]
}
fn default_nonce_lifetime() -> u64 {
    300
}
fn default_min_expires() -> u32 {
    60
}
fn default_max_expires() -> u32 {
    3600
}
fn default_max_bindings() -> usize {
    10
}
fn default_port_min() -> u16 {
    20000
}
fn default_port_max() -> u16 {
    29998
}
fn default_inactivity() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn prefix(text: &str) -> ForkUrlPrefix {
        ForkUrlPrefix::try_from(text.to_string()).unwrap()
    }

    #[test]
    fn fork_url_prefixes_match_whole_hosts_and_paths_at_a_slash() {
        let p = prefix("wss://A.example:8443/stream");
        for ok in [
            "wss://a.example:8443/stream",
            "wss://a.example:8443/stream/x",
            "wss://a.example:8443/stream?k=v",
            "wss://a.example:8443/stream#f",
            "wss://user:pw@a.example:8443/stream/x",
        ] {
            assert!(p.admits(ok), "{ok}");
        }
        for bad in [
            "ws://a.example:8443/stream",
            "wss://a.example/stream",
            "wss://a.example:84430/stream",
            "wss://a.example:8443.evil.net/stream",
            "wss://a.example:8443/streamx",
            "wss://a.example:8443/",
            "wss://a.example:8443@evil.net/stream",
            "wss://x@a.example:8443@evil.net/stream",
            "wss://evil.net\\@a.example:8443/stream",
            "wss://a.example:8443/stream\r\nHost: evil.net",
            "wss://a.example:8443 /stream",
            "https://a.example:8443/stream",
            "",
        ] {
            assert!(!p.admits(bad), "{bad}");
        }
        let v6 = prefix("ws://[::1]:9000/");
        assert!(v6.admits("ws://[::1]:9000/x"));
        assert!(!v6.admits("ws://[::1]:9001/x"));
    }

    #[test]
    fn the_dialplans_services_are_allowed_and_nothing_else_by_default() {
        let http = HttpConfig::default();
        let dialplan = [
            "ws://127.0.0.1:8090/native",
            "not a url",
            "wss://u:p@svc.example/a?k=v",
        ];
        for ok in [
            "ws://127.0.0.1:8090/twilio",
            "wss://svc.example/other",
            "wss://svc.example",
        ] {
            assert!(http.admits_fork_url(ok, dialplan), "{ok}");
        }
        for bad in ["ws://127.0.0.1:9/x", "ws://svc.example/a", "not a url"] {
            assert!(!http.admits_fork_url(bad, dialplan), "{bad}");
        }
        assert!(!http.admits_fork_url("ws://127.0.0.1:8090/native", []));
        let any = HttpConfig {
            allow_any_fork_url: true,
            ..HttpConfig::default()
        };
        assert!(any.admits_fork_url("ws://127.0.0.1:9/x", []));
    }
}
