//! In-process integration tests: a real Siphon server on an ephemeral loopback port, driven
//! by a plain UDP/TCP client the way a phone would talk to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use siphon_server::counters::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn options_is_answered_with_allow_and_accept() {
    let s = start_with("", 31000).await;
    let phone = Phone::new(s.addr).await;
    phone.send(&options(phone.local(), "o1")).await;
    let r = phone.recv().await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(header(&r, "Allow").unwrap().contains("INVITE"));
    assert_eq!(header(&r, "Accept").unwrap(), "application/sdp");
    assert!(
        header(&r, "Via")
            .unwrap()
            .contains(&format!("rport={}", phone.local().port()))
    );
    s.stop().await;
}

#[tokio::test]
async fn hostile_datagrams_get_rfc_answers_and_the_server_keeps_serving() {
    let s = start_with("", 31100).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    let good = options(local, "base");
    let cases: Vec<(String, u16)> = vec![
        (good.replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1), 505),
        (good.replace("Max-Forwards: 70", "Max-Forwards: 0"), 483),
        (good.replace("OPTIONS", "FROBNICATE"), 501),
        (good.replace("OPTIONS", "SUBSCRIBE"), 405),
        (good.replace("OPTIONS sip:", "OPTIONS http:"), 416),
        (
            good.replace(
                "Content-Length: 0\r\n",
                &format!("X-Pad: {}\r\nContent-Length: 0\r\n", "p".repeat(20_000)),
            ),
            513,
        ),
        (good.replace("Call-ID: opt-base\r\n", ""), 400),
        (good.replace("1 OPTIONS", "one OPTIONS"), 400),
        (good.replace("1 OPTIONS", "1 INVITE"), 400),
        (good.replace("Content-Length: 0", "Content-Length: 99"), 400),
    ];
    for (text, expected) in &cases {
        phone.send(text).await;
        let r = phone.recv().await;
        assert_eq!(status(&r), *expected, "sent:\n{text}\ngot:\n{r}");
        if *expected == 400 {
            // The reason phrase names the problem.
            assert!(
                r.lines().next().unwrap().len() > "SIP/2.0 400 Bad Request".len(),
                "{r}"
            );
        }
        phone.send(&options(local, &format!("k{expected}"))).await;
        assert_eq!(status(&phone.recv().await), 200, "OPTIONS after {expected}");
    }
    // Nothing to answer: garbage, truncation, header-less, binary. Dropped and counted.
    let before = s.counters.parse_errors_total();
    let silent: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        good.as_bytes()[..40].to_vec(),
        b"OPTIONS sip:a@b SIP/2.0\r\n\r\n".to_vec(),
        vec![0xff; 300],
        (0u8..=255).collect(),
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
    ];
    for d in &silent {
        phone.send_bytes(d).await;
    }
    assert!(
        phone
            .recv_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    phone.send(&options(local, "after")).await;
    assert_eq!(status(&phone.recv().await), 200);
    assert_eq!(
        s.counters.parse_errors_total() - before,
        silent.len() as u64
    );
    assert!(s.counters.parse_errors_of("too_many_hops") >= 1);
    s.stop().await;
}

#[tokio::test]
async fn unsolicited_responses_are_dropped_and_counted() {
    let s = start_with("", 31200).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnobody\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";
    phone.send(resp).await;
    phone.send(&options(local, "u1")).await;
    assert_eq!(status(&phone.recv().await), 200);
    assert!(
        phone
            .recv_within(Duration::from_millis(200))
            .await
            .is_none()
    );
    assert_eq!(get(&s.counters.unsolicited_responses), 1);
    s.stop().await;
}

#[tokio::test]
async fn tcp_with_partial_reads_and_two_messages_in_one_write() {
    let s = start_with("", 31300).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let one = options(local, "tcp1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // Byte by byte for the first, then two at once.
    for b in one.as_bytes() {
        tcp.write_all(&[*b]).await.unwrap();
    }
    let two = options(local, "tcp2").replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        + &options(local, "tcp3").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(two.as_bytes()).await.unwrap();
    let mut got = String::new();
    let mut buf = vec![0u8; 8192];
    while got.matches("SIP/2.0 200").count() < 3 {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("TCP responses")
            .unwrap();
        assert!(n > 0, "connection closed; got {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    for id in ["opt-tcp1", "opt-tcp2", "opt-tcp3"] {
        assert!(got.contains(id), "{got}");
    }
    s.stop().await;
}

#[tokio::test]
async fn call_answer_hold_and_hangup() {
    let s = start_with("", 31400).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    let body = sdp(
        40000,
        "8 0 101",
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    );
    phone
        .send(&invite(
            local,
            "600",
            "c1",
            1,
            None,
            &body,
            "application/sdp",
        ))
        .await;
    let trying = phone.recv().await;
    assert_eq!(status(&trying), 100);
    let ok = phone.recv().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let answer = ok.split("\r\n\r\n").nth(1).unwrap();
    assert!(answer.contains("m=audio "), "{answer}");
    // The offerer listed PCMA first: it is chosen, with telephone-event.
    assert!(answer.contains("RTP/AVP 8 101"), "{answer}");
    assert!(header(&ok, "Contact").is_some());
    let tag = to_tag(&ok);
    // Without our ACK the 200 is retransmitted (T1 = 500 ms).
    let again = phone.recv().await;
    assert_eq!(status(&again), 200);
    let ack = in_dialog("ACK", local, "600", "c1", 1, &tag, "ack1");
    phone.send(&ack).await;
    // Hold: sendonly offer gets a recvonly answer.
    let hold = sdp(
        40000,
        "8 101",
        "a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n",
    );
    phone
        .send(&invite(
            local,
            "600",
            "c1",
            2,
            Some(&tag),
            &hold,
            "application/sdp",
        ))
        .await;
    let ok2 = phone.final_response().await;
    assert_eq!(status(&ok2), 200, "{ok2}");
    assert!(ok2.contains("a=recvonly"), "{ok2}");
    phone
        .send(&in_dialog("ACK", local, "600", "c1", 2, &tag, "ack2"))
        .await;
    // A BYE for an unknown dialog is 481; ours is 200.
    phone
        .send(&in_dialog("BYE", local, "600", "nope", 3, &tag, "bye0"))
        .await;
    assert_eq!(status(&phone.recv().await), 481);
    phone
        .send(&in_dialog("BYE", local, "600", "c1", 3, &tag, "bye1"))
        .await;
    let bye_ok = phone.recv().await;
    assert_eq!(status(&bye_ok), 200, "{bye_ok}");
    s.stop().await;
}

#[tokio::test]
async fn unusable_invites_are_rejected_with_the_right_code() {
    // The caller is a trunk (known by its address): an unknown number is 404 only to a
    // caller Siphon knows; strangers are challenged first (tests/trust.rs).
    let trunk = "\n[[accounts]]\nusername = \"carrier\"\nkind = \"trunk\"\nallowed_ips = [\"127.0.0.6/32\"]\n";
    let s = start_with(trunk, 31500).await;
    let phone = Phone::from_ip(s.addr, "127.0.0.6").await;
    let local = phone.local();
    let good = sdp(40000, "0", "");
    let cases = [
        ("999", "r1", good.clone(), "application/sdp", 404),
        (
            "600",
            "r2",
            sdp(40000, "18", "a=rtpmap:18 G729/8000\r\n"),
            "application/sdp",
            488,
        ),
        ("600", "r3", "hello".to_string(), "text/plain", 415),
        (
            "600",
            "r4",
            "this is not sdp".to_string(),
            "application/sdp",
            400,
        ),
    ];
    for (number, call, body, ctype, expected) in cases {
        phone
            .send(&invite(local, number, call, 1, None, &body, ctype))
            .await;
        let r = phone.final_response().await;
        assert_eq!(status(&r), expected, "{r}");
        // ACK the failure so the transaction completes.
        phone
            .send(&in_dialog(
                "ACK",
                local,
                number,
                call,
                1,
                &to_tag(&r),
                &format!("{call}1"),
            ))
            .await;
    }
    s.stop().await;
}

#[tokio::test]
async fn cancel_of_a_ringing_call_gets_487() {
    let s = start_with("", 31600).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    phone
        .send(&invite(
            local,
            "610",
            "cx",
            1,
            None,
            &sdp(40000, "0", ""),
            "application/sdp",
        ))
        .await;
    assert_eq!(status(&phone.recv().await), 100);
    assert_eq!(status(&phone.recv().await), 180);
    let cancel = format!(
        "CANCEL sip:610@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKcx1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag=fromcx\r\nTo: <sip:610@127.0.0.1>\r\n\
         Call-ID: cx\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send(&cancel).await;
    let mut codes = vec![status(&phone.recv().await), status(&phone.recv().await)];
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    // A CANCEL matching nothing is 481.
    phone.send(&cancel.replace("z9hG4bKcx1", "z9hG4bKzz")).await;
    assert_eq!(status(&phone.recv().await), 481);
    s.stop().await;
}

fn register(
    local: SocketAddr,
    user: &str,
    call: &str,
    cseq: u32,
    expires: &str,
    auth: Option<String>,
) -> String {
    register_expiring(local, user, call, cseq, expires, auth.as_deref())
}

/// Answers a 401/407 the way a phone does; returns the credentials header value.
fn answer_challenge(
    challenge_response: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    header_name: &str,
) -> String {
    answer_challenge_with(
        challenge_response,
        user,
        password,
        method,
        uri,
        header_name,
        "",
    )
}

/// Like `answer_challenge`, choosing the challenge whose text contains `algorithm`.
fn answer_challenge_with(
    challenge_response: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    header_name: &str,
    algorithm: &str,
) -> String {
    let value = challenge_response
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(header_name) && v.contains(algorithm))
                .then(|| v.trim().to_string())
        })
        .expect("challenge header");
    let challenge = siphon_sip::auth::Challenge::parse(&value).unwrap();
    challenge.authorization(
        user,
        password,
        method,
        uri,
        1,
        &siphon_sip::auth::new_cnonce(),
    )
}

#[tokio::test]
async fn register_with_digest_and_unregister() {
    // SHA-256 offered after MD5 (the default offers MD5 alone).
    let s = start_edited(
        "",
        31700,
        &[(
            "algorithms = [\"MD5\"]",
            "algorithms = [\"MD5\", \"SHA-256\"]",
        )],
    )
    .await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    // No credentials: 401 with an MD5 and a SHA-256 challenge (configuration order).
    phone
        .send(&register(local, "1001", "reg1", 1, "600", None))
        .await;
    let challenge = phone.recv().await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let algs: Vec<&str> = challenge
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate"))
        .collect();
    assert_eq!(algs.len(), 2, "{challenge}");
    // Configuration order: MD5 first for clients that take the first header.
    assert!(algs[0].contains("algorithm=MD5") && algs[1].contains("algorithm=SHA-256"));
    // Right password, answering the SHA-256 challenge: 200 listing the binding.
    let auth = answer_challenge_with(
        &challenge,
        "1001",
        "secret1001",
        "REGISTER",
        "sip:127.0.0.1",
        "WWW-Authenticate",
        "SHA-256",
    );
    assert!(auth.contains("algorithm=SHA-256"));
    phone
        .send(&register(
            local,
            "1001",
            "reg1",
            2,
            "600",
            Some(auth.clone()),
        ))
        .await;
    let ok = phone.recv().await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(
        header(&ok, "Contact").unwrap().contains("expires=600"),
        "{ok}"
    );
    // Replaying the same credentials (same nonce and nc) is refused.
    phone
        .send(&register(local, "1001", "reg1", 3, "600", Some(auth)))
        .await;
    let replay = phone.recv().await;
    assert_eq!(
        status(&replay),
        401,
        "replay must be re-challenged: {replay}"
    );
    // Too short an interval: 423 with Min-Expires.
    let auth = answer_challenge(
        &replay,
        "1001",
        "secret1001",
        "REGISTER",
        "sip:127.0.0.1",
        "WWW-Authenticate",
    );
    phone
        .send(&register(local, "1001", "reg1", 4, "10", Some(auth)))
        .await;
    let brief = phone.recv().await;
    assert_eq!(status(&brief), 423, "{brief}");
    assert_eq!(header(&brief, "Min-Expires").unwrap(), "60");
    // Remove everything with `*`.
    phone
        .send(&register(local, "1001", "reg1", 5, "*", None))
        .await;
    let c = phone.recv().await;
    let auth = answer_challenge(
        &c,
        "1001",
        "secret1001",
        "REGISTER",
        "sip:127.0.0.1",
        "WWW-Authenticate",
    );
    phone
        .send(&register(local, "1001", "reg1", 6, "*", Some(auth)))
        .await;
    let gone = phone.recv().await;
    assert_eq!(status(&gone), 200, "{gone}");
    assert!(header(&gone, "Contact").is_none(), "{gone}");
    assert_eq!(get(&s.counters.registrations), 2);
    s.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let s = start_with("", 31800).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    let mut answers = Vec::new();
    for (user, password, call) in [("1001", "wrong", "w1"), ("9999", "whatever", "w2")] {
        phone
            .send(&register(local, user, call, 1, "600", None))
            .await;
        let challenge = phone.recv().await;
        assert_eq!(status(&challenge), 401);
        let auth = answer_challenge(
            &challenge,
            user,
            password,
            "REGISTER",
            "sip:127.0.0.1",
            "WWW-Authenticate",
        );
        phone
            .send(&register(local, user, call, 2, "600", Some(auth)))
            .await;
        let r = phone.recv().await;
        answers.push(r.lines().next().unwrap().to_string());
    }
    assert_eq!(answers[0], "SIP/2.0 403 Forbidden");
    assert_eq!(answers[0], answers[1]);
    assert_eq!(get(&s.counters.auth_failures), 2);
    assert_eq!(get(&s.counters.registrations), 0);
    s.stop().await;
}

#[tokio::test]
async fn calls_to_protected_routes_are_challenged_with_407() {
    let extra = "\n[[dialplan]]\nnumber = \"800\"\naction = \"echo\"\nauth = \"digest\"\n";
    let s = start_with(extra, 31900).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    let body = sdp(40000, "0", "");
    phone
        .send(&invite(
            local,
            "800",
            "p1",
            1,
            None,
            &body,
            "application/sdp",
        ))
        .await;
    let challenge = phone.final_response().await;
    assert_eq!(status(&challenge), 407, "{challenge}");
    phone
        .send(&in_dialog(
            "ACK",
            local,
            "800",
            "p1",
            1,
            &to_tag(&challenge),
            "p11",
        ))
        .await;
    let auth = answer_challenge(
        &challenge,
        "1002",
        "secret1002",
        "INVITE",
        "sip:800@127.0.0.1",
        "Proxy-Authenticate",
    );
    let with_auth = invite(local, "800", "p1", 2, None, &body, "application/sdp").replace(
        "Content-Type:",
        &format!("Proxy-Authorization: {auth}\r\nContent-Type:"),
    );
    phone.send(&with_auth).await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    s.stop().await;
}

/// Listening on every interface (0.0.0.0, as in a container) must not leak the wildcard
/// into what peers use to reach Siphon: c=0.0.0.0 in SDP means "on hold" (RFC 3264 §8.4)
/// and a Contact of 0.0.0.0 cannot be sent to. Both must name a real address, and the
/// call's audio must flow to it.
#[tokio::test]
async fn a_wildcard_listen_address_is_never_advertised() {
    let s = start_edited(
        "",
        34300,
        &[(
            "# UDP and TCP both listen here.\nlisten = \"127.0.0.1:0\"",
            "listen = \"0.0.0.0:0\"",
        )],
    )
    .await;
    let server: SocketAddr = format!("127.0.0.1:{}", s.addr.port()).parse().unwrap();
    let phone = Phone::new(server).await;
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let body = sdp(rtp.local_addr().unwrap().port(), "0", "");
    let local = phone.local();
    phone
        .send(&invite(
            local,
            "600",
            "wild-1",
            1,
            None,
            &body,
            "application/sdp",
        ))
        .await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let contact = header(&ok, "Contact").unwrap();
    assert!(!contact.contains("0.0.0.0"), "{contact}");
    let answer = ok.split("\r\n\r\n").nth(1).unwrap();
    let c = answer
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim();
    assert_ne!(c, "0.0.0.0", "{answer}");
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let tag = to_tag(&ok);
    phone
        .send(&in_dialog("ACK", local, "600", "wild-1", 1, &tag, "ack"))
        .await;
    // Echo: what goes to the advertised address comes back.
    let remote: SocketAddr = format!("{c}:{port}").parse().unwrap();
    for i in 0..10u16 {
        let pkt = rtp_bytes(0, i == 0, i, u32::from(i) * 160, 7, &[0xff; 160]);
        rtp.send_to(&pkt, remote).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = collect_n(&rtp, 1).await;
    assert!(!got.is_empty(), "no echo from {remote}");
    s.stop().await;
}
