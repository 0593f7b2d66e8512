//! "Safe on the public internet — nothing secret leaves": SIP traces without credentials,
//! and logging that drops (and counts) rather than stalls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

/// Log output captured in memory (the `fmt` layer writes each event through a clone).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The value of `name="..."` (or `name=token`) in a digest header value.
fn digest_param(value: &str, name: &str) -> String {
    let at = value
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {value}"));
    let rest = &value[at + name.len() + 1..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap().to_string(),
        None => rest.split([',', ' ']).next().unwrap().to_string(),
    }
}

#[tokio::test]
async fn a_traced_register_shows_no_digest_credentials() {
    // #[tokio::test] runs every task of the server on this thread, so a subscriber set as
    // this thread's default sees the transport's trace events.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = start_edited(
        "",
        46000,
        &[("trace_messages = false", "trace_messages = true")],
    )
    .await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    phone
        .send(&register_request(local, "1001", "sec-reg-1", 1, None))
        .await;
    let challenge = phone.final_response().await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let auth = answer_challenge(
        &challenge_of(&challenge),
        "1001",
        "secret1001",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    );
    phone
        .send(&register_request(
            local,
            "1001",
            "sec-reg-1",
            2,
            Some(&auth),
        ))
        .await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    s.stop().await;

    // The request was traced (it is logged before it is parsed, so before the 200 left)...
    let log = captured.text();
    assert!(log.contains("siphon::sip_trace"), "{log}");
    assert!(log.contains("CSeq: 2 REGISTER"), "{log}");
    assert!(log.contains("Authorization: Digest"), "{log}");
    assert!(log.contains("username=\"1001\""), "{log}");
    // ...without what would let a listener replay or brute-force the password offline.
    let response = digest_param(&auth, "response");
    let cnonce = digest_param(&auth, "cnonce");
    assert!(response.len() >= 32, "{auth}");
    assert!(
        !log.contains(&response),
        "digest response in the trace:\n{log}"
    );
    assert!(!log.contains(&cnonce), "cnonce in the trace:\n{log}");
}

#[tokio::test]
async fn log_lines_the_writer_dropped_are_a_metric() {
    // The binary hands its non-blocking log writer's drop count over at start; here a
    // stand-in that has dropped 7 lines.
    assert!(siphon_server::log_output::count_dropped_lines_with(|| 7));
    assert!(
        !siphon_server::log_output::count_dropped_lines_with(|| 0),
        "one writer per process"
    );
    let s = start_with("", 46700).await;
    let r = http(s.http, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .lines()
            .any(|l| l == "siphon_log_lines_dropped_total 7"),
        "{}",
        r.body
    );
    s.stop().await;
}
