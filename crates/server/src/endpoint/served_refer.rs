//! REFER in a call Siphon serves itself (echo, tone, prompt, a fork's voicebot): the
//! referrer is the caller, the only phone in the call, so its REFER means "connect me to
//! this target". It is carried out as the admin API's transfer of a served call
//! ([`Endpoint::transfer`], `by: "refer"`): the caller is bridged to the new leg when it
//! answers and the call's forks keep streaming (the new party on the outbound track). The
//! caller hears of it as RFC 3515 says: 202, then NOTIFYs in its dialog with
//! `message/sipfrag` bodies, `SIP/2.0 100 Trying`, `SIP/2.0 180 Ringing` (the target's
//! first 18x) and the final status (subscription terminated); `Refer-Sub: false` (RFC
//! 4488) turns the NOTIFYs off.
//!
//! Unlike a blind transfer between two phones, nobody is left behind: the caller stays in
//! its dialog with Siphon, now talking to the target. A phone that hangs up after a
//! successful transfer (as phones do after NOTIFY 200) therefore ends the call, target
//! included; REFER here suits applications and softphones that use it as "connect me".
//!
//! The transfer's progress is the call table's `transfer` state, which the transfer legs
//! keep; [`Endpoint::served_refer_sync`] turns its changes into NOTIFYs and runs after
//! every response or timeout of a transfer leg.

use std::collections::HashMap;

use siphon_sip::dialog::DialogId;
use siphon_sip::refer::ReferTo;
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::{Endpoint, b2bua, now};
use crate::transfer::TransferState;

/// The served calls whose caller asked for a transfer by REFER and wants NOTIFYs.
#[derive(Default)]
pub(super) struct ServedRefers {
    subs: HashMap<DialogId, Subscription>,
}

impl ServedRefers {
    /// The call ended: nobody is left to tell.
    pub(super) fn forget(&mut self, id: &DialogId) {
        self.subs.remove(id);
    }
}

struct Subscription {
    /// The REFER's CSeq: the `id` of the NOTIFYs' Event.
    refer_seq: u32,
    /// The target's ringing was told already.
    ringing_told: bool,
}

impl Endpoint {
    /// A blind REFER from the caller of served call `id`: the caller is transferred to the
    /// target (resolved like a dialled number). The REFER is answered with what the
    /// transfer's start said: 202, or its refusal (404/480 for a target no route or phone
    /// reaches, 491 for a transfer in progress, 403 for a call transferred already).
    pub(super) async fn refer_served(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: DialogId,
        target: ReferTo,
    ) {
        let Some((_, label)) = b2bua::refer_callee(&self.config, &target.user) else {
            info!(target = %target.uri, "REFER to a number no route reaches; 404");
            self.reply_to(key, request, 404, None, &[]);
            return;
        };
        let ring = std::time::Duration::from_secs(self.config.sip.ring_timeout_s);
        if let Err((code, reason)) = self
            .transfer(&id.call_id, &label, None, "refer", ring)
            .await
        {
            let code = match code {
                409 if reason.contains("in progress") => 491,
                409 => 403,
                404 if self.calls.contains_key(&id) => 480,
                c => c,
            };
            info!(%label, code, %reason, "REFER in a served call refused");
            self.reply_to(key, request, code, Some(&reason), &[]);
            return;
        }
        info!(%label, "REFER in a served call: the caller is being transferred");
        let Some(refer_seq) = self.accept_refer(key, request) else {
            return;
        };
        self.served_refers.subs.insert(
            id.clone(),
            Subscription {
                refer_seq,
                ringing_told: false,
            },
        );
        self.notify_served(&id, refer_seq, 100);
        // A transfer that already has an outcome (it cannot, the leg was just placed, but
        // the order of NOTIFYs must not depend on it).
        self.served_refer_sync();
    }

    /// Tells each referring caller what its transfer did since the last NOTIFY: the
    /// target's first 18x, then its final status (which ends the subscription).
    pub(super) fn served_refer_sync(&mut self) {
        if self.served_refers.subs.is_empty() {
            return;
        }
        let mut due = Vec::new();
        for (id, sub) in &self.served_refers.subs {
            let status = self
                .registry
                .get(&id.call_id)
                .and_then(|s| s.transfer.clone());
            let Some(t) = status else {
                // The call is gone (its caller hung up while the target rang).
                due.push((id.clone(), sub.refer_seq, None));
                continue;
            };
            match t.state {
                TransferState::Trying => {}
                TransferState::Ringing if sub.ringing_told => {}
                TransferState::Ringing => due.push((id.clone(), sub.refer_seq, Some(180))),
                TransferState::Completed | TransferState::Failed => {
                    due.push((id.clone(), sub.refer_seq, Some(t.code.unwrap_or(500))))
                }
            }
        }
        for (id, seq, code) in due {
            match code {
                Some(180) => {
                    if let Some(sub) = self.served_refers.subs.get_mut(&id) {
                        sub.ringing_told = true;
                    }
                    self.notify_served(&id, seq, 180);
                }
                Some(code) => {
                    self.served_refers.subs.remove(&id);
                    self.notify_served(&id, seq, code);
                }
                None => {
                    self.served_refers.subs.remove(&id);
                }
            }
        }
    }

    /// A NOTIFY in the served call's dialog with the transfer's `status`.
    fn notify_served(&mut self, id: &DialogId, refer_seq: u32, status: u16) {
        let Some(peer) = self.calls.get(id).map(|c| c.peer) else {
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let request = b2bua::refer_notify(&mut call.dialog, &via, &contact, refer_seq, status);
        if let Err(e) = self.layer.send_request(now(), request, peer) {
            warn!(error = %e, "could not send NOTIFY");
        }
    }
}
