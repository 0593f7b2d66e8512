//! Legs Siphon places itself (originate, the API's transfer) behave like a real B2BUA's,
//! as the far end sees them on real UDP sockets: every registered phone of an account
//! rings and the ones that lose get CANCEL (or ACK and BYE when their 2xx crossed it); a
//! trunk's digest challenge is answered; a trunk's failed address is followed by its next
//! one (SRV from a DNS server this test runs); `from` shows as the new leg's caller ID
//! when the account or trunk may present it, and is refused otherwise; the placed leg asks
//! for a session timer, Siphon refreshes it by UPDATE, and a refused refresh ends the call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::net::UdpSocket;

/// A response to `inv` with its Via, From, Call-ID and CSeq, the To tagged `tag`, and
/// `extra` header lines.
fn response_to(inv: &str, status_line: &str, tag: &str, extra: &str) -> String {
    let head = |name: &str| header(inv, name).unwrap().to_string();
    format!(
        "SIP/2.0 {status_line}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag={tag}\r\nCall-ID: {}\r\n\
         CSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        head("Via"),
        head("From"),
        head("To"),
        head("Call-ID"),
        head("CSeq"),
    )
}

/// A 200 OK with an SDP answer to `inv`, from `contact` (tag `tag`).
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

/// The next request `phone` receives whose method is `method` (other requests, such as
/// the ACK of a final non-2xx, are skipped).
async fn next_request(phone: &Phone, method: &str) -> String {
    loop {
        let m = phone.recv().await;
        if m.starts_with(&format!("{method} ")) {
            return m;
        }
        assert!(!m.starts_with("SIP/2.0"), "unexpected response {m}");
    }
}

/// `phone` registers as `user` (answering the registrar's digest challenge).
async fn register_as(phone: &Phone, user: &str, password: &str) {
    let call = format!("reg{}", phone.local().port());
    phone
        .send(&register_request(phone.local(), user, &call, 1, None))
        .await;
    let challenge = phone.recv().await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let auth = answer_challenge(
        &challenge_of(&challenge),
        user,
        password,
        "REGISTER",
        "sip:127.0.0.1",
        1,
    );
    phone
        .send(&register_request(
            phone.local(),
            user,
            &call,
            2,
            Some(&auth),
        ))
        .await;
    let ok = phone.recv().await;
    assert_eq!(status(&ok), 200, "{ok}");
}

/// `POST /api/calls` with `body`: the new call's Call-ID.
async fn originate(s: &Running, body: &str) -> String {
    let r = http(s.http, "POST", "/api/calls", None, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["call_id"].as_str().unwrap().to_string()
}

async fn state_is(s: &Running, call_id: &str, state: &str) -> bool {
    let path = format!("/api/calls/{call_id}");
    eventually(|| async { http(s.http, "GET", &path, None, None).await.json()["state"] == state })
        .await
}

#[tokio::test]
async fn every_phone_of_the_account_rings_and_the_losers_are_stopped() {
    let s = start_with("", 47700).await;
    let desk = Phone::from_ip(s.addr, "127.0.0.1").await;
    let mobile = Phone::from_ip(s.addr, "127.0.0.2").await;
    register_as(&desk, "1002", "secret1002").await;
    register_as(&mobile, "1002", "secret1002").await;

    // Both phones get their own INVITE of the same call; the desk phone answers first.
    let body = r#"{"to": "user:1002", "from": "1001", "on_answer": {"action": "echo"}}"#;
    let call_id = originate(&s, body).await;
    let at_desk = next_request(&desk, "INVITE").await;
    let at_mobile = next_request(&mobile, "INVITE").await;
    assert_eq!(header(&at_desk, "Call-ID"), Some(call_id.as_str()));
    assert_eq!(header(&at_mobile, "Call-ID"), Some(call_id.as_str()));
    assert!(at_desk.starts_with(&format!("INVITE sip:1002@{} ", desk.local())));
    assert!(at_mobile.starts_with(&format!("INVITE sip:1002@{} ", mobile.local())));
    assert_ne!(header(&at_desk, "Via"), header(&at_mobile, "Via"));
    desk.send(&response_to(&at_desk, "180 Ringing", "d1", ""))
        .await;
    mobile
        .send(&response_to(&at_mobile, "180 Ringing", "m1", ""))
        .await;
    desk.send(&ok_with_sdp(&at_desk, desk.local(), "d1", 40300))
        .await;
    assert!(next_request(&desk, "ACK").await.contains("tag=d1"));
    // The mobile is told the call was taken elsewhere.
    let cancel = next_request(&mobile, "CANCEL").await;
    assert_eq!(header(&cancel, "Call-ID"), Some(call_id.as_str()));
    assert_eq!(header(&cancel, "Via"), header(&at_mobile, "Via"));
    mobile.send(&response_to(&cancel, "200 OK", "m1", "")).await;
    mobile
        .send(&response_to(&at_mobile, "487 Request Terminated", "m1", ""))
        .await;
    assert!(next_request(&mobile, "ACK").await.contains("CSeq: 1 ACK"));
    assert!(state_is(&s, &call_id, "answered").await);

    // Second call: the mobile's 2xx crosses the CANCEL. It gets ACK and BYE; the call
    // stays with the desk phone.
    let call_id = originate(&s, body).await;
    let at_desk = next_request(&desk, "INVITE").await;
    let at_mobile = next_request(&mobile, "INVITE").await;
    desk.send(&response_to(&at_desk, "180 Ringing", "d2", ""))
        .await;
    mobile
        .send(&response_to(&at_mobile, "180 Ringing", "m2", ""))
        .await;
    desk.send(&ok_with_sdp(&at_desk, desk.local(), "d2", 40302))
        .await;
    next_request(&desk, "ACK").await;
    mobile
        .send(&ok_with_sdp(&at_mobile, mobile.local(), "m2", 40304))
        .await;
    let cancel = next_request(&mobile, "CANCEL").await;
    mobile.send(&response_to(&cancel, "200 OK", "m2", "")).await;
    let ack = next_request(&mobile, "ACK").await;
    assert!(ack.contains("tag=m2"), "{ack}");
    let bye = next_request(&mobile, "BYE").await;
    assert_eq!(header(&bye, "Call-ID"), Some(call_id.as_str()));
    assert!(bye.contains("tag=m2"), "{bye}");
    assert!(state_is(&s, &call_id, "answered").await);
    // The desk phone's call is untouched: no BYE for it.
    assert!(
        desk.recv_within(std::time::Duration::from_millis(500))
            .await
            .is_none_or(|m| !m.starts_with("BYE "))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_transfer_to_a_trunk_answers_its_challenge_with_the_caller_id_it_may_present() {
    let trunk = Phone::new("127.0.0.1:9".parse().unwrap()).await;
    let extra = format!(
        "\n[[trunks]]\nname = \"carrier\"\naddress = \"{}\"\ndomain = \"carrier.example\"\n\
         username = \"siphon\"\npassword = \"trunkpass\"\ncaller_ids = [\"+15550001111\"]\n",
        trunk.local()
    );
    let s = start_with(&extra, 47800).await;
    // A call Siphon serves (echo), answered by a UDP phone.
    let caller = Phone::new(s.addr).await;
    let body = format!(
        "{{\"to\": \"sip:bot@{}\", \"from\": \"1001\", \"on_answer\": {{\"action\": \"echo\"}}}}",
        caller.local()
    );
    let call_id = originate(&s, &body).await;
    let inv = caller.recv().await;
    caller
        .send(&ok_with_sdp(&inv, caller.local(), "c1", 40400))
        .await;
    next_request(&caller, "ACK").await;
    assert!(state_is(&s, &call_id, "answered").await);

    // Caller IDs the trunk does not list, or that are no caller ID, are refused.
    let path = format!("/api/calls/{call_id}/transfer");
    let to = "trunk:carrier/+15551234567";
    for (from, code) in [("+15550002222", 403), ("1001>\\r\\nX: y", 400)] {
        let body = format!("{{\"to\": \"{to}\", \"from\": \"{from}\"}}");
        let r = http(s.http, "POST", &path, None, Some(&body)).await;
        assert_eq!(r.status, code, "{from}: {}", r.body);
    }
    assert!(
        trunk
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );

    let body = format!("{{\"to\": \"{to}\", \"from\": \"+15550001111\"}}");
    let r = http(s.http, "POST", &path, None, Some(&body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
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
    let shown = header(&first, "From").unwrap();
    assert!(
        shown.starts_with("<sip:+15550001111@carrier.example>"),
        "{shown}"
    );
    let challenge = response_to(
        &first,
        "407 Proxy Authentication Required",
        "t1",
        "Proxy-Authenticate: Digest realm=\"carrier.example\", nonce=\"n0nce\", algorithm=MD5\r\n",
    );
    trunk
        .sock
        .send_to(challenge.as_bytes(), from)
        .await
        .unwrap();
    let second = loop {
        let m = trunk.recv().await;
        if m.starts_with("INVITE ") {
            break m;
        }
        assert!(m.starts_with("ACK "), "{m}");
    };
    assert_eq!(header(&second, "Call-ID"), header(&first, "Call-ID"));
    assert!(header(&second, "CSeq").unwrap().starts_with("2 INVITE"));
    let auth = header(&second, "Proxy-Authorization").expect("credentials");
    assert!(auth.contains("username=\"siphon\"") && auth.contains("nonce=\"n0nce\""));
    assert_eq!(header(&second, "From"), header(&first, "From"));
    let ok = ok_with_sdp(&second, trunk.local(), "t1", 40402);
    trunk.sock.send_to(ok.as_bytes(), from).await.unwrap();
    let ack = trunk.recv().await;
    assert!(
        ack.starts_with("ACK ") && ack.contains("CSeq: 2 ACK"),
        "{ack}"
    );
    let call = format!("/api/calls/{call_id}");
    assert!(
        eventually(|| async {
            let c = http(s.http, "GET", &call, None, None).await.json();
            c["transfer"]["state"] == "completed" && c["transfer"]["code"] == 200
        })
        .await,
        "{}",
        http(s.http, "GET", &call, None, None).await.body
    );
    s.stop().await;
}

/// A DNS server for `carrier.test`: `_sip._udp` SRV records to `ports` in that priority
/// order (targets `a0.carrier.test`, `a1.carrier.test`...), each target's A record
/// 127.0.0.1. Other names: NXDOMAIN.
async fn dns_server(ports: Vec<u16>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            if let Some(answer) = dns_answer(&buf[..n], &ports) {
                let _ = sock.send_to(&answer, from).await;
            }
        }
    });
    addr
}

fn dns_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn dns_answer(query: &[u8], ports: &[u16]) -> Option<Vec<u8>> {
    // The question: name labels from byte 12, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    while *query.get(i)? != 0 {
        let len = usize::from(query[i]);
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let question = &query[12..i + 5];
    let name = labels.join(".");
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    if qtype == 33 && name == "_sip._udp.carrier.test" {
        for (n, port) in ports.iter().enumerate() {
            let mut rdata = Vec::new();
            rdata.extend_from_slice(&(10 * (n as u16 + 1)).to_be_bytes());
            rdata.extend_from_slice(&0u16.to_be_bytes());
            rdata.extend_from_slice(&port.to_be_bytes());
            rdata.extend_from_slice(&dns_name(&format!("a{n}.carrier.test")));
            answers.push((33, rdata));
        }
    } else if qtype == 1 && name.ends_with(".carrier.test") && name.starts_with('a') {
        answers.push((1, vec![127, 0, 0, 1]));
    }
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]);
    let rcode: u8 = if answers.is_empty() && qtype != 28 {
        3
    } else {
        0
    };
    out.extend_from_slice(&[0x81, 0x80 | rcode]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (rtype, rdata) in answers {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

#[tokio::test]
async fn an_originated_call_to_a_trunk_fails_over_to_its_next_address() {
    let silent = Phone::new("127.0.0.1:9".parse().unwrap()).await;
    let down = Phone::new("127.0.0.1:9".parse().unwrap()).await;
    let up = Phone::new("127.0.0.1:9".parse().unwrap()).await;
    let ports = vec![
        silent.local().port(),
        down.local().port(),
        up.local().port(),
    ];
    let dns = dns_server(ports).await;
    let extra = format!(
        "\n[dns]\nservers = [\"{dns}\"]\n\
         \n[[trunks]]\nname = \"carrier\"\naddress = \"carrier.test\"\nfailover_timeout_s = 1\n"
    );
    let s = start_with(&extra, 47900).await;
    let body =
        r#"{"to": "trunk:carrier/+15551234567", "from": "1001", "on_answer": {"action": "echo"}}"#;
    // The trunk's name resolves in the background: until then the trunk has no address.
    let mut call_id = None;
    for _ in 0..100 {
        let r = http(s.http, "POST", "/api/calls", None, Some(body)).await;
        if r.status == 201 {
            call_id = r.json()["call_id"].as_str().map(str::to_string);
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let call_id = call_id.expect("the trunk never resolved");

    // The first address (priority 10) says nothing: after the trunk's failover_timeout_s
    // the second (20) is tried, which is out of service; the third (30) answers.
    let at_silent = silent.recv().await;
    assert!(
        at_silent.starts_with("INVITE sip:+15551234567@carrier.test"),
        "{at_silent}"
    );
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(WAIT, down.sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        first.starts_with("INVITE sip:+15551234567@carrier.test"),
        "{first}"
    );
    let busy = response_to(&first, "503 Service Unavailable", "x1", "");
    down.sock.send_to(busy.as_bytes(), from).await.unwrap();
    assert!(down.recv().await.starts_with("ACK "));

    let (n, from) = tokio::time::timeout(WAIT, up.sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        second.starts_with("INVITE sip:+15551234567@carrier.test"),
        "{second}"
    );
    assert_eq!(header(&second, "Call-ID"), Some(call_id.as_str()));
    assert_ne!(header(&second, "Via"), header(&first, "Via"));
    let ok = ok_with_sdp(&second, up.local(), "u1", 40500);
    up.sock.send_to(ok.as_bytes(), from).await.unwrap();
    assert!(up.recv().await.starts_with("ACK "));
    assert!(state_is(&s, &call_id, "answered").await);
    assert_eq!(
        metric(s.http, "siphon_trunk_failovers_total").await,
        Some(2.0)
    );
    s.stop().await;
}

/// The next request of `method` at `phone`, or `None` after `wait`.
async fn request_within(phone: &Phone, method: &str, wait: std::time::Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = phone.recv_within(left).await?;
        if m.starts_with(&format!("{method} ")) {
            return Some(m);
        }
    }
}

#[tokio::test]
async fn placed_legs_run_a_session_timer_that_siphon_refreshes() {
    let s = start_with("", 48000).await;
    let expires = "Session-Expires: 6;refresher=uac\r\nSupported: timer\r\nRequire: timer\r\n";
    // An originated call: the INVITE asks for a session timer that Siphon refreshes; the
    // phone's 2xx sets it to 6 s, so Siphon sends UPDATE with Session-Expires after about
    // 3 s (half the interval; the session would expire at 6 s without it).
    let phone = Phone::new(s.addr).await;
    let body = format!(
        "{{\"to\": \"sip:bot@{}\", \"from\": \"1001\", \"on_answer\": {{\"action\": \"echo\"}}}}",
        phone.local()
    );
    let call_id = originate(&s, &body).await;
    let inv = next_request(&phone, "INVITE").await;
    assert_eq!(
        header(&inv, "Session-Expires"),
        Some("1800;refresher=uac"),
        "{inv}"
    );
    let ok = ok_with_sdp(&inv, phone.local(), "p1", 40600).replacen(
        "Content-Type:",
        &format!("{expires}Content-Type:"),
        1,
    );
    phone.send(&ok).await;
    next_request(&phone, "ACK").await;
    assert!(state_is(&s, &call_id, "answered").await);
    let wait = std::time::Duration::from_secs(10);
    let update = request_within(&phone, "UPDATE", wait)
        .await
        .expect("a refresh");
    assert_eq!(header(&update, "Call-ID"), Some(call_id.as_str()));
    assert!(header(&update, "Session-Expires").is_some(), "{update}");
    // The refresh's answer sets 600 s: the caller's own timer stays quiet from here on,
    // so what ends the call below is the agent's refusal.
    let longer = "Session-Expires: 600;refresher=uac\r\nSupported: timer\r\n";
    phone
        .send(&response_to(&update, "200 OK", "p1", longer))
        .await;

    // Its caller transferred to an agent: the agent's leg gets the same. The agent refuses
    // the refresh (481: it lost the dialog), so Siphon ends the call: the caller gets BYE.
    let agent = Phone::new(s.addr).await;
    let body = format!("{{\"to\": \"sip:agent@{}\"}}", agent.local());
    let path = format!("/api/calls/{call_id}/transfer");
    let r = http(s.http, "POST", &path, None, Some(&body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let inv = next_request(&agent, "INVITE").await;
    assert_eq!(header(&inv, "Session-Expires"), Some("1800;refresher=uac"));
    let ok = ok_with_sdp(&inv, agent.local(), "a1", 40602).replacen(
        "Content-Type:",
        &format!("{expires}Content-Type:"),
        1,
    );
    agent.send(&ok).await;
    next_request(&agent, "ACK").await;
    let update = request_within(&agent, "UPDATE", wait)
        .await
        .expect("a refresh");
    assert!(header(&update, "Session-Expires").is_some(), "{update}");
    agent
        .send(&response_to(
            &update,
            "481 Call/Transaction Does Not Exist",
            "a1",
            "",
        ))
        .await;
    let bye = request_within(&phone, "BYE", wait)
        .await
        .expect("the caller's BYE");
    assert_eq!(header(&bye, "Call-ID"), Some(call_id.as_str()));
    let reason = header(&bye, "Reason").unwrap_or_default();
    assert!(reason.contains("Session expired"), "{bye}");
    s.stop().await;
}
