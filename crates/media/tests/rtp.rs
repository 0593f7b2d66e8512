//! RTP parsing and building: every malformed case is a typed error, never a panic.

use siphon_media::packet::{RtpError, RtpPacket, validate};

fn header(first: u8, second: u8) -> Vec<u8> {
    vec![
        first, second, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04,
    ]
}

fn with(mut v: Vec<u8>, tail: &[u8]) -> Vec<u8> {
    v.extend_from_slice(tail);
    v
}

#[test]
fn parses_a_plain_packet() {
    let bytes = with(header(0x80, 0x80), &[7; 160]);
    let p = RtpPacket::parse(&bytes).unwrap();
    assert!(p.marker);
    assert_eq!(p.payload_type, 0);
    assert_eq!(p.sequence_number, 0x1234);
    assert_eq!(p.timestamp, 0xDEAD_BEEF);
    assert_eq!(p.ssrc, 0x0102_0304);
    assert_eq!(p.payload, &[7; 160][..]);
}

#[test]
fn build_then_parse_round_trips() {
    let payload = [0x55u8; 160];
    let p = RtpPacket {
        marker: true,
        payload_type: 8,
        sequence_number: 65535,
        timestamp: u32::MAX,
        ssrc: 42,
        payload: &payload,
    };
    let mut out = [0u8; 1500];
    let n = p.write_to(&mut out).unwrap();
    assert_eq!(n, 172);
    assert_eq!(n, p.len());
    assert_eq!(RtpPacket::parse(&out[..n]).unwrap(), p);
    assert_eq!(
        p.write_to(&mut out[..100]),
        Err(RtpError::BufferTooSmall {
            need: 172,
            have: 100
        })
    );
}

#[test]
fn too_short() {
    for len in 0..12 {
        let bytes = vec![0x80; len];
        assert_eq!(RtpPacket::parse(&bytes), Err(RtpError::TooShort { len }));
    }
}

#[test]
fn wrong_version() {
    for (first, v) in [(0x00, 0), (0x40, 1), (0xC0, 3)] {
        let bytes = with(header(first, 0), &[0; 20]);
        assert_eq!(RtpPacket::parse(&bytes), Err(RtpError::BadVersion(v)));
    }
}

#[test]
fn csrc_count_overrun() {
    // CC = 15 needs 72 header bytes.
    let bytes = with(header(0x8F, 0), &[0; 40]);
    assert_eq!(
        RtpPacket::parse(&bytes),
        Err(RtpError::CsrcOverrun {
            count: 15,
            needed: 72,
            len: 52
        })
    );
    // CC = 2 that fits: the CSRCs are skipped, the payload follows.
    let bytes = with(header(0x82, 0), &[0, 0, 0, 1, 0, 0, 0, 2, 9, 9]);
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload, &[9, 9]);
}

#[test]
fn padding_overrun_and_zero() {
    // Count larger than the body.
    let bytes = with(header(0xA0, 0), &[1, 2, 3, 200]);
    assert_eq!(
        RtpPacket::parse(&bytes),
        Err(RtpError::BadPadding {
            count: 200,
            available: 4
        })
    );
    // Count 0 (must include itself).
    let bytes = with(header(0xA0, 0), &[1, 2, 3, 0]);
    assert_eq!(
        RtpPacket::parse(&bytes),
        Err(RtpError::BadPadding {
            count: 0,
            available: 4
        })
    );
    // P bit with no body at all.
    assert_eq!(
        RtpPacket::parse(&header(0xA0, 0)),
        Err(RtpError::BadPadding {
            count: 0,
            available: 0
        })
    );
    // Valid padding is removed.
    let bytes = with(header(0xA0, 0), &[1, 2, 3, 0, 0, 3]);
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload, &[1, 2, 3]);
    // Padding covering the whole body: empty payload, legal.
    let bytes = with(header(0xA0, 0), &[0, 0, 0, 4]);
    assert!(RtpPacket::parse(&bytes).unwrap().is_empty());
}

#[test]
fn extension_length_lies() {
    // X bit but no room for the extension header.
    let bytes = with(header(0x90, 0), &[0xBE, 0xDE]);
    assert_eq!(
        RtpPacket::parse(&bytes),
        Err(RtpError::ExtensionOverrun {
            needed: 16,
            len: 14
        })
    );
    // Extension length of 50 words with 4 bytes of body.
    let bytes = with(header(0x90, 0), &[0xBE, 0xDE, 0, 50, 1, 2, 3, 4]);
    assert_eq!(
        RtpPacket::parse(&bytes),
        Err(RtpError::ExtensionOverrun {
            needed: 216,
            len: 20
        })
    );
}

#[test]
fn extension_elements_that_lie() {
    // One-byte element claiming 16 bytes in a 4-byte block, at the end of the datagram (the
    // rtp crate panics on this) and with a payload behind it (rtp misplaces the payload).
    let bad = with(header(0x90, 0), &[0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0]);
    assert_eq!(
        RtpPacket::parse(&bad),
        Err(RtpError::ExtensionElementOverrun)
    );
    let bad_with_payload = with(bad, &[0xFF; 160]);
    assert_eq!(
        RtpPacket::parse(&bad_with_payload),
        Err(RtpError::ExtensionElementOverrun)
    );
    // Two-byte element whose length byte is missing (rtp panics), and one that overruns.
    let bad = with(header(0x90, 0), &[0x10, 0x00, 0, 1, 0, 0, 0, 5]);
    assert_eq!(
        RtpPacket::parse(&bad),
        Err(RtpError::ExtensionElementOverrun)
    );
    let bad = with(header(0x90, 0), &[0x10, 0x00, 0, 1, 5, 9, 0, 0]);
    assert_eq!(
        RtpPacket::parse(&bad),
        Err(RtpError::ExtensionElementOverrun)
    );
}

#[test]
fn honest_extensions_are_skipped() {
    // One-byte: id 1 with 1 byte, id 2 with 2 bytes, padding.
    let bytes = with(
        header(0x90, 0),
        &[0xBE, 0xDE, 0, 2, 0x10, 0xAA, 0x21, 1, 2, 0, 0, 0, 7, 7],
    );
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload, &[7, 7]);
    // Two-byte: id 1, 3 bytes.
    let bytes = with(
        header(0x90, 0),
        &[0x10, 0x00, 0, 2, 1, 3, 1, 2, 3, 0, 0, 0, 7],
    );
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload, &[7]);
    // RFC 3550 opaque profile.
    let bytes = with(header(0x90, 0), &[0x12, 0x34, 0, 1, 9, 9, 9, 9, 7]);
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload, &[7]);
    // One-byte id 15 stops parsing; the rest of the block is ignored.
    let bytes = with(
        header(0x90, 0),
        &[0xBE, 0xDE, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 7],
    );
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload, &[7]);
    let layout = validate(&bytes).unwrap();
    assert_eq!((layout.header_len, layout.payload_end), (20, 21));
}

/// A tiny deterministic generator, so the fuzz loop needs no extra dependency.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_bytes_never_panic() {
    let mut s = 0x1234_5678_9ABC_DEF0;
    let mut buf = [0u8; 64];
    for _ in 0..200_000 {
        let len = (xorshift(&mut s) % 64) as usize;
        for b in &mut buf[..len] {
            *b = xorshift(&mut s) as u8;
        }
        // Bias towards version 2 with X/P/CC bits set so the deep paths run.
        if len > 0 && xorshift(&mut s) & 1 == 0 {
            buf[0] = 0x80 | (buf[0] & 0x3F);
        }
        if len > 13 && xorshift(&mut s) & 1 == 0 {
            buf[12] = 0xBE;
            buf[13] = 0xDE;
        }
        let _ = RtpPacket::parse(&buf[..len]);
    }
}
