//! The packet duration each leg of a bridge asked for (its peer's `a=ptime`, RFC 4566 §6):
//! relayed audio is re-cut into it (`siphon_media::repacketize`), so a phone asking for
//! 30 ms packets gets 30 ms packets whatever the other phone sends in 20 ms. Legs without
//! `a=ptime`, or asking for 20 ms, get the packets as relayed.

use siphon_media::repacketize::Repacketizer;
use tracing::debug;

use crate::media::MediaParams;

/// One leg's re-cutting, rebuilt when its `a=ptime` or payload type changes.
#[derive(Default)]
pub(super) struct Recut {
    /// The `(ptime, payload type)` the re-cutter was made for.
    made_for: Option<(u32, u8)>,
    cutter: Option<Repacketizer>,
}

impl Recut {
    /// The leg's offer/answer gave `params`.
    pub(super) fn follow(&mut self, params: &MediaParams) {
        let wanted = params.ptime.map(|p| (p, params.payload_type));
        if wanted == self.made_for {
            return;
        }
        self.made_for = wanted;
        self.cutter = wanted.and_then(|(ptime, pt)| Repacketizer::new(ptime, pt));
    }

    /// Sends one relayed packet (`packet`, already stamped for this leg) through `send`,
    /// re-cut when the leg asked for another duration: none, one or several packets.
    pub(super) fn send(&mut self, packet: &[u8], send: &mut impl FnMut(&[u8])) {
        let Some(cutter) = self.cutter.as_mut() else {
            send(packet);
            return;
        };
        let mut out = [0u8; 2048];
        if let Err(e) = cutter.push(packet, &mut out, send) {
            debug!(error = %e, "RTP re-cut failed");
        }
    }
}
