//! REFER (RFC 3515) in the dialogs Siphon holds: a phone asking Siphon to move the other
//! party of its call elsewhere (blind transfer). The request is checked here, with the
//! parsing in `siphon_sip::refer`: a REFER outside a dialog Siphon holds is 481, one
//! without a usable `Refer-To` is 400, a `Replaces` naming no call Siphon carries is 404.
//!
//! In a bridged call (`user` and `trunk` routes) a blind REFER is carried out: 202, a
//! NOTIFY `SIP/2.0 100 Trying`, a new leg placed to the target (resolved like an INVITE to
//! that number: a registered account, or the dialplan's `user` or `trunk` route), and on
//! its answer the referrer's leg of the bridge is switched to it: the media task swaps
//! that leg's socket and peer (Siphon anchors the media, so the party that stays hears
//! nothing of it and needs no re-INVITE), the forks keep streaming, the referrer gets the
//! final NOTIFY (`200 OK`, subscription terminated) and is expected to hang up (BYE
//! answered 200; Siphon sends BYE itself after 64·T1 if it does not). A failed leg (4xx-6xx,
//! Timer B) gets its status in the final NOTIFY and the call stays as it was.
//!
//! The admin API's transfer of a bridged call takes the same path
//! ([`Endpoint::transfer_bridged`]): the caller is moved, so the new leg replaces the
//! callee's, which gets BYE instead of NOTIFYs.
//!
//! The new leg is placed like originate's and the API's (`leg_attempts`): every registered
//! phone of an account rings (the first 2xx wins, the others get CANCEL), a trunk's 401/407
//! is answered with its credentials, and a trunk's next address is tried after a 408/5xx
//! or silence. Attended transfer (`Replaces`) is `replaces.rs`; a REFER in a call Siphon
//! serves is `served_refer.rs`.

use std::mem;

use rsip::{Header, Method};
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId, cseq_number};
use siphon_sip::message;
use siphon_sip::refer::{self, ReferTo};
use siphon_sip::sdp::{Codec, Direction, LocalSession};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::in_dialog::leg_state;
use super::{Bridged, index};
use crate::config::Action;
use crate::control::Command;
use crate::counters::EndResult;
use crate::endpoint::Endpoint;
use crate::endpoint::leg_attempts::Outcome;
use crate::endpoint::leg_targets::Resolved;
use crate::endpoint::originate::Callee;
use crate::endpoint::uac_leg::{Confirmed, LegTarget, UacLeg};
use crate::endpoint::{new_tag, now};
use crate::media::bridge::Side;
use crate::transfer::{TransferState, TransferStatus};

/// How long the implicit subscription of a REFER lasts (`Subscription-State` of the
/// provisional NOTIFY); the final NOTIFY ends it long before.
const SUBSCRIPTION_S: u32 = 60;

/// A bridged call's REFER being carried out: the new leg until its final response.
pub(in crate::endpoint) struct Referral {
    pub(super) call: DialogId,
    /// Whose leg the new one replaces: the referrer's.
    referrer: Side,
    leg: UacLeg,
    /// The target as the call table and `call.transferred` show it (`user:1003`).
    target: String,
    /// The REFER's CSeq: the `id` of the NOTIFYs' Event (RFC 3515 §2.4.6). None: the
    /// admin API's transfer of the call's caller (no referrer to tell; the callee it
    /// leaves gets BYE).
    refer_seq: Option<u32>,
    /// Who asked: `refer`, `api` or `service` (the call table, `call.transferred`).
    by: &'static str,
    /// The referrer wants NOTIFYs (false with `Refer-Sub: false`, RFC 4488).
    notify: bool,
    span: tracing::Span,
}

/// A referrer's dialog after its transfer: its BYE (or Siphon's) ends it.
pub(in crate::endpoint) struct Referrer {
    dialog: Dialog,
    peer: Peer,
}

/// Where a Refer-To's user goes, and the target's name in the `to` vocabulary.
pub(in crate::endpoint) fn refer_callee(
    config: &crate::config::Config,
    user: &str,
) -> Option<(Callee, String)> {
    let number: String = user.chars().filter(|c| !"-.() ".contains(*c)).collect();
    if number.is_empty() {
        return None;
    }
    if config.account(&number).is_some() {
        return Some((Callee::User(number.clone()), format!("user:{number}")));
    }
    let route = config.route_for(&number, None)?;
    match route.action {
        Action::User => {
            let user = match (&route.user, route.number.get_ref().starts_with('_')) {
                (Some(u), _) => u.clone(),
                (None, true) => number,
                (None, false) => route.number.get_ref().clone(),
            };
            Some((Callee::User(user.clone()), format!("user:{user}")))
        }
        Action::Trunk => {
            let trunk = route.trunk.clone()?;
            let number = route.rewrite(&number);
            let label = format!("trunk:{trunk}/{number}");
            Some((Callee::Trunk { trunk, number }, label))
        }
        _ => None,
    }
}

/// The NOTIFY of a refer subscription carrying the referred call's status.
pub(in crate::endpoint) fn notify(
    dialog: &mut Dialog,
    via: &str,
    contact: &str,
    refer_seq: u32,
    status: u16,
) -> rsip::Request {
    let body = refer::sipfrag(status, message::reason(status));
    let mut request = dialog.request(Method::Notify, via, contact);
    request.headers.push(Header::Other(
        "Event".into(),
        format!("{};id={refer_seq}", refer::EVENT_REFER),
    ));
    request.headers.push(Header::Other(
        "Subscription-State".into(),
        refer::subscription_state(status, SUBSCRIPTION_S),
    ));
    request
        .headers
        .push(Header::ContentType(refer::SIPFRAG_CONTENT_TYPE.into()));
    message::finish(&mut request.headers, body.as_bytes());
    request.body = body.into_bytes();
    request
}

impl Endpoint {
    /// A REFER in a dialog: `bridged` is the bridged call and leg
    /// [`Endpoint::bridge_request`] found it in; otherwise it must be a dialog of a call
    /// Siphon answered.
    pub(in crate::endpoint) async fn on_refer(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        bridged: Option<(DialogId, Side)>,
    ) {
        let checked = match &bridged {
            Some((id, side)) => match self
                .bridges
                .calls
                .get_mut(id)
                .and_then(|c| leg_state(c, *side))
            {
                Some((dialog, _, _)) => dialog.on_remote_request(request),
                None => Err(siphon_sip::dialog::DialogError::Missing("dialog")),
            },
            None => match DialogId::for_incoming(request).and_then(|id| self.calls.get_mut(&id)) {
                Some(call) => call.dialog.on_remote_request(request),
                None => {
                    self.reply_to(key, request, 481, None, &[]);
                    return;
                }
            },
        };
        if let Err(e) = checked {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let target = match refer_to_of(request) {
            Ok(t) => t,
            Err(e) => {
                info!(error = %e, "REFER refused");
                let reason = e.to_string();
                self.reply_to(key, request, e.status(), Some(&reason), &[]);
                return;
            }
        };
        if let Some(replaces) = target.replaces.clone() {
            match bridged {
                Some((id, side)) => {
                    self.refer_attended(key, request, id, side, target, replaces);
                }
                None if !self.carries_call_id(&replaces.call_id) => {
                    info!(replaces = %replaces.call_id, "REFER with Replaces naming no call here; 404");
                    self.reply_to(key, request, 404, Some("Replaced Call Not Found"), &[]);
                }
                None => {
                    info!(target = %target.uri, "attended transfer from a served call is not built; 603");
                    self.reply_to(key, request, 603, Some("Transfer Not Available"), &[]);
                }
            }
            return;
        }
        match bridged {
            Some((id, side)) => self.refer_bridged(key, request, id, side, target).await,
            None => match DialogId::for_incoming(request) {
                Some(id) => self.refer_served(key, request, id, target).await,
                None => self.reply_to(key, request, 481, None, &[]),
            },
        }
    }

    /// A blind REFER from one leg of a bridged call: 202, NOTIFY 100, the new leg placed.
    async fn refer_bridged(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: DialogId,
        side: Side,
        target: ReferTo,
    ) {
        let Some(call) = self.bridges.calls.get(&id) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        if !call.caller.answered || call.winner.is_none() {
            self.reply_to(key, request, 403, Some("Call Not Answered"), &[]);
            return;
        }
        if self.bridges.refers.values().any(|r| r.call == id) {
            self.reply_to(key, request, 491, Some("Transfer In Progress"), &[]);
            return;
        }
        let span = call.span.clone();
        let Some((callee, label)) = refer_callee(&self.config, &target.user) else {
            span.in_scope(
                || info!(target = %target.uri, "REFER to a number no route reaches; 404"),
            );
            self.reply_to(key, request, 404, None, &[]);
            return;
        };
        let Resolved {
            uri,
            peer,
            from_host,
            plan,
        } = match self.resolve_leg(&callee) {
            Ok(resolved) => resolved,
            Err((code, reason)) => {
                span.in_scope(|| info!(%label, code, %reason, "REFER target unreachable"));
                let code = if code == 404 { 480 } else { code };
                self.reply_to(key, request, code, Some(&reason), &[]);
                return;
            }
        };
        // The new party sees who it will talk to: the one who stays.
        let identity = match side {
            Side::Caller => {
                let host = from_host.unwrap_or_else(|| self.addr_for(peer).ip().to_string());
                format!("<sip:{}@{host}>", call.callee_user)
            }
            Side::Callee => super::without_tag(&call.identity),
        };
        let refer_seq = cseq_number(request).unwrap_or(1);
        span.in_scope(
            || info!(%label, %uri, referrer = ?side, "REFER accepted; placing the new leg"),
        );
        let notify = self.accept_refer(key, request).is_some();
        if notify {
            self.notify_referrer(&id, side, refer_seq, 100);
        }
        // The same leg machinery as originate and the API's transfer: every binding of an
        // account rings, a trunk's challenge is answered and its next address tried.
        let placed = self
            .place_leg_planned(
                LegTarget {
                    uri: &uri,
                    peer,
                    identity: &identity,
                    call_id: format!("{}@siphon", new_tag()),
                },
                plan,
                false,
            )
            .await;
        let (leg_key, leg) = match placed {
            Ok(placed) => placed,
            Err((code, reason)) => {
                span.in_scope(|| warn!(code, %reason, "could not place the REFER's new leg"));
                if notify {
                    self.notify_referrer(&id, side, refer_seq, code);
                }
                return;
            }
        };
        if let Some(mut s) = self.registry.get_mut(&id.call_id) {
            s.transfer = Some(TransferStatus::trying(&label, "refer"));
        }
        let gone = !self.bridges.calls.contains_key(&id);
        self.bridges.refers.insert(
            leg_key.clone(),
            Referral {
                call: id,
                referrer: side,
                leg,
                target: label,
                refer_seq: Some(refer_seq),
                by: "refer",
                notify,
                span: span.clone(),
            },
        );
        if gone {
            // The call ended while the RTP port was allocated.
            self.cancel_referrals(&leg_key);
        }
    }

    /// `POST /api/calls/{id}/transfer` (or a fork service's `transfer`) of an answered
    /// bridged call: the caller is moved to `to` (the `to` vocabulary of originate). The
    /// new leg replaces the callee's in the bridge when it answers, like a REFER from the
    /// callee would, and the callee gets BYE; a failed leg leaves the call as it was.
    pub(in crate::endpoint) async fn transfer_bridged(
        &mut self,
        id: DialogId,
        to: &str,
        by: &'static str,
    ) -> Result<(), (u16, String)> {
        let Some(call) = self.bridges.calls.get(&id) else {
            return Err((404, format!("no call with Call-ID {}", id.call_id)));
        };
        if !call.caller.answered || call.winner.is_none() {
            return Err((409, "the call is not answered yet".into()));
        }
        if self.bridges.refers.values().any(|r| r.call == id) {
            return Err((409, "a transfer of this call is already in progress".into()));
        }
        let identity = super::without_tag(&call.identity);
        let span = call.span.clone();
        let callee = crate::endpoint::originate::parse_callee(to).map_err(|e| (400, e))?;
        let Resolved {
            uri, peer, plan, ..
        } = self.resolve_leg(&callee)?;
        let (leg_key, leg) = self
            .place_leg_planned(
                LegTarget {
                    uri: &uri,
                    peer,
                    identity: &identity,
                    call_id: format!("{}@siphon", new_tag()),
                },
                plan,
                false,
            )
            .await?;
        span.in_scope(|| info!(%to, %uri, "transfer of a bridged call: placing the new leg"));
        if let Some(mut s) = self.registry.get_mut(&id.call_id) {
            s.transfer = Some(TransferStatus::trying(to, by));
        }
        let gone = !self.bridges.calls.contains_key(&id);
        self.bridges.refers.insert(
            leg_key.clone(),
            Referral {
                call: id.clone(),
                referrer: Side::Callee,
                leg,
                target: to.to_string(),
                refer_seq: None,
                by,
                notify: false,
                span,
            },
        );
        if gone {
            self.cancel_referrals(&leg_key);
            return Err((404, format!("no call with Call-ID {}", id.call_id)));
        }
        Ok(())
    }

    /// Answers an accepted REFER 202: with `Refer-Sub: false` (RFC 4488) the 202 says so
    /// too and no NOTIFY follows (None); otherwise the REFER's CSeq, the `id` of the
    /// NOTIFYs' Event.
    pub(in crate::endpoint) fn accept_refer(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
    ) -> Option<u32> {
        let refer_sub = siphon_sip::message::header_value(&request.headers, "Refer-Sub");
        if refer::wants_subscription(refer_sub.as_deref()) {
            self.reply_to(key, request, 202, None, &[]);
            Some(cseq_number(request).unwrap_or(1))
        } else {
            let header = Header::Other("Refer-Sub".into(), "false".into());
            self.reply_to(key, request, 202, None, &[header]);
            None
        }
    }

    /// NOTIFY to the referrer, still a leg of the call, with the new leg's `status`.
    pub(super) fn notify_referrer(
        &mut self,
        id: &DialogId,
        side: Side,
        refer_seq: u32,
        status: u16,
    ) {
        let Some(peer) = self
            .bridges
            .calls
            .get_mut(id)
            .and_then(|c| leg_state(c, side))
            .map(|l| l.2)
        else {
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let Some((dialog, _, _)) = self
            .bridges
            .calls
            .get_mut(id)
            .and_then(|c| leg_state(c, side))
        else {
            return;
        };
        let request = notify(dialog, &via, &contact, refer_seq, status);
        if let Err(e) = self.layer.send_request(now(), request, peer) {
            warn!(error = %e, "could not send NOTIFY");
        }
    }

    /// CANCEL for the new leg of a REFER whose call ended (its final response then finds
    /// no call: a 2xx gets BYE).
    fn cancel_referrals(&mut self, key: &TransactionKey) {
        if let Some(mut r) = self.bridges.refers.remove(key) {
            self.cancel_leg(&mut r.leg);
            self.bridges.refers.insert(key.clone(), r);
        }
    }

    /// The bridged call `id` ended: REFER legs still ringing for it get CANCEL.
    pub(super) fn release_referrals_of(&mut self, id: &DialogId) {
        let keys: Vec<TransactionKey> = self
            .bridges
            .refers
            .iter()
            .filter(|(_, r)| &r.call == id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.cancel_referrals(&key);
        }
        self.bridges.moved_callers.retain(|_, call| call != id);
    }

    /// A response to a REFER's new leg (any of its attempts: bindings, a trunk's retry
    /// with credentials or next address); `false` if `key` is not one.
    pub(in crate::endpoint) fn on_refer_leg_response(
        &mut self,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut r) = self.bridges.refers.remove(&leg_key) else {
            return false;
        };
        let outcome = r
            .span
            .clone()
            .in_scope(|| self.attempt_response(&leg_key, &mut r.leg, key, response));
        match outcome {
            Outcome::Pending => {
                self.bridges.refers.insert(leg_key, r);
            }
            Outcome::Ringing => {
                let mut first = false;
                if let Some(mut s) = self.registry.get_mut(&r.call.call_id)
                    && let Some(t) = s.transfer.as_mut()
                {
                    first = t.state == TransferState::Trying;
                    t.state = TransferState::Ringing;
                }
                // The referrer hears of the first 18x (`SIP/2.0 180 Ringing`): its phone
                // can show that the target rings. Later ones add nothing it can show.
                if first
                    && r.notify
                    && let Some(seq) = r.refer_seq
                {
                    let (call, side) = (r.call.clone(), r.referrer);
                    self.notify_referrer(&call, side, seq, response.status_code.code());
                }
                self.bridges.refers.insert(leg_key, r);
            }
            Outcome::Answered => self.refer_answered(r, key, response),
            Outcome::Failed(code) => self.refer_failed(r, code),
        }
        true
    }

    /// A REFER's new leg (one of its attempts) got no final response (Timer B); `false`
    /// if not one.
    pub(in crate::endpoint) fn on_refer_leg_timeout(&mut self, key: &TransactionKey) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut r) = self.bridges.refers.remove(&leg_key) else {
            return false;
        };
        match self.attempt_timeout(&leg_key, &mut r.leg, key) {
            Outcome::Failed(code) => self.refer_failed(r, code),
            _ => {
                self.bridges.refers.insert(leg_key, r);
            }
        }
        true
    }

    /// A REFER leg's trunk attempt reached its failover deadline; `false` if not one.
    pub(in crate::endpoint) fn refer_attempt_deadline(&mut self, key: &TransactionKey) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut r) = self.bridges.refers.remove(&leg_key) else {
            return false;
        };
        let outcome = r
            .span
            .clone()
            .in_scope(|| self.attempt_deadline(&leg_key, &mut r.leg, key));
        match outcome {
            Outcome::Failed(code) => self.refer_failed(r, code),
            _ => {
                self.bridges.refers.insert(leg_key, r);
            }
        }
        true
    }

    /// The new leg failed: the referrer hears why, the call stays as it was.
    fn refer_failed(&mut self, r: Referral, code: u16) {
        let _g = r.span.enter();
        info!(code, target = %r.target, "REFER's new leg failed; the call stays as it was");
        if let Some(mut s) = self.registry.get_mut(&r.call.call_id)
            && let Some(t) = s.transfer.as_mut()
        {
            t.finished(code, None);
        }
        if let Some(seq) = r.refer_seq.filter(|_| r.notify) {
            self.notify_referrer(&r.call, r.referrer, seq, code);
        }
    }

    /// The new leg answered: the referrer's leg of the bridge becomes the new leg.
    fn refer_answered(&mut self, r: Referral, key: &TransactionKey, response: &rsip::Response) {
        let span = r.span.clone();
        let _g = span.enter();
        let Confirmed { mut dialog, params } = match self.confirm_leg(key, &r.leg, response) {
            Ok(confirmed) => confirmed,
            Err(unusable) => {
                self.refer_failed(r, unusable.code());
                return;
            }
        };
        if !self.bridges.calls.contains_key(&r.call) {
            warn!("REFER's new leg answered after the call ended; hanging it up");
            self.bye_placed(&mut dialog, r.leg.peer, EndResult::Completed);
            return;
        }
        let allows_update = crate::endpoint::session_timers::allows_update(&response.headers);
        let Some(call) = self.bridges.calls.get_mut(&r.call) else {
            return;
        };
        let UacLeg {
            invite,
            peer,
            session,
            rtp,
            ..
        } = r.leg;
        let codec = params.codec;
        call.media.replace(r.referrer, rtp, params);
        let parts = LegParts {
            dialog,
            peer,
            session,
            codec,
            invite,
            allows_update,
        };
        let Some((mut old, old_peer)) = self.install_leg(&r.call, r.referrer, parts) else {
            return;
        };
        if let Some(mut s) = self.registry.get_mut(&r.call.call_id)
            && let Some(t) = s.transfer.as_mut()
        {
            t.finished(response.status_code.code(), None);
        }
        info!(target = %r.target, referrer = ?r.referrer, "REFER carried out: the new leg is bridged");
        self.emit_call_transferred(&r.call.call_id, &r.target, r.by);
        let Some(refer_seq) = r.refer_seq else {
            // The API moved the caller: the callee it leaves is hung up.
            self.bye_placed(&mut old, old_peer, EndResult::Completed);
            return;
        };
        self.referral_done(old, old_peer, r.notify.then_some(refer_seq));
    }

    /// The referrer's transfer is done and its dialog left the call: it gets the final
    /// NOTIFY (200; none with `Refer-Sub: false`) and is expected to hang up; its BYE is
    /// answered, and after 64·T1 Siphon sends its own.
    pub(super) fn referral_done(&mut self, mut dialog: Dialog, peer: Peer, refer_seq: Option<u32>) {
        if let Some(refer_seq) = refer_seq {
            let via = self.via_value(peer);
            let contact = self.contact_uri(peer);
            let request = notify(&mut dialog, &via, &contact, refer_seq, 200);
            if let Err(e) = self.layer.send_request(now(), request, peer) {
                warn!(error = %e, "could not send NOTIFY");
            }
        }
        let linger = self.config.timers().t1 * 64;
        self.schedule(linger, Command::ReferrerLinger(dialog.id.clone()));
        self.bridges
            .referrers
            .insert(dialog.id.clone(), Referrer { dialog, peer });
    }

    /// A request in a referrer's dialog after its transfer: BYE ends it (200), a NOTIFY or
    /// OPTIONS gets 200, anything else 481 (the call has moved on). `false` if the
    /// dialog is not a referrer's.
    pub(super) fn referrer_request(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
    ) -> bool {
        let Some(referrer) = self.bridges.referrers.get_mut(id) else {
            return false;
        };
        if let Err(e) = referrer.dialog.on_remote_request(request) {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return true;
        }
        match request.method {
            Method::Bye => {
                self.bridges.referrers.remove(id);
                info!(call_id = %id.call_id, "the referrer hung up after its transfer");
                self.reply_to(key, request, 200, None, &[]);
            }
            Method::Notify | Method::Options => self.reply_to(key, request, 200, None, &[]),
            _ => self.reply_to(key, request, 481, None, &[]),
        }
        true
    }

    /// 64·T1 after a transfer the referrer has not hung up: Siphon sends its BYE.
    pub(in crate::endpoint) fn referrer_linger(&mut self, id: &DialogId) {
        let Some(mut referrer) = self.bridges.referrers.remove(id) else {
            return;
        };
        info!(call_id = %id.call_id, "the referrer did not hang up after its transfer; BYE");
        self.bye_placed(&mut referrer.dialog, referrer.peer, EndResult::Completed);
    }

    /// Whether a call Siphon carries has a dialog with this Call-ID (either leg).
    pub(super) fn carries_call_id(&self, call_id: &str) -> bool {
        self.calls.keys().any(|id| id.call_id == call_id)
            || self.bridges.by_callee_call_id.contains_key(call_id)
            || self.bridges.calls.keys().any(|id| id.call_id == call_id)
    }
}

/// What a leg of a bridged call is made of in SIP, moved as one when another phone takes
/// the leg's place (a REFER's new leg, or an attended transfer's far party).
pub(super) struct LegParts {
    pub(super) dialog: Dialog,
    pub(super) peer: Peer,
    pub(super) session: LocalSession,
    pub(super) codec: Codec,
    /// The INVITE that made the dialog (the caller's, or Siphon's to the callee).
    pub(super) invite: rsip::Request,
    /// The phone's INVITE or 2xx allows UPDATE.
    pub(super) allows_update: bool,
}

impl Endpoint {
    /// The SIP side of a leg switch (the media is switched by the caller of this): leg
    /// `side` of bridged call `id` becomes `parts`, the indexes that route the new phone's
    /// requests to the call are updated, and the phone that had the leg is returned (its
    /// dialog and address) for its NOTIFY or BYE. `None` if the call or leg is gone.
    pub(super) fn install_leg(
        &mut self,
        id: &DialogId,
        side: Side,
        parts: LegParts,
    ) -> Option<(Dialog, Peer)> {
        let call = self.bridges.calls.get_mut(id)?;
        let LegParts {
            dialog,
            peer,
            session,
            codec,
            invite,
            allows_update,
        } = parts;
        let new_id = dialog.id.clone();
        // The new phone was offered (or offered) sendrecv; its session starts afresh.
        call.offered[index(side)] = Direction::SendRecv;
        call.answer_in_ack[index(side)] = false;
        let (old, old_peer) = match side {
            Side::Caller => {
                call.caller.session = session;
                call.caller.codec = codec;
                call.caller.invite = invite;
                let old_peer = mem::replace(&mut call.caller.peer, peer);
                (mem::replace(&mut call.caller.dialog, dialog), old_peer)
            }
            Side::Callee => {
                let branch = call.winner.and_then(|i| call.branches.get_mut(i))?;
                call.callee_session = session;
                call.callee_codec = Some(codec);
                call.callee_allows_update = allows_update;
                branch.invite = invite;
                let old_peer = mem::replace(&mut branch.peer, peer);
                (branch.dialog.replace(dialog)?, old_peer)
            }
        };
        let port = call.media.port(side);
        match side {
            Side::Caller => {
                self.bridges.moved_callers.retain(|k, _| k != &old.id);
                self.bridges.moved_callers.insert(new_id, id.clone());
            }
            Side::Callee => {
                self.bridges.by_callee_call_id.remove(&old.id.call_id);
                self.bridges
                    .by_callee_call_id
                    .insert(new_id.call_id.clone(), id.clone());
            }
        }
        self.session_timers.forget(&old.id);
        if side == Side::Caller
            && let Some(mut s) = self.registry.get_mut(&id.call_id)
        {
            s.rtp_port = port;
            s.codec = Some(codec);
        }
        Some((old, old_peer))
    }
}

impl Bridged {
    /// Whether `id` is the dialog the caller's leg has now (a transfer may have moved it).
    pub(super) fn caller_dialog_is(&self, id: &DialogId) -> bool {
        &self.caller.dialog.id == id
    }
}

/// The REFER's target from its `Refer-To` headers (long or compact `r` form).
pub(super) fn refer_to_of(request: &rsip::Request) -> Result<ReferTo, refer::ReferError> {
    let values = request.headers.iter().filter_map(|h| match h {
        rsip::Header::Other(name, value)
            if name.eq_ignore_ascii_case("refer-to") || name.eq_ignore_ascii_case("r") =>
        {
            Some(value.as_str())
        }
        _ => None,
    });
    refer::parse_refer_to_headers(values)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn refer_targets_resolve_like_a_dialled_number() {
        let config = crate::config::Config::embedded().unwrap();
        let account = config.accounts[0].username.get_ref().clone();
        assert_eq!(
            refer_callee(&config, &account),
            Some((Callee::User(account.clone()), format!("user:{account}")))
        );
        assert_eq!(refer_callee(&config, ""), None);
        assert_eq!(refer_callee(&config, "no-such-number-999"), None);
    }

    #[test]
    fn notify_carries_the_sipfrag_and_subscription_state() {
        let invite = rsip::Request::try_from(
            "INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let mut dialog = Dialog::new_uas(&invite, "b").unwrap();
        let n = notify(
            &mut dialog,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
            "sip:s@127.0.0.1",
            7,
            486,
        );
        let text = n.to_string();
        assert!(
            text.starts_with("NOTIFY sip:a@127.0.0.1:5070 SIP/2.0"),
            "{text}"
        );
        assert!(text.contains("Event: refer;id=7"), "{text}");
        assert!(
            text.contains("Subscription-State: terminated;reason=noresource"),
            "{text}"
        );
        assert!(text.ends_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
        let n = notify(
            &mut dialog,
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKy",
            "sip:s@127.0.0.1",
            7,
            100,
        );
        assert!(
            n.to_string()
                .contains("Subscription-State: active;expires=60")
        );
    }
}
