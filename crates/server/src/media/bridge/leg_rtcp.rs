//! RTCP on the legs of a bridge (RFC 3550 §6): each leg reports, from its own RTCP port
//! (RTP port + 1) to the phone's (where its RTCP came from, else its `a=rtcp`, else its RTP
//! address + 1) — or, multiplexed (RFC 5761), from and to the RTP ports — on the
//! stream Siphon sends it (SR) and the one it receives from it (report block); the phone's
//! SRs feed the round-trip fields; the last report goes with BYE when the bridge ends. The
//! state is `siphon_media::relay_rtcp`; the other leg's RTCP is not relayed (each leg is
//! its own RTP session: Siphon rewrites SSRC, sequence and timestamps).

use std::net::SocketAddr;

use siphon_media::rtcp_mux;
use tokio::time::Instant;
use tracing::debug;

use super::Leg;
use crate::counters::{Counters, inc};
use crate::media::scratch;

impl Leg {
    /// Where this leg's RTCP goes (see `RtcpPeer::destination`).
    fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.params
            .as_ref()
            .and_then(|p| p.rtcp_peer().destination(self.latched, self.latched_rtcp))
    }

    /// Whether RTCP is multiplexed on this leg's RTP port (RFC 5761).
    fn rtcp_mux(&self) -> bool {
        self.params.as_ref().is_some_and(|p| p.rtcp_mux)
    }

    /// Whether a datagram on this leg's RTP socket is multiplexed RTCP (RFC 5761 §4): it
    /// goes to [`Leg::on_rtcp`], never relayed as RTP nor counted in the RTP statistics.
    pub(super) fn muxed(&self, datagram: &[u8]) -> bool {
        self.rtcp_mux() && rtcp_mux::is_rtcp(datagram)
    }

    /// The socket this leg's RTCP leaves from.
    fn rtcp_socket(&self) -> &tokio::net::UdpSocket {
        if self.rtcp_mux() {
            &self.rtp.socket
        } else {
            &self.rtp.rtcp
        }
    }

    /// Reads one datagram from this leg's RTCP socket (it said it is readable) into the
    /// thread's buffer (`scratch`) and handles it.
    pub(super) fn read_rtcp(&mut self, counters: &Counters) {
        scratch::with(|s| {
            if let Ok((len, from)) = self.rtp.rtcp.try_recv_from(&mut s.datagram)
                && let Some(data) = s.datagram.get(..len)
            {
                self.on_rtcp(data, from, counters);
            }
        });
    }

    /// A datagram on this leg's RTCP socket (or RTCP multiplexed on its RTP socket).
    pub(super) fn on_rtcp(&mut self, data: &[u8], from: SocketAddr, counters: &Counters) {
        // Only from the phone's address (its RTP source's host): not a stranger's.
        let ours = self
            .latched
            .or(self.params.as_ref().and_then(|p| p.remote))
            .is_some_and(|rtp| rtp.ip() == from.ip());
        if !ours {
            inc(&counters.rtp_stray);
            return;
        }
        match self.rtcp.handle_rtcp(Instant::now().into_std(), data) {
            Ok(()) => {
                inc(&counters.rtcp_packets_in);
                self.latched_rtcp = Some(from);
            }
            Err(e) => debug!(%from, error = %e, "malformed RTCP dropped"),
        }
    }

    /// When this leg's next report is due.
    pub(super) fn rtcp_due(&self) -> Instant {
        Instant::from_std(self.rtcp.poll_timeout())
    }

    /// Sends this leg's report if it is due (and the leg has a peer to send it to).
    pub(super) fn poll_rtcp(&mut self, counters: &Counters) {
        let mut out = [0u8; 512];
        let Ok(Some(n)) = self.rtcp.poll(Instant::now().into_std(), &mut out) else {
            return;
        };
        if let Some(dest) = self.rtcp_destination()
            && self.rtcp_socket().try_send_to(&out[..n], dest).is_ok()
        {
            inc(&counters.rtcp_packets_out);
        }
    }

    /// The last report and BYE (the bridge ends).
    pub(super) fn send_rtcp_bye(&mut self, counters: &Counters) {
        let Some(dest) = self.rtcp_destination() else {
            return;
        };
        let mut out = [0u8; 512];
        if let Ok(n) = self.rtcp.bye(Instant::now().into_std(), &mut out)
            && self.rtcp_socket().try_send_to(&out[..n], dest).is_ok()
        {
            inc(&counters.rtcp_packets_out);
        }
    }
}
