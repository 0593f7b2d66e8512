//! UPDATE (RFC 3311) in the dialogs of calls Siphon answers itself, early or confirmed: with
//! an SDP offer it is answered like a re-INVITE's (the 200 carries the answer, no ACK
//! follows); without one it refreshes the session timer (RFC 4028 §7.4) and nothing else.
//! Siphon never sends UPDATE itself.

use siphon_sip::dialog::DialogId;
use siphon_sip::transaction::TransactionKey;

use super::Endpoint;

impl Endpoint {
    pub(super) fn on_update(&mut self, key: &TransactionKey, request: &rsip::Request) {
        if !request.body.is_empty() {
            self.on_reinvite(key, request);
            return;
        }
        let Some(id) = DialogId::for_incoming(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        if let Err(e) = call.dialog.on_remote_request(request) {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let peer = call.peer;
        self.reply_refresh(key, request, &id, peer);
    }

    /// The 200 to an UPDATE without SDP in dialog `id`: Contact (RFC 3311 §5.2), and the
    /// session timer restarted and restated when the dialog has one.
    pub(super) fn reply_refresh(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
        peer: siphon_sip::Peer,
    ) {
        let mut headers = vec![self.contact_header(peer)];
        headers.extend(self.session_timer_headers(id, request));
        self.reply_to(key, request, 200, None, &headers);
    }
}
