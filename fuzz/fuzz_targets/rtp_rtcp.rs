//! RTP and RTCP datagram parsing (`siphon_media::packet`, `siphon_media::rtcp`).
//!
//! Checked: nothing panics; `RtpPacket::parse` succeeds only on what `validate` accepts, its
//! payload is exactly the bytes `validate` located, and `write_to` → `parse` gives the same
//! fields back; every packet of an accepted RTCP compound can be walked, and a compound we
//! write (SR/RR with the parsed report blocks, SDES, BYE) parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphon_media::packet::{self, RtpPacket};
use siphon_media::rtcp::{ReportBlock, RtcpCompound, RtcpPacket, RtcpWriter, SenderInfo};

fn rtp(data: &[u8]) {
    let layout = packet::validate(data);
    match RtpPacket::parse(data) {
        Ok(p) => {
            let layout = layout.expect("parse accepted what validate refused");
            assert!(layout.header_len <= layout.payload_end && layout.payload_end <= data.len());
            assert_eq!(p.payload, &data[layout.header_len..layout.payload_end]);
            assert!(p.payload_type < 128);
            assert_eq!(p.len(), 12 + p.payload.len());
            let mut out = vec![0u8; p.len()];
            let n = p
                .write_to(&mut out)
                .expect("buffer of len() bytes is enough");
            assert_eq!(n, p.len());
            let again = RtpPacket::parse(&out[..n]).expect("what we write parses");
            assert_eq!(again, p, "write_to/parse round trip");
            assert!(p.write_to(&mut out[..n - 1]).is_err());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn rtcp(data: &[u8]) {
    let Ok(compound) = RtcpCompound::parse(data) else {
        return;
    };
    let mut blocks: Vec<ReportBlock> = Vec::new();
    let mut sender: Option<SenderInfo> = None;
    for p in compound.packets() {
        match p {
            RtcpPacket::SenderReport { info, reports, .. } => {
                sender = Some(info);
                for b in reports {
                    let _ = b.round_trip_time(info.ntp);
                    blocks.push(b);
                }
            }
            RtcpPacket::ReceiverReport { reports, .. } => {
                for b in reports {
                    let _ = b.round_trip_time(u64::MAX);
                    let _ = b.round_trip_time(0);
                    blocks.push(b);
                }
            }
            RtcpPacket::Other { .. } => {}
        }
    }
    blocks.truncate(31);
    let mut out = vec![0u8; 2048];
    let mut w = RtcpWriter::new(&mut out);
    w.report(0x1234_5678, sender.as_ref(), &blocks)
        .expect("room for 31 blocks");
    w.sdes_cname(0x1234_5678, "fuzz@siphon")
        .expect("room for SDES");
    w.bye(0x1234_5678).expect("room for BYE");
    let n = w.len();
    let written = RtcpCompound::parse(&out[..n]).expect("what we write parses");
    let again: Vec<ReportBlock> = written
        .packets()
        .flat_map(|p| match p {
            RtcpPacket::SenderReport { reports, .. }
            | RtcpPacket::ReceiverReport { reports, .. } => reports.collect::<Vec<_>>(),
            RtcpPacket::Other { .. } => Vec::new(),
        })
        .collect();
    assert_eq!(again, blocks, "report blocks survive write/parse");
}

fuzz_target!(|data: &[u8]| {
    rtp(data);
    rtcp(data);
});
