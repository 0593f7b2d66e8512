//! Session timers (RFC 4028) of the dialogs Siphon answers as UAS: calls it serves and the
//! caller leg of bridged calls. The rules are `siphon_sip::session_timer`'s; this keeps the
//! running timers by dialog, writes the headers of 422s and 2xx responses, and each second
//! ends with BYE the calls whose refresher stopped refreshing.

use std::collections::HashMap;
use std::time::Instant;

use rsip::{Header, Method};
use siphon_sip::dialog::DialogId;
use siphon_sip::message::{header_value, header_values};
use siphon_sip::session_timer::{self, Decision, SessionTimer, SessionTimerError};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::{Endpoint, now};
use crate::counters::EndResult;

/// The running session timers, by the dialog Siphon answered (a bridged call's caller
/// dialog, which also names the call).
pub(super) struct SessionTimers {
    timers: HashMap<DialogId, SessionTimer>,
    /// The smallest interval accepted (`sip.session_min_se_s`; RFC 4028: 90 s).
    min_se: u32,
}

impl SessionTimers {
    pub(super) fn new(min_se: u32) -> Self {
        SessionTimers {
            timers: HashMap::new(),
            min_se,
        }
    }

    /// What `request` (an INVITE) asks for, by its Session-Expires (compact `x`), Min-SE
    /// and Supported.
    pub(super) fn decide(&self, request: &rsip::Request) -> Result<Decision, SessionTimerError> {
        let se = header_value(&request.headers, "Session-Expires")
            .or_else(|| header_value(&request.headers, "x"));
        let min_se = header_value(&request.headers, "Min-SE");
        let supports = header_values(&request.headers, "Supported")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("timer"));
        session_timer::decide(se.as_deref(), min_se.as_deref(), supports, self.min_se)
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
        let timer = match decision {
            Ok(Decision::Use {
                interval,
                refresher,
            }) => self
                .timers
                .entry(id.clone())
                .and_modify(|t| t.refreshed(interval, now))
                .or_insert_with(|| SessionTimer::new(interval, refresher, now)),
            _ => match self.timers.get_mut(id) {
                Some(t) => {
                    t.refreshed(t.interval(), now);
                    t
                }
                None => return Vec::new(),
            },
        };
        vec![
            Header::Other("Session-Expires".into(), timer.header_value()),
            // The UAC refreshes: it must know the UAS holds it to that (§9).
            Header::Other("Require".into(), "timer".into()),
        ]
    }

    /// The dialogs whose session expired by `now`, forgotten.
    fn take_expired(&mut self, now: Instant) -> Vec<DialogId> {
        let expired: Vec<DialogId> = self
            .timers
            .iter()
            .filter(|(_, t)| t.expired(now))
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
        if !self.calls.contains_key(id) && !self.bridges.contains(id) {
            return Vec::new(); // a bridged call's callee dialog: Siphon is its UAC
        }
        let decision = self.session_timers.decide(request);
        self.session_timers.answer(id, decision, now())
    }

    /// Ends (BYE) the calls whose session expired without a refresh (RFC 4028 §10).
    pub(super) fn check_session_timers(&mut self) {
        for id in self.session_timers.take_expired(now()) {
            if self.calls.contains_key(&id) || self.bridges.contains(&id) {
                warn!(call_id = %id.call_id, "session expired without a refresh; ending the call");
                self.hang_up_as(&id, EndResult::SessionExpired);
            }
        }
    }
}
