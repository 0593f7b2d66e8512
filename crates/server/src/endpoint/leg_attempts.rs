//! The INVITEs behind one leg Siphon places (originate, API transfer): what a real B2BUA
//! does between "place a call to this target" and "it answered" or "it failed".
//!
//! - **Parallel ringing**: an account with several registered phones gets one INVITE per
//!   binding (same Call-ID, From tag and CSeq; each its own branch and Request-URI). The
//!   first 2xx wins; the others get CANCEL, and one that answers anyway gets ACK and BYE.
//! - **Digest**: a trunk that challenges (401/407) gets the INVITE once more with the
//!   trunk's credentials (`auth::invite_with_credentials`, shared with the dialplan's
//!   trunk route); a second challenge of the same attempt is a failure.
//! - **Failover**: a trunk with several addresses (SRV, RFC 3263 §4.3) gets the next one
//!   when an attempt fails with 408 or a 5xx, gets no final response (Timer B), or no
//!   response at all within the trunk's `failover_timeout_s`; the
//!   codes that fail over are the dialplan's (`trunk_dns::fails_over`, shared with
//!   `b2bua::failover`).
//!
//! The owner of a leg (`originate`, `transfer_leg`) keeps it under the key of its first
//! INVITE; further attempts are found through [`LegAttempts::leg_of`]. It hands each
//! response to [`Endpoint::attempt_response`] and acts on the [`Outcome`].

use std::collections::HashMap;

use rsip::Header;
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, cseq_number};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::uac_leg::{Attempt, LegPlan, LegTarget, UacLeg};
use super::{Endpoint, now};
use crate::counters::EndResult;

/// Which leg each extra attempt belongs to, and the attempts left behind when another
/// answered (their late 2xx is ACKed and hung up).
#[derive(Default)]
pub(super) struct LegAttempts {
    leg_of: HashMap<TransactionKey, TransactionKey>,
    abandoned: HashMap<TransactionKey, (rsip::Request, Peer)>,
}

impl LegAttempts {
    /// The key the leg of attempt `key` is kept under (its first INVITE's).
    pub(super) fn leg_of(&self, key: &TransactionKey) -> TransactionKey {
        self.leg_of.get(key).cloned().unwrap_or_else(|| key.clone())
    }
}

/// What a response means for the leg as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing for the owner to do (a 100, an attempt retried or failed while others live).
    Pending,
    /// A 18x.
    Ringing,
    /// This attempt's 2xx won: the leg's `invite` and `peer` are now this attempt's.
    Answered,
    /// No attempt is left: the leg failed with this code.
    Failed(u16),
}

/// An attempt failed for good: the leg fails once none is left. A 6xx is the answer that
/// stands (RFC 3261 §16.7: the callee declined everywhere); else the last one.
fn attempt_failed(leg: &mut UacLeg, code: u16) -> Outcome {
    if leg.failure.is_none_or(|c| c < 600) {
        leg.failure = Some(code);
    }
    if leg.attempts.is_empty() {
        Outcome::Failed(leg.failure.unwrap_or(code))
    } else {
        Outcome::Pending
    }
}

impl Endpoint {
    /// Places a leg to a resolved target: its first INVITE (asking for a session timer),
    /// then the INVITE to the account's other bindings at once; the leg may fail over and
    /// answer a digest challenge as `plan` says. The leg is kept under the first INVITE's
    /// key.
    pub(super) async fn place_leg_with(
        &mut self,
        target: LegTarget<'_>,
        plan: LegPlan,
    ) -> Result<(TransactionKey, UacLeg), (u16, String)> {
        self.place_leg_planned(target, plan, true).await
    }

    /// [`Self::place_leg_with`]; `session_timer`: whether the INVITE asks for a session
    /// timer (a REFER's leg, joined to a bridged call, does not: the bridge runs no timer
    /// for a leg it did not place itself).
    pub(super) async fn place_leg_planned(
        &mut self,
        target: LegTarget<'_>,
        plan: LegPlan,
        session_timer: bool,
    ) -> Result<(TransactionKey, UacLeg), (u16, String)> {
        let (key, mut leg) = self.place_first_attempt(target, session_timer).await?;
        leg.alternates = plan.alternates;
        leg.failover_timeout = plan.failover_timeout;
        leg.credentials = plan.credentials;
        self.arm_attempt_deadline(&leg, &key);
        self.fork_attempts(&key, &mut leg, plan.forks);
        Ok((key, leg))
    }

    /// Sends `invite` to the other bindings of the account (`forks`: Request-URI and where
    /// to send), as further attempts of `leg`.
    pub(super) fn fork_attempts(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        forks: Vec<(String, Peer)>,
    ) {
        for (uri, peer) in forks {
            let Ok(request_uri) = rsip::Uri::try_from(uri.as_str()) else {
                warn!(%uri, "binding with an unusable contact; not rung");
                continue;
            };
            let mut invite = leg.invite.clone();
            invite.uri = request_uri;
            let via = self.via_value(peer);
            let contact = self.contact_header(peer);
            for h in invite.headers.iter_mut() {
                match h {
                    Header::Via(_) => *h = Header::Via(via.clone().into()),
                    Header::To(_) => *h = Header::To(format!("<{uri}>").into()),
                    Header::Contact(_) => *h = contact.clone(),
                    _ => {}
                }
            }
            self.send_attempt(leg_key, leg, invite, peer, false);
        }
    }

    /// Sends one more INVITE of `leg`; `false` if it could not go out.
    fn send_attempt(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        invite: rsip::Request,
        peer: Peer,
        authenticated: bool,
    ) -> bool {
        match self.layer.send_request(now(), invite.clone(), peer) {
            Ok(key) => {
                self.leg_attempts
                    .leg_of
                    .insert(key.clone(), leg_key.clone());
                self.arm_attempt_deadline(leg, &key);
                leg.attempts.push(Attempt {
                    key,
                    invite,
                    peer,
                    authenticated,
                    responded: false,
                });
                true
            }
            Err(e) => {
                warn!(peer = %peer.addr, error = %e, "could not send an INVITE of the leg");
                false
            }
        }
    }

    /// A response to attempt `key` of `leg` (kept under `leg_key`).
    pub(super) fn attempt_response(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> Outcome {
        let code = response.status_code.code();
        let Some(i) = leg.attempts.iter().position(|a| &a.key == key) else {
            return Outcome::Pending;
        };
        leg.attempts[i].responded = true;
        match code {
            100 => Outcome::Pending,
            101..=199 => Outcome::Ringing,
            200..=299 => {
                let winner = leg.attempts.remove(i);
                leg.invite = winner.invite;
                leg.peer = winner.peer;
                // The others are told the call is taken elsewhere.
                for other in std::mem::take(&mut leg.attempts) {
                    self.cancel_attempt(&other);
                    self.leg_attempts.leg_of.remove(&other.key);
                    self.leg_attempts
                        .abandoned
                        .insert(other.key, (other.invite, other.peer));
                }
                self.leg_attempts.leg_of.remove(key);
                Outcome::Answered
            }
            _ => {
                let failed = leg.attempts.remove(i);
                self.leg_attempts.leg_of.remove(key);
                if !leg.cancelled && self.retry_attempt(leg_key, leg, &failed, response) {
                    return Outcome::Pending;
                }
                attempt_failed(leg, code)
            }
        }
    }

    /// Attempt `key` of `leg` got no final response (Timer B): a 408.
    pub(super) fn attempt_timeout(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        key: &TransactionKey,
    ) -> Outcome {
        let Some(i) = leg.attempts.iter().position(|a| &a.key == key) else {
            return Outcome::Pending;
        };
        let failed = leg.attempts.remove(i);
        self.leg_attempts.leg_of.remove(key);
        if !leg.cancelled && leg.attempts.is_empty() && self.fail_over_leg(leg_key, leg, &failed) {
            return Outcome::Pending;
        }
        attempt_failed(leg, 408)
    }

    /// A failed attempt sent again where that is what a B2BUA does: with credentials after
    /// a challenge, to the trunk's next address after a server failure.
    fn retry_attempt(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        failed: &Attempt,
        response: &rsip::Response,
    ) -> bool {
        let code = response.status_code.code();
        if matches!(code, 401 | 407) && !failed.authenticated {
            let Some((user, password)) = leg.credentials.clone() else {
                return false;
            };
            let via = self.via_value(failed.peer);
            let Some(invite) = super::auth::invite_with_credentials(
                &failed.invite,
                response,
                &via,
                &user,
                &password,
            ) else {
                return false;
            };
            info!(%user, code, "answering the trunk's challenge");
            return self.send_attempt(leg_key, leg, invite, failed.peer, true);
        }
        leg.attempts.is_empty()
            && crate::trunk_dns::fails_over(code)
            && self.fail_over_leg(leg_key, leg, failed)
    }

    /// The failed attempt's INVITE, sent to the trunk's next address (a new transaction,
    /// without the previous server's credentials). `true` when one went out.
    fn fail_over_leg(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        failed: &Attempt,
    ) -> bool {
        while !leg.alternates.is_empty() {
            let peer = leg.alternates.remove(0);
            let via = self.via_value(peer);
            let contact = self.contact_header(peer);
            let mut invite = failed.invite.clone();
            invite.headers.retain(|h| {
                !matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_))
                    && !matches!(h, Header::Other(n, _) if n.eq_ignore_ascii_case("authorization") || n.eq_ignore_ascii_case("proxy-authorization"))
            });
            for h in invite.headers.iter_mut() {
                match h {
                    Header::Via(_) => *h = Header::Via(via.clone().into()),
                    Header::Contact(_) => *h = contact.clone(),
                    _ => {}
                }
            }
            info!(next = %peer.addr, "trunk attempt failed; trying the next address");
            crate::counters::inc(&self.counters.trunk_failovers);
            if self.send_attempt(leg_key, leg, invite, peer, false) {
                return true;
            }
        }
        false
    }

    /// While a trunk has further addresses, the attempt `key` gets a deadline: no
    /// response at all by then and the next address is tried.
    pub(super) fn arm_attempt_deadline(&self, leg: &UacLeg, key: &TransactionKey) {
        if !leg.alternates.is_empty() {
            self.schedule(
                leg.failover_timeout,
                crate::control::Command::LegAttemptTimeout(key.clone()),
            );
        }
    }

    /// Attempt `key`'s failover deadline: if it never got a response, it is left behind
    /// (a late answer is stopped like a losing binding's) and the next address is tried;
    /// with none left the leg fails 408.
    pub(super) fn attempt_deadline(
        &mut self,
        leg_key: &TransactionKey,
        leg: &mut UacLeg,
        key: &TransactionKey,
    ) -> Outcome {
        let Some(i) = leg.attempts.iter().position(|a| &a.key == key) else {
            return Outcome::Pending;
        };
        if leg.attempts[i].responded || leg.cancelled || leg.alternates.is_empty() {
            return Outcome::Pending;
        }
        let late = leg.attempts.remove(i);
        info!(peer = %late.peer.addr, "no response from the trunk in time");
        self.leg_attempts.leg_of.remove(key);
        self.leg_attempts
            .abandoned
            .insert(late.key.clone(), (late.invite.clone(), late.peer));
        if leg.attempts.is_empty() && self.fail_over_leg(leg_key, leg, &late) {
            return Outcome::Pending;
        }
        attempt_failed(leg, 408)
    }

    /// CANCEL for every attempt of `leg` still ringing (ring timeout, hang-up); their
    /// 487s then fail the leg. No retries after this.
    pub(super) fn cancel_leg(&mut self, leg: &mut UacLeg) {
        leg.cancelled = true;
        for attempt in &leg.attempts {
            self.cancel_attempt(attempt);
        }
    }

    fn cancel_attempt(&mut self, attempt: &Attempt) {
        let cancel = super::uac_leg::cancel_of(&attempt.invite);
        if let Err(e) = self.layer.send_request(now(), cancel, attempt.peer) {
            warn!(error = %e, "could not send CANCEL");
        }
    }

    /// A response to an attempt left behind when another answered: a 2xx that crossed
    /// our CANCEL is ACKed (again for each retransmission, by `ack_again`) and hung up
    /// (BYE); other finals just close it. `false` if `key` is no such attempt.
    pub(super) fn on_abandoned_attempt(
        &mut self,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> bool {
        let code = response.status_code.code();
        if !self.leg_attempts.abandoned.contains_key(key) {
            return false;
        }
        if code < 200 {
            // Left behind before it said anything (failover deadline): now it rings, so
            // it can be cancelled.
            if code > 100
                && let Some((invite, peer)) = self.leg_attempts.abandoned.get(key)
            {
                let cancel = super::uac_leg::cancel_of(invite);
                if let Err(e) = self.layer.send_request(now(), cancel, *peer) {
                    warn!(error = %e, "could not send CANCEL");
                }
            }
            return true;
        }
        let Some((invite, peer)) = self.leg_attempts.abandoned.remove(key) else {
            return true;
        };
        if code >= 300 {
            return true;
        }
        let mut dialog = match Dialog::new_uac(&invite, response) {
            Ok(dialog) => dialog,
            Err(e) => {
                warn!(error = %e, "unusable late 2xx from a binding that lost the race");
                return true;
            }
        };
        info!(peer = %peer.addr, "a second phone answered after the first: ACK and BYE");
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let ack = dialog.ack(cseq_number(&invite).unwrap_or(1), &via, &contact);
        self.layer.send_ack_for_2xx(ack.clone(), peer);
        let keep = self.config.timers().t1 * 64;
        self.uac_acks.insert(key.clone(), ack, peer, keep);
        self.bye_placed(&mut dialog, peer, EndResult::Other);
        true
    }
}

impl Endpoint {
    /// An abandoned attempt got no final response (Timer B): forgotten. `false` if `key`
    /// is no such attempt.
    pub(super) fn on_abandoned_timeout(&mut self, key: &TransactionKey) -> bool {
        self.leg_attempts.abandoned.remove(key).is_some()
    }
}
