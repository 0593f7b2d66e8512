//! Carrying out `POST /api/calls/{id}/transfer` on a call Siphon serves (a voicebot's
//! forked call, echo, prompt): Siphon places the new leg as the UAC (one INVITE with its own
//! offer, like originate), and when it answers hands the caller's media to it
//! ([`crate::media::agent_leg`]): the served call's media task relays caller and agent and
//! its forks keep streaming on the same connections. A failed leg (4xx-6xx, Timer B) leaves
//! the caller with the bot; the call table says why. The agent hanging up ends the call;
//! the caller hanging up sends the agent BYE (CANCEL while it still rings). A leg unanswered
//! after its ring timeout gets CANCEL and the transfer fails with 408.
//!
//! A call transferred already can be transferred again: the caller stays with the current
//! agent until the new leg answers, then the media task swaps the agent leg and the
//! previous agent gets BYE.
//!
//! Click-to-call (`POST /api/calls` with `on_answer` `user`, `trunk` or `uri`) is the same
//! machinery: once the first party answers, the originated call is served by its media task
//! and its second leg is placed here as a transfer `by` "originate"; that leg failing hangs
//! the first party up (BYE), since there is no bot to go back to. Once it answered, the
//! call is like any transferred one.

use std::collections::HashMap;
use std::time::Duration;

use rsip::Method;
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::leg_attempts::Outcome;
use super::leg_targets::{Resolved, caller_id_allowed, caller_id_is_well_formed};
use super::originate::parse_callee;
use super::uac_leg::{Confirmed, LegTarget, UacLeg};
use super::{Endpoint, new_tag, now};
use crate::control::Command;
use crate::counters::EndResult;
use crate::media::agent_leg::AgentSetup;
use crate::transfer::{TransferState, TransferStatus};

/// A transfer leg until its final response.
struct Placing {
    /// The served call whose caller is being transferred.
    caller: DialogId,
    leg: UacLeg,
    span: tracing::Span,
    /// The leg's own Call-ID: its ring timeout finds it by this.
    call_id: String,
    /// Siphon cancelled it at its ring timeout: the 487 that follows is reported as 408.
    timed_out: bool,
}

/// An answered transfer leg (the agent's dialog).
struct Agent {
    caller: DialogId,
    dialog: Dialog,
    peer: Peer,
}

/// Transfer legs ringing and answered.
#[derive(Default)]
pub(super) struct Transfers {
    placing: HashMap<TransactionKey, Placing>,
    agents: HashMap<DialogId, Agent>,
    /// Originated calls whose `on_answer` bridges them to a second target (click-to-call),
    /// with that leg's ring timeout: their transfer failing ends the call.
    click_to_call: HashMap<DialogId, Duration>,
}

impl Transfers {
    fn placing_for(&self, caller: &DialogId) -> bool {
        self.placing.values().any(|p| &p.caller == caller)
    }
}

impl Endpoint {
    /// `POST /api/calls/{id}/transfer` for an answered call: sends the new leg's INVITE.
    /// `Ok` once it is on its way (202); the outcome goes to the call table.
    /// `from`: the caller ID the new leg shows (default: the caller's From).
    pub(super) async fn transfer(
        &mut self,
        call_id: &str,
        to: &str,
        from: Option<&str>,
        by: &'static str,
        ring_timeout: Duration,
    ) -> Result<(), (u16, String)> {
        let Some(id) = self.find_call(call_id) else {
            return Err((404, format!("no call with Call-ID {call_id}")));
        };
        if self.bridges.contains(&id) {
            if from.is_some() {
                // The bridged call's new leg keeps the identity of the party that stays.
                return Err((
                    400,
                    "from is not supported when transferring a bridged call".into(),
                ));
            }
            return self.transfer_bridged(id, to, by).await;
        }
        if !self.calls.contains_key(&id) {
            return Err((404, format!("no call with Call-ID {call_id}")));
        }
        if self.transfers.placing_for(&id) {
            return Err((409, "a transfer of this call is already in progress".into()));
        }
        // A call transferred already may be transferred again (agent to agent 2): the new
        // leg rings while the caller talks to the current agent, who gets BYE once the new
        // one answers, as in a bridged call's transfer.
        let callee = parse_callee(to).map_err(|e| (400, e))?;
        if let Some(from) = from {
            if !caller_id_is_well_formed(from) {
                return Err((400, format!("from {from:?} is not a caller ID")));
            }
            if !caller_id_allowed(&self.config, from, &callee) {
                return Err((
                    403,
                    format!("caller ID {from:?} is not one Siphon may present to {to}"),
                ));
            }
        }
        let Resolved {
            uri,
            peer,
            from_host,
            plan,
        } = self.resolve_leg(&callee)?;
        let Some(caller_from) = self.registry.get(call_id).map(|s| s.from.clone()) else {
            return Err((404, format!("no call with Call-ID {call_id}")));
        };
        let host = from_host.unwrap_or_else(|| self.addr_for(peer).ip().to_string());
        let identity = match from {
            Some(from) => format!("<sip:{from}@{host}>"),
            // The agent sees who is calling: the caller's From, with a tag of ours.
            None => caller_from
                .split(";tag=")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let identity = if identity.is_empty() || identity.contains(['\r', '\n']) {
            format!("<sip:siphon@{host}>")
        } else {
            identity
        };
        let leg_call_id = format!("{}@siphon", new_tag());
        let (key, leg) = self
            .place_leg_with(
                LegTarget {
                    uri: &uri,
                    peer,
                    identity: &identity,
                    call_id: leg_call_id.clone(),
                },
                plan,
            )
            .await?;
        if !self.calls.contains_key(&id) {
            // The caller hung up while the RTP port was allocated: the new leg is withdrawn
            // (CANCEL; BYE should its 2xx cross).
            let span = tracing::Span::none();
            self.transfers.placing.insert(
                key,
                Placing {
                    caller: id.clone(),
                    leg,
                    span,
                    call_id: leg_call_id,
                    timed_out: false,
                },
            );
            self.release_agent_of(&id);
            return Err((404, format!("no call with Call-ID {call_id}")));
        }
        let span = self
            .calls
            .get(&id)
            .map_or_else(tracing::Span::none, |c| c.span.clone());
        span.in_scope(|| info!(%to, %uri, "transfer: placing the new leg"));
        if let Some(mut s) = self.registry.get_mut(call_id) {
            s.transfer = Some(TransferStatus::trying(to, by));
        }
        if let Some(call) = self.calls.get(&id) {
            call.media.transfer_event(to, "trying", None);
        }
        self.transfers.placing.insert(
            key,
            Placing {
                caller: id,
                leg,
                span,
                call_id: leg_call_id.clone(),
                timed_out: false,
            },
        );
        // The same timer message as an originated call's: its handler looks here when no
        // originated call has that Call-ID.
        self.schedule(
            ring_timeout.max(Duration::from_secs(1)),
            Command::OriginateTimeout(leg_call_id),
        );
        Ok(())
    }

    /// A response to a transfer leg's INVITE (any of its attempts); `false` if `key` is
    /// not one.
    pub(super) fn on_transfer_response(
        &mut self,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut p) = self.transfers.placing.remove(&leg_key) else {
            return false;
        };
        let outcome = p
            .span
            .clone()
            .in_scope(|| self.attempt_response(&leg_key, &mut p.leg, key, response));
        let caller = p.caller.clone();
        self.transfers.placing.insert(leg_key.clone(), p);
        match outcome {
            Outcome::Pending => {}
            Outcome::Ringing => {
                if let Some(mut s) = self.registry.get_mut(&caller.call_id)
                    && let Some(t) = s.transfer.as_mut()
                {
                    t.state = TransferState::Ringing;
                }
            }
            Outcome::Answered => self.transfer_answered(&leg_key, key, response),
            Outcome::Failed(code) => self.transfer_failed(&leg_key, code),
        }
        true
    }

    /// A transfer leg's INVITE (one of its attempts) got no final response (Timer B);
    /// `false` if not one.
    pub(super) fn on_transfer_timeout(&mut self, key: &TransactionKey) -> bool {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut p) = self.transfers.placing.remove(&leg_key) else {
            return false;
        };
        let outcome = self.attempt_timeout(&leg_key, &mut p.leg, key);
        self.transfers.placing.insert(leg_key.clone(), p);
        if let Outcome::Failed(code) = outcome {
            self.transfer_failed(&leg_key, code);
        }
        true
    }

    /// A transfer leg's trunk attempt reached its failover deadline.
    pub(super) fn transfer_attempt_deadline(&mut self, key: &TransactionKey) {
        let leg_key = self.leg_attempts.leg_of(key);
        let Some(mut p) = self.transfers.placing.remove(&leg_key) else {
            return;
        };
        let outcome = p
            .span
            .clone()
            .in_scope(|| self.attempt_deadline(&leg_key, &mut p.leg, key));
        self.transfers.placing.insert(leg_key.clone(), p);
        if let Outcome::Failed(code) = outcome {
            self.transfer_failed(&leg_key, code);
        }
    }

    /// A transfer leg's ring timeout: CANCEL if it still rings (its 487 then fails the
    /// transfer, reported as 408). `false` if no transfer leg has this Call-ID.
    pub(super) fn transfer_ring_timeout(&mut self, leg_call_id: &str) -> bool {
        let Some(key) = self
            .transfers
            .placing
            .iter()
            .find(|(_, p)| p.call_id == leg_call_id)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        let Some(mut p) = self.transfers.placing.remove(&key) else {
            return false;
        };
        if !std::mem::replace(&mut p.timed_out, true) {
            p.span
                .in_scope(|| info!("transfer leg unanswered at its ring timeout: CANCEL"));
            self.cancel_leg(&mut p.leg);
        }
        self.transfers.placing.insert(key, p);
        true
    }

    fn transfer_failed(&mut self, key: &TransactionKey, code: u16) {
        let Some(p) = self.transfers.placing.remove(key) else {
            return;
        };
        let code = if p.timed_out && code == 487 {
            408
        } else {
            code
        };
        let click_to_call = self.transfers.click_to_call.contains_key(&p.caller);
        p.span.in_scope(|| {
            if click_to_call {
                info!(
                    code,
                    "click-to-call: the second leg failed; hanging up the first"
                );
            } else {
                info!(code, "transfer failed; the caller stays where it was");
            }
        });
        let mut told = None;
        if let Some(mut s) = self.registry.get_mut(&p.caller.call_id)
            && let Some(t) = s.transfer.as_mut()
        {
            t.finished(code, None);
            told = Some((t.target.clone(), t.reason.clone()));
        }
        if let (Some((target, reason)), Some(call)) = (told, self.calls.get(&p.caller)) {
            let reason = reason.map(|r| format!("{code} {r}"));
            call.media.transfer_event(&target, "failed", reason);
        }
        if click_to_call {
            let result = if code == 408 {
                EndResult::NoAnswer
            } else {
                EndResult::Other
            };
            self.hang_up_as(&p.caller, result);
        }
    }

    /// The leg kept under `leg_key` answered: its attempt `key`'s 2xx.
    fn transfer_answered(
        &mut self,
        leg_key: &TransactionKey,
        key: &TransactionKey,
        response: &rsip::Response,
    ) {
        let Some(p) = self.transfers.placing.remove(leg_key) else {
            return;
        };
        let _g = p.span.clone().entered();
        let dialog = match self.confirm_leg(key, &p.leg, response) {
            Ok(Confirmed { dialog, params }) => {
                let handed = self.calls.get(&p.caller).is_some_and(|call| {
                    call.media.transfer(AgentSetup {
                        rtp: p.leg.rtp,
                        params,
                    })
                });
                if handed {
                    dialog
                } else {
                    // The caller is gone: release the new leg.
                    warn!("transfer leg answered but the caller is gone; hanging it up");
                    let mut dialog = dialog;
                    self.bye_placed(&mut dialog, p.leg.peer, EndResult::Other);
                    return;
                }
            }
            Err(unusable) => {
                let code = unusable.code();
                self.transfers.placing.insert(leg_key.clone(), p);
                self.transfer_failed(leg_key, code);
                return;
            }
        };
        let (target, by) = match self.registry.get_mut(&p.caller.call_id) {
            Some(mut s) => match s.transfer.as_mut() {
                Some(t) => {
                    t.finished(response.status_code.code(), None);
                    (t.target.clone(), t.by)
                }
                None => (String::new(), "api"),
            },
            None => (String::new(), "api"),
        };
        info!(%target, "transfer answered; the caller talks to the new leg");
        // The media task has let go of the previous agent (a second transfer): its dialog
        // ends. And a click-to-call is connected now: a later transfer of it that fails
        // leaves the two parties talking instead of hanging up.
        self.bye_agent_of(&p.caller);
        self.transfers.click_to_call.remove(&p.caller);
        if let Some(call) = self.calls.get(&p.caller) {
            call.media.transfer_event(&target, "answered", None);
        }
        self.emit_call_transferred(&p.caller.call_id, &target, by);
        self.start_leg_session_timer(&dialog.id, response);
        self.transfers.agents.insert(
            dialog.id.clone(),
            Agent {
                caller: p.caller,
                dialog,
                peer: p.leg.peer,
            },
        );
    }

    /// BYE from an answered transfer leg: the call ends (the caller gets BYE). `false` if
    /// the request is not in such a dialog.
    pub(super) fn on_agent_bye(&mut self, key: &TransactionKey, request: &rsip::Request) -> bool {
        let Some(id) = DialogId::for_incoming(request) else {
            return false;
        };
        let Some(mut agent) = self.transfers.agents.remove(&id) else {
            return false;
        };
        if let Err(e) = agent.dialog.on_remote_request(request) {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            self.transfers.agents.insert(id, agent);
            return true;
        }
        self.reply_to(key, request, 200, None, &[]);
        self.session_timers.forget(&id);
        info!(call_id = %agent.caller.call_id, "transfer target hung up; ending the call");
        self.hang_up_as(&agent.caller, EndResult::Completed);
        true
    }

    /// The served call `caller` ended: its transfer leg gets CANCEL while it rings (its
    /// final response then ends it), BYE once answered.
    pub(super) fn release_agent_of(&mut self, caller: &DialogId) {
        self.transfers.click_to_call.remove(caller);
        let ringing: Vec<TransactionKey> = self
            .transfers
            .placing
            .iter()
            .filter(|(_, p)| &p.caller == caller)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ringing {
            if let Some(mut p) = self.transfers.placing.remove(&key) {
                self.cancel_leg(&mut p.leg);
                self.transfers.placing.insert(key, p);
            }
        }
        self.bye_agent_of(caller);
    }

    /// BYE to the answered transfer leg of `caller`, if it has one (the call ended, or a
    /// second transfer replaced that leg).
    fn bye_agent_of(&mut self, caller: &DialogId) {
        let Some(id) = self
            .transfers
            .agents
            .iter()
            .find(|(_, a)| &a.caller == caller)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let Some(mut agent) = self.transfers.agents.remove(&id) else {
            return;
        };
        self.session_timers.forget(&id);
        let via = self.via_value(agent.peer);
        let contact = self.contact_uri(agent.peer);
        let mut bye = agent.dialog.request(Method::Bye, &via, &contact);
        bye.headers
            .push(super::replies::reason_header(EndResult::Completed));
        if let Err(e) = self.layer.send_request(now(), bye, agent.peer) {
            warn!(error = %e, "could not send BYE to the transfer leg");
        }
    }

    /// The served call whose caller was transferred to the agent dialog `id` (a session
    /// timer expiring on that dialog ends the call).
    pub(super) fn caller_of_agent(&self, id: &DialogId) -> Option<DialogId> {
        self.transfers.agents.get(id).map(|a| a.caller.clone())
    }

    /// The agent dialog `id` and where its requests go (Siphon's session refresh).
    pub(super) fn agent_leg(&mut self, id: &DialogId) -> Option<(Peer, &mut Dialog)> {
        self.transfers
            .agents
            .get_mut(id)
            .map(|a| (a.peer, &mut a.dialog))
    }

    /// Whether `id` is an answered transfer leg's dialog (exempt from the limits).
    pub(super) fn holds_agent_dialog(&self, id: &DialogId) -> bool {
        self.transfers.agents.contains_key(id)
    }

    /// A fork's service asked for a transfer (native `transfer` command): like the API's,
    /// `by` the service; a refusal goes back to the forks as a failed `transfer` event.
    pub(super) async fn on_service_transfer(&mut self, call_id: String, to: String) {
        let id = self.find_call(&call_id);
        let click_to_call = id
            .as_ref()
            .and_then(|id| self.transfers.click_to_call.get(id).copied());
        let (by, ring) = match click_to_call {
            Some(ring) => ("originate", ring),
            None => ("service", self.default_ring_timeout()),
        };
        if let Err((code, reason)) = self.transfer(&call_id, &to, None, by, ring).await {
            info!(%call_id, %to, code, %reason, by, "transfer refused");
            let Some(id) = id else { return };
            // A click-to-call's GET /api/calls/{id} and CDR say why it ended. (A service's
            // refused request leaves the call's transfer status as it was: a 409 must not
            // overwrite the transfer in progress.)
            if click_to_call.is_some()
                && let Some(mut s) = self.registry.get_mut(&call_id)
            {
                let mut status = TransferStatus::trying(&to, by);
                status.finished(code, Some(reason.clone()));
                s.transfer = Some(status);
            }
            if let Some(call) = self.calls.get(&id) {
                call.media
                    .transfer_event(&to, "failed", Some(format!("{code} {reason}")));
            }
            if click_to_call.is_some() {
                self.hang_up_as(&id, EndResult::Other);
            }
        }
    }

    /// An originated call answered with `on_answer` `user`: places its second leg to `to`
    /// (a transfer of the first party, through the command queue since placing a leg
    /// waits for an RTP port).
    pub(super) fn bridge_on_answer(&mut self, id: &DialogId, to: String, ring: Duration) {
        self.transfers.click_to_call.insert(id.clone(), ring);
        let cmd = Command::ServiceTransfer {
            call_id: id.call_id.clone(),
            to,
        };
        if let Err(e) = self.commands.try_send(cmd) {
            warn!(error = %e, "could not queue the second leg; hanging up");
            self.hang_up_as(id, EndResult::Other);
        }
    }

    fn default_ring_timeout(&self) -> Duration {
        Duration::from_secs(self.config.sip.ring_timeout_s)
    }

    /// Runs a transfer request for the admin API (the RTP port may take a moment).
    pub(super) async fn on_transfer_command(
        &mut self,
        call_id: String,
        to: String,
        from: Option<String>,
        done: tokio::sync::oneshot::Sender<Result<(), (u16, String)>>,
    ) {
        let ring = self.default_ring_timeout();
        let result = self
            .transfer(&call_id, &to, from.as_deref(), "api", ring)
            .await;
        let _ = done.send(result);
    }
}
