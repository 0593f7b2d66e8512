//! Responses Siphon sends as UAS, and the headers and SDP that name Siphon (Contact, Via,
//! media).

use rsip::prelude::*;
use rsip::{Header, Method};
use std::net::IpAddr;

use siphon_sip::message::{self, ALLOW, response_to};
use siphon_sip::sdp::{Codec, LocalMedia};
use siphon_sip::transaction::{TransactionKey, new_branch};
use siphon_sip::{Peer, Transport};
use tracing::debug;

use super::{Endpoint, new_tag, now};
use crate::counters::EndResult;

impl Endpoint {
    pub(super) fn reply_to(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        code: u16,
        reason: Option<&str>,
        extra: &[Header],
    ) {
        self.count_rejection(request, code);
        let tag = (code > 100).then(new_tag);
        let mut resp = response_to(request, code, reason, tag.as_deref());
        for h in extra {
            resp.headers.push(h.clone());
        }
        message::finish(&mut resp.headers, b"");
        if let Err(e) = self.layer.send_response(now(), key, resp) {
            debug!(%key, error = %e, "could not send response");
        }
    }

    /// A response to a server transaction's own request (looked up in the layer).
    pub(super) fn reply(
        &mut self,
        key: &TransactionKey,
        code: u16,
        tag: Option<&str>,
        extra: &[Header],
    ) {
        let Some(request) = self.layer.request(key).cloned() else {
            return;
        };
        self.count_rejection(&request, code);
        let mut resp = response_to(&request, code, None, tag.or(Some(&new_tag())));
        for h in extra {
            resp.headers.push(h.clone());
        }
        message::finish(&mut resp.headers, b"");
        if let Err(e) = self.layer.send_response(now(), key, resp) {
            debug!(%key, error = %e, "could not send response");
        }
    }

    /// Final non-2xx responses to initial INVITEs, by code (re-INVITEs are not calls).
    pub(super) fn count_rejection(&self, request: &rsip::Request, code: u16) {
        let initial = request
            .to_header()
            .ok()
            .and_then(|to| message::header_param(to.value(), "tag"))
            .is_none();
        if request.method == Method::Invite && code >= 300 && initial {
            self.counters.call_rejected(code);
        }
    }

    /// Siphon's media for a leg whose peer is at `peer` (its address family decides the
    /// address the SDP names).
    pub(super) fn local_media(&self, port: u16, peer: IpAddr) -> LocalMedia {
        LocalMedia {
            address: self.advertised.for_peer(peer),
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime: 20,
        }
    }

    pub(super) fn contact_uri(&self, peer: Peer) -> String {
        match peer.transport {
            Transport::Udp => format!("sip:siphon@{}", self.addr_for(peer)),
            t => format!(
                "sip:siphon@{};transport={}",
                self.addr_for(peer),
                t.via_token().to_lowercase()
            ),
        }
    }

    pub(super) fn contact_header(&self, peer: Peer) -> Header {
        Header::Contact(format!("<{}>", self.contact_uri(peer)).into())
    }

    pub(super) fn via_value(&self, peer: Peer) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            peer.transport.via_token(),
            self.addr_for(peer),
            new_branch()
        )
    }
}

pub(super) fn allow() -> Header {
    Header::Allow(ALLOW.into())
}

/// The Reason header (RFC 3326) of a BYE Siphon sends: a fixed text per way a call ends.
/// Never free text: what went wrong inside (a fork's URL and error, say) may hold secrets
/// and characters that would break the header; it goes to the log, redacted.
pub(super) fn reason_header(result: EndResult) -> Header {
    let text = match result {
        EndResult::Completed => "Call completed",
        EndResult::Cancelled => "Call cancelled",
        EndResult::NoAnswer => "No answer",
        EndResult::RtpTimeout => "Media timeout",
        EndResult::MediaEnded => "Media ended",
        EndResult::NoAck => "No ACK",
        EndResult::Admin => "Ended by the operator",
        EndResult::DrainTimeout | EndResult::Shutdown => "Server shutting down",
        EndResult::SessionExpired => "Session expired",
        EndResult::Other => "Call ended",
    };
    Header::Other("Reason".into(), format!("SIP;cause=200;text=\"{text}\""))
}
