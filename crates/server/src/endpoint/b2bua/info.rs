//! INFO within a bridged call. A key press signalled by SIP INFO (`application/dtmf-relay`,
//! `application/dtmf`) goes to the call's forks like an RFC 4733 one, and is relayed to the
//! other phone as an INFO with the same body: the bridge relays RTP and originates none, so
//! the other phone gets DTMF the way its peer chose to send it (RFC 4733 events already
//! cross the bridge as RTP). Other INFO bodies are answered 200 and not relayed.

use rsip::Method;
use siphon_sip::dialog::DialogId;
use siphon_sip::message;
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use super::in_dialog::leg_state;
use super::other;
use crate::endpoint::info::{content_type_of, info_dtmf_of};
use crate::endpoint::{Endpoint, now};
use crate::media::bridge::Side;

impl Endpoint {
    pub(super) fn bridge_info(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        id: &DialogId,
        side: Side,
    ) {
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        if let Some((dialog, _, _)) = leg_state(call, side)
            && let Err(e) = dialog.on_remote_request(request)
        {
            let reason = e.to_string();
            self.reply_to(key, request, e.status(), Some(&reason), &[]);
            return;
        }
        let dtmf = match info_dtmf_of(request) {
            Ok(dtmf) => dtmf,
            Err(reason) => {
                self.reply_to(key, request, 400, Some(&reason), &[]);
                return;
            }
        };
        self.reply_to(key, request, 200, None, &[]);
        let Some(d) = dtmf else {
            return;
        };
        if let Some(call) = self.bridges.calls.get(id) {
            call.media.dtmf(d.digit, d.duration_ms);
        }
        self.relay_info(id, other(side), request);
    }

    /// Sends `request`'s body (a DTMF INFO) to the phone on `side`, in its dialog.
    fn relay_info(&mut self, id: &DialogId, side: Side, request: &rsip::Request) {
        let Some(leg_peer) = self.bridges.calls.get(id).and_then(|c| match side {
            Side::Caller => Some(c.caller.peer),
            Side::Callee => c.winner().map(|b| b.peer),
        }) else {
            debug!("DTMF INFO before the callee answered; not relayed");
            return;
        };
        let via = self.via_value(leg_peer);
        let contact = self.contact_uri(leg_peer);
        let Some((dialog, _, peer)) = self
            .bridges
            .calls
            .get_mut(id)
            .and_then(|call| leg_state(call, side))
        else {
            return;
        };
        let mut info = dialog.request(Method::Info, &via, &contact);
        if let Some(content_type) = content_type_of(request) {
            info.headers.push(content_type);
        }
        message::finish(&mut info.headers, &request.body);
        info.body = request.body.clone();
        info!(?side, "relaying DTMF INFO");
        if let Err(e) = self.layer.send_request(now(), info, peer) {
            warn!(error = %e, "could not relay INFO");
        }
    }
}
