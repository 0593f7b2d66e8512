//! Configuration: a TOML file, strongly typed so that a mistake is reported with its line
//! and column before anything starts (never half-applied).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use siphon_sip::acl::IpAcl;
use siphon_sip::auth::DigestAlgorithm;

/// The default configuration, embedded in the binary; the same text as `configs/siphon.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../configs/siphon.toml");

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
    /// The reference analytics service, run inside Siphon for demos and tests (number 700
    /// of the default configuration forks to it). Absent: not started.
    pub analytics: Option<AnalyticsConfig>,
    /// Call detail records. Absent: none are written.
    pub cdr: Option<CdrConfig>,
}

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
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: default_algorithms(),
            nonce_lifetime_s: default_nonce_lifetime(),
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
    /// Open TCP connections.
    pub max_tcp_connections: usize,
    /// A TCP connection silent this long is closed.
    pub tcp_idle_timeout_s: u64,
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
            tcp_idle_timeout_s: 600,
            max_transactions: 20_000,
            auth_failures_to_block: 10,
            auth_failure_window_s: 60,
            auth_block_s: 600,
            retry_after_s: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Phone,
    Trunk,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub username: toml::Spanned<String>,
    /// Absent for trunks admitted only by source address.
    pub password: Option<String>,
    pub kind: AccountKind,
    /// Source addresses admitted without digest auth (trunks).
    #[serde(default)]
    pub allowed_ips: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// What the caller sends comes back.
    Echo,
    /// A 1 kHz tone at -10 dBm0.
    Tone,
    /// Plays a WAV prompt in a loop (the route's `file`, or the built-in prompt).
    Play,
    /// Rings and never answers.
    Ring,
    /// WebSocket media fork (until the fork lands: answers like echo).
    Fork,
    /// Rings every registered contact of an account (the route's `user`, else the dialled
    /// number) in parallel; the first to answer is bridged to the caller (B2BUA).
    User,
    /// Sends the call out through a trunk (the route's `trunk`), the number rewritten by
    /// `strip` and `prepend`; bridged like `user`.
    Trunk,
    /// Refuses the call with the route's `code` (default 403), before any authentication.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// Anyone may call.
    None,
    /// Digest (407) with an account, or a trunk's source address.
    #[default]
    Digest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub number: toml::Spanned<String>,
    pub action: Action,
    #[serde(default)]
    pub auth: RouteAuth,
    /// Send 180 and wait this long before answering.
    #[serde(default)]
    pub ring_ms: u64,
    /// For `user`: the account whose phones ring (default: the dialled number).
    pub user: Option<String>,
    /// For `user`: how long the phones may ring before the caller gets 480 (default:
    /// `sip.ring_timeout_s`).
    pub ring_timeout_s: Option<u64>,
    /// For `trunk`: the trunk's name.
    pub trunk: Option<String>,
    /// For `trunk`: digits removed from the front of the dialled number...
    #[serde(default)]
    pub strip: usize,
    /// ...and what is put in front of what is left.
    pub prepend: Option<String>,
    /// For `reject`: the final response (400-699).
    pub code: Option<u16>,
    /// The route only applies to calls from these accounts or trunks (by account name);
    /// empty: from anyone. Needs `auth = "digest"`, so the caller is who it claims to be.
    #[serde(default)]
    pub callers: Vec<String>,
    /// For `play`: a WAV file (PCM16 8/16 kHz mono, or G.711), relative to the working
    /// directory. Without it the built-in prompt plays.
    pub file: Option<std::path::PathBuf>,
    /// WebSocket forks attached to every call of this route (`[[dialplan.forks]]`, the
    /// fields of `siphon_fork::ForkConfig`: url, mode, encoding, sample_rate, tracks, ...).
    #[serde(default)]
    pub forks: Vec<siphon_fork::ForkConfig>,
}

impl Route {
    /// The number a `trunk` route sends for `dialled`: `strip` digits off, `prepend` on.
    pub fn rewrite(&self, dialled: &str) -> String {
        let kept: String = dialled.chars().skip(self.strip).collect();
        format!("{}{kept}", self.prepend.as_deref().unwrap_or(""))
    }

    /// The account a `user` route rings.
    pub fn user_account(&self) -> &str {
        self.user.as_deref().unwrap_or(self.number.get_ref())
    }

    /// The prompt a `play` route plays, loaded and checked (`None` for other actions).
    pub fn prompt(&self) -> Result<Option<std::sync::Arc<crate::prompt::Prompt>>, String> {
        if self.action != Action::Play {
            return Ok(None);
        }
        let bytes = match &self.file {
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read prompt {}: {e}", path.display()))?,
            None => crate::prompt::BUILTIN_PROMPT.to_vec(),
        };
        crate::prompt::Prompt::from_wav(&bytes)
            .map(|p| Some(std::sync::Arc::new(p)))
            .map_err(|e| {
                format!(
                    "prompt for {} is not a usable WAV: {e}",
                    self.number.get_ref()
                )
            })
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
        Config::parse(&text)
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

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError::At {
                line,
                column,
                message,
            }
        };
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(ConfigError::Invalid(
                "sip: t1_ms must be positive and t2_ms at least t1_ms".into(),
            ));
        }
        if self.sip.max_message_size < 1024 {
            return Err(ConfigError::Invalid(
                "sip: max_message_size below 1024 bytes cannot carry an INVITE".into(),
            ));
        }
        if self
            .http
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::Invalid(
                "http: token must be printable ASCII without spaces".into(),
            ));
        }
        if self.sip.tls_listen.is_some() {
            let (Some(cert), Some(key)) = (&self.sip.tls_cert, &self.sip.tls_key) else {
                return Err(ConfigError::Invalid(
                    "sip: tls_listen needs tls_cert and tls_key (PEM files)".into(),
                ));
            };
            // Load them now: `siphon check-config` and start-up both catch a bad file.
            crate::tls::acceptor(cert, key)
                .map_err(|e| ConfigError::Invalid(format!("sip: TLS: {e}")))?;
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(cert), Some(key)) => {
                crate::tls::acceptor(cert, key)
                    .map_err(|e| ConfigError::Invalid(format!("http: TLS: {e}")))?;
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "http: tls_cert and tls_key go together".into(),
                ));
            }
        }
        if self.auth.algorithms.is_empty() {
            return Err(ConfigError::Invalid(
                "auth: algorithms must name at least one algorithm".into(),
            ));
        }
        let r = &self.registrar;
        if r.min_expires > r.max_expires
            || r.default_expires < r.min_expires
            || r.default_expires > r.max_expires
        {
            return Err(ConfigError::Invalid(
                "registrar: need min_expires <= default_expires <= max_expires".into(),
            ));
        }
        let p = &self.rtp;
        if !p.port_min.is_multiple_of(2) || p.port_min > p.port_max || p.port_min < 1024 {
            return Err(ConfigError::Invalid(
                "rtp: port_min must be an even port >= 1024 and not above port_max".into(),
            ));
        }
        let mut names = HashSet::new();
        for a in &self.accounts {
            if a.username.get_ref().is_empty() {
                return Err(at(a.username.span(), "empty username".into()));
            }
            if !names.insert(a.username.get_ref().clone()) {
                return Err(at(
                    a.username.span(),
                    format!("duplicate account {}", a.username.get_ref()),
                ));
            }
            if a.password.is_none() && a.allowed_ips.is_empty() {
                return Err(at(
                    a.username.span(),
                    format!(
                        "account {} has neither a password nor allowed_ips",
                        a.username.get_ref()
                    ),
                ));
            }
            if a.kind == AccountKind::Phone && a.password.is_none() {
                return Err(at(
                    a.username.span(),
                    format!("phone account {} needs a password", a.username.get_ref()),
                ));
            }
        }
        for t in &self.trunks {
            if t.register && (t.username.is_none() || t.register_expires_s == 0) {
                return Err(ConfigError::Invalid(format!(
                    "trunk {}: register = true needs a username and register_expires_s > 0",
                    t.name
                )));
            }
        }
        let mut numbers = HashSet::new();
        for route in &self.dialplan {
            let n = route.number.get_ref();
            let valid = match n.strip_prefix('_') {
                Some(pattern) => crate::patterns::valid_pattern(pattern),
                None => {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+*#".contains(c))
                }
            };
            if !valid {
                return Err(at(
                    route.number.span(),
                    format!(
                        "invalid number {n:?}: digits, letters, + * # only, or a pattern \
                         (_ then digits, X, Z, N, [..], and . or ! at the end)"
                    ),
                ));
            }
            if route.code.is_some_and(|c| !(400..700).contains(&c)) {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: code must be a final error response, 400-699"),
                ));
            }
            if route.action == Action::Trunk {
                let known = route
                    .trunk
                    .as_ref()
                    .is_some_and(|t| self.trunks.iter().any(|k| &k.name == t));
                if !known {
                    return Err(at(
                        route.number.span(),
                        format!(
                            "route {n}: action \"trunk\" needs `trunk` naming a [[trunks]] entry"
                        ),
                    ));
                }
            }
            if !route.callers.is_empty() && route.auth == RouteAuth::None {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: `callers` needs auth = \"digest\" (callers are checked)"),
                ));
            }
            // The same number may route differently for different callers.
            let mut callers = route.callers.clone();
            callers.sort();
            if !numbers.insert((n.clone(), callers)) {
                return Err(at(route.number.span(), format!("duplicate number {n}")));
            }
            if let Err(e) = route.prompt() {
                return Err(at(route.number.span(), e));
            }
            // A pattern route without `user` rings whatever account was dialled.
            let pattern = n.starts_with('_');
            if route.action == Action::User && (route.user.is_some() || !pattern) {
                let user = route.user_account();
                if self.account(user).is_none() {
                    return Err(at(
                        route.number.span(),
                        format!("route {n} rings account {user}, which does not exist"),
                    ));
                }
            } else if route.user.is_some() {
                return Err(at(
                    route.number.span(),
                    format!("route {n}: `user` only applies to action \"user\""),
                ));
            }
            for fork in &route.forks {
                if let Err(e) = fork.validate() {
                    return Err(at(route.number.span(), format!("fork of {n}: {e}")));
                }
            }
        }
        Ok(())
    }

    pub fn timers(&self) -> siphon_sip::TimerConfig {
        siphon_sip::TimerConfig {
            t1: Duration::from_millis(self.sip.t1_ms),
            t2: Duration::from_millis(self.sip.t2_ms),
            t4: Duration::from_millis(self.sip.t4_ms),
        }
    }

    /// The address written into SDP, Contact and Via: configured, or the SIP listen
    /// address, or — when that is a wildcard (0.0.0.0 / ::), which a peer cannot send to
    /// and which in SDP means "on hold" — the address the host routes from.
    pub fn advertised_address(&self) -> IpAddr {
        if let Some(ip) = self.rtp.advertised_address {
            return ip;
        }
        let listen = self.sip.listen.ip();
        if listen.is_unspecified() {
            primary_address(listen)
        } else {
            listen
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.sip.listen, "127.0.0.1:5060".parse().unwrap());
        assert!(c.account("1001").is_some());
        assert_eq!(c.route("600").unwrap().action, Action::Echo);
        assert_eq!(c.route("700").unwrap().action, Action::Fork);
        assert!(c.route("602").unwrap().prompt().unwrap().is_some());
        let r = c.route("1002").unwrap();
        assert_eq!((r.action, r.user_account()), (Action::User, "1002"));
    }

    #[test]
    fn trunk_routes_rewrite_and_patterns_match() {
        let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\
            [[trunks]]\nname = \"up\"\naddress = \"192.0.2.1:5060\"\n\
            [[dialplan]]\nnumber = \"_9X.\"\naction = \"trunk\"\ntrunk = \"up\"\nstrip = 1\nprepend = \"+44\"\n\
            [[dialplan]]\nnumber = \"900\"\naction = \"echo\"\n";
        let c = Config::parse(text).unwrap();
        // An exact number wins over a pattern listed before it.
        assert_eq!(c.route("900").unwrap().action, Action::Echo);
        let r = c.route("9020").unwrap();
        assert_eq!(r.action, Action::Trunk);
        assert_eq!(r.rewrite("9020"), "+44020");
        assert!(
            c.route("90").is_none(),
            "X. needs at least two digits after 9"
        );
        assert_eq!(c.trunk("up").unwrap().domain(), "192.0.2.1:5060");
        let unknown = text.replace("trunk = \"up\"", "trunk = \"down\"");
        assert!(Config::parse(&unknown).is_err());
        let bad = text.replace("_9X.", "_9.X");
        assert!(Config::parse(&bad).is_err());
        let reject = text.replace("action = \"echo\"", "action = \"reject\"\ncode = 603");
        let c = Config::parse(&reject).unwrap();
        assert_eq!(
            (c.route("900").unwrap().action, c.route("900").unwrap().code),
            (Action::Reject, Some(603))
        );
        assert!(Config::parse(&reject.replace("603", "200")).is_err());
    }

    #[test]
    fn routes_by_caller() {
        let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\
            [[dialplan]]\nnumber = \"_0.\"\naction = \"tone\"\ncallers = [\"1001\"]\n\
            [[dialplan]]\nnumber = \"_0.\"\naction = \"echo\"\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(
            c.route_for("0123", Some("1001")).unwrap().action,
            Action::Tone
        );
        assert_eq!(
            c.route_for("0123", Some("1002")).unwrap().action,
            Action::Echo
        );
        assert_eq!(c.route("0123").unwrap().action, Action::Echo);
        let open = text.replace(
            "callers = [\"1001\"]",
            "callers = [\"1001\"]\nauth = \"none\"",
        );
        assert!(Config::parse(&open).is_err());
    }

    #[test]
    fn user_routes_need_an_existing_account() {
        let base = "[sip]\nlisten = \"127.0.0.1:5060\"\n[[accounts]]\nusername = \"1002\"\npassword = \"p\"\nkind = \"phone\"\n";
        let ok =
            format!("{base}[[dialplan]]\nnumber = \"22\"\naction = \"user\"\nuser = \"1002\"\n");
        assert_eq!(
            Config::parse(&ok)
                .unwrap()
                .route("22")
                .unwrap()
                .user_account(),
            "1002"
        );
        let missing = format!("{base}[[dialplan]]\nnumber = \"23\"\naction = \"user\"\n");
        let err = Config::parse(&missing).unwrap_err().to_string();
        assert!(
            err.contains("line 8") && err.contains("account 23"),
            "{err}"
        );
        let stray =
            format!("{base}[[dialplan]]\nnumber = \"24\"\naction = \"echo\"\nuser = \"1002\"\n");
        assert!(Config::parse(&stray).is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\n[rtp]\nport_min = \"many\"\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.starts_with("line 5"), "{err}");
        let text = "[sip]\nlisten = \"not an address\"\n";
        assert!(
            Config::parse(text)
                .unwrap_err()
                .to_string()
                .starts_with("line 2")
        );
        let text = "[sip]\nlisten = \"127.0.0.1:5060\"\nlisen = 1\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.starts_with("line 3"), "{err}");
    }

    #[test]
    fn semantic_errors_are_refused() {
        let base = "[sip]\nlisten = \"127.0.0.1:5060\"\n";
        let dup = format!(
            "{base}[[dialplan]]\nnumber = \"600\"\naction = \"echo\"\n[[dialplan]]\nnumber = \"600\"\naction = \"tone\"\n"
        );
        let err = Config::parse(&dup).unwrap_err().to_string();
        assert!(
            err.contains("line 7") && err.contains("duplicate number"),
            "{err}"
        );
        let odd = format!("{base}[rtp]\nport_min = 20001\n");
        assert!(Config::parse(&odd).is_err());
        let nopw = format!("{base}[[accounts]]\nusername = \"x\"\nkind = \"phone\"\n");
        assert!(Config::parse(&nopw).is_err());
        let action = format!("{base}[[dialplan]]\nnumber = \"1\"\naction = \"dance\"\n");
        let err = Config::parse(&action).unwrap_err().to_string();
        assert!(err.contains("line 5"), "{err}");
        let prompt = format!(
            "{base}[[dialplan]]\nnumber = \"602\"\naction = \"play\"\nfile = \"/nonexistent.wav\"\n"
        );
        let err = Config::parse(&prompt).unwrap_err().to_string();
        assert!(
            err.contains("line 4") && err.contains("cannot read prompt"),
            "{err}"
        );
    }

    #[test]
    fn trunk_by_ip() {
        let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n[[accounts]]\nusername = \"carrier\"\nkind = \"trunk\"\nallowed_ips = [\"192.0.2.0/24\"]\n";
        let c = Config::parse(text).unwrap();
        assert!(c.trunk_for_ip("192.0.2.9".parse().unwrap()).is_some());
        assert!(c.trunk_for_ip("198.51.100.1".parse().unwrap()).is_none());
    }
}
