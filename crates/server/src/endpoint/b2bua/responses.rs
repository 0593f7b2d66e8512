//! The phones' responses to Siphon's INVITEs: provisional responses relayed to the caller
//! (183 with early media), the first 2xx ACKed and bridged, failures collected into the
//! one final response the caller gets, a trunk's digest challenge answered, and late
//! answers from phones whose call is over stopped (CANCEL, or ACK and BYE).

use rsip::Method;
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId, DialogState, cseq_number};

use siphon_sip::transaction::TransactionKey;
use std::time::SystemTime;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::prack::Provisional;
use super::{Branch, BranchState, callee_params, caller_response, cancel_branch, cancel_of};
use crate::cdr::Party;
use crate::counters::{EndResult, inc};
use crate::endpoint::reliable::wants_reliable;
use crate::endpoint::session_timers::{allows_update, session_expires};
use crate::endpoint::{Endpoint, now};
use crate::media::bridge::Side;
use siphon_sip::session_timer;

impl Endpoint {
    /// A response to one of our outgoing INVITEs.
    pub(in crate::endpoint) fn on_branch_response(
        &mut self,
        key: TransactionKey,
        response: rsip::Response,
    ) {
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
    pub(in crate::endpoint) fn on_branch_timeout(&mut self, key: &TransactionKey) {
        if let Some(id) = self.bridges.by_branch.get(key).cloned() {
            self.branch_failed(&id, key, 408);
        }
        // A re-INVITE of Siphon's (a relayed hold, a session refresh) that got nothing.
        self.on_refresh_response(key, 408, None);
        self.bridges.forget_offer(key);
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
        let Some((i, peer)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((i, c.branches[i].peer))
        }) else {
            return false;
        };
        let via = self.via_value(peer);
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
        let Some(invite) = crate::endpoint::auth::invite_with_credentials(
            &branch.invite,
            response,
            &via,
            &user,
            &password,
        ) else {
            warn!("the trunk's challenge cannot be answered");
            return false;
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
        if let Provisional::Drop = self.prack_if_reliable(id, key, response) {
            return;
        }
        let Some((i, port, callee, caller)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((
                i,
                c.media.port(Side::Callee),
                c.branches[i].peer,
                c.caller.peer,
            ))
        }) else {
            return;
        };
        let local = self.local_media(port, callee.addr.ip());
        let contact = self.contact_header(caller);
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
        let reliable = wants_reliable(&call.caller.invite);
        self.send_provisional(id, &key, reliable, resp);
        if let Some(events) = &self.events {
            let data = crate::endpoint::call_events::summary_data(&self.registry, &id.call_id);
            events.emit(&id.call_id, crate::events::EventKind::CallRinging, data);
        }
    }

    fn branch_answered(&mut self, id: &DialogId, key: &TransactionKey, response: &rsip::Response) {
        let Some((i, peer, port, caller)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((
                i,
                c.branches[i].peer,
                c.media.port(Side::Callee),
                c.caller.peer,
            ))
        }) else {
            return;
        };
        let via = self.via_value(peer);
        let contact_uri = self.contact_uri(peer);
        let caller_contact = self.contact_header(caller);
        let local = self.local_media(port, peer.addr.ip());
        let timer_decision = self
            .bridges
            .calls
            .get(id)
            .map(|c| self.session_timers.decide_with(&c.caller.invite, true));
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let invite_seq = cseq_number(&call.branches[i].invite).unwrap_or(1);
        if call.winner == Some(i) {
            let won = call.branches[i].dialog.as_ref();
            if won.is_none_or(|d| d.answers(response)) {
                // A retransmitted 2xx: our ACK was lost.
                if let Some(ack) = call.branches[i].ack.clone() {
                    self.layer.send_ack_for_2xx(ack, peer);
                }
            } else if let Ok(forked) = Dialog::new_uac(&call.branches[i].invite, response) {
                // A proxy forked our INVITE and a second phone answered too (RFC 3261
                // §13.2.2.4): that is another dialog; ACK it and end it, the call stays.
                info!(to_tag = %forked.id.remote_tag, "a forked branch answered too; hanging it up");
                self.ack_and_bye(forked, invite_seq, peer);
            }
            return;
        }
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
        // The callee's 2xx may set a session timer on this leg (RFC 4028 §7.2); Siphon
        // refreshes by UPDATE when the callee allows it, else by re-INVITE.
        let se = session_expires(&response.headers);
        if let Some((interval, refresher)) = session_timer::from_answer(se.as_deref()) {
            info!(
                interval,
                refresher = refresher.as_str(),
                "session timer on the callee leg"
            );
            self.session_timers
                .start_uac(dialog.id.clone(), interval, refresher, now());
        }
        // Requests after the 2xx number after the PRACKs sent in the early dialog.
        dialog.local_seq = dialog.local_seq.max(call.branches[i].prack.last_cseq);
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
        call.callee_allows_update = allows_update(&response.headers);
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
        // call.answered goes out before the forks start (and emit fork.started).
        if let Some(events) = &self.events {
            let data = crate::endpoint::call_events::summary_data(&self.registry, &id.call_id);
            events.emit(&id.call_id, crate::events::EventKind::CallAnswered, data);
        }
        call.media.answered();
        // The caller's session timer starts with the 200 (RFC 4028 §9).
        let timer_headers = match timer_decision {
            Some(decision) => self.session_timers.answer(id, decision, now()),
            None => Vec::new(),
        };
        let resp = caller_response(
            &call.caller,
            200,
            caller_contact,
            Some(&call.caller.answer_sdp),
        );
        let resp = {
            let mut resp = resp;
            resp.headers.extend(timer_headers);
            resp
        };
        // A 2xx may wait for the caller's PRACK of our reliable 183 (RFC 3262 §3): then
        // it goes with that PRACK's 200, and the call counts as answered now.
        let sent = match self.reliable.before_final(id, resp) {
            Some(resp) => self
                .layer
                .send_response(now(), &call.caller.invite_key, resp),
            None => Ok(()),
        };
        match sent {
            Ok(()) => {
                call.caller.answered = true;
                call.answered_at = Some(SystemTime::now());
                inc(&self.counters.calls_answered);
                let setup = call.started.elapsed();
                self.counters.call_setup.observe(setup);
                if let Some(mut s) = self.registry.get_mut(&id.call_id) {
                    s.answered = true;
                    s.setup_time = Some(setup);
                }
                info!(codec = ?call.callee_codec, "answered; bridged");
            }
            Err(e) => {
                // The caller went away meanwhile (its CANCEL won the race).
                warn!(error = %e, "could not send 200 to the caller");
                self.hang_up_bridge(id, EndResult::Other);
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
        if self.fail_over(id, code) {
            return;
        }
        self.branch_failed_settled(id);
    }

    /// Every attempt of call `id` failed and none is left to try: the caller gets the
    /// most telling of their codes, and the call ends.
    pub(super) fn branch_failed_settled(&mut self, id: &DialogId) {
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
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
        let contact = self.contact_uri(peer);
        let ack = dialog.ack(invite_seq, &self.via_value(peer), &contact);
        self.layer.send_ack_for_2xx(ack, peer);
        let bye = dialog.request(Method::Bye, &self.via_value(peer), &contact);
        if let Err(e) = self.layer.send_request(now(), bye, peer) {
            debug!(error = %e, "could not send BYE");
        }
    }
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
}
