//! RTCP for one leg of a relayed (bridged) call (RFC 3550 §6): Siphon relays the other
//! phone's RTP under an SSRC of its own on each leg, so on each leg it is the sender of
//! that stream and the receiver of the phone's. This keeps what an SR/RR needs (packets and
//! octets sent, the last RTP timestamp, the phone's stream statistics and the last SR it
//! got from it) and builds the reports on the usual randomised 5 s schedule, and the final
//! report with BYE when the call ends. Pure: the bridge feeds packets and `Instant`s.

use std::time::{Duration, Instant, SystemTime};

use crate::SAMPLE_RATE;
use crate::rtcp::{
    NtpClock, RtcpCompound, RtcpError, RtcpPacket, RtcpScheduler, RtcpWriter, SenderInfo,
};
use crate::stats::ReceiverStats;

/// One leg's RTCP state.
#[derive(Debug)]
pub struct RelayRtcp {
    /// The SSRC Siphon sends this leg's RTP with.
    ssrc: u32,
    cname: String,
    ntp: NtpClock,
    scheduler: RtcpScheduler,
    /// The phone's stream, once it sent RTP.
    remote: Option<ReceiverStats>,
    packets_sent: u32,
    octets_sent: u32,
    /// The RTP timestamp of the last packet sent to the phone, and when.
    last_sent: Option<(u32, Instant)>,
}

impl RelayRtcp {
    /// `seed` randomises the report schedule (a constant in tests).
    pub fn new(
        ssrc: u32,
        cname: impl Into<String>,
        now: Instant,
        wallclock: SystemTime,
        seed: u64,
    ) -> Self {
        RelayRtcp {
            ssrc,
            cname: cname.into(),
            ntp: NtpClock::new(now, wallclock),
            scheduler: RtcpScheduler::new(now, RtcpScheduler::DEFAULT_INTERVAL, seed),
            remote: None,
            packets_sent: 0,
            octets_sent: 0,
            last_sent: None,
        }
    }

    /// An RTP packet from the phone (its SSRC, sequence number and timestamp).
    pub fn received(&mut self, now: Instant, ssrc: u32, seq: u16, timestamp: u32) {
        if self.remote.as_ref().map(ReceiverStats::ssrc) != Some(ssrc) {
            self.remote = Some(ReceiverStats::new(ssrc, SAMPLE_RATE, seq, now));
        }
        if let Some(remote) = &mut self.remote {
            remote.update(now, seq, timestamp);
        }
    }

    /// An RTP packet Siphon sent to the phone: its timestamp and payload size.
    pub fn sent(&mut self, now: Instant, timestamp: u32, payload_len: usize) {
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self
            .octets_sent
            .wrapping_add(u32::try_from(payload_len).unwrap_or(u32::MAX));
        self.last_sent = Some((timestamp, now));
    }

    /// An RTCP datagram from the phone: an SR about its stream is remembered (LSR/DLSR of
    /// our next report block). Malformed ones are an error for the caller to count.
    pub fn handle_rtcp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), RtcpError> {
        let compound = RtcpCompound::parse(datagram)?;
        for packet in compound.packets() {
            if let RtcpPacket::SenderReport { ssrc, info, .. } = packet
                && let Some(remote) = self.remote.as_mut().filter(|r| r.ssrc() == ssrc)
            {
                remote.on_sender_report(now, info.ntp);
            }
        }
        Ok(())
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.scheduler.poll_timeout()
    }

    /// When a report is due at `now`: an SR (Siphon sent RTP to the phone) or RR, with a
    /// report block on the phone's stream once it sent some, and SDES CNAME.
    pub fn poll(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<usize>, RtcpError> {
        if !self.scheduler.handle_timeout(now) {
            return Ok(None);
        }
        let block = self
            .remote
            .as_mut()
            .filter(|r| r.received() > 0)
            .map(|r| r.report_block(now));
        let info = self.sender_info(now);
        let mut w = RtcpWriter::new(out);
        w.report(self.ssrc, info.as_ref(), block.as_slice())?;
        w.sdes_cname(self.ssrc, &self.cname)?;
        Ok(Some(w.len()))
    }

    /// The last report, with BYE (the call ends).
    pub fn bye(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, RtcpError> {
        let info = self.sender_info(now);
        let mut w = RtcpWriter::new(out);
        w.report(self.ssrc, info.as_ref(), &[])?;
        w.sdes_cname(self.ssrc, &self.cname)?;
        w.bye(self.ssrc)?;
        Ok(w.len())
    }

    /// What Siphon sent, the RTP timestamp moved on to `now` at 8 kHz.
    fn sender_info(&self, now: Instant) -> Option<SenderInfo> {
        let (ts, at) = self.last_sent?;
        let elapsed = now
            .saturating_duration_since(at)
            .min(Duration::from_secs(3600));
        let ticks = elapsed.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000;
        Some(SenderInfo {
            ntp: self.ntp.ntp_at(now),
            rtp_timestamp: ts.wrapping_add(u32::try_from(ticks).unwrap_or(0)),
            packet_count: self.packets_sent,
            octet_count: self.octets_sent,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn types(buf: &[u8]) -> Vec<u8> {
        RtcpCompound::parse(buf)
            .unwrap()
            .packets()
            .map(|p| match p {
                RtcpPacket::SenderReport { .. } => 200,
                RtcpPacket::ReceiverReport { .. } => 201,
                RtcpPacket::Other { packet_type, .. } => packet_type,
            })
            .collect()
    }

    #[test]
    fn receiver_report_until_siphon_sends_then_sender_report() {
        let t0 = Instant::now();
        let mut r = RelayRtcp::new(0xabc, "siphon", t0, SystemTime::now(), 1);
        let mut out = [0u8; 512];
        // Nothing due before the first (randomised, at most 3.75 s) slot.
        assert_eq!(r.poll(t0, &mut out).unwrap(), None);
        for i in 0..50u16 {
            r.received(
                t0 + Duration::from_millis(20 * u64::from(i)),
                7,
                100 + i,
                160 * u32::from(i),
            );
        }
        let due = r.poll_timeout();
        assert!(due <= t0 + Duration::from_millis(3750));
        let n = r.poll(due, &mut out).unwrap().unwrap();
        assert_eq!(types(&out[..n]), [201, 202], "RR + SDES");
        // The RR carries one block, about SSRC 7.
        let c = RtcpCompound::parse(&out[..n]).unwrap();
        let Some(RtcpPacket::ReceiverReport { ssrc, reports }) = c.packets().next() else {
            panic!("no RR");
        };
        assert_eq!(ssrc, 0xabc);
        let blocks: Vec<_> = reports.collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].ssrc, 7);
        assert_eq!(blocks[0].cumulative_lost, 0);
        r.sent(due, 5000, 160);
        r.sent(due + Duration::from_millis(20), 5160, 160);
        let next = r.poll_timeout();
        assert!(next > due);
        let n = r.poll(next, &mut out).unwrap().unwrap();
        let c = RtcpCompound::parse(&out[..n]).unwrap();
        let Some(RtcpPacket::SenderReport { ssrc, info, .. }) = c.packets().next() else {
            panic!("no SR");
        };
        assert_eq!(ssrc, 0xabc);
        assert_eq!((info.packet_count, info.octet_count), (2, 320));
        // The RTP timestamp follows the wall clock from the last packet sent, at 8 kHz.
        let ticks = (next - (due + Duration::from_millis(20))).as_micros() * 8 / 1000;
        assert_eq!(info.rtp_timestamp, 5160 + ticks as u32);
    }

    #[test]
    fn bye_ends_with_a_bye_packet() {
        let t0 = Instant::now();
        let mut r = RelayRtcp::new(9, "siphon", t0, SystemTime::now(), 2);
        let mut out = [0u8; 512];
        let n = r.bye(t0, &mut out).unwrap();
        assert_eq!(types(&out[..n]), [201, 202, 203]);
        r.sent(t0, 1, 160);
        let n = r.bye(t0, &mut out).unwrap();
        assert_eq!(types(&out[..n]), [200, 202, 203]);
    }

    #[test]
    fn malformed_rtcp_is_an_error_not_a_panic() {
        let t0 = Instant::now();
        let mut r = RelayRtcp::new(9, "siphon", t0, SystemTime::now(), 3);
        assert!(r.handle_rtcp(t0, &[0x80, 200, 0]).is_err());
        assert!(r.handle_rtcp(t0, &[]).is_err());
    }
}
