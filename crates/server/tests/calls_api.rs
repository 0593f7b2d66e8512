//! Programmable calls in process: a webhook route asks a real HTTP application (a small
//! server in this test) and does what it answers, or takes its fallback when the
//! application is unreachable; status events reach the application signed; the originate
//! API refuses what it must and places a call that a UDP phone answers and Siphon hangs up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request the application received.
#[derive(Debug)]
struct Seen {
    path: String,
    signature: Option<String>,
    body: Vec<u8>,
}

/// The application: answers `/route` with `{"action": "echo"}`, `/events` with 204, and
/// reports every request on the channel.
async fn app() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..i]).into_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let (n, v) = l.split_once(':')?;
                                n.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        while raw.len() < i + 4 + len {
                            let n = s.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            raw.extend_from_slice(&buf[..n]);
                        }
                        break (head, raw[i + 4..i + 4 + len].to_vec());
                    }
                };
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let signature = head.lines().find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("x-siphon-signature")
                        .then(|| v.trim().to_string())
                });
                let answer = if path == "/route" {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"action\":\"echo\"}"
                } else {
                    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = tx.send(Seen {
                    path,
                    signature,
                    body,
                });
            });
        }
    });
    (addr, rx)
}

/// The next request to `path`.
async fn next_to(rx: &mut mpsc::UnboundedReceiver<Seen>, path: &str) -> Seen {
    tokio::time::timeout(WAIT, async {
        loop {
            let seen = rx.recv().await.expect("app running");
            if seen.path == path {
                return seen;
            }
        }
    })
    .await
    .expect("the application got no such request")
}

fn config(app: SocketAddr) -> String {
    format!(
        "\n[[dialplan]]\nnumber = \"880\"\naction = \"webhook\"\nauth = \"none\"\n\
         url = \"http://{app}/route\"\nfallback = \"600\"\n\
         \n[[dialplan]]\nnumber = \"881\"\naction = \"webhook\"\nauth = \"none\"\n\
         url = \"http://127.0.0.1:1/route\"\nfallback = \"600\"\n\
         \n[events]\nurls = [\"http://{app}/events\"]\nsecret = \"k3y\"\n"
    )
}

#[tokio::test]
async fn a_webhook_route_does_what_the_application_answers_and_events_are_signed() {
    let (app_addr, mut seen) = app().await;
    let s = start_with(&config(app_addr), 47300).await;
    let phone = Phone::new(s.addr).await;
    let offer = sdp(40000, "0", "");
    phone
        .send(&invite(
            phone.local(),
            "880",
            "webhook-1",
            1,
            None,
            &offer,
            "application/sdp",
        ))
        .await;
    let asked = next_to(&mut seen, "/route").await;
    let attrs: Value = serde_json::from_slice(&asked.body).unwrap();
    assert_eq!(attrs["call_id"], "webhook-1");
    assert_eq!(attrs["number"], "880");
    assert_eq!(attrs["source"], phone.local().to_string());
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");

    // call.answered, signed with [events] secret over "t.body".
    let event = loop {
        let e = next_to(&mut seen, "/events").await;
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        if v["type"] == "call.answered" {
            break e;
        }
    };
    let sig = event.signature.expect("signed");
    assert!(siphon_server::events::sign::verify(
        b"k3y",
        &sig,
        &event.body
    ));
    assert!(!siphon_server::events::sign::verify(
        b"other",
        &sig,
        &event.body
    ));

    // The application is unreachable: the fallback route (600, echo) answers.
    phone
        .send(&invite(
            phone.local(),
            "881",
            "webhook-2",
            1,
            None,
            &offer,
            "application/sdp",
        ))
        .await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(
        metric(s.http, "siphon_webhooks_total{result=\"fallback\"}").await,
        Some(1.0)
    );
    s.stop().await;
}

#[tokio::test]
async fn originate_refuses_bad_requests_and_places_a_call() {
    let (app_addr, _seen) = app().await;
    let s = start_with(&config(app_addr), 47400).await;
    let h = s.http;
    for (body, code) in [
        ("{", 400),
        ("{\"to\": \"tel:1\"}", 400),
        ("{\"to\": \"user:1002\", \"colour\": 1}", 400),
        ("{\"to\": \"user:1002\", \"from\": \"+19998887777\"}", 403),
        ("{\"to\": \"user:1002\"}", 404),
        (
            // Click-to-call to an account with no registered phone: refused before
            // the first party is rung.
            "{\"to\": \"sip:a@127.0.0.1\", \"on_answer\": {\"action\": \"user\", \"user\": \"1002\"}}",
            404,
        ),
        (
            "{\"to\": \"sip:a@127.0.0.1\", \"on_answer\": {\"action\": \"reject\"}}",
            400,
        ),
        (
            "{\"to\": \"sip:a@127.0.0.1\", \"on_answer\": {\"action\": \"fork\", \"forks\": [{\"url\": \"ws://10.9.9.9/x\"}]}}",
            403,
        ),
    ] {
        let r = http(h, "POST", "/api/calls", None, Some(body)).await;
        assert_eq!(r.status, code, "{body}: {}", r.body);
    }

    let phone = Phone::new(s.addr).await;
    let body = format!(
        "{{\"to\": \"sip:bot@{}\", \"from\": \"1001\", \"on_answer\": {{\"action\": \"echo\"}}}}",
        phone.local()
    );
    let r = http(h, "POST", "/api/calls", None, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let call_id = r.json()["call_id"].as_str().unwrap().to_string();
    let inv = phone.recv().await;
    assert!(inv.starts_with("INVITE sip:bot@"), "{inv}");
    assert_eq!(header(&inv, "Call-ID"), Some(call_id.as_str()));
    assert!(header(&inv, "From").unwrap().contains("sip:1001@"));
    let answer = sdp(40100, "0", "a=rtpmap:0 PCMU/8000\r\n");
    let head = |name: &str| header(&inv, name).unwrap().to_string();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=bot1\r\nCall-ID: {}\r\n\
         CSeq: {}\r\nContact: <sip:bot@{}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{answer}",
        head("Via"),
        head("From"),
        head("To"),
        head("Call-ID"),
        head("CSeq"),
        phone.local(),
        answer.len()
    );
    phone.send(&ok).await;
    let ack = phone.recv().await;
    assert!(ack.starts_with("ACK "), "{ack}");
    let path = format!("/api/calls/{call_id}");
    assert!(
        eventually(|| async {
            http(h, "GET", &path, None, None).await.json()["state"] == "answered"
        })
        .await
    );
    let r = http(h, "DELETE", &path, None, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let bye = phone.recv().await;
    assert!(bye.starts_with("BYE "), "{bye}");
    s.stop().await;
}

/// A response to `inv` (status line given) with its Via, From, Call-ID and CSeq, the To
/// tagged, and `extra` header lines.
fn response_to(inv: &str, status_line: &str, extra: &str) -> String {
    let head = |name: &str| header(inv, name).unwrap().to_string();
    format!(
        "SIP/2.0 {status_line}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=trunk1\r\nCall-ID: {}\r\n\
         CSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        head("Via"),
        head("From"),
        head("To"),
        head("Call-ID"),
        head("CSeq"),
    )
}

#[tokio::test]
async fn originate_through_a_trunk_answers_its_digest_challenge() {
    let trunk = Phone::new("127.0.0.1:9".parse().unwrap()).await;
    let extra = format!(
        "\n[[trunks]]\nname = \"carrier\"\naddress = \"{}\"\ndomain = \"carrier.example\"\n\
         username = \"siphon\"\npassword = \"trunkpass\"\n",
        trunk.local()
    );
    let s = start_with(&extra, 47500).await;
    let body = "{\"to\": \"trunk:carrier/+15551234567\", \"from\": \"1001\"}";
    let r = http(s.http, "POST", "/api/calls", None, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let call_id = r.json()["call_id"].as_str().unwrap().to_string();

    let (first, from) = {
        let mut buf = vec![0u8; 65536];
        let (n, from) = tokio::time::timeout(WAIT, trunk.sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    };
    assert!(
        first.starts_with("INVITE sip:+15551234567@carrier.example"),
        "{first}"
    );
    assert!(
        header(&first, "From")
            .unwrap()
            .contains("sip:1001@carrier.example")
    );
    let challenge = response_to(
        &first,
        "407 Proxy Authentication Required",
        "Proxy-Authenticate: Digest realm=\"carrier.example\", nonce=\"n0nce\", algorithm=MD5\r\n",
    );
    trunk
        .sock
        .send_to(challenge.as_bytes(), from)
        .await
        .unwrap();
    // The ACK for the 407 (the transaction layer's), then the INVITE with credentials.
    let second = loop {
        let m = trunk.recv().await;
        if m.starts_with("INVITE ") {
            break m;
        }
        assert!(m.starts_with("ACK "), "{m}");
    };
    assert_eq!(header(&second, "Call-ID"), Some(call_id.as_str()));
    assert!(header(&second, "CSeq").unwrap().starts_with("2 INVITE"));
    let auth = header(&second, "Proxy-Authorization").expect("credentials");
    assert!(auth.contains("username=\"siphon\"") && auth.contains("nonce=\"n0nce\""));

    // The carrier refuses anyway: the call ends, and the API forgets it.
    let busy = response_to(&second, "486 Busy Here", "");
    trunk.sock.send_to(busy.as_bytes(), from).await.unwrap();
    let path = format!("/api/calls/{call_id}");
    assert!(
        eventually(|| async { http(s.http, "GET", &path, None, None).await.status == 404 }).await
    );
    s.stop().await;
}

/// A 200 OK with an SDP answer to `inv`, from `phone` (tag `tag`).
fn ok_with_sdp(inv: &str, contact: SocketAddr, tag: &str, rtp: u16) -> String {
    let answer = sdp(rtp, "0", "a=rtpmap:0 PCMU/8000\r\n");
    let head = |name: &str| header(inv, name).unwrap().to_string();
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag={tag}\r\nCall-ID: {}\r\n\
         CSeq: {}\r\nContact: <sip:x@{contact}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{answer}",
        head("Via"),
        head("From"),
        head("To"),
        head("Call-ID"),
        head("CSeq"),
        answer.len()
    )
}

#[tokio::test]
async fn a_transfer_leg_that_rings_past_the_ring_timeout_is_cancelled_and_reported_408() {
    let (app_addr, _seen) = app().await;
    let s = start_edited(
        &config(app_addr),
        47600,
        &[("ring_timeout_s = 30", "ring_timeout_s = 1")],
    )
    .await;
    let h = s.http;
    let caller = Phone::new(s.addr).await;
    let body = format!(
        "{{\"to\": \"sip:bot@{}\", \"from\": \"1001\", \"on_answer\": {{\"action\": \"echo\"}}}}",
        caller.local()
    );
    let r = http(h, "POST", "/api/calls", None, Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let call_id = r.json()["call_id"].as_str().unwrap().to_string();
    let inv = caller.recv().await;
    caller
        .send(&ok_with_sdp(&inv, caller.local(), "c1", 40200))
        .await;
    assert!(caller.recv().await.starts_with("ACK "));
    let path = format!("/api/calls/{call_id}");
    assert!(
        eventually(|| async {
            http(h, "GET", &path, None, None).await.json()["state"] == "answered"
        })
        .await
    );

    // The agent's phone rings and never answers: at [sip] ring_timeout_s (1 s here) Siphon
    // cancels it and the transfer fails with 408.
    let agent = Phone::new(s.addr).await;
    let body = format!("{{\"to\": \"sip:agent@{}\"}}", agent.local());
    let r = http(h, "POST", &format!("{path}/transfer"), None, Some(&body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let inv = agent.recv().await;
    assert!(inv.starts_with("INVITE sip:agent@"), "{inv}");
    agent.send(&response_to(&inv, "180 Ringing", "")).await;
    let cancel = agent.recv().await;
    assert!(cancel.starts_with("CANCEL sip:agent@"), "{cancel}");
    agent.send(&response_to(&cancel, "200 OK", "")).await;
    agent
        .send(&response_to(&inv, "487 Request Terminated", ""))
        .await;
    assert!(
        eventually(|| async {
            let call = http(h, "GET", &path, None, None).await.json();
            call["transfer"]["state"] == "failed" && call["transfer"]["code"] == 408
        })
        .await,
        "{}",
        http(h, "GET", &path, None, None).await.body
    );
    // The caller stays where it was: still answered, no BYE.
    assert_eq!(
        http(h, "GET", &path, None, None).await.json()["state"],
        "answered"
    );
    s.stop().await;
}
