//! The B2BUA: calls to `user` and `trunk` routes. Siphon answers the caller as a UAS (as
//! for every other route) and places one outgoing INVITE per registered contact of the
//! called account (or one to the trunk, answering its digest challenge), each a UAC leg
//! with its own Call-ID, tags and client transaction. The first phone to answer wins and
//! the others get CANCEL; provisional and final responses are mapped back to the caller;
//! CANCEL and BYE end both legs; hold on one leg is re-offered on the other. Media is
//! relayed by `crate::media::bridge`, one task per call.
//!
//! This is part of the SIP core task (a child module of `endpoint`, so it shares the
//! transaction layer and needs no locks); only the bookkeeping of bridged calls lives here.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rsip::{Header, Headers, Method};
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId};
use siphon_sip::message::{self, header_value, response_to};
use siphon_sip::sdp::{Codec, Direction, LocalSession};
use siphon_sip::transaction::{TransactionKey, TransactionLayer};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::session_timers::OFFERED_SESSION_INTERVAL;
use super::uac_leg::{callee_params, cancel_of};
use super::{Endpoint, new_tag, now, parse_offer, without_tag};
use crate::cdr::{CdrFork, CdrLeg, CdrRecord, Party};
use crate::config::{Action, Route};
use crate::control::{CallSummary, Command};
use crate::counters::{EndResult, inc};
use crate::dialplan;
use crate::media::MediaParams;
use crate::media::bridge::{self, BridgeHandle, BridgeSetup, Side};

mod failover;
mod glare;
mod in_dialog;
mod info;
mod late_answer;
mod prack;
mod refer;
mod replaces;

pub(super) use refer::{notify as refer_notify, refer_callee};
mod responses;
mod timer_legs;
mod update;
mod update_relay;
mod via_edge;

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
    /// UPDATEs Siphon sent to relay hold/unhold: the call and the leg.
    updates: HashMap<TransactionKey, (DialogId, Side)>,
    /// REFERs being carried out: each new leg's INVITE until its final response.
    refers: HashMap<TransactionKey, refer::Referral>,
    /// The caller's leg after a REFER moved it to a new phone: that phone's dialog.
    moved_callers: HashMap<DialogId, DialogId>,
    /// Referrers' dialogs after their transfer, until their BYE (or Siphon's).
    referrers: HashMap<DialogId, refer::Referrer>,
}

impl Bridges {
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// See `TransactionLayer::shrink_tables`.
    pub(super) fn shrink_tables(&mut self) {
        use siphon_sip::transaction::shrink_if_sparse;
        shrink_if_sparse(&mut self.calls);
        shrink_if_sparse(&mut self.by_invite);
        shrink_if_sparse(&mut self.by_branch);
        shrink_if_sparse(&mut self.by_callee_call_id);
        shrink_if_sparse(&mut self.sent);
        shrink_if_sparse(&mut self.reinvites);
        shrink_if_sparse(&mut self.updates);
        shrink_if_sparse(&mut self.refers);
        shrink_if_sparse(&mut self.moved_callers);
        shrink_if_sparse(&mut self.referrers);
    }

    /// Entries of every index (calls, INVITEs sent in the last minutes, re-INVITEs...).
    pub(super) fn entries(&self) -> usize {
        self.calls.len()
            + self.by_invite.len()
            + self.by_branch.len()
            + self.by_callee_call_id.len()
            + self.sent.len()
            + self.reinvites.len()
            + self.updates.len()
            + self.refers.len()
            + self.moved_callers.len()
            + self.referrers.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub(super) fn contains(&self, id: &DialogId) -> bool {
        self.calls.contains_key(id)
    }

    /// Whether a request with this dialog id belongs to a bridged call (either leg).
    pub(super) fn holds_dialog(&self, id: &DialogId) -> bool {
        self.calls.contains_key(id)
            || self.by_callee_call_id.contains_key(&id.call_id)
            || self.moved_callers.contains_key(id)
            || self.referrers.contains_key(id)
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
    /// The caller as Siphon presents it (From and P-Asserted-Identity to the callee, the
    /// CDR): the authenticated account unless the From is a caller ID it may use.
    identity: String,
    started: Instant,
    started_at: SystemTime,
    answered_at: Option<SystemTime>,
    span: tracing::Span,
    /// The direction last offered to each leg (caller, callee): hold is relayed only
    /// when it changes.
    offered: [Direction; 2],
    /// A trunk's further addresses, tried in order when an attempt fails (RFC 3263 §4.3),
    /// with what each attempt's INVITE is made of.
    failover: failover::Failover,
    /// Per leg (caller, callee): Siphon offered in its 2xx to that leg's re-INVITE without
    /// SDP, so the leg's ACK carries the answer (see `late_answer`).
    answer_in_ack: [bool; 2],
    /// The answering callee's 2xx allows UPDATE: hold is relayed to it by UPDATE when the
    /// caller's came by UPDATE.
    callee_allows_update: bool,
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

    /// Whether the phone of `side` allows UPDATE (its INVITE's or 2xx's `Allow`).
    fn leg_allows_update(&self, side: Side) -> bool {
        match side {
            Side::Caller => super::session_timers::allows_update(&self.caller.invite.headers),
            Side::Callee => self.callee_allows_update,
        }
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
    /// The reliable 18x taken so far (RFC 3262) and the CSeq of the last PRACK.
    prack: prack::PrackState,
    /// The INVITE already carries credentials: a second challenge is a failure.
    authenticated: bool,
}

/// Where one outgoing INVITE goes.
struct Target {
    uri: String,
    peer: Peer,
    /// For a trunk: its URI host (From and To are written for the trunk) and credentials.
    trunk: Option<(String, Option<(String, String)>)>,
    /// The Route header of the INVITE: the outbound proxy it goes through, if any.
    route: Option<String>,
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
    /// The INVITE to `target` just sent as client transaction `key`.
    fn sent(key: TransactionKey, invite: rsip::Request, target: Target) -> Branch {
        Branch {
            key,
            invite,
            peer: target.peer,
            state: BranchState::Trying,
            dialog: None,
            ack: None,
            credentials: target.trunk.and_then(|(_, c)| c),
            authenticated: false,
            prack: prack::PrackState::default(),
        }
    }

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
        identity: String,
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
        let mut failover_targets = Vec::new();
        let mut failover_timeout = Duration::ZERO;
        let (user, targets) = match route.action {
            Action::Trunk => {
                let Some(trunk) = route.trunk.as_deref().and_then(|t| self.config.trunk(t)) else {
                    // Config validation guarantees the trunk exists.
                    self.reply_to(&key, &request, 500, None, &[]);
                    return;
                };
                let number = route.rewrite(&dialled);
                let domain = trunk.domain();
                // One attempt at a time, in RFC 3263 order; the rest wait in `failover`.
                let mut peers = self.trunk_peers(trunk).into_iter().map(|peer| Target {
                    uri: format!("sip:{number}@{domain}"),
                    peer,
                    trunk: Some((domain.clone(), trunk.credentials())),
                    route: None,
                });
                let Some(first) = peers.next() else {
                    warn!(trunk = %trunk.name, "the trunk has no address (its name did not resolve); 503");
                    inc(&self.counters.calls_rejected);
                    self.reply_to(&key, &request, 503, None, &[]);
                    return;
                };
                failover_targets = peers.collect();
                failover_timeout = Duration::from_secs(trunk.failover_timeout_s.max(1));
                (number, vec![first])
            }
            Action::Uri => {
                let uri = route.uri.clone().unwrap_or_default();
                // Config validation (and CallAction::check) guarantee an IP host.
                let Ok(addr) = crate::config::sip_uri_addr(&uri) else {
                    self.reply_to(&key, &request, 500, None, &[]);
                    return;
                };
                let target = Target {
                    uri: uri.clone(),
                    peer: Peer::new(addr, siphon_sip::Transport::Udp),
                    trunk: None,
                    route: None,
                };
                (uri, vec![target])
            }
            _ => {
                // A pattern route without `user` rings the account that was dialled.
                let user = match (&route.user, route.number.get_ref().starts_with('_')) {
                    (Some(u), _) => u.clone(),
                    (None, true) => dialled.clone(),
                    (None, false) => route.number.get_ref().clone(),
                };
                let mut edges = self.edge_targets(&user, peer).into_iter();
                let targets = match edges.next() {
                    Some(first) => {
                        failover_targets = edges.collect();
                        failover_timeout = via_edge::EDGE_FAILOVER_TIMEOUT;
                        vec![first]
                    }
                    None => self
                        .registrar
                        .lookup(now(), &user)
                        .into_iter()
                        .map(|b| Target {
                            uri: b.contact,
                            peer: b.source,
                            trunk: None,
                            route: None,
                        })
                        .collect::<Vec<_>>(),
                };
                if targets.is_empty() {
                    info!(%user, "no registered phone; 480");
                    inc(&self.counters.calls_rejected);
                    self.reply_to(&key, &request, 480, None, &[]);
                    return;
                }
                (user, targets)
            }
        };
        // Each leg's media is in its own peer's address family (an IPv4 caller can ring an
        // IPv6 phone). Phones ringing in parallel share the callee leg's one offer, so the
        // first target's family is the callee leg's.
        let caller_ip = peer.addr.ip();
        let callee_ip = targets.first().map_or(caller_ip, |t| t.peer.addr.ip());
        let (Some(caller_rtp), Some(callee_rtp)) = (
            self.ports
                .allocate(self.config.rtp_bind_address(caller_ip))
                .await,
            self.ports
                .allocate(self.config.rtp_bind_address(callee_ip))
                .await,
        ) else {
            warn!("RTP port pool exhausted; 503");
            inc(&self.counters.calls_rejected);
            let retry = Header::Other("Retry-After".into(), "5".into());
            self.reply_to(&key, &request, 503, Some("No RTP Ports"), &[retry]);
            return;
        };
        let mut caller_session = LocalSession::new(
            u64::from(rand::random::<u32>()),
            self.advertised.for_peer(caller_ip),
        );
        let caller_local = self.local_media(caller_rtp.port, caller_ip);
        // The caller's codec, its media (None until its answer when it made no offer) and
        // the SDP our 200 carries: the answer to its offer, or our offer (late offer: the
        // caller answers in its ACK, RFC 3264 §4).
        let (caller_codec, caller_params, caller_sdp) = match offer {
            Some(offer) => match caller_session.answer(&offer, &caller_local) {
                Ok(n) => (n.codec, Some(MediaParams::from(&n)), n.answer.to_string()),
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
        let mut callee_local = self.local_media(callee_rtp.port, callee_ip);
        callee_local.codecs.sort_by_key(|c| *c != caller_codec);
        let mut callee_session = LocalSession::new(
            u64::from(rand::random::<u32>()),
            self.advertised.for_peer(callee_ip),
        );
        let callee_offer = callee_session
            .offer(&callee_local, Direction::SendRecv)
            .to_string();
        let from_tag = new_tag();
        let mut branches = Vec::new();
        for target in targets {
            let Some(invite) =
                self.branch_invite(&request, &identity, &target, &from_tag, &callee_offer)
            else {
                warn!(uri = %target.uri, "cannot address this target");
                continue;
            };
            match self.layer.send_request(now(), invite.clone(), target.peer) {
                Ok(key) => branches.push(Branch::sent(key, invite, target)),
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
            meta: super::call_meta(&id, &request, &identity, caller_codec),
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
        self.call_listed(&id.call_id);
        self.registry.insert(
            id.call_id.clone(),
            CallSummary {
                call_id: id.call_id.clone(),
                from: identity.clone(),
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
                transfer: None,
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
                identity,
                started: Instant::now(),
                started_at: SystemTime::now(),
                answered_at: None,
                span,
                offered: [Direction::SendRecv; 2],
                failover: failover::Failover {
                    targets: failover_targets,
                    timeout: failover_timeout,
                    from_tag,
                    offer: callee_offer,
                },
                answer_in_ack: [false; 2],
                callee_allows_update: false,
            },
        );
        self.call_events_start(&id.call_id, route.callback_url.as_deref());
        self.arm_failover_timeout(&id);
        let ring = route
            .ring_timeout_s
            .unwrap_or(self.config.sip.ring_timeout_s);
        self.schedule(Duration::from_secs(ring), Command::BridgeNoAnswer(id));
    }

    /// The INVITE for one target: the caller's identity (`identity`, the From Siphon
    /// vouches for, also as P-Asserted-Identity; for a trunk, written in the trunk's
    /// domain) and To, with our own tag, Call-ID, Via and Contact, and our offer.
    fn branch_invite(
        &self,
        caller_invite: &rsip::Request,
        identity: &str,
        target: &Target,
        from_tag: &str,
        sdp: &str,
    ) -> Option<rsip::Request> {
        let peer = target.peer;
        let uri = rsip::Uri::try_from(target.uri.as_str()).ok()?;
        let mut from = identity.to_string();
        let mut to = header_value(&caller_invite.headers, "To")?;
        if let Some((domain, _)) = &target.trunk {
            // Providers know the caller by number in their own domain, not by our host.
            let caller = siphon_sip::dialog::uri_of(identity)
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
        headers.push(Header::Via(self.via_value(peer).into()));
        if let Some(route) = &target.route {
            headers.push(Header::Route(route.clone().into()));
        }
        headers.push(Header::MaxForwards(max_forwards.to_string().into()));
        headers.push(Header::From(
            format!("{};tag={from_tag}", without_tag(&from)).into(),
        ));
        headers.push(Header::To(without_tag(&to).into()));
        headers.push(Header::Other(
            "P-Asserted-Identity".into(),
            without_tag(&from),
        ));
        headers.push(Header::CallId(format!("{}@siphon", new_tag()).into()));
        headers.push(Header::CSeq("1 INVITE".into()));
        headers.push(self.contact_header(peer));
        headers.extend(super::extensions::request_capabilities());
        // Session timers on this leg (RFC 4028 §7.1): the callee's 2xx says who refreshes.
        let min_se = self.session_timers.min_se();
        headers.push(Header::Other(
            "Session-Expires".into(),
            OFFERED_SESSION_INTERVAL.max(min_se).to_string(),
        ));
        headers.push(Header::Other("Min-SE".into(), min_se.to_string()));
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
    pub(super) fn hang_up_bridge(&mut self, id: &DialogId, result: EndResult) {
        let Some(call) = self.bridges.calls.get(id) else {
            return;
        };
        let code = if call.caller.answered {
            self.bye_leg(id, Side::Caller, result);
            self.bye_leg(id, Side::Callee, result);
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
        self.reliable.forget(id);
        self.session_timers.forget(id);
        self.release_referrals_of(id);
        for branch in &mut call.branches {
            cancel_branch(&mut self.layer, branch);
            self.bridges.by_branch.remove(&branch.key);
            if let Some(d) = &branch.dialog {
                self.bridges.by_callee_call_id.remove(&d.id.call_id);
                self.session_timers.forget(&d.id);
            }
        }
        self.bridges.by_invite.remove(&call.caller.invite_key);
        self.bridges
            .reinvites
            .retain(|_, (call_id, _, _)| call_id != id);
        self.bridges.updates.retain(|_, (call_id, _)| call_id != id);
        // A REFER's transfer (its outcome) goes into the CDR.
        let transfer = self
            .registry
            .remove(&id.call_id)
            .and_then(|(_, s)| s.transfer);
        self.call_unlisted(&id.call_id);
        inc(&self.counters.calls_ended);
        self.counters.call_ended(result);
        let _guard = call.span.clone().entered();
        debug!(?result, "bridged call ended");
        self.record_bridge_end(id, &call, &format!("{result:?}"), party, code, transfer);
        call.media.stop(&format!("{result:?}"));
    }
}

impl Endpoint {
    /// The CDR of a bridged call that ended (`end_reason` as the CDR shows it), written and
    /// sent with `call.ended`.
    fn record_bridge_end(
        &mut self,
        id: &DialogId,
        call: &Bridged,
        end_reason: &str,
        party: Party,
        code: u16,
        transfer: Option<crate::transfer::TransferStatus>,
    ) {
        if self.cdr.is_none() && self.events.is_none() {
            return;
        }
        let leg = |side: Side, codec: Option<Codec>| CdrLeg::new(codec, &call.media.stats(side));
        let record = CdrRecord {
            call_id: id.call_id.clone(),
            start: call.started_at,
            answer: call.answered_at,
            end: SystemTime::now(),
            caller: call.identity.clone(),
            callee: call.callee_user.clone(),
            route: call.route.clone(),
            action: "user".into(),
            result: code,
            end_reason: end_reason.to_string(),
            hung_up_by: party,
            caller_leg: leg(Side::Caller, Some(call.caller.codec)),
            callee_leg: Some(leg(Side::Callee, call.callee_codec)),
            forks: CdrFork::of_call(&self.counters.forks, &id.call_id),
            transfer,
        };
        if let Some(cdr) = &self.cdr {
            cdr.write(&record);
        }
        self.emit_call_ended(&id.call_id, Some(&record));
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
    resp.headers.extend(super::extensions::capabilities());
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

#[cfg(test)]
mod tests {
    use super::*;

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
