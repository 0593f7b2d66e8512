//! Digest authentication: RFC 7616 (HTTP Digest) as used by SIP (RFC 3261 §22, with the
//! SHA-2 algorithms added by RFC 8760).
//!
//! The server side is [`Authenticator`]: it issues challenges ([`Authenticator::challenge`])
//! and checks `Authorization` / `Proxy-Authorization` values ([`Authenticator::verify`]).
//! A small client side ([`Challenge`]) answers challenges, which the server needs when it
//! registers to upstream trunks and which the tests use for round trips.
//!
//! # Nonces
//!
//! Nonces carry their own proof (RFC 7616 §3.3): the issue time, 64 random bits, and an
//! HMAC-SHA256 tag over both and the **source address the challenge was sent to**, keyed
//! by [`DigestConfig::secret`]. Issuing one stores nothing, so a flood of unauthenticated
//! requests costs no memory, and with a secret that outlives the process (the server keeps
//! it in a file) nonces survive a restart: phones re-sending cached credentials keep working.
//!
//! A response whose nonce is not one of ours (another secret, another server, a forged
//! one, or one issued to another address) is never a failed login: with a correct digest
//! it is [`AuthError::StaleNonce`] (re-challenge with `stale=true`, RFC 7616 §3.3: "the
//! nonce is invalid but with a valid digest for that nonce"), with a wrong one
//! [`AuthError::UnknownNonce`] (a plain re-challenge). Only a wrong digest for a nonce we
//! issued **to that source** is [`AuthError::WrongPassword`] / [`AuthError::UnknownUser`]:
//! someone forging a victim's source address never sees the challenges sent there, so
//! cannot make failures count against it ([`AuthError::counts_as_failure`]).
//!
//! A nonce is usable for [`DigestConfig::nonce_lifetime`]; after that a correct response
//! gets [`AuthError::StaleNonce`].
//!
//! # Replay protection
//!
//! With `qop=auth`, `nc` must be strictly greater than the last accepted value for that nonce.
//! The stored value is only advanced after the response has been verified, so garbage requests
//! cannot burn a legitimate client's counter. Only nonces that were used successfully are
//! remembered (at most [`DigestConfig::max_nonces`], for their lifetime); when the cap
//! forgets one early, every nonce issued up to it becomes stale, so none can be replayed. Retransmissions of one request never reach this
//! code twice: the transaction layer absorbs them.
//!
//! Without `qop` (RFC 2069 style, MD5 only, allowed unless [`DigestConfig::allow_no_qop`] is
//! off) there is no counter, so such a nonce is single-use: the first successful use consumes
//! it and any later use (with or without qop) is a [`AuthError::NonceCountReplay`]. A client
//! reusing it is simply re-challenged; that costs one round trip and closes the replay hole.
//!
//! # Not supported
//!
//! `qop=auth-int` ([`AuthError::UnsupportedQop`]) and `userhash=true`
//! ([`AuthError::UnsupportedUserhash`]; verifying it would need to enumerate all users, and
//! we never offer it). The `-sess` algorithm variants are supported.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::ConstantTimeEq as _;

/// Longest header value we parse. Real credentials are a few hundred bytes; the cap bounds the
/// work a hostile peer can make us do per request.
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Most parameters accepted in one header value (RFC 7616 defines about a dozen).
const MAX_PARAMS: usize = 32;

/// A digest hash algorithm, as named in the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `MD5`: the RFC 2617 / RFC 3261 default, still what most phones use.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256` (SHA-512/256; RFC 7616, RFC 8760).
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl DigestAlgorithm {
    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Md5Sess => "MD5-sess",
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Sha256Sess => "SHA-256-sess",
            DigestAlgorithm::Sha512_256 => "SHA-512-256",
            DigestAlgorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Parses a wire name, case-insensitively (RFC 7616 §3.3: "algorithm" values are tokens
    /// compared case-insensitively in practice; phones send "md5" as well as "MD5").
    pub fn from_name(name: &str) -> Option<Self> {
        [
            DigestAlgorithm::Md5,
            DigestAlgorithm::Md5Sess,
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha256Sess,
            DigestAlgorithm::Sha512_256,
            DigestAlgorithm::Sha512_256Sess,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// True for the `-sess` variants, whose HA1 also covers the nonce and cnonce.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            DigestAlgorithm::Md5Sess
                | DigestAlgorithm::Sha256Sess
                | DigestAlgorithm::Sha512_256Sess
        )
    }

    /// Lower-case hex of the hash of `parts` concatenated, into `out` (no allocation: the
    /// verifier runs this three times per REGISTER). Returns the hex text.
    fn hash_hex_into<'o>(self, parts: &[&[u8]], out: &'o mut [u8; MAX_HEX]) -> &'o str {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8; MAX_HEX]) -> usize {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            let digest = d.finalize();
            let n = digest.len() * 2;
            // Cannot fail: MAX_HEX holds the longest digest (32 bytes) in hex.
            let _ = hex::encode_to_slice(digest, &mut out[..n]);
            n
        }
        let n = match self {
            DigestAlgorithm::Md5 | DigestAlgorithm::Md5Sess => run::<Md5>(parts, out),
            DigestAlgorithm::Sha256 | DigestAlgorithm::Sha256Sess => run::<Sha256>(parts, out),
            DigestAlgorithm::Sha512_256 | DigestAlgorithm::Sha512_256Sess => {
                run::<Sha512_256>(parts, out)
            }
        };
        // Hex digits are ASCII.
        std::str::from_utf8(&out[..n]).unwrap_or("")
    }
}

/// Room for the hex of the longest digest (SHA-256, SHA-512/256: 32 bytes).
const MAX_HEX: usize = 64;

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Inputs of the digest response computation (RFC 7616 §3.4.1). A struct rather than
/// positional arguments because most of them are strings that are easy to swap by mistake.
#[derive(Debug, Clone, Copy)]
pub struct ResponseParams<'a> {
    pub algorithm: DigestAlgorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `Some((nc, cnonce))` for `qop=auth`, exactly as they appear on the wire (`nc` is the
    /// 8-hex-digit string). `None` for RFC 2069 style responses without qop; the `-sess`
    /// variants then use an empty cnonce (the verifier never accepts that combination).
    pub qop_auth: Option<(&'a str, &'a str)>,
}

/// Computes the `response` parameter: lower-case hex of
/// `H(HA1 ":" nonce ":" nc ":" cnonce ":" "auth" ":" HA2)` (or `H(HA1 ":" nonce ":" HA2)`
/// without qop), where `HA1 = H(username ":" realm ":" password)` (for `-sess`,
/// `H(that ":" nonce ":" cnonce)`) and `HA2 = H(method ":" uri)`.
pub fn compute_response(p: &ResponseParams<'_>) -> String {
    let mut out = [0u8; MAX_HEX];
    compute_response_into(p, &mut out).to_owned()
}

/// [`compute_response`] into a stack buffer: the hashes are fed the parts in turn, so
/// nothing is formatted or allocated.
fn compute_response_into<'o>(p: &ResponseParams<'_>, out: &'o mut [u8; MAX_HEX]) -> &'o str {
    let alg = p.algorithm;
    let (mut ha1_buf, mut sess_buf, mut ha2_buf) = ([0u8; MAX_HEX], [0u8; MAX_HEX], [0u8; MAX_HEX]);
    let mut ha1 = alg.hash_hex_into(
        &[
            p.username.as_bytes(),
            b":",
            p.realm.as_bytes(),
            b":",
            p.password.as_bytes(),
        ],
        &mut ha1_buf,
    );
    if alg.is_session() {
        let cnonce = p.qop_auth.map(|(_, c)| c).unwrap_or("");
        ha1 = alg.hash_hex_into(
            &[
                ha1.as_bytes(),
                b":",
                p.nonce.as_bytes(),
                b":",
                cnonce.as_bytes(),
            ],
            &mut sess_buf,
        );
    }
    let ha2 = alg.hash_hex_into(&[p.method.as_bytes(), b":", p.uri.as_bytes()], &mut ha2_buf);
    match p.qop_auth {
        Some((nc, cnonce)) => alg.hash_hex_into(
            &[
                ha1.as_bytes(),
                b":",
                p.nonce.as_bytes(),
                b":",
                nc.as_bytes(),
                b":",
                cnonce.as_bytes(),
                b":auth:",
                ha2.as_bytes(),
            ],
            out,
        ),
        None => alg.hash_hex_into(
            &[
                ha1.as_bytes(),
                b":",
                p.nonce.as_bytes(),
                b":",
                ha2.as_bytes(),
            ],
            out,
        ),
    }
}

/// Server-side settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestConfig {
    /// The protection space; responses must carry exactly this realm.
    pub realm: String,
    /// Offered algorithms, in challenge order (clients usually take the first they support),
    /// and the only ones accepted in responses, so a client cannot downgrade to one the
    /// operator removed. Empty means nothing is offered or accepted.
    pub algorithms: Vec<DigestAlgorithm>,
    /// How long a nonce may be used. Default 300 s.
    pub nonce_lifetime: Duration,
    /// Most used nonces remembered at once (for their nonce-counts); the oldest are
    /// forgotten first, and nonces issued up to a forgotten one turn stale. Default 100 000
    /// (roughly 10 MB). Issued but unused nonces take no memory.
    pub max_nonces: usize,
    /// Accept RFC 2069 responses (no qop, plain MD5 only, single-use nonce). Default true,
    /// because some old ATAs still send them.
    pub allow_no_qop: bool,
    /// Key of the nonces' HMAC tag (and of the opaque value). Random by default; the same
    /// secret across restarts keeps issued nonces valid.
    pub secret: [u8; 32],
}

impl DigestConfig {
    /// Defaults for `realm`: algorithms `[SHA-256, MD5]`, 300 s lifetime, 100 000 used
    /// nonces remembered, RFC 2069 responses allowed, a random secret.
    pub fn new(realm: impl Into<String>) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        DigestConfig {
            realm: realm.into(),
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            max_nonces: 100_000,
            allow_no_qop: true,
            secret,
        }
    }
}

/// What a successful [`Authenticator::verify`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub username: String,
    /// The `uri` parameter the response covers. Not compared with the Request-URI here (the
    /// verifier is not given the request); the caller may do so (RFC 7616 §3.4.6).
    pub uri: String,
    pub algorithm: DigestAlgorithm,
}

/// Why a header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("header value longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("authentication scheme is not Digest")]
    NotDigest,
    #[error("unexpected character at byte {0}")]
    UnexpectedChar(usize),
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("parameter without a value at byte {0}")]
    MissingValue(usize),
    #[error("parameter {0} given twice")]
    DuplicateParam(String),
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("no parameters after the scheme")]
    NoParams,
    #[error("missing parameter {0}")]
    MissingParam(&'static str),
    #[error("invalid value for parameter {0}")]
    InvalidValue(&'static str),
}

/// Why credentials were refused. The server answers most of these with a fresh challenge;
/// [`AuthError::UnknownUser`] and [`AuthError::WrongPassword`] are distinct only for logging
/// and rate limiting and must look identical on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed credentials: {0}")]
    Malformed(#[from] ParseError),
    #[error("realm does not match")]
    RealmMismatch,
    #[error("unsupported or disabled algorithm")]
    UnsupportedAlgorithm,
    #[error("unsupported qop (only auth, or none for MD5)")]
    UnsupportedQop,
    #[error("userhash is not supported")]
    UnsupportedUserhash,
    #[error("unknown nonce")]
    UnknownNonce,
    #[error("nonce expired")]
    StaleNonce,
    #[error("nonce count not greater than the last one seen")]
    NonceCountReplay,
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
}

impl AuthError {
    /// True when the client evidently knows the password and only the nonce is no longer
    /// usable, so the re-challenge should carry `stale=true` (RFC 7616 §3.3: "the nonce is
    /// invalid but with a valid digest for that nonce"). That is the case for an expired
    /// nonce and for a replayed nonce-count: both are only reported after the response has
    /// been verified, and telling a replaying attacker "stale" gains them nothing, while it
    /// saves a legitimate client (reordered requests, RFC 2069 nonce reuse) a password prompt.
    pub fn is_stale(&self) -> bool {
        matches!(self, AuthError::StaleNonce | AuthError::NonceCountReplay)
    }

    /// True for a wrong digest (or unknown user) answering a nonce we issued to the same
    /// source address: the only failures worth counting towards blocking that source.
    /// Everything else (malformed or foreign credentials, nonces that are not ours) may come
    /// from anyone forging the address and gets a fresh challenge instead.
    pub fn counts_as_failure(&self) -> bool {
        matches!(self, AuthError::WrongPassword | AuthError::UnknownUser)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a nonce before hex: issue time in ms (8), random (8), tag (16).
const NONCE_BYTES: usize = 32;

/// Issues challenges and verifies credentials. Cheap to share: all methods take `&self`.
#[derive(Debug)]
pub struct Authenticator {
    config: DigestConfig,
    /// Derived from the secret: the same across restarts with the same secret, so phones'
    /// cached challenges stay ours.
    opaque: String,
    /// HMAC-SHA256 keyed with the secret, before any data: cloned per nonce tag, so the
    /// key's two padded blocks are hashed once, not on every challenge and every check.
    keyed: HmacSha256,
    /// Highest accepted nc per used nonce; `u32::MAX` once consumed by a no-qop use.
    used: DashMap<String, u32>,
    /// Used nonces with their issue time (ms), oldest first, for purging and the cap.
    /// Every removal from `used` goes through here (under this lock).
    order: Mutex<UsedOrder>,
}

#[derive(Debug, Default)]
struct UsedOrder {
    queue: VecDeque<(u64, String)>,
    /// Nonces issued at or before this time (ms) whose use was forgotten early (the
    /// cap) are stale: none can be replayed.
    forgotten_up_to: Option<u64>,
}

impl Authenticator {
    pub fn new(config: DigestConfig) -> Self {
        let keyed = HmacSha256::new_from_slice(&config.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        let opaque = {
            let mut mac = keyed.clone();
            mac.update(b"opaque");
            hex::encode(&mac.finalize().into_bytes()[..8])
        };
        Authenticator {
            config,
            opaque,
            keyed,
            used: DashMap::new(),
            order: Mutex::new(UsedOrder::default()),
        }
    }

    pub fn config(&self) -> &DigestConfig {
        &self.config
    }

    /// Header values for `WWW-Authenticate` / `Proxy-Authenticate` to a request from
    /// `source`: one per configured algorithm, each with its own fresh nonce, `qop="auth"`
    /// and the opaque value, plus `stale=true` when `stale`.
    pub fn challenge(&self, now: SystemTime, source: IpAddr, stale: bool) -> Vec<String> {
        self.config
            .algorithms
            .iter()
            .map(|alg| {
                let nonce = self.issue_nonce(now, source);
                let mut v = format!(
                    "Digest realm={}, nonce=\"{nonce}\", qop=\"auth\", algorithm={}, opaque=\"{}\"",
                    quote(&self.config.realm),
                    alg.name(),
                    self.opaque
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Verifies an `Authorization` / `Proxy-Authorization` value for a request with this
    /// method from `source`. `password_of` returns the password for a username, or `None`.
    ///
    /// Checks run cheapest-first, except that stale and replayed nonces are reported only
    /// after the response has been verified (so `stale=true` is never given to someone who
    /// does not know the password).
    pub fn verify(
        &self,
        now: SystemTime,
        source: IpAddr,
        method: &str,
        header_value: &str,
        password_of: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Verified, AuthError> {
        let creds = Credentials::parse(header_value)?;
        if creds.realm != self.config.realm {
            return Err(AuthError::RealmMismatch);
        }
        let algorithm = match &creds.algorithm {
            None => DigestAlgorithm::Md5,
            Some(name) => {
                DigestAlgorithm::from_name(name).ok_or(AuthError::UnsupportedAlgorithm)?
            }
        };
        if !self.config.algorithms.contains(&algorithm) {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        if creds.userhash {
            return Err(AuthError::UnsupportedUserhash);
        }
        // Some((nc value, nc text, cnonce)) for qop=auth.
        let qop = match creds.qop.as_deref() {
            None if self.config.allow_no_qop && algorithm == DigestAlgorithm::Md5 => None,
            None => return Err(AuthError::UnsupportedQop),
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc_text = creds.nc.as_deref().ok_or(ParseError::MissingParam("nc"))?;
                let cnonce = creds
                    .cnonce
                    .as_deref()
                    .ok_or(ParseError::MissingParam("cnonce"))?;
                if cnonce.is_empty() {
                    return Err(ParseError::InvalidValue("cnonce").into());
                }
                Some((parse_nc(nc_text)?, nc_text, cnonce))
            }
            Some(_) => return Err(AuthError::UnsupportedQop),
        };
        // When the nonce (and opaque, if echoed) is one we issued to this source: its
        // issue time.
        let issued = self
            .nonce_issued(&creds.nonce, source)
            .filter(|_| creds.opaque.as_deref().is_none_or(|o| o == self.opaque));

        let params = |password: &'_ str| -> ([u8; MAX_HEX], usize) {
            let mut out = [0u8; MAX_HEX];
            let n = compute_response_into(
                &ResponseParams {
                    algorithm,
                    username: &creds.username,
                    realm: &creds.realm,
                    password,
                    method,
                    uri: &creds.uri,
                    nonce: &creds.nonce,
                    qop_auth: qop.map(|(_, nc, cnonce)| (nc, cnonce)),
                },
                &mut out,
            )
            .len();
            (out, n)
        };
        let Some(password) = password_of(&creds.username) else {
            // Spend the same hashing time as a real check so response timing does not
            // reveal which usernames exist.
            let _ = params("");
            return Err(match issued {
                Some(_) => AuthError::UnknownUser,
                None => AuthError::UnknownNonce,
            });
        };
        let (expected, len) = params(&password);
        // Constant time: the comparison's duration reveals at most the length, which is
        // fixed per algorithm. The response is lower-cased into a stack buffer of that
        // length (a longer or shorter one cannot match).
        let given = creds.response.as_bytes();
        let mut lower = [0u8; MAX_HEX];
        let matches = given.len() == len && {
            for (l, g) in lower.iter_mut().zip(given) {
                *l = g.to_ascii_lowercase();
            }
            bool::from(expected[..len].ct_eq(&lower[..len]))
        };
        if !matches {
            return Err(match issued {
                Some(_) => AuthError::WrongPassword,
                None => AuthError::UnknownNonce,
            });
        }
        // A correct digest for a nonce that is not (or no longer) usable: stale.
        let Some(issued) = issued else {
            return Err(AuthError::StaleNonce);
        };
        if unix_millis(now).saturating_sub(issued) >= lifetime_millis(&self.config) {
            return Err(AuthError::StaleNonce);
        }
        self.record_use(&creds.nonce, issued, qop.map(|(nc, _, _)| nc))?;
        Ok(Verified {
            username: creds.username.into_owned(),
            uri: creds.uri.into_owned(),
            algorithm,
        })
    }

    /// Accepts the use of a verified, live nonce if its nonce-count moves on.
    fn record_use(&self, nonce: &str, issued: u64, nc: Option<u32>) -> Result<(), AuthError> {
        let mut order = lock(&self.order);
        let known = self.used.get(nonce).map(|v| *v);
        if known.is_none() && order.forgotten_up_to.is_some_and(|t| issued <= t) {
            // Its earlier uses may have been forgotten by the cap: a replay cannot be ruled
            // out, so the client gets a new nonce.
            return Err(AuthError::StaleNonce);
        }
        let last = known.unwrap_or(0);
        let next = match nc {
            Some(nc) if nc > last => nc,
            None if last == 0 => u32::MAX,
            _ => return Err(AuthError::NonceCountReplay),
        };
        if known.is_none() {
            let cap = self.config.max_nonces.max(1);
            while order.queue.len() >= cap {
                match order.queue.pop_front() {
                    Some((t, old)) => {
                        self.used.remove(&old);
                        order.forgotten_up_to = Some(order.forgotten_up_to.map_or(t, |f| f.max(t)));
                    }
                    None => break,
                }
            }
            order.queue.push_back((issued, nonce.to_string()));
        }
        self.used.insert(nonce.to_string(), next);
        Ok(())
    }

    /// Forgets used nonces past their lifetime (they are stale anyway). Call periodically.
    pub fn purge(&self, now: SystemTime) {
        let now_ms = unix_millis(now);
        let lifetime = lifetime_millis(&self.config);
        let mut order = lock(&self.order);
        while let Some((issued, _)) = order.queue.front() {
            if now_ms.saturating_sub(*issued) < lifetime {
                break;
            }
            if let Some((_, nonce)) = order.queue.pop_front() {
                self.used.remove(&nonce);
            }
        }
    }

    /// How many used nonces are remembered (for metrics and tests).
    pub fn outstanding_nonces(&self) -> usize {
        self.used.len()
    }

    fn tag(&self, head: &[u8], source: IpAddr) -> [u8; 16] {
        let mut mac = self.keyed.clone();
        mac.update(head);
        match source {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        tag
    }

    fn issue_nonce(&self, now: SystemTime, source: IpAddr) -> String {
        let mut raw = [0u8; NONCE_BYTES];
        raw[..8].copy_from_slice(&unix_millis(now).to_be_bytes());
        rand::fill(&mut raw[8..16]);
        let tag = self.tag(&raw[..16], source);
        raw[16..].copy_from_slice(&tag);
        hex::encode(raw)
    }

    /// The issue time of a nonce we issued to `source`, or `None`.
    fn nonce_issued(&self, nonce: &str, source: IpAddr) -> Option<u64> {
        if nonce.len() != 2 * NONCE_BYTES {
            return None;
        }
        let mut raw = [0u8; NONCE_BYTES];
        hex::decode_to_slice(nonce, &mut raw).ok()?;
        let tag = self.tag(&raw[..16], source);
        if !bool::from(tag.ct_eq(&raw[16..])) {
            return None;
        }
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&raw[..8]);
        Some(u64::from_be_bytes(secs))
    }
}

fn lifetime_millis(config: &DigestConfig) -> u64 {
    u64::try_from(config.nonce_lifetime.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (0 before it: a clock that far off makes every nonce
/// stale, which is safe).
fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A parsed challenge (`WWW-Authenticate` / `Proxy-Authenticate` value), for the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// The server offered `qop=auth`; when false the answer is RFC 2069 style.
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    /// Parses a challenge. Fails with [`AuthError::UnsupportedAlgorithm`] for unknown
    /// algorithms and [`AuthError::UnsupportedQop`] when qop is offered but not `auth`.
    pub fn parse(header_value: &str) -> Result<Self, AuthError> {
        let params = parse_params(header_value)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_ref())
        };
        let realm = get("realm").ok_or(ParseError::MissingParam("realm"))?;
        let nonce = get("nonce").ok_or(ParseError::MissingParam("nonce"))?;
        let algorithm = match get("algorithm") {
            None => DigestAlgorithm::Md5,
            Some(a) => DigestAlgorithm::from_name(a).ok_or(AuthError::UnsupportedAlgorithm)?,
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(list) => {
                if !list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                {
                    return Err(AuthError::UnsupportedQop);
                }
                true
            }
        };
        if !qop_auth && algorithm.is_session() {
            return Err(AuthError::UnsupportedQop);
        }
        Ok(Challenge {
            realm: realm.to_string(),
            nonce: nonce.to_string(),
            opaque: get("opaque").map(str::to_string),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Builds the `Authorization` / `Proxy-Authorization` value answering this challenge.
    /// `nc` is the caller's count of requests made with this nonce (starting at 1); `cnonce`
    /// should be fresh random text (see [`new_cnonce`]).
    pub fn authorization(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let nc_text = format!("{nc:08x}");
        let qop_auth = self.qop_auth.then_some((nc_text.as_str(), cnonce));
        let response = compute_response(&ResponseParams {
            algorithm: self.algorithm,
            username,
            realm: &self.realm,
            password,
            method,
            uri,
            nonce: &self.nonce,
            qop_auth,
        });
        let mut v = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            self.algorithm.name()
        );
        if let Some((nc, cnonce)) = qop_auth {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce={}", quote(cnonce)));
        }
        if let Some(opaque) = &self.opaque {
            v.push_str(&format!(", opaque={}", quote(opaque)));
        }
        v
    }
}

/// A fresh random cnonce for [`Challenge::authorization`].
pub fn new_cnonce() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The parameters of a credentials value that we use, borrowed from the header value
/// (owned only when a quoted value had escapes or `username*` was decoded).
#[derive(Debug, Default)]
struct Credentials<'a> {
    username: Cow<'a, str>,
    realm: Cow<'a, str>,
    nonce: Cow<'a, str>,
    uri: Cow<'a, str>,
    response: Cow<'a, str>,
    algorithm: Option<Cow<'a, str>>,
    cnonce: Option<Cow<'a, str>>,
    opaque: Option<Cow<'a, str>>,
    qop: Option<Cow<'a, str>>,
    nc: Option<Cow<'a, str>>,
    userhash: bool,
}

impl<'a> Credentials<'a> {
    fn parse(header_value: &'a str) -> Result<Self, ParseError> {
        let mut c = Credentials::default();
        let mut username = None;
        let mut username_ext = None;
        let (mut realm, mut nonce, mut uri, mut response) = (None, None, None, None);
        for (name, value) in parse_params(header_value)? {
            match name.as_ref() {
                "username" => username = Some(value),
                "username*" => username_ext = Some(value),
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "uri" => uri = Some(value),
                "response" => response = Some(value),
                "algorithm" => c.algorithm = Some(value),
                "cnonce" => c.cnonce = Some(value),
                "opaque" => c.opaque = Some(value),
                "qop" => c.qop = Some(value),
                "nc" => c.nc = Some(value),
                "userhash" => c.userhash = value.eq_ignore_ascii_case("true"),
                // Unknown parameters are ignored, as RFC 7616 requires.
                _ => {}
            }
        }
        c.username = match (username, username_ext) {
            (Some(u), None) => u,
            (None, Some(ext)) => {
                Cow::Owned(decode_ext_value(&ext).ok_or(ParseError::InvalidValue("username*"))?)
            }
            // RFC 7616 §3.4: username and username* must not both be present.
            (Some(_), Some(_)) => return Err(ParseError::DuplicateParam("username".into())),
            (None, None) => return Err(ParseError::MissingParam("username")),
        };
        if c.username.is_empty() {
            return Err(ParseError::InvalidValue("username"));
        }
        c.realm = realm.ok_or(ParseError::MissingParam("realm"))?;
        c.nonce = nonce.ok_or(ParseError::MissingParam("nonce"))?;
        c.uri = uri.ok_or(ParseError::MissingParam("uri"))?;
        if c.uri.is_empty() {
            return Err(ParseError::InvalidValue("uri"));
        }
        c.response = response.ok_or(ParseError::MissingParam("response"))?;
        Ok(c)
    }
}

/// Parses `Digest` followed by a comma-separated list of `name=value` pairs (RFC 7235
/// auth-param syntax, which SIP shares). Names are lower-cased; values are token or
/// quoted-string, returned unquoted and unescaped.
///
/// Leniencies, each seen from real clients: empty list elements (`a=1,,b=2`) are skipped;
/// unquoted values may contain any visible ASCII except `,` and `"` (some phones send
/// `uri=sip:...` unquoted); whitespace includes CR/LF (folded header lines).
/// Names and values are borrowed from `input` unless a name has upper case or a quoted
/// value has escapes.
#[allow(clippy::type_complexity)]
fn parse_params(input: &str) -> Result<Vec<(Cow<'_, str>, Cow<'_, str>)>, ParseError> {
    if input.len() > MAX_HEADER_LEN {
        return Err(ParseError::TooLong);
    }
    let mut p = Cursor { s: input, pos: 0 };
    p.skip_ws();
    let scheme = p.take_while(is_tchar);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(ParseError::NotDigest);
    }
    // The scheme must be followed by whitespace (or nothing, which then fails below).
    if !p.at_end() && !p.peek().is_some_and(is_ws) {
        return Err(ParseError::NotDigest);
    }
    let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(12);
    loop {
        // Skip whitespace and empty list elements.
        while p.peek().is_some_and(|c| is_ws(c) || c == ',') {
            p.bump();
        }
        if p.at_end() {
            break;
        }
        let name_start = p.pos;
        let name = p.take_while(is_tchar);
        if name.is_empty() {
            return Err(ParseError::UnexpectedChar(name_start));
        }
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        p.skip_ws();
        if p.peek() != Some('=') {
            return Err(ParseError::MissingValue(p.pos));
        }
        p.bump();
        p.skip_ws();
        let value = match p.peek() {
            Some('"') => {
                p.bump();
                p.quoted_rest()?
            }
            _ => {
                let v = p.take_while(|c| c.is_ascii_graphic() && c != ',' && c != '"');
                if v.is_empty() {
                    return Err(ParseError::MissingValue(p.pos));
                }
                Cow::Borrowed(v)
            }
        };
        p.skip_ws();
        match p.peek() {
            None | Some(',') => {}
            Some(_) => return Err(ParseError::UnexpectedChar(p.pos)),
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(ParseError::DuplicateParam(name.into_owned()));
        }
        if params.len() >= MAX_PARAMS {
            return Err(ParseError::TooManyParams);
        }
        params.push((name, value));
    }
    if params.is_empty() {
        return Err(ParseError::NoParams);
    }
    Ok(params)
}

/// A position in a `&str`; always on a char boundary.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos..).and_then(|r| r.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// The rest of a quoted-string whose opening quote has been consumed. A backslash
    /// escapes the next character (RFC 3261 quoted-pair); control characters other than
    /// tab are rejected (RFC 3261 qdtext).
    fn quoted_rest(&mut self) -> Result<Cow<'a, str>, ParseError> {
        // Borrowed while no escape has been seen (the usual case).
        let start = self.pos;
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(ParseError::UnterminatedQuote),
                Some('"') => return Ok(Cow::Borrowed(self.s.get(start..at).unwrap_or(""))),
                Some('\\') => {
                    self.pos = at;
                    break;
                }
                Some(c) if c.is_control() && !is_ws(c) => {
                    return Err(ParseError::UnexpectedChar(at));
                }
                Some(_) => {}
            }
        }
        let mut out = String::from(self.s.get(start..self.pos).unwrap_or(""));
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(ParseError::UnterminatedQuote),
                Some('"') => return Ok(Cow::Owned(out)),
                Some('\\') => match self.bump() {
                    None => return Err(ParseError::UnterminatedQuote),
                    Some(c) if c.is_control() && c != '\t' => {
                        return Err(ParseError::UnexpectedChar(at + 1));
                    }
                    Some(c) => out.push(c),
                },
                Some(c) if c.is_control() && !is_ws(c) => {
                    return Err(ParseError::UnexpectedChar(at));
                }
                Some(c) => out.push(c),
            }
        }
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// RFC 7230 tchar (SIP's token additionally allows nothing we need here).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Quotes a value as a quoted-string, escaping `"` and `\`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Parses `nc`: RFC 7616 requires exactly 8 hex digits; we accept 1–8 because the value is
/// hashed as sent anyway and some clients drop leading zeros.
fn parse_nc(s: &str) -> Result<u32, ParseError> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::InvalidValue("nc"));
    }
    u32::from_str_radix(s, 16).map_err(|_| ParseError::InvalidValue("nc"))
}

/// Decodes an RFC 8187 ext-value (`UTF-8'lang'pct%20encoded`), as used by `username*`.
/// Only the UTF-8 charset is accepted (RFC 8187 requires support for it; ISO-8859-1 is
/// obsolete for this purpose).
fn decode_ext_value(s: &str) -> Option<String> {
    let mut parts = s.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("UTF-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Locks a mutex, recovering from poisoning: the guarded data (a queue of used nonces) stays
/// consistent even if a holder panicked, and a poisoned lock must not take auth down.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

    /// A fixed wall-clock time (nonces carry seconds since the epoch).
    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616_params(algorithm: DigestAlgorithm) -> ResponseParams<'static> {
        ResponseParams {
            algorithm,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: NONCE,
            qop_auth: Some(("00000001", CNONCE)),
        }
    }

    #[test]
    fn rfc7616_md5_vector() {
        assert_eq!(
            compute_response(&rfc7616_params(DigestAlgorithm::Md5)),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc7616_sha256_vector() {
        assert_eq!(
            compute_response(&rfc7616_params(DigestAlgorithm::Sha256)),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc7616_sha512_256_vector() {
        // RFC 7616 §3.9.2 (the response does not depend on userhash). The RFC prints
        // "ae66e67d…", computed with SHA-512 truncated to 256 bits instead of the real
        // SHA-512/256 (different initial values); the RFC errata give the FIPS 180-4 value
        // below, which is what sha2::Sha512_256 and RFC 8760 implementations produce.
        let p = ResponseParams {
            algorithm: DigestAlgorithm::Sha512_256,
            username: "J\u{e4}s\u{f8}n Doe",
            realm: "api@example.org",
            password: "Secret, or not?",
            method: "GET",
            uri: "/doe.json",
            nonce: "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
            qop_auth: Some(("00000001", "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v")),
        };
        assert_eq!(
            compute_response(&p),
            "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
        );
    }

    #[test]
    fn rfc2617_no_qop_and_sess_shapes() {
        // RFC 2069 form: H(HA1:nonce:HA2), checked against an independent computation.
        let mut p = rfc7616_params(DigestAlgorithm::Md5);
        p.qop_auth = None;
        let ha1 = hex::encode(Md5::digest("Mufasa:http-auth@example.org:Circle of Life"));
        let ha2 = hex::encode(Md5::digest("GET:/dir/index.html"));
        let want = hex::encode(Md5::digest(format!("{ha1}:{NONCE}:{ha2}")));
        assert_eq!(compute_response(&p), want);

        // -sess: HA1 = H(H(user:realm:pass):nonce:cnonce).
        let p = rfc7616_params(DigestAlgorithm::Md5Sess);
        let sess = hex::encode(Md5::digest(format!("{ha1}:{NONCE}:{CNONCE}")));
        let want = hex::encode(Md5::digest(format!(
            "{sess}:{NONCE}:00000001:{CNONCE}:auth:{ha2}"
        )));
        assert_eq!(compute_response(&p), want);
    }

    fn passwords(user: &str) -> Option<String> {
        match user {
            "1001" => Some("s3cret".into()),
            "J\u{e4}s\u{f8}n" => Some("pw".into()),
            _ => None,
        }
    }

    fn auth() -> Authenticator {
        Authenticator::new(DigestConfig::new("siphon.example"))
    }

    /// Challenges, picks the challenge for `alg`, and answers it.
    fn answer(
        a: &Authenticator,
        now: SystemTime,
        alg: DigestAlgorithm,
        user: &str,
        pass: &str,
        nc: u32,
    ) -> (Challenge, String) {
        let ch = a
            .challenge(now, SRC, false)
            .iter()
            .map(|v| Challenge::parse(v).unwrap())
            .find(|c| c.algorithm == alg)
            .unwrap();
        let h = ch.authorization(user, pass, "REGISTER", "sip:siphon.example", nc, "abc123");
        (ch, h)
    }

    #[test]
    fn challenge_shape() {
        let a = auth();
        let now = t0();
        let chs = a.challenge(now, SRC, false);
        assert_eq!(chs.len(), 2);
        assert!(chs[0].starts_with("Digest realm=\"siphon.example\", nonce=\""));
        assert!(chs[0].contains("algorithm=SHA-256"));
        assert!(chs[1].contains("algorithm=MD5"));
        for c in &chs {
            assert!(c.contains("qop=\"auth\""));
            assert!(c.contains("opaque=\""));
            assert!(!c.contains("stale"));
        }
        let parsed: Vec<Challenge> = chs.iter().map(|c| Challenge::parse(c).unwrap()).collect();
        assert_ne!(parsed[0].nonce, parsed[1].nonce);
        assert_eq!(parsed[0].opaque, parsed[1].opaque);
        assert!(parsed[0].qop_auth);
        // Issuing stores nothing: a flood of challenges costs no memory.
        assert_eq!(a.outstanding_nonces(), 0);

        let stale = a.challenge(now, SRC, true);
        assert!(stale.iter().all(|c| c.ends_with(", stale=true")));
        assert!(Challenge::parse(&stale[0]).unwrap().stale);
    }

    #[test]
    fn realm_with_quotes_is_escaped() {
        let a = Authenticator::new(DigestConfig::new(r#"we "quote" \ here"#));
        let ch = Challenge::parse(&a.challenge(t0(), SRC, false)[0]).unwrap();
        assert_eq!(ch.realm, r#"we "quote" \ here"#);
        let h = ch.authorization("1001", "s3cret", "INVITE", "sip:x@y", 1, "c");
        assert!(a.verify(t0(), SRC, "INVITE", &h, &passwords).is_ok());
    }

    #[test]
    fn round_trip_all_algorithms() {
        use DigestAlgorithm::*;
        let mut cfg = DigestConfig::new("siphon.example");
        cfg.algorithms = vec![Sha256, Md5, Md5Sess, Sha256Sess, Sha512_256, Sha512_256Sess];
        let a = Authenticator::new(cfg);
        let now = t0();
        for alg in [Sha256, Md5, Md5Sess, Sha256Sess, Sha512_256, Sha512_256Sess] {
            let (_, h) = answer(&a, now, alg, "1001", "s3cret", 1);
            let v = a.verify(now, SRC, "REGISTER", &h, &passwords).unwrap();
            assert_eq!(v.username, "1001");
            assert_eq!(v.uri, "sip:siphon.example");
            assert_eq!(v.algorithm, alg);
        }
    }

    #[test]
    fn nonce_reuse_with_increasing_nc() {
        let a = auth();
        let now = t0();
        let (ch, h1) = answer(&a, now, DigestAlgorithm::Sha256, "1001", "s3cret", 1);
        assert!(a.verify(now, SRC, "REGISTER", &h1, &passwords).is_ok());
        let h2 = ch.authorization("1001", "s3cret", "INVITE", "sip:2000@x", 2, "zz");
        assert!(a.verify(now, SRC, "INVITE", &h2, &passwords).is_ok());
        // Replays: same nc, lower nc.
        assert_eq!(
            a.verify(now, SRC, "INVITE", &h2, &passwords),
            Err(AuthError::NonceCountReplay)
        );
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h1, &passwords),
            Err(AuthError::NonceCountReplay)
        );
        assert!(AuthError::NonceCountReplay.is_stale());
        // A gap is fine.
        let h9 = ch.authorization("1001", "s3cret", "INVITE", "sip:2000@x", 9, "zz");
        assert!(a.verify(now, SRC, "INVITE", &h9, &passwords).is_ok());
    }

    #[test]
    fn failed_attempts_do_not_advance_nc() {
        let a = auth();
        let now = t0();
        let (ch, _) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        let bad = ch.authorization("1001", "wrong", "REGISTER", "sip:r", 50, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &bad, &passwords),
            Err(AuthError::WrongPassword)
        );
        let good = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 2, "c");
        assert!(a.verify(now, SRC, "REGISTER", &good, &passwords).is_ok());
    }

    #[test]
    fn wrong_method_fails() {
        let a = auth();
        let now = t0();
        let (_, h) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        assert_eq!(
            a.verify(now, SRC, "INVITE", &h, &passwords),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn wrong_password_and_unknown_user() {
        let a = auth();
        let now = t0();
        let (_, h) = answer(&a, now, DigestAlgorithm::Sha256, "1001", "nope", 1);
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::WrongPassword)
        );
        let (_, h) = answer(&a, now, DigestAlgorithm::Sha256, "9999", "x", 1);
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnknownUser)
        );
    }

    #[test]
    fn stale_nonce_after_lifetime() {
        let a = auth();
        let t0 = t0();
        let (_, h) = answer(&a, t0, DigestAlgorithm::Sha256, "1001", "s3cret", 1);
        let later = t0 + Duration::from_secs(301);
        let err = a
            .verify(later, SRC, "REGISTER", &h, &passwords)
            .unwrap_err();
        assert_eq!(err, AuthError::StaleNonce);
        assert!(err.is_stale() && !err.counts_as_failure());
        // Stale is only reported to someone who knows the password.
        let (ch, _) = answer(&a, t0, DigestAlgorithm::Sha256, "1001", "s3cret", 1);
        let bad = ch.authorization("1001", "guess", "REGISTER", "sip:r", 1, "c");
        let err = a
            .verify(later, SRC, "REGISTER", &bad, &passwords)
            .unwrap_err();
        assert_eq!(err, AuthError::WrongPassword);
        assert!(err.counts_as_failure());
        // Long after, with nothing remembered, it is still recognised as ours, and stale.
        a.purge(t0 + Duration::from_secs(10_000));
        assert_eq!(
            a.verify(
                t0 + Duration::from_secs(10_000),
                SRC,
                "REGISTER",
                &h,
                &passwords
            ),
            Err(AuthError::StaleNonce)
        );
    }

    #[test]
    fn purge_forgets_used_nonces_past_their_lifetime() {
        let a = auth();
        let t0 = t0();
        let (_, old) = answer(&a, t0, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        assert!(a.verify(t0, SRC, "REGISTER", &old, &passwords).is_ok());
        let young_t = t0 + Duration::from_secs(500);
        let (ch, young) = answer(&a, young_t, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        assert!(
            a.verify(young_t, SRC, "REGISTER", &young, &passwords)
                .is_ok()
        );
        assert_eq!(a.outstanding_nonces(), 2);
        a.purge(t0 + Duration::from_secs(700));
        assert_eq!(a.outstanding_nonces(), 1);
        // The young one still counts: a replay is refused, the next nc accepted.
        let t = t0 + Duration::from_secs(700);
        assert_eq!(
            a.verify(t, SRC, "REGISTER", &young, &passwords),
            Err(AuthError::NonceCountReplay)
        );
        let next = ch.authorization(
            "1001",
            "s3cret",
            "REGISTER",
            "sip:siphon.example",
            2,
            "abc123",
        );
        assert!(a.verify(t, SRC, "REGISTER", &next, &passwords).is_ok());
    }

    /// Nonces of a restarted server: the same secret recognises them, a new one does not,
    /// and a phone with the right password is never counted as failing.
    #[test]
    fn nonces_survive_a_restart_with_the_same_secret() {
        let cfg = DigestConfig::new("siphon.example");
        let before = Authenticator::new(cfg.clone());
        let now = t0();
        let (_, h) = answer(&before, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        let after = Authenticator::new(cfg);
        assert!(after.verify(now, SRC, "REGISTER", &h, &passwords).is_ok());
        // A new secret: the cached credentials get stale=true, not a failure.
        let other = auth();
        let err = other
            .verify(now, SRC, "REGISTER", &h, &passwords)
            .unwrap_err();
        assert_eq!(err, AuthError::StaleNonce);
        assert!(err.is_stale() && !err.counts_as_failure());
    }

    /// A nonce is bound to the address it was sent to: a wrong digest from another source
    /// (someone forging a victim's address never sees the victim's challenges) is not a
    /// failure to count; a right one is stale (a phone whose NAT address changed).
    #[test]
    fn nonces_are_bound_to_the_source() {
        let a = auth();
        let now = t0();
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
        let (ch, good) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        let bad = ch.authorization("1001", "guess", "REGISTER", "sip:r", 1, "c");
        let err = a
            .verify(now, elsewhere, "REGISTER", &bad, &passwords)
            .unwrap_err();
        assert_eq!(err, AuthError::UnknownNonce);
        assert!(!err.counts_as_failure() && !err.is_stale());
        let err = a
            .verify(now, elsewhere, "REGISTER", &good, &passwords)
            .unwrap_err();
        assert_eq!(err, AuthError::StaleNonce);
        // From the address it was issued to, the wrong digest counts.
        let err = a
            .verify(now, SRC, "REGISTER", &bad, &passwords)
            .unwrap_err();
        assert!(err.counts_as_failure());
    }

    #[test]
    fn unknown_nonce() {
        let a = auth();
        let now = t0();
        let (mut ch, _) = answer(&a, now, DigestAlgorithm::Sha256, "1001", "s3cret", 1);
        ch.nonce = "not-one-of-ours".into();
        // A valid digest for a nonce that is not ours: stale (RFC 7616 §3.3).
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::StaleNonce)
        );
        // A wrong one, or an unknown user: unknown, never a counted failure.
        let h = ch.authorization("1001", "guess", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnknownNonce)
        );
        let h = ch.authorization("nobody", "guess", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnknownNonce)
        );
    }

    #[test]
    fn bad_realm_algorithm_qop_opaque() {
        let a = auth();
        let now = t0();
        let (ch, _) = answer(&a, now, DigestAlgorithm::Sha256, "1001", "s3cret", 1);

        let mut other = ch.clone();
        other.realm = "elsewhere".into();
        let h = other.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::RealmMismatch)
        );

        // Algorithms not configured are refused even if well-formed.
        let mut other = ch.clone();
        other.algorithm = DigestAlgorithm::Sha512_256;
        let h = other.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnsupportedAlgorithm)
        );
        let h = h.replace("algorithm=SHA-512-256", "algorithm=ROT13");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnsupportedAlgorithm)
        );

        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        let int = h.replace("qop=auth", "qop=auth-int");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &int, &passwords),
            Err(AuthError::UnsupportedQop)
        );

        // Another server's opaque: not our challenge, so a right digest is stale.
        let mut other = ch.clone();
        other.opaque = Some("someone-else".into());
        let h = other.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::StaleNonce)
        );

        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        let uh = format!("{h}, userhash=true");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &uh, &passwords),
            Err(AuthError::UnsupportedUserhash)
        );
    }

    #[test]
    fn missing_opaque_is_tolerated() {
        let a = auth();
        let now = t0();
        let (mut ch, _) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        ch.opaque = None;
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert!(a.verify(now, SRC, "REGISTER", &h, &passwords).is_ok());
    }

    #[test]
    fn rfc2069_no_qop_is_single_use_md5_only() {
        let a = auth();
        let now = t0();
        let (mut ch, _) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        ch.qop_auth = false;
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert!(!h.contains("qop"));
        assert!(a.verify(now, SRC, "REGISTER", &h, &passwords).is_ok());
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::NonceCountReplay)
        );
        // A consumed nonce cannot be revived with qop either.
        ch.qop_auth = true;
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::NonceCountReplay)
        );

        // SHA-256 requires qop.
        let (mut ch, _) = answer(&a, now, DigestAlgorithm::Sha256, "1001", "s3cret", 1);
        ch.qop_auth = false;
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnsupportedQop)
        );

        // And it can be switched off.
        let mut cfg = DigestConfig::new("siphon.example");
        cfg.allow_no_qop = false;
        let a = Authenticator::new(cfg);
        let (mut ch, _) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        ch.qop_auth = false;
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords),
            Err(AuthError::UnsupportedQop)
        );
    }

    #[test]
    fn used_nonce_cap_makes_older_nonces_stale() {
        let mut cfg = DigestConfig::new("siphon.example");
        cfg.max_nonces = 10;
        cfg.algorithms = vec![DigestAlgorithm::Md5];
        let a = Authenticator::new(cfg);
        let now = t0();
        let (_, first) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        assert!(a.verify(now, SRC, "REGISTER", &first, &passwords).is_ok());
        for _ in 0..1000 {
            a.challenge(now, SRC, false);
        }
        assert_eq!(a.outstanding_nonces(), 1);
        let mut later = now;
        for _ in 0..20 {
            later += Duration::from_millis(1);
            let (_, h) = answer(&a, later, DigestAlgorithm::Md5, "1001", "s3cret", 1);
            assert!(a.verify(later, SRC, "REGISTER", &h, &passwords).is_ok());
        }
        assert_eq!(a.outstanding_nonces(), 10);
        assert_eq!(lock(&a.order).queue.len(), 10);
        // The first nonce's use was forgotten: replaying it is refused as stale.
        assert_eq!(
            a.verify(later, SRC, "REGISTER", &first, &passwords),
            Err(AuthError::StaleNonce)
        );
        let fresh_t = later + Duration::from_secs(1);
        let (_, fresh) = answer(&a, fresh_t, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        assert!(
            a.verify(fresh_t, SRC, "REGISTER", &fresh, &passwords)
                .is_ok()
        );
    }

    #[test]
    fn tokenizer_handles_real_world_shapes() {
        let a = auth();
        let now = t0();
        let (ch, _) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        let resp = compute_response(&ResponseParams {
            algorithm: DigestAlgorithm::Md5,
            username: "1001",
            realm: "siphon.example",
            password: "s3cret",
            method: "REGISTER",
            uri: "sip:siphon.example",
            nonce: &ch.nonce,
            qop_auth: Some(("00000001", "a,b \"c\"")),
        });
        // Lower-case scheme and names, odd spacing, quoted qop and algorithm, a comma and
        // escaped quotes inside cnonce, an empty list element, upper-case hex response,
        // an unknown parameter, folded whitespace.
        let h = format!(
            "digest   USERNAME = \"1001\" ,realm=\"siphon.example\",,nonce=\"{}\",\r\n\turi=\"sip:siphon.example\", Response=\"{}\", ALGORITHM=\"md5\", qop=\"auth\", nc=00000001, cnonce=\"a,b \\\"c\\\"\", x-vendor=thing",
            ch.nonce,
            resp.to_ascii_uppercase()
        );
        assert!(a.verify(now, SRC, "REGISTER", &h, &passwords).is_ok());
    }

    #[test]
    fn username_star_extended_notation() {
        let a = auth();
        let now = t0();
        let (ch, _) = answer(&a, now, DigestAlgorithm::Sha256, "J\u{e4}s\u{f8}n", "pw", 1);
        let h = ch.authorization("J\u{e4}s\u{f8}n", "pw", "REGISTER", "sip:r", 1, "c");
        let h = h.replace(
            "username=\"J\u{e4}s\u{f8}n\"",
            "username*=UTF-8''J%C3%A4s%C3%B8n",
        );
        assert!(h.contains("username*="));
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h, &passwords)
                .unwrap()
                .username,
            "J\u{e4}s\u{f8}n"
        );
        assert_eq!(
            decode_ext_value("UTF-8'en'%E2%82%AC%20rates"),
            Some("\u{20ac} rates".into())
        );
        assert_eq!(decode_ext_value("ISO-8859-1''x"), None);
        assert_eq!(decode_ext_value("UTF-8''%C3"), None);
        assert_eq!(decode_ext_value("UTF-8''%G1"), None);
        assert_eq!(decode_ext_value("UTF-8''%4"), None);
        assert_eq!(decode_ext_value("no-quotes"), None);
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        use ParseError::*;
        let a = auth();
        let now = t0();
        let ok = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"00\"";
        let cases: Vec<(String, ParseError)> = vec![
            ("".into(), NotDigest),
            ("Basic dXNlcjpwYXNz".into(), NotDigest),
            ("Digestusername=\"u\"".into(), NotDigest),
            ("Digest".into(), NoParams),
            ("Digest   ".into(), NoParams),
            ("Digest , ,".into(), NoParams),
            ("Digest username=\"unterminated".into(), UnterminatedQuote),
            (
                "Digest username=\"ends in backslash\\".into(),
                UnterminatedQuote,
            ),
            ("Digest username".into(), MissingValue(15)),
            ("Digest username=".into(), MissingValue(16)),
            ("Digest username=,".into(), MissingValue(16)),
            ("Digest =\"u\"".into(), UnexpectedChar(7)),
            (
                "Digest username=\"u\" realm=\"r\"".into(),
                UnexpectedChar(20),
            ),
            ("Digest username=\"u\"x".into(), UnexpectedChar(19)),
            ("Digest username=\"a\u{1}b\"".into(), UnexpectedChar(18)),
            (
                "Digest username=\"u\", USERNAME=\"v\"".into(),
                DuplicateParam("username".into()),
            ),
            (ok.replace("username=\"u\", ", ""), MissingParam("username")),
            (ok.replace("realm=\"r\", ", ""), MissingParam("realm")),
            (ok.replace("nonce=\"n\", ", ""), MissingParam("nonce")),
            (ok.replace("uri=\"sip:x\", ", ""), MissingParam("uri")),
            (
                ok.replace(", response=\"00\"", ""),
                MissingParam("response"),
            ),
            (ok.replace("uri=\"sip:x\"", "uri=\"\""), InvalidValue("uri")),
            (
                ok.replace("username=\"u\"", "username=\"\""),
                InvalidValue("username"),
            ),
            (
                format!("{ok}, username*=UTF-8''u"),
                DuplicateParam("username".into()),
            ),
            (
                ok.replace("username=\"u\"", "username*=latin1''u"),
                InvalidValue("username*"),
            ),
            ("x".repeat(MAX_HEADER_LEN + 1), TooLong),
            (
                format!(
                    "Digest {}",
                    (0..40)
                        .map(|i| format!("p{i}=1"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                TooManyParams,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(
                a.verify(now, SRC, "REGISTER", &h, &passwords),
                Err(AuthError::Malformed(want.clone())),
                "{h:?}"
            );
        }
    }

    #[test]
    fn bad_nc_and_cnonce() {
        let a = auth();
        let now = t0();
        let (ch, _) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
        let h = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 1, "c");
        for (from, to, want) in [
            ("nc=00000001", "nc=0000000g", ParseError::InvalidValue("nc")),
            (
                "nc=00000001",
                "nc=000000001",
                ParseError::InvalidValue("nc"),
            ),
            (", nc=00000001", "", ParseError::MissingParam("nc")),
            (
                "cnonce=\"c\"",
                "cnonce=\"\"",
                ParseError::InvalidValue("cnonce"),
            ),
            (", cnonce=\"c\"", "", ParseError::MissingParam("cnonce")),
        ] {
            let bad = h.replace(from, to);
            assert_ne!(bad, h);
            assert_eq!(
                a.verify(now, SRC, "REGISTER", &bad, &passwords),
                Err(AuthError::Malformed(want))
            );
        }
        // nc=0 can never be "greater than the last seen".
        let h0 = ch.authorization("1001", "s3cret", "REGISTER", "sip:r", 0, "c");
        assert_eq!(
            a.verify(now, SRC, "REGISTER", &h0, &passwords),
            Err(AuthError::NonceCountReplay)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let a = auth();
        let now = t0();
        let (_, good) = answer(&a, now, DigestAlgorithm::Sha256, "1001", "s3cret", 1);
        // Deterministic pseudo-random mutations of a valid header: truncations, byte
        // replacements with tricky characters, and pure noise.
        let tricky = [
            '"',
            '\\',
            ',',
            '=',
            ' ',
            '\u{0}',
            '\u{7f}',
            'é',
            '\u{1F600}',
            '\r',
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let chars: Vec<char> = good.chars().collect();
        for i in 0..=chars.len() {
            let t: String = chars[..i].iter().collect();
            let _ = a.verify(now, SRC, "REGISTER", &t, &passwords);
        }
        for _ in 0..5000 {
            let mut m = chars.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % m.len();
                m[at] = tricky[(next() as usize) % tricky.len()];
            }
            let s: String = m.into_iter().collect();
            let _ = a.verify(now, SRC, "REGISTER", &s, &passwords);
            let _ = Challenge::parse(&s);
        }
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let s: String = (0..len)
                .map(|_| char::from_u32((next() % 0x300) as u32).unwrap_or('?'))
                .collect();
            let _ = a.verify(now, SRC, "REGISTER", &format!("Digest {s}"), &passwords);
            let _ = Challenge::parse(&s);
        }
    }

    #[test]
    fn client_challenge_parsing() {
        let ch = Challenge::parse(
            "Digest realm=\"atlanta.example\", qop=\"auth-int,auth\", nonce=\"xyz\", algorithm=SHA-256, stale=TRUE",
        )
        .unwrap();
        assert_eq!(ch.realm, "atlanta.example");
        assert_eq!(ch.algorithm, DigestAlgorithm::Sha256);
        assert!(ch.qop_auth && ch.stale);
        assert_eq!(ch.opaque, None);
        // Defaults: MD5, no qop.
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert_eq!(ch.algorithm, DigestAlgorithm::Md5);
        assert!(!ch.qop_auth);
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(AuthError::UnsupportedQop)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1"),
            Err(AuthError::UnsupportedAlgorithm)
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\""),
            Err(AuthError::Malformed(ParseError::MissingParam("nonce")))
        );
    }

    #[test]
    fn algorithm_names() {
        for a in [
            DigestAlgorithm::Md5,
            DigestAlgorithm::Md5Sess,
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha256Sess,
            DigestAlgorithm::Sha512_256,
            DigestAlgorithm::Sha512_256Sess,
        ] {
            assert_eq!(DigestAlgorithm::from_name(a.name()), Some(a));
            assert_eq!(
                DigestAlgorithm::from_name(&a.to_string().to_lowercase()),
                Some(a)
            );
        }
        assert_eq!(DigestAlgorithm::from_name("SHA-1"), None);
    }

    #[test]
    fn constant_time_eq_basics() {
        let eq = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"ab"));
        assert!(eq(b"", b""));
    }

    #[test]
    fn authenticator_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Authenticator>();
    }

    #[test]
    fn concurrent_use() {
        let a = std::sync::Arc::new(auth());
        let now = t0();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let (_, h) = answer(&a, now, DigestAlgorithm::Md5, "1001", "s3cret", 1);
                        assert!(a.verify(now, SRC, "REGISTER", &h, &passwords).is_ok());
                        a.purge(now);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Each round used one of its two nonces; only used ones are remembered.
        assert_eq!(a.outstanding_nonces(), 4 * 50);
    }
}
