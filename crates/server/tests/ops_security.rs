//! "Safe on the public internet — nothing secret leaves": SIP traces without credentials,
//! an admin API that wants its token whenever it can be reached through anything but
//! loopback, and forks attached through the API that go only to allowed services and never
//! make Siphon read a file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// One HTTP/1.1 request with extra header lines, read to the end: (status, body).
async fn request_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("HTTP response within 10 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

const HTTP_LISTEN_COMMENT: &str =
    "# Prometheus metrics (GET /metrics), health (/healthz, /readyz) and the admin API (/api/*).\n";

#[tokio::test]
async fn an_api_on_a_non_loopback_listener_needs_a_token() {
    // Reached over loopback, but the listener takes every interface: without a token the
    // API would be open to whatever forwards to it (and main refuses to start like this).
    let s = start_edited(
        "",
        46100,
        &[(
            &format!("{HTTP_LISTEN_COMMENT}listen = \"127.0.0.1:0\""),
            &format!("{HTTP_LISTEN_COMMENT}listen = \"0.0.0.0:0\""),
        )],
    )
    .await;
    assert!(s.http.ip().is_unspecified(), "{}", s.http);
    let h = SocketAddr::from(([127, 0, 0, 1], s.http.port()));
    let r = http(h, "GET", "/api/calls", None, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("token"),
        "{}",
        r.body
    );
    // Scraping and health checks stay open.
    assert_eq!(http(h, "GET", "/metrics", None, None).await.status, 200);
    assert_eq!(http(h, "GET", "/healthz", None, None).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_request_through_a_proxy_needs_the_token() {
    let s = start_with("", 46200).await;
    let h = s.http;
    // A plain loopback client is still served without a token...
    assert_eq!(request_with(h, "/api/calls", "").await.0, 200);
    // ...but one a reverse proxy relayed is not: the proxy is on loopback, its client is not.
    for header in [
        "X-Forwarded-For: 203.0.113.9\r\n",
        "Forwarded: for=203.0.113.9;proto=https\r\n",
        "X-Real-IP: 203.0.113.9\r\n",
        "x-forwarded-host: siphon.example.com\r\n",
    ] {
        let (status, body) = request_with(h, "/api/calls", header).await;
        assert_eq!(status, 403, "{header}: {body}");
        assert!(body.contains("token"), "{body}");
    }
    // With a token the headers do not matter.
    let t = start_edited(
        "",
        46300,
        &[("# token = \"change-me\"", "token = \"s3cret-token\"")],
    )
    .await;
    let (status, body) = request_with(
        t.http,
        "/api/calls",
        "X-Forwarded-For: 203.0.113.9\r\nAuthorization: Bearer s3cret-token\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
    t.stop().await;
}

async fn post_fork(h: SocketAddr, call: &str, body: &str) -> HttpResponse {
    http(
        h,
        "POST",
        &format!("/api/calls/{call}/forks"),
        None,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn api_forks_go_only_to_the_dialplans_services_by_default() {
    // The default configuration forks route 700 to ws://127.0.0.1:8090/native.
    let s = start_with("", 46400).await;
    let h = s.http;
    let _call = place_call(s.addr, "600", "sec-fork-1", "0").await;
    for url in [
        // (Every address here is on loopback: had the fork been attached, the test would
        // send nothing off this machine.)
        "ws://127.0.0.1:9/x",
        // Look-alikes of the allowed service: another port, another host, user info that
        // makes the allowed host:port the user name, another scheme.
        "ws://127.0.0.1:80900/native",
        "ws://127.0.0.10:8090/native",
        "ws://127.0.0.1:8090@127.0.0.1:9/native",
        "wss://127.0.0.1:8090/native",
    ] {
        let r = post_fork(h, "sec-fork-1", &format!("{{\"url\": \"{url}\"}}")).await;
        assert_eq!(r.status, 403, "{url}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains("fork_url_prefixes"), "{error}");
    }
    // The dialplan's own service, any path on it.
    let r = post_fork(
        h,
        "sec-fork-1",
        "{\"url\": \"ws://127.0.0.1:8090/twilio\", \"mode\": \"twilio\"}",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // No file path from the API, whatever the URL.
    for body in [
        "{\"url\": \"ws://127.0.0.1:8090/native\", \"tls_ca_file\": \"/etc/shadow\"}",
        "{\"url\": \"wss://127.0.0.1:8090/native\", \"tls_ca_file\": \"ca.pem\"}",
    ] {
        let r = post_fork(h, "sec-fork-1", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains("tls_ca_file"), "{}", r.body);
    }
    s.stop().await;
}

#[tokio::test]
async fn fork_url_prefixes_and_allow_any_fork_url_widen_what_the_api_may_fork_to() {
    let s = start_edited(
        "",
        46500,
        &[(
            "# token = \"change-me\"",
            "fork_url_prefixes = [\"ws://127.0.0.1:9/allowed/\", \"ws://LocalHost:9\"]",
        )],
    )
    .await;
    let h = s.http;
    let _call = place_call(s.addr, "600", "sec-fork-2", "0").await;
    for (url, want) in [
        ("ws://127.0.0.1:9/allowed/x?k=v", 201),
        ("ws://127.0.0.1:9/allowed/", 201),
        ("ws://127.0.0.1:9/allowedx", 403),
        ("ws://127.0.0.1:9/other", 403),
        // A prefix without a path admits the whole origin; host names match in any case.
        ("ws://localhost:9/stream", 201),
        ("ws://localhost:10/stream", 403),
        // The dialplan's services stay allowed.
        ("ws://127.0.0.1:8090/native", 201),
    ] {
        let r = post_fork(h, "sec-fork-2", &format!("{{\"url\": \"{url}\"}}")).await;
        assert_eq!(r.status, want, "{url}: {}", r.body);
    }
    s.stop().await;

    let any = start_edited(
        "",
        46600,
        &[("# token = \"change-me\"", "allow_any_fork_url = true")],
    )
    .await;
    let _call = place_call(any.addr, "600", "sec-fork-3", "0").await;
    let r = post_fork(any.http, "sec-fork-3", "{\"url\": \"ws://127.0.0.1:9/x\"}").await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Even then, no file is read on the API's say-so.
    let r = post_fork(
        any.http,
        "sec-fork-3",
        "{\"url\": \"wss://127.0.0.1:9/x\", \"tls_ca_file\": \"/etc/passwd\"}",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    any.stop().await;
}

#[test]
fn fork_url_prefixes_must_be_websocket_urls() {
    let base = siphon_server::config::EMBEDDED_DEFAULT;
    for bad in [
        "\"http://analytics.example.com/\"",
        "\"ws://\"",
        "\"ws:///path\"",
        "\"wss://user:pw@analytics.example.com/\"",
        "\"wss://analytics example.com/\"",
    ] {
        let text = base.replace(
            "# token = \"change-me\"",
            &format!("fork_url_prefixes = [{bad}]"),
        );
        let e = siphon_server::Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("fork_url_prefixes"), "{bad}: {e}");
    }
    let text = base.replace(
        "# token = \"change-me\"",
        "fork_url_prefixes = [\"wss://analytics.example.com/stream/\"]\nallow_any_fork_url = false",
    );
    siphon_server::Config::parse(&text).unwrap();
}
