//! Glare on the legs of a bridged call (RFC 3261 §14.1): a phone's re-INVITE or UPDATE
//! offer that crosses Siphon's own pending offer on the same leg gets 491; Siphon's own
//! re-INVITE that gets 491 is sent again after the RFC's random interval (2.1–4 s on the
//! callee leg, whose Call-ID Siphon made; 0–2 s on the caller's), offering the hold state
//! the leg should have by then, so that both legs' hold states end in step.

use siphon_sip::dialog::DialogId;
use siphon_sip::glare;
use siphon_sip::transaction::TransactionKey;
use tracing::info;

use super::{Bridges, index};
use crate::control::Command;
use crate::endpoint::Endpoint;
use crate::media::bridge::Side;

impl Bridges {
    /// Whether Siphon's own offer (re-INVITE not yet answered, or UPDATE) is pending on
    /// leg `side` of call `id`.
    pub(super) fn own_offer_pending(&self, id: &DialogId, side: Side) -> bool {
        self.reinvites
            .values()
            .any(|(c, s, ack)| c == id && *s == side && ack.is_none())
            || self.updates.values().any(|(c, s)| c == id && *s == side)
    }

    /// A re-INVITE or UPDATE Siphon sent got no response at all: no longer pending.
    pub(in crate::endpoint) fn forget_offer(&mut self, key: &TransactionKey) {
        self.reinvites.remove(key);
        self.updates.remove(key);
    }
}

impl Endpoint {
    /// Siphon's re-INVITE on leg `side` of call `id` got 491: try again later.
    pub(super) fn schedule_glare_retry(&mut self, id: &DialogId, side: Side) {
        let delay = glare::retry_delay(side == Side::Callee, rand::random::<u32>());
        info!(
            ?side,
            retry_ms = delay.as_millis() as u64,
            "glare (491): re-INVITE again later"
        );
        self.schedule(
            delay,
            Command::GlareRetry {
                call: id.clone(),
                callee: side == Side::Callee,
            },
        );
    }

    /// `Command::GlareRetry`: the re-INVITE again, offering the leg's hold state as it
    /// stands now (unless an offer is pending again, or the call is gone).
    pub(in crate::endpoint) fn glare_retry(&mut self, id: &DialogId, callee: bool) {
        let side = if callee { Side::Callee } else { Side::Caller };
        let Some(direction) = self.bridges.calls.get(id).map(|c| c.offered[index(side)]) else {
            return;
        };
        if self.bridges.own_offer_pending(id, side) {
            return;
        }
        let _ = self.send_reinvite(id, side, direction);
    }
}
