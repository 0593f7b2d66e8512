//! REFER (RFC 3515) in the dialogs Siphon holds: a phone asking Siphon to move the other
//! party of its call elsewhere (blind), or onto another call through Siphon (attended, a
//! `Refer-To` carrying `Replaces`, RFC 3891). The request is checked here, with the
//! parsing in `siphon_sip::refer`: a REFER outside a dialog Siphon holds is 481, one
//! without a usable `Refer-To` is 400, a `Replaces` naming no call Siphon carries is 404.
//!
//! What is not built yet: carrying out a well-formed transfer (placing the new leg and
//! re-bridging the media with the forks kept). Until it is, a well-formed REFER is
//! declined with 603 (RFC 3515 §2.4.2 lets the recipient decline), so the phone keeps its
//! call as it was rather than believing a transfer happened.

use siphon_sip::dialog::DialogId;
use siphon_sip::refer::{self, ReferTo};
use siphon_sip::transaction::TransactionKey;
use tracing::info;

use crate::endpoint::Endpoint;

impl Endpoint {
    /// A REFER in a dialog: `bridged` when [`Endpoint::bridge_request`] already found the
    /// bridged call it belongs to; otherwise it must be a dialog of a call Siphon answered.
    pub(in crate::endpoint) fn on_refer(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        bridged: bool,
    ) {
        if !bridged {
            let Some(call) = DialogId::for_incoming(request).and_then(|id| self.calls.get_mut(&id))
            else {
                self.reply_to(key, request, 481, None, &[]);
                return;
            };
            if let Err(e) = call.dialog.on_remote_request(request) {
                let reason = e.to_string();
                self.reply_to(key, request, e.status(), Some(&reason), &[]);
                return;
            }
        }
        let target = match refer_to_of(request) {
            Ok(t) => t,
            Err(e) => {
                info!(error = %e, "REFER refused");
                let reason = e.to_string();
                self.reply_to(key, request, e.status(), Some(&reason), &[]);
                return;
            }
        };
        if let Some(replaces) = &target.replaces
            && !self.carries_call_id(&replaces.call_id)
        {
            info!(replaces = %replaces.call_id, "REFER with Replaces naming no call here; 404");
            self.reply_to(key, request, 404, Some("Replaced Call Not Found"), &[]);
            return;
        }
        info!(
            target = %target.uri,
            attended = target.replaces.is_some(),
            "REFER declined: carrying out transfers is not built yet"
        );
        self.reply_to(key, request, 603, Some("Transfer Not Available"), &[]);
    }

    /// Whether a call Siphon carries has a dialog with this Call-ID (either leg).
    fn carries_call_id(&self, call_id: &str) -> bool {
        self.calls.keys().any(|id| id.call_id == call_id)
            || self.bridges.by_callee_call_id.contains_key(call_id)
            || self.bridges.calls.keys().any(|id| id.call_id == call_id)
    }
}

/// The REFER's target from its `Refer-To` headers (long or compact `r` form).
fn refer_to_of(request: &rsip::Request) -> Result<ReferTo, refer::ReferError> {
    let values = request.headers.iter().filter_map(|h| match h {
        rsip::Header::Other(name, value)
            if name.eq_ignore_ascii_case("refer-to") || name.eq_ignore_ascii_case("r") =>
        {
            Some(value.as_str())
        }
        _ => None,
    });
    refer::parse_refer_to_headers(values)
}
