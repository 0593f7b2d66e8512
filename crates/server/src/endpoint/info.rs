//! INFO in the dialogs of calls Siphon answers itself: DTMF signalled in SIP
//! (`application/dtmf-relay`, `application/dtmf`; see `siphon_sip::info_dtmf`) reaches the
//! call's media task, which hands it to the forks exactly like an RFC 4733 key press. Other
//! INFO bodies are acknowledged (200) and otherwise ignored, as before.

use rsip::Header;
use siphon_sip::dialog::DialogId;
use siphon_sip::info_dtmf::{self, InfoDtmf};
use siphon_sip::message::header_value;
use siphon_sip::transaction::TransactionKey;
use tracing::debug;

use super::Endpoint;

impl Endpoint {
    pub(super) fn on_info(&mut self, key: &TransactionKey, request: &rsip::Request) {
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
        match info_dtmf_of(request) {
            Ok(dtmf) => {
                if let Some(d) = dtmf {
                    call.media.dtmf(d.digit, d.duration_ms);
                }
                self.reply_to(key, request, 200, None, &[]);
            }
            Err(reason) => self.reply_to(key, request, 400, Some(&reason), &[]),
        }
    }
}

/// The key press an INFO request carries: `Ok(None)` for other INFO bodies, `Err` with
/// the reason phrase of a 400 for a DTMF body that cannot be used.
pub(super) fn info_dtmf_of(request: &rsip::Request) -> Result<Option<InfoDtmf>, String> {
    let content_type = header_value(&request.headers, "Content-Type").unwrap_or_default();
    info_dtmf::parse(&content_type, &request.body).map_err(|e| {
        debug!(error = %e, "unusable DTMF INFO");
        format!("Bad Request ({e})")
    })
}

/// The headers that give a relayed INFO the same body type as the one received.
pub(super) fn content_type_of(request: &rsip::Request) -> Option<Header> {
    header_value(&request.headers, "Content-Type").map(|v| Header::ContentType(v.into()))
}
