//! Calls Siphon places itself (`POST /api/calls`): Siphon is the UAC. It sends one INVITE
//! with its own offer to a registered account's phone, a number through a trunk or a SIP
//! URI; once answered, the call becomes like any call Siphon answered (echo, tone, play,
//! fork: the `on_answer` action, served by the same media task), so BYE, the admin API's
//! hang-up and forks work on it unchanged. Unanswered after its ring timeout: CANCEL.
//!
//! `on_answer` `user`, `trunk` (with `dial`) or `uri` is click-to-call: once the first party
//! answers, Siphon places the second leg as a transfer of that call (`transfer_leg`), so the
//! media task that serves it relays the two parties and its forks hear both; the second leg
//! failing hangs up the first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use siphon_sip::Peer;
use siphon_sip::transaction::TransactionKey;
use tokio::time::Instant;
use tracing::{Instrument, info};

use super::leg_attempts::Outcome;
pub(super) use super::leg_targets::{Callee, parse_callee};
use super::leg_targets::{Resolved, caller_id_allowed};
use super::uac_leg::{Confirmed, LegTarget, UacLeg};
use super::{Call, Endpoint, new_tag};
use crate::cdr::{CdrLeg, CdrRecord, Party};
use crate::config::{Action, CallAction, Route};
use crate::control::{CallSummary, Command, OriginateRequest};
use crate::counters::{EndResult, LegStats, inc};
use crate::events::EventKind;
use crate::media::leg::{self as media, LegSetup};

/// The actions `on_answer` may have: `user`, `trunk` and `uri` bridge the answered call to
/// a second party (click-to-call). A `trunk` needs `dial`: an originated call has no
/// dialled number to send on.
pub(super) fn on_answer_allowed(on_answer: &CallAction) -> Result<(), String> {
    match on_answer.action {
        Action::Echo | Action::Tone | Action::Play | Action::Fork | Action::User => Ok(()),
        Action::Uri if on_answer.uri.is_some() => Ok(()),
        Action::Trunk if on_answer.dial.is_some() => Ok(()),
        Action::Trunk => Err("on_answer: \"trunk\" needs `dial`, the number to call".into()),
        _ => Err("on_answer: echo, tone, play, fork, user, trunk or uri".into()),
    }
}

/// The second leg's target of a click-to-call `on_answer`, in the transfer API's words
/// (`user:1003`, `trunk:provider/+15551234567`, `sip:agent@192.0.2.5:5070`).
fn second_target(route: &Route) -> Option<String> {
    match route.action {
        Action::User => route.user.as_ref().map(|user| format!("user:{user}")),
        Action::Trunk => {
            let trunk = route.trunk.as_ref()?;
            // `dial` is required here, so `rewrite` never sees the placeholder number.
            route.dial.as_ref()?;
            Some(format!("trunk:{trunk}/{}", route.rewrite("")))
        }
        Action::Uri => route.uri.clone(),
        _ => None,
    }
}

/// An originated call until its final response.
struct Dialing {
    call_id: String,
    leg: UacLeg,
    route: Route,
    identity: String,
    callee: String,
    rang: bool,
    /// Why Siphon cancelled it (ring timeout, admin API), once it did.
    cancelled: Option<EndResult>,
    span: tracing::Span,
    started: Instant,
    started_at: SystemTime,
}

/// Originated calls still ringing.
#[derive(Default)]
pub(super) struct Outgoing {
    dialing: HashMap<TransactionKey, Dialing>,
}

impl Outgoing {
    pub(super) fn len(&self) -> usize {
        self.dialing.len()
    }

    /// The ringing originated call with this Call-ID (admin API hang-up).
    pub(super) fn find(&self, call_id: &str) -> Option<TransactionKey> {
        self.dialing
            .iter()
            .find(|(_, d)| d.call_id == call_id)
            .map(|(k, _)| k.clone())
    }
}

impl Endpoint {
    /// `POST /api/calls`: sends the INVITE; answers the new Call-ID at once.
    pub(super) async fn originate(
        &mut self,
        req: OriginateRequest,
    ) -> Result<String, (u16, String)> {
        let bad = |m: String| (400, m);
        if self.drain.is_some() || self.counters.is_draining() {
            return Err((503, "draining".into()));
        }
        let up = self.calls.len() + self.bridges.len() + self.originating.len();
        if up >= self.config.limits.max_calls {
            inc(&self.counters.overload_rejections);
            return Err((503, "too many calls ([limits] max_calls)".into()));
        }
        let mut on_answer = req.on_answer.clone();
        if on_answer.callback_url.is_none() {
            on_answer.callback_url = req.callback_url.clone();
        }
        on_answer.check(&self.config).map_err(bad)?;
        on_answer_allowed(&on_answer).map_err(bad)?;
        if let Some(second) = second_target(&on_answer.to_route("originate")) {
            // Refused now rather than after the first party answered: nothing to ring.
            let callee = parse_callee(&second).map_err(bad)?;
            self.resolve_callee(&callee)?;
        }
        let callee = parse_callee(&req.to).map_err(bad)?;
        let from = req.from.clone().unwrap_or_else(|| "siphon".into());
        if !caller_id_allowed(&self.config, &from, &callee) {
            return Err((
                403,
                format!("caller ID {from:?} is not one Siphon may present"),
            ));
        }
        let Resolved {
            uri,
            peer,
            from_host,
            plan,
        } = self.resolve_leg(&callee)?;
        let host = from_host.unwrap_or_else(|| self.addr_for(peer).ip().to_string());
        let identity = format!("<sip:{from}@{host}>");
        let call_id = format!("{}@siphon", new_tag());
        let (key, leg) = self
            .place_leg_with(
                LegTarget {
                    uri: &uri,
                    peer,
                    identity: &identity,
                    call_id: call_id.clone(),
                },
                plan,
            )
            .await?;
        inc(&self.counters.calls_started);
        let span = tracing::info_span!("call", call_id = %call_id);
        span.in_scope(|| info!(to = %req.to, %uri, %from, "originating"));
        let mut route = on_answer.to_route("originate");
        for fork in &mut route.forks {
            for (k, v) in &req.custom_parameters {
                fork.custom_parameters
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
        }
        self.call_listed(&call_id);
        self.registry.insert(
            call_id.clone(),
            CallSummary {
                call_id: call_id.clone(),
                from: identity.clone(),
                to: format!("<{uri}>"),
                number: req.to.clone(),
                codec: None,
                rtp_port: leg.rtp.port,
                answered: false,
                started: Instant::now(),
                started_at: SystemTime::now(),
                setup_time: None,
                source: peer.addr,
                rtp: Arc::new(LegStats::default()),
                transfer: None,
            },
        );
        self.call_events_start(&call_id, route.callback_url.as_deref());
        let ring = req
            .ring_timeout_s
            .unwrap_or(self.config.sip.ring_timeout_s)
            .max(1);
        self.schedule(
            Duration::from_secs(ring),
            Command::OriginateTimeout(call_id.clone()),
        );
        self.originating.dialing.insert(
            key,
            Dialing {
                call_id: call_id.clone(),
                leg,
                route,
                identity,
                callee: req.to,
                rang: false,
                cancelled: None,
                span,
                started: Instant::now(),
                started_at: SystemTime::now(),
            },
        );
        Ok(call_id)
    }

    /// Where a call to `callee` goes: the request URI, the next hop, the From host (a
    /// trunk's domain) and the trunk's credentials (the first binding or address only:
    /// `resolve_leg` has them all).
    #[allow(clippy::type_complexity)]
    pub(super) fn resolve_callee(
        &self,
        callee: &Callee,
    ) -> Result<(String, Peer, Option<String>, Option<(String, String)>), (u16, String)> {
        let r = self.resolve_leg(callee)?;
        Ok((r.uri, r.peer, r.from_host, r.plan.credentials))
    }

    /// The ring timeout (or the admin API's hang-up) of a call still ringing: CANCEL.
    pub(super) fn cancel_originated(&mut self, key: &TransactionKey, why: EndResult) {
        let Some(d) = self.originating.dialing.get_mut(key) else {
            return;
        };
        if d.cancelled.is_some() {
            return;
        }
        d.cancelled = Some(why);
        let span = d.span.clone();
        let _g = span.enter();
        info!(reason = ?why, "CANCEL");
        let Some(mut d) = self.originating.dialing.remove(key) else {
            return;
        };
        self.cancel_leg(&mut d.leg);
        self.originating.dialing.insert(key.clone(), d);
    }

    /// A response to an originated INVITE (any of its attempts); `false` if `key` is not
    /// one.
    pub(super) fn on_originate_response(
        &mut self,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut d) = self.originating.dialing.remove(&leg_key) else {
            return false;
        };
        let outcome = d
            .span
            .clone()
            .in_scope(|| self.attempt_response(&leg_key, &mut d.leg, key, response));
        self.originate_outcome(&leg_key, d, outcome, Some((key, response)));
        true
    }

    /// What an originated call does with its leg's `outcome` (`answer`: the attempt's key
    /// and 2xx when it answered).
    fn originate_outcome(
        &mut self,
        leg_key: &TransactionKey,
        mut d: Dialing,
        outcome: Outcome,
        answer: Option<(&TransactionKey, &rsip::Response)>,
    ) {
        match outcome {
            Outcome::Pending => {
                self.originating.dialing.insert(leg_key.clone(), d);
            }
            Outcome::Ringing => {
                let first = !std::mem::replace(&mut d.rang, true);
                let call_id = d.call_id.clone();
                self.originating.dialing.insert(leg_key.clone(), d);
                if first {
                    self.emit_call_event(&call_id, EventKind::CallRinging, None);
                }
            }
            Outcome::Answered => {
                self.originating.dialing.insert(leg_key.clone(), d);
                if let Some((key, response)) = answer {
                    self.originate_answered(leg_key, key, response);
                }
            }
            Outcome::Failed(code) => {
                let result = d.cancelled.unwrap_or(if code == 408 {
                    EndResult::NoAnswer
                } else {
                    EndResult::Other
                });
                self.originating.dialing.insert(leg_key.clone(), d);
                self.originate_failed(leg_key, code, result);
            }
        }
    }

    /// An originated INVITE (one of its attempts) got no final response (Timer B);
    /// `false` if not one.
    pub(super) fn on_originate_timeout(&mut self, key: &TransactionKey) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut d) = self.originating.dialing.remove(&leg_key) else {
            return false;
        };
        let outcome = self.attempt_timeout(&leg_key, &mut d.leg, key);
        self.originate_outcome(&leg_key, d, outcome, None);
        true
    }

    /// An originated call's trunk attempt reached its failover deadline; `false` if `key`
    /// is not one of an originated call's attempts.
    pub(super) fn originate_attempt_deadline(&mut self, key: &TransactionKey) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut d) = self.originating.dialing.remove(&leg_key) else {
            return false;
        };
        let outcome = d
            .span
            .clone()
            .in_scope(|| self.attempt_deadline(&leg_key, &mut d.leg, key));
        self.originate_outcome(&leg_key, d, outcome, None);
        true
    }

    fn originate_failed(&mut self, key: &TransactionKey, code: u16, result: EndResult) {
        let Some(d) = self.originating.dialing.remove(key) else {
            return;
        };
        let _g = d.span.enter();
        info!(code, "originated call not answered");
        self.registry.remove(&d.call_id);
        self.call_unlisted(&d.call_id);
        inc(&self.counters.calls_ended);
        self.counters.call_ended(result);
        let record = CdrRecord {
            call_id: d.call_id.clone(),
            start: d.started_at,
            answer: None,
            end: SystemTime::now(),
            caller: d.identity.clone(),
            callee: d.callee.clone(),
            route: "originate".into(),
            action: format!("{:?}", d.route.action).to_lowercase(),
            result: code,
            end_reason: format!("{result:?}"),
            hung_up_by: if d.cancelled.is_some() {
                Party::Siphon
            } else {
                Party::Callee
            },
            caller_leg: CdrLeg::new(None, &LegStats::default()),
            callee_leg: None,
            forks: Vec::new(),
            transfer: None,
        };
        if let Some(cdr) = &self.cdr {
            cdr.write(&record);
        }
        self.emit_call_ended(&d.call_id, Some(&record));
    }

    /// The leg kept under `leg_key` answered: its attempt `key`'s 2xx.
    fn originate_answered(
        &mut self,
        leg_key: &TransactionKey,
        key: &TransactionKey,
        response: &rsip::Response,
    ) {
        let Some(d) = self.originating.dialing.remove(leg_key) else {
            return;
        };
        let span = d.span.clone();
        let _g = span.enter();
        let Confirmed { dialog, params } = match self.confirm_leg(key, &d.leg, response) {
            Ok(confirmed) => confirmed,
            Err(unusable) => {
                self.originating.dialing.insert(leg_key.clone(), d);
                self.originate_failed(leg_key, unusable.code(), EndResult::Other);
                return;
            }
        };
        let id = dialog.id.clone();
        self.start_leg_session_timer(&id, response);
        let codec = params.codec;
        let meta = siphon_fork::CallMeta {
            call_id: id.call_id.clone(),
            from: d.identity.clone(),
            to: d.callee.clone(),
            codec: codec.name().to_string(),
            account_sid: None,
        };
        let prompt = if d.route.action == Action::Play {
            d.route.prompt().ok().flatten()
        } else {
            None
        };
        let media = media::spawn(LegSetup {
            rtp: d.leg.rtp,
            action: d.route.action,
            prompt,
            params,
            call: id.clone(),
            inactivity: Duration::from_secs(self.config.rtp.inactivity_timeout_s),
            commands: self.commands.clone(),
            counters: self.counters.clone(),
            span: span.clone(),
            forks: d.route.forks.clone(),
            meta,
        });
        inc(&self.counters.calls_answered);
        if let Some(mut s) = self.registry.get_mut(&id.call_id) {
            s.answered = true;
            s.codec = Some(codec);
            s.rtp = media.stats();
            let setup = d.started.elapsed();
            s.setup_time = Some(setup);
            self.counters.call_setup.observe(setup);
        }
        info!(?codec, action = ?d.route.action, "originated call answered");
        self.calls.insert(
            id.clone(),
            Call {
                dialog,
                peer: d.leg.peer,
                invite_key: key.clone(),
                invite: d.leg.invite,
                session: d.leg.session,
                media,
                action: d.route.action,
                answer_sdp: None,
                span: span.clone(),
            },
        );
        // Before the forks start (they start with `answered`): receivers see
        // call.answered, then fork.started.
        self.emit_call_event(&id.call_id, EventKind::CallAnswered, None);
        if let Some(call) = self.calls.get(&id) {
            call.media.answered();
        }
        if let Some(second) = second_target(&d.route) {
            let ring = d
                .route
                .ring_timeout_s
                .unwrap_or(self.config.sip.ring_timeout_s);
            info!(to = %second, "click-to-call: placing the second leg");
            self.bridge_on_answer(&id, second, Duration::from_secs(ring));
        }
    }

    /// Runs an originate request for the admin API (the RTP port may take a moment).
    pub(super) async fn on_originate_command(
        &mut self,
        request: OriginateRequest,
        done: tokio::sync::oneshot::Sender<Result<String, (u16, String)>>,
    ) {
        let span = tracing::info_span!("originate");
        let result = self.originate(request).instrument(span).await;
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn on_answer_may_bridge_to_an_account_a_trunk_number_or_a_uri() {
        let action = |json: &str| serde_json::from_str::<CallAction>(json).unwrap();
        let second = |a: &CallAction| second_target(&a.to_route("originate"));
        for ok in ["echo", "tone", "play", "fork"] {
            let a = action(&format!("{{\"action\":\"{ok}\"}}"));
            assert!(on_answer_allowed(&a).is_ok(), "{ok}");
            assert_eq!(second(&a), None);
        }
        for (json, target) in [
            (
                r#"{"action":"user","user":"1003","ring_timeout_s":10}"#,
                "user:1003",
            ),
            (
                r#"{"action":"trunk","trunk":"provider","dial":"5551234567","prepend":"+1"}"#,
                "trunk:provider/+15551234567",
            ),
            (
                r#"{"action":"uri","uri":"sip:agent@127.0.0.1:5070"}"#,
                "sip:agent@127.0.0.1:5070",
            ),
        ] {
            let a = action(json);
            assert!(on_answer_allowed(&a).is_ok(), "{json}");
            assert_eq!(second(&a).as_deref(), Some(target), "{json}");
        }
        for refused in [
            r#"{"action":"trunk","trunk":"provider"}"#,
            r#"{"action":"uri"}"#,
            r#"{"action":"reject"}"#,
            r#"{"action":"ring"}"#,
        ] {
            assert!(on_answer_allowed(&action(refused)).is_err(), "{refused}");
        }
    }
}
