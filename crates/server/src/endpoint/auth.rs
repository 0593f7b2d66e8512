//! Digest authentication of requests: challenges (401/407), checking a call's credentials,
//! and counting failures towards a source's block.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use rsip::Header;
use siphon_sip::Peer;
use siphon_sip::message::header_value;
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use super::{Endpoint, now, without_tag};
use crate::counters::inc;
use crate::limits::Verdict;
use siphon_sip::auth::{Challenge, new_cnonce};
use siphon_sip::dialog::{cseq_number, uri_of};

impl Endpoint {
    /// Counts a failed authentication; blocks the source past the threshold, unless it is
    /// a trunk's address: a carrier shares one address among many customers, and blocking
    /// it would take every call from that carrier down with one customer's typos.
    pub(super) fn auth_failed(&mut self, source: SocketAddr, account: &str) {
        inc(&self.counters.auth_failures);
        match self.auth_failures.record(source.ip(), account, now()) {
            Verdict::Block { .. } if self.config.trunk_for_ip(source.ip()).is_some() => {
                warn!(
                    source = %source.ip(),
                    %account,
                    "many failed authentications from a trunk's address; trunks are never blocked"
                );
            }
            Verdict::Block {
                until,
                source_failures,
            } => {
                inc(&self.counters.auth_blocks);
                warn!(
                    source = %source.ip(),
                    %account,
                    failures = source_failures,
                    block_s = self.config.limits.auth_block_s,
                    "too many failed authentications; blocking the source"
                );
                self.blocklist.block(source.ip(), until);
            }
            Verdict::Counted {
                account_failures, ..
            } => {
                if account_failures > 0 && account_failures % 50 == 0 {
                    warn!(%account, account_failures, "many failed authentications for one account");
                }
            }
        }
    }

    /// 401 (registrar) or 407 (calls) with one challenge per configured algorithm, its
    /// nonces bound to `source` (the address the response goes to).
    pub(super) fn challenge(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        source: IpAddr,
        stale: bool,
        proxy: bool,
    ) {
        inc(&self.counters.auth_challenges);
        let headers: Vec<Header> = self
            .auth
            .challenge(SystemTime::now(), source, stale)
            .into_iter()
            .map(|c| {
                if proxy {
                    Header::ProxyAuthenticate(c.into())
                } else {
                    Header::WwwAuthenticate(c.into())
                }
            })
            .collect();
        let code = if proxy { 407 } else { 401 };
        self.reply_to(key, request, code, None, &headers);
    }

    /// Authenticates a call's caller: a trunk by its source address, else an account by
    /// digest. `Refused` means a response (407 or 403) was sent.
    pub(super) fn admit_call(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        peer: Peer,
    ) -> Admission {
        if self.config.trunk_for_ip(peer.addr.ip()).is_some() {
            return Admission::Trunk;
        }
        let Some(authorization) = header_value(&request.headers, "Proxy-Authorization") else {
            self.challenge(key, request, peer.addr.ip(), false, true);
            return Admission::Refused;
        };
        let config = self.config.clone();
        let password_of = |name: &str| config.account(name).and_then(|a| a.password.clone());
        match self.auth.verify(
            SystemTime::now(),
            peer.addr.ip(),
            request.method.to_string().as_str(),
            &authorization,
            &password_of,
        ) {
            Ok(v) => {
                self.auth_failures.success(peer.addr.ip());
                Admission::Account(v.username)
            }
            Err(e) if e.is_stale() => {
                self.challenge(key, request, peer.addr.ip(), true, true);
                Admission::Refused
            }
            Err(e) if !e.counts_as_failure() => {
                // Credentials that are not an answer to a challenge of ours for this
                // address (foreign, forged or malformed): a fresh challenge, not a failure
                // counted against an address anyone can forge.
                debug!(source = %peer.addr, error = %e, "INVITE credentials not for us; 407");
                self.challenge(key, request, peer.addr.ip(), false, true);
                Admission::Refused
            }
            Err(e) => {
                let account = credentials_user(&authorization);
                self.auth_failed(peer.addr, &account);
                info!(source = %peer.addr, error = %e, "INVITE authentication failed");
                self.reply_to(key, request, 403, None, &[]);
                Admission::Refused
            }
        }
    }
}

impl Endpoint {
    /// The From Siphon presents for a call `account` authenticated (without its tag): the
    /// caller's own when its user part is the account or one of the account's
    /// `caller_ids`, else the account itself in the From's URI (a spoofed caller ID does
    /// not reach the callee, a trunk or the CDR).
    pub(super) fn presented_identity(
        &self,
        request: &rsip::Request,
        from_user: Option<&str>,
        account: &str,
    ) -> String {
        let from = header_value(&request.headers, "From")
            .map(|f| without_tag(&f))
            .unwrap_or_default();
        let allowed = from_user.is_some_and(|u| {
            u == account
                || self
                    .config
                    .account(account)
                    .is_some_and(|a| a.caller_ids.iter().any(|id| id == u))
        });
        if allowed {
            return from;
        }
        let host = uri_of(&from)
            .and_then(|u| rsip::Uri::try_from(u.as_str()).ok())
            .map(|u| u.host_with_port.to_string())
            .unwrap_or_else(|| self.advertised.for_peer(self.sip_addr.ip()).to_string());
        warn!(%account, claimed = ?from_user, "caller ID not allowed for the account; presenting the account");
        format!("<sip:{account}@{host}>")
    }
}

/// Who a call comes from, once authenticated.
pub(super) enum Admission {
    /// A trunk, by its source address (routes were chosen for it already).
    Trunk,
    /// An account that answered the digest challenge.
    Account(String),
    /// Challenged or refused; the response was sent.
    Refused,
}

/// The identity a trusted source asserts (RFC 3325 P-Asserted-Identity, the first value:
/// a SIP URI and a tel URI may both be given), without header parameters; `None` when
/// absent or not a SIP/tel URI.
pub(super) fn asserted_identity(request: &rsip::Request) -> Option<String> {
    let value = header_value(&request.headers, "P-Asserted-Identity")?;
    let value = value.trim();
    // name-addr ends at its '>'; an addr-spec at the first ',' (the next value).
    let first = match value.find('>') {
        Some(end) if value.contains('<') => &value[..=end],
        _ => value.split(',').next().unwrap_or_default(),
    };
    let uri = uri_of(first)?;
    let scheme = uri
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel") || uri.len() <= scheme.len() + 1 {
        return None;
    }
    Some(without_tag(first.trim()))
}

/// The username a credentials header claims (for counting failures), or empty.
pub(super) fn credentials_user(header: &str) -> String {
    header
        .split(',')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .trim_start_matches("Digest")
                .trim()
                .eq_ignore_ascii_case("username")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_default()
}

/// The INVITE a trunk challenged (401/407 in `response`), built again with credentials
/// for `user`/`password`: the next CSeq, a fresh Via (`via`), the answer header that fits
/// the challenge. `None` when the response carries no challenge Siphon can answer. Shared
/// by the B2BUA's branches and originated calls.
pub(super) fn invite_with_credentials(
    invite: &rsip::Request,
    response: &rsip::Response,
    via: &str,
    user: &str,
    password: &str,
) -> Option<rsip::Request> {
    let (challenge_header, answer_header) = if response.status_code.code() == 407 {
        ("Proxy-Authenticate", "Proxy-Authorization")
    } else {
        ("WWW-Authenticate", "Authorization")
    };
    let challenge = siphon_sip::message::header_values(&response.headers, challenge_header)
        .iter()
        .find_map(|v| Challenge::parse(v).ok())?;
    let uri = invite.uri.to_string();
    let credentials = challenge.authorization(user, password, "INVITE", &uri, 1, &new_cnonce());
    let seq = cseq_number(invite).unwrap_or(1).wrapping_add(1);
    let mut headers = rsip::Headers::default();
    for h in invite.headers.iter() {
        match h {
            Header::Via(_) => headers.push(Header::Via(via.to_owned().into())),
            Header::CSeq(_) => headers.push(Header::CSeq(format!("{seq} INVITE").into())),
            Header::ContentLength(_) => {}
            h => headers.push(h.clone()),
        }
    }
    headers.push(Header::Other(answer_header.into(), credentials));
    siphon_sip::message::finish(&mut headers, &invite.body);
    Some(rsip::Request {
        headers,
        ..invite.clone()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn invite(pai: &[&str]) -> rsip::Request {
        let extra: String = pai
            .iter()
            .map(|v| format!("P-Asserted-Identity: {v}\r\n"))
            .collect();
        let text = format!(
            "INVITE sip:700@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK1\r\n\
             From: <sip:1001@h>;tag=a\r\nTo: <sip:700@h>\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(text.as_bytes()).unwrap()
    }

    #[test]
    fn asserted_identity_forms() {
        assert_eq!(asserted_identity(&invite(&[])), None);
        assert_eq!(
            asserted_identity(&invite(&["\"Alice\" <sip:1001@edge>"])).as_deref(),
            Some("\"Alice\" <sip:1001@edge>")
        );
        assert_eq!(
            asserted_identity(&invite(&["<sip:1001@edge>, <tel:+15550001>"])).as_deref(),
            Some("<sip:1001@edge>")
        );
        assert_eq!(
            asserted_identity(&invite(&["tel:+15550001"])).as_deref(),
            Some("tel:+15550001")
        );
        assert_eq!(asserted_identity(&invite(&["<http://x>"])), None);
        assert_eq!(asserted_identity(&invite(&["<"])), None);
        assert_eq!(asserted_identity(&invite(&["sip:"])), None);
    }
}
