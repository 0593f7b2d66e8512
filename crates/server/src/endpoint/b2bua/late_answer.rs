//! The answer in an ACK to a bridged re-INVITE that had no SDP. A phone may re-INVITE
//! without an offer (RFC 3261 §14.1: asking for Siphon's current one, as some PBXs do to
//! refresh or to resume); Siphon's offer then goes in the 2xx and the phone's answer comes
//! back in the ACK (RFC 3264 §4). That answer may move the leg's media (address, port,
//! codec), so it is applied to the leg exactly as an answer in a 2xx would be.

use siphon_sip::dialog::DialogId;
use tracing::{info, warn};

use super::{Bridged, callee_params, index};
use crate::endpoint::Endpoint;
use crate::media::bridge::Side;

impl Endpoint {
    /// `ack` came in the dialog `dialog` of the `side` leg of bridged call `id`: when Siphon
    /// offered in its 2xx to that leg, apply the answer the ACK carries.
    pub(super) fn ack_answer(
        &mut self,
        id: &DialogId,
        side: Side,
        dialog: &DialogId,
        ack: &rsip::Request,
    ) {
        let Some((port, peer)) = self
            .bridges
            .calls
            .get(id)
            .filter(|c| c.answer_in_ack[index(side)] && leg_dialog_is(c, side, dialog))
            .map(|c| {
                let peer = match side {
                    Side::Caller => c.caller.peer,
                    Side::Callee => c.winner().map_or(c.caller.peer, |b| b.peer),
                };
                (c.media.port(side), peer)
            })
        else {
            return;
        };
        let local = self.local_media(port, peer.addr.ip());
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        call.answer_in_ack[index(side)] = false;
        let session = match side {
            Side::Caller => &call.caller.session,
            Side::Callee => &call.callee_session,
        };
        let Some(params) = callee_params(session, &local, &ack.body) else {
            // The offer stays unanswered; the leg keeps its media (RFC 3264 has nothing
            // better: an ACK cannot be refused).
            warn!(
                ?side,
                "ACK to our offer in a re-INVITE's 2xx carries no usable answer"
            );
            return;
        };
        info!(?side, codec = ?params.codec, remote = ?params.remote, "answer in ACK applied");
        match side {
            Side::Caller => call.caller.codec = params.codec,
            Side::Callee => call.callee_codec = Some(params.codec),
        }
        call.media.update(side, params);
    }
}

/// The ACK's dialog is the leg's own (the caller's, or the winning callee's).
fn leg_dialog_is(call: &Bridged, side: Side, dialog: &DialogId) -> bool {
    match side {
        Side::Caller => &call.caller.dialog.id == dialog,
        Side::Callee => call
            .winner()
            .and_then(|b| b.dialog.as_ref())
            .is_some_and(|d| &d.id == dialog),
    }
}
