//! Attended transfer (RFC 3891 `Replaces`, RFC 5589 §7) between two calls Siphon bridges.
//!
//! Phone A talks to B (call 1), puts B on hold, calls C (call 2), then sends REFER in one
//! of its dialogs with `Refer-To: <sip:C?Replaces=...>` naming its other dialog. Between
//! phones, the REFER's recipient would send INVITE-with-Replaces to the other party. Siphon
//! anchors the media of both calls, so it does the join itself instead of forwarding
//! anything: the far party of one call (its dialog, its RTP socket and negotiated media)
//! takes A's place in the other call's bridge. Neither B nor C gets any signalling (both
//! keep sending RTP to the same Siphon ports), unless it was put on hold, in which case
//! it gets a re-INVITE taking the hold off. A gets 202, NOTIFY 100 and NOTIFY 200 in the
//! REFER's dialog (and its BYE there is answered, or Siphon sends BYE after 64·T1), and
//! Siphon's BYE on the dialog the `Replaces` named, as the replaced dialog's peer would send.
//!
//! Which call goes on: the older one (the first call, usually the customer's, whose forks
//! record or assist the conversation). Its forks keep streaming, its tracks now carry the
//! party that stayed and the party that joined. The other call ends there: its forks stop
//! (reason "joined to another call"), its CDR is written with an `attended` transfer naming
//! the call it was joined into.
//!
//! Also here: an INVITE carrying `Replaces` (a phone doing an attended transfer itself, or
//! a call pickup) is answered per RFC 3891 §3: 400 if the header is malformed, 481 if it
//! names no dialog Siphon holds (or an early dialog Siphon did not initiate), 486 if it
//! says `early-only` and the dialog is confirmed; replacing a leg by a new INVITE is not
//! built (603).

use siphon_sip::dialog::{DialogId, DialogState, uri_of};
use siphon_sip::message::header_value;
use siphon_sip::refer::{self, ReferTo, Replaces};
use siphon_sip::sdp::{Codec, Direction};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::refer::LegParts;
use super::{Bridged, index, other};
use crate::cdr::Party;
use crate::counters::{EndResult, inc};
use crate::endpoint::{Endpoint, user_of};
use crate::media::bridge::Side;
use crate::transfer::TransferStatus;

/// Whether a dialog is the one a `Replaces` names: same Call-ID and the same two tags. The
/// tags are compared in either order: RFC 3891 writes them as the dialog's recipient sees
/// them, and phones differ on whose view a REFER's embedded `Replaces` takes.
fn names(replaces: &Replaces, id: &DialogId) -> bool {
    replaces.call_id == id.call_id
        && ((replaces.to_tag == id.local_tag && replaces.from_tag == id.remote_tag)
            || (replaces.to_tag == id.remote_tag && replaces.from_tag == id.local_tag))
}

/// The account or number a leg's phone is, to check that both dialogs of an attended
/// transfer are the same phone's.
fn party_of(call: &Bridged, side: Side) -> Option<String> {
    match side {
        Side::Caller => uri_of(&call.identity).and_then(|u| user_of(&u)),
        Side::Callee => Some(call.callee_user.clone()),
    }
}

/// A leg of a bridged call a `Replaces` named.
struct Named {
    call: DialogId,
    side: Side,
    confirmed: bool,
}

/// Why an INVITE's `Replaces` cannot be acted on (RFC 3891 §3), as a status and reason.
fn replaces_refusal(found: Option<(bool, bool)>, replaces: &Replaces) -> (u16, &'static str) {
    match found {
        None => (481, "Replaced Dialog Does Not Exist"),
        // An early dialog Siphon did not initiate (its UAS side) cannot be replaced.
        Some((false, false)) => (481, "Replaced Dialog Does Not Exist"),
        Some((true, _)) if replaces.early_only => (486, "Busy Here"),
        _ => (603, "Replacing A Call Leg Is Not Supported"),
    }
}

impl Endpoint {
    /// The leg of a bridged call the `Replaces` names, if any.
    fn find_named(&self, replaces: &Replaces) -> Option<Named> {
        self.bridges.calls.iter().find_map(|(id, call)| {
            if names(replaces, &call.caller.dialog.id) {
                return Some(Named {
                    call: id.clone(),
                    side: Side::Caller,
                    confirmed: call.caller.dialog.state == DialogState::Confirmed,
                });
            }
            let d = call.winner().and_then(|b| b.dialog.as_ref())?;
            names(replaces, &d.id).then(|| Named {
                call: id.clone(),
                side: Side::Callee,
                confirmed: d.state == DialogState::Confirmed,
            })
        })
    }

    /// An out-of-dialog INVITE with a `Replaces` header: answered here (the status per
    /// RFC 3891 §3); `false` if it has none and goes on as a new call.
    pub(in crate::endpoint) fn refuse_invite_replaces(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
    ) -> bool {
        let Some(value) = header_value(&request.headers, "Replaces") else {
            return false;
        };
        let replaces = match refer::parse_replaces(&value) {
            Ok(r) => r,
            Err(e) => {
                let reason = e.to_string();
                self.reply_to(key, request, 400, Some(&reason), &[]);
                return true;
            }
        };
        // (confirmed, initiated by Siphon): a served call's dialog is Siphon's UAS side.
        let found = self
            .find_named(&replaces)
            .map(|n| (n.confirmed, n.side == Side::Callee))
            .or_else(|| {
                self.calls
                    .values()
                    .find(|c| names(&replaces, &c.dialog.id))
                    .map(|c| (c.dialog.state == DialogState::Confirmed, false))
            });
        let (code, reason) = replaces_refusal(found, &replaces);
        info!(call_id = %replaces.call_id, code, "INVITE with Replaces");
        self.reply_to(key, request, code, Some(reason), &[]);
        true
    }

    /// A REFER with `Replaces` from leg `side` of bridged call `id`: attended transfer.
    pub(super) fn refer_attended(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: DialogId,
        side: Side,
        target: ReferTo,
        replaces: Replaces,
    ) {
        let Some(named) = self.find_named(&replaces) else {
            let code = if self.carries_call_id(&replaces.call_id) {
                // A call Siphon serves (echo, fork...), or tags that match no leg.
                603
            } else {
                404
            };
            info!(replaces = %replaces.call_id, code, "REFER with Replaces naming no bridged leg");
            let reason = if code == 404 {
                "Replaced Call Not Found"
            } else {
                "Transfer Not Available"
            };
            self.reply_to(key, request, code, Some(reason), &[]);
            return;
        };
        let refusal = self.attended_refusal(&id, side, &named);
        if let Some((code, reason)) = refusal {
            info!(code, reason, "attended transfer refused");
            self.reply_to(key, request, code, Some(reason), &[]);
            return;
        }
        let notify = self.accept_refer(key, request);
        if let Some(seq) = notify {
            self.notify_referrer(&id, side, seq, 100);
        }
        self.join_calls(Join {
            refer_call: id,
            refer_side: side,
            named,
            target: target.uri,
            notify,
        });
    }

    /// Why two legs cannot be joined, if they cannot.
    fn attended_refusal(
        &self,
        id: &DialogId,
        side: Side,
        named: &Named,
    ) -> Option<(u16, &'static str)> {
        if &named.call == id {
            return Some((403, "Replaces Names The REFER's Own Call"));
        }
        let (Some(refer_call), Some(named_call)) = (
            self.bridges.calls.get(id),
            self.bridges.calls.get(&named.call),
        ) else {
            return Some((481, "Call Gone"));
        };
        if !named.confirmed
            || !refer_call.caller.answered
            || refer_call.winner.is_none()
            || !named_call.caller.answered
            || named_call.winner.is_none()
        {
            // Transferring to a party that still rings is not built.
            return Some((403, "Both Calls Must Be Answered"));
        }
        if self
            .bridges
            .refers
            .values()
            .any(|r| &r.call == id || r.call == named.call)
        {
            return Some((491, "Transfer In Progress"));
        }
        // Only the phone holding both dialogs may join them: the same account or number
        // on both legs.
        let a = party_of(refer_call, side);
        if a.is_none() || a != party_of(named_call, named.side) {
            return Some((403, "Replaces Names Another Party's Dialog"));
        }
        None
    }

    /// Joins the far party of one call into the other in place of the transferor A.
    fn join_calls(&mut self, join: Join) {
        let Join {
            refer_call,
            refer_side,
            named,
            target,
            notify,
        } = join;
        let (Some(r), Some(n)) = (
            self.bridges.calls.get(&refer_call),
            self.bridges.calls.get(&named.call),
        ) else {
            return;
        };
        // The older call goes on (see the module's comment).
        let refer_survives = r.started <= n.started;
        let (stay, stay_a, gone, gone_a) = if refer_survives {
            (
                refer_call.clone(),
                refer_side,
                named.call.clone(),
                named.side,
            )
        } else {
            (
                named.call.clone(),
                named.side,
                refer_call.clone(),
                refer_side,
            )
        };
        let span = self
            .bridges
            .calls
            .get(&stay)
            .map(|c| c.span.clone())
            .unwrap_or_else(tracing::Span::current);
        let _g = span.enter();
        let Some(mut old) = self.take_joined_bridge(&gone) else {
            return;
        };
        let far = other(gone_a);
        let far_held = old.offered[index(far)] != Direction::SendRecv;
        let stay_other_held = self
            .bridges
            .calls
            .get(&stay)
            .is_some_and(|c| c.offered[index(other(stay_a))] != Direction::SendRecv);
        // A's dialog in the call that ends, and the far party's leg.
        let (a_gone, far_parts) = match far {
            Side::Callee => {
                let Some(branch) = old.winner.and_then(|i| old.branches.get_mut(i)) else {
                    return;
                };
                let Some(dialog) = branch.dialog.take() else {
                    return;
                };
                let parts = LegParts {
                    dialog,
                    peer: branch.peer,
                    session: old.callee_session.clone(),
                    codec: old.callee_codec.unwrap_or(Codec::Pcmu),
                    invite: branch.invite.clone(),
                    allows_update: old.callee_allows_update,
                };
                ((old.caller.dialog.clone(), old.caller.peer), parts)
            }
            Side::Caller => {
                let Some(branch) = old.winner.and_then(|i| old.branches.get_mut(i)) else {
                    return;
                };
                let Some(a_dialog) = branch.dialog.take() else {
                    return;
                };
                let parts = LegParts {
                    dialog: old.caller.dialog.clone(),
                    peer: old.caller.peer,
                    session: old.caller.session.clone(),
                    codec: old.caller.codec,
                    invite: old.caller.invite.clone(),
                    allows_update: crate::endpoint::session_timers::allows_update(
                        &old.caller.invite.headers,
                    ),
                };
                ((a_dialog, branch.peer), parts)
            }
        };
        let far_dialog = far_parts.dialog.id.clone();
        let transferor = match gone_a {
            Side::Caller => Party::Caller,
            Side::Callee => Party::Callee,
        };
        self.record_bridge_end(
            &gone,
            &old,
            "AttendedTransfer",
            transferor,
            200,
            Some(TransferStatus::attended(&target, &stay.call_id)),
        );
        let Some(stay_call) = self.bridges.calls.get_mut(&stay) else {
            return;
        };
        let Bridged { media, .. } = old;
        // The far party's socket and media move into the call that stays.
        media.hand_over(far, &mut stay_call.media, stay_a);
        self.session_timers.forget(&far_dialog);
        let Some(a_stay) = self.install_leg(&stay, stay_a, far_parts) else {
            warn!("the call to join into lost its leg; attended transfer abandoned");
            return;
        };
        info!(joined = %gone.call_id, %target, "attended transfer: the two calls are joined");
        if let Some(mut s) = self.registry.get_mut(&stay.call_id) {
            s.transfer = Some(TransferStatus::attended(&target, &gone.call_id));
        }
        self.emit_call_transferred(&stay.call_id, &target, "refer");
        // A: the REFER's dialog gets the final NOTIFY and waits for A's BYE; the dialog
        // `Replaces` named gets BYE, as its replaced peer would send.
        let (refer_dialog, named_dialog) = if refer_survives {
            (a_stay, a_gone)
        } else {
            (a_gone, a_stay)
        };
        self.referral_done(refer_dialog.0, refer_dialog.1, notify);
        let (mut named_dialog, named_peer) = named_dialog;
        self.bye_placed(&mut named_dialog, named_peer, EndResult::Completed);
        // Whoever was on hold for the consultation hears the other party now.
        for (held, side) in [(stay_other_held, other(stay_a)), (far_held, stay_a)] {
            if held {
                if let Some(c) = self.bridges.calls.get_mut(&stay) {
                    c.offered[index(side)] = Direction::SendRecv;
                }
                self.send_reinvite(&stay, side, Direction::SendRecv);
            }
        }
    }

    /// Forgets the call an attended transfer dissolves, without BYE or CANCEL to anyone:
    /// its indexes, timers and call-table entry go, its CDR is written (the transfer
    /// names the call it was joined into); the caller hands its legs on.
    fn take_joined_bridge(&mut self, id: &DialogId) -> Option<Bridged> {
        let call = self.bridges.calls.remove(id)?;
        self.reliable.forget(id);
        self.session_timers.forget(id);
        for branch in &call.branches {
            self.bridges.by_branch.remove(&branch.key);
            if let Some(d) = &branch.dialog {
                self.bridges.by_callee_call_id.remove(&d.id.call_id);
            }
        }
        self.bridges.by_invite.remove(&call.caller.invite_key);
        self.bridges.reinvites.retain(|_, (c, _, _)| c != id);
        self.bridges.updates.retain(|_, (c, _)| c != id);
        self.bridges.moved_callers.retain(|_, c| c != id);
        self.registry.remove(&id.call_id);
        self.call_unlisted(&id.call_id);
        inc(&self.counters.calls_ended);
        self.counters.call_ended(EndResult::Completed);
        call.span
            .in_scope(|| info!("call joined to another by an attended transfer; it ends here"));
        Some(call)
    }
}

/// One attended transfer to carry out.
struct Join {
    refer_call: DialogId,
    refer_side: Side,
    named: Named,
    /// The Refer-To URI, as the call table and `call.transferred` show the target.
    target: String,
    /// The REFER's CSeq, for the NOTIFYs; None with `Refer-Sub: false`.
    notify: Option<u32>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn replaces(early_only: bool) -> Replaces {
        Replaces {
            call_id: "c1@host".into(),
            to_tag: "t".into(),
            from_tag: "f".into(),
            early_only,
        }
    }

    #[test]
    fn tags_match_in_either_order_and_only_with_the_call_id() {
        let id = |c: &str, l: &str, r: &str| DialogId {
            call_id: c.into(),
            local_tag: l.into(),
            remote_tag: r.into(),
        };
        assert!(names(&replaces(false), &id("c1@host", "t", "f")));
        assert!(names(&replaces(false), &id("c1@host", "f", "t")));
        assert!(!names(&replaces(false), &id("c1@host", "t", "x")));
        assert!(!names(&replaces(false), &id("c2@host", "t", "f")));
        assert!(!names(&replaces(false), &id("c1@host", "t", "t")));
    }

    #[test]
    fn invite_replaces_answers_follow_rfc_3891() {
        // No such dialog.
        assert_eq!(replaces_refusal(None, &replaces(false)).0, 481);
        // An early dialog Siphon did not initiate.
        assert_eq!(
            replaces_refusal(Some((false, false)), &replaces(false)).0,
            481
        );
        // early-only, but the dialog is confirmed.
        assert_eq!(
            replaces_refusal(Some((true, false)), &replaces(true)).0,
            486
        );
        assert_eq!(replaces_refusal(Some((true, true)), &replaces(true)).0, 486);
        // A dialog that could be replaced: not built.
        assert_eq!(
            replaces_refusal(Some((true, false)), &replaces(false)).0,
            603
        );
        assert_eq!(
            replaces_refusal(Some((false, true)), &replaces(true)).0,
            603
        );
    }
}
