//! Requests within a bridged call: the caller's CANCEL and ACK, BYE from either phone
//! (which ends both legs), and re-INVITEs, answered for their own leg and, when the hold
//! state changes, re-offered on the other leg.

use rsip::{Header, Method};
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId, DialogState, cseq_number};
use siphon_sip::message;
use siphon_sip::sdp::{Direction, LocalSession};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::{Bridged, callee_params, index, other};
use crate::cdr::Party;
use crate::counters::EndResult;
use crate::endpoint::replies::reason_header;
use crate::endpoint::{Endpoint, allow, now, parse_offer};
use crate::media::MediaParams;
use crate::media::bridge::Side;

impl Endpoint {
    /// Requests for bridged calls: CANCEL of the caller's INVITE, and in-dialog requests
    /// from either phone. `false`: not a bridged call's, the caller handles it.
    pub(in crate::endpoint) async fn bridge_request(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
    ) -> bool {
        if request.method == Method::Cancel {
            let Some(invite_key) = self.layer.find_invite_for_cancel(request) else {
                return false;
            };
            let Some(id) = self.bridges.by_invite.get(&invite_key).cloned() else {
                return false;
            };
            self.reply_to(key, request, 200, None, &[]);
            info!(call_id = %id.call_id, "caller cancelled");
            self.reply(&invite_key, 487, Some(&id.local_tag), &[]);
            self.end_bridge(&id, EndResult::Cancelled, Party::Caller, 487);
            return true;
        }
        let Some(dialog_id) = DialogId::for_incoming(request) else {
            return false;
        };
        if self.referrer_request(key, request, &dialog_id) {
            return true;
        }
        let (id, side) = if let Some(call) = self.bridges.calls.get(&dialog_id) {
            if !call.caller_dialog_is(&dialog_id) {
                // The caller's leg moved to another phone (REFER) and this dialog is over.
                self.reply_to(key, request, 481, None, &[]);
                return true;
            }
            (dialog_id, Side::Caller)
        } else if let Some(id) = self.bridges.moved_callers.get(&dialog_id) {
            (id.clone(), Side::Caller)
        } else if let Some(id) = self.bridges.by_callee_call_id.get(&dialog_id.call_id) {
            let id = id.clone();
            let ours = self
                .bridges
                .calls
                .get(&id)
                .and_then(Bridged::winner)
                .and_then(|b| b.dialog.as_ref())
                .is_some_and(|d| d.id == dialog_id);
            if !ours {
                self.reply_to(key, request, 481, None, &[]);
                return true;
            }
            (id, Side::Callee)
        } else {
            return false;
        };
        match request.method {
            Method::Bye => self.bridge_bye(key, request, &id, side),
            Method::Invite => self.bridge_reinvite(key, request, &id, side),
            // UPDATE (RFC 3311) with an offer is answered like a re-INVITE's; without one
            // it only refreshes the session (RFC 4028).
            Method::Update if request.body.is_empty() => self.bridge_refresh(key, request, side),
            Method::Update => self.bridge_reinvite(key, request, &id, side),
            Method::Info => self.bridge_info(key, request, &id, side),
            Method::Options | Method::Notify => self.reply_to(key, request, 200, None, &[]),
            Method::Refer => self.on_refer(key, request, Some((id, side))).await,
            _ => self.reply_to(key, request, 405, None, &[allow()]),
        }
        true
    }

    fn bridge_bye(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
        side: Side,
    ) {
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let checked = match side {
            Side::Caller => call.caller.dialog.on_remote_request(request),
            Side::Callee => match call.winner.and_then(|i| call.branches[i].dialog.as_mut()) {
                Some(d) => d.on_remote_request(request),
                None => Ok(()),
            },
        };
        if let Err(e) = checked {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let answered = call.caller.answered;
        let invite_key = call.caller.invite_key.clone();
        self.reply_to(key, request, 200, None, &[]);
        let party = match side {
            Side::Caller => Party::Caller,
            Side::Callee => Party::Callee,
        };
        info!(call_id = %id.call_id, hung_up_by = ?party, "hung up");
        if answered {
            let other = match side {
                Side::Caller => Side::Callee,
                Side::Callee => Side::Caller,
            };
            self.bye_leg(id, other, EndResult::Completed);
        } else {
            // A BYE in the caller's early dialog withdraws the call like a CANCEL.
            self.reply(&invite_key, 487, Some(&id.local_tag), &[]);
        }
        self.end_bridge(id, EndResult::Completed, party, 200);
    }

    /// Sends BYE on one leg of a bridged call (its dialog must be confirmed), its Reason
    /// saying why the call ends (`result`).
    pub(super) fn bye_leg(&mut self, id: &DialogId, side: Side, result: EndResult) {
        let Some(peer) = self.bridges.calls.get(id).and_then(|c| match side {
            Side::Caller => Some(c.caller.peer),
            Side::Callee => c.winner().map(|b| b.peer),
        }) else {
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let (dialog, peer) = match side {
            Side::Caller => (&mut call.caller.dialog, call.caller.peer),
            Side::Callee => {
                let Some(branch) = call.winner.and_then(|i| call.branches.get_mut(i)) else {
                    return;
                };
                let peer = branch.peer;
                let Some(dialog) = branch.dialog.as_mut() else {
                    return;
                };
                (dialog, peer)
            }
        };
        let mut bye = dialog.request(Method::Bye, &via, &contact);
        bye.headers.push(reason_header(result));
        if let Err(e) = self.layer.send_request(now(), bye, peer) {
            warn!(error = %e, "could not send BYE");
        }
    }

    /// A re-INVITE from either phone (hold, unhold, a new address) is answered by Siphon
    /// for that leg alone: the media relay adapts, the other phone needs to know nothing.
    fn bridge_reinvite(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
        side: Side,
    ) {
        let Some((port, peer)) = self.bridges.calls.get(id).map(|c| {
            let peer = match side {
                Side::Caller => c.caller.peer,
                Side::Callee => c.winner().map_or(c.caller.peer, |b| b.peer),
            };
            (c.media.port(side), peer)
        }) else {
            return;
        };
        if self.bridges.own_offer_pending(id, side) {
            // Glare: Siphon's own offer on this leg is pending (RFC 3261 §14.1).
            info!(?side, "re-INVITE or UPDATE crossing Siphon's own; 491");
            self.reply_to(key, request, 491, None, &[]);
            return;
        }
        let local = self.local_media(port, peer.addr.ip());
        let contact = self.contact_header(peer);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let (dialog, session) = match side {
            Side::Caller => (&mut call.caller.dialog, &mut call.caller.session),
            Side::Callee => {
                let Some(dialog) = call
                    .winner
                    .and_then(|i| call.branches.get_mut(i))
                    .and_then(|b| b.dialog.as_mut())
                else {
                    self.reply_to(key, request, 481, None, &[]);
                    return;
                };
                (dialog, &mut call.callee_session)
            }
        };
        if let Err(e) = dialog.on_remote_request(request) {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let tag = dialog.id.local_tag.clone();
        let mut relay = None;
        let sdp = match parse_offer(request) {
            // No offer: the phone asks for ours, and answers it in the ACK.
            Ok(None) => {
                call.answer_in_ack[index(side)] = true;
                session.offer(&local, Direction::SendRecv).to_string()
            }
            Ok(Some(offer)) => match session.answer(&offer, &local) {
                Ok(n) => {
                    info!(?side, direction = ?n.direction, "re-INVITE");
                    if side == Side::Callee {
                        call.callee_codec = Some(n.codec);
                    } else {
                        call.caller.codec = n.codec;
                    }
                    call.media.update(side, MediaParams::from(&n));
                    // Hold (or unhold) on one leg is told to the other: a phone put on
                    // hold shows it, and stops sending what nobody listens to.
                    let wanted = match n.direction {
                        Direction::RecvOnly => Direction::SendOnly,
                        Direction::Inactive => Direction::Inactive,
                        _ => Direction::SendRecv,
                    };
                    let o = index(other(side));
                    if call.winner.is_some() && call.offered[o] != wanted {
                        call.offered[o] = wanted;
                        relay = Some((other(side), wanted));
                    }
                    n.answer.to_string()
                }
                Err(e) => {
                    // A failed re-INVITE leaves the session as it was (RFC 3261 §14.2).
                    let reason = e.to_string();
                    self.reply_to(key, request, e.status_code(), Some(&reason), &[]);
                    return;
                }
            },
            Err((code, reason)) => {
                self.reply_to(key, request, code, Some(&reason), &[]);
                return;
            }
        };
        self.reply_sdp(key, request, &tag, contact, sdp);
        if let Some((side, direction)) = relay {
            // An UPDATE is relayed as an UPDATE to a phone that allows it (RFC 3311).
            let by_update = request.method == Method::Update
                && self
                    .bridges
                    .calls
                    .get(id)
                    .is_some_and(|c| c.leg_allows_update(side));
            if by_update {
                self.send_update_offer(id, side, direction);
            } else {
                let _ = self.send_reinvite(id, side, direction);
            }
        }
    }

    /// A re-INVITE to one leg offering `direction` (hold: sendonly or inactive; unhold:
    /// sendrecv), in that leg's dialog and offer/answer session.
    pub(super) fn send_reinvite(
        &mut self,
        id: &DialogId,
        side: Side,
        direction: Direction,
    ) -> Option<TransactionKey> {
        let (port, peer, codec) = self.bridges.calls.get(id).map(|c| {
            let (peer, codec) = match side {
                Side::Caller => (c.caller.peer, Some(c.caller.codec)),
                Side::Callee => (c.winner().map_or(c.caller.peer, |b| b.peer), c.callee_codec),
            };
            (c.media.port(side), peer, codec)
        })?;
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let mut local = self.local_media(port, peer.addr.ip());
        // Keep the codec the leg uses: a hold should not change codecs.
        local.codecs.sort_by_key(|c| Some(*c) != codec);
        let call = self.bridges.calls.get_mut(id)?;
        let (dialog, session, peer) = leg_state(call, side)?;
        let sdp = session.offer(&local, direction).to_string();
        let mut request = dialog.request(Method::Invite, &via, &contact);
        request
            .headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut request.headers, sdp.as_bytes());
        request.body = sdp.into_bytes();
        info!(
            ?side,
            ?direction,
            "re-INVITE offering the leg's session (hold state or refresh)"
        );
        match self.layer.send_request(now(), request, peer) {
            Ok(key) => {
                self.bridges
                    .reinvites
                    .insert(key.clone(), (id.clone(), side, None));
                Some(key)
            }
            Err(e) => {
                warn!(error = %e, "could not send re-INVITE");
                None
            }
        }
    }

    /// The response to a re-INVITE Siphon sent: a 2xx is ACKed and its answer applied.
    pub(super) fn on_reinvite_response(&mut self, key: &TransactionKey, response: &rsip::Response) {
        let code = response.status_code.code();
        if code < 200 {
            return;
        }
        // A re-INVITE that was Siphon's session refresh: the timer hears of its outcome.
        self.on_refresh_response(key, code, Some(&response.headers));
        let Some((id, side, ack)) = self.bridges.reinvites.get(key).cloned() else {
            return;
        };
        if code >= 300 {
            // The leg keeps its previous session (RFC 3261 §14.1). On 491 (glare) the
            // offer goes again later, so that the legs' hold states end in step.
            info!(?side, code, "re-INVITE refused by the phone");
            self.bridges.reinvites.remove(key);
            if code == 491 {
                self.schedule_glare_retry(&id, side);
            }
            return;
        }
        let Some((port, peer)) = self.bridges.calls.get(&id).map(|c| {
            let peer = match side {
                Side::Caller => c.caller.peer,
                Side::Callee => c.winner().map_or(c.caller.peer, |b| b.peer),
            };
            (c.media.port(side), peer)
        }) else {
            self.bridges.reinvites.remove(key);
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let local = self.local_media(port, peer.addr.ip());
        let seq = self.layer.request(key).and_then(cseq_number);
        let Some(call) = self.bridges.calls.get_mut(&id) else {
            return;
        };
        let (ack, params) = {
            let Some((dialog, session, peer)) = leg_state(call, side) else {
                return;
            };
            if let Some(ack) = ack {
                self.layer.send_ack_for_2xx(ack, peer); // a retransmitted 2xx
                return;
            }
            let Some(seq) = seq else {
                return;
            };
            let ack = dialog.ack(seq, &via, &contact);
            self.layer.send_ack_for_2xx(ack.clone(), peer);
            (ack, callee_params(session, &local, &response.body))
        };
        if let Some(params) = params {
            call.media.update(side, params);
        }
        if let Some(entry) = self.bridges.reinvites.get_mut(key) {
            entry.2 = Some(ack);
        }
    }

    /// The caller's ACK for our 200 (with its answer, when it made no offer). `false`:
    /// not a bridged call's.
    pub(in crate::endpoint) fn bridge_ack(&mut self, ack: &rsip::Request) -> bool {
        let Some(id) = DialogId::for_incoming(ack) else {
            return false;
        };
        if let Some(call_id) = self.bridges.by_callee_call_id.get(&id.call_id).cloned() {
            // The callee's ACK (for a 2xx to its re-INVITE).
            self.ack_answer(&call_id, Side::Callee, &id, ack);
            return true;
        }
        if let Some(call_id) = self.bridges.moved_callers.get(&id).cloned() {
            // The ACK of a phone a REFER moved the caller's leg to (2xx to its re-INVITE).
            self.ack_answer(&call_id, Side::Caller, &id, ack);
            return true;
        }
        if self.bridges.calls.contains_key(&id) {
            self.ack_answer(&id.clone(), Side::Caller, &id, ack);
        }
        let Some((port, peer)) = self
            .bridges
            .calls
            .get(&id)
            .map(|c| (c.media.port(Side::Caller), c.caller.peer))
        else {
            return false;
        };
        let local = self.local_media(port, peer.addr.ip());
        let Some(call) = self.bridges.calls.get_mut(&id) else {
            return false;
        };
        call.caller.dialog.state = DialogState::Confirmed;
        if call.caller.late_offer {
            call.caller.late_offer = false;
            match callee_params(&call.caller.session, &local, &ack.body) {
                Some(params) => {
                    call.caller.codec = params.codec;
                    call.media.update(Side::Caller, params);
                }
                None => warn!("the caller's ACK carries no usable SDP answer"),
            }
        }
        true
    }

    /// The caller never acknowledged our 200. `false`: not a bridged call's.
    pub(in crate::endpoint) fn bridge_ack_timeout(&mut self, key: &TransactionKey) -> bool {
        let Some(id) = self.bridges.by_invite.get(key).cloned() else {
            return false;
        };
        warn!(call_id = %id.call_id, "no ACK from the caller; ending the bridged call");
        self.hang_up_bridge(&id, EndResult::NoAck);
        true
    }
}

/// A leg's dialog, offer/answer session and peer (the callee's once it answered).
pub(super) fn leg_state(
    call: &mut Bridged,
    side: Side,
) -> Option<(&mut Dialog, &mut LocalSession, Peer)> {
    match side {
        Side::Caller => Some((
            &mut call.caller.dialog,
            &mut call.caller.session,
            call.caller.peer,
        )),
        Side::Callee => {
            let branch = call.winner.and_then(|i| call.branches.get_mut(i))?;
            let peer = branch.peer;
            Some((branch.dialog.as_mut()?, &mut call.callee_session, peer))
        }
    }
}
