//! One datagram (or stream buffer) through the SIP message layer.
//!
//! - `message::frame` (TCP framing) never claims more bytes than it was given, and a framed
//!   message goes on to `message::parse`.
//! - `message::parse` never panics. When it rejects a request with a response to send, that
//!   response must itself parse as a SIP response, with rsip and with our own parser (we
//!   would otherwise put garbage on the wire); our parser may only miss headers the request
//!   lacked too. Parsed with the default limits and with a tiny limit (the 513 path).
//! - A request that parses is handed to what the server does with it next: transaction key,
//!   dialog id, UAS dialog + in-dialog request, `response_to` (which must re-parse), and the
//!   registrar for REGISTER.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use siphon_sip::dialog::{Dialog, DialogId};
use siphon_sip::message::{self, Framed, ParseError, ParseLimits};
use siphon_sip::registrar::{MemoryLocationStore, Registrar, RegistrarConfig};
use siphon_sip::transaction::TransactionKey;
use siphon_sip::{Peer, Transport};

fn source() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 5070))
}

/// A response we would send must parse, as a response, with rsip (what the project's own
/// `hostile` test checks) and with our own parser. Our parser may only object that a header
/// is missing, and only for an error response: a request without From (say) gets a 400
/// that cannot have one either.
fn must_reparse_as_response(what: &str, response: &rsip::Response, input: &[u8], is_error: bool) {
    let text = response.to_string();
    match rsip::SipMessage::try_from(text.as_str()) {
        Ok(rsip::SipMessage::Response(_)) => {}
        Ok(rsip::SipMessage::Request(_)) => {
            panic!("{what} re-parsed as a request:\n{text}\ninput: {input:?}")
        }
        Err(e) => panic!(
            "{what} is not valid SIP for rsip ({e}):\n{text}\ninput: {:?}",
            String::from_utf8_lossy(input)
        ),
    }
    match message::parse(text.as_bytes(), source(), ParseLimits::default()) {
        Ok(rsip::SipMessage::Response(_)) => {}
        Ok(rsip::SipMessage::Request(_)) => {
            panic!("{what} re-parsed as a request:\n{text}\ninput: {input:?}")
        }
        Err(rejection) if is_error && matches!(rejection.error, ParseError::MissingHeader(_)) => {}
        Err(rejection) => panic!(
            "{what} does not re-parse ({}):\n{text}\ninput: {:?}",
            rejection.error,
            String::from_utf8_lossy(input)
        ),
    }
}

fn exercise_request(request: &rsip::Request, input: &[u8]) {
    let _ = TransactionKey::from_request(request);
    let _ = DialogId::for_incoming(request);
    if let Ok(mut dialog) = Dialog::new_uas(request, "fuzz-local-tag") {
        let _ = dialog.on_remote_request(request);
        let bye = dialog.request(
            rsip::Method::Bye,
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz",
            "sip:siphon@192.0.2.1:5060",
        );
        let _ = bye.to_string();
    }
    for code in [100u16, 200, 486] {
        let mut response = message::response_to(request, code, None, Some("fuzz-tag"));
        message::finish(&mut response.headers, &[]);
        if request.method != rsip::Method::Ack {
            must_reparse_as_response("response_to", &response, input, false);
        }
    }
    if request.method == rsip::Method::Register {
        let registrar = Registrar::new(
            RegistrarConfig::default(),
            Arc::new(MemoryLocationStore::new()),
        );
        let now = Instant::now();
        let peer = Peer::new(source(), Transport::Udp);
        let outcome = registrar.handle_register(now, "sip:alice@example.com", request, peer);
        let _ = (outcome.status_code(), outcome.reason_phrase().len());
        // Same REGISTER again: out of order or a refresh, never a panic.
        let _ = registrar.handle_register(now, "sip:alice@example.com", request, peer);
        let _ = registrar.lookup(now, "sip:alice@example.com");
        let _ = registrar.purge_expired(now + std::time::Duration::from_secs(7200));
    }
}

fn parse_with(data: &[u8], limits: ParseLimits) {
    match message::parse(data, source(), limits) {
        Ok(rsip::SipMessage::Request(request)) => exercise_request(&request, data),
        Ok(rsip::SipMessage::Response(response)) => {
            let _ = TransactionKey::from_response(&response);
        }
        Err(rejection) => {
            let _ = (rejection.error.status(), rejection.error.kind());
            if let Some(response) = rejection.response {
                assert_eq!(response.status_code.code(), rejection.error.status().0);
                must_reparse_as_response("error response", &response, data, true);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::default();
    match message::frame(data, limits) {
        Ok(Framed::Message(n)) => {
            assert!(
                n > 0 && n <= data.len(),
                "frame claimed {n} of {} bytes",
                data.len()
            );
            parse_with(&data[..n], limits);
        }
        Ok(Framed::Keepalive(n)) => {
            assert!(
                n > 0 && n <= data.len(),
                "keepalive of {n} of {} bytes",
                data.len()
            );
        }
        Ok(Framed::Incomplete) | Err(_) => {}
    }
    parse_with(data, limits);
    parse_with(
        data,
        ParseLimits {
            max_message_size: 64,
        },
    );
});
