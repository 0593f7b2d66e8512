//! SIP extensions by option tag at the endpoint (RFC 3261 §8.2.2.3): requests requiring
//! one Siphon does not implement get 420 with `Unsupported`; dialog-creating messages
//! advertise `Allow` and `Supported`. What Siphon implements is `siphon_sip::extensions`.

use rsip::{Header, Method};
use siphon_sip::extensions;
use siphon_sip::message::header_strs;
use siphon_sip::transaction::TransactionKey;
use tracing::info;

use super::Endpoint;
use super::replies::allow;

impl Endpoint {
    /// Answers 420 Bad Extension when `request` requires an option tag Siphon does not
    /// implement; `true` if it did (the request is then done with). ACK and CANCEL are
    /// never refused (RFC 3261 §8.2.2.3: their `Require` is ignored).
    pub(super) fn refuse_unsupported(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
    ) -> bool {
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return false;
        }
        // Borrowed: every request but ACK and CANCEL passes here, nearly all without Require.
        let missing = extensions::unsupported(header_strs(&request.headers, "Require"));
        if missing.is_empty() {
            return false;
        }
        let missing = missing.join(", ");
        info!(method = %request.method, unsupported = %missing, "required extension not implemented; 420");
        let headers = [
            Header::Other("Unsupported".into(), missing),
            supported(),
            allow(),
        ];
        self.reply_to(key, request, 420, None, &headers);
        true
    }
}

/// Siphon's `Supported` header: the option tags it implements, and only those.
pub(super) fn supported() -> Header {
    Header::Other("Supported".into(), extensions::supported_value())
}

/// `Allow` and `Supported`, for the responses that set up or refresh a dialog (18x and 2xx
/// to INVITE), so that the peer knows what it may send in the dialog (RFC 3261 §20.5,
/// §20.37).
pub(super) fn capabilities() -> Vec<Header> {
    vec![allow(), supported()]
}

/// `Allow` and `Supported` of the INVITEs Siphon sends (what it implements as UAC).
pub(super) fn request_capabilities() -> Vec<Header> {
    vec![
        allow(),
        Header::Other("Supported".into(), extensions::supported_as_uac_value()),
    ]
}
