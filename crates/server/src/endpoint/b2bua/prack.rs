//! PRACK on the callee legs Siphon places (RFC 3262, UAC side): a phone or carrier that
//! sends a 18x with `Require: 100rel` and `RSeq` gets a PRACK naming it in `RAck`, in the
//! early dialog of that 18x (its Contact, Record-Route and To tag), with the next CSeq of
//! the leg. Retransmissions and out-of-order ones are neither PRACKed nor relayed again
//! (§4). The INVITEs Siphon sends list `100rel` in `Supported`.

use rsip::{Header, Method};
use siphon_sip::dialog::{Dialog, DialogId, cseq_number};
use siphon_sip::message::{header_param, header_value, header_values};
use siphon_sip::reliable::{self, UacRseq};
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use crate::endpoint::{Endpoint, now};

/// One outgoing INVITE's reliable provisional responses.
#[derive(Default)]
pub(super) struct PrackState {
    rseq: UacRseq,
    /// The CSeq of the last PRACK sent (0: none): the requests that follow in the dialog
    /// (BYE, re-INVITE) number after it.
    pub(super) last_cseq: u32,
}

/// Whether to go on with a provisional response on a callee leg.
pub(super) enum Provisional {
    /// Unreliable, or reliable and new: relay it.
    Process,
    /// A reliable one already taken (a retransmission) or out of order: drop it.
    Drop,
}

impl Endpoint {
    /// A 18x on branch `key` of call `id`: when it is reliable and new, PRACK it. Says
    /// whether to relay it.
    pub(super) fn prack_if_reliable(
        &mut self,
        id: &DialogId,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> Provisional {
        let require = header_values(&response.headers, "Require");
        let rseq_header = header_value(&response.headers, "RSeq");
        let Some(rseq) = reliable::reliable_rseq(
            response.status_code.code(),
            require.iter().map(String::as_str),
            rseq_header.as_deref(),
        ) else {
            return Provisional::Process;
        };
        let Some((i, peer)) = self.bridges.calls.get(id).and_then(|c| {
            let i = c.branch(key)?;
            Some((i, c.branches[i].peer))
        }) else {
            return Provisional::Drop;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return Provisional::Drop;
        };
        let branch = &mut call.branches[i];
        let to_tag = response
            .headers
            .iter()
            .find_map(|h| match h {
                Header::To(to) => header_param(&to.to_string(), "tag").map(str::to_string),
                _ => None,
            })
            .unwrap_or_default();
        if !branch.prack.rseq.accept(&to_tag, rseq) {
            debug!(
                rseq,
                "reliable 18x retransmitted or out of order; not PRACKed again"
            );
            return Provisional::Drop;
        }
        let mut dialog = match Dialog::new_uac(&branch.invite, response) {
            Ok(d) => d,
            Err(e) => {
                // Without an early dialog (no To tag, no Contact) there is nowhere to PRACK.
                warn!(error = %e, "a reliable 18x that cannot be PRACKed");
                return Provisional::Process;
            }
        };
        let invite_seq = cseq_number(&branch.invite).unwrap_or(1);
        dialog.local_seq = dialog.local_seq.max(branch.prack.last_cseq);
        let mut prack = dialog.request(Method::PRack, &via, &contact);
        branch.prack.last_cseq = dialog.local_seq;
        prack.headers.push(Header::Other(
            "RAck".into(),
            reliable::rack_value(rseq, invite_seq, "INVITE"),
        ));
        match self.layer.send_request(now(), prack, peer) {
            Ok(_) => info!(rseq, "PRACK sent for a reliable 18x"),
            Err(e) => warn!(error = %e, "could not send PRACK"),
        }
        Provisional::Process
    }
}
