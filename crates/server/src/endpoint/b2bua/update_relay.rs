//! UPDATE relayed across the bridge (RFC 3311): an UPDATE with an offer that changes the
//! hold state of one leg is answered by Siphon for that leg (it anchors the media) and
//! re-offered to the other leg as an UPDATE, when that phone allows UPDATE (else as a
//! re-INVITE, see `in_dialog::send_reinvite`). The other phone's answer is applied to its
//! leg's media.

use rsip::{Header, Method};
use siphon_sip::dialog::DialogId;
use siphon_sip::message;
use siphon_sip::sdp::Direction;
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::callee_params;
use super::in_dialog::leg_state;
use crate::endpoint::{Endpoint, now};
use crate::media::bridge::Side;

impl Endpoint {
    /// Offers `direction` to the leg `side` of call `id` with an UPDATE, in that leg's
    /// dialog and offer/answer session.
    pub(super) fn send_update_offer(&mut self, id: &DialogId, side: Side, direction: Direction) {
        let Some((port, peer, codec)) = self.bridges.calls.get(id).map(|c| {
            let (peer, codec) = match side {
                Side::Caller => (c.caller.peer, Some(c.caller.codec)),
                Side::Callee => (c.winner().map_or(c.caller.peer, |b| b.peer), c.callee_codec),
            };
            (c.media.port(side), peer, codec)
        }) else {
            return;
        };
        let via = self.via_value(peer);
        let contact = self.contact_uri(peer);
        let mut local = self.local_media(port, peer.addr.ip());
        // Keep the codec the leg uses: a hold should not change codecs.
        local.codecs.sort_by_key(|c| Some(*c) != codec);
        let Some(call) = self.bridges.calls.get_mut(id) else {
            return;
        };
        let Some((dialog, session, peer)) = leg_state(call, side) else {
            return;
        };
        let sdp = session.offer(&local, direction).to_string();
        let mut request = dialog.request(Method::Update, &via, &contact);
        request
            .headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut request.headers, sdp.as_bytes());
        request.body = sdp.into_bytes();
        info!(?side, ?direction, "relaying hold state with an UPDATE");
        match self.layer.send_request(now(), request, peer) {
            Ok(key) => {
                self.bridges.updates.insert(key, (id.clone(), side));
            }
            Err(e) => warn!(error = %e, "could not send UPDATE"),
        }
    }

    /// The response to an UPDATE Siphon relayed; `false` if `key` is not one. A 2xx's
    /// answer is applied to the leg's media; a refusal leaves the leg as it was.
    pub(in crate::endpoint) fn on_update_relay_response(
        &mut self,
        key: &TransactionKey,
        response: &rsip::Response,
    ) -> bool {
        let code = response.status_code.code();
        if !self.bridges.updates.contains_key(key) {
            return false;
        }
        if code < 200 {
            return true;
        }
        let Some((id, side)) = self.bridges.updates.remove(key) else {
            return true;
        };
        if code >= 300 {
            info!(?side, code, "UPDATE refused by the phone");
            return true;
        }
        let Some((port, peer)) = self.bridges.calls.get(&id).map(|c| {
            let peer = match side {
                Side::Caller => c.caller.peer,
                Side::Callee => c.winner().map_or(c.caller.peer, |b| b.peer),
            };
            (c.media.port(side), peer)
        }) else {
            return true;
        };
        let local = self.local_media(port, peer.addr.ip());
        let Some(call) = self.bridges.calls.get_mut(&id) else {
            return true;
        };
        let params = leg_state(call, side)
            .and_then(|(_, session, _)| callee_params(session, &local, &response.body));
        if let Some(params) = params {
            call.media.update(side, params);
        }
        true
    }
}
