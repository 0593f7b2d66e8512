//! State machine tests with virtual time: one `Instant` captured per test, advanced by
//! jumping to `poll_timeout()`; nothing sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rsip::prelude::*;
use rsip::{Header, Method};

use super::*;
use crate::peer::{Peer, Transport};
use crate::timers::TimerConfig;

// ---------------------------------------------------------------------------------------------
// Message helpers

const CALL_ID: &str = "a84b4c76e66710@pc33.atlanta.example.com";

/// Joins header lines with CRLF and ends the header block.
fn sip(lines: &[&str]) -> String {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n\r\n");
    s
}

fn parse_request(text: &str) -> rsip::Request {
    match rsip::SipMessage::try_from(text).unwrap() {
        rsip::SipMessage::Request(r) => r,
        rsip::SipMessage::Response(_) => panic!("expected a request"),
    }
}

fn parse_response(text: &str) -> rsip::Response {
    match rsip::SipMessage::try_from(text).unwrap() {
        rsip::SipMessage::Response(r) => r,
        rsip::SipMessage::Request(_) => panic!("expected a response"),
    }
}

fn request(method: &str, branch: &str, cseq: u32) -> rsip::Request {
    parse_request(&sip(&[
        &format!("{method} sip:bob@biloxi.example.com SIP/2.0"),
        &format!("Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch={branch};rport"),
        "Max-Forwards: 70",
        "Route: <sip:p1.example.com;lr>",
        "Route: <sip:p2.example.com;lr>",
        "To: Bob <sip:bob@biloxi.example.com>",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        &format!("Call-ID: {CALL_ID}"),
        &format!("CSeq: {cseq} {method}"),
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        "Content-Length: 0",
    ]))
}

fn invite(branch: &str) -> rsip::Request {
    request("INVITE", branch, 314159)
}

fn cancel(branch: &str) -> rsip::Request {
    request("CANCEL", branch, 314159)
}

fn options(branch: &str) -> rsip::Request {
    request("OPTIONS", branch, 1)
}

fn header_value(headers: &rsip::Headers, name: &str) -> String {
    headers
        .iter()
        .find_map(|h| {
            let text = h.to_string();
            let (n, v) = text.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// A response to `req` as a UAS would build it: all Vias, From, To (+ tag), Call-ID, CSeq.
fn response(req: &rsip::Request, code: u16, to_tag: Option<&str>) -> rsip::Response {
    let mut lines = vec![format!("SIP/2.0 {code} Whatever")];
    for h in req.headers.iter() {
        if let Header::Via(v) = h {
            lines.push(format!("Via: {}", v.value()));
        }
    }
    lines.push(format!("From: {}", header_value(&req.headers, "From")));
    let to = header_value(&req.headers, "To");
    lines.push(match to_tag {
        Some(tag) => format!("To: {to};tag={tag}"),
        None => format!("To: {to}"),
    });
    lines.push(format!(
        "Call-ID: {}",
        header_value(&req.headers, "Call-ID")
    ));
    lines.push(format!("CSeq: {}", header_value(&req.headers, "CSeq")));
    lines.push("Content-Length: 0".to_owned());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    parse_response(&sip(&refs))
}

/// An ACK for `invite` with the given branch (a new one for a 2xx, the INVITE's for a non-2xx).
fn ack(invite: &rsip::Request, branch: &str, to_tag: &str) -> rsip::Request {
    let cseq = invite.cseq_header().unwrap().seq().unwrap();
    parse_request(&sip(&[
        &format!("ACK {} SIP/2.0", invite.uri),
        &format!("Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch={branch}"),
        "Max-Forwards: 70",
        &format!("To: Bob <sip:bob@biloxi.example.com>;tag={to_tag}"),
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        &format!("Call-ID: {CALL_ID}"),
        &format!("CSeq: {cseq} ACK"),
        "Content-Length: 0",
    ]))
}

fn udp() -> Peer {
    Peer::new("192.0.2.10:5060".parse().unwrap(), Transport::Udp)
}

fn tcp() -> Peer {
    Peer::new("192.0.2.10:40000".parse().unwrap(), Transport::Tcp)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A compact, comparable rendering of an event for assertions.
fn describe(event: &Event) -> String {
    match event {
        Event::Request { request, .. } => format!("Request {}", request.method),
        Event::StrayAck { .. } => "StrayAck".to_owned(),
        Event::AckReceived { .. } => "AckReceived".to_owned(),
        Event::Response { response, .. } => format!("Response {}", response.status_code.code()),
        Event::Timeout { .. } => "Timeout".to_owned(),
        Event::AckTimeout { .. } => "AckTimeout".to_owned(),
        Event::Terminated { .. } => "Terminated".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Virtual-time harness

struct Harness {
    layer: TransactionLayer,
    t0: Instant,
    now: Instant,
}

/// Outputs observed while running, stamped with their offset from the test's start.
#[derive(Debug, Default)]
struct Trace {
    sends: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, Event)>,
}

impl Trace {
    fn send_times(&self) -> Vec<Duration> {
        self.sends.iter().map(|(t, _)| *t).collect()
    }

    fn events(&self) -> Vec<(Duration, String)> {
        self.events.iter().map(|(t, e)| (*t, describe(e))).collect()
    }
}

impl Harness {
    fn new() -> Self {
        Self::with(TimerConfig::default())
    }

    fn with(config: TimerConfig) -> Self {
        let t0 = Instant::now();
        Harness {
            layer: TransactionLayer::new(config),
            t0,
            now: t0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn collect(&mut self, trace: &mut Trace) {
        let at = self.elapsed();
        while let Some(t) = self.layer.poll_transmit() {
            trace.sends.push((at, t));
        }
        while let Some(e) = self.layer.poll_event() {
            trace.events.push((at, e));
        }
    }

    /// Outputs produced since the last drain.
    fn drain(&mut self) -> Trace {
        let mut trace = Trace::default();
        self.collect(&mut trace);
        trace
    }

    /// Fires every timer up to `at` (offset from start), jumping from deadline to deadline.
    fn run_until(&mut self, at: Duration) -> Trace {
        let end = self.t0 + at;
        assert!(end >= self.now, "time only moves forward");
        let mut trace = Trace::default();
        self.collect(&mut trace);
        while let Some(deadline) = self.layer.poll_timeout() {
            if deadline > end {
                break;
            }
            assert!(deadline >= self.now, "deadline in the past");
            self.now = deadline;
            self.layer.handle_timeout(deadline);
            self.collect(&mut trace);
        }
        self.now = end;
        trace
    }

    /// Runs until no timer is left.
    fn run_to_end(&mut self) -> Trace {
        self.run_until(secs(3600))
    }

    fn recv_request(&mut self, req: rsip::Request, peer: Peer) -> Trace {
        self.layer.handle_request(self.now, req, peer).unwrap();
        self.drain()
    }

    fn recv_response(&mut self, resp: rsip::Response) -> Trace {
        self.layer.handle_response(self.now, resp, udp()).unwrap();
        self.drain()
    }

    fn respond(&mut self, key: &TransactionKey, resp: rsip::Response) -> Trace {
        self.layer.send_response(self.now, key, resp).unwrap();
        self.drain()
    }

    fn send(&mut self, req: rsip::Request, peer: Peer) -> (TransactionKey, Trace) {
        let key = self.layer.send_request(self.now, req, peer).unwrap();
        (key, self.drain())
    }

    /// A new INVITE server transaction; returns its key.
    fn incoming(&mut self, req: rsip::Request, peer: Peer) -> TransactionKey {
        let trace = self.recv_request(req, peer);
        assert_eq!(trace.events.len(), 1);
        match &trace.events[0].1 {
            Event::Request { key, .. } => key.clone(),
            other => panic!("expected Request, got {other:?}"),
        }
    }

    /// Nothing left: no transactions, no timers, no outputs.
    fn assert_quiescent(&mut self) {
        assert!(
            self.layer.is_empty(),
            "{} transactions left",
            self.layer.len()
        );
        assert_eq!(self.layer.poll_timeout(), None);
        assert_eq!(self.layer.io.timers.len(), 0);
        assert!(self.layer.ack_index.is_empty());
        assert!(self.layer.ack_windows.is_empty());
        let trace = self.drain();
        assert!(trace.sends.is_empty() && trace.events.is_empty());
    }
}

fn ev(at: Duration, what: &str) -> (Duration, String) {
    (at, what.to_owned())
}

/// RFC 3261 retransmission times for default timers (T1 = 500 ms, T2 = 4 s) within 64·T1.
const DOUBLING_UNCAPPED: [u64; 6] = [500, 1500, 3500, 7500, 15500, 31500];
const DOUBLING_CAPPED: [u64; 10] = [
    500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
];

fn offsets(base: Duration, list: &[u64]) -> Vec<Duration> {
    list.iter().map(|&m| base + ms(m)).collect()
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn transaction_key_matching_rules() {
    let inv = invite("z9hG4bKabc");
    let key = TransactionKey::from_request(&inv).unwrap();
    assert_eq!(key.method(), Method::Invite);
    assert_eq!(key.branch(), Some("z9hG4bKabc"));

    // ACK for a non-2xx shares the INVITE's transaction; CANCEL has its own.
    let ack_key = TransactionKey::from_request(&ack(&inv, "z9hG4bKabc", "t")).unwrap();
    assert_eq!(ack_key, key);
    let cancel_key = TransactionKey::from_request(&cancel("z9hG4bKabc")).unwrap();
    assert_ne!(cancel_key, key);
    assert_eq!(cancel_key.method(), Method::Cancel);

    // A response maps to the request's key through branch + CSeq method.
    let resp_key = TransactionKey::from_response(&response(&inv, 180, None)).unwrap();
    assert_eq!(resp_key, key);
    let cancel_resp = response(&cancel("z9hG4bKabc"), 200, None);
    assert_eq!(
        TransactionKey::from_response(&cancel_resp).unwrap(),
        cancel_key
    );

    // Same branch from another sent-by is another transaction; host case does not matter.
    let text = invite("z9hG4bKabc").to_string();
    let other_host = parse_request(&text.replace("pc33.atlanta", "pc34.atlanta"));
    assert_ne!(TransactionKey::from_request(&other_host).unwrap(), key);
    let upper = parse_request(&text.replace("pc33.atlanta", "PC33.Atlanta"));
    assert_eq!(TransactionKey::from_request(&upper).unwrap(), key);

    let shown = key.to_string();
    assert!(
        shown.contains("z9hG4bKabc") && shown.contains("INVITE"),
        "{shown}"
    );
}

#[test]
fn compact_header_forms_are_understood() {
    let text = sip(&[
        "OPTIONS sip:bob@biloxi.example.com SIP/2.0",
        "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKcompact",
        "t: <sip:bob@biloxi.example.com>",
        "f: <sip:alice@atlanta.example.com>;tag=77",
        "i: compact-call-id",
        "CSeq: 7 OPTIONS",
        "l: 0",
    ]);
    let req = parse_request(&text);
    let key = TransactionKey::from_request(&req).unwrap();
    assert_eq!(key.branch(), Some("z9hG4bKcompact"));

    let mut h = Harness::new();
    let (client_key, _) = h.send(req, udp());
    assert_eq!(client_key, key);
    let resp = parse_response(&sip(&[
        "SIP/2.0 200 OK",
        "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKcompact;received=192.0.2.1",
        "t: <sip:bob@biloxi.example.com>;tag=88",
        "f: <sip:alice@atlanta.example.com>;tag=77",
        "i: compact-call-id",
        "CSeq: 7 OPTIONS",
    ]));
    let trace = h.recv_response(resp);
    assert_eq!(trace.events(), vec![ev(secs(0), "Response 200")]);
}

#[test]
fn new_branch_has_magic_cookie_and_is_unique() {
    let a = new_branch();
    let b = new_branch();
    assert!(a.starts_with("z9hG4bK"));
    assert!(a.len() > "z9hG4bK".len() + 16);
    assert_ne!(a, b);
}

// ---------------------------------------------------------------------------------------------
// INVITE client

#[test]
fn invite_client_udp_timer_a_doubles_and_timer_b_times_out() {
    let mut h = Harness::new();
    let (key, first) = h.send(invite("z9hG4bKa1"), udp());
    assert_eq!(first.sends.len(), 1);
    assert_eq!(first.sends[0].1.peer, udp());
    assert_eq!(h.layer.len(), 1);

    let trace = h.run_to_end();
    assert_eq!(
        trace.send_times(),
        offsets(Duration::ZERO, &DOUBLING_UNCAPPED)
    );
    // Retransmissions are byte-identical to the original.
    assert!(trace.sends.iter().all(|(_, t)| t == &first.sends[0].1));
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "Timeout"), ev(secs(32), "Terminated")]
    );
    assert!(matches!(&trace.events[0].1, Event::Timeout { key: k } if *k == key));
    assert_eq!(h.layer.stats().retransmissions_sent, 6);
    h.assert_quiescent();
}

#[test]
fn invite_client_tcp_no_retransmissions_timer_b_still_applies() {
    let mut h = Harness::new();
    let (_, first) = h.send(invite("z9hG4bKa2"), tcp());
    assert_eq!(first.sends.len(), 1);
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "Timeout"), ev(secs(32), "Terminated")]
    );
    h.assert_quiescent();
}

#[test]
fn invite_client_provisional_stops_timer_a_and_b() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa3");
    let (_, _) = h.send(inv.clone(), udp());
    let trace = h.run_until(ms(1000));
    assert_eq!(trace.send_times(), vec![ms(500)]);

    let trace = h.recv_response(response(&inv, 180, Some("callee")));
    assert_eq!(trace.events(), vec![ev(ms(1000), "Response 180")]);
    // Proceeding: no timers at all; ringing may last as long as the TU allows.
    assert_eq!(h.layer.poll_timeout(), None);
    let trace = h.run_until(secs(600));
    assert!(trace.sends.is_empty() && trace.events.is_empty());
    assert_eq!(h.layer.len(), 1);

    // Every provisional is reported; then the final ends it.
    let trace = h.recv_response(response(&inv, 183, Some("callee")));
    assert_eq!(trace.events(), vec![ev(secs(600), "Response 183")]);
    let trace = h.recv_response(response(&inv, 200, Some("callee")));
    assert_eq!(
        trace.events(),
        vec![ev(secs(600), "Response 200"), ev(secs(600), "Terminated")]
    );
}

#[test]
fn invite_client_2xx_terminates_and_later_2xx_still_reach_the_tu() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa4");
    let (key, _) = h.send(inv.clone(), udp());
    h.run_until(ms(200));

    let trace = h.recv_response(response(&inv, 200, Some("fork1")));
    assert_eq!(
        trace.events(),
        vec![ev(ms(200), "Response 200"), ev(ms(200), "Terminated")]
    );
    assert!(h.layer.is_empty());
    // The INVITE stays available to build ACKs for the 2xx and its retransmissions.
    assert_eq!(h.layer.request(&key), Some(&inv));

    // The 2xx retransmission (the TU must ACK each) and a forked 2xx are reported.
    h.run_until(secs(10));
    let trace = h.recv_response(response(&inv, 200, Some("fork1")));
    assert_eq!(trace.events(), vec![ev(secs(10), "Response 200")]);
    assert!(matches!(&trace.events[0].1, Event::Response { key: k, .. } if *k == key));
    let trace = h.recv_response(response(&inv, 200, Some("fork2")));
    assert_eq!(trace.events(), vec![ev(secs(10), "Response 200")]);
    // A late provisional in that window is useless and dropped.
    let trace = h.recv_response(response(&inv, 180, Some("fork3")));
    assert!(trace.events.is_empty());
    assert_eq!(h.layer.stats().unmatched_responses, 1);

    // The TU's ACK is just sent.
    let ack_req = ack(&inv, &new_branch(), "fork1");
    h.layer.send_ack_for_2xx(ack_req.clone(), udp());
    let trace = h.drain();
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1.bytes, ack_req.to_string().into_bytes());

    // The window closes 64·T1 after the first 2xx; after that a 2xx is unmatched.
    assert_eq!(h.layer.poll_timeout(), Some(h.t0 + ms(200) + secs(32)));
    let trace = h.run_to_end();
    assert!(trace.events.is_empty());
    h.assert_quiescent();
    assert_eq!(h.layer.request(&key), None);
    let trace = h.recv_response(response(&inv, 200, Some("fork1")));
    assert!(trace.events.is_empty());
    assert_eq!(h.layer.stats().unmatched_responses, 2);
}

#[test]
fn invite_client_non_2xx_is_acked_by_the_layer_and_ack_resent_on_retransmission() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa5");
    let (key, _) = h.send(inv.clone(), udp());
    h.run_until(ms(100));
    h.recv_response(response(&inv, 100, None));
    h.run_until(secs(1));

    let busy = response(&inv, 486, Some("busy-tag"));
    let trace = h.recv_response(busy.clone());
    assert_eq!(trace.events(), vec![ev(secs(1), "Response 486")]);
    assert_eq!(trace.sends.len(), 1);
    let sent_ack = trace.sends[0].1.clone();
    assert_eq!(sent_ack.peer, udp());

    // RFC 3261 §17.1.1.3 ACK construction.
    let ack_req = parse_request(std::str::from_utf8(&sent_ack.bytes).unwrap());
    assert_eq!(ack_req.method, Method::Ack);
    assert_eq!(ack_req.uri, inv.uri);
    let vias: Vec<String> = ack_req
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => Some(v.value().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        vias,
        vec![inv.via_header().unwrap().value().to_owned()],
        "single Via equal to the INVITE's top Via"
    );
    assert_eq!(
        ack_req.call_id_header().unwrap().value(),
        inv.call_id_header().unwrap().value()
    );
    assert_eq!(
        ack_req.from_header().unwrap().value(),
        inv.from_header().unwrap().value()
    );
    assert_eq!(
        ack_req.to_header().unwrap().value(),
        busy.to_header().unwrap().value()
    );
    assert_eq!(
        ack_req
            .to_header()
            .unwrap()
            .typed()
            .unwrap()
            .tag()
            .unwrap()
            .value(),
        "busy-tag"
    );
    let cseq = ack_req.cseq_header().unwrap().typed().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Ack));
    let routes: Vec<String> = ack_req
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(r) => Some(r.value().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        routes,
        vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    // The ACK belongs to the INVITE's transaction.
    assert_eq!(TransactionKey::from_request(&ack_req).unwrap(), key);

    // A retransmitted 486 gets the same ACK again, and is not reported again.
    h.run_until(secs(3));
    let trace = h.recv_response(busy.clone());
    assert!(trace.events.is_empty());
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1, sent_ack);
    let stats = h.layer.stats();
    assert_eq!(stats.retransmissions_absorbed, 1);
    assert_eq!(
        stats.retransmissions_sent, 1,
        "the ACK re-send (the 100 came before Timer A)"
    );

    // Timer D (32 s on UDP) from the first 486.
    let trace = h.run_to_end();
    assert_eq!(trace.events(), vec![ev(secs(33), "Terminated")]);
    h.assert_quiescent();
}

#[test]
fn invite_client_non_2xx_over_tcp_terminates_at_once() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa6");
    h.send(inv.clone(), tcp());
    let trace = h.recv_response(response(&inv, 603, Some("d")));
    assert_eq!(
        trace.events(),
        vec![ev(secs(0), "Response 603"), ev(secs(0), "Terminated")]
    );
    assert_eq!(trace.sends.len(), 1, "the ACK");
    assert_eq!(trace.sends[0].1.peer, tcp());
    h.assert_quiescent();
}

#[test]
fn invite_client_cancel_bounds_the_wait_for_a_final_response() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa7");
    let (invite_key, _) = h.send(inv.clone(), udp());
    h.recv_response(response(&inv, 180, Some("r")));
    h.run_until(secs(5));

    let (cancel_key, trace) = h.send(cancel("z9hG4bKa7"), udp());
    assert_ne!(cancel_key, invite_key);
    assert_eq!(trace.sends.len(), 1);
    h.run_until(secs(6));
    let trace = h.recv_response(response(&cancel("z9hG4bKa7"), 200, Some("r")));
    assert_eq!(trace.events(), vec![ev(secs(6), "Response 200")]);

    // The 487 never comes (an RFC 2543 UAS): 64·T1 after the CANCEL the INVITE gives up.
    let trace = h.run_to_end();
    assert_eq!(
        trace.events(),
        vec![
            ev(secs(11), "Terminated"), // CANCEL, Timer K
            ev(secs(37), "Timeout"),
            ev(secs(37), "Terminated"),
        ]
    );
    assert!(matches!(&trace.events[1].1, Event::Timeout { key } if *key == invite_key));
    h.assert_quiescent();
}

#[test]
fn invite_client_cancel_sent_while_calling_limits_proceeding() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa9");
    h.send(inv.clone(), udp());
    h.send(cancel("z9hG4bKa9"), udp());
    h.run_until(secs(2));
    // The CANCEL's own transaction gets its answer.
    h.recv_response(response(&cancel("z9hG4bKa9"), 200, Some("r")));
    // The provisional stops Timer B, but the CANCEL limit takes over from here.
    h.run_until(secs(3));
    h.recv_response(response(&inv, 180, Some("r")));
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty(), "Timer A stopped by the 180");
    assert_eq!(
        trace.events(),
        vec![
            ev(secs(7), "Terminated"), // CANCEL, Timer K
            ev(secs(35), "Timeout"),
            ev(secs(35), "Terminated"),
        ]
    );
    h.assert_quiescent();
}

#[test]
fn invite_client_completed_drops_stray_2xx_and_provisionals() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKa8");
    h.send(inv.clone(), udp());
    h.recv_response(response(&inv, 404, Some("x")));
    let trace = h.recv_response(response(&inv, 200, Some("x")));
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    let trace = h.recv_response(response(&inv, 180, Some("x")));
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    assert_eq!(h.layer.stats().unmatched_responses, 2);
}

// ---------------------------------------------------------------------------------------------
// Non-INVITE client

#[test]
fn non_invite_client_udp_timer_e_capped_at_t2_and_timer_f() {
    let mut h = Harness::new();
    let (_, first) = h.send(options("z9hG4bKn1"), udp());
    assert_eq!(first.sends.len(), 1);
    let trace = h.run_to_end();
    assert_eq!(
        trace.send_times(),
        offsets(Duration::ZERO, &DOUBLING_CAPPED)
    );
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "Timeout"), ev(secs(32), "Terminated")]
    );
    h.assert_quiescent();
}

#[test]
fn non_invite_client_proceeding_retransmits_every_t2() {
    let mut h = Harness::new();
    let req = options("z9hG4bKn2");
    h.send(req.clone(), udp());
    h.run_until(ms(200));
    let trace = h.recv_response(response(&req, 100, None));
    assert_eq!(trace.events(), vec![ev(ms(200), "Response 100")]);
    let trace = h.run_to_end();
    // The pending E fires at 500 ms, then every T2.
    assert_eq!(
        trace.send_times(),
        [500, 4500, 8500, 12500, 16500, 20500, 24500, 28500]
            .iter()
            .map(|&m| ms(m))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "Timeout"), ev(secs(32), "Terminated")]
    );
}

#[test]
fn non_invite_client_final_then_timer_k_udp() {
    let mut h = Harness::new();
    let req = options("z9hG4bKn3");
    let (key, _) = h.send(req.clone(), udp());
    h.run_until(secs(1));
    let ok = response(&req, 200, Some("s"));
    let trace = h.recv_response(ok.clone());
    assert_eq!(trace.events(), vec![ev(secs(1), "Response 200")]);
    assert!(matches!(&trace.events[0].1, Event::Response { key: k, .. } if *k == key));

    // Retransmitted final absorbed, not reported; Timer E stopped.
    h.run_until(secs(2));
    let trace = h.recv_response(ok.clone());
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    assert_eq!(h.layer.stats().retransmissions_absorbed, 1);

    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(trace.events(), vec![ev(secs(6), "Terminated")]); // 1 s + T4
    h.assert_quiescent();

    // Past Timer K the response has nowhere to go.
    h.recv_response(ok);
    assert_eq!(h.layer.stats().unmatched_responses, 1);
}

#[test]
fn non_invite_client_tcp_no_retransmissions_zero_timer_k() {
    let mut h = Harness::new();
    let req = options("z9hG4bKn4");
    h.send(req.clone(), tcp());
    h.run_until(secs(20));
    assert!(h.drain().sends.is_empty());
    let trace = h.recv_response(response(&req, 200, None));
    assert_eq!(
        trace.events(),
        vec![ev(secs(20), "Response 200"), ev(secs(20), "Terminated")]
    );
    h.assert_quiescent();

    // And Timer F over TCP.
    let mut h = Harness::new();
    h.send(options("z9hG4bKn5"), tcp());
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "Timeout"), ev(secs(32), "Terminated")]
    );
}

// ---------------------------------------------------------------------------------------------
// INVITE server

#[test]
fn invite_server_retransmission_absorbed_and_last_provisional_resent() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs1");
    let key = h.incoming(inv.clone(), udp());
    assert_eq!(h.layer.request(&key), Some(&inv));

    // Before any response: absorbed silently.
    let trace = h.recv_request(inv.clone(), udp());
    assert!(trace.events.is_empty() && trace.sends.is_empty());

    let trace = h.respond(&key, response(&inv, 100, None));
    assert_eq!(trace.sends.len(), 1);
    let trace = h.respond(&key, response(&inv, 180, Some("uas")));
    let ringing = trace.sends[0].1.clone();
    assert_eq!(ringing.peer, udp());

    let trace = h.recv_request(inv.clone(), udp());
    assert!(trace.events.is_empty(), "no duplicate Event::Request");
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(
        trace.sends[0].1, ringing,
        "the latest provisional is re-sent"
    );
    let stats = h.layer.stats();
    assert_eq!(stats.retransmissions_absorbed, 2);
    assert_eq!(stats.retransmissions_sent, 1);
    // The INVITE server transaction never sends 100 Trying by itself, nor retransmits 1xx.
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn invite_server_non_2xx_udp_timer_g_capped_then_timer_h() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs2");
    let key = h.incoming(inv.clone(), udp());
    h.run_until(secs(2));
    let trace = h.respond(&key, response(&inv, 486, Some("uas")));
    let busy = trace.sends[0].1.clone();

    let trace = h.run_to_end();
    assert_eq!(trace.send_times(), offsets(secs(2), &DOUBLING_CAPPED));
    assert!(trace.sends.iter().all(|(_, t)| *t == busy));
    assert_eq!(
        trace.events(),
        vec![ev(secs(34), "AckTimeout"), ev(secs(34), "Terminated")]
    );
    assert!(matches!(&trace.events[0].1, Event::AckTimeout { key: k } if *k == key));
    h.assert_quiescent();
}

#[test]
fn invite_server_non_2xx_ack_confirms_then_timer_i() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs3");
    let key = h.incoming(inv.clone(), udp());
    let trace = h.respond(&key, response(&inv, 486, Some("uas")));
    let busy = trace.sends[0].1.clone();

    // A retransmitted INVITE in Completed gets the final again.
    h.run_until(ms(1000));
    let trace = h.recv_request(inv.clone(), udp());
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1, busy);

    let trace = h.run_until(ms(2000));
    assert_eq!(trace.send_times(), vec![ms(1500)], "Timer G");

    // ACK (same branch as the INVITE) → Confirmed, absorbed, G and H stop.
    let trace = h.recv_request(ack(&inv, "z9hG4bKs3", "uas"), udp());
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    assert_eq!(h.layer.poll_timeout(), Some(h.t0 + secs(2) + secs(5)));

    // In Confirmed, ACK and INVITE retransmissions are absorbed without a reply.
    h.run_until(secs(3));
    let trace = h.recv_request(ack(&inv, "z9hG4bKs3", "uas"), udp());
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    let trace = h.recv_request(inv.clone(), udp());
    assert!(trace.events.is_empty() && trace.sends.is_empty());

    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(trace.events(), vec![ev(secs(7), "Terminated")]); // Timer I = T4
    h.assert_quiescent();
}

#[test]
fn invite_server_non_2xx_over_tcp() {
    // ACK arrives: Timer I is zero.
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs4");
    let key = h.incoming(inv.clone(), tcp());
    let trace = h.respond(&key, response(&inv, 480, Some("uas")));
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1.peer, tcp());
    h.run_until(secs(1));
    assert!(h.drain().sends.is_empty(), "no Timer G over TCP");
    let trace = h.recv_request(ack(&inv, "z9hG4bKs4", "uas"), tcp());
    assert_eq!(trace.events(), vec![ev(secs(1), "Terminated")]);
    h.assert_quiescent();

    // No ACK: Timer H still runs over TCP.
    let mut h = Harness::new();
    let key = h.incoming(inv.clone(), tcp());
    h.respond(&key, response(&inv, 480, Some("uas")));
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "AckTimeout"), ev(secs(32), "Terminated")]
    );
    h.assert_quiescent();
}

#[test]
fn invite_server_2xx_retransmitted_until_ack_then_timer_l() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs5");
    let key = h.incoming(inv.clone(), udp());
    let trace = h.respond(&key, response(&inv, 200, Some("uas")));
    let ok = trace.sends[0].1.clone();

    let trace = h.run_until(secs(12));
    assert_eq!(
        trace.send_times(),
        offsets(Duration::ZERO, &[500, 1500, 3500, 7500, 11500])
    );
    assert!(trace.sends.iter().all(|(_, t)| *t == ok));

    // The ACK for a 2xx carries a new branch; it is matched on the dialog.
    let ack_req = ack(&inv, "z9hG4bKnewbranch", "uas");
    let trace = h.recv_request(ack_req.clone(), udp());
    assert_eq!(trace.events(), vec![ev(secs(12), "AckReceived")]);
    match &trace.events[0].1 {
        Event::AckReceived {
            key: k,
            request,
            peer,
        } => {
            assert_eq!(*k, key);
            assert_eq!(*request, ack_req);
            assert_eq!(*peer, udp());
        }
        other => panic!("{other:?}"),
    }

    // Retransmissions stop; a late INVITE retransmission still gets the 2xx; repeated
    // ACKs are absorbed.
    h.run_until(secs(13));
    let trace = h.recv_request(inv.clone(), udp());
    assert!(trace.events.is_empty());
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1, ok);
    let trace = h.recv_request(ack_req, udp());
    assert!(trace.events.is_empty());

    // Timer L ends it without AckTimeout, since the ACK came.
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(trace.events(), vec![ev(secs(32), "Terminated")]);
    h.assert_quiescent();

    // Once terminated, an ACK is the TU's business.
    let trace = h.recv_request(ack(&inv, "z9hG4bKlate", "uas"), udp());
    assert_eq!(trace.events(), vec![ev(secs(3600), "StrayAck")]);
}

#[test]
fn invite_server_2xx_without_ack_timer_l_reports_ack_timeout() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs6");
    let key = h.incoming(inv.clone(), udp());
    h.run_until(secs(1));
    h.respond(&key, response(&inv, 200, Some("uas")));
    let trace = h.run_to_end();
    assert_eq!(trace.send_times(), offsets(secs(1), &DOUBLING_CAPPED));
    assert_eq!(
        trace.events(),
        vec![ev(secs(33), "AckTimeout"), ev(secs(33), "Terminated")]
    );
    assert!(matches!(&trace.events[0].1, Event::AckTimeout { key: k } if *k == key));
    h.assert_quiescent();
}

#[test]
fn invite_server_2xx_over_tcp_is_not_retransmitted() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs7");
    let key = h.incoming(inv.clone(), tcp());
    h.respond(&key, response(&inv, 200, Some("uas")));
    let trace = h.run_until(secs(10));
    assert!(trace.sends.is_empty());
    let trace = h.recv_request(ack(&inv, "z9hG4bKtcpack", "uas"), tcp());
    assert_eq!(trace.events(), vec![ev(secs(10), "AckReceived")]);
    let trace = h.run_to_end();
    assert_eq!(trace.events(), vec![ev(secs(32), "Terminated")]);
    h.assert_quiescent();

    let mut h = Harness::new();
    let key = h.incoming(inv.clone(), tcp());
    h.respond(&key, response(&inv, 200, Some("uas")));
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(
        trace.events(),
        vec![ev(secs(32), "AckTimeout"), ev(secs(32), "Terminated")]
    );
}

#[test]
fn invite_server_2xx_ack_reusing_the_invite_branch_is_matched() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKs8");
    let key = h.incoming(inv.clone(), udp());
    h.respond(&key, response(&inv, 200, Some("uas")));
    let trace = h.recv_request(ack(&inv, "z9hG4bKs8", "uas"), udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "AckReceived")]);
    assert_eq!(h.layer.poll_timeout(), Some(h.t0 + secs(32)));
}

#[test]
fn stray_acks() {
    let mut h = Harness::new();
    // Matches nothing at all.
    let inv = invite("z9hG4bKs9");
    let trace = h.recv_request(ack(&inv, "z9hG4bKnothing", "t"), udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "StrayAck")]);

    // Same branch as an INVITE that has no final response yet.
    let key = h.incoming(inv.clone(), udp());
    let trace = h.recv_request(ack(&inv, "z9hG4bKs9", "t"), udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "StrayAck")]);

    // An ACK for a 2xx with the wrong To tag is not ours either.
    h.respond(&key, response(&inv, 200, Some("uas")));
    let trace = h.recv_request(ack(&inv, "z9hG4bKother", "not-uas"), udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "StrayAck")]);
    match &trace.events[0].1 {
        Event::StrayAck { peer, .. } => assert_eq!(*peer, udp()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn send_response_errors() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKe1");

    let unknown = TransactionKey::from_request(&inv).unwrap();
    assert!(matches!(
        h.layer
            .send_response(h.now, &unknown, response(&inv, 180, None)),
        Err(TransactionError::UnknownTransaction(k)) if k == unknown
    ));

    let key = h.incoming(inv.clone(), udp());
    h.respond(&key, response(&inv, 200, Some("uas")));
    for code in [180, 200, 486] {
        let err = h
            .layer
            .send_response(h.now, &key, response(&inv, code, Some("uas")))
            .unwrap_err();
        assert!(
            matches!(err, TransactionError::InvalidState { state, status, .. }
                if state == "Accepted" && status == code),
            "{err}"
        );
    }
    // A refused response is not sent.
    assert!(h.drain().sends.is_empty());

    let inv2 = invite("z9hG4bKe2");
    let key2 = h.incoming(inv2.clone(), udp());
    h.respond(&key2, response(&inv2, 486, Some("uas")));
    assert!(matches!(
        h.layer
            .send_response(h.now, &key2, response(&inv2, 200, Some("uas"))),
        Err(TransactionError::InvalidState { .. })
    ));

    let opt = options("z9hG4bKe3");
    let key3 = h.incoming(opt.clone(), udp());
    h.respond(&key3, response(&opt, 200, Some("uas")));
    assert!(matches!(
        h.layer
            .send_response(h.now, &key3, response(&opt, 200, Some("uas"))),
        Err(TransactionError::InvalidState { .. })
    ));
    assert!(matches!(
        h.layer
            .send_response(h.now, &key3, response(&opt, 100, None)),
        Err(TransactionError::InvalidState { .. })
    ));

    // Status codes outside 100..=699.
    let opt4 = options("z9hG4bKe4");
    let key4 = h.incoming(opt4.clone(), udp());
    let mut too_low = response(&opt4, 100, None);
    too_low.status_code = 99.into();
    assert!(matches!(
        h.layer.send_response(h.now, &key4, too_low),
        Err(TransactionError::InvalidStatusCode(99))
    ));
    assert!(matches!(
        h.layer
            .send_response(h.now, &key4, response(&opt4, 700, None)),
        Err(TransactionError::InvalidStatusCode(700))
    ));
    assert!(h.drain().sends.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Non-INVITE server

#[test]
fn non_invite_server_udp_absorbs_retransmissions_and_timer_j() {
    let mut h = Harness::new();
    let req = options("z9hG4bKo1");
    let key = h.incoming(req.clone(), udp());

    // Trying: absorbed, nothing to re-send.
    let trace = h.recv_request(req.clone(), udp());
    assert!(trace.events.is_empty() && trace.sends.is_empty());

    // Proceeding: the provisional is re-sent.
    let trying = h.respond(&key, response(&req, 100, None)).sends[0]
        .1
        .clone();
    let trace = h.recv_request(req.clone(), udp());
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1, trying);
    assert_eq!(h.layer.request(&key), Some(&req));

    // Completed: the final is re-sent; the request itself is no longer kept.
    h.run_until(secs(1));
    let ok = h.respond(&key, response(&req, 200, Some("s"))).sends[0]
        .1
        .clone();
    assert_eq!(h.layer.request(&key), None);
    h.run_until(secs(5));
    let trace = h.recv_request(req.clone(), udp());
    assert!(trace.events.is_empty());
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1, ok);
    assert_eq!(h.layer.stats().retransmissions_absorbed, 3);
    assert_eq!(h.layer.stats().retransmissions_sent, 2);

    // No retransmissions on its own; Timer J = 64·T1 after the final.
    let trace = h.run_to_end();
    assert!(trace.sends.is_empty());
    assert_eq!(trace.events(), vec![ev(secs(33), "Terminated")]);
    h.assert_quiescent();

    // After J the request is new again.
    let trace = h.recv_request(req, udp());
    assert_eq!(trace.events.len(), 1);
}

#[test]
fn non_invite_server_tcp_terminates_on_final() {
    let mut h = Harness::new();
    let req = options("z9hG4bKo2");
    let key = h.incoming(req.clone(), tcp());
    let trace = h.respond(&key, response(&req, 200, Some("s")));
    assert_eq!(trace.sends.len(), 1);
    assert_eq!(trace.sends[0].1.peer, tcp());
    assert_eq!(trace.events(), vec![ev(secs(0), "Terminated")]);
    h.assert_quiescent();
    assert!(matches!(
        h.layer
            .send_response(h.now, &key, response(&req, 200, None)),
        Err(TransactionError::UnknownTransaction(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// CANCEL, RFC 2543, configuration

#[test]
fn cancel_is_its_own_transaction_and_finds_its_invite() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKc1");
    let invite_key = h.incoming(inv.clone(), udp());
    h.respond(&invite_key, response(&inv, 180, Some("uas")));

    let c = cancel("z9hG4bKc1");
    let trace = h.recv_request(c.clone(), udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "Request CANCEL")]);
    let cancel_key = match &trace.events[0].1 {
        Event::Request { key, .. } => key.clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(cancel_key, invite_key);
    assert_eq!(h.layer.len(), 2);
    assert_eq!(h.layer.find_invite_for_cancel(&c), Some(invite_key.clone()));
    assert_eq!(
        h.layer.request(&invite_key).map(|r| r.method),
        Some(Method::Invite)
    );
    // A CANCEL for a branch we do not know targets nothing.
    assert_eq!(
        h.layer.find_invite_for_cancel(&cancel("z9hG4bKother")),
        None
    );

    // A retransmitted CANCEL is absorbed.
    let trace = h.recv_request(c.clone(), udp());
    assert!(trace.events.is_empty());

    // TU: 200 to the CANCEL, 487 to the INVITE. Then there is nothing left to cancel.
    h.respond(&cancel_key, response(&c, 200, Some("uas")));
    h.respond(&invite_key, response(&inv, 487, Some("uas")));
    assert_eq!(h.layer.find_invite_for_cancel(&c), None);
    let trace = h.recv_request(ack(&inv, "z9hG4bKc1", "uas"), udp());
    assert!(trace.events.is_empty(), "ACK for the 487 absorbed");
    let trace = h.run_to_end();
    assert_eq!(trace.events.len(), 2, "both transactions terminate");
    h.assert_quiescent();
}

fn rfc2543_request(method: &str, cseq_method: &str, to_tag: Option<&str>) -> rsip::Request {
    let to = match to_tag {
        Some(t) => format!("To: <sip:bob@biloxi.example.com>;tag={t}"),
        None => "To: <sip:bob@biloxi.example.com>".to_owned(),
    };
    parse_request(&sip(&[
        &format!("{method} sip:bob@biloxi.example.com SIP/2.0"),
        "Via: SIP/2.0/UDP old.example.com:5060",
        &to,
        "From: <sip:carol@old.example.com>;tag=legacy",
        "Call-ID: 2543-call@old.example.com",
        &format!("CSeq: 4 {cseq_method}"),
    ]))
}

#[test]
fn rfc2543_requests_without_magic_cookie_are_matched() {
    let mut h = Harness::new();
    let inv = rfc2543_request("INVITE", "INVITE", None);
    let key = h.incoming(inv.clone(), udp());
    assert_eq!(key.branch(), None);
    assert!(key.to_string().starts_with("rfc2543:"));

    // Retransmission absorbed.
    let trace = h.recv_request(inv.clone(), udp());
    assert!(trace.events.is_empty());

    // CANCEL with the same tuple finds the INVITE.
    let c = rfc2543_request("CANCEL", "CANCEL", None);
    let trace = h.recv_request(c.clone(), udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "Request CANCEL")]);
    assert_eq!(h.layer.find_invite_for_cancel(&c), Some(key.clone()));

    // ACK for the non-2xx (with the To tag we added) matches and is absorbed.
    let trace = h.respond(&key, response(&inv, 487, Some("uas")));
    assert_eq!(trace.sends.len(), 1);
    let trace = h.recv_request(rfc2543_request("ACK", "ACK", Some("uas")), udp());
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    assert_eq!(h.layer.poll_timeout(), Some(h.t0 + secs(5)), "Timer I");

    // A new CSeq is a new transaction; so is a non-cookie branch per its own tuple.
    let next = parse_request(&inv.to_string().replace("CSeq: 4", "CSeq: 5"));
    let trace = h.recv_request(next, udp());
    assert_eq!(trace.events(), vec![ev(secs(0), "Request INVITE")]);
    let with_old_branch = parse_request(
        &inv.to_string()
            .replace("old.example.com:5060", "old.example.com:5060;branch=1234"),
    );
    let old_key = TransactionKey::from_request(&with_old_branch).unwrap();
    assert_eq!(old_key.branch(), None);
    assert_ne!(old_key, key);
}

#[test]
fn custom_t1_changes_the_schedule() {
    let config = TimerConfig {
        t1: ms(100),
        ..TimerConfig::default()
    };

    // Timer A: 100, 300, 700, 1500, 3100, 6300 ms; Timer B at 64·T1 = 6.4 s.
    let mut h = Harness::with(config);
    h.send(invite("z9hG4bKt1"), udp());
    let trace = h.run_to_end();
    assert_eq!(
        trace.send_times(),
        offsets(Duration::ZERO, &[100, 300, 700, 1500, 3100, 6300])
    );
    assert_eq!(
        trace.events(),
        vec![ev(ms(6400), "Timeout"), ev(ms(6400), "Terminated")]
    );

    // Timer E: doubling until 6.4 s (T2 = 4 s is never reached).
    let mut h = Harness::with(config);
    h.send(options("z9hG4bKt2"), udp());
    let trace = h.run_to_end();
    assert_eq!(
        trace.send_times(),
        offsets(Duration::ZERO, &[100, 300, 700, 1500, 3100, 6300])
    );
    assert_eq!(
        trace.events[0],
        (
            ms(6400),
            Event::Timeout {
                key: TransactionKey::from_request(&options("z9hG4bKt2")).unwrap()
            }
        )
    );

    // Timer D keeps its 32 s floor; Timer H/L/J scale with T1.
    let mut h = Harness::with(config);
    let inv = invite("z9hG4bKt3");
    h.send(inv.clone(), udp());
    h.recv_response(response(&inv, 486, Some("x")));
    let trace = h.run_to_end();
    assert_eq!(trace.events(), vec![ev(secs(32), "Terminated")]);

    let mut h = Harness::with(config);
    let key = h.incoming(inv.clone(), udp());
    h.respond(&key, response(&inv, 200, Some("uas")));
    let trace = h.run_to_end();
    assert_eq!(
        trace.send_times(),
        offsets(Duration::ZERO, &[100, 300, 700, 1500, 3100, 6300])
    );
    assert_eq!(
        trace.events(),
        vec![ev(ms(6400), "AckTimeout"), ev(ms(6400), "Terminated")]
    );

    // Longer T1 on a slow link: Timer D follows 64·T1 once that exceeds 32 s.
    let mut h = Harness::with(TimerConfig {
        t1: secs(1),
        ..TimerConfig::default()
    });
    h.send(inv.clone(), udp());
    h.recv_response(response(&inv, 486, Some("x")));
    let trace = h.run_to_end();
    assert_eq!(trace.events(), vec![ev(secs(64), "Terminated")]);
}

// ---------------------------------------------------------------------------------------------
// Unmatched and malformed input

#[test]
fn unmatched_response_is_counted_and_dropped() {
    let mut h = Harness::new();
    let trace = h.recv_response(response(&options("z9hG4bKunknown"), 200, None));
    assert!(trace.events.is_empty() && trace.sends.is_empty());
    assert_eq!(h.layer.stats().unmatched_responses, 1);

    // Same branch, other method: also unmatched.
    let req = options("z9hG4bKu2");
    h.send(req, udp());
    let trace = h.recv_response(response(&invite("z9hG4bKu2"), 200, Some("t")));
    assert!(trace.events.is_empty());
    assert_eq!(h.layer.stats().unmatched_responses, 2);
}

#[test]
fn malformed_requests_return_typed_errors() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let base = [
        "OPTIONS sip:bob@biloxi.example.com SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKm1",
        "To: <sip:bob@biloxi.example.com>",
        "From: <sip:alice@atlanta.example.com>;tag=1",
        "Call-ID: m1",
        "CSeq: 1 OPTIONS",
    ];
    let without = |skip: usize| -> rsip::Request {
        let lines: Vec<&str> = base
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        parse_request(&sip(&lines))
    };
    let replaced = |idx: usize, line: &str| -> rsip::Request {
        let mut lines = base.to_vec();
        lines[idx] = line;
        parse_request(&sip(&lines))
    };

    let err = |layer: &mut TransactionLayer, r: rsip::Request| {
        layer.handle_request(now, r, udp()).unwrap_err()
    };
    assert!(matches!(
        err(&mut layer, without(1)),
        TransactionError::MissingVia
    ));
    assert!(matches!(
        err(&mut layer, without(5)),
        TransactionError::MissingCSeq
    ));
    assert!(matches!(
        err(&mut layer, without(4)),
        TransactionError::MissingCallId
    ));
    assert!(matches!(
        err(&mut layer, replaced(5, "CSeq: abc OPTIONS")),
        TransactionError::MalformedHeader { header: "CSeq", .. }
    ));
    assert!(matches!(
        err(&mut layer, replaced(5, "CSeq: 1 INVITE")),
        TransactionError::CSeqMethodMismatch {
            method: Method::Options,
            cseq: Method::Invite
        }
    ));
    assert!(matches!(
        err(&mut layer, replaced(1, "Via: garbage")),
        TransactionError::MalformedHeader { header: "Via", .. }
    ));
    // RFC 2543 path needs Call-ID and CSeq for the key itself.
    let legacy = replaced(1, "Via: SIP/2.0/UDP pc33.atlanta.example.com");
    let legacy_no_cseq = parse_request(&legacy.to_string().replace("CSeq: 1 OPTIONS\r\n", ""));
    assert!(matches!(
        err(&mut layer, legacy_no_cseq),
        TransactionError::MissingCSeq
    ));
    assert!(matches!(
        TransactionKey::from_request(&without(1)),
        Err(TransactionError::MissingVia)
    ));
    assert!(layer.is_empty());
    assert!(layer.poll_event().is_none());

    // Client side.
    assert!(matches!(
        layer.send_request(now, without(1), udp()),
        Err(TransactionError::MissingVia)
    ));
    assert!(matches!(
        layer.send_request(
            now,
            replaced(1, "Via: SIP/2.0/UDP pc33.atlanta.example.com"),
            udp()
        ),
        Err(TransactionError::MissingBranch)
    ));
    assert!(matches!(
        layer.send_request(
            now,
            replaced(1, "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=1234"),
            udp()
        ),
        Err(TransactionError::InvalidBranch(b)) if b == "1234"
    ));
    assert!(matches!(
        layer.send_request(now, without(5), udp()),
        Err(TransactionError::MissingCSeq)
    ));
    let inv = invite("z9hG4bKm2");
    assert!(matches!(
        layer.send_request(now, ack(&inv, "z9hG4bKm3", "t"), udp()),
        Err(TransactionError::AckNotTransactional)
    ));
    let no_from = parse_request(&inv.to_string().replace(
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n",
        "",
    ));
    assert!(matches!(
        layer.send_request(now, no_from, udp()),
        Err(TransactionError::MissingFrom)
    ));
    assert!(
        layer.poll_transmit().is_none(),
        "nothing sent for refused requests"
    );
    let key = layer.send_request(now, inv.clone(), udp()).unwrap();
    assert!(matches!(
        layer.send_request(now, inv, udp()),
        Err(TransactionError::DuplicateTransaction(k)) if k == key
    ));
}

#[test]
fn malformed_responses_return_typed_errors() {
    let mut h = Harness::new();
    let inv = invite("z9hG4bKr1");
    h.send(inv.clone(), udp());
    let ok = response(&inv, 486, Some("x")).to_string();

    let strip = |text: &str, header: &str| -> rsip::Response {
        let kept: Vec<&str> = text
            .split("\r\n")
            .filter(|l| !l.starts_with(header))
            .collect();
        parse_response(&kept.join("\r\n"))
    };
    let err =
        |h: &mut Harness, r: rsip::Response| h.layer.handle_response(h.now, r, udp()).unwrap_err();

    assert!(matches!(
        err(&mut h, strip(&ok, "Via:")),
        TransactionError::MissingVia
    ));
    assert!(matches!(
        err(&mut h, strip(&ok, "CSeq:")),
        TransactionError::MissingCSeq
    ));
    assert!(matches!(
        err(&mut h, parse_response(&ok.replace(";branch=z9hG4bKr1", ""))),
        TransactionError::MissingBranch
    ));
    assert!(matches!(
        err(&mut h, parse_response(&ok.replace("486", "701"))),
        TransactionError::InvalidStatusCode(701)
    ));
    // A final response we cannot ACK (no To) is refused and leaves the state untouched.
    assert!(matches!(
        err(&mut h, strip(&ok, "To:")),
        TransactionError::MissingTo
    ));
    let trace = h.drain();
    assert!(trace.sends.is_empty() && trace.events.is_empty());
    let trace = h.recv_response(parse_response(&ok));
    assert_eq!(trace.events(), vec![ev(secs(0), "Response 486")]);
}

/// Every message obtained by deleting one line or blanking one header value of valid
/// messages must be answered with Ok or a typed error, never a panic.
#[test]
fn mutated_messages_never_panic() {
    let inv = invite("z9hG4bKf1");
    let sources = [
        inv.to_string(),
        ack(&inv, "z9hG4bKf1", "t").to_string(),
        cancel("z9hG4bKf1").to_string(),
        rfc2543_request("INVITE", "INVITE", None).to_string(),
        response(&inv, 486, Some("t")).to_string(),
        response(&inv, 200, Some("t")).to_string(),
        response(&inv, 180, None).to_string(),
    ];
    let mut variants = Vec::new();
    for text in &sources {
        let lines: Vec<&str> = text.split("\r\n").collect();
        for i in 1..lines.len() {
            if lines[i].is_empty() {
                continue;
            }
            let mut dropped = lines.clone();
            dropped.remove(i);
            variants.push(dropped.join("\r\n"));
            if let Some((name, _)) = lines[i].split_once(':') {
                for junk in ["", "x", ";;;", "<>", "SIP/2.0/UDP", "99999999999 INVITE"] {
                    let mut changed = lines.clone();
                    let line = format!("{name}: {junk}");
                    changed[i] = &line;
                    variants.push(changed.join("\r\n"));
                }
            }
        }
    }

    let mut h = Harness::new();
    // Live transactions of every kind, so mutated messages can hit them.
    let key = h.incoming(inv.clone(), udp());
    h.respond(&key, response(&inv, 486, Some("t")));
    h.send(invite("z9hG4bKf1"), udp());
    h.send(options("z9hG4bKf2"), tcp());
    let mut parsed = 0;
    let mut opened = Vec::new();
    for text in &variants {
        let Ok(message) = rsip::SipMessage::try_from(text.as_str()) else {
            continue;
        };
        parsed += 1;
        match message {
            rsip::SipMessage::Request(r) => {
                let _ = TransactionKey::from_request(&r);
                let _ = h.layer.find_invite_for_cancel(&r);
                let _ = h.layer.handle_request(h.now, r.clone(), udp());
                let _ = h.layer.send_request(h.now, r, udp());
            }
            rsip::SipMessage::Response(r) => {
                let _ = TransactionKey::from_response(&r);
                let _ = h.layer.send_response(h.now, &key, r.clone());
                let _ = h.layer.handle_response(h.now, r, udp());
            }
        }
        for (_, event) in h.drain().events {
            if let Event::Request { key, .. } = event {
                opened.push(key);
            }
        }
    }
    assert!(parsed > 50, "only {parsed} variants parsed");

    // Whatever happened, every transaction still ends once the TU answers the requests it
    // was given and the peer answers ours.
    for key in opened {
        // The layer does not look inside a non-2xx it sends, so a bare one will do.
        let bare = rsip::Response {
            status_code: 500.into(),
            ..Default::default()
        };
        let _ = h.layer.send_response(h.now, &key, bare);
    }
    h.layer
        .handle_response(h.now, response(&inv, 486, Some("t")), udp())
        .unwrap();
    h.run_to_end();
    h.assert_quiescent();
}

// ---------------------------------------------------------------------------------------------
// Scale and determinism

#[test]
fn many_transactions_share_one_deadline_queue() {
    let mut h = Harness::new();
    let n = 2000u64;
    for i in 0..n {
        h.run_until(Duration::from_micros(i * 100));
        h.send(options(&format!("z9hG4bKbulk{i}")), udp());
        // The first transaction's Timer E stays the earliest deadline.
        assert_eq!(h.layer.poll_timeout(), Some(h.t0 + ms(500)));
    }
    assert_eq!(h.layer.len(), n as usize);
    // Answer every other one; the rest time out.
    for i in (0..n).step_by(2) {
        let resp = response(&options(&format!("z9hG4bKbulk{i}")), 200, Some("x"));
        h.layer.handle_response(h.now, resp, udp()).unwrap();
    }
    let trace = h.run_to_end();
    let timeouts = trace
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Timeout { .. }))
        .count();
    assert_eq!(timeouts as u64, n / 2);
    // Deadlines fired in order.
    assert!(trace.events.windows(2).all(|w| w[0].0 <= w[1].0));
    h.assert_quiescent();
}

#[test]
fn identical_inputs_give_identical_outputs() {
    let run = || {
        let mut h = Harness::new();
        let inv = invite("z9hG4bKd1");
        let key = h.incoming(inv.clone(), udp());
        h.respond(&key, response(&inv, 200, Some("uas")));
        h.send(options("z9hG4bKd2"), udp());
        let trace = h.run_to_end();
        (
            trace
                .sends
                .into_iter()
                .map(|(t, x)| (t, x.bytes))
                .collect::<Vec<_>>(),
            trace
                .events
                .iter()
                .map(|(t, e)| (*t, describe(e)))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}
