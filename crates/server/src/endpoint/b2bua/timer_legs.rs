//! Finding a bridged call's leg by the dialog a session timer (RFC 4028) runs on: the
//! caller's dialog (which also names the call) or the answering callee's.

use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId};
use siphon_sip::transaction::TransactionKey;

use super::{Bridges, index};
use crate::endpoint::Endpoint;
use crate::media::bridge::Side;

impl Bridges {
    /// The bridged call whose answering callee has dialog `id`.
    pub(in crate::endpoint) fn call_of_callee_dialog(&self, id: &DialogId) -> Option<DialogId> {
        let call = self.by_callee_call_id.get(&id.call_id)?;
        let c = self.calls.get(call)?;
        c.winner()
            .and_then(|b| b.dialog.as_ref())
            .is_some_and(|d| &d.id == id)
            .then(|| call.clone())
    }

    /// Where the requests of dialog `id` (either leg of a bridged call) go.
    pub(in crate::endpoint) fn leg_peer(&self, id: &DialogId) -> Option<Peer> {
        if let Some(c) = self.calls.get(id) {
            return Some(c.caller.peer);
        }
        let call = self.call_of_callee_dialog(id)?;
        self.calls.get(&call)?.winner().map(|b| b.peer)
    }

    /// Dialog `id` (either leg of a bridged call), to send a request in.
    pub(in crate::endpoint) fn leg_dialog(&mut self, id: &DialogId) -> Option<&mut Dialog> {
        if self.calls.contains_key(id) {
            return self.calls.get_mut(id).map(|c| &mut c.caller.dialog);
        }
        let call = self.call_of_callee_dialog(id)?;
        let c = self.calls.get_mut(&call)?;
        let i = c.winner?;
        c.branches.get_mut(i)?.dialog.as_mut()
    }
}

impl Endpoint {
    /// Siphon's session refresh of dialog `id` when it is a bridged leg whose phone does
    /// not allow UPDATE: a re-INVITE offering the leg's current hold state (RFC 4028 §7.4).
    /// `None` when the leg takes UPDATE (or is not a bridged leg).
    pub(in crate::endpoint) fn refresh_bridged_by_reinvite(
        &mut self,
        id: &DialogId,
    ) -> Option<TransactionKey> {
        let (call, side) = if self.bridges.calls.contains_key(id) {
            (id.clone(), Side::Caller)
        } else {
            (self.bridges.call_of_callee_dialog(id)?, Side::Callee)
        };
        let c = self.bridges.calls.get(&call)?;
        if c.leg_allows_update(side) {
            return None;
        }
        let direction = c.offered[index(side)];
        self.send_reinvite(&call, side, direction)
    }
}
