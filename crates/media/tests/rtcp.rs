//! RTCP parsing/building, the report scheduler and RFC 3550 receiver statistics.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use siphon_media::rtcp::{
    NtpClock, ReportBlock, RtcpCompound, RtcpError, RtcpPacket, RtcpScheduler, RtcpWriter,
    SenderInfo, system_time_to_ntp,
};
use siphon_media::stats::{InterarrivalJitter, ReceiverStats, SeqVerdict};

fn block(ssrc: u32) -> ReportBlock {
    ReportBlock {
        ssrc,
        fraction_lost: 25,
        cumulative_lost: -3,
        extended_highest_seq: 0x0001_0005,
        jitter: 9,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 65536,
    }
}

#[test]
fn sr_with_sdes_round_trips() {
    let info = SenderInfo {
        ntp: 0xE000_0000_8000_0000,
        rtp_timestamp: 160_000,
        packet_count: 1000,
        octet_count: 160_000,
    };
    let mut buf = [0u8; 1500];
    let mut w = RtcpWriter::new(&mut buf);
    w.report(7, Some(&info), &[block(1), block(2)]).unwrap();
    w.sdes_cname(7, "siphon@example").unwrap();
    let n = w.len();
    assert_eq!(n % 4, 0);
    let compound = RtcpCompound::parse(&buf[..n]).unwrap();
    let packets: Vec<_> = compound.packets().collect();
    assert_eq!(packets.len(), 2);
    match &packets[0] {
        RtcpPacket::SenderReport {
            ssrc,
            info: got,
            reports,
        } => {
            assert_eq!(*ssrc, 7);
            assert_eq!(*got, info);
            let blocks: Vec<_> = reports.clone().collect();
            assert_eq!(blocks, vec![block(1), block(2)]);
        }
        other => panic!("expected SR, got {other:?}"),
    }
    assert!(matches!(packets[1], RtcpPacket::Other { packet_type: 202 }));
}

#[test]
fn rr_and_bye_round_trip() {
    let mut buf = [0u8; 200];
    let mut w = RtcpWriter::new(&mut buf);
    w.report(9, None, &[block(3)]).unwrap();
    w.bye(9).unwrap();
    let n = w.len();
    assert_eq!(n, 8 + 24 + 8);
    let packets: Vec<_> = RtcpCompound::parse(&buf[..n]).unwrap().packets().collect();
    match &packets[0] {
        RtcpPacket::ReceiverReport { ssrc, reports } => {
            assert_eq!(*ssrc, 9);
            assert_eq!(reports.clone().collect::<Vec<_>>(), vec![block(3)]);
        }
        other => panic!("expected RR, got {other:?}"),
    }
    assert!(matches!(packets[1], RtcpPacket::Other { packet_type: 203 }));
}

#[test]
fn writer_refuses_small_buffers_and_too_many_blocks() {
    let mut buf = [0u8; 20];
    let mut w = RtcpWriter::new(&mut buf);
    assert_eq!(
        w.report(1, None, &[block(1)]),
        Err(RtcpError::BufferTooSmall)
    );
    let mut big = [0u8; 2000];
    let mut w = RtcpWriter::new(&mut big);
    assert_eq!(
        w.report(1, None, &[block(1); 32]),
        Err(RtcpError::FieldOverflow)
    );
    assert!(w.is_empty());
}

/// A compound packet from a typical phone: SR, SDES, an APP and an unknown type, padded.
#[test]
fn ignores_sdes_app_and_unknown_types() {
    let mut bytes = vec![
        0x80, 200, 0, 6, 0, 0, 0, 1, // SR header, RC = 0, 7 words
        0, 0, 0, 2, 0, 0, 0, 3, // NTP
        0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, // RTP ts, packets, octets
        0x81, 202, 0, 2, 0, 0, 0, 1, 1, 1, b'x', 0, // SDES with CNAME "x"
        0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e', // APP
    ];
    bytes.extend_from_slice(&[0xA0, 250, 0, 1, 0, 0, 0, 4]); // unknown type, padded 4
    let packets: Vec<_> = RtcpCompound::parse(&bytes).unwrap().packets().collect();
    assert_eq!(packets.len(), 4);
    match &packets[0] {
        RtcpPacket::SenderReport {
            ssrc,
            info,
            reports,
        } => {
            assert_eq!(*ssrc, 1);
            assert_eq!(info.ntp, (2 << 32) | 3);
            assert_eq!(
                (info.rtp_timestamp, info.packet_count, info.octet_count),
                (4, 5, 6)
            );
            assert_eq!(reports.clone().count(), 0);
        }
        other => panic!("expected SR, got {other:?}"),
    }
    let types: Vec<_> = packets[1..]
        .iter()
        .map(|p| match p {
            RtcpPacket::Other { packet_type } => *packet_type,
            _ => 0,
        })
        .collect();
    assert_eq!(types, vec![202, 204, 250]);
}

#[test]
fn malformed_compounds_are_typed_errors() {
    assert_eq!(RtcpCompound::parse(&[]).err(), Some(RtcpError::Empty));
    assert_eq!(
        RtcpCompound::parse(&[0x80, 201]).err(),
        Some(RtcpError::TooShort { offset: 0, len: 2 })
    );
    assert_eq!(
        RtcpCompound::parse(&[0x40, 201, 0, 1, 0, 0, 0, 1]).err(),
        Some(RtcpError::BadVersion(1))
    );
    // Length says 3 words after the header, only 1 there.
    assert_eq!(
        RtcpCompound::parse(&[0x80, 201, 0, 3, 0, 0, 0, 1]).err(),
        Some(RtcpError::LengthOverrun {
            offset: 0,
            declared: 16,
            available: 8
        })
    );
    // RR claiming 2 report blocks in a packet with room for none.
    assert_eq!(
        RtcpCompound::parse(&[0x82, 201, 0, 1, 0, 0, 0, 1]).err(),
        Some(RtcpError::ReportOverrun {
            count: 2,
            needed: 56,
            len: 8
        })
    );
    // SR too short for its sender info.
    assert!(matches!(
        RtcpCompound::parse(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
        Err(RtcpError::ReportOverrun { .. })
    ));
    // Padding on a packet that isn't last.
    let mut two = vec![0xA0, 201, 0, 1, 0, 0, 0, 4];
    two.extend_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 1]);
    assert_eq!(RtcpCompound::parse(&two).err(), Some(RtcpError::BadPadding));
    // Padding count 0, or larger than the body.
    assert_eq!(
        RtcpCompound::parse(&[0xA0, 201, 0, 1, 0, 0, 0, 0]).err(),
        Some(RtcpError::BadPadding)
    );
    assert_eq!(
        RtcpCompound::parse(&[0xA0, 201, 0, 1, 0, 0, 0, 9]).err(),
        Some(RtcpError::BadPadding)
    );
    // A valid first packet followed by a trailing fragment: the whole datagram is refused.
    assert_eq!(
        RtcpCompound::parse(&[0x80, 201, 0, 1, 0, 0, 0, 1, 0x80]).err(),
        Some(RtcpError::TooShort { offset: 8, len: 1 })
    );
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_bytes_never_panic() {
    let mut s = 0xDEAD_BEEF_CAFE_F00D;
    let mut buf = [0u8; 128];
    for _ in 0..200_000 {
        let len = (xorshift(&mut s) % 128) as usize;
        for b in &mut buf[..len] {
            *b = xorshift(&mut s) as u8;
        }
        if len > 4 {
            buf[0] = 0x80 | (buf[0] & 0x3F);
            buf[1] = 200 + (buf[1] % 6);
            buf[2] = 0;
            buf[3] %= 32;
        }
        if let Ok(c) = RtcpCompound::parse(&buf[..len]) {
            for p in c.packets() {
                if let RtcpPacket::SenderReport { reports, .. }
                | RtcpPacket::ReceiverReport { reports, .. } = p
                {
                    let _ = reports.count();
                }
            }
        }
    }
}

#[test]
fn cumulative_lost_is_sign_extended_and_clamped() {
    let mut b = block(1);
    b.cumulative_lost = -1;
    let mut buf = [0u8; 64];
    let mut w = RtcpWriter::new(&mut buf);
    w.report(1, None, &[b]).unwrap();
    let n = w.len();
    assert_eq!(&buf[12..16], &[25, 0xFF, 0xFF, 0xFF]);
    let parsed = match RtcpCompound::parse(&buf[..n]).unwrap().packets().next() {
        Some(RtcpPacket::ReceiverReport { mut reports, .. }) => reports.next().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(parsed.cumulative_lost, -1);
    // Beyond 24 bits: clamped, not wrapped.
    b.cumulative_lost = 10_000_000;
    let mut w = RtcpWriter::new(&mut buf);
    w.report(1, None, &[b]).unwrap();
    assert_eq!(&buf[13..16], &[0x7F, 0xFF, 0xFF]);
}

#[test]
fn round_trip_time_from_lsr_and_dlsr() {
    // We sent an SR at NTP middle-32 0x0001_0000 (= 1.0 s); the peer held it 0.25 s; it is
    // back at 1.5 s: RTT = 0.25 s.
    let b = ReportBlock {
        last_sr: 0x0001_0000,
        delay_since_last_sr: 0x0000_4000,
        ..ReportBlock::default()
    };
    let arrival = 0x0001_8000u64 << 16;
    assert_eq!(b.round_trip_time(arrival), Some(Duration::from_millis(250)));
    // No SR seen by the peer yet, or a negative result: no RTT.
    assert_eq!(ReportBlock::default().round_trip_time(arrival), None);
    let early = 0x0000_8000u64 << 16;
    assert_eq!(b.round_trip_time(early), None);
}

#[test]
fn ntp_clock_follows_the_monotonic_clock() {
    let t0 = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = NtpClock::new(t0, wall);
    let base = clock.ntp_at(t0);
    assert_eq!(base >> 32, 1_700_000_000 + 2_208_988_800);
    assert_eq!(base, system_time_to_ntp(wall));
    let later = clock.ntp_at(t0 + Duration::from_millis(1500));
    assert_eq!(later - base, (3u64 << 32) / 2);
    // A time before the epoch doesn't panic.
    let _ = system_time_to_ntp(SystemTime::UNIX_EPOCH - Duration::from_secs(1));
}

#[test]
fn scheduler_randomises_within_half_to_one_and_a_half_intervals() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(5);
    let mut s = RtcpScheduler::new(t0, interval, 42);
    let first = s.poll_timeout() - t0;
    assert!(
        first >= interval / 4 && first <= interval * 3 / 4,
        "{first:?}"
    );
    assert!(!s.handle_timeout(t0));
    let mut now = s.poll_timeout();
    let mut total = Duration::ZERO;
    let n = 2000;
    let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
    for _ in 0..n {
        assert!(s.handle_timeout(now));
        let gap = s.poll_timeout() - now;
        assert!(gap >= interval / 2 && gap <= interval * 3 / 2, "{gap:?}");
        lo = lo.min(gap);
        hi = hi.max(gap);
        total += gap;
        now = s.poll_timeout();
    }
    let mean = total / n;
    assert!(mean > Duration::from_millis(4800) && mean < Duration::from_millis(5200));
    // Actually random: the spread covers most of the allowed range.
    assert!(lo < Duration::from_secs(3) && hi > Duration::from_secs(7));
    // Different seeds, different schedules.
    let other = RtcpScheduler::new(t0, interval, 43);
    assert_ne!(
        other.poll_timeout(),
        RtcpScheduler::new(t0, interval, 42).poll_timeout()
    );
}

// ---- receiver statistics (RFC 3550 appendix A) ----

const MS: Duration = Duration::from_millis(1);

#[test]
fn jitter_hand_worked_example() {
    // 20 ms packets (160 timestamp units at 8 kHz) arriving at 0, 20, 50, 60, 80 ms.
    //   arrival (ts units):   0    160   400   480   640
    //   timestamp:          1000  1160  1320  1480  1640
    //   transit:           -1000 -1000  -920 -1000 -1000
    //   D = Δtransit:             0    +80   -80     0
    //   J += (|D| - J)/16:        0     5   9.6875  9.08203125
    // Reported (truncated): 9.
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(1, 8000, 10, t0);
    let arrivals = [0u64, 20, 50, 60, 80];
    let mut expected = [0.0, 0.0, 5.0, 9.6875, 9.082_031_25].into_iter();
    let mut j = InterarrivalJitter::default();
    for (i, &ms) in arrivals.iter().enumerate() {
        let ts = 1000 + 160 * i as u32;
        stats.update(t0 + MS * ms as u32, 10 + i as u16, ts);
        j.update((ms * 8) as u32, ts);
        assert_eq!(j.value(), expected.next().unwrap(), "packet {i}");
    }
    assert_eq!(stats.jitter(), 9);
    let d = stats.jitter_duration();
    assert!(d > Duration::from_micros(1135) && d < Duration::from_micros(1136));
}

#[test]
fn jitter_survives_timestamp_wrap() {
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(1, 8000, 0, t0);
    let start = u32::MAX - 400;
    for i in 0..10u32 {
        // Perfectly regular arrival: jitter stays 0 across the wrap.
        stats.update(t0 + MS * (20 * i), i as u16, start.wrapping_add(160 * i));
    }
    assert_eq!(stats.jitter(), 0);
}

#[test]
fn fraction_and_cumulative_lost() {
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(5, 8000, 100, t0);
    // First packet: probation (A.1 needs two in sequence).
    assert_eq!(stats.update(t0, 100, 0), SeqVerdict::Probation);
    assert_eq!(stats.update(t0, 101, 160), SeqVerdict::Valid);
    // 102..=200 with 110..=119 lost.
    for seq in 102..=200u16 {
        if !(110..=119).contains(&seq) {
            stats.update(t0, seq, 160 * u32::from(seq));
        }
    }
    // Base is 101 (the packet that ended probation): expected 100, received 90.
    assert_eq!(stats.expected(), 100);
    assert_eq!(stats.received(), 90);
    assert_eq!(stats.cumulative_lost(), 10);
    let b = stats.report_block(t0);
    assert_eq!(b.fraction_lost, 25); // (10 << 8) / 100 = 25.6, truncated: 9.8 %
    assert_eq!(b.cumulative_lost, 10);
    assert_eq!(b.extended_highest_seq, 200);
    assert_eq!(b.ssrc, 5);
    assert_eq!((b.last_sr, b.delay_since_last_sr), (0, 0));
    // Next interval: nothing lost.
    for seq in 201..=300u16 {
        stats.update(t0, seq, 160 * u32::from(seq));
    }
    assert_eq!(stats.fraction_lost_since_last(), 0);
    assert_eq!(stats.cumulative_lost(), 10);
    // An interval with duplicates only: more received than expected, fraction 0.
    stats.update(t0, 300, 0);
    stats.update(t0, 300, 0);
    assert_eq!(stats.fraction_lost_since_last(), 0);
    assert_eq!(stats.cumulative_lost(), 8);
}

#[test]
fn sequence_wrap_extends_the_highest_sequence() {
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(5, 8000, 65530, t0);
    for i in 0..12u16 {
        stats.update(t0, 65530u16.wrapping_add(i), 0);
    }
    // 65530 ..= 65535, 0 ..= 5: one cycle.
    assert_eq!(stats.extended_highest_seq(), 65536 + 5);
    assert_eq!(stats.expected(), 11); // base 65531 after probation
    assert_eq!(stats.cumulative_lost(), 0);
    // Reordered packet from before the wrap: counted, highest unchanged.
    stats.update(t0, 65534, 0);
    assert_eq!(stats.extended_highest_seq(), 65536 + 5);
}

#[test]
fn big_jump_restarts_after_two_sequential_packets() {
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(5, 8000, 1, t0);
    for seq in 1..=10u16 {
        stats.update(t0, seq, 0);
    }
    assert_eq!(stats.update(t0, 40_000, 0), SeqVerdict::BadJump);
    assert_eq!(stats.update(t0, 40_001, 0), SeqVerdict::Valid);
    assert_eq!(stats.extended_highest_seq(), 40_001);
    assert_eq!(stats.expected(), 1);
}

#[test]
fn dlsr_counts_from_the_peer_sr() {
    let t0 = Instant::now();
    let mut stats = ReceiverStats::new(5, 8000, 1, t0);
    stats.update(t0, 1, 0);
    stats.update(t0, 2, 160);
    stats.on_sender_report(t0, 0x0000_1234_5678_0000);
    let b = stats.report_block(t0 + Duration::from_millis(500));
    assert_eq!(b.last_sr, 0x1234_5678);
    assert_eq!(b.delay_since_last_sr, 32768); // 0.5 s in 1/65536 s
}
