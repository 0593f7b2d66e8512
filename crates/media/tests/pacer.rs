//! The 20 ms pacer: absolute deadlines, header continuity, marker rules, stall handling.

// Helpers outside #[test] fns unwrap too (clippy.toml only covers the test fns).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use siphon_media::pacer::Pacer;
use siphon_media::packet::RtpPacket;

const MS: Duration = Duration::from_millis(1);

fn build(p: &mut Pacer, out: &mut [u8]) -> (bool, u16, u32) {
    let n = p.build(0, &[0xFF; 160], out).unwrap();
    let pkt = RtpPacket::parse(&out[..n]).unwrap();
    assert_eq!(pkt.ssrc, p.ssrc());
    (pkt.marker, pkt.sequence_number, pkt.timestamp)
}

#[test]
fn one_hour_is_exactly_180000_packets_without_drift() {
    let t0 = Instant::now();
    let hour = t0 + Duration::from_secs(3600);
    for lateness_pattern in [false, true] {
        let mut p = Pacer::new(t0, 1, 65000, u32::MAX - 1000);
        let mut out = [0u8; 200];
        let mut count = 0u32;
        let mut last_seq = 64999u16;
        let mut last_ts = None;
        let mut late = 1u64;
        while p.poll_timeout() < hour {
            let deadline = p.poll_timeout();
            // Wake up on time, or up to 17 ms late (a sloppy timer) but never a whole slot.
            let now = if lateness_pattern {
                late = late.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                deadline + Duration::from_micros((late >> 33) % 17_000)
            } else {
                deadline
            };
            let due = p.handle_timeout(now);
            assert_eq!(due, 1);
            let (_, seq, ts) = build(&mut p, &mut out);
            assert_eq!(seq, last_seq.wrapping_add(1));
            if let Some(prev) = last_ts {
                assert_eq!(ts, u32::wrapping_add(prev, 160));
            }
            last_seq = seq;
            last_ts = Some(ts);
            count += 1;
        }
        assert_eq!(count, 180_000);
        // Deadline n is start + n × 20 ms: the 180 000th packet was due at 3599.98 s and the
        // next deadline is exactly one hour after the start.
        assert_eq!(p.poll_timeout(), hour);
        assert_eq!(p.packets_sent(), 180_000);
        assert_eq!(p.octets_sent(), 180_000 * 160);
        assert_eq!(last_ts, Some((u32::MAX - 1000).wrapping_add(160 * 179_999)));
        assert_eq!(p.skipped_slots(), 0);
    }
}

#[test]
fn early_calls_are_not_due() {
    let t0 = Instant::now();
    let mut p = Pacer::new(t0, 1, 0, 0);
    assert_eq!(p.poll_timeout(), t0);
    assert_eq!(p.handle_timeout(t0), 1);
    assert_eq!(p.handle_timeout(t0 + 19 * MS), 0);
    assert_eq!(p.poll_timeout(), t0 + 20 * MS);
}

#[test]
fn small_lateness_catches_up_with_a_burst() {
    let t0 = Instant::now();
    let mut p = Pacer::new(t0, 1, 0, 0);
    let mut out = [0u8; 200];
    assert_eq!(p.handle_timeout(t0), 1);
    build(&mut p, &mut out);
    // Woken 50 ms late for the deadline at 20 ms: slots at 20, 40 and 60 ms are due.
    assert_eq!(p.handle_timeout(t0 + 70 * MS), 3);
    let ts: Vec<u32> = (0..3).map(|_| build(&mut p, &mut out).2).collect();
    assert_eq!(ts, vec![160, 320, 480]);
    assert_eq!(p.poll_timeout(), t0 + 80 * MS);
}

#[test]
fn a_stall_skips_ahead_instead_of_bursting() {
    let t0 = Instant::now();
    let mut p = Pacer::new(t0, 1, 100, 0);
    let mut out = [0u8; 200];
    for i in 0..5 {
        assert_eq!(p.handle_timeout(t0 + 20 * MS * i), 1);
        build(&mut p, &mut out);
    }
    // The process stalls for half a second: the deadline at 100 ms is served at 600 ms.
    assert_eq!(p.handle_timeout(t0 + 600 * MS), 1);
    assert_eq!(p.skipped_slots(), 25);
    let (marker, seq, ts) = build(&mut p, &mut out);
    // Real-time timestamp (slot 30 = 600 ms), continuous sequence, new talk spurt.
    assert!(marker);
    assert_eq!(seq, 105);
    assert_eq!(ts, 30 * 160);
    // Back on the grid: next deadline 620 ms, nothing lost from the absolute schedule.
    assert_eq!(p.poll_timeout(), t0 + 620 * MS);
    assert_eq!(p.handle_timeout(t0 + 620 * MS), 1);
    let (marker, seq, ts) = build(&mut p, &mut out);
    assert_eq!((marker, seq, ts), (false, 106, 31 * 160));
}

#[test]
fn marker_on_first_packet_and_after_silence_only() {
    let t0 = Instant::now();
    let mut p = Pacer::new(t0, 1, 0, 1000);
    let mut out = [0u8; 200];
    let mut markers = Vec::new();
    let mut seqs = Vec::new();
    let mut tss = Vec::new();
    // Slots: audio, audio, idle, idle, audio, audio, event, event, audio.
    let plan = ["a", "a", "-", "-", "a", "a", "e", "e", "a"];
    for (i, what) in plan.iter().enumerate() {
        assert_eq!(p.handle_timeout(t0 + 20 * MS * i as u32), 1);
        match *what {
            "a" => {
                let (m, s, t) = build(&mut p, &mut out);
                markers.push(m);
                seqs.push(s);
                tss.push(t);
            }
            "e" => {
                let n = p
                    .build_event(101, i == 6, 5000, &[1, 0, 0, 160], &mut out)
                    .unwrap();
                let pkt = RtpPacket::parse(&out[..n]).unwrap();
                assert_eq!(pkt.timestamp, 5000);
                assert_eq!(pkt.payload_type, 101);
                markers.push(pkt.marker);
                seqs.push(pkt.sequence_number);
                tss.push(pkt.timestamp);
            }
            _ => p.idle(),
        }
    }
    assert_eq!(markers, vec![true, false, true, false, true, false, false]);
    // Sequence numbers continuous across audio and events; idle slots consume none.
    assert_eq!(seqs, vec![0, 1, 2, 3, 4, 5, 6]);
    // Audio timestamps follow the slot (idle and event slots advance them).
    assert_eq!(
        tss,
        vec![1000, 1160, 1640, 1800, 5000, 5000, 1000 + 8 * 160]
    );
}

#[test]
fn random_streams_differ_and_rtp_time_maps() {
    let t0 = Instant::now();
    let a = Pacer::random(t0);
    let b = Pacer::random(t0);
    assert_ne!(
        (a.ssrc(), a.next_sequence_number(), a.timestamp()),
        (b.ssrc(), b.next_sequence_number(), b.timestamp())
    );
    let p = Pacer::new(t0, 1, 0, u32::MAX);
    assert_eq!(p.rtp_timestamp_at(t0 + Duration::from_secs(1)), 7999);
    assert_eq!(p.slot_time(), t0);
}

#[test]
fn custom_max_lag() {
    let t0 = Instant::now();
    let mut p = Pacer::new(t0, 1, 0, 0).with_max_lag(Duration::ZERO);
    assert_eq!(p.handle_timeout(t0 + 45 * MS), 1);
    assert_eq!(p.skipped_slots(), 2);
    assert_eq!(p.timestamp(), 320);
    assert_eq!(p.slot_time(), t0 + 40 * MS);
}
