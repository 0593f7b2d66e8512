//! The media layer: one task per call owns that call's RTP. Nothing here imports the
//! signalling above it; the SIP core drives a task through its handle and hears from it
//! through [`crate::control::Command`].
//!
//! - [`leg`]: a call Siphon answers itself (echo, tone, prompt, fork): RTP/RTCP, jitter
//!   buffer, 20 ms pacer, DTMF, and the call's forks.
//! - [`agent_leg`]: the far leg a served call is transferred to, taken over by the served
//!   call's task (issue 17: the forks keep streaming).
//! - [`bridge`]: a call Siphon bridges (B2BUA): two legs relayed, transcoded when their codecs
//!   differ, and forked.
//! - [`forking`]: what both hand to the fork crate: frames to the WebSocket, the service's
//!   audio back in order.
//! - [`scratch`]: the buffers a task uses within one wake-up, one set per runtime thread.

pub(crate) mod agent_leg;
pub(crate) mod bridge;
pub mod forking;
pub(crate) mod leg;
mod scratch;

use std::net::SocketAddr;

use siphon_media::rtcp_mux::RtcpPeer;
use siphon_sip::sdp::{Codec, Direction};

/// What offer/answer decided for the leg.
#[derive(Debug, Clone)]
pub struct MediaParams {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    /// Where the SDP says to send; replaced by the latched source once RTP arrives.
    pub remote: Option<SocketAddr>,
    /// Our direction: `RecvOnly`/`Inactive` mean the peer holds the call.
    pub direction: Direction,
    /// Other codecs (and their PTs) the peer may send besides `codec`: an answer may list
    /// several and its answerer switch between them per packet (RFC 3264). Received
    /// packets are decoded (or transcoded) by their own PT; what Siphon sends stays `codec`.
    pub also_receive: Vec<(Codec, u8)>,
    /// The peer's `a=ptime`: the packet duration it wants to receive (10-40 ms). Served
    /// legs re-cut their 20 ms packets to it; what the peer sends may be any duration.
    pub ptime: Option<u32>,
    /// RTCP multiplexed on the RTP port (RFC 5761): sent from and to the RTP ports, and
    /// told apart from RTP on receipt.
    pub rtcp_mux: bool,
    /// The peer's `a=rtcp` address (RFC 3605); None means its RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
}

impl MediaParams {
    /// Where the peer wants RTCP, as its SDP says.
    pub fn rtcp_peer(&self) -> RtcpPeer {
        RtcpPeer {
            mux: self.rtcp_mux,
            sdp_rtp: self.remote,
            sdp_rtcp: self.remote_rtcp,
        }
    }

    /// The codec of an audio packet of payload type `pt`, if the peer may send it.
    pub fn audio_codec(&self, pt: u8) -> Option<Codec> {
        if pt == self.payload_type {
            return Some(self.codec);
        }
        self.also_receive
            .iter()
            .find(|(_, p)| *p == pt)
            .map(|(c, _)| *c)
    }
}

impl From<&siphon_sip::sdp::Negotiated> for MediaParams {
    /// The leg's media as offer/answer settled it.
    fn from(n: &siphon_sip::sdp::Negotiated) -> Self {
        MediaParams {
            codec: n.codec,
            payload_type: n.payload_type,
            telephone_event_pt: n.telephone_event_pt,
            remote: n.remote_rtp,
            direction: n.direction,
            also_receive: n.also_receive.clone(),
            ptime: n.remote_ptime,
            rtcp_mux: n.rtcp_mux,
            remote_rtcp: n.remote_rtcp,
        }
    }
}
