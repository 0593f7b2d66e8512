//! A leg Siphon places as the UAC with its own offer: an originated call
//! (`POST /api/calls`), a transfer's new leg (the API's, a fork service's, a phone's
//! REFER). One place for what they share: the INVITE, the 2xx confirmed into a dialog and
//! ACKed (the same ACK again for each retransmitted 2xx, RFC 3261 §13.2.2.4), the callee's
//! media from its SDP answer, and hanging up a leg whose answer cannot be used. What each
//! caller does with the answered leg (serve it, hand it to a media task) stays with it.

use std::collections::HashMap;
use std::time::Duration;

use rsip::{Header, Headers, Method};
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId, DialogState, cseq_number};
use siphon_sip::message;
use siphon_sip::sdp::{Direction, LocalMedia, LocalSession, SessionDescription};
use siphon_sip::session_timer;
use siphon_sip::transaction::TransactionKey;
use tokio::time::Instant;
use tracing::{info, warn};

use super::session_timers::{OFFERED_SESSION_INTERVAL, session_expires};
use super::{Endpoint, new_tag, now};
use crate::counters::EndResult;
use crate::media::MediaParams;
use crate::rtp_ports::RtpPort;

/// A placed leg until its final response: what its answer is read against.
pub(super) struct UacLeg {
    pub(super) invite: rsip::Request,
    pub(super) peer: Peer,
    pub(super) session: LocalSession,
    pub(super) local: LocalMedia,
    pub(super) rtp: RtpPort,
    /// The INVITEs still waiting for a final response (one per binding rung, the
    /// current trunk address): `endpoint::leg_attempts`.
    pub(super) attempts: Vec<Attempt>,
    /// A trunk's addresses not tried yet, in order (failover).
    pub(super) alternates: Vec<Peer>,
    pub(super) failover_timeout: Duration,
    /// A trunk's username and password, for its digest challenge.
    pub(super) credentials: Option<(String, String)>,
    /// Siphon cancelled the leg: no more retries.
    pub(super) cancelled: bool,
    /// The failure that stands so far, while other attempts still ring.
    pub(super) failure: Option<u16>,
}

/// One INVITE of a leg.
pub(super) struct Attempt {
    pub(super) key: TransactionKey,
    pub(super) invite: rsip::Request,
    pub(super) peer: Peer,
    /// Sent with credentials: a further challenge is a failure.
    pub(super) authenticated: bool,
    /// Any response came: the failover deadline no longer applies.
    pub(super) responded: bool,
}

impl Attempt {
    pub(super) fn new(key: TransactionKey, invite: rsip::Request, peer: Peer) -> Self {
        Self {
            key,
            invite,
            peer,
            authenticated: false,
            responded: false,
        }
    }
}

/// What a leg may try beyond its first INVITE.
#[derive(Default)]
pub(super) struct LegPlan {
    /// The account's other bindings, rung at the same time: Request-URI, where to send.
    pub(super) forks: Vec<(String, Peer)>,
    /// The trunk's further addresses, for failover.
    pub(super) alternates: Vec<Peer>,
    /// How long an attempt may go without any response before the next address is
    /// tried (the trunk's `failover_timeout_s`).
    pub(super) failover_timeout: Duration,
    /// The trunk's credentials.
    pub(super) credentials: Option<(String, String)>,
}

/// Where a leg goes and as whom.
pub(super) struct LegTarget<'a> {
    /// The Request-URI (and To).
    pub(super) uri: &'a str,
    pub(super) peer: Peer,
    /// The From, without a tag (Siphon adds its own).
    pub(super) identity: &'a str,
    pub(super) call_id: String,
}

/// An answered leg: its confirmed dialog and the callee's media.
pub(super) struct Confirmed {
    pub(super) dialog: Dialog,
    pub(super) params: MediaParams,
}

/// Why an answered leg could not be used: the status that stands for the failure in the
/// call table, the CDR and a REFER's NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unusable {
    /// The 2xx does not make a dialog (no To tag, no Contact...): 502.
    BadAnswer,
    /// No SDP answer Siphon can use; the leg got BYE: 488.
    NoMedia,
}

impl Unusable {
    pub(super) fn code(self) -> u16 {
        match self {
            Unusable::BadAnswer => 502,
            Unusable::NoMedia => 488,
        }
    }
}

/// The ACKs of answered legs, by INVITE transaction, for 64·T1 (after that no 2xx can be
/// retransmitted).
#[derive(Default)]
pub(super) struct AckCache {
    acks: HashMap<TransactionKey, (rsip::Request, Peer, Instant)>,
}

impl AckCache {
    pub(super) fn insert(
        &mut self,
        key: TransactionKey,
        ack: rsip::Request,
        peer: Peer,
        keep: Duration,
    ) {
        // Entries older than a 2xx can be retransmitted are dropped on the way.
        self.acks.retain(|_, (_, _, at)| at.elapsed() < keep);
        self.acks.insert(key, (ack, peer, Instant::now()));
    }
}

impl Endpoint {
    /// Allocates the leg's RTP port and sends the INVITE with Siphon's offer (one
    /// attempt; `leg_attempts::place_leg_planned` adds the rest of a target's plan).
    /// `session_timer`: the INVITE asks for a session timer (RFC 4028
    /// §7.1, as a bridged call's callee leg does), which the 2xx may then start
    /// ([`Self::start_leg_session_timer`]).
    pub(super) async fn place_first_attempt(
        &mut self,
        target: LegTarget<'_>,
        session_timer: bool,
    ) -> Result<(TransactionKey, UacLeg), (u16, String)> {
        let peer = target.peer;
        let request_uri =
            rsip::Uri::try_from(target.uri).map_err(|e| (400, format!("bad target: {e}")))?;
        let Some(rtp) = self
            .ports
            .allocate(self.config.rtp_bind_address(peer.addr.ip()))
            .await
        else {
            return Err((503, "no RTP ports".into()));
        };
        let mut session = LocalSession::new(
            u64::from(rand::random::<u32>()),
            self.advertised.for_peer(peer.addr.ip()),
        );
        let local = self.local_media(rtp.port, peer.addr.ip());
        let offer = session.offer(&local, Direction::SendRecv).to_string();
        let mut headers = Headers::default();
        headers.push(Header::Via(self.via_value(peer).into()));
        headers.push(Header::MaxForwards("70".into()));
        headers.push(Header::From(
            format!("{};tag={}", target.identity, new_tag()).into(),
        ));
        headers.push(Header::To(format!("<{}>", target.uri).into()));
        headers.push(Header::CallId(target.call_id.into()));
        headers.push(Header::CSeq("1 INVITE".into()));
        headers.push(self.contact_header(peer));
        headers.extend(super::extensions::request_capabilities());
        if session_timer {
            // Siphon refreshes (`refresher=uac`, RFC 4028 §7.1): a transfer's agent leg
            // takes no in-dialog requests from its far end, and a served call's own
            // refreshes need nothing from the peer but 200 to UPDATE.
            let min_se = self.session_timers.min_se();
            headers.push(Header::Other(
                "Session-Expires".into(),
                format!("{};refresher=uac", OFFERED_SESSION_INTERVAL.max(min_se)),
            ));
            headers.push(Header::Other("Min-SE".into(), min_se.to_string()));
        }
        headers.push(Header::ContentType("application/sdp".into()));
        message::finish(&mut headers, offer.as_bytes());
        let invite = rsip::Request {
            method: Method::Invite,
            uri: request_uri,
            version: rsip::Version::V2,
            headers,
            body: offer.into_bytes(),
        };
        let key = self
            .layer
            .send_request(now(), invite.clone(), peer)
            .map_err(|e| (500, format!("could not send the INVITE: {e}")))?;
        let leg = UacLeg {
            attempts: vec![Attempt::new(key.clone(), invite.clone(), peer)],
            invite,
            peer,
            session,
            local,
            rtp,
            alternates: Vec::new(),
            failover_timeout: Duration::ZERO,
            credentials: None,
            cancelled: false,
            failure: None,
        };
        Ok((key, leg))
    }

    /// A response on an answered leg's INVITE: a retransmitted 2xx gets its ACK again.
    /// `false` if `key` is not an answered leg's.
    pub(super) fn ack_again(&mut self, key: &TransactionKey, code: u16) -> bool {
        let Some((ack, peer, _)) = self.uac_acks.acks.get(key) else {
            return false;
        };
        if (200..300).contains(&code) {
            self.layer.send_ack_for_2xx(ack.clone(), *peer);
        }
        true
    }

    /// A 2xx to a placed leg: the dialog is confirmed and ACKed, and the callee's media
    /// read from its answer. A leg whose answer has no usable SDP gets BYE.
    pub(super) fn confirm_leg(
        &mut self,
        key: &TransactionKey,
        leg: &UacLeg,
        response: &rsip::Response,
    ) -> Result<Confirmed, Unusable> {
        let invite_seq = cseq_number(&leg.invite).unwrap_or(1);
        let mut dialog = match Dialog::new_uac(&leg.invite, response) {
            Ok(dialog) => dialog,
            Err(e) => {
                warn!(error = %e, "unusable 2xx to a leg Siphon placed");
                return Err(Unusable::BadAnswer);
            }
        };
        dialog.state = DialogState::Confirmed;
        let via = self.via_value(leg.peer);
        let contact = self.contact_uri(leg.peer);
        let ack = dialog.ack(invite_seq, &via, &contact);
        self.layer.send_ack_for_2xx(ack.clone(), leg.peer);
        let keep = self.config.timers().t1 * 64;
        self.uac_acks.insert(key.clone(), ack, leg.peer, keep);
        match callee_params(&leg.session, &leg.local, &response.body) {
            Some(params) => Ok(Confirmed { dialog, params }),
            None => {
                warn!("the callee answered without a usable SDP answer; hanging up");
                self.bye_placed(&mut dialog, leg.peer, EndResult::Other);
                Err(Unusable::NoMedia)
            }
        }
    }

    /// The 2xx of a leg placed with a session timer (dialog `id`) sets it running (RFC
    /// 4028 §7.2): Siphon refreshes by UPDATE when the answer makes it the refresher, and
    /// the call ends (BYE) when a refresh does not come in time.
    pub(super) fn start_leg_session_timer(&mut self, id: &DialogId, response: &rsip::Response) {
        let se = session_expires(&response.headers);
        if let Some((interval, refresher)) = session_timer::from_answer(se.as_deref()) {
            info!(
                interval,
                refresher = refresher.as_str(),
                "session timer on the placed leg"
            );
            self.session_timers
                .start_uac(id.clone(), interval, refresher, now());
        }
    }

    /// BYE on a placed leg's dialog, its Reason saying why.
    pub(super) fn bye_placed(&mut self, dialog: &mut Dialog, peer: Peer, result: EndResult) {
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let mut bye = dialog.request(Method::Bye, &via, &contact);
        bye.headers.push(super::replies::reason_header(result));
        if let Err(e) = self.layer.send_request(now(), bye, peer) {
            warn!(error = %e, "could not send BYE");
        }
    }
}

/// The CANCEL for an INVITE we sent (RFC 3261 §9.1): same Request-URI, top Via, From, To,
/// Call-ID and CSeq number.
pub(super) fn cancel_of(invite: &rsip::Request) -> rsip::Request {
    let mut headers = Headers::default();
    let mut via = false;
    for h in invite.headers.iter() {
        match h {
            Header::Via(_) if !via => {
                via = true;
                headers.push(h.clone());
            }
            Header::From(_) | Header::To(_) | Header::CallId(_) | Header::MaxForwards(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    let seq = cseq_number(invite).unwrap_or(1);
    headers.push(Header::CSeq(format!("{seq} CANCEL").into()));
    headers.push(Header::ContentLength(0.into()));
    rsip::Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The callee's media from its SDP answer to our offer. Reading an answer uses the same
/// rules as answering an offer (first usable audio stream, its codec and address), on a
/// copy of the session so our o= version does not move.
pub(super) fn callee_params(
    session: &LocalSession,
    local: &LocalMedia,
    body: &[u8],
) -> Option<MediaParams> {
    if body.is_empty() {
        return None;
    }
    let answer = SessionDescription::parse_bytes(body).ok()?;
    session
        .clone()
        .answer(&answer, local)
        .ok()
        .map(|n| MediaParams::from(&n))
}
