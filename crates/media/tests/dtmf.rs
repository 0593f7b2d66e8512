//! RFC 4733 telephone-events: one event per key press on receive, the right packet
//! sequence on send.

// Helpers outside #[test] fns unwrap too (clippy.toml only covers the test fns).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use siphon_media::dtmf::{
    DtmfError, DtmfReceiver, DtmfSender, TelephoneEvent, code_to_digit, digit_to_code,
};
use siphon_media::packet::RtpError;

fn payload(code: u8, end: bool, duration: u16) -> [u8; 4] {
    TelephoneEvent {
        code,
        end,
        volume: 10,
        duration,
    }
    .to_bytes()
}

/// The packets a typical phone sends for a 100 ms key press at timestamp `ts`:
/// (marker, timestamp, payload).
fn press(code: u8, ts: u32) -> Vec<(bool, u32, [u8; 4])> {
    let mut v = vec![(true, ts, payload(code, false, 160))];
    for d in [320, 480, 640] {
        v.push((false, ts, payload(code, false, d)));
    }
    for _ in 0..3 {
        v.push((false, ts, payload(code, true, 800)));
    }
    v
}

fn feed(rx: &mut DtmfReceiver, packets: &[(bool, u32, [u8; 4])]) -> Vec<char> {
    packets
        .iter()
        .filter_map(|(m, ts, p)| rx.handle(*m, *ts, p).unwrap())
        .map(|e| e.digit().unwrap())
        .collect()
}

#[test]
fn three_end_packets_make_one_event() {
    let mut rx = DtmfReceiver::new();
    let packets = press(5, 1000);
    let first = rx
        .handle(packets[0].0, packets[0].1, &packets[0].2)
        .unwrap();
    let event = first.unwrap();
    assert_eq!(
        (event.digit(), event.timestamp, event.volume),
        (Some('5'), 1000, 10)
    );
    assert_eq!(feed(&mut rx, &packets[1..]), Vec::<char>::new());
}

#[test]
fn retransmitted_start_adds_no_event() {
    let mut rx = DtmfReceiver::new();
    let mut packets = press(1, 1000);
    // The start packet again, late, after the updates; and the whole press replayed.
    packets.insert(3, packets[0]);
    let replay = packets.clone();
    packets.extend(replay);
    assert_eq!(feed(&mut rx, &packets), vec!['1']);
}

#[test]
fn same_digit_twice_is_two_events() {
    let mut rx = DtmfReceiver::new();
    let mut packets = press(9, 1000);
    packets.extend(press(9, 3000));
    assert_eq!(feed(&mut rx, &packets), vec!['9', '9']);
}

#[test]
fn lost_start_still_reports_once() {
    let mut rx = DtmfReceiver::new();
    let packets = press(11, 1000); // '#'
    assert_eq!(feed(&mut rx, &packets[2..]), vec!['#']);
    // Only the end packets survived of the next press.
    let next = press(10, 5000); // '*'
    assert_eq!(feed(&mut rx, &next[4..]), vec!['*']);
}

#[test]
fn stale_retransmission_of_an_earlier_event_is_ignored() {
    let mut rx = DtmfReceiver::new();
    let a = press(1, 1000);
    let b = press(2, 3000);
    let mut packets = a.clone();
    packets.extend(b.iter().take(3));
    packets.push(a[6]); // late end packet of the first press
    packets.push(a[0]); // and its start, marker and all
    packets.extend(b.iter().skip(3));
    assert_eq!(feed(&mut rx, &packets), vec!['1', '2']);
}

#[test]
fn long_press_segments_continue_one_event() {
    let mut rx = DtmfReceiver::new();
    // RFC 4733 §2.5.1.3: a press longer than the 16-bit duration is cut into segments with
    // new timestamps and no marker.
    let packets = vec![
        (true, 1000, payload(3, false, 160)),
        (false, 1000, payload(3, false, 65_000)),
        (false, 66_000, payload(3, false, 160)),
        (false, 66_000, payload(3, true, 800)),
        (false, 66_000, payload(3, true, 800)),
    ];
    assert_eq!(feed(&mut rx, &packets), vec!['3']);
}

#[test]
fn timestamps_wrapping_around() {
    let mut rx = DtmfReceiver::new();
    let mut packets = press(4, u32::MAX - 100);
    packets.extend(press(6, 700));
    assert_eq!(feed(&mut rx, &packets), vec!['4', '6']);
}

#[test]
fn short_payload_is_an_error() {
    let mut rx = DtmfReceiver::new();
    assert_eq!(
        rx.handle(true, 0, &[1, 2, 3]),
        Err(RtpError::BadTelephoneEvent(3))
    );
}

#[test]
fn non_dtmf_events_are_reported_with_their_code() {
    let mut rx = DtmfReceiver::new();
    let e = rx
        .handle(true, 0, &payload(16, false, 160))
        .unwrap()
        .unwrap();
    assert_eq!((e.code, e.digit()), (16, None));
}

#[test]
fn sender_sequence_for_100_ms() {
    let mut tx = DtmfSender::new('7', Duration::from_millis(100), 10).unwrap();
    assert_eq!(tx.packet_count(), 7);
    let mut packets = Vec::new();
    let mut slot_ts = 4000u32;
    while let Some(p) = tx.next_packet(slot_ts) {
        packets.push(p);
        slot_ts += 160;
    }
    assert!(tx.is_finished());
    assert_eq!(packets.len(), 7);
    let events: Vec<TelephoneEvent> = packets
        .iter()
        .map(|p| TelephoneEvent::parse(&p.payload).unwrap())
        .collect();
    // Marker only on the first; one timestamp for all.
    assert_eq!(
        packets.iter().map(|p| p.marker).collect::<Vec<_>>(),
        vec![true, false, false, false, false, false, false]
    );
    assert!(packets.iter().all(|p| p.timestamp == 4000));
    assert_eq!(
        events
            .iter()
            .map(|e| (e.end, e.duration))
            .collect::<Vec<_>>(),
        vec![
            (false, 160),
            (false, 320),
            (false, 480),
            (false, 640),
            (true, 800),
            (true, 800),
            (true, 800),
        ]
    );
    assert!(events.iter().all(|e| e.code == 7 && e.volume == 10));

    // What we send is one event for our own receiver.
    let mut rx = DtmfReceiver::new();
    let got: Vec<_> = packets
        .iter()
        .filter_map(|p| rx.handle(p.marker, p.timestamp, &p.payload).unwrap())
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].digit(), Some('7'));
}

#[test]
fn sender_rounds_and_validates() {
    // 50 ms rounds up to 60 ms: 2 updates + 3 ends.
    let tx = DtmfSender::new('a', Duration::from_millis(50), 99).unwrap();
    assert_eq!(tx.packet_count(), 5);
    // A 20 ms event is three end packets, the first marked.
    let mut tx = DtmfSender::new('0', Duration::from_millis(20), 0).unwrap();
    let first = tx.next_packet(0).unwrap();
    assert!(first.marker);
    assert!(TelephoneEvent::parse(&first.payload).unwrap().end);
    assert_eq!(
        DtmfSender::new('x', Duration::from_millis(100), 10).err(),
        Some(DtmfError::UnknownDigit('x'))
    );
    assert!(matches!(
        DtmfSender::new('1', Duration::ZERO, 10),
        Err(DtmfError::BadDuration(_))
    ));
    assert!(matches!(
        DtmfSender::new('1', Duration::from_secs(9), 10),
        Err(DtmfError::BadDuration(_))
    ));
    assert!(DtmfSender::new('1', Duration::from_millis(8180), 10).is_ok());
}

#[test]
fn digit_codes() {
    let all = "0123456789*#ABCD";
    for (i, c) in all.chars().enumerate() {
        assert_eq!(digit_to_code(c), Some(i as u8));
        assert_eq!(code_to_digit(i as u8), Some(c));
    }
    assert_eq!(digit_to_code('d'), Some(15));
    assert_eq!(code_to_digit(16), None);
}

/// `../shared/findings/dtmf-crash-ac315d57`, the input with which the `dtmf` fuzz target
/// found a press reported twice, decoded into its packets (marker, timestamp, payload). The
/// press at 48000 is followed by non-marker packets of the same code whose timestamps jump
/// by up to 2^31 (which the receiver took for segments of a long press), then the marked
/// start at 48000 again. Before the fix the segment timestamps, remembered once per
/// repetition, pushed 48000 out of the receiver's history and the replayed start was
/// reported as a second press.
#[test]
fn fuzz_finding_ac315d57_is_one_press() {
    let seq: &[(bool, u32, [u8; 4])] = &[
        (true, 48000, [5, 0x0a, 0x00, 0xa0]),
        (false, 1_096_576, [5, 0x00, 0x01, 0x0a]),
        (false, 1_073_789_824, [5, 0x0a, 0x01, 0xe0]),
        (false, 2_159_738_880, [5, 0x02, 0x0a, 0x27]),
        (false, 32384, [5, 0x0a, 0x00, 0x0a]),
        (true, 48000, [5, 0x0a, 0x00, 0xa0]),
        (false, 1_096_576, [5, 0x00, 0x01, 0x0a]),
        (false, 1_073_789_824, [5, 0x0a, 0x01, 0xe0]),
        (false, 2_159_738_880, [5, 0x02, 0x0a, 0x27]),
        (false, 48008, [5, 0x0a, 0x00, 0x0a]),
        (true, 48000, [5, 0x0a, 0x00, 0xa0]),
        (false, 1_096_576, [5, 0x00, 0x01, 0x0a]),
        (false, 1_073_789_824, [5, 0x0a, 0x01, 0xe0]),
        (false, 2_159_738_880, [5, 0x02, 0x0a, 0x27]),
        (false, 48000, [5, 0x0a, 0x00, 0xa0]),
        (false, 1_096_576, [5, 0x00, 0x01, 0x0a]),
    ];
    let mut rx = DtmfReceiver::new();
    let reported: Vec<u32> = seq
        .iter()
        .filter_map(|(m, ts, p)| rx.handle(*m, *ts, p).unwrap())
        .map(|e| e.timestamp)
        .collect();
    // 48000 once. The jumps of 2^30 and more are too far to be segments (at most 0xFFFF
    // past the last one, §2.5.1.3), so they are presses whose marker was lost: each is
    // reported, once.
    assert_eq!(
        reported.iter().filter(|&&ts| ts == 48000).count(),
        1,
        "{reported:?}"
    );
    let mut unique = reported.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        reported.len(),
        "a press reported twice: {reported:?}"
    );
}

/// The press being received stays one press however many segments it has: its first
/// packet retransmitted after nine segments is not a new press.
#[test]
fn start_retransmitted_after_many_segments_is_absorbed() {
    let mut rx = DtmfReceiver::new();
    let mut packets = vec![(true, 1000, payload(3, false, 160))];
    for k in 1..=9u32 {
        packets.push((false, 1000 + k * 65_535, payload(3, false, 160)));
    }
    packets.push((true, 1000, payload(3, false, 160)));
    assert_eq!(feed(&mut rx, &packets), vec!['3']);
}

/// Three presses (the same digit twice among them) survive every single duplication,
/// loss and swap of adjacent packets: each is reported exactly once, with its timestamp.
#[test]
fn presses_survive_duplication_loss_and_reordering() {
    let mut clean = press(1, 1000);
    clean.extend(press(1, 3000));
    clean.extend(press(7, 5000));
    let starts = |packets: &[(bool, u32, [u8; 4])]| -> Vec<u32> {
        let mut rx = DtmfReceiver::new();
        let mut out: Vec<u32> = packets
            .iter()
            .filter_map(|(m, ts, p)| rx.handle(*m, *ts, p).unwrap())
            .map(|e| e.timestamp)
            .collect();
        out.sort_unstable();
        out
    };
    let want = vec![1000, 3000, 5000];
    assert_eq!(starts(&clean), want);
    for i in 0..clean.len() {
        let mut dup = clean.clone();
        dup.insert(i, clean[i]);
        assert_eq!(starts(&dup), want, "packet {i} duplicated");
        let mut lost = clean.clone();
        lost.remove(i);
        assert_eq!(starts(&lost), want, "packet {i} lost");
        if i + 1 < clean.len() {
            let mut swapped = clean.clone();
            swapped.swap(i, i + 1);
            assert_eq!(starts(&swapped), want, "packets {i} and {} swapped", i + 1);
        }
        // The whole stream again after it ended (a confused sender or a replaying SBC).
        let mut replayed = clean.clone();
        replayed.extend_from_slice(&clean[i..]);
        assert_eq!(starts(&replayed), want, "replayed from packet {i}");
    }
}
