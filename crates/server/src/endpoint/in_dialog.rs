//! Requests inside the dialogs of calls Siphon answers itself (ACK, re-INVITE, BYE,
//! CANCEL, INFO), and hanging those calls up.

use std::time::SystemTime;

use rsip::{Header, Method};
use siphon_sip::dialog::{DialogId, DialogState};
use siphon_sip::message::{self, response_to};
use siphon_sip::sdp::SessionDescription;
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use super::replies::reason_header;
use super::{Endpoint, now, parse_offer};
use crate::cdr::{CdrFork, CdrLeg, CdrRecord, Party};
use crate::config::Action;
use crate::control::CallSummary;
use crate::counters::{EndResult, inc};
use crate::media::MediaParams;

impl Endpoint {
    pub(super) fn on_ack(&mut self, ack: &rsip::Request) {
        let Some(id) = DialogId::for_incoming(ack) else {
            return;
        };
        let local = self
            .calls
            .get(&id)
            .map(|c| self.local_media(c.media.port(), c.peer.addr.ip()));
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.dialog.state = DialogState::Confirmed;
        // Late offer: the ACK carries the answer to the offer we put in the 200.
        if !ack.body.is_empty()
            && let (Ok(text), Some(local)) = (std::str::from_utf8(&ack.body), local)
            && let Ok(answer) = SessionDescription::parse(text)
            && let Ok(n) = call.session.answer(&answer, &local)
        {
            call.media.update(MediaParams::from(&n));
        }
    }

    pub(super) fn on_reinvite(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let Some(id) = DialogId::for_incoming(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        let Some((local, contact)) = self.calls.get(&id).map(|c| {
            (
                self.local_media(c.media.port(), c.peer.addr.ip()),
                // The dialog's own transport and address family (RFC 3261 §12.2.2: the
                // Contact is where the peer sends its next requests).
                self.contact_header(c.peer),
            )
        }) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        if let Err(e) = call.dialog.on_remote_request(request) {
            let reason = e.to_string();
            let code = e.status();
            self.reply_to(key, request, code, Some(&reason), &[]);
            return;
        }
        let offer = match parse_offer(request) {
            Ok(Some(offer)) => offer,
            Ok(None) => {
                // A re-INVITE without an offer asks for ours; answer with the current session.
                let sdp = call
                    .session
                    .offer(&local, siphon_sip::sdp::Direction::SendRecv)
                    .to_string();
                self.reply_sdp(key, request, &id.local_tag, contact, sdp);
                return;
            }
            Err((code, reason)) => {
                self.reply_to(key, request, code, Some(&reason), &[]);
                return;
            }
        };
        match call.session.answer(&offer, &local) {
            Ok(n) => {
                info!(call_id = %id.call_id, direction = ?n.direction, "re-INVITE");
                call.media.update(MediaParams::from(&n));
                let sdp = n.answer.to_string();
                self.reply_sdp(key, request, &id.local_tag, contact, sdp);
            }
            Err(e) => {
                // A failed re-INVITE leaves the session as it was (RFC 3261 §14.2).
                let reason = e.to_string();
                self.reply_to(key, request, e.status_code(), Some(&reason), &[]);
            }
        }
    }

    pub(super) fn reply_sdp(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        tag: &str,
        contact: Header,
        sdp: String,
    ) {
        let timer_headers = match DialogId::for_incoming(request) {
            Some(id) if matches!(request.method, Method::Invite | Method::Update) => {
                self.session_timer_headers(&id, request)
            }
            _ => Vec::new(),
        };
        let mut resp = response_to(request, 200, None, Some(tag));
        resp.headers.push(contact);
        resp.headers.extend(super::extensions::capabilities());
        resp.headers.extend(timer_headers);
        resp.headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut resp.headers, sdp.as_bytes());
        resp.body = sdp.into_bytes();
        if let Err(e) = self.layer.send_response(now(), key, resp) {
            debug!(error = %e, "could not send response");
        }
    }

    pub(super) fn on_bye(&mut self, key: &TransactionKey, request: &rsip::Request) {
        if self.on_agent_bye(key, request) {
            return;
        }
        let id = DialogId::for_incoming(request);
        match id.as_ref().and_then(|id| self.calls.get_mut(id)) {
            Some(call) => {
                if let Err(e) = call.dialog.on_remote_request(request) {
                    let reason = e.to_string();
                    let code = e.status();
                    self.reply_to(key, request, code, Some(&reason), &[]);
                    return;
                }
                self.reply_to(key, request, 200, None, &[]);
                if let Some(id) = id {
                    info!(call_id = %id.call_id, "caller hung up");
                    self.end_call_as(&id, EndResult::Completed);
                }
            }
            None => self.reply_to(key, request, 481, None, &[]),
        }
    }

    pub(super) fn on_cancel(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let Some(invite_key) = self.layer.find_invite_for_cancel(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        self.reply_to(key, request, 200, None, &[]);
        match self.by_invite.get(&invite_key).cloned() {
            Some(id) => {
                info!(call_id = %id.call_id, "cancelled");
                self.reply(&invite_key, 487, Some(&id.local_tag.clone()), &[]);
                self.end_call_as(&id, EndResult::Cancelled);
            }
            None => {
                // A call waiting for its webhook's answer is forgotten with it.
                self.webhooks.cancel(&invite_key);
                self.reply(&invite_key, 487, None, &[]);
            }
        }
    }

    /// Sends BYE for a call (a final response if it never answered) and forgets it,
    /// counting it as ended for `result`, which also gives the BYE's Reason.
    pub(super) fn hang_up_as(&mut self, id: &DialogId, result: EndResult) {
        if self.bridges.contains(id) {
            self.hang_up_bridge(id, result);
            return;
        }
        let Some(peer) = self.calls.get(id).map(|c| c.peer) else {
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.answer_sdp.is_some() {
            // Never answered: the INVITE gets a final response instead of a BYE.
            let key = call.invite_key.clone();
            self.reply(&key, 480, Some(&id.local_tag.clone()), &[]);
        } else {
            let mut bye = call.dialog.request(Method::Bye, &via, &contact);
            bye.headers.push(reason_header(result));
            let peer = call.peer;
            if let Err(e) = self.layer.send_request(now(), bye, peer) {
                warn!(error = %e, "could not send BYE");
            }
        }
        self.end_call_as(id, result);
    }

    pub(super) fn hang_up_all(&mut self, result: EndResult) {
        let mut ids: Vec<DialogId> = self.calls.keys().cloned().collect();
        ids.extend(self.bridges.ids());
        for id in ids {
            self.hang_up_as(&id, result);
        }
    }

    pub(super) fn end_call_as(&mut self, id: &DialogId, result: EndResult) {
        self.reliable.forget(id);
        self.session_timers.forget(id);
        self.release_agent_of(id);
        self.served_refers.forget(id);
        if let Some(call) = self.calls.remove(id) {
            self.by_invite.remove(&call.invite_key);
            let summary = self.registry.remove(&id.call_id).map(|(_, s)| s);
            self.call_unlisted(&id.call_id);
            let record = summary
                .filter(|_| self.cdr.is_some() || self.events.is_some())
                .map(|s| {
                    let forks = CdrFork::of_call(&self.counters.forks, &id.call_id);
                    served_call_cdr(&s, call.action, result, forks)
                });
            if let (Some(cdr), Some(record)) = (&self.cdr, &record) {
                cdr.write(record);
            }
            self.emit_call_ended(&id.call_id, record.as_ref());
            inc(&self.counters.calls_ended);
            self.counters.call_ended(result);
            let _guard = call.span.enter();
            debug!(action = ?call.action, "call ended");
            call.media.stop(&format!("{result:?}"));
        }
    }
}

/// The CDR of a call Siphon answered itself (echo, tone, prompt, fork, ring).
fn served_call_cdr(
    s: &CallSummary,
    action: Action,
    result: EndResult,
    forks: Vec<CdrFork>,
) -> CdrRecord {
    let code = match result {
        _ if s.answered => 200,
        EndResult::Cancelled => 487,
        _ => 480,
    };
    let hung_up_by = match result {
        EndResult::Completed | EndResult::Cancelled => Party::Caller,
        _ => Party::Siphon,
    };
    CdrRecord {
        call_id: s.call_id.clone(),
        start: s.started_at,
        answer: s.setup_time.map(|d| s.started_at + d),
        end: SystemTime::now(),
        caller: s.from.split(";tag=").next().unwrap_or_default().to_string(),
        callee: s.number.clone(),
        route: s.number.clone(),
        action: format!("{action:?}").to_lowercase(),
        result: code,
        end_reason: format!("{result:?}"),
        hung_up_by,
        caller_leg: CdrLeg::new(s.codec, &s.rtp),
        callee_leg: None,
        forks,
        transfer: s.transfer.clone(),
    }
}
