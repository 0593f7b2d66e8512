//! Evidence for `packet::validate`: what the `rtp` crate (0.17) does with crafted bytes on its
//! own. If an upgrade fixes these, this test fails and the pre-validation can be revisited.
//!
//! This file holds a single test because it swaps the global panic hook to keep the expected
//! panics out of the output, which would race with other tests in the same binary.

use std::panic;

use webrtc_util::marshal::Unmarshal;

fn rtp_parse(bytes: &[u8]) -> Result<Result<(u8, usize), String>, ()> {
    let bytes = bytes.to_vec();
    panic::catch_unwind(move || {
        rtp::packet::Packet::unmarshal(&mut &bytes[..])
            .map(|p| (p.header.version, p.payload.len()))
            .map_err(|e| e.to_string())
    })
    .map_err(|_| ())
}

fn packet(first: u8, tail: &[u8]) -> Vec<u8> {
    let mut v = vec![first, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    v.extend_from_slice(tail);
    v
}

#[test]
fn rtp_crate_needs_prevalidation() {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));

    let payload = [0xFFu8; 160];
    // Accepts versions other than 2.
    assert_eq!(rtp_parse(&packet(0x40, &payload)), Ok(Ok((1, 160))));
    assert_eq!(rtp_parse(&packet(0x00, &payload)), Ok(Ok((0, 160))));
    // Accepts a padding count of 0.
    let mut pad0 = packet(0xA0, &payload);
    let last = pad0.len() - 1;
    pad0[last] = 0;
    assert_eq!(rtp_parse(&pad0), Ok(Ok((2, 160))));
    // One-byte extension element (id 1, 16 bytes) overrunning the datagram: panics.
    let ext = packet(0x90, &[0xBE, 0xDE, 0, 1, 0x1F, 0, 0, 0]);
    assert_eq!(rtp_parse(&ext), Err(()));
    // ... overrunning only the extension block: accepted, payload boundary misplaced.
    let mut ext_into_payload = ext.clone();
    ext_into_payload.extend_from_slice(&payload);
    assert_eq!(rtp_parse(&ext_into_payload), Ok(Ok((2, 147))));
    // Two-byte extension element header cut at the end: panics.
    let two = packet(0x90, &[0x10, 0x00, 0, 1, 0, 0, 0, 5]);
    assert_eq!(rtp_parse(&two), Err(()));

    panic::set_hook(hook);
}
