//! An SDP offer through `SessionDescription::parse` and `LocalSession::answer`.
//!
//! Checked: nothing panics; a parsed description serialises to text that parses again, and
//! serialising is a fixpoint after one round (parse → display → parse → display gives the
//! same text); an answer serialises to text that parses, has one m= line per offered one,
//! puts our port and the chosen payload type on the accepted stream and port 0 on the
//! others; answering the same offer twice keeps the o= version (RFC 3264 §8); our own offer
//! parses.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use siphon_sip::sdp::{Codec, Direction, LocalMedia, LocalSession, SessionDescription};

fn reparse(what: &str, sd: &SessionDescription) -> SessionDescription {
    let text = sd.to_string();
    match SessionDescription::parse(&text) {
        Ok(again) => again,
        Err(e) => panic!("{what} does not re-parse ({e}):\n{text}\nfrom {sd:#?}"),
    }
}

fn answer_with(offer: &SessionDescription, local: &LocalMedia) {
    let mut session = LocalSession::new(0x5eed, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    match session.answer(offer, local) {
        Ok(neg) => {
            let answer = reparse("answer", &neg.answer);
            assert_eq!(
                answer.media.len(),
                offer.media.len(),
                "one m= per offered m="
            );
            assert!(neg.media_index < offer.media.len());
            for (i, m) in answer.media.iter().enumerate() {
                if i == neg.media_index {
                    assert_eq!(m.port, local.port, "accepted stream carries our port");
                    assert_eq!(
                        m.formats.first().map(String::as_str),
                        Some(neg.payload_type.to_string().as_str())
                    );
                    assert!(local.codecs.contains(&neg.codec));
                } else {
                    assert_eq!(m.port, 0, "other streams are rejected");
                }
            }
            let version = session.version();
            let again = session
                .answer(offer, local)
                .expect("same offer, same answer");
            assert_eq!(
                session.version(),
                version,
                "unchanged answer bumped o= version"
            );
            assert_eq!(again.answer, neg.answer);
            // A re-INVITE offer of our own after answering.
            let _ = reparse("offer", &session.offer(local, Direction::SendOnly));
        }
        Err(e) => {
            let code = e.status_code();
            assert!(code == 400 || code == 488);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let offer = match SessionDescription::parse_bytes(data) {
        Ok(sd) => sd,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SessionDescription::parse(text);
    }
    let once = reparse("parsed offer", &offer);
    let twice = reparse("re-parsed offer", &once);
    assert_eq!(
        once.to_string(),
        twice.to_string(),
        "serialising is not a fixpoint"
    );
    for m in &offer.media {
        let _ = offer.connection_for(m);
        let _ = offer.direction_for(m);
        for pt in m.payload_types() {
            let _ = (m.rtpmap(pt), m.format_parameters(pt), m.codec_for(pt));
        }
    }

    answer_with(
        &offer,
        &LocalMedia::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000),
    );
    answer_with(
        &offer,
        &LocalMedia {
            address: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 40002,
            codecs: vec![Codec::Pcma],
            telephone_event: false,
            ptime: 0,
        },
    );
});
