//! The SIP core's per-message costs: parsing an INVITE (the tolerant scanner, then rsip),
//! building and serialising its 200, and a whole INVITE server transaction (request in,
//! 180 and 200 out, terminated by its timer). `cargo bench -p siphon-sip`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use siphon_sip::message::{self, ParseLimits};
use siphon_sip::timers::TimerConfig;
use siphon_sip::transaction::{Event, TransactionLayer};
use siphon_sip::{Peer, Transport};

const INVITE: &str = "INVITE sip:600@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-bench-1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:1001@127.0.0.1>;tag=a1b2c3\r\n\
To: <sip:600@127.0.0.1>\r\n\
Call-ID: 3848276298220188511@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:1001@127.0.0.1:5080>\r\n\
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n\
User-Agent: bench\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 160\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 16000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

fn invite() -> rsip::Request {
    let source: SocketAddr = "127.0.0.1:5080".parse().unwrap();
    match message::parse(INVITE.as_bytes(), source, ParseLimits::default()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        rsip::SipMessage::Response(_) => unreachable!("an INVITE"),
    }
}

fn parse_and_serialise(c: &mut Criterion) {
    let source: SocketAddr = "127.0.0.1:5080".parse().unwrap();
    c.bench_function("sip/parse INVITE with SDP", |b| {
        b.iter(|| message::parse(INVITE.as_bytes(), source, ParseLimits::default()).unwrap())
    });
    let request = invite();
    c.bench_function("sip/build + serialise 200 OK", |b| {
        b.iter(|| {
            message::response_to(&request, 200, None, Some("to-tag-1"))
                .to_string()
                .len()
        })
    });
}

fn invite_transaction(c: &mut Criterion) {
    let request = invite();
    let peer = Peer::new("127.0.0.1:5080".parse().unwrap(), Transport::Udp);
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut now = Instant::now();
    c.bench_function(
        "sip/INVITE server transaction (in, 180, 200, terminated)",
        |b| {
            b.iter(|| {
                layer.handle_request(now, request.clone(), peer).unwrap();
                let mut key = None;
                while let Some(e) = layer.poll_event() {
                    if let Event::Request { key: k, .. } = e {
                        key = Some(k);
                    }
                }
                let key = key.expect("the INVITE reaches the TU");
                for code in [180, 200] {
                    let response = message::response_to(&request, code, None, Some("t1"));
                    layer.send_response(now, &key, response).unwrap();
                }
                while layer.poll_transmit().is_some() {}
                // Past Timer L: the transaction is gone and the same INVITE is new again.
                now += Duration::from_secs(64);
                layer.handle_timeout(now);
                while layer.poll_event().is_some() {}
                assert_eq!(layer.len(), 0);
            })
        },
    );
}

criterion_group!(benches, parse_and_serialise, invite_transaction);
criterion_main!(benches);
