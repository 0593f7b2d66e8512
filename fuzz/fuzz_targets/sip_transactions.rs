//! An arbitrary sequence of network messages, TU actions and time steps through the RFC 3261
//! transaction layer (`siphon_sip::transaction::TransactionLayer`).
//!
//! Messages come either as raw bytes (through `message::parse`, as the server does) or from
//! a template with fuzzed method / branch / CSeq / To-tag / status code, so that the fuzzer
//! reaches every state of the four state machines quickly. The TU side answers the last
//! request it was given, starts client transactions, ACKs 2xx and CANCELs.
//!
//! Input (see `siphon_fuzz::Reader` for the encoding): a sequence of operations, each an
//! opcode byte (mod 10) and its arguments:
//!
//! | op | arguments | meaning |
//! |---|---|---|
//! | 0 | tcp: bool, bytes | raw datagram from the network |
//! | 1 | tcp, template | templated message from the network |
//! | 2 | ms: u16 | let time pass, firing timers in deadline order |
//! | 3 | seconds: u8 | a stall: jump ahead, fire everything due at once |
//! | 4 | status: u16 | TU answers the last request it got |
//! | 5 | which: u8, status: u16 | TU answers the n-th request it got |
//! | 6 | tcp, template | TU starts a client transaction |
//! | 7 | which: u8, status: u16, to_tag: bool | network answers the n-th client transaction |
//! | 8 | | TU ACKs the last 2xx it got |
//! | 9 | | TU looks up the INVITE the last request (a CANCEL?) targets |
//!
//! A template is method, branch, cseq, to_tag (u8 each) and status (u16: 0 for a request,
//! else a response with status 100 + status % 600).
//!
//! Checked after every step: nothing panics; `poll_transmit` / `poll_event` are drained;
//! after `handle_timeout(now)` the next deadline is strictly after `now` (a deadline at or
//! before `now` would make the driving loop spin); walking time forward fires a bounded
//! number of timers.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use siphon_fuzz::Reader;
use siphon_sip::message::{self, ParseLimits};
use siphon_sip::timers::TimerConfig;
use siphon_sip::transaction::{Event, TransactionKey, TransactionLayer};
use siphon_sip::{Peer, Transport};

const METHODS: [&str; 7] = [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO",
];

#[derive(Debug)]
struct Template {
    method: u8,
    branch: u8,
    cseq: u8,
    to_tag: u8,
    /// Some: a response with this status (mapped into 100..=699); None: a request.
    status: Option<u16>,
}

impl Template {
    fn read(r: &mut Reader<'_>) -> Self {
        let (method, branch, cseq, to_tag) = (r.u8(), r.u8(), r.u8(), r.u8());
        let status = match r.u16() {
            0 => None,
            s => Some(s),
        };
        Template {
            method,
            branch,
            cseq,
            to_tag,
            status,
        }
    }

    fn method(&self) -> &'static str {
        METHODS[usize::from(self.method) % METHODS.len()]
    }

    fn text(&self, transport: Transport) -> String {
        let method = self.method();
        // Branches 0..=7 share a few values so retransmissions and matches happen; odd
        // values above 200 are RFC 2543 style (no magic cookie).
        let branch = if self.branch > 200 && self.branch % 2 == 1 {
            format!("old{}", self.branch % 4)
        } else {
            format!("z9hG4bK{}", self.branch % 8)
        };
        let to_tag = match self.to_tag % 4 {
            0 => String::new(),
            t => format!(";tag=tt{t}"),
        };
        let cseq = u32::from(self.cseq % 4) + 1;
        let start = match self.status {
            Some(s) => format!("SIP/2.0 {} Fuzz", 100 + s % 600),
            None => format!("{method} sip:bob@biloxi.example.com SIP/2.0"),
        };
        format!(
            "{start}\r\n\
             Via: SIP/2.0/{transport} pc33.atlanta.example.com:5060;branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             To: Bob <sip:bob@biloxi.example.com>{to_tag}\r\n\
             From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
             Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }
}

#[derive(Debug)]
enum Op {
    Raw {
        bytes: Vec<u8>,
        tcp: bool,
    },
    Incoming {
        msg: Template,
        tcp: bool,
    },
    Advance {
        ms: u16,
    },
    Stall {
        seconds: u8,
    },
    Respond {
        status: u16,
    },
    RespondTo {
        which: u8,
        status: u16,
    },
    SendRequest {
        msg: Template,
        tcp: bool,
    },
    ReplyToClient {
        which: u8,
        status: u16,
        to_tag: bool,
    },
    AckLast2xx,
    FindInvite,
}

fn peer(tcp: bool) -> Peer {
    Peer::new(
        SocketAddr::from(([192, 0, 2, 10], 5060)),
        if tcp { Transport::Tcp } else { Transport::Udp },
    )
}

struct Driver {
    layer: TransactionLayer,
    now: Instant,
    server_keys: Vec<TransactionKey>,
    last_request: Option<(TransactionKey, rsip::Request)>,
    client_keys: Vec<TransactionKey>,
    last_2xx: Option<rsip::Response>,
}

impl Driver {
    fn drain(&mut self) {
        let mut n = 0usize;
        while let Some(t) = self.layer.poll_transmit() {
            assert!(!t.bytes.is_empty(), "empty transmit");
            n += 1;
            assert!(n < 100_000, "poll_transmit never runs dry");
        }
        while let Some(event) = self.layer.poll_event() {
            n += 1;
            assert!(n < 100_000, "poll_event never runs dry");
            match event {
                Event::Request { key, request, .. } => {
                    if self.server_keys.len() < 64 {
                        self.server_keys.push(key.clone());
                    }
                    self.last_request = Some((key, request));
                }
                Event::Response { response, .. }
                    if (200..300).contains(&response.status_code.code()) =>
                {
                    self.last_2xx = Some(response);
                }
                _ => {}
            }
        }
        let _ = (self.layer.len(), self.layer.is_empty(), self.layer.stats());
    }

    /// `handle_timeout(now)` must leave no deadline at or before `now`.
    fn fire(&mut self) {
        self.layer.handle_timeout(self.now);
        self.drain();
        if let Some(next) = self.layer.poll_timeout() {
            assert!(
                next > self.now,
                "poll_timeout() = now{:+?} after handle_timeout(now): the driver would spin",
                next.saturating_duration_since(self.now)
            );
        }
    }

    fn advance_to(&mut self, target: Instant) {
        let mut fired = 0u32;
        while let Some(deadline) = self.layer.poll_timeout() {
            if deadline > target {
                break;
            }
            self.now = self.now.max(deadline);
            self.fire();
            fired += 1;
            assert!(fired < 100_000, "timers keep firing without time passing");
        }
        self.now = self.now.max(target);
        self.fire();
    }

    fn incoming(&mut self, bytes: &[u8], tcp: bool) {
        let source = peer(tcp);
        match message::parse(bytes, source.addr, ParseLimits::default()) {
            Ok(rsip::SipMessage::Request(r)) => {
                let _ = self.layer.handle_request(self.now, r, source);
            }
            Ok(rsip::SipMessage::Response(r)) => {
                let _ = self.layer.handle_response(self.now, r, source);
            }
            Err(_) => {}
        }
    }

    fn respond(&mut self, key: &TransactionKey, status: u16) {
        let Some(request) = self.layer.request(key).cloned() else {
            return;
        };
        let code = 100 + status % 600;
        let mut response = message::response_to(&request, code, None, Some("uas-tag"));
        message::finish(&mut response.headers, &[]);
        let _ = self.layer.send_response(self.now, key, response);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let start = Instant::now();
    let mut d = Driver {
        layer: TransactionLayer::new(TimerConfig::default()),
        now: start,
        server_keys: Vec::new(),
        last_request: None,
        client_keys: Vec::new(),
        last_2xx: None,
    };
    let mut steps = 0;
    while !r.is_empty() && steps < 256 {
        steps += 1;
        let op = match r.u8() % 10 {
            0 => Op::Raw {
                tcp: r.bool(),
                bytes: r.bytes().to_vec(),
            },
            1 => Op::Incoming {
                tcp: r.bool(),
                msg: Template::read(&mut r),
            },
            2 => Op::Advance { ms: r.u16() },
            3 => Op::Stall { seconds: r.u8() },
            4 => Op::Respond { status: r.u16() },
            5 => Op::RespondTo {
                which: r.u8(),
                status: r.u16(),
            },
            6 => Op::SendRequest {
                tcp: r.bool(),
                msg: Template::read(&mut r),
            },
            7 => Op::ReplyToClient {
                which: r.u8(),
                status: r.u16(),
                to_tag: r.bool(),
            },
            8 => Op::AckLast2xx,
            _ => Op::FindInvite,
        };
        match op {
            Op::Raw { bytes, tcp } => d.incoming(&bytes, tcp),
            Op::Incoming { msg, tcp } => {
                let transport = if tcp { Transport::Tcp } else { Transport::Udp };
                d.incoming(msg.text(transport).as_bytes(), tcp);
            }
            Op::Advance { ms } => {
                let target = d.now + Duration::from_millis(u64::from(ms));
                d.advance_to(target);
            }
            Op::Stall { seconds } => {
                d.now += Duration::from_secs(u64::from(seconds));
                d.fire();
            }
            Op::Respond { status } => {
                if let Some((key, _)) = d.last_request.clone() {
                    d.respond(&key, status);
                }
            }
            Op::RespondTo { which, status } => {
                if !d.server_keys.is_empty() {
                    let key = d.server_keys[usize::from(which) % d.server_keys.len()].clone();
                    d.respond(&key, status);
                }
            }
            Op::SendRequest { msg, tcp } => {
                let transport = if tcp { Transport::Tcp } else { Transport::Udp };
                let text = msg.text(transport);
                if let Ok(rsip::SipMessage::Request(r)) =
                    rsip::SipMessage::try_from(text.as_bytes())
                    && let Ok(key) = d.layer.send_request(d.now, r, peer(tcp))
                    && d.client_keys.len() < 64
                {
                    d.client_keys.push(key);
                }
            }
            Op::ReplyToClient {
                which,
                status,
                to_tag,
            } => {
                if !d.client_keys.is_empty() {
                    let key = d.client_keys[usize::from(which) % d.client_keys.len()].clone();
                    if let Some(request) = d.layer.request(&key).cloned() {
                        let code = 100 + status % 600;
                        let tag = to_tag.then_some("uac-peer-tag");
                        let mut response = message::response_to(&request, code, None, tag);
                        message::finish(&mut response.headers, &[]);
                        let _ = d.layer.handle_response(d.now, response, peer(false));
                    }
                }
            }
            Op::AckLast2xx => {
                if let Some(response) = d.last_2xx.take() {
                    let text = format!(
                        "ACK sip:bob@biloxi.example.com SIP/2.0\r\n\
                         Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bKack\r\n\
                         Max-Forwards: 70\r\n\
                         {}\r\nContent-Length: 0\r\n\r\n",
                        response
                            .headers
                            .iter()
                            .filter(|h| matches!(
                                h,
                                rsip::Header::From(_)
                                    | rsip::Header::To(_)
                                    | rsip::Header::CallId(_)
                            ))
                            .map(|h| h.to_string())
                            .collect::<Vec<_>>()
                            .join("\r\n")
                    );
                    if let Ok(rsip::SipMessage::Request(ack)) =
                        rsip::SipMessage::try_from(text.as_bytes())
                    {
                        d.layer.send_ack_for_2xx(ack, peer(false));
                    }
                }
            }
            Op::FindInvite => {
                if let Some((_, request)) = &d.last_request {
                    let _ = d.layer.find_invite_for_cancel(request);
                }
            }
        }
        d.drain();
    }
    // Run every transaction to completion: with no more input, everything must terminate
    // within 64·T1 + Timer D/K slack, and then no deadline remains.
    let end = d.now + Duration::from_secs(600);
    d.advance_to(end);
    assert!(
        d.layer.poll_timeout().is_none(),
        "timers still pending 10 minutes after the last input"
    );
});
