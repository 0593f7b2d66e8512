//! Siphon's own registrations to upstream trunks (`register = true`): Siphon registers as
//! the trunk's `username` so the provider knows where to send calls, answers the provider's
//! digest challenge, refreshes at 80 % of the lifetime the provider granted, and when the
//! provider refuses or does not answer, retries with exponential backoff (1 s doubling to
//! 5 minutes). One Call-ID per trunk for the life of the process, CSeq increasing, as
//! RFC 3261 §10.2.4 asks of refreshes.
//!
//! Behind a NAT the address Siphon listens on is not the one the trunk sees: the Contact
//! is the trunk's `public_address` when configured, else what the trunk's 200 revealed in
//! `received`/`rport` (RFC 3581) on our Via; when that differs from the Contact just
//! registered, Siphon registers again at once with the public address (and removes the
//! unreachable one). `keepalive_s` sends CRLF keepalives between refreshes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rsip::{Header, Headers, Method};
use siphon_sip::Peer;
use siphon_sip::auth::{Challenge, new_cnonce};
use siphon_sip::dialog::uri_of;
use siphon_sip::message::{self, header_param, header_value, header_values, split_list};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::{Endpoint, new_tag, now};
use crate::config::{Config, TrunkConfig};
use crate::control::Command;

const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub(super) struct Registrations {
    /// Indexed like `Config::trunks` (trunks without `register` are never used).
    trunks: Vec<Registration>,
    /// The REGISTER in flight for each trunk.
    by_key: HashMap<TransactionKey, usize>,
}

struct Registration {
    trunk: TrunkConfig,
    /// Where the last REGISTER went (a trunk by name may have several addresses).
    peer: Option<Peer>,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// Consecutive failures: the retry backoff.
    failures: u32,
    /// The REGISTER in flight carries credentials: another challenge means they were
    /// refused (or the nonce went stale, which the next attempt answers).
    authenticated: bool,
    /// Where the trunk sees us, as its last 200 said (behind a NAT: not our address).
    learned: Option<SocketAddr>,
    /// The Contact address of the REGISTER in flight, and one to remove with it.
    contact: Option<SocketAddr>,
    stale_contact: Option<SocketAddr>,
    /// The keepalive timer runs (started by the first successful registration).
    keepalive_running: bool,
}

impl Registrations {
    pub(super) fn new(config: &Config) -> Registrations {
        Registrations {
            trunks: config
                .trunks
                .iter()
                .map(|t| Registration {
                    trunk: t.clone(),
                    peer: None,
                    call_id: format!("{}@siphon", new_tag()),
                    from_tag: new_tag(),
                    cseq: 0,
                    failures: 0,
                    authenticated: false,
                    learned: None,
                    contact: None,
                    stale_contact: None,
                    keepalive_running: false,
                })
                .collect(),
            by_key: HashMap::new(),
        }
    }
}

impl Endpoint {
    pub(super) fn start_registrations(&mut self) {
        for index in 0..self.registrations.trunks.len() {
            if self.registrations.trunks[index].trunk.register {
                self.register_trunk(index, None);
            }
        }
    }

    /// Sends a REGISTER to trunk `index`; `credentials` is the (header name, value) answering
    /// the trunk's last challenge.
    pub(super) fn register_trunk(&mut self, index: usize, credentials: Option<(&str, String)>) {
        let Some(peers) = self
            .registrations
            .trunks
            .get(index)
            .map(|r| self.trunk_peers(&r.trunk))
        else {
            return;
        };
        let Some(peer) = peers.first().copied() else {
            // Its name has not resolved (yet): try again later.
            self.registration_failed(index, "no address");
            return;
        };
        let via = self.via_value(peer);
        let sip_addr = self.addr_for(peer);
        let Some(reg) = self.registrations.trunks.get_mut(index) else {
            return;
        };
        let t = &reg.trunk;
        let (Some(user), true) = (t.username.as_deref(), t.register) else {
            return;
        };
        let domain = t.domain();
        reg.cseq += 1;
        reg.peer = Some(peer);
        reg.authenticated = credentials.is_some();
        let contact_addr = t.public_address.or(reg.learned).unwrap_or(sip_addr);
        reg.contact = Some(contact_addr);
        let mut headers = Headers::default();
        headers.push(Header::Via(via.into()));
        headers.push(Header::MaxForwards("70".to_string().into()));
        headers.push(Header::From(
            format!("<sip:{user}@{domain}>;tag={}", reg.from_tag).into(),
        ));
        headers.push(Header::To(format!("<sip:{user}@{domain}>").into()));
        headers.push(Header::CallId(reg.call_id.clone().into()));
        headers.push(Header::CSeq(format!("{} REGISTER", reg.cseq).into()));
        headers.push(Header::Contact(
            format!("<sip:{user}@{contact_addr}>").into(),
        ));
        if let Some(stale) = reg.stale_contact.take() {
            headers.push(Header::Contact(
                format!("<sip:{user}@{stale}>;expires=0").into(),
            ));
        }
        headers.push(Header::Expires(t.register_expires_s.to_string().into()));
        if let Some((name, value)) = credentials {
            headers.push(Header::Other(name.into(), value));
        }
        message::finish(&mut headers, b"");
        let Ok(uri) = rsip::Uri::try_from(format!("sip:{domain}").as_str()) else {
            warn!(trunk = %t.name, %domain, "cannot register: the trunk's domain is not a SIP host");
            return;
        };
        let request = rsip::Request {
            method: Method::Register,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        match self.layer.send_request(now(), request, peer) {
            Ok(key) => {
                self.registrations.by_key.insert(key, index);
            }
            Err(e) => {
                warn!(trunk = %t.name, error = %e, "could not send REGISTER");
                self.registration_failed(index, "not sent");
            }
        }
    }

    pub(super) fn on_register_response(&mut self, key: &TransactionKey, response: &rsip::Response) {
        let code = response.status_code.code();
        if code < 200 {
            return;
        }
        let Some(index) = self.registrations.by_key.remove(key) else {
            return;
        };
        let Some(sip_addr) = self
            .registrations
            .trunks
            .get(index)
            .and_then(|r| r.peer)
            .map(|peer| self.addr_for(peer))
        else {
            return;
        };
        let Some(reg) = self.registrations.trunks.get_mut(index) else {
            return;
        };
        match code {
            200..=299 => {
                let registered = reg.contact.unwrap_or(sip_addr);
                if reg.trunk.public_address.is_none()
                    && let Some(public) = public_address(response, registered)
                {
                    // Behind a NAT: the binding just made points at an address the trunk
                    // cannot reach. Register the public one now, dropping this one.
                    info!(trunk = %reg.trunk.name, %public, local = %registered,
                        "the trunk sees Siphon at another address; registering that");
                    reg.learned = Some(public);
                    reg.stale_contact = Some(registered);
                    reg.failures = 0;
                    reg.authenticated = false;
                    self.register_trunk(index, None);
                    return;
                }
                let ours = format!(
                    "sip:{}@{registered}",
                    reg.trunk.username.as_deref().unwrap_or_default()
                );
                let granted =
                    granted_expires(response, &ours).unwrap_or(reg.trunk.register_expires_s);
                reg.failures = 0;
                reg.authenticated = false;
                // Refresh well before expiry (80 %), so one lost REGISTER can be retried.
                let refresh =
                    Duration::from_millis(u64::from(granted) * 800).max(Duration::from_secs(1));
                info!(trunk = %reg.trunk.name, expires = granted, refresh_s = refresh.as_secs_f64(), "registered to trunk");
                let keepalive = (reg.trunk.keepalive_s > 0 && !reg.keepalive_running)
                    .then(|| Duration::from_secs(reg.trunk.keepalive_s));
                if keepalive.is_some() {
                    reg.keepalive_running = true;
                }
                self.schedule(refresh, Command::RegisterTrunk(index));
                if let Some(every) = keepalive {
                    self.schedule(every, Command::TrunkKeepalive(index));
                }
            }
            401 | 407 if !reg.authenticated => {
                let (challenge, answer) = if code == 407 {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                } else {
                    ("WWW-Authenticate", "Authorization")
                };
                let challenge = header_values(&response.headers, challenge)
                    .iter()
                    .find_map(|v| Challenge::parse(v).ok());
                let creds = reg.trunk.credentials();
                match (challenge, creds) {
                    (Some(c), Some((user, password))) => {
                        let uri = format!("sip:{}", reg.trunk.domain());
                        let value =
                            c.authorization(&user, &password, "REGISTER", &uri, 1, &new_cnonce());
                        self.register_trunk(index, Some((answer, value)));
                    }
                    _ => self.registration_failed(index, "challenge cannot be answered"),
                }
            }
            _ => {
                let reason = format!("{code} {}", response.status_code);
                self.registration_failed(index, &reason);
            }
        }
    }

    pub(super) fn on_register_timeout(&mut self, key: &TransactionKey) {
        if let Some(index) = self.registrations.by_key.remove(key) {
            self.registration_failed(index, "no response");
        }
    }

    fn registration_failed(&mut self, index: usize, why: &str) {
        let Some(reg) = self.registrations.trunks.get_mut(index) else {
            return;
        };
        reg.failures = reg.failures.saturating_add(1);
        reg.authenticated = false;
        let delay = backoff(reg.failures);
        warn!(trunk = %reg.trunk.name, %why, retry_s = delay.as_secs(), "registration to trunk failed");
        self.schedule(delay, Command::RegisterTrunk(index));
    }
}

impl Endpoint {
    /// A CRLF pair to the address the trunk was last registered at (RFC 5626 §4.4.1's
    /// keepalive; a SIP stack ignores it between messages), then the next one in
    /// `keepalive_s`.
    pub(super) fn trunk_keepalive(&mut self, index: usize) {
        let Some(reg) = self.registrations.trunks.get(index) else {
            return;
        };
        if let Some(peer) = reg.peer {
            self.out.send(peer, b"\r\n\r\n".to_vec());
        }
        let every = Duration::from_secs(reg.trunk.keepalive_s.max(1));
        self.schedule(every, Command::TrunkKeepalive(index));
    }
}

/// The address the trunk saw our REGISTER come from, when its 200's top Via (our Via,
/// stamped by the trunk, RFC 3581) says it differs from `registered`: `received` for the
/// host, `rport` for the port, each defaulting to ours.
fn public_address(response: &rsip::Response, registered: SocketAddr) -> Option<SocketAddr> {
    let via = header_values(&response.headers, "Via").into_iter().next()?;
    let top = split_list(&via).next()?.to_string();
    let ip = header_param(&top, "received")
        .and_then(|r| r.trim().parse::<IpAddr>().ok())
        .unwrap_or(registered.ip());
    let port = header_param(&top, "rport")
        .and_then(|r| r.trim().parse::<u16>().ok())
        .unwrap_or(registered.port());
    let seen = SocketAddr::new(ip, port);
    (seen != registered).then_some(seen)
}

/// 1 s after the first failure, doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// The lifetime the registrar granted our binding: `expires` on our Contact in the 200,
/// else its Expires header.
fn granted_expires(response: &rsip::Response, ours: &str) -> Option<u32> {
    let contacts = header_values(&response.headers, "Contact");
    let on_contact = contacts.iter().flat_map(|v| split_list(v)).find_map(|c| {
        (uri_of(c).as_deref() == Some(ours))
            .then(|| header_param(c, "expires")?.trim().parse().ok())
            .flatten()
    });
    on_contact.or_else(|| {
        header_value(&response.headers, "Expires")?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = [1, 2, 3, 9, 10, 40]
            .iter()
            .map(|f| backoff(*f).as_secs())
            .collect();
        assert_eq!(secs, vec![1, 2, 4, 256, 300, 300]);
    }

    fn ok_with_via(via: &str) -> rsip::Response {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:a@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"
        );
        rsip::Response::try_from(text.as_str()).unwrap()
    }

    #[test]
    fn the_public_address_comes_from_received_and_rport() {
        let local: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        let nat = ok_with_via(
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=40123;received=203.0.113.9",
        );
        assert_eq!(
            public_address(&nat, local),
            Some("203.0.113.9:40123".parse().unwrap())
        );
        // Only the port mapped (or only the host): the other part is ours.
        let port_only = ok_with_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=40123");
        assert_eq!(
            public_address(&port_only, local),
            Some("10.0.0.5:40123".parse().unwrap())
        );
        // No NAT: the trunk saw what we registered, or said nothing.
        let same = ok_with_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=5060");
        assert_eq!(public_address(&same, local), None);
        let plain = ok_with_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1");
        assert_eq!(public_address(&plain, local), None);
    }

    #[test]
    fn granted_lifetime_is_read_from_our_contact_first() {
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
            To: <sip:a@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
            Contact: <sip:other@192.0.2.9>;expires=3600, <sip:a@127.0.0.1:5060>;expires=120\r\n\
            Expires: 900\r\nContent-Length: 0\r\n\r\n";
        let ok = rsip::Response::try_from(text).unwrap();
        assert_eq!(granted_expires(&ok, "sip:a@127.0.0.1:5060"), Some(120));
        assert_eq!(granted_expires(&ok, "sip:b@127.0.0.1:5060"), Some(900));
    }
}
