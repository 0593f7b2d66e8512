//! The B2BUA: calls to `user` and `trunk` routes. Siphon answers the caller as a UAS (as
//! for every other route) and places one outgoing INVITE per registered contact of the
//! called account (or one to the trunk, answering its digest challenge), each a UAC leg
//! with its own Call-ID, tags and client transaction. The first phone to answer wins and
//! the others get CANCEL; provisional and final responses are mapped back to the caller;
//! CANCEL and BYE end both legs; hold on one leg is re-offered on the other. Media is
//! relayed by `crate::bridge`, one task per call.
//!
//! This is part of the SIP core task (a child module of `endpoint`, so it shares the
//! transaction layer and needs no locks); only the bookkeeping of bridged calls lives here.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rsip::prelude::{HeadersExt, UntypedHeader};
use rsip::{Header, Headers, Method};
use siphon_fork::CallMeta;
use siphon_sip::auth::{Challenge, new_cnonce};
use siphon_sip::dialog::{Dialog, DialogId, DialogState, cseq_number};
use siphon_sip::message::{self, header_value, header_values, response_to};
use siphon_sip::sdp::{Codec, Direction, LocalMedia, LocalSession, SessionDescription};
use siphon_sip::transaction::{TransactionKey, TransactionLayer};
use siphon_sip::{Peer, Transport};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{CallSummary, Command, Endpoint, allow, new_tag, now, parse_offer};
use crate::bridge::{self, BridgeHandle, BridgeSetup, Side};
use crate::cdr::{CdrFork, CdrLeg, CdrRecord, Party};
use crate::config::{Action, Route};
use crate::counters::{EndResult, SETUP_BUCKETS, inc};
use crate::dialplan;
use crate::media::MediaParams;

/// Every bridged call, and the indexes that find one from a message.
#[derive(Default)]
pub(super) struct Bridges {
    /// By the caller's dialog (which also names the call for the admin API).
    calls: HashMap<DialogId, Bridged>,
    /// The caller's INVITE server transaction (CANCEL, missing ACK).
    by_invite: HashMap<TransactionKey, DialogId>,
    /// Each outgoing INVITE's client transaction.
    by_branch: HashMap<TransactionKey, DialogId>,
    /// The answering phone's Call-ID (its BYE and re-INVITEs).
    by_callee_call_id: HashMap<String, DialogId>,
    /// Every outgoing INVITE of the last minutes and where it went: a phone that rings or
    /// answers after its call is over still gets its CANCEL, or its ACK and BYE.
    sent: HashMap<TransactionKey, (Peer, Instant)>,
    /// re-INVITEs Siphon sent to relay hold/unhold: the call, the leg, and the ACK once
    /// the 2xx came (sent again for a retransmitted 2xx).
    reinvites: HashMap<TransactionKey, (DialogId, Side, Option<rsip::Request>)>,
}

impl Bridges {
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub(super) fn contains(&self, id: &DialogId) -> bool {
        self.calls.contains_key(id)
    }

    /// The bridged call whose caller used `call_id` (admin API).
    pub(super) fn find(&self, call_id: &str) -> Option<DialogId> {
        self.calls.keys().find(|id| id.call_id == call_id).cloned()
    }

    /// Admin API: a fork on a bridged call; `false` if there is no such call.
    pub(super) fn attach_fork(
        &self,
        id: &DialogId,
        fork_id: String,
        config: siphon_fork::ForkConfig,
    ) -> bool {
        self.calls
            .get(id)
            .is_some_and(|c| c.media.attach_fork(fork_id, config))
    }

    pub(super) fn detach_fork(&self, id: &DialogId, fork_id: String) -> bool {
        self.calls
            .get(id)
            .is_some_and(|c| c.media.detach_fork(fork_id))
    }

    pub(super) fn ids(&self) -> Vec<DialogId> {
        self.calls.keys().cloned().collect()
    }

    /// Forgets outgoing INVITEs older than `keep` (no response can match them any more).
    pub(super) fn purge(&mut self, now: Instant, keep: Duration) {
        self.sent
            .retain(|_, (_, at)| now.duration_since(*at) < keep);
    }
}

struct Bridged {
    caller: CallerLeg,
    branches: Vec<Branch>,
    winner: Option<usize>,
    /// Offer/answer state towards the callee (we offered; re-INVITEs may follow).
    callee_session: LocalSession,
    callee_codec: Option<Codec>,
    media: BridgeHandle,
    route: String,
    callee_user: String,
    started: Instant,
    started_at: SystemTime,
    answered_at: Option<SystemTime>,
    span: tracing::Span,
    /// The direction last offered to each leg (caller, callee): hold is relayed only
    /// when it changes.
    offered: [Direction; 2],
}

fn index(side: Side) -> usize {
    match side {
        Side::Caller => 0,
        Side::Callee => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Caller => Side::Callee,
        Side::Callee => Side::Caller,
    }
}

impl Bridged {
    fn branch(&self, key: &TransactionKey) -> Option<usize> {
        self.branches.iter().position(|b| &b.key == key)
    }

    fn winner(&self) -> Option<&Branch> {
        self.winner.and_then(|i| self.branches.get(i))
    }
}

struct CallerLeg {
    dialog: Dialog,
    peer: Peer,
    invite_key: TransactionKey,
    invite: rsip::Request,
    session: LocalSession,
    codec: Codec,
    /// Our answer to the caller's offer, sent with 183 (early media) and with the 200; or
    /// our offer, sent with the 200 only, when the caller made none.
    answer_sdp: String,
    /// The caller's INVITE had no SDP: its answer comes with the ACK.
    late_offer: bool,
    answered: bool,
}

/// One outgoing INVITE (one registered contact).
struct Branch {
    key: TransactionKey,
    invite: rsip::Request,
    peer: Peer,
    state: BranchState,
    /// The winner's dialog, once it answered.
    dialog: Option<Dialog>,
    /// Re-sent for each retransmitted 2xx.
    ack: Option<rsip::Request>,
    /// For a trunk that may challenge Siphon (401/407): username and password.
    credentials: Option<(String, String)>,
    /// The INVITE already carries credentials: a second challenge is a failure.
    authenticated: bool,
}

/// Where one outgoing INVITE goes.
struct Target {
    uri: String,
    peer: Peer,
    /// For a trunk: its URI host (From and To are written for the trunk) and credentials.
    trunk: Option<(String, Option<(String, String)>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    /// Sent, no response yet: a CANCEL has to wait for a provisional (RFC 3261 §9.1).
    Trying,
    /// A provisional came (100 included): it can be cancelled.
    Proceeding,
    /// To be cancelled as soon as a provisional comes.
    CancelPending,
    Cancelled,
    Answered,
    Failed(u16),
}

impl Branch {
    fn settled(&self) -> bool {
        matches!(self.state, BranchState::Failed(_))
    }
}

impl Endpoint {
    /// A new call to a `user` route, authenticated already: ring the account's phones.
    pub(super) async fn start_bridge(
        &mut self,
        key: TransactionKey,
        request: rsip::Request,
        peer: Peer,
        route: Route,
    ) {
        let offer = match parse_offer(&request) {
            Ok(offer) => offer,
            Err((code, reason)) => {
                inc(&self.counters.calls_rejected);
                self.reply_to(&key, &request, code, Some(&reason), &[]);
                return;
            }
        };
        let dialled = dialplan::dialled_number(&request.uri).unwrap_or_default();
        let (user, targets) = match route.action {
            Action::Trunk => {
                let Some(trunk) = route.trunk.as_deref().and_then(|t| self.config.trunk(t)) else {
                    // Config validation guarantees the trunk exists.
                    self.reply_to(&key, &request, 500, None, &[]);
                    return;
                };
                let number = route.rewrite(&dialled);
                let domain = trunk.domain();
                let target = Target {
                    uri: format!("sip:{number}@{domain}"),
                    peer: Peer::new(trunk.address, Transport::Udp),
                    trunk: Some((domain, trunk.credentials())),
                };
                (number, vec![target])
            }
            _ => {
                // A pattern route without `user` rings the account that was dialled.
                let user = match (&route.user, route.number.get_ref().starts_with('_')) {
                    (Some(u), _) => u.clone(),
                    (None, true) => dialled.clone(),
                    (None, false) => route.number.get_ref().clone(),
                };
                let targets = self
                    .registrar
                    .lookup(now(), &user)
                    .into_iter()
                    .map(|b| Target {
                        uri: b.contact,
                        peer: b.source,
                        trunk: None,
                    })
                    .collect::<Vec<_>>();
                if targets.is_empty() {
                    info!(%user, "no registered phone; 480");
                    inc(&self.counters.calls_rejected);
                    self.reply_to(&key, &request, 480, None, &[]);
                    return;
                }
                (user, targets)
            }
        };
        let ip = self.config.sip.listen.ip();
        let (Some(caller_rtp), Some(callee_rtp)) =
            (self.ports.allocate(ip).await, self.ports.allocate(ip).await)
        else {
            warn!("RTP port pool exhausted; 503");
            inc(&self.counters.calls_rejected);
            let retry = Header::Other("Retry-After".into(), "5".into());
            self.reply_to(&key, &request, 503, Some("No RTP Ports"), &[retry]);
            return;
        };
        let address = self.config.advertised_address();
        let mut caller_session = LocalSession::new(u64::from(rand::random::<u32>()), address);
        let caller_local = self.local_media(caller_rtp.port);
        // The caller's codec, its media (None until its answer when it made no offer) and
        // the SDP our 200 carries: the answer to its offer, or our offer (late offer: the
        // caller answers in its ACK, RFC 3264 §4).
        let (caller_codec, caller_params, caller_sdp) = match offer {
            Some(offer) => match caller_session.answer(&offer, &caller_local) {
                Ok(n) => (n.codec, Some(params_of(&n)), n.answer.to_string()),
                Err(e) => {
                    inc(&self.counters.calls_rejected);
                    let reason = e.to_string();
                    self.reply_to(&key, &request, e.status_code(), Some(&reason), &[]);
                    return;
                }
            },
            None => {
                let offer = caller_session.offer(&caller_local, Direction::SendRecv);
                (Codec::Pcmu, None, offer.to_string())
            }
        };
        let late_offer = caller_params.is_none();
        let local_tag = new_tag();
        let dialog = match Dialog::new_uas(&request, &local_tag) {
            Ok(d) => d,
            Err(e) => {
                inc(&self.counters.calls_rejected);
                let reason = e.to_string();
                self.reply_to(&key, &request, e.status(), Some(&reason), &[]);
                return;
            }
        };
        // The callee is offered the caller's codec first, so most calls need no transcoding.
        let mut callee_local = self.local_media(callee_rtp.port);
        callee_local.codecs.sort_by_key(|c| *c != caller_codec);
        let mut callee_session = LocalSession::new(u64::from(rand::random::<u32>()), address);
        let callee_offer = callee_session
            .offer(&callee_local, Direction::SendRecv)
            .to_string();
        let from_tag = new_tag();
        let mut branches = Vec::new();
        for target in targets {
            let Some(invite) = self.branch_invite(&request, &target, &from_tag, &callee_offer)
            else {
                warn!(uri = %target.uri, "cannot address this target");
                continue;
            };
            match self.layer.send_request(now(), invite.clone(), target.peer) {
                Ok(key) => branches.push(Branch {
                    key,
                    invite,
                    peer: target.peer,
                    state: BranchState::Trying,
                    dialog: None,
                    ack: None,
                    credentials: target.trunk.and_then(|(_, c)| c),
                    authenticated: false,
                }),
                Err(e) => warn!(error = %e, "could not send INVITE to a contact"),
            }
        }
        if branches.is_empty() {
            inc(&self.counters.calls_rejected);
            self.reply_to(&key, &request, 480, None, &[]);
            return;
        }
        let id = dialog.id.clone();
        let span = tracing::Span::current();
        let media = bridge::spawn(BridgeSetup {
            caller: caller_rtp,
            callee: callee_rtp,
            caller_params,
            call: id.clone(),
            inactivity: Duration::from_secs(self.config.rtp.inactivity_timeout_s),
            commands: self.commands.clone(),
            counters: self.counters.clone(),
            span: span.clone(),
            forks: route.forks.clone(),
            meta: CallMeta {
                call_id: id.call_id.clone(),
                from: header_value(&request.headers, "From").unwrap_or_default(),
                to: header_value(&request.headers, "To").unwrap_or_default(),
                codec: caller_codec.name().to_string(),
                account_sid: None,
            },
        });
        info!(
            number = %route.number.get_ref(),
            %user,
            targets = branches.len(),
            codec = ?caller_codec,
            late_offer,
            "ringing the account's phones"
        );
        let header = |name: &str| header_value(&request.headers, name).unwrap_or_default();
        self.registry.insert(
            id.call_id.clone(),
            CallSummary {
                call_id: id.call_id.clone(),
                from: header("From"),
                to: header("To"),
                number: route.number.get_ref().clone(),
                codec: Some(caller_codec),
                rtp_port: media.port(Side::Caller),
                answered: false,
                started: Instant::now(),
                started_at: SystemTime::now(),
                setup_time: None,
                source: peer.addr,
                rtp: media.stats(Side::Caller),
            },
        );
        for b in &branches {
            self.bridges.by_branch.insert(b.key.clone(), id.clone());
            self.bridges
                .sent
                .insert(b.key.clone(), (b.peer, Instant::now()));
        }
        self.bridges.by_invite.insert(key.clone(), id.clone());
        self.bridges.calls.insert(
            id.clone(),
            Bridged {
                caller: CallerLeg {
                    dialog,
                    peer,
                    invite_key: key,
                    invite: request,
                    session: caller_session,
                    codec: caller_codec,
                    answer_sdp: caller_sdp,
                    late_offer,
                    answered: false,
                },
                branches,
                winner: None,
                callee_session,
                callee_codec: None,
                media,
                route: route.number.get_ref().clone(),
                callee_user: user,
                started: Instant::now(),
                started_at: SystemTime::now(),
                answered_at: None,
                span,
                offered: [Direction::SendRecv; 2],
            },
        );
        let ring = route
            .ring_timeout_s
            .unwrap_or(self.config.sip.ring_timeout_s);
        self.schedule(Duration::from_secs(ring), Command::BridgeNoAnswer(id));
    }

    /// The INVITE for one target: the caller's identity (From, To; for a trunk, written
    /// in the trunk's domain) with our own tag, Call-ID, Via and Contact, and our offer.
    fn branch_invite(
        &self,
        caller_invite: &rsip::Request,
        target: &Target,
        from_tag: &str,
        sdp: &str,
    ) -> Option<rsip::Request> {
        let peer = target.peer;
        let uri = rsip::Uri::try_from(target.uri.as_str()).ok()?;
        let mut from = header_value(&caller_invite.headers, "From")?;
        let mut to = header_value(&caller_invite.headers, "To")?;
        if let Some((domain, _)) = &target.trunk {
            // Providers know the caller by number in their own domain, not by our host.
            let caller = caller_invite
                .from_header()
                .ok()
                .and_then(|f| siphon_sip::dialog::uri_of(f.value()))
                .and_then(|u| rsip::Uri::try_from(u.as_str()).ok())
                .and_then(|u| u.auth.map(|a| a.user))
                .unwrap_or_else(|| "anonymous".into());
            from = format!("<sip:{caller}@{domain}>");
            to = format!("<{}>", target.uri);
        }
        // Loops through other proxies still end: one hop fewer than the caller had.
        let max_forwards = header_value(&caller_invite.headers, "Max-Forwards")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(70)
            .saturating_sub(1);
        let mut headers = Headers::default();
        headers.push(Header::Via(self.via_value(peer.transport).into()));
        headers.push(Header::MaxForwards(max_forwards.to_string().into()));
        headers.push(Header::From(
            format!("{};tag={from_tag}", without_tag(&from)).into(),
        ));
        headers.push(Header::To(without_tag(&to).into()));
        headers.push(Header::CallId(format!("{}@siphon", new_tag()).into()));
        headers.push(Header::CSeq("1 INVITE".into()));
        headers.push(self.contact_header(peer.transport));
        headers.push(allow());
        headers.push(Header::ContentType("application/sdp".into()));
        message::finish(&mut headers, sdp.as_bytes());
        Some(rsip::Request {
            method: Method::Invite,
            uri,
            version: rsip::Version::V2,
            headers,
            body: sdp.as_bytes().to_vec(),
        })
    }

    /// A response to one of our outgoing INVITEs.
    pub(super) fn on_branch_response(&mut self, key: TransactionKey, response: rsip::Response) {
        let code = response.status_code.code();
        if self.bridges.reinvites.contains_key(&key) {
            self.on_reinvite_response(&key, &response);
            return;
        }
        let Some(id) = self.bridges.by_branch.get(&key).cloned() else {
            self.on_stale_branch_response(&key, &response, code);
            return;
        };
        if matches!(code, 401 | 407) && self.answer_challenge(&id, &key, &response) {
            return;
        }
        let _guard = self
            .bridges
            .calls
            .get(&id)
            .map(|c| c.span.clone().entered());
        match code {
            // Any provisional, 100 included, allows a CANCEL (RFC 3261 §9.1).
            100..=199 => self.branch_ringing(&id, &key, &response),
            200..=299 => self.branch_answered(&id, &key, &response),
            _ => self.branch_failed(&id, &key, code),
        }
    }

    /// An outgoing INVITE got no final response in time (Timer B): as if 408 came.
    pub(super) fn on_branch_timeout(&mut self, key: &TransactionKey) {
        if let Some(id) = self.bridges.by_branch.get(key).cloned() {
            self.branch_failed(&id, key, 408);
        }
    }

    /// A trunk challenged our INVITE: send it again with credentials (new branch, next
    /// CSeq; the layer has ACKed the 401/407). `false` when there is nothing to answer
    /// with, or the credentials were refused already.
    fn answer_challenge(
        &mut self,
        id: &DialogId,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> bool {
        let Some((i, transport)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((i, c.branches[i].peer.transport))
        }) else {
            return false;
        };
        let via = self.via_value(transport);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return false;
        };
        let branch = &mut call.branches[i];
        let Some((user, password)) = branch.credentials.clone() else {
            return false;
        };
        if branch.authenticated {
            warn!("the trunk refused Siphon's credentials");
            return false;
        }
        let (challenge_header, answer_header) = if response.status_code.code() == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(challenge) = header_values(&response.headers, challenge_header)
            .iter()
            .find_map(|v| Challenge::parse(v).ok())
        else {
            warn!("the trunk's challenge cannot be answered");
            return false;
        };
        let uri = branch.invite.uri.to_string();
        let credentials =
            challenge.authorization(&user, &password, "INVITE", &uri, 1, &new_cnonce());
        let seq = cseq_number(&branch.invite).unwrap_or(1).wrapping_add(1);
        let mut headers = Headers::default();
        for h in branch.invite.headers.iter() {
            match h {
                Header::Via(_) => headers.push(Header::Via(via.clone().into())),
                Header::CSeq(_) => headers.push(Header::CSeq(format!("{seq} INVITE").into())),
                Header::ContentLength(_) => {}
                h => headers.push(h.clone()),
            }
        }
        headers.push(Header::Other(answer_header.into(), credentials));
        message::finish(&mut headers, &branch.invite.body);
        let invite = rsip::Request {
            headers,
            ..branch.invite.clone()
        };
        match self.layer.send_request(now(), invite.clone(), branch.peer) {
            Ok(new_key) => {
                info!(%user, "answering the trunk's challenge");
                self.bridges.by_branch.remove(key);
                self.bridges.by_branch.insert(new_key.clone(), id.clone());
                self.bridges
                    .sent
                    .insert(new_key.clone(), (branch.peer, Instant::now()));
                branch.key = new_key;
                branch.invite = invite;
                branch.authenticated = true;
                branch.state = BranchState::Trying;
                true
            }
            Err(e) => {
                warn!(error = %e, "could not resend the INVITE with credentials");
                false
            }
        }
    }

    fn branch_ringing(&mut self, id: &DialogId, key: &TransactionKey, response: &rsip::Response) {
        let Some((i, port, transport)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((i, c.media.port(Side::Callee), c.caller.peer.transport))
        }) else {
            return;
        };
        let local = self.local_media(port);
        let contact = self.contact_header(transport);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let branch = &mut call.branches[i];
        match branch.state {
            BranchState::Trying => branch.state = BranchState::Proceeding,
            BranchState::CancelPending => {
                branch.state = BranchState::Proceeding;
                cancel_branch(&mut self.layer, branch);
                return;
            }
            _ => {}
        }
        if call.winner.is_some() || call.caller.answered || response.status_code.code() == 100 {
            return;
        }
        let late_offer = call.caller.late_offer;
        // 183 with SDP: the callee's early media (a ring-back tone, an announcement) goes to
        // the caller, so the caller gets our answer now.
        let early = callee_params(&call.callee_session, &local, &response.body);
        let sdp = match early {
            Some(params) => {
                call.callee_codec = Some(params.codec);
                call.media.update(Side::Callee, params);
                // Our offer to a late-offer caller cannot go in an unreliable 183.
                (!late_offer).then_some(call.caller.answer_sdp.as_str())
            }
            None => None,
        };
        let code = if sdp.is_some() { 183 } else { 180 };
        let resp = caller_response(&call.caller, code, contact, sdp);
        let key = call.caller.invite_key.clone();
        if let Err(e) = self.layer.send_response(now(), &key, resp) {
            debug!(error = %e, "could not relay a provisional response");
        }
    }

    fn branch_answered(&mut self, id: &DialogId, key: &TransactionKey, response: &rsip::Response) {
        let Some((i, peer, port, caller_transport)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((
                i,
                c.branches[i].peer,
                c.media.port(Side::Callee),
                c.caller.peer.transport,
            ))
        }) else {
            return;
        };
        let via = self.via_value(peer.transport);
        let contact_uri = self.contact_uri(peer.transport);
        let caller_contact = self.contact_header(caller_transport);
        let local = self.local_media(port);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        if call.winner == Some(i) {
            // A retransmitted 2xx: our ACK was lost.
            if let Some(ack) = call.branches[i].ack.clone() {
                self.layer.send_ack_for_2xx(ack, peer);
            }
            return;
        }
        let invite_seq = cseq_number(&call.branches[i].invite).unwrap_or(1);
        let dialog = match Dialog::new_uac(&call.branches[i].invite, response) {
            Ok(d) => d,
            Err(e) => {
                // Without a dialog we cannot even ACK; the phone gives up on its own.
                warn!(error = %e, "unusable 2xx from a phone");
                call.branches[i].state = BranchState::Failed(502);
                let key = key.clone();
                self.branch_failed(id, &key, 502);
                return;
            }
        };
        if call.winner.is_some() || call.caller.answered {
            // Another phone answered first: this one is hung up at once.
            info!("a second phone answered; hanging it up");
            call.branches[i].state = BranchState::Failed(200);
            self.ack_and_bye(dialog, invite_seq, peer);
            return;
        }
        let mut dialog = dialog;
        dialog.state = DialogState::Confirmed;
        let ack = dialog.ack(invite_seq, &via, &contact_uri);
        self.layer.send_ack_for_2xx(ack.clone(), peer);
        self.bridges
            .by_callee_call_id
            .insert(dialog.id.call_id.clone(), id.clone());
        let branch = &mut call.branches[i];
        branch.state = BranchState::Answered;
        branch.ack = Some(ack);
        branch.dialog = Some(dialog);
        call.winner = Some(i);
        for (j, other) in call.branches.iter_mut().enumerate() {
            if j != i {
                cancel_branch(&mut self.layer, other);
            }
        }
        match callee_params(&call.callee_session, &local, &response.body) {
            Some(params) => {
                call.callee_codec = Some(params.codec);
                call.media.update(Side::Callee, params);
            }
            // The answer came with the 183 already (or never: then no media flows).
            None if call.callee_codec.is_some() => {}
            None => warn!("the answering phone sent no usable SDP answer"),
        }
        call.media.answered();
        let resp = caller_response(
            &call.caller,
            200,
            caller_contact,
            Some(&call.caller.answer_sdp),
        );
        let resp = {
            let mut resp = resp;
            resp.headers.push(allow());
            resp
        };
        match self
            .layer
            .send_response(now(), &call.caller.invite_key, resp)
        {
            Ok(()) => {
                call.caller.answered = true;
                call.answered_at = Some(SystemTime::now());
                inc(&self.counters.calls_answered);
                let setup = call.started.elapsed();
                self.counters.call_setup.observe(SETUP_BUCKETS, setup);
                if let Some(mut s) = self.registry.get_mut(&id.call_id) {
                    s.answered = true;
                    s.setup_time = Some(setup);
                }
                info!(codec = ?call.callee_codec, "answered; bridged");
            }
            Err(e) => {
                // The caller went away meanwhile (its CANCEL won the race).
                warn!(error = %e, "could not send 200 to the caller");
                self.hang_up_bridge(id, "caller gone", EndResult::Other);
            }
        }
    }

    fn branch_failed(&mut self, id: &DialogId, key: &TransactionKey, code: u16) {
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let Some(i) = call.branch(key) else {
            return;
        };
        if call.branches[i].state == BranchState::Answered {
            return;
        }
        call.branches[i].state = BranchState::Failed(code);
        if call.winner.is_some() || !call.branches.iter().all(Branch::settled) {
            return;
        }
        let codes: Vec<u16> = call
            .branches
            .iter()
            .filter_map(|b| match b.state {
                BranchState::Failed(c) => Some(c),
                _ => None,
            })
            .collect();
        let status = caller_status(&codes);
        info!(?codes, status, "no phone took the call");
        let invite_key = call.caller.invite_key.clone();
        let tag = call.caller.dialog.id.local_tag.clone();
        self.reply(&invite_key, status, Some(&tag), &[]);
        let result = match status {
            408 | 480 => EndResult::NoAnswer,
            _ => EndResult::Other,
        };
        self.end_bridge(id, result, Party::Callee, status);
    }

    /// A response to an INVITE whose call is over: stop the phone (CANCEL if it rings,
    /// ACK and BYE if it answered).
    fn on_stale_branch_response(
        &mut self,
        key: &TransactionKey,
        response: &rsip::Response,
        code: u16,
    ) {
        let Some((peer, _)) = self.bridges.sent.get(key).copied() else {
            return;
        };
        let Some(invite) = self.layer.request(key).cloned() else {
            return;
        };
        match code {
            100..=199 => {
                // A second CANCEL for the same INVITE is refused by the layer: harmless.
                let _ = self.layer.send_request(now(), cancel_of(&invite), peer);
            }
            200..=299 => {
                if let Ok(dialog) = Dialog::new_uac(&invite, response) {
                    info!("a phone answered a call that is over; hanging it up");
                    self.ack_and_bye(dialog, cseq_number(&invite).unwrap_or(1), peer);
                }
            }
            _ => {}
        }
    }

    fn ack_and_bye(&mut self, mut dialog: Dialog, invite_seq: u32, peer: Peer) {
        let contact = self.contact_uri(peer.transport);
        let ack = dialog.ack(invite_seq, &self.via_value(peer.transport), &contact);
        self.layer.send_ack_for_2xx(ack, peer);
        let bye = dialog.request(Method::Bye, &self.via_value(peer.transport), &contact);
        if let Err(e) = self.layer.send_request(now(), bye, peer) {
            debug!(error = %e, "could not send BYE");
        }
    }

    /// Requests for bridged calls: CANCEL of the caller's INVITE, and in-dialog requests
    /// from either phone. `false`: not a bridged call's, the caller handles it.
    pub(super) fn bridge_request(&mut self, key: &TransactionKey, request: &rsip::Request) -> bool {
        if request.method == Method::Cancel {
            let Some(invite_key) = self.layer.find_invite_for_cancel(request) else {
                return false;
            };
            let Some(id) = self.bridges.by_invite.get(&invite_key).cloned() else {
                return false;
            };
            self.reply_to(key, request, 200, None, &[]);
            info!(call_id = %id.call_id, "caller cancelled");
            self.reply(&invite_key, 487, Some(&id.local_tag), &[]);
            self.end_bridge(&id, EndResult::Cancelled, Party::Caller, 487);
            return true;
        }
        let Some(dialog_id) = DialogId::for_incoming(request) else {
            return false;
        };
        let (id, side) = if self.bridges.calls.contains_key(&dialog_id) {
            (dialog_id, Side::Caller)
        } else if let Some(id) = self.bridges.by_callee_call_id.get(&dialog_id.call_id) {
            let id = id.clone();
            let ours = self
                .bridges
                .calls
                .get(&id)
                .and_then(Bridged::winner)
                .and_then(|b| b.dialog.as_ref())
                .is_some_and(|d| d.id == dialog_id);
            if !ours {
                self.reply_to(key, request, 481, None, &[]);
                return true;
            }
            (id, Side::Callee)
        } else {
            return false;
        };
        match request.method {
            Method::Bye => self.bridge_bye(key, request, &id, side),
            Method::Invite => self.bridge_reinvite(key, request, &id, side),
            Method::Info | Method::Options | Method::Notify => {
                self.reply_to(key, request, 200, None, &[])
            }
            _ => self.reply_to(key, request, 405, None, &[allow()]),
        }
        true
    }

    fn bridge_bye(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
        side: Side,
    ) {
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let checked = match side {
            Side::Caller => call.caller.dialog.on_remote_request(request),
            Side::Callee => match call.winner.and_then(|i| call.branches[i].dialog.as_mut()) {
                Some(d) => d.on_remote_request(request),
                None => Ok(()),
            },
        };
        if let Err(e) = checked {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let answered = call.caller.answered;
        let invite_key = call.caller.invite_key.clone();
        self.reply_to(key, request, 200, None, &[]);
        let party = match side {
            Side::Caller => Party::Caller,
            Side::Callee => Party::Callee,
        };
        info!(call_id = %id.call_id, hung_up_by = ?party, "hung up");
        if answered {
            let other = match side {
                Side::Caller => Side::Callee,
                Side::Callee => Side::Caller,
            };
            self.bye_leg(id, other, "hung up");
        } else {
            // A BYE in the caller's early dialog withdraws the call like a CANCEL.
            self.reply(&invite_key, 487, Some(&id.local_tag), &[]);
        }
        self.end_bridge(id, EndResult::Completed, party, 200);
    }

    /// Sends BYE on one leg of a bridged call (its dialog must be confirmed).
    fn bye_leg(&mut self, id: &DialogId, side: Side, reason: &str) {
        let Some(transport) = self.bridges.calls.get(id).and_then(|c| match side {
            Side::Caller => Some(c.caller.peer.transport),
            Side::Callee => c.winner().map(|b| b.peer.transport),
        }) else {
            return;
        };
        let via = self.via_value(transport);
        let contact = self.contact_uri(transport);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let (dialog, peer) = match side {
            Side::Caller => (&mut call.caller.dialog, call.caller.peer),
            Side::Callee => {
                let Some(branch) = call.winner.and_then(|i| call.branches.get_mut(i)) else {
                    return;
                };
                let peer = branch.peer;
                let Some(dialog) = branch.dialog.as_mut() else {
                    return;
                };
                (dialog, peer)
            }
        };
        let mut bye = dialog.request(Method::Bye, &via, &contact);
        bye.headers.push(Header::Other(
            "Reason".into(),
            format!("SIP;cause=200;text=\"{reason}\""),
        ));
        if let Err(e) = self.layer.send_request(now(), bye, peer) {
            warn!(error = %e, "could not send BYE");
        }
    }

    /// A re-INVITE from either phone (hold, unhold, a new address) is answered by Siphon
    /// for that leg alone: the media relay adapts, the other phone needs to know nothing.
    fn bridge_reinvite(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
        side: Side,
    ) {
        let Some((port, transport)) = self.bridges.calls.get(id).map(|c| {
            let transport = match side {
                Side::Caller => c.caller.peer.transport,
                Side::Callee => c
                    .winner()
                    .map_or(c.caller.peer.transport, |b| b.peer.transport),
            };
            (c.media.port(side), transport)
        }) else {
            return;
        };
        let local = self.local_media(port);
        let contact = self.contact_header(transport);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let (dialog, session) = match side {
            Side::Caller => (&mut call.caller.dialog, &mut call.caller.session),
            Side::Callee => {
                let Some(dialog) = call
                    .winner
                    .and_then(|i| call.branches.get_mut(i))
                    .and_then(|b| b.dialog.as_mut())
                else {
                    self.reply_to(key, request, 481, None, &[]);
                    return;
                };
                (dialog, &mut call.callee_session)
            }
        };
        if let Err(e) = dialog.on_remote_request(request) {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let tag = dialog.id.local_tag.clone();
        let mut relay = None;
        let sdp = match parse_offer(request) {
            // No offer: the phone asks for ours.
            Ok(None) => session.offer(&local, Direction::SendRecv).to_string(),
            Ok(Some(offer)) => match session.answer(&offer, &local) {
                Ok(n) => {
                    info!(?side, direction = ?n.direction, "re-INVITE");
                    if side == Side::Callee {
                        call.callee_codec = Some(n.codec);
                    } else {
                        call.caller.codec = n.codec;
                    }
                    call.media.update(side, params_of(&n));
                    // Hold (or unhold) on one leg is told to the other: a phone put on
                    // hold shows it, and stops sending what nobody listens to.
                    let wanted = match n.direction {
                        Direction::RecvOnly => Direction::SendOnly,
                        Direction::Inactive => Direction::Inactive,
                        _ => Direction::SendRecv,
                    };
                    let o = index(other(side));
                    if call.winner.is_some() && call.offered[o] != wanted {
                        call.offered[o] = wanted;
                        relay = Some((other(side), wanted));
                    }
                    n.answer.to_string()
                }
                Err(e) => {
                    // A failed re-INVITE leaves the session as it was (RFC 3261 §14.2).
                    let reason = e.to_string();
                    self.reply_to(key, request, e.status_code(), Some(&reason), &[]);
                    return;
                }
            },
            Err((code, reason)) => {
                self.reply_to(key, request, code, Some(&reason), &[]);
                return;
            }
        };
        self.reply_sdp(key, request, &tag, contact, sdp);
        if let Some((side, direction)) = relay {
            self.send_reinvite(id, side, direction);
        }
    }

    /// A re-INVITE to one leg offering `direction` (hold: sendonly or inactive; unhold:
    /// sendrecv), in that leg's dialog and offer/answer session.
    fn send_reinvite(&mut self, id: &DialogId, side: Side, direction: Direction) {
        let Some((port, transport, codec)) = self.bridges.calls.get(id).map(|c| {
            let (transport, codec) = match side {
                Side::Caller => (c.caller.peer.transport, Some(c.caller.codec)),
                Side::Callee => (
                    c.winner()
                        .map_or(c.caller.peer.transport, |b| b.peer.transport),
                    c.callee_codec,
                ),
            };
            (c.media.port(side), transport, codec)
        }) else {
            return;
        };
        let via = self.via_value(transport);
        let contact = self.contact_uri(transport);
        let mut local = self.local_media(port);
        // Keep the codec the leg uses: a hold should not change codecs.
        local.codecs.sort_by_key(|c| Some(*c) != codec);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let Some((dialog, session, peer)) = leg_state(call, side) else {
            return;
        };
        let sdp = session.offer(&local, direction).to_string();
        let mut request = dialog.request(Method::Invite, &via, &contact);
        request
            .headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut request.headers, sdp.as_bytes());
        request.body = sdp.into_bytes();
        info!(?side, ?direction, "relaying hold state with a re-INVITE");
        match self.layer.send_request(now(), request, peer) {
            Ok(key) => {
                self.bridges.reinvites.insert(key, (id.clone(), side, None));
            }
            Err(e) => warn!(error = %e, "could not send re-INVITE"),
        }
    }

    /// The response to a re-INVITE Siphon sent: a 2xx is ACKed and its answer applied.
    fn on_reinvite_response(&mut self, key: &TransactionKey, response: &rsip::Response) {
        let code = response.status_code.code();
        if code < 200 {
            return;
        }
        let Some((id, side, ack)) = self.bridges.reinvites.get(key).cloned() else {
            return;
        };
        if code >= 300 {
            // The leg keeps its previous session (RFC 3261 §14.1); nothing else to do.
            info!(?side, code, "re-INVITE refused by the phone");
            self.bridges.reinvites.remove(key);
            return;
        }
        let Some((port, transport)) = self.bridges.calls.get(&id).map(|c| {
            let transport = match side {
                Side::Caller => c.caller.peer.transport,
                Side::Callee => c
                    .winner()
                    .map_or(c.caller.peer.transport, |b| b.peer.transport),
            };
            (c.media.port(side), transport)
        }) else {
            self.bridges.reinvites.remove(key);
            return;
        };
        let via = self.via_value(transport);
        let contact = self.contact_uri(transport);
        let local = self.local_media(port);
        let seq = self.layer.request(key).and_then(cseq_number);
        let Some(call) = self.bridges.calls.get_mut(&id) else {
            return;
        };
        let (ack, params) = {
            let Some((dialog, session, peer)) = leg_state(call, side) else {
                return;
            };
            if let Some(ack) = ack {
                self.layer.send_ack_for_2xx(ack, peer); // a retransmitted 2xx
                return;
            }
            let Some(seq) = seq else {
                return;
            };
            let ack = dialog.ack(seq, &via, &contact);
            self.layer.send_ack_for_2xx(ack.clone(), peer);
            (ack, callee_params(session, &local, &response.body))
        };
        if let Some(params) = params {
            call.media.update(side, params);
        }
        if let Some(entry) = self.bridges.reinvites.get_mut(key) {
            entry.2 = Some(ack);
        }
    }

    /// The caller's ACK for our 200 (with its answer, when it made no offer). `false`:
    /// not a bridged call's.
    pub(super) fn bridge_ack(&mut self, ack: &rsip::Request) -> bool {
        let Some(id) = DialogId::for_incoming(ack) else {
            return false;
        };
        let Some(port) = self
            .bridges
            .calls
            .get(&id)
            .map(|c| c.media.port(Side::Caller))
        else {
            return false;
        };
        let local = self.local_media(port);
        let Some(call) = self.bridges.calls.get_mut(&id) else {
            return false;
        };
        call.caller.dialog.state = DialogState::Confirmed;
        if call.caller.late_offer {
            call.caller.late_offer = false;
            match callee_params(&call.caller.session, &local, &ack.body) {
                Some(params) => {
                    call.caller.codec = params.codec;
                    call.media.update(Side::Caller, params);
                }
                None => warn!("the caller's ACK carries no usable SDP answer"),
            }
        }
        true
    }

    /// The caller never acknowledged our 200. `false`: not a bridged call's.
    pub(super) fn bridge_ack_timeout(&mut self, key: &TransactionKey) -> bool {
        let Some(id) = self.bridges.by_invite.get(key).cloned() else {
            return false;
        };
        warn!(call_id = %id.call_id, "no ACK from the caller; ending the bridged call");
        self.hang_up_bridge(&id, "no ACK", EndResult::NoAck);
        true
    }

    /// The ring timeout of a bridged call passed.
    pub(super) fn bridge_no_answer(&mut self, id: &DialogId) {
        let Some(call) = self.bridges.calls.get(id) else {
            return;
        };
        if call.caller.answered {
            return;
        }
        info!(call_id = %id.call_id, "no phone answered; 480");
        let invite_key = call.caller.invite_key.clone();
        self.reply(&invite_key, 480, Some(&id.local_tag), &[]);
        self.end_bridge(id, EndResult::NoAnswer, Party::Siphon, 480);
    }

    /// Siphon ends a bridged call (admin API, shutdown, media gone): BYE to both phones,
    /// or 480 to the caller and CANCEL to the phones if it still rings.
    pub(super) fn hang_up_bridge(&mut self, id: &DialogId, reason: &str, result: EndResult) {
        let Some(call) = self.bridges.calls.get(id) else {
            return;
        };
        let code = if call.caller.answered {
            self.bye_leg(id, Side::Caller, reason);
            self.bye_leg(id, Side::Callee, reason);
            200
        } else {
            let invite_key = call.caller.invite_key.clone();
            self.reply(&invite_key, 480, Some(&id.local_tag), &[]);
            480
        };
        self.end_bridge(id, result, Party::Siphon, code);
    }

    /// Forgets a bridged call: phones still ringing get CANCEL, the media task stops, the
    /// CDR is written.
    fn end_bridge(&mut self, id: &DialogId, result: EndResult, party: Party, code: u16) {
        let Some(mut call) = self.bridges.calls.remove(id) else {
            return;
        };
        for branch in &mut call.branches {
            cancel_branch(&mut self.layer, branch);
            self.bridges.by_branch.remove(&branch.key);
            if let Some(d) = &branch.dialog {
                self.bridges.by_callee_call_id.remove(&d.id.call_id);
            }
        }
        self.bridges.by_invite.remove(&call.caller.invite_key);
        self.bridges
            .reinvites
            .retain(|_, (call_id, _, _)| call_id != id);
        self.registry.remove(&id.call_id);
        inc(&self.counters.calls_ended);
        self.counters.call_ended(result);
        let _guard = call.span.clone().entered();
        debug!(?result, "bridged call ended");
        if let Some(cdr) = &self.cdr {
            let leg =
                |side: Side, codec: Option<Codec>| CdrLeg::new(codec, &call.media.stats(side));
            cdr.write(&CdrRecord {
                call_id: id.call_id.clone(),
                start: call.started_at,
                answer: call.answered_at,
                end: SystemTime::now(),
                caller: header_value(&call.caller.invite.headers, "From")
                    .map(|f| without_tag(&f))
                    .unwrap_or_default(),
                callee: call.callee_user.clone(),
                route: call.route.clone(),
                action: "user".into(),
                result: code,
                end_reason: format!("{result:?}"),
                hung_up_by: party,
                caller_leg: leg(Side::Caller, Some(call.caller.codec)),
                callee_leg: Some(leg(Side::Callee, call.callee_codec)),
                forks: CdrFork::of_call(&self.counters.forks, &id.call_id),
            });
        }
        call.media.stop(&format!("{result:?}"));
    }
}

/// A leg's dialog, offer/answer session and peer (the callee's once it answered).
fn leg_state(call: &mut Bridged, side: Side) -> Option<(&mut Dialog, &mut LocalSession, Peer)> {
    match side {
        Side::Caller => Some((
            &mut call.caller.dialog,
            &mut call.caller.session,
            call.caller.peer,
        )),
        Side::Callee => {
            let branch = call.winner.and_then(|i| call.branches.get_mut(i))?;
            let peer = branch.peer;
            Some((branch.dialog.as_mut()?, &mut call.callee_session, peer))
        }
    }
}

/// Stops a branch that has not answered: CANCEL once it sent a provisional, else on its first.
fn cancel_branch(layer: &mut TransactionLayer, branch: &mut Branch) {
    match branch.state {
        BranchState::Proceeding => {
            if let Err(e) = layer.send_request(now(), cancel_of(&branch.invite), branch.peer) {
                debug!(error = %e, "could not send CANCEL");
            }
            branch.state = BranchState::Cancelled;
        }
        BranchState::Trying => branch.state = BranchState::CancelPending,
        _ => {}
    }
}

/// The CANCEL for an INVITE we sent (RFC 3261 §9.1): same Request-URI, top Via, From, To,
/// Call-ID and CSeq number.
fn cancel_of(invite: &rsip::Request) -> rsip::Request {
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

/// A response on the caller's INVITE (180, 183, 200) with our tag, Contact and SDP.
fn caller_response(
    caller: &CallerLeg,
    code: u16,
    contact: Header,
    sdp: Option<&str>,
) -> rsip::Response {
    let mut resp = response_to(
        &caller.invite,
        code,
        None,
        Some(&caller.dialog.id.local_tag),
    );
    resp.headers.push(contact);
    match sdp {
        Some(sdp) => {
            resp.headers
                .push(Header::ContentType("application/sdp".into()));
            message::finish(&mut resp.headers, sdp.as_bytes());
            resp.body = sdp.as_bytes().to_vec();
        }
        None => message::finish(&mut resp.headers, b""),
    }
    resp
}

fn params_of(n: &siphon_sip::sdp::Negotiated) -> MediaParams {
    MediaParams {
        codec: n.codec,
        payload_type: n.payload_type,
        telephone_event_pt: n.telephone_event_pt,
        remote: n.remote_rtp,
        direction: n.direction,
    }
}

/// The callee's media from its SDP answer to our offer. Reading an answer uses the same
/// rules as answering an offer (first usable audio stream, its codec and address), on a
/// copy of the session so our o= version does not move.
fn callee_params(session: &LocalSession, local: &LocalMedia, body: &[u8]) -> Option<MediaParams> {
    if body.is_empty() {
        return None;
    }
    let answer = SessionDescription::parse_bytes(body).ok()?;
    session
        .clone()
        .answer(&answer, local)
        .ok()
        .map(|n| params_of(&n))
}

/// What the caller hears when no phone took the call, from every phone's final response:
/// a decline (6xx) is final for everyone, busy is the most useful answer after that, then
/// the lowest code. Responses about Siphon's own request to the phone (redirects,
/// authentication, transaction errors) mean nothing to the caller and become 480.
fn caller_status(codes: &[u16]) -> u16 {
    let mapped = codes.iter().map(|&c| match c {
        300..=399 | 401 | 407 | 481 | 482 | 483 | 491 | 503 => 480,
        c => c,
    });
    let mapped: Vec<u16> = mapped.collect();
    if let Some(c) = mapped.iter().find(|c| (600..700).contains(*c)) {
        return *c;
    }
    if mapped.contains(&486) {
        return 486;
    }
    mapped.into_iter().min().unwrap_or(480)
}

/// A From/To value without its tag parameter (`<sip:a@h>;tag=1;x=y` → `<sip:a@h>;x=y`).
fn without_tag(value: &str) -> String {
    // Header parameters start after the URI: after `>` in name-addr form, else after the
    // first `;` (an addr-spec cannot carry URI parameters, RFC 3261 §20.10).
    let split = match value.find('>') {
        Some(i) => i + 1,
        None => value.find(';').unwrap_or(value.len()),
    };
    let (head, params) = value.split_at(split);
    let kept: String = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("tag="))
        .map(|p| format!(";{p}"))
        .collect();
    format!("{}{kept}", head.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_hears_decline_then_busy_then_the_lowest_code() {
        assert_eq!(caller_status(&[486]), 486);
        assert_eq!(caller_status(&[480, 486, 404]), 486);
        assert_eq!(caller_status(&[486, 603]), 603);
        assert_eq!(caller_status(&[408, 487]), 408);
        assert_eq!(caller_status(&[407]), 480);
        assert_eq!(caller_status(&[302, 500]), 480);
        assert_eq!(caller_status(&[]), 480);
    }

    #[test]
    fn tags_are_removed_other_parameters_kept() {
        assert_eq!(
            without_tag("<sip:a@h;user=phone>;tag=1;x=y"),
            "<sip:a@h;user=phone>;x=y"
        );
        assert_eq!(
            without_tag("\"A; B\" <sip:a@h>;TAG=9"),
            "\"A; B\" <sip:a@h>"
        );
        assert_eq!(without_tag("sip:a@h;tag=1"), "sip:a@h");
        assert_eq!(without_tag("<sip:a@h"), "<sip:a@h");
    }
}
