//! RTP and RTCP on one port (RFC 5761), and where a leg's RTCP goes (RFC 3550 §11,
//! RFC 3605). Pure: the media tasks ask, per datagram or per report, and nothing here
//! allocates.

use std::net::SocketAddr;

/// Whether a datagram received on a multiplexed RTP port is RTCP (RFC 5761 §4): its second
/// byte (RTCP packet type, or RTP marker bit and payload type) is 192–223. RTCP's types
/// 200–204 (and feedback 205–206) fall there, and RFC 5761 §4 keeps RTP payload types
/// 64–95 out of use on multiplexed sessions for that reason. Anything shorter than two
/// bytes is left to the RTP path (which drops it as malformed).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(192..=223))
}

/// What a leg knows about where its peer wants RTCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpPeer {
    /// Both sides multiplex (the SDP the peer sent had `a=rtcp-mux`).
    pub mux: bool,
    /// The peer's RTP address from its SDP.
    pub sdp_rtp: Option<SocketAddr>,
    /// The peer's `a=rtcp` address from its SDP.
    pub sdp_rtcp: Option<SocketAddr>,
}

impl RtcpPeer {
    /// Where RTCP for the peer goes, given where its RTP (`latched_rtp`) and RTCP
    /// (`latched_rtcp`) actually came from:
    /// 1. where its RTCP came from (symmetric, like RTP);
    /// 2. multiplexed: its RTP address;
    /// 3. its `a=rtcp` — unless its RTP came from elsewhere than its SDP said (a NAT
    ///    rewrote it; the SDP's RTCP address is as wrong as its RTP one);
    /// 4. its RTP address + 1.
    pub fn destination(
        &self,
        latched_rtp: Option<SocketAddr>,
        latched_rtcp: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        if latched_rtcp.is_some() {
            return latched_rtcp;
        }
        let rtp = latched_rtp.or(self.sdp_rtp)?;
        if self.mux {
            return Some(rtp);
        }
        match self.sdp_rtcp {
            Some(rtcp) if latched_rtp.is_none_or(|l| Some(l) == self.sdp_rtp) => Some(rtcp),
            _ => Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rtcp::{PT_APP, PT_BYE, PT_RR, PT_SDES, PT_SR};

    #[test]
    fn rtcp_types_are_told_from_rtp_payload_types() {
        for pt in [PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP, 205, 206] {
            assert!(is_rtcp(&[0x80, pt, 0, 1]), "{pt}");
        }
        // RTP: PCMU, PCMA, telephone-event, with and without the marker bit.
        for second in [0u8, 8, 101, 0x80, 0x88, 0x80 | 101, 0x80 | 127] {
            assert!(!is_rtcp(&[0x80, second, 0, 1]), "{second}");
        }
        assert!(is_rtcp(&[0x80, 192]) && is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 191]) && !is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[]) && !is_rtcp(&[0x80]));
    }

    fn a(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn destination_follows_rtcp_source_then_mux_then_sdp_then_next_port() {
        let plain = RtcpPeer {
            mux: false,
            sdp_rtp: a("192.0.2.1:6000"),
            sdp_rtcp: None,
        };
        assert_eq!(plain.destination(None, None), a("192.0.2.1:6001"));
        assert_eq!(
            plain.destination(a("192.0.2.1:6000"), a("192.0.2.1:7777")),
            a("192.0.2.1:7777")
        );
        assert_eq!(
            plain.destination(a("198.51.100.9:3000"), None),
            a("198.51.100.9:3001")
        );
        let muxed = RtcpPeer { mux: true, ..plain };
        assert_eq!(muxed.destination(None, None), a("192.0.2.1:6000"));
        assert_eq!(
            muxed.destination(a("198.51.100.9:3000"), None),
            a("198.51.100.9:3000")
        );
        let rfc3605 = RtcpPeer {
            sdp_rtcp: a("192.0.2.1:6100"),
            ..plain
        };
        assert_eq!(rfc3605.destination(None, None), a("192.0.2.1:6100"));
        assert_eq!(
            rfc3605.destination(a("192.0.2.1:6000"), None),
            a("192.0.2.1:6100")
        );
        // RTP came from elsewhere (NAT): the SDP's RTCP address is not trusted.
        assert_eq!(
            rfc3605.destination(a("198.51.100.9:3000"), None),
            a("198.51.100.9:3001")
        );
        assert_eq!(RtcpPeer::default().destination(None, None), None);
    }
}
