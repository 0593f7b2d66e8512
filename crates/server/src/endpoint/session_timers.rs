//! Session timers (RFC 4028) of Siphon's dialogs: those it answers as UAS (calls it serves,
//! the caller leg of bridged calls) and the callee legs it places as UAC. The rules are
//! `siphon_sip::session_timer`'s; this keeps the running timers by dialog, writes the
//! headers of 422s and 2xx responses, and each second sends Siphon's refreshes (UPDATE
//! without SDP, at half the interval, where Siphon is the refresher) and ends with BYE the
//! calls whose refreshes stopped (none came in time, or Siphon's got 408 or 481, §10).

use std::collections::HashMap;
use std::time::Instant;

use rsip::{Header, Method};
use siphon_sip::dialog::DialogId;
use siphon_sip::message::{self, header_value, header_values};
use siphon_sip::session_timer::{self, Decision, Refresher, SessionTimer, SessionTimerError};
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use super::{Endpoint, now};
use crate::counters::EndResult;

/// The running session timers, by the dialog Siphon answered (a bridged call's caller
/// dialog, which also names the call).
pub(super) struct SessionTimers {
    /// Each timer, and whether Siphon's 2xx carry `Require: timer` (the peer supports it).
    timers: HashMap<DialogId, (SessionTimer, bool)>,
    /// The smallest interval accepted (`sip.session_min_se_s`; RFC 4028: 90 s).
    min_se: u32,
    /// Siphon's refresh UPDATEs on their way, and the dialog each refreshes.
    refreshes: HashMap<TransactionKey, DialogId>,
}

/// The session interval Siphon's INVITEs to callees ask for (RFC 4028 §4 recommends 1800 s);
/// never below `sip.session_min_se_s`. Bridged calls' callee legs and the legs Siphon
/// places itself (originate, transfer).
pub(super) const OFFERED_SESSION_INTERVAL: u32 = 1800;

/// Whether a message's `Allow` lists UPDATE (RFC 3311 §5.1: only then may Siphon send one).
pub(super) fn allows_update(headers: &rsip::Headers) -> bool {
    header_values(headers, "Allow")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
}

/// A message's `Session-Expires` (or its compact form `x`).
pub(super) fn session_expires(headers: &rsip::Headers) -> Option<String> {
    header_value(headers, "Session-Expires").or_else(|| header_value(headers, "x"))
}

impl SessionTimers {
    pub(super) fn new(min_se: u32) -> Self {
        SessionTimers {
            timers: HashMap::new(),
            min_se,
            refreshes: HashMap::new(),
        }
    }

    /// The smallest interval Siphon accepts (its `Min-SE`).
    pub(super) fn min_se(&self) -> u32 {
        self.min_se
    }

    pub(super) fn has(&self, id: &DialogId) -> bool {
        self.timers.contains_key(id)
    }

    /// Forgets a dialog's timer (its call ended).
    pub(super) fn forget(&mut self, id: &DialogId) {
        self.timers.remove(id);
    }

    /// A callee's 2xx on a leg Siphon placed (dialog `id`) set a session timer.
    pub(super) fn start_uac(
        &mut self,
        id: DialogId,
        interval: u32,
        refresher: Refresher,
        now: Instant,
    ) {
        let timer = SessionTimer::new_uac(interval, refresher, now);
        self.timers.insert(id, (timer, true));
    }

    /// The dialogs where Siphon is to refresh now (each marked as refreshing).
    fn take_due(&mut self, now: Instant) -> Vec<DialogId> {
        let mut due = Vec::new();
        for (id, (t, _)) in &mut self.timers {
            if t.refresh_due(now) {
                t.refresh_sent();
                due.push(id.clone());
            }
        }
        due
    }

    /// What `request` (an INVITE) asks for, by its Session-Expires (compact `x`), Min-SE
    /// and Supported.
    pub(super) fn decide(&self, request: &rsip::Request) -> Result<Decision, SessionTimerError> {
        self.decide_with(request, false)
    }

    /// `decide`, for a dialog that Siphon can also refresh by re-INVITE (`reinvite_ok`: a
    /// bridged call's caller leg), whatever its `Allow`.
    pub(super) fn decide_with(
        &self,
        request: &rsip::Request,
        reinvite_ok: bool,
    ) -> Result<Decision, SessionTimerError> {
        let se = session_expires(&request.headers);
        let min_se = header_value(&request.headers, "Min-SE");
        let supports = header_values(&request.headers, "Supported")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("timer"));
        // Siphon refreshes by UPDATE, which the peer must allow, or by re-INVITE.
        let can_refresh = reinvite_ok || allows_update(&request.headers);
        session_timer::decide(
            se.as_deref(),
            min_se.as_deref(),
            supports,
            can_refresh,
            self.min_se,
        )
    }

    /// The session-timer headers of the 2xx to an INVITE of dialog `id` that was decided
    /// `decision`, starting or refreshing the dialog's timer. A refresh that names no
    /// interval keeps the dialog's.
    pub(super) fn answer(
        &mut self,
        id: &DialogId,
        decision: Result<Decision, SessionTimerError>,
        now: Instant,
    ) -> Vec<Header> {
        let (timer, require) = match decision {
            Ok(Decision::Use {
                interval,
                refresher,
                require,
            }) => self
                .timers
                .entry(id.clone())
                .and_modify(|(t, _)| t.refreshed(interval, now))
                .or_insert_with(|| (SessionTimer::new(interval, refresher, now), require)),
            _ => match self.timers.get_mut(id) {
                Some(entry) => {
                    let interval = entry.0.interval();
                    entry.0.refreshed(interval, now);
                    entry
                }
                None => return Vec::new(),
            },
        };
        let mut headers = vec![Header::Other(
            "Session-Expires".into(),
            timer.header_value(),
        )];
        if *require {
            // The peer supports the extension: it must know it is held to it (§9).
            headers.push(Header::Other("Require".into(), "timer".into()));
        }
        headers
    }

    /// The dialogs whose session expired by `now`, forgotten.
    fn take_expired(&mut self, now: Instant) -> Vec<DialogId> {
        let expired: Vec<DialogId> = self
            .timers
            .iter()
            .filter(|(_, (t, _))| t.expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.timers.remove(id);
        }
        expired
    }
}

impl Endpoint {
    /// Answers an INVITE or UPDATE whose Session-Expires is below Siphon's minimum (422, with
    /// `Min-SE`) or malformed (400); `true` if it did.
    pub(super) fn refuse_session_interval(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
    ) -> bool {
        if !matches!(request.method, Method::Invite | Method::Update) {
            return false;
        }
        match self.session_timers.decide(request) {
            Ok(Decision::TooBrief { min_se }) => {
                info!(min_se, "session interval too small; 422");
                let min = Header::Other("Min-SE".into(), min_se.to_string());
                self.reply_to(key, request, 422, None, &[min]);
                true
            }
            Err(e) => {
                let reason = format!("Bad Request ({e})");
                self.reply_to(key, request, 400, Some(&reason), &[]);
                true
            }
            Ok(_) => false,
        }
    }

    /// The session-timer headers of Siphon's 2xx to `request`, an INVITE (initial or
    /// re-INVITE) of a call Siphon holds by the dialog `id`.
    pub(super) fn session_timer_headers(
        &mut self,
        id: &DialogId,
        request: &rsip::Request,
    ) -> Vec<Header> {
        if !self.calls.contains_key(id)
            && !self.bridges.contains(id)
            && !self.session_timers.has(id)
        {
            return Vec::new(); // a callee dialog without a session timer
        }
        let decision = self.session_timers.decide(request);
        self.session_timers.answer(id, decision, now())
    }

    /// Ends (BYE) the calls whose session expired without a refresh (RFC 4028 §10), and
    /// sends the refreshes that are due.
    pub(super) fn check_session_timers(&mut self) {
        for id in self.session_timers.take_expired(now()) {
            if let Some(call) = self.call_of_dialog(&id) {
                warn!(call_id = %call.call_id, "session expired without a refresh; ending the call");
                self.hang_up_as(&call, EndResult::SessionExpired);
            }
        }
        for id in self.session_timers.take_due(now()) {
            self.send_refresh(&id);
        }
    }

    /// The call (as `hang_up_as` knows it) that dialog `id` belongs to: a served call, a
    /// bridged call's caller dialog, or a bridged call's callee dialog.
    fn call_of_dialog(&self, id: &DialogId) -> Option<DialogId> {
        if self.calls.contains_key(id) || self.bridges.contains(id) {
            return Some(id.clone());
        }
        self.bridges
            .call_of_callee_dialog(id)
            .or_else(|| self.caller_of_agent(id))
    }

    /// Siphon's refresh of dialog `id`: an UPDATE without SDP with `Session-Expires`
    /// (Siphon refreshing) in that dialog, or, on a bridged leg whose phone does not allow
    /// UPDATE, a re-INVITE offering the leg's current session. A dialog that is gone loses
    /// its timer.
    fn send_refresh(&mut self, id: &DialogId) {
        if let Some(key) = self.refresh_bridged_by_reinvite(id) {
            debug!(call_id = %id.call_id, "session refresh (re-INVITE) sent");
            self.session_timers.refreshes.insert(key, id.clone());
            return;
        }
        let peer = match self.calls.get(id) {
            Some(call) => Some(call.peer),
            None => self
                .bridges
                .leg_peer(id)
                .or_else(|| self.agent_leg(id).map(|(peer, _)| peer)),
        };
        let Some(peer) = peer else {
            self.session_timers.forget(id);
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let dialog = match self.calls.get_mut(id) {
            Some(call) => Some(&mut call.dialog),
            None if self.bridges.leg_peer(id).is_some() => self.bridges.leg_dialog(id),
            // An API transfer's agent leg (`transfer_leg`).
            None => self.agent_leg(id).map(|(_, dialog)| dialog),
        };
        let Some(dialog) = dialog else {
            self.session_timers.forget(id);
            return;
        };
        let mut update = dialog.request(Method::Update, &via, &contact);
        let Some((timer, _)) = self.session_timers.timers.get(id) else {
            return;
        };
        update.headers.push(Header::Other(
            "Session-Expires".into(),
            timer.refresh_request_value(),
        ));
        update
            .headers
            .push(Header::Other("Supported".into(), "timer".into()));
        message::finish(&mut update.headers, b"");
        match self.layer.send_request(now(), update, peer) {
            Ok(key) => {
                debug!(call_id = %id.call_id, "session refresh (UPDATE) sent");
                self.session_timers.refreshes.insert(key, id.clone());
            }
            Err(e) => warn!(error = %e, "could not send the session refresh"),
        }
    }

    /// The response to Siphon's refresh UPDATE (`code` 408 when it timed out): a 2xx
    /// restarts the timer (with the interval it names); 408 and 481 end the call (§10);
    /// anything else leaves the session to expire unless the peer refreshes.
    pub(super) fn on_refresh_response(
        &mut self,
        key: &TransactionKey,
        code: u16,
        headers: Option<&rsip::Headers>,
    ) {
        if code < 200 {
            return;
        }
        let Some(id) = self.session_timers.refreshes.remove(key) else {
            return;
        };
        match code {
            200..=299 => {
                let interval = headers
                    .and_then(session_expires)
                    .and_then(|v| session_timer::SessionExpires::parse(&v).ok())
                    .map(|se| se.delta);
                if let Some((t, _)) = self.session_timers.timers.get_mut(&id) {
                    let interval = interval.unwrap_or(t.interval()).max(1);
                    t.refreshed(interval, now());
                    info!(call_id = %id.call_id, interval, "session refreshed");
                }
            }
            408 | 481 => {
                self.session_timers.forget(&id);
                if let Some(call) = self.call_of_dialog(&id) {
                    warn!(call_id = %call.call_id, code, "session refresh failed; ending the call");
                    self.hang_up_as(&call, EndResult::SessionExpired);
                }
            }
            491 => {
                // Glare: the next tick refreshes again (within a second, RFC 3261 §14.1's
                // 0-2 s for the side that may not own the Call-ID).
                if let Some((t, _)) = self.session_timers.timers.get_mut(&id) {
                    t.refresh_again();
                }
            }
            _ => info!(call_id = %id.call_id, code, "session refresh refused"),
        }
    }
}
