//! Trunk failover (RFC 3263 §4.3): a call to a trunk with several addresses (SRV records,
//! in priority and weight order) tries them one at a time. An attempt that fails with a
//! 503 or another 5xx, with a transport error (a 503 from `crate::dialer`), with Timer B,
//! or that has had no response at all within the trunk's `failover_timeout_s`, moves the
//! call on to the next address with a new INVITE; the caller hears only the last answer.
//! An abandoned attempt that answers late is stopped like a phone that answers a call
//! that is over (CANCEL, or ACK and BYE: `responses::on_stale_branch_response`).

use std::time::Duration;

use siphon_sip::dialog::DialogId;
use siphon_sip::transaction::TransactionKey;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Branch, BranchState, Target};
use crate::control::Command;
use crate::endpoint::{Endpoint, now};

/// What a bridged call needs to try a trunk's next address.
#[derive(Default)]
pub(super) struct Failover {
    /// The addresses not tried yet, in order.
    pub(super) targets: Vec<Target>,
    /// How long an attempt may go without any response.
    pub(super) timeout: Duration,
    /// The From tag and the offer every attempt carries (the callee leg's media is one).
    pub(super) from_tag: String,
    pub(super) offer: String,
}

impl Endpoint {
    /// The trunk attempt of call `id` failed with `code` and no other attempt is live:
    /// sends the INVITE to the next address, if there is one. `true` when one went out.
    pub(super) fn fail_over(&mut self, id: &DialogId, code: u16) -> bool {
        if !crate::trunk_dns::fails_over(code) {
            return false;
        }
        loop {
            let Some(call) = self.bridges.calls.get_mut(id) else {
                return false;
            };
            if call.winner.is_some() || call.caller.answered || call.failover.targets.is_empty() {
                return false;
            }
            let target = call.failover.targets.remove(0);
            let (caller_invite, identity) = (call.caller.invite.clone(), call.identity.clone());
            let (from_tag, offer) = (call.failover.from_tag.clone(), call.failover.offer.clone());
            let Some(invite) =
                self.branch_invite(&caller_invite, &identity, &target, &from_tag, &offer)
            else {
                continue;
            };
            let key = match self.layer.send_request(now(), invite.clone(), target.peer) {
                Ok(key) => key,
                Err(e) => {
                    warn!(peer = %target.peer.addr, error = %e, "could not send INVITE to the trunk");
                    continue;
                }
            };
            info!(code, next = %target.peer.addr, transport = %target.peer.transport, "trunk attempt failed; trying the next address");
            crate::counters::inc(&self.counters.trunk_failovers);
            let Some(call) = self.bridges.calls.get_mut(id) else {
                return false;
            };
            let peer = target.peer;
            call.branches
                .push(Branch::sent(key.clone(), invite, target));
            self.bridges.by_branch.insert(key.clone(), id.clone());
            self.bridges.sent.insert(key, (peer, Instant::now()));
            self.arm_failover_timeout(id);
            return true;
        }
    }

    /// While a trunk call has further addresses, its newest attempt gets a deadline.
    pub(super) fn arm_failover_timeout(&self, id: &DialogId) {
        let Some(call) = self.bridges.calls.get(id) else {
            return;
        };
        if call.failover.targets.is_empty() {
            return;
        }
        if let Some(last) = call.branches.last() {
            self.schedule(
                call.failover.timeout,
                Command::TrunkAttemptTimeout(id.clone(), last.key.clone()),
            );
        }
    }

    /// An attempt's failover timeout: if it never got a response, it counts as a 408 and
    /// is left behind (its late responses are stopped as stale), and the next address
    /// is tried.
    pub(in crate::endpoint) fn trunk_attempt_timeout(
        &mut self,
        id: &DialogId,
        key: &TransactionKey,
    ) {
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let Some(i) = call.branch(key) else {
            return;
        };
        if call.branches[i].state != BranchState::Trying || call.failover.targets.is_empty() {
            return;
        }
        call.branches[i].state = BranchState::Failed(408);
        self.bridges.by_branch.remove(key);
        info!(peer = %call.branches[i].peer.addr, "no response from the trunk in time");
        if !self.fail_over(id, 408) {
            // Nothing could be sent: the call ends as if the last attempt timed out.
            self.branch_failed_settled(id);
        }
    }
}
