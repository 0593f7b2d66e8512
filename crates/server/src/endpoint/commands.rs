//! What other tasks ask of the SIP core ([`Command`]): answers and timeouts that were
//! scheduled, media that ended, the admin API's hang-ups and forks, and the drain.

use std::time::Duration;

use siphon_sip::dialog::DialogId;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use super::Endpoint;
use crate::control::Command;
use crate::counters::EndResult;

impl Endpoint {
    pub(super) fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::ReferrerLinger(id) => self.referrer_linger(&id),
            Command::Answer(key) => {
                if let Some(id) = self.by_invite.get(&key).cloned() {
                    self.answer(&id);
                }
            }
            Command::RingTimeout(key) => {
                if let Some(id) = self.by_invite.get(&key).cloned()
                    && self.calls.get(&id).is_some_and(|c| c.answer_sdp.is_none())
                {
                    info!(call_id = %id.call_id, "no answer; 480");
                    self.reply(&key, 480, None, &[]);
                    self.end_call_as(&id, EndResult::NoAnswer);
                }
            }
            Command::BridgeNoAnswer(id) => self.bridge_no_answer(&id),
            Command::TrunkAttemptTimeout(id, key) => self.trunk_attempt_timeout(&id, &key),
            Command::LegAttemptTimeout(key) => {
                if !self.originate_attempt_deadline(&key) && !self.refer_attempt_deadline(&key) {
                    self.transfer_attempt_deadline(&key);
                }
            }
            Command::ReliableRetransmit(id) => self.reliable_retransmit(&id),
            Command::GlareRetry { call, callee } => self.glare_retry(&call, callee),
            Command::RegisterTrunk(index) => self.register_trunk(index, None),
            Command::TrunkKeepalive(index) => self.trunk_keepalive(index),
            Command::MediaEnded { call, reason } => {
                info!(call_id = %call.call_id, %reason, "media ended; sending BYE");
                let result = if reason.starts_with("no RTP") {
                    EndResult::RtpTimeout
                } else {
                    EndResult::MediaEnded
                };
                self.hang_up_as(&call, result);
            }
            Command::HangUp { call_id, done } => {
                // An originated call still ringing is cancelled.
                if let Some(key) = self.originating.find(&call_id) {
                    info!(%call_id, "hung up through the admin API while ringing");
                    self.cancel_originated(&key, EndResult::Admin);
                    let _ = done.send(true);
                    return;
                }
                let id = self.find_call(&call_id);
                if let Some(id) = &id {
                    info!(%call_id, "hung up through the admin API");
                    self.hang_up_as(id, EndResult::Admin);
                }
                let _ = done.send(id.is_some());
            }
            Command::AttachFork {
                call_id,
                fork_id,
                config,
                done,
            } => {
                let ok = match self.find_call(&call_id) {
                    Some(id) => match self.calls.get(&id) {
                        Some(c) => c.media.attach_fork(fork_id, *config),
                        None => self.bridges.attach_fork(&id, fork_id, *config),
                    },
                    None => false,
                };
                let _ = done.send(ok);
            }
            Command::DetachFork {
                call_id,
                fork_id,
                done,
            } => {
                let ok = match self.find_call(&call_id) {
                    Some(id) => match self.calls.get(&id) {
                        Some(c) => c.media.detach_fork(fork_id),
                        None => self.bridges.detach_fork(&id, fork_id),
                    },
                    None => false,
                };
                let _ = done.send(ok);
            }
            Command::OriginateTimeout(call_id) => {
                if let Some(key) = self.originating.find(&call_id) {
                    self.cancel_originated(&key, EndResult::NoAnswer);
                } else {
                    // A transfer leg's (or click-to-call's second leg's) ring timeout.
                    self.transfer_ring_timeout(&call_id);
                }
            }
            // Acting on these may wait (RTP ports): `run` awaits them, they never get here.
            Command::WebhookAnswer { .. }
            | Command::Originate { .. }
            | Command::Transfer { .. }
            | Command::ServiceTransfer { .. } => {}
            Command::Drain { timeout, done } => {
                info!(
                    calls = self.calls.len(),
                    ?timeout,
                    "draining: new calls get 503"
                );
                self.counters
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.drain = Some(Drain {
                    deadline: Instant::now() + timeout,
                    done: Some(done),
                    calls_at_start: self.calls.len() + self.bridges.len(),
                    hung_up: 0,
                });
            }
        }
    }

    pub(super) fn find_call(&self, call_id: &str) -> Option<DialogId> {
        self.calls
            .keys()
            .find(|id| id.call_id == call_id)
            .cloned()
            .or_else(|| self.bridges.find(call_id))
    }

    pub(super) fn check_drained(&mut self) {
        if !self.calls.is_empty() || !self.bridges.is_empty() {
            return;
        }
        if let Some(d) = self.drain.as_mut()
            && let Some(done) = d.done.take()
        {
            info!(
                calls = d.calls_at_start,
                ended_by_their_parties = d.calls_at_start.saturating_sub(d.hung_up),
                hung_up_at_timeout = d.hung_up,
                "drained: no call left"
            );
            let _ = done.send(());
        }
    }

    pub(super) fn schedule(&self, after: Duration, cmd: Command) {
        let tx = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(cmd).await;
        });
    }
}

pub(super) struct Drain {
    pub(super) deadline: Instant,
    pub(super) done: Option<oneshot::Sender<()>>,
    /// Calls up when the drain began, and how many of them the timeout hung up: the
    /// closing log line says what the drain did.
    pub(super) calls_at_start: usize,
    pub(super) hung_up: usize,
}
