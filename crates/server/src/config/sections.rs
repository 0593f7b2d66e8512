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
    /// Where Siphon sends requests for this trunk (UDP).
    pub address: SocketAddr,
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
}

impl TrunkConfig {
    pub fn domain(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }

    /// Username and password, when both are configured.
    pub fn credentials(&self) -> Option<(String, String)> {
        Some((self.username.clone()?, self.password.clone()?))
    }
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
    /// SIP over TLS (RFC 3261 §26.2) listens here when set; `tls_cert` and `tls_key` (PEM
    /// files) are then required.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token for `/api/*`. Without one, only loopback clients may use the API.
    pub token: Option<String>,
    /// HTTPS: a PEM certificate chain and key. Both or neither.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
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
    /// (never a failure count).
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
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            default_expires: default_max_expires(),
            max_bindings_per_account: default_max_bindings(),
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
    #[serde(default = "default_inactivity")]
    pub inactivity_timeout_s: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            port_min: default_port_min(),
            port_max: default_port_max(),
            advertised_address: None,
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
