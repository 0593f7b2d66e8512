//! UPDATE without SDP in a bridged call (RFC 3311): a session refresh (RFC 4028 §7.4) of
//! that phone's dialog, answered for that leg alone. (An UPDATE with an offer is answered
//! like a re-INVITE, in `in_dialog`.)

use siphon_sip::dialog::DialogId;
use siphon_sip::transaction::TransactionKey;

use super::in_dialog::leg_state;
use crate::endpoint::Endpoint;
use crate::media::bridge::Side;

impl Endpoint {
    pub(super) fn bridge_refresh(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        side: Side,
    ) {
        let Some(dialog_id) = DialogId::for_incoming(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        // The call is named by the caller's dialog; the callee's is found by its Call-ID.
        let call_id = match side {
            Side::Caller => Some(dialog_id.clone()),
            Side::Callee => self
                .bridges
                .by_callee_call_id
                .get(&dialog_id.call_id)
                .cloned(),
        };
        let Some(call) = call_id.and_then(|id| self.bridges.calls.get_mut(&id)) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        let Some((dialog, _, peer)) = leg_state(call, side) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        if let Err(e) = dialog.on_remote_request(request) {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        self.reply_refresh(key, request, &dialog_id, peer);
    }
}
