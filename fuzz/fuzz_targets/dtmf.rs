//! RFC 4733 telephone-event reception (`siphon_media::dtmf::DtmfReceiver::handle`) on an
//! arbitrary sequence of (marker, timestamp, payload) packets.
//!
//! Input (encoding in `siphon_fuzz::Reader`): the sender part first, code: u8,
//! duration_ms: u16, volume: u8, start_ts: u32, duplicate_mask: u32; then packets until the
//! input ends, each marker: bool, timestamp: u32, payload: bytes.
//!
//! Checked: nothing panics; a payload shorter than 4 bytes is an error and anything else is
//! not; an event reported has the packet's code, timestamp and volume; no timestamp is
//! reported twice in a row. Then, on a fresh receiver, what a `DtmfSender` produces for one
//! press (every packet, each delivered once or twice) is reported exactly once.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use siphon_fuzz::Reader;
use siphon_media::dtmf::{DtmfReceiver, DtmfSender, TelephoneEvent};

struct Packet<'a> {
    marker: bool,
    timestamp: u32,
    payload: &'a [u8],
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let code = r.u8();
    let duration_ms = r.u16();
    let volume = r.u8();
    let start_ts = r.u32();
    let duplicate_mask = r.u32();
    let mut rx = DtmfReceiver::new();
    let mut last_reported: Option<u32> = None;
    while !r.is_empty() {
        let p = Packet {
            marker: r.bool(),
            timestamp: r.u32(),
            payload: r.bytes(),
        };
        match rx.handle(p.marker, p.timestamp, p.payload) {
            Ok(Some(event)) => {
                let parsed = TelephoneEvent::parse(p.payload).expect("accepted payload parses");
                assert_eq!(event.code, parsed.code);
                assert_eq!(event.volume, parsed.volume);
                assert_eq!(event.timestamp, p.timestamp);
                assert_ne!(
                    last_reported,
                    Some(p.timestamp),
                    "same event reported twice"
                );
                last_reported = Some(p.timestamp);
                let _ = event.digit();
            }
            Ok(None) => assert!(p.payload.len() >= 4),
            Err(_) => assert!(p.payload.len() < 4, "a 4-byte payload was refused"),
        }
    }

    // One press as our own sender produces it.
    let Ok(mut sender) =
        DtmfSender::from_code(code, Duration::from_millis(u64::from(duration_ms)), volume)
    else {
        return;
    };
    let mut rx = DtmfReceiver::new();
    let mut reported = Vec::new();
    let mut slot_ts = start_ts;
    let mut i = 0u32;
    while let Some(p) = sender.next_packet(slot_ts) {
        let copies = if duplicate_mask >> (i % 32) & 1 == 1 {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if let Some(e) = rx.handle(p.marker, p.timestamp, &p.payload).expect("valid") {
                reported.push(e);
            }
        }
        slot_ts = slot_ts.wrapping_add(160);
        i += 1;
        assert!(
            i <= sender.packet_count(),
            "sender produced more than packet_count()"
        );
    }
    assert_eq!(i, sender.packet_count());
    assert_eq!(
        reported.len(),
        1,
        "one press, {} events: {reported:?}",
        reported.len()
    );
    assert_eq!(reported[0].code, code);
    assert_eq!(reported[0].timestamp, start_ts);
});
