//! Registrar: applies REGISTER requests to a location store (RFC 3261 §10.3 steps 6–8).
//!
//! Authentication and the decision which address-of-record (AOR) a request may modify
//! (steps 1–5) belong to the server; [`Registrar::handle_register`] gets an authenticated
//! request plus the AOR and returns a [`RegisterOutcome`] the server turns into a response.
//!
//! # Decisions
//!
//! * **Contact parsing is done by hand** rather than with rsip's typed `Contact`: rsip keeps
//!   header values as raw strings (it does not split comma-separated lists nor know the
//!   compact form `m:`), and its typed parser rejects or mangles some legal forms (quoted
//!   display names containing commas or `<`, quoted parameter values such as
//!   `+sip.instance="<urn:uuid:…>"`). The hand parser splits on commas outside quotes and
//!   angle brackets and never panics; anything it does not understand is a 400.
//! * **Out-of-order requests** (same Call-ID, CSeq not higher than the stored one) get
//!   **500**: §10.3 step 7 says the update "MUST be aborted and the request fails", and the
//!   same section requires a 500 when any binding update fails. No Retry-After: the newer
//!   REGISTER has already been applied, there is nothing to retry.
//! * **Too many bindings** gets **403** "Too Many Registered Contacts": retrying cannot help
//!   until the UA removes some, and a 503 would make phones fail over to other servers as if
//!   this one were down. (Kamailio answers 503 here; the server can map differently via
//!   [`RegisterOutcome::status_code`].) The cap only rejects requests that add bindings:
//!   refreshing or removing is always possible, even above the cap.
//! * **423** is sent iff 0 < requested < min_expires and requested < 3600 (§10.3 step 7
//!   allows 423 only below one hour). Requests above max_expires are shortened to it.
//!   A malformed expiry value counts as 3600 (§10.2.1.1, §20.19).
//! * **URI matching** follows §19.1.4 for sip/sips URIs (case-insensitive scheme, host and
//!   parameter names/values; user part case-sensitive; port must match, absent ≠ 5060;
//!   transport/user/ttl/method/maddr must agree, other parameters only when present on both).
//!   Other schemes compare case-insensitively on the scheme and exactly on the rest.
//! * **Atomicity**: a request is applied entirely or not at all, and read-modify-write of an
//!   AOR is serialised by a lock stripe (the [`LocationStore`] trait has no compare-and-swap).
//!   Other writers of the store (an admin API) bypass that lock.
//! * The AOR string is used verbatim as the store key; the caller canonicalises it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rsip::Header;
use rsip::headers::UntypedHeader;

use crate::peer::Peer;

/// Most Contact entries accepted in one REGISTER; more is abuse, not a phone.
const MAX_CONTACTS_PER_REQUEST: usize = 64;
/// User-Agent values are truncated to this many bytes before being stored.
const MAX_USER_AGENT_LEN: usize = 256;
/// RFC 3261 §10.3 step 7: 423 is only allowed for intervals below one hour.
const ONE_HOUR: u32 = 3600;
/// RFC 3261 §10.2.1.1 / §20.19: a malformed expiry counts as 3600 seconds.
const MALFORMED_EXPIRES: u32 = 3600;
/// Number of lock stripes serialising updates per AOR.
const LOCK_STRIPES: usize = 64;

/// One contact address bound to an AOR.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact URI as written, without display name or header parameters, e.g.
    /// `sip:1001@192.0.2.1:5062;transport=udp`.
    pub contact: String,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from; used to reach phones behind NAT.
    pub source: Peer,
    pub q: Option<f32>,
    pub user_agent: Option<String>,
}

/// Where bindings live. Implementations must only return unexpired bindings.
pub trait LocationStore: Send + Sync {
    /// The AOR's unexpired bindings.
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding>;
    /// Replaces the AOR's list; an empty list removes the AOR.
    fn set_bindings(&self, aor: &str, bindings: Vec<Binding>);
    /// Drops expired bindings (and AORs left empty); returns how many bindings expired.
    fn purge_expired(&self, now: Instant) -> usize;
    /// Every AOR with its unexpired bindings, for the admin API.
    fn all(&self, now: Instant) -> Vec<(String, Vec<Binding>)>;
    /// Number of unexpired bindings.
    fn count(&self, now: Instant) -> usize;
}

/// In-memory [`LocationStore`].
#[derive(Debug, Default)]
pub struct MemoryLocationStore {
    map: DashMap<String, Vec<Binding>>,
}

impl MemoryLocationStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocationStore for MemoryLocationStore {
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.map
            .get(aor)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_bindings(&self, aor: &str, bindings: Vec<Binding>) {
        if bindings.is_empty() {
            self.map.remove(aor);
        } else {
            self.map.insert(aor.to_string(), bindings);
        }
    }

    fn purge_expired(&self, now: Instant) -> usize {
        let mut expired = 0;
        self.map.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            expired += before - list.len();
            !list.is_empty()
        });
        expired
    }

    fn all(&self, now: Instant) -> Vec<(String, Vec<Binding>)> {
        let mut out: Vec<(String, Vec<Binding>)> = self
            .map
            .iter()
            .map(|e| {
                let live = e
                    .value()
                    .iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect::<Vec<_>>();
                (e.key().clone(), live)
            })
            .filter(|(_, list)| !list.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn count(&self, now: Instant) -> usize {
        self.map
            .iter()
            .map(|e| e.value().iter().filter(|b| b.expires_at > now).count())
            .sum()
    }
}

/// Registrar policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shorter requested intervals get 423 with this Min-Expires. Default 60.
    pub min_expires: u32,
    /// Longer requested intervals are shortened to this. Default 3600.
    pub max_expires: u32,
    /// Used when neither the Contact nor the request gives an interval. Default 3600.
    pub default_expires: u32,
    /// Most bindings per AOR. Default 10.
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 10,
        }
    }
}

/// What to answer a REGISTER with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 200 OK: the AOR's current bindings, each with the expires to put in the Contact's
    /// expires param. Empty when nothing is bound (then the 200 has no Contact).
    Ok { contacts: Vec<(String, u32)> },
    /// 423 Interval Too Brief with Min-Expires.
    IntervalTooBrief { min_expires: u32 },
    /// 400 with this reason phrase.
    BadRequest(String),
    /// 500: same Call-ID as a stored binding with a CSeq not higher than the stored one
    /// (RFC 3261 §10.3 steps 6 and 7). Nothing was changed.
    OutOfOrder,
    /// 403: the request would take the AOR above `max_bindings_per_aor`. Nothing was changed.
    TooManyBindings,
}

impl RegisterOutcome {
    /// The response status code for this outcome.
    pub fn status_code(&self) -> u16 {
        match self {
            RegisterOutcome::Ok { .. } => 200,
            RegisterOutcome::IntervalTooBrief { .. } => 423,
            RegisterOutcome::BadRequest(_) => 400,
            RegisterOutcome::OutOfOrder => 500,
            RegisterOutcome::TooManyBindings => 403,
        }
    }

    /// The reason phrase for this outcome.
    pub fn reason_phrase(&self) -> &str {
        match self {
            RegisterOutcome::Ok { .. } => "OK",
            RegisterOutcome::IntervalTooBrief { .. } => "Interval Too Brief",
            RegisterOutcome::BadRequest(reason) => reason,
            RegisterOutcome::OutOfOrder => "Server Internal Error",
            RegisterOutcome::TooManyBindings => "Too Many Registered Contacts",
        }
    }
}

/// Applies REGISTER requests to a [`LocationStore`].
pub struct Registrar {
    config: RegistrarConfig,
    store: Arc<dyn LocationStore>,
    /// Serialises read-modify-write per AOR (by hash stripe), so two concurrent REGISTERs
    /// for one AOR cannot lose each other's updates. Striped rather than per-AOR so memory
    /// stays bounded.
    stripes: [Mutex<()>; LOCK_STRIPES],
}

impl Registrar {
    pub fn new(config: RegistrarConfig, store: Arc<dyn LocationStore>) -> Self {
        Registrar {
            config,
            store,
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// Applies an already-authenticated REGISTER for `aor` (RFC 3261 §10.3 steps 6–8).
    /// All-or-nothing: on any outcome other than `Ok` the store is unchanged.
    pub fn handle_register(
        &self,
        now: Instant,
        aor: &str,
        request: &rsip::Request,
        source: Peer,
    ) -> RegisterOutcome {
        match self.apply(now, aor, request, source) {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    /// The AOR's unexpired bindings, in registration order.
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<Binding> {
        self.store.bindings(aor, now)
    }

    /// Drops expired bindings; returns how many expired.
    pub fn purge_expired(&self, now: Instant) -> usize {
        self.store.purge_expired(now)
    }

    pub fn store(&self) -> &Arc<dyn LocationStore> {
        &self.store
    }

    fn apply(
        &self,
        now: Instant,
        aor: &str,
        request: &rsip::Request,
        source: Peer,
    ) -> Result<RegisterOutcome, RegisterOutcome> {
        let h = RegisterHeaders::collect(request)?;
        let call_id = h
            .call_id
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("Missing Call-ID"))?;
        let cseq = parse_cseq(h.cseq.ok_or_else(|| bad("Missing CSeq"))?)?;
        let header_expires = h.expires.map(parse_delta_seconds);

        let mut entries = Vec::new();
        for value in &h.contacts {
            let list = split_list(value).ok_or_else(|| bad("Invalid Contact"))?;
            if list.is_empty() {
                return Err(bad("Invalid Contact"));
            }
            for item in list {
                entries.push(parse_contact(item).ok_or_else(|| bad("Invalid Contact"))?);
                if entries.len() > MAX_CONTACTS_PER_REQUEST {
                    return Err(RegisterOutcome::TooManyBindings);
                }
            }
        }

        // §10.2.3: no Contact is a query; the bindings are left unchanged.
        if entries.is_empty() {
            return Ok(self.ok_with(now, &self.store.bindings(aor, now)));
        }

        let _guard = self.lock_aor(aor);
        let current = self.store.bindings(aor, now);

        // §10.3 step 6: '*' must be alone and come with Expires: 0.
        if entries.iter().any(|e| matches!(e, ContactEntry::Star)) {
            if entries.len() > 1 {
                return Err(bad("Contact * with other contacts"));
            }
            if header_expires != Some(0) {
                return Err(bad("Contact * requires Expires: 0"));
            }
            if current
                .iter()
                .any(|b| b.call_id == call_id && cseq <= b.cseq)
            {
                return Err(RegisterOutcome::OutOfOrder);
            }
            self.store.set_bindings(aor, Vec::new());
            return Ok(RegisterOutcome::Ok {
                contacts: Vec::new(),
            });
        }

        let user_agent = h
            .user_agent
            .map(|ua| truncate(ua.trim(), MAX_USER_AGENT_LEN));
        let before = current.len();
        let mut slots: Vec<Slot> = current
            .into_iter()
            .map(|binding| Slot {
                key: parse_uri(&binding.contact),
                binding,
                touched: false,
                removed: false,
            })
            .collect();

        for entry in entries {
            let ContactEntry::Addr(c) = entry else {
                continue;
            };
            let granted = self.grant(c.expires.or(header_expires))?;
            let existing = slots
                .iter_mut()
                .find(|s| !s.removed && s.key.as_ref().is_some_and(|k| equivalent(k, &c.key)));
            match existing {
                Some(slot) => {
                    // A binding already updated by an earlier Contact of this same request
                    // carries this request's CSeq; comparing again would reject the request
                    // against itself.
                    if !slot.touched && slot.binding.call_id == call_id && cseq <= slot.binding.cseq
                    {
                        return Err(RegisterOutcome::OutOfOrder);
                    }
                    slot.touched = true;
                    if granted == 0 {
                        slot.removed = true;
                    } else {
                        slot.binding = Binding {
                            contact: c.uri,
                            expires_at: expiry(now, granted)?,
                            call_id: call_id.to_string(),
                            cseq,
                            source,
                            q: c.q,
                            user_agent: user_agent.clone(),
                        };
                        slot.key = Some(c.key);
                    }
                }
                None if granted > 0 => slots.push(Slot {
                    binding: Binding {
                        contact: c.uri,
                        expires_at: expiry(now, granted)?,
                        call_id: call_id.to_string(),
                        cseq,
                        source,
                        q: c.q,
                        user_agent: user_agent.clone(),
                    },
                    key: Some(c.key),
                    touched: true,
                    removed: false,
                }),
                // Removing a contact that is not bound is a no-op.
                None => {}
            }
        }

        let updated: Vec<Binding> = slots
            .into_iter()
            .filter(|s| !s.removed)
            .map(|s| s.binding)
            .collect();
        if updated.len() > self.config.max_bindings_per_aor && updated.len() > before {
            return Err(RegisterOutcome::TooManyBindings);
        }
        let outcome = self.ok_with(now, &updated);
        self.store.set_bindings(aor, updated);
        Ok(outcome)
    }

    /// The interval granted for a requested one (`None` = nothing requested).
    fn grant(&self, requested: Option<u32>) -> Result<u32, RegisterOutcome> {
        let cfg = &self.config;
        match requested {
            // The default is operator-chosen; keep it inside the operator's own bounds
            // instead of answering 423 to a request that asked for nothing.
            None => Ok(cfg
                .default_expires
                .max(cfg.min_expires)
                .min(cfg.max_expires)),
            Some(0) => Ok(0),
            Some(e) if e < cfg.min_expires && e < ONE_HOUR => {
                Err(RegisterOutcome::IntervalTooBrief {
                    min_expires: cfg.min_expires,
                })
            }
            Some(e) => Ok(e.min(cfg.max_expires)),
        }
    }

    fn ok_with(&self, now: Instant, bindings: &[Binding]) -> RegisterOutcome {
        RegisterOutcome::Ok {
            contacts: bindings
                .iter()
                .filter(|b| b.expires_at > now)
                .map(|b| (b.contact.clone(), remaining_secs(now, b.expires_at)))
                .collect(),
        }
    }

    fn lock_aor(&self, aor: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        aor.hash(&mut hasher);
        // In bounds by construction: the array has LOCK_STRIPES entries.
        let stripe = &self.stripes[(hasher.finish() % LOCK_STRIPES as u64) as usize];
        // The guarded data is `()`, so a poisoned lock carries no broken state.
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A binding being worked on during one request.
struct Slot {
    binding: Binding,
    /// Parsed contact URI; `None` if a stored contact does not parse (written by someone
    /// else), in which case it never matches and is left alone.
    key: Option<UriKey>,
    /// Already updated by this request.
    touched: bool,
    removed: bool,
}

fn bad(reason: &str) -> RegisterOutcome {
    RegisterOutcome::BadRequest(reason.to_string())
}

fn expiry(now: Instant, secs: u32) -> Result<Instant, RegisterOutcome> {
    now.checked_add(Duration::from_secs(u64::from(secs)))
        .ok_or_else(|| bad("Invalid Expires"))
}

/// Seconds left, rounded up so a live binding never shows `expires=0` (which would read as
/// "removed").
fn remaining_secs(now: Instant, expires_at: Instant) -> u32 {
    let left = expires_at.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("").to_string()
}

/// The headers a REGISTER is processed with, as raw values.
struct RegisterHeaders<'a> {
    call_id: Option<&'a str>,
    cseq: Option<&'a str>,
    expires: Option<&'a str>,
    user_agent: Option<&'a str>,
    contacts: Vec<&'a str>,
}

impl<'a> RegisterHeaders<'a> {
    fn collect(request: &'a rsip::Request) -> Result<Self, RegisterOutcome> {
        let mut h = RegisterHeaders {
            call_id: None,
            cseq: None,
            expires: None,
            user_agent: None,
            contacts: Vec::new(),
        };
        for header in request.headers.iter() {
            match header {
                Header::CallId(v) => set_once(&mut h.call_id, v.value(), "Duplicate Call-ID")?,
                Header::CSeq(v) => set_once(&mut h.cseq, v.value(), "Duplicate CSeq")?,
                Header::Expires(v) => set_once(&mut h.expires, v.value(), "Duplicate Expires")?,
                Header::UserAgent(v) => h.user_agent = h.user_agent.or(Some(v.value())),
                Header::Contact(v) => h.contacts.push(v.value()),
                // rsip does not know the compact forms (RFC 3261 §7.3.3).
                Header::Other(name, v) if name.eq_ignore_ascii_case("i") => {
                    set_once(&mut h.call_id, v, "Duplicate Call-ID")?
                }
                Header::Other(name, v) if name.eq_ignore_ascii_case("m") => h.contacts.push(v),
                _ => {}
            }
        }
        Ok(h)
    }
}

fn set_once<'a>(
    slot: &mut Option<&'a str>,
    value: &'a str,
    dup: &str,
) -> Result<(), RegisterOutcome> {
    if slot.is_some() {
        return Err(bad(dup));
    }
    *slot = Some(value);
    Ok(())
}

/// `CSeq: <number> REGISTER`; the number is 32-bit (RFC 3261 §8.1.1.5).
fn parse_cseq(value: &str) -> Result<u32, RegisterOutcome> {
    let mut parts = value.split_whitespace();
    let (Some(number), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("Invalid CSeq"));
    };
    if method != "REGISTER" || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Invalid CSeq"));
    }
    number.parse().map_err(|_| bad("Invalid CSeq"))
}

/// delta-seconds: too large saturates to 2^32-1, malformed counts as 3600 (RFC 3261 §10.2.1.1,
/// §20.19).
fn parse_delta_seconds(value: &str) -> u32 {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return MALFORMED_EXPIRES;
    }
    v.parse().unwrap_or(u32::MAX)
}

/// One element of a Contact header.
#[derive(Debug, Clone, PartialEq)]
enum ContactEntry {
    Star,
    Addr(ContactAddr),
}

#[derive(Debug, Clone, PartialEq)]
struct ContactAddr {
    /// The URI as written.
    uri: String,
    key: UriKey,
    expires: Option<u32>,
    q: Option<f32>,
}

/// Splits a header value on commas that are outside quoted strings and angle brackets.
/// Empty elements are skipped. `None` on an unterminated quote or bracket.
fn split_list(value: &str) -> Option<Vec<&str>> {
    let bytes = value.as_bytes();
    let mut items = Vec::new();
    let (mut in_quote, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    // Only ASCII bytes are compared, and UTF-8 continuation bytes are never ASCII, so every
    // split position is a char boundary.
    for (i, &b) in bytes.iter().enumerate() {
        if in_quote {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quote = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if !in_angle => in_quote = true,
            b'<' if !in_angle => in_angle = true,
            b'>' if in_angle => in_angle = false,
            b',' if !in_angle => {
                items.push(value.get(start..i)?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quote || in_angle {
        return None;
    }
    items.push(value.get(start..)?);
    Some(
        items
            .into_iter()
            .map(trim_lws)
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Parses `*`, `name-addr *(;param)` or `addr-spec *(;param)` (RFC 3261 §20.10).
fn parse_contact(item: &str) -> Option<ContactEntry> {
    let item = trim_lws(item);
    if item == "*" {
        return Some(ContactEntry::Star);
    }
    let (uri, params) = if let Some(rest) = item.strip_prefix('"') {
        // Quoted display name, then <uri>.
        let end = closing_quote(rest)?;
        let after = trim_lws(rest.get(end + 1..)?);
        angle_uri(after)?
    } else if let Some(lt) = item.find('<') {
        // Unquoted display name (possibly empty), then <uri>. The grammar says tokens, but
        // the name is ignored and some phones send UTF-8 names unquoted, so only quotes and
        // control characters are refused here.
        let display = item.get(..lt)?;
        if display
            .chars()
            .any(|c| c == '"' || (c.is_control() && !matches!(c, '\t' | '\r' | '\n')))
        {
            return None;
        }
        angle_uri(item.get(lt..)?)?
    } else {
        // addr-spec: the URI ends at the first ';' (§20: URIs with ';', ',' or '?' must be
        // in angle brackets), and what follows are header parameters.
        match item.find(';') {
            Some(semi) => (item.get(..semi)?, item.get(semi..)?),
            None => (item, ""),
        }
    };
    let key = parse_uri(uri)?;
    let (expires, q) = parse_contact_params(params)?;
    Some(ContactEntry::Addr(ContactAddr {
        uri: uri.to_string(),
        key,
        expires,
        q,
    }))
}

/// Byte offset of the closing quote of a quoted string whose opening quote is already gone.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `<uri>params` into the URI and the rest.
fn angle_uri(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('<')?;
    let gt = inner.find('>')?;
    Some((inner.get(..gt)?, inner.get(gt + 1..)?))
}

/// Parses `;name[=value]` header parameters, returning the expires and q values. Other
/// parameters (+sip.instance, reg-id, methods, …) are validated syntactically and ignored.
fn parse_contact_params(s: &str) -> Option<(Option<u32>, Option<f32>)> {
    let s = trim_lws(s);
    if s.is_empty() {
        return Some((None, None));
    }
    let s = s.strip_prefix(';')?;
    let (mut expires, mut q) = (None, None);
    for param in split_params(s)? {
        let param = trim_lws(param);
        let (name, value) = match param.find('=') {
            Some(eq) => (
                trim_lws(param.get(..eq)?),
                Some(trim_lws(param.get(eq + 1..)?)),
            ),
            None => (param, None),
        };
        if name.is_empty() || !name.chars().all(is_token_char) {
            return None;
        }
        if let Some(v) = value {
            let valid = if let Some(rest) = v.strip_prefix('"') {
                closing_quote(rest).is_some_and(|end| end + 1 == rest.len())
            } else {
                !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"')
            };
            if !valid {
                return None;
            }
        }
        if name.eq_ignore_ascii_case("expires") && expires.is_none() {
            expires = Some(value.map_or(MALFORMED_EXPIRES, |v| {
                parse_delta_seconds(v.trim_matches('"'))
            }));
        } else if name.eq_ignore_ascii_case("q") && q.is_none() {
            q = Some(parse_qvalue(value?)?);
        }
    }
    Some((expires, q))
}

/// Splits on ';' outside quoted strings.
fn split_params(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut in_quote, mut escaped, mut start) = (false, false, 0);
    for (i, b) in s.bytes().enumerate() {
        if in_quote {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quote = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quote = true;
        } else if b == b';' {
            out.push(s.get(start..i)?);
            start = i + 1;
        }
    }
    if in_quote {
        return None;
    }
    out.push(s.get(start..)?);
    Some(out)
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
fn parse_qvalue(v: &str) -> Option<f32> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    let ok = match int {
        "0" => frac.len() <= 3 && frac.bytes().all(|b| b.is_ascii_digit()),
        "1" => frac.len() <= 3 && frac.bytes().all(|b| b == b'0'),
        _ => false,
    };
    if !ok {
        return None;
    }
    v.parse().ok()
}

/// RFC 3261 token characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// The parts of a URI that matter for equivalence (RFC 3261 §19.1.4).
#[derive(Debug, Clone, PartialEq)]
enum UriKey {
    Sip {
        secure: bool,
        /// userinfo (user and optional password), case-sensitive.
        user: Option<String>,
        /// Lower-cased; IP literals in canonical form.
        host: String,
        port: Option<u16>,
        /// Lower-cased names and values.
        params: Vec<(String, Option<String>)>,
        headers: Option<String>,
    },
    Other {
        scheme: String,
        rest: String,
    },
}

/// Parses and validates a URI. sip/sips URIs are decomposed; other schemes only need a
/// valid scheme and a non-empty remainder.
fn parse_uri(s: &str) -> Option<UriKey> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"'))
    {
        return None;
    }
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        || rest.is_empty()
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let secure = match scheme.as_str() {
        "sip" => false,
        "sips" => true,
        _ => {
            return Some(UriKey::Other {
                scheme,
                rest: rest.to_string(),
            });
        }
    };
    let (main, headers) = match rest.split_once('?') {
        Some((m, h)) => (m, Some(h.to_string())),
        None => (rest, None),
    };
    // The user part may contain ';' (user-unreserved) but never an unescaped '@', and
    // parameter values never contain '@', so the last '@' ends the userinfo.
    let (user, host_and_params) = match main.rfind('@') {
        Some(at) => {
            let user = main.get(..at)?;
            if user.is_empty() {
                return None;
            }
            (Some(user.to_string()), main.get(at + 1..)?)
        }
        None => (None, main),
    };
    let mut pieces = host_and_params.split(';');
    let hostport = pieces.next()?;
    let (host, port) = parse_hostport(hostport)?;
    let mut params = Vec::new();
    for p in pieces {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v.to_ascii_lowercase())),
            None => (p, None),
        };
        if name.is_empty() || value.as_deref() == Some("") {
            return None;
        }
        params.push((name.to_ascii_lowercase(), value));
    }
    Some(UriKey::Sip {
        secure,
        user,
        host,
        port,
        params,
        headers,
    })
}

fn parse_hostport(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let addr: Ipv6Addr = rest.get(..close)?.parse().ok()?;
        let after = rest.get(close + 1..)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (h, p) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return None;
        }
        let host = match h.parse::<Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => h.to_ascii_lowercase(),
        };
        (host, p)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// RFC 3261 §19.1.4 URI comparison (see the module docs for what is covered).
fn equivalent(a: &UriKey, b: &UriKey) -> bool {
    match (a, b) {
        (
            UriKey::Sip {
                secure: sa,
                user: ua,
                host: ha,
                port: pa,
                params: qa,
                headers: xa,
            },
            UriKey::Sip {
                secure: sb,
                user: ub,
                host: hb,
                port: pb,
                params: qb,
                headers: xb,
            },
        ) => {
            let get = |list: &[(String, Option<String>)], name: &str| {
                list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
            };
            sa == sb
                && ua == ub
                && ha == hb
                && pa == pb
                && xa == xb
                && ["transport", "user", "ttl", "method", "maddr"]
                    .iter()
                    .all(|n| get(qa, n) == get(qb, n))
                && qa.iter().all(|(n, v)| get(qb, n).is_none_or(|w| w == *v))
        }
        (
            UriKey::Other {
                scheme: sa,
                rest: ra,
            },
            UriKey::Other {
                scheme: sb,
                rest: rb,
            },
        ) => sa == sb && ra == rb,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::peer::Transport;

    const AOR: &str = "sip:1001@example.com";

    fn peer(port: u16) -> Peer {
        Peer::new(
            format!("198.51.100.7:{port}").parse().unwrap(),
            Transport::Udp,
        )
    }

    fn registrar(config: RegistrarConfig) -> Registrar {
        Registrar::new(config, Arc::new(MemoryLocationStore::new()))
    }

    /// A REGISTER as the transport would hand it over, with `extra` header lines.
    fn register(call_id: &str, cseq: u32, extra: &[&str]) -> rsip::Request {
        let mut raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK{cseq}\r\n\
             To: <{AOR}>\r\nFrom: <{AOR}>;tag=x\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nUser-Agent: TestPhone/1.0\r\n"
        );
        for line in extra {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        rsip::Request::try_from(raw.as_str()).unwrap()
    }

    /// A REGISTER built directly, for header values the wire parser would not produce.
    fn register_with_headers(headers: Vec<Header>) -> rsip::Request {
        rsip::Request {
            method: rsip::Method::Register,
            uri: rsip::Uri::try_from("sip:example.com").unwrap(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        }
    }

    fn contacts(o: &RegisterOutcome) -> Vec<(String, u32)> {
        match o {
            RegisterOutcome::Ok { contacts } => contacts.clone(),
            other => panic!("expected Ok, got {other:?}"),
        }
    }

    fn c(uri: &str, secs: u32) -> (String, u32) {
        (uri.to_string(), secs)
    }

    #[test]
    fn register_one_contact() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register(
            "a@1",
            1,
            &["Contact: <sip:1001@192.0.2.1:5062;transport=udp>"],
        );
        let out = r.handle_register(now, AOR, &req, peer(5062));
        assert_eq!(
            contacts(&out),
            vec![c("sip:1001@192.0.2.1:5062;transport=udp", 3600)]
        );
        let b = r.lookup(now, AOR);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].call_id, "a@1");
        assert_eq!(b[0].cseq, 1);
        assert_eq!(b[0].source, peer(5062));
        assert_eq!(b[0].user_agent.as_deref(), Some("TestPhone/1.0"));
        assert_eq!(b[0].q, None);
        assert_eq!(b[0].expires_at, now + Duration::from_secs(3600));
        assert_eq!(r.store().count(now), 1);
    }

    #[test]
    fn register_two_contacts_in_two_headers() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register(
            "a@1",
            1,
            &[
                "Contact: <sip:1001@192.0.2.1:5062>;expires=120",
                "Contact: <sip:1001@192.0.2.2:5060>",
                "Expires: 600",
            ],
        );
        let out = r.handle_register(now, AOR, &req, peer(5062));
        assert_eq!(
            contacts(&out),
            vec![
                c("sip:1001@192.0.2.1:5062", 120),
                c("sip:1001@192.0.2.2:5060", 600)
            ]
        );
    }

    #[test]
    fn comma_lists_name_addr_and_params() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register(
            "a@1",
            1,
            &[
                "Contact: \"Alice, \\\"the <boss>\\\"\" <sip:alice@192.0.2.1;transport=tcp>;q=0.8;expires=300;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\", Bob Smith <sips:bob@[2001:db8::1]:5061>;Q=1.0 , sip:carol@192.0.2.3;expires=100;q=0",
                "m: <sip:dave@192.0.2.4>;reg-id=1;methods=\"INVITE, MESSAGE\"",
                "Contact: Jos\u{e9} \u{1F600} <sip:erin@192.0.2.5>",
            ],
        );
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(
            contacts(&out),
            vec![
                c("sip:alice@192.0.2.1;transport=tcp", 300),
                c("sips:bob@[2001:db8::1]:5061", 3600),
                // addr-spec form: ;expires and ;q are header parameters, not URI parameters.
                c("sip:carol@192.0.2.3", 100),
                c("sip:dave@192.0.2.4", 3600),
                c("sip:erin@192.0.2.5", 3600),
            ]
        );
        let b = r.lookup(now, AOR);
        assert_eq!(b[0].q, Some(0.8));
        assert_eq!(b[1].q, Some(1.0));
        assert_eq!(b[2].q, Some(0.0));
        assert_eq!(b[3].q, None);
    }

    #[test]
    fn refresh_updates_existing_binding() {
        let r = registrar(RegistrarConfig::default());
        let t0 = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:1001@192.0.2.1:5062>"]);
        r.handle_register(t0, AOR, &req, peer(5062));

        // Same contact with different case in scheme and host, from a new NAT port.
        let t1 = t0 + Duration::from_secs(100);
        let req = register(
            "a@1",
            2,
            &["Contact: <SIP:1001@192.0.2.1:5062>", "Expires: 120"],
        );
        let out = r.handle_register(t1, AOR, &req, peer(6000));
        assert_eq!(contacts(&out), vec![c("SIP:1001@192.0.2.1:5062", 120)]);
        let b = r.lookup(t1, AOR);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].cseq, 2);
        assert_eq!(b[0].source, peer(6000));
        assert_eq!(b[0].expires_at, t1 + Duration::from_secs(120));

        let req = register("a@1", 3, &["Contact: <sip:1001@EXAMPLE-HOST.test>"]);
        r.handle_register(t1, AOR, &req, peer(6000));
        let req = register("a@1", 4, &["Contact: <sip:1001@example-host.TEST>"]);
        let out = r.handle_register(t1, AOR, &req, peer(6000));
        assert_eq!(contacts(&out).len(), 2);
    }

    #[test]
    fn remove_one_with_expires_zero() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register(
            "a@1",
            1,
            &["Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.1>, <sip:c@192.0.2.1>"],
        );
        r.handle_register(now, AOR, &req, peer(1));

        let req = register("a@1", 2, &["Contact: <sip:a@192.0.2.1>;expires=0"]);
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(
            contacts(&out),
            vec![c("sip:b@192.0.2.1", 3600), c("sip:c@192.0.2.1", 3600)]
        );

        // Expires header 0 applies to contacts without their own expires.
        let req = register("a@1", 3, &["Contact: <sip:b@192.0.2.1>", "Expires: 0"]);
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(contacts(&out), vec![c("sip:c@192.0.2.1", 3600)]);

        // Removing something that is not bound changes nothing.
        let req = register("a@1", 4, &["Contact: <sip:zzz@192.0.2.1>;expires=0"]);
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(contacts(&out), vec![c("sip:c@192.0.2.1", 3600)]);

        let req = register("a@1", 5, &["Contact: <sip:c@192.0.2.1>;expires=0"]);
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![]
        );
        assert!(r.store().all(now).is_empty());
    }

    #[test]
    fn star_removes_all() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>"]);
        r.handle_register(now, AOR, &req, peer(1));
        let req = register("b@2", 7, &["Contact: <sip:b@192.0.2.2>"]);
        r.handle_register(now, AOR, &req, peer(2));
        assert_eq!(r.lookup(now, AOR).len(), 2);

        let req = register("a@1", 2, &["Contact: *", "Expires: 0"]);
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(out, RegisterOutcome::Ok { contacts: vec![] });
        assert!(r.lookup(now, AOR).is_empty());
        assert_eq!(r.store().count(now), 0);
    }

    #[test]
    fn star_rules() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register("a@1", 5, &["Contact: <sip:a@192.0.2.1>"]);
        r.handle_register(now, AOR, &req, peer(1));

        let req = register("a@1", 6, &["Contact: *, <sip:a@192.0.2.1>", "Expires: 0"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::BadRequest("Contact * with other contacts".into())
        );
        let req = register(
            "a@1",
            6,
            &["Contact: *", "Contact: <sip:x@192.0.2.1>", "Expires: 0"],
        );
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::BadRequest("Contact * with other contacts".into())
        );
        for extra in [&["Contact: *", "Expires: 60"][..], &["Contact: *"][..]] {
            let req = register("a@1", 6, extra);
            assert_eq!(
                r.handle_register(now, AOR, &req, peer(1)),
                RegisterOutcome::BadRequest("Contact * requires Expires: 0".into())
            );
        }
        // '*' takes no parameters.
        let req = register("a@1", 6, &["Contact: *;expires=0", "Expires: 0"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::BadRequest("Invalid Contact".into())
        );
        // Same Call-ID, CSeq not higher: out of order, nothing removed.
        let req = register("a@1", 5, &["Contact: *", "Expires: 0"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::OutOfOrder
        );
        assert_eq!(r.lookup(now, AOR).len(), 1);
        // A different Call-ID may remove regardless of CSeq.
        let req = register("other@x", 1, &["Contact: *", "Expires: 0"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::Ok { contacts: vec![] }
        );
    }

    #[test]
    fn interval_too_brief() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>", "Expires: 30"]);
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(out, RegisterOutcome::IntervalTooBrief { min_expires: 60 });
        assert_eq!(out.status_code(), 423);
        // The contact param overrides the header, in both directions.
        let req = register(
            "a@1",
            2,
            &["Contact: <sip:a@192.0.2.1>;expires=1", "Expires: 3600"],
        );
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::IntervalTooBrief { min_expires: 60 }
        );
        let req = register(
            "a@1",
            3,
            &["Contact: <sip:a@192.0.2.1>;expires=60", "Expires: 30"],
        );
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:a@192.0.2.1", 60)]
        );
        // A brief interval on one contact fails the whole request.
        let req = register(
            "a@1",
            4,
            &["Contact: <sip:b@192.0.2.1>, <sip:a@192.0.2.1>;expires=10"],
        );
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::IntervalTooBrief { min_expires: 60 }
        );
        assert_eq!(r.lookup(now, AOR).len(), 1);
    }

    #[test]
    fn interval_too_brief_only_below_one_hour() {
        let r = registrar(RegistrarConfig {
            min_expires: 7200,
            max_expires: 86400,
            default_expires: 7200,
            max_bindings_per_aor: 10,
        });
        let now = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>", "Expires: 3600"]);
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:a@192.0.2.1", 3600)]
        );
        let req = register("a@1", 2, &["Contact: <sip:a@192.0.2.1>", "Expires: 3599"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::IntervalTooBrief { min_expires: 7200 }
        );
    }

    #[test]
    fn max_clamp_default_and_malformed() {
        let r = registrar(RegistrarConfig {
            default_expires: 1800,
            ..RegistrarConfig::default()
        });
        let now = Instant::now();
        let req = register(
            "a@1",
            1,
            &[
                "Contact: <sip:a@192.0.2.1>;expires=99999",
                "Contact: <sip:b@192.0.2.1>",
                "Contact: <sip:c@192.0.2.1>;expires=99999999999999999999",
                "Contact: <sip:d@192.0.2.1>;expires=soon",
            ],
        );
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![
                c("sip:a@192.0.2.1", 3600),
                c("sip:b@192.0.2.1", 1800),
                c("sip:c@192.0.2.1", 3600),
                // Malformed counts as 3600 (then clamped to max).
                c("sip:d@192.0.2.1", 3600),
            ]
        );
        // A malformed Expires header is 3600 too, not 0.
        let r = registrar(RegistrarConfig {
            max_expires: 7200,
            ..RegistrarConfig::default()
        });
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>", "Expires: -1"]);
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:a@192.0.2.1", 3600)]
        );
    }

    #[test]
    fn query_without_contact() {
        let r = registrar(RegistrarConfig::default());
        let t0 = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>;expires=600"]);
        r.handle_register(t0, AOR, &req, peer(1));
        let before = r.lookup(t0, AOR);

        // Even with an older CSeq: a query changes nothing, so ordering does not matter.
        let req = register("a@1", 1, &[]);
        let t1 = t0 + Duration::from_millis(10_500);
        let out = r.handle_register(t1, AOR, &req, peer(9));
        // 589.5 s left, rounded up.
        assert_eq!(contacts(&out), vec![c("sip:a@192.0.2.1", 590)]);
        assert_eq!(r.lookup(t1, AOR), before);
        // Query of an unknown AOR.
        assert_eq!(
            r.handle_register(t1, "sip:nobody@example.com", &req, peer(9)),
            RegisterOutcome::Ok { contacts: vec![] }
        );
    }

    #[test]
    fn expiry_with_virtual_time() {
        let r = registrar(RegistrarConfig::default());
        let t0 = Instant::now();
        let req = register(
            "a@1",
            1,
            &["Contact: <sip:a@192.0.2.1>;expires=60, <sip:b@192.0.2.1>;expires=120"],
        );
        r.handle_register(t0, AOR, &req, peer(1));
        r.handle_register(t0, "sip:other@example.com", &req, peer(1));
        assert_eq!(r.store().count(t0), 4);

        let t20 = t0 + Duration::from_secs(20);
        let out = r.handle_register(t20, AOR, &register("a@1", 2, &[]), peer(1));
        assert_eq!(
            contacts(&out),
            vec![c("sip:a@192.0.2.1", 40), c("sip:b@192.0.2.1", 100)]
        );

        let t60 = t0 + Duration::from_secs(60);
        assert_eq!(r.lookup(t60, AOR).len(), 1, "expires exactly at expires_at");
        assert_eq!(r.store().count(t60), 2);
        assert_eq!(r.store().all(t60).len(), 2);
        assert_eq!(r.purge_expired(t60), 2);
        assert_eq!(r.purge_expired(t60), 0);

        let t121 = t0 + Duration::from_secs(121);
        assert!(r.lookup(t121, AOR).is_empty());
        assert!(r.store().all(t121).is_empty());
        assert_eq!(r.purge_expired(t121), 2);

        // An expired binding does not block re-registration with a lower CSeq.
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>"]);
        assert_eq!(
            contacts(&r.handle_register(t121, AOR, &req, peer(1))),
            vec![c("sip:a@192.0.2.1", 3600)]
        );
    }

    #[test]
    fn cseq_out_of_order() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register("a@1", 10, &["Contact: <sip:a@192.0.2.1>"]);
        r.handle_register(now, AOR, &req, peer(1));

        for cseq in [10, 9, 1] {
            let req = register("a@1", cseq, &["Contact: <sip:a@192.0.2.1>;expires=0"]);
            let out = r.handle_register(now, AOR, &req, peer(1));
            assert_eq!(out, RegisterOutcome::OutOfOrder);
            assert_eq!(out.status_code(), 500);
        }
        assert_eq!(r.lookup(now, AOR).len(), 1);
        // A new Call-ID (rebooted phone) is accepted whatever its CSeq.
        let req = register("new@1", 1, &["Contact: <sip:a@192.0.2.1>", "Expires: 300"]);
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:a@192.0.2.1", 300)]
        );
        assert_eq!(r.lookup(now, AOR)[0].call_id, "new@1");
        // Out of order on one binding aborts the whole request, including additions.
        let req = register("x@1", 5, &["Contact: <sip:b@192.0.2.1>"]);
        r.handle_register(now, AOR, &req, peer(1));
        let req = register("x@1", 5, &["Contact: <sip:c@192.0.2.1>, <sip:b@192.0.2.1>"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::OutOfOrder
        );
        let bound: Vec<String> = r.lookup(now, AOR).into_iter().map(|b| b.contact).collect();
        assert_eq!(bound, vec!["sip:a@192.0.2.1", "sip:b@192.0.2.1"]);
    }

    #[test]
    fn duplicate_contact_in_one_request_last_wins() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register(
            "a@1",
            1,
            &[
                "Contact: <sip:a@192.0.2.1>;expires=100, <sip:A@192.0.2.1>, <sip:a@192.0.2.1>;expires=200",
            ],
        );
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:a@192.0.2.1", 200), c("sip:A@192.0.2.1", 3600)]
        );
        let req = register(
            "a@1",
            2,
            &["Contact: <sip:a@192.0.2.1>;expires=0, <sip:a@192.0.2.1>;expires=300"],
        );
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:A@192.0.2.1", 3600), c("sip:a@192.0.2.1", 300)]
        );
    }

    #[test]
    fn per_aor_cap() {
        let r = registrar(RegistrarConfig {
            max_bindings_per_aor: 2,
            ..RegistrarConfig::default()
        });
        let now = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.1>"]);
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))).len(),
            2
        );

        let req = register("c@1", 1, &["Contact: <sip:c@192.0.2.1>"]);
        let out = r.handle_register(now, AOR, &req, peer(1));
        assert_eq!(out, RegisterOutcome::TooManyBindings);
        assert_eq!(out.status_code(), 403);
        assert_eq!(r.lookup(now, AOR).len(), 2);

        // Refresh at the cap is fine; so is swapping one binding for another.
        let req = register("a@1", 2, &["Contact: <sip:a@192.0.2.1>"]);
        assert!(matches!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::Ok { .. }
        ));
        let req = register(
            "a@1",
            3,
            &["Contact: <sip:a@192.0.2.1>;expires=0, <sip:c@192.0.2.1>"],
        );
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))),
            vec![c("sip:b@192.0.2.1", 3600), c("sip:c@192.0.2.1", 3600)]
        );
        // Other AORs are unaffected.
        let req = register("z@1", 1, &["Contact: <sip:z@192.0.2.1>"]);
        assert!(matches!(
            r.handle_register(now, "sip:1002@example.com", &req, peer(1)),
            RegisterOutcome::Ok { .. }
        ));
    }

    #[test]
    fn cap_does_not_block_refresh_when_already_above_it() {
        let store = Arc::new(MemoryLocationStore::new());
        let big = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let req = register("a@1", 1, &["Contact: <sip:a@h>, <sip:b@h>, <sip:c@h>"]);
        big.handle_register(now, AOR, &req, peer(1));
        store.set_bindings(AOR, big.lookup(now, AOR));
        // The operator lowers the cap to 1.
        let r = Registrar::new(
            RegistrarConfig {
                max_bindings_per_aor: 1,
                ..RegistrarConfig::default()
            },
            store,
        );
        let req = register("a@1", 2, &["Contact: <sip:b@h>", "Expires: 600"]);
        assert_eq!(
            contacts(&r.handle_register(now, AOR, &req, peer(1))).len(),
            3
        );
        let req = register("a@1", 3, &["Contact: <sip:d@h>"]);
        assert_eq!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::TooManyBindings
        );
    }

    #[test]
    fn too_many_contacts_in_one_request() {
        let r = registrar(RegistrarConfig::default());
        let list: Vec<String> = (0..100).map(|i| format!("<sip:u{i}@h>")).collect();
        let line = format!("Contact: {}", list.join(", "));
        let req = register("a@1", 1, &[line.as_str()]);
        assert_eq!(
            r.handle_register(Instant::now(), AOR, &req, peer(1)),
            RegisterOutcome::TooManyBindings
        );
    }

    #[test]
    fn missing_or_bad_call_id_and_cseq() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let contact = Header::Contact(rsip::headers::Contact::new("<sip:a@h>"));
        let cid = Header::CallId(rsip::headers::CallId::new("x"));
        let cases = vec![
            (vec![contact.clone()], "Missing Call-ID"),
            (vec![contact.clone(), cid.clone()], "Missing CSeq"),
            (
                vec![
                    cid.clone(),
                    Header::CSeq(rsip::headers::CSeq::new("1 INVITE")),
                ],
                "Invalid CSeq",
            ),
            (
                vec![
                    cid.clone(),
                    Header::CSeq(rsip::headers::CSeq::new("x REGISTER")),
                ],
                "Invalid CSeq",
            ),
            (
                vec![
                    cid.clone(),
                    Header::CSeq(rsip::headers::CSeq::new("-1 REGISTER")),
                ],
                "Invalid CSeq",
            ),
            (
                vec![
                    cid.clone(),
                    Header::CSeq(rsip::headers::CSeq::new("99999999999 REGISTER")),
                ],
                "Invalid CSeq",
            ),
            (
                vec![
                    cid.clone(),
                    Header::CSeq(rsip::headers::CSeq::new("1 REGISTER x")),
                ],
                "Invalid CSeq",
            ),
            (
                vec![
                    Header::CallId(rsip::headers::CallId::new("   ")),
                    Header::CSeq(rsip::headers::CSeq::new("1 REGISTER")),
                ],
                "Missing Call-ID",
            ),
            (
                vec![
                    cid.clone(),
                    Header::Other("i".into(), "y".into()),
                    Header::CSeq(rsip::headers::CSeq::new("1 REGISTER")),
                ],
                "Duplicate Call-ID",
            ),
        ];
        for (headers, reason) in cases {
            let req = register_with_headers(headers);
            assert_eq!(
                r.handle_register(now, AOR, &req, peer(1)),
                RegisterOutcome::BadRequest(reason.into())
            );
        }
        // Compact Call-ID works.
        let req = register_with_headers(vec![
            Header::Other("i".into(), "compact@x".into()),
            Header::CSeq(rsip::headers::CSeq::new("1 REGISTER")),
            Header::Other("m".into(), "<sip:a@h>".into()),
        ]);
        assert!(matches!(
            r.handle_register(now, AOR, &req, peer(1)),
            RegisterOutcome::Ok { .. }
        ));
        assert_eq!(r.lookup(now, AOR)[0].call_id, "compact@x");
    }

    #[test]
    fn garbage_contacts_are_bad_requests() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        for bad_value in [
            "",
            "   ",
            ",",
            "<",
            ">",
            "<>",
            "<sip:a@h",
            "\"unterminated <sip:a@h>",
            "\"name\" sip:a@h",
            "<sip:a@h> junk",
            "<sip:a@h>;",
            "<sip:a@h>;=1",
            "<sip:a@h>;expires=",
            "<sip:a@h>;q=2",
            "<sip:a@h>;q=0.1234",
            "<sip:a@h>;q=abc",
            "<sip:a@h>;q",
            "<sip:a@h>;x=\"open",
            "a@h",
            "sip:",
            ":a@h",
            "1sip:a@h",
            "sip:@h",
            "sip:a@",
            "sip:a@h:",
            "sip:a@h:99999",
            "sip:a@h:5x",
            "sip:a@[::1",
            "sip:a@[zz]",
            "sip:a@h;=x",
            "sip:a@ho st",
            "<sip:a@h\u{0}>",
            "<sip:a@hé>",
            "Bad\u{1}Name <sip:a@h>",
            "<sip:a@h>, <sip:b@h",
            "<<sip:a@h>>",
        ] {
            let req = register_with_headers(vec![
                Header::CallId(rsip::headers::CallId::new("x")),
                Header::CSeq(rsip::headers::CSeq::new("1 REGISTER")),
                Header::Contact(rsip::headers::Contact::new(bad_value)),
            ]);
            assert_eq!(
                r.handle_register(now, AOR, &req, peer(1)),
                RegisterOutcome::BadRequest("Invalid Contact".into()),
                "{bad_value:?}"
            );
        }
        assert!(r.store().all(now).is_empty());
    }

    #[test]
    fn fuzzed_contacts_never_panic() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let base: Vec<char> = "\"A, \\\"b\\\"\" <sips:u;x=1@[2001:db8::1]:5061;transport=tls?h=v>;q=0.5;expires=60;+sip.instance=\"<urn:x>\", sip:c@h"
            .chars()
            .collect();
        let tricky = [
            '"', '\\', ',', ';', '<', '>', '@', ':', '[', ']', '=', '*', ' ', 'é', '\u{0}',
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..3000u32 {
            let mut m = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % m.len();
                m[at] = tricky[(next() as usize) % tricky.len()];
            }
            let cut = (next() as usize) % (m.len() + 1);
            let value: String = m[..cut].iter().collect();
            let req = register_with_headers(vec![
                Header::CallId(rsip::headers::CallId::new(format!("f{i}"))),
                Header::CSeq(rsip::headers::CSeq::new("1 REGISTER")),
                Header::Contact(rsip::headers::Contact::new(value)),
            ]);
            let _ = r.handle_register(now, AOR, &req, peer(1));
            r.store().set_bindings(AOR, Vec::new());
        }
    }

    #[test]
    fn uri_equivalence() {
        let eq = |a: &str, b: &str| equivalent(&parse_uri(a).unwrap(), &parse_uri(b).unwrap());
        assert!(eq(
            "sip:alice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(eq("SIP:carol@chicago.com", "sip:carol@CHICAGO.com"));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq("sip:a@h;foo=1", "sip:a@h"));
        assert!(eq("sip:a@[2001:db8:0:0::1]", "sip:a@[2001:DB8::1]"));
        assert!(eq("tel:+1-555", "TEL:+1-555"));
        assert!(!eq("sip:ALICE@atlanta.com", "sip:alice@atlanta.com"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq("sip:bob@biloxi.com", "sips:bob@biloxi.com"));
        assert!(!eq(
            "sip:bob@biloxi.com;transport=udp",
            "sip:bob@biloxi.com"
        ));
        assert!(!eq("sip:a@h;foo=1", "sip:a@h;foo=2"));
        assert!(!eq("sip:a@h?x=1", "sip:a@h"));
        assert!(!eq("sip:a@h", "tel:a@h"));
        // The user part may contain ';'.
        assert!(matches!(
            parse_uri("sip:alice;day=tuesday@atlanta.com"),
            Some(UriKey::Sip { user: Some(u), .. }) if u == "alice;day=tuesday"
        ));
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        assert_eq!(
            split_list("\"a,b\" <sip:x@h;p=\"q\">, <sip:y,z@h>,,  sip:w@h ").unwrap(),
            vec!["\"a,b\" <sip:x@h;p=\"q\">", "<sip:y,z@h>", "sip:w@h"]
        );
        assert_eq!(split_list("\"a\\\"b,\" <sip:x@h>").unwrap().len(), 1);
        assert!(split_list("\"open").is_none());
        assert!(split_list("<open").is_none());
    }

    #[test]
    fn qvalues() {
        for (s, v) in [
            ("0", 0.0),
            ("0.5", 0.5),
            ("0.123", 0.123),
            ("1", 1.0),
            ("1.000", 1.0),
            ("0.", 0.0),
        ] {
            assert_eq!(parse_qvalue(s), Some(v), "{s}");
        }
        for s in ["1.001", "2", "-0", "0.1234", ".5", "", "0x1", "1e0"] {
            assert_eq!(parse_qvalue(s), None, "{s}");
        }
    }

    #[test]
    fn long_user_agent_is_truncated() {
        let r = registrar(RegistrarConfig::default());
        let now = Instant::now();
        let ua = format!("User-Agent: {}", "é".repeat(400));
        let req = register_with_headers(vec![
            Header::CallId(rsip::headers::CallId::new("x")),
            Header::CSeq(rsip::headers::CSeq::new("1 REGISTER")),
            Header::Contact(rsip::headers::Contact::new("<sip:a@h>")),
            Header::UserAgent(rsip::headers::UserAgent::new(&ua["User-Agent: ".len()..])),
        ]);
        r.handle_register(now, AOR, &req, peer(1));
        let stored = r.lookup(now, AOR)[0].user_agent.clone().unwrap();
        assert_eq!(stored.len(), MAX_USER_AGENT_LEN);
        assert!(stored.chars().all(|c| c == 'é'));
    }

    #[test]
    fn outcome_codes() {
        assert_eq!(RegisterOutcome::Ok { contacts: vec![] }.status_code(), 200);
        assert_eq!(RegisterOutcome::BadRequest("x".into()).status_code(), 400);
        assert_eq!(RegisterOutcome::BadRequest("x".into()).reason_phrase(), "x");
        assert_eq!(
            RegisterOutcome::OutOfOrder.reason_phrase(),
            "Server Internal Error"
        );
        assert_eq!(
            RegisterOutcome::IntervalTooBrief { min_expires: 1 }.reason_phrase(),
            "Interval Too Brief"
        );
    }

    #[test]
    fn concurrent_registers_do_not_lose_updates() {
        let r = Arc::new(registrar(RegistrarConfig {
            max_bindings_per_aor: 1000,
            ..RegistrarConfig::default()
        }));
        let now = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let line = format!("Contact: <sip:t{t}i{i}@h>");
                        let req = register(&format!("t{t}"), i + 1, &[line.as_str()]);
                        r.handle_register(now, AOR, &req, peer(1));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(r.lookup(now, AOR).len(), 200);
    }

    #[test]
    fn registrar_and_store_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Registrar>();
        check::<MemoryLocationStore>();
    }
}
