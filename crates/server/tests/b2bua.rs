//! Calls between registered phones through a real server (the `user` action): one test
//! phone registers as 1002, another calls 1002, and each checks what a person at that
//! phone would notice — it rings, the call connects, audio goes both ways, hanging up on
//! either side ends the other, busy and cancel reach the caller.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use siphon_media::g711::G711;
use tokio::net::UdpSocket;

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// The RTP address in an SDP body.
fn sdp_addr(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    format!("{ip}:{port}").parse().unwrap()
}

/// The payload types of an SDP body's audio line.
fn sdp_pts(sdp: &str) -> Vec<u8> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split_whitespace()
        .skip(2)
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Answers a 401/407 the way a phone does.
fn credentials(challenge: &str, header_name: &str, user: &str, method: &str, uri: &str) -> String {
    let value = headers(challenge, header_name)
        .into_iter()
        .find(|v| v.contains("MD5"))
        .expect("MD5 challenge");
    let password = format!("secret{user}");
    siphon_sip::auth::Challenge::parse(value)
        .unwrap()
        .authorization(
            user,
            &password,
            method,
            uri,
            1,
            &siphon_sip::auth::new_cnonce(),
        )
}

/// A phone registered as `user` (digest auth), with an RTP socket.
struct Callee {
    phone: Phone,
    rtp: UdpSocket,
}

async fn register(server: SocketAddr, user: &str) -> Callee {
    let phone = Phone::new(server).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = phone.local();
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bKreg{user}{cseq}{port};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@127.0.0.1>;tag=r{user}\r\n\
             To: <sip:{user}@127.0.0.1>\r\n\
             Call-ID: reg-{user}-{port}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Expires: 600\r\n{auth}\
             Content-Length: 0\r\n\r\n",
            port = local.port()
        )
    };
    phone.send(&register(1, "")).await;
    let challenge = phone.recv().await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let auth = credentials(
        &challenge,
        "WWW-Authenticate",
        user,
        "REGISTER",
        "sip:127.0.0.1",
    );
    phone
        .send(&register(2, &format!("Authorization: {auth}\r\n")))
        .await;
    let ok = phone.recv().await;
    assert_eq!(status(&ok), 200, "{ok}");
    Callee { phone, rtp }
}

impl Callee {
    /// The next request Siphon sends this phone with `method` (skipping others).
    async fn expect(&self, method: &str) -> String {
        loop {
            let msg = self.phone.recv().await;
            if msg.starts_with(&format!("{method} ")) {
                return msg;
            }
        }
    }

    /// Sends a response to `request` from this phone (with its To tag and, for 2xx to an
    /// INVITE, its SDP answer).
    async fn respond(&self, request: &str, code: u16, sdp: Option<&str>) {
        let mut text = format!("SIP/2.0 {code} Whatever\r\n");
        for via in headers(request, "Via") {
            text.push_str(&format!("Via: {via}\r\n"));
        }
        let to = headers(request, "To")[0];
        let to = if to.contains("tag=") {
            to.to_string()
        } else {
            format!("{to};tag=callee")
        };
        text.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:1002@{}>\r\n",
            headers(request, "From")[0],
            headers(request, "Call-ID")[0],
            headers(request, "CSeq")[0],
            self.phone.local()
        ));
        let body = sdp.unwrap_or("");
        if !body.is_empty() {
            text.push_str("Content-Type: application/sdp\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.phone.send(&text).await;
    }

    fn answer_sdp(&self, pt: &str, rtpmap: &str) -> String {
        sdp(
            self.rtp.local_addr().unwrap().port(),
            &format!("{pt} 101"),
            &format!(
                "a=rtpmap:{rtpmap}\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
            ),
        )
    }

    /// A BYE from this phone in the dialog `invite` set up.
    fn bye(&self, invite: &str) -> String {
        let target = headers(invite, "Contact")[0]
            .trim_start_matches('<')
            .trim_end_matches('>');
        format!(
            "BYE {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch=z9hG4bKcalleebye;rport\r\n\
             Max-Forwards: 70\r\n\
             From: {};tag=callee\r\n\
             To: {}\r\n\
             Call-ID: {}\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            self.phone.local(),
            headers(invite, "To")[0],
            headers(invite, "From")[0],
            headers(invite, "Call-ID")[0],
        )
    }
}

/// A caller's INVITE to `number` with digest auth: the first attempt gets 407, which is
/// acknowledged, and the second carries credentials. Returns the phone and its RTP socket.
async fn call(server: SocketAddr, number: &str, call_id: &str, pts: &str) -> (Phone, UdpSocket) {
    call_from(server, number, call_id, pts, "1001").await
}

/// `call` with `from_user` in the From (1001's credentials all the same).
async fn call_from(
    server: SocketAddr,
    number: &str,
    call_id: &str,
    pts: &str,
    from_user: &str,
) -> (Phone, UdpSocket) {
    let phone = Phone::new(server).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = phone.local();
    let extra = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";
    let offer = sdp(rtp.local_addr().unwrap().port(), pts, extra);
    let first = invite(local, number, call_id, 1, None, &offer, "application/sdp")
        .replace("sip:tester@", &format!("sip:{from_user}@"));
    phone.send(&first).await;
    let challenge = phone.final_response().await;
    assert_eq!(status(&challenge), 407, "{challenge}");
    phone.send(&ack_for(&first, &challenge)).await;
    let auth = credentials(
        &challenge,
        "Proxy-Authenticate",
        "1001",
        "INVITE",
        &format!("sip:{number}@127.0.0.1"),
    );
    let second = invite(local, number, call_id, 2, None, &offer, "application/sdp")
        .replace("sip:tester@", &format!("sip:{from_user}@"))
        .replace(
            "Content-Type:",
            &format!("Proxy-Authorization: {auth}\r\nContent-Type:"),
        );
    phone.send(&second).await;
    (phone, rtp)
}

/// The caller's in-dialog request (ACK or BYE) after a 200 with To tag `tag`.
fn caller_in_dialog(method: &str, phone: &Phone, number: &str, call_id: &str, tag: &str) -> String {
    in_dialog(
        method,
        phone.local(),
        number,
        call_id,
        2,
        tag,
        &format!("{method}{call_id}"),
    )
    .replace("sip:tester@", "sip:1001@")
}

/// Sends `frames` as one RTP stream from `sock` to `dest`, 20 ms apart.
async fn send_stream(sock: &UdpSocket, dest: SocketAddr, pt: u8, ssrc: u32, frames: &[Vec<u8>]) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (n, payload) in frames.iter().enumerate() {
        tick.tick().await;
        let pkt = rtp_bytes(
            pt,
            n == 0,
            100 + n as u16,
            8000 + 160 * n as u32,
            ssrc,
            payload,
        );
        sock.send_to(&pkt, dest).await.unwrap();
    }
}

/// Like [`send_stream`], but `ahead` frames early: the first `ahead + 1` at once, then one
/// every 20 ms. For forks of a bridged call, whose audio is put in time by RTP timestamp
/// and handed out 60-80 ms after its slot: a packet later than that is dropped (by design),
/// so a frame sent on time would miss its slot whenever this machine stalls the sender for
/// longer. Sent `ahead` frames early, a packet still lands in its slot after a stall of up to
/// `ahead` × 20 ms more (8 frames: 220 ms), and still fits the 320 ms the fork looks ahead.
async fn send_stream_ahead(
    sock: &UdpSocket,
    dest: SocketAddr,
    pt: u8,
    ssrc: u32,
    frames: &[Vec<u8>],
    ahead: usize,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.tick().await; // the first tick is immediate
    for (n, payload) in frames.iter().enumerate() {
        if n > ahead {
            tick.tick().await;
        }
        let pkt = rtp_bytes(
            pt,
            n == 0,
            100 + n as u16,
            8000 + 160 * n as u32,
            ssrc,
            payload,
        );
        sock.send_to(&pkt, dest).await.unwrap();
    }
}

/// A caller to 1002 and a registered 1002, talking: returns both with the caller's dialog
/// tag, Siphon's RTP addresses for each and the INVITE the callee got.
struct Connected {
    caller: Phone,
    caller_rtp: UdpSocket,
    callee: Callee,
    tag: String,
    caller_dest: SocketAddr,
    callee_dest: SocketAddr,
    invite: String,
}

async fn connect(s: &Running, call_id: &str, caller_pts: &str, callee: (&str, &str)) -> Connected {
    connect_to(s, "1002", call_id, caller_pts, callee).await
}

async fn connect_to(
    s: &Running,
    number: &str,
    call_id: &str,
    caller_pts: &str,
    callee: (&str, &str),
) -> Connected {
    let phone = register(s.addr, "1002").await;
    let (caller, caller_rtp) = call(s.addr, number, call_id, caller_pts).await;
    let invite = phone.expect("INVITE").await;
    phone.respond(&invite, 180, None).await;
    let ringing = caller.final_response().await;
    assert_eq!(status(&ringing), 180, "{ringing}");
    let answer = phone.answer_sdp(callee.0, callee.1);
    phone.respond(&invite, 200, Some(&answer)).await;
    let ok = caller.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let tag = to_tag(&ok);
    caller
        .send(&caller_in_dialog("ACK", &caller, number, call_id, &tag))
        .await;
    // Siphon acknowledges the callee's 200 with an ACK of its own.
    let ack = phone.expect("ACK").await;
    assert_eq!(headers(&ack, "Call-ID"), headers(&invite, "Call-ID"));
    Connected {
        caller,
        caller_rtp,
        callee: phone,
        tag,
        caller_dest: sdp_addr(body(&ok)),
        callee_dest: sdp_addr(body(&invite)),
        invite,
    }
}

#[tokio::test]
async fn phones_talk_through_siphon_and_the_caller_hangs_up() {
    let s = start_with("", 36000).await;
    let c = connect(&s, "b2b-talk", "0 8 101", ("0", "0 PCMU/8000")).await;
    // Siphon's INVITE is its own leg: its own Call-ID, the caller's identity, our offer.
    assert_ne!(headers(&c.invite, "Call-ID")[0], "b2b-talk");
    assert!(
        headers(&c.invite, "From")[0].contains("sip:1001@"),
        "{}",
        c.invite
    );
    assert!(
        c.invite
            .starts_with(&format!("INVITE sip:1002@{} ", c.callee.phone.local()))
    );
    assert_eq!(
        sdp_pts(body(&c.invite))[0],
        0,
        "caller's codec offered first"
    );
    // Both RTP addresses are Siphon's (media anchored), on different ports.
    assert_ne!(c.caller_dest, c.callee_dest);

    let from_caller: Vec<Vec<u8>> = (0..50).map(|n| speech_like(G711::Pcmu, n)).collect();
    let from_callee: Vec<Vec<u8>> = (50..100).map(|n| speech_like(G711::Pcmu, n)).collect();
    let settle = Duration::from_millis(200);
    let (got_callee, got_caller, _, _) = tokio::join!(
        collect_until(&c.callee.rtp, settle, |g| g.len() >= from_caller.len()),
        collect_until(&c.caller_rtp, settle, |g| g.len() >= from_callee.len()),
        send_stream(&c.caller_rtp, c.caller_dest, 0, 0x1111, &from_caller),
        send_stream(&c.callee.rtp, c.callee_dest, 0, 0x2222, &from_callee),
    );
    // Each side hears exactly what the other said, in order, from Siphon's address.
    let heard: Vec<Vec<u8>> = got_callee.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(heard, from_caller, "callee heard {} frames", heard.len());
    let heard: Vec<Vec<u8>> = got_caller.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(heard, from_callee, "caller heard {} frames", heard.len());
    assert!(
        got_callee
            .iter()
            .all(|p| p.from == c.callee_dest && p.pt == 0)
    );
    assert!(
        got_caller
            .iter()
            .all(|p| p.from == c.caller_dest && p.pt == 0)
    );
    // Re-stamped: Siphon's own SSRC, continuous numbering and 20 ms timestamps.
    for got in [&got_callee, &got_caller] {
        assert!(
            got.iter()
                .all(|p| p.ssrc == got[0].ssrc && p.ssrc != 0x1111 && p.ssrc != 0x2222)
        );
        for w in got.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
        }
    }

    // A DTMF key press from the caller reaches the callee as telephone-event.
    let event = rtp_bytes(101, true, 150, 16_000, 0x1111, &[5, 0x0a, 0, 160]);
    c.caller_rtp.send_to(&event, c.caller_dest).await.unwrap();
    let got = collect_until(&c.callee.rtp, Duration::ZERO, |g| {
        g.iter().any(|p| p.pt == 101)
    })
    .await;
    assert!(
        got.iter()
            .any(|p| p.pt == 101 && p.payload == [5, 0x0a, 0, 160]),
        "{got:?}"
    );
    // Siphon sees the key press once: counted, logged, and given to any forks.
    assert_eq!(siphon_server::counters::get(&s.counters.dtmf_events), 1);

    // The caller hangs up: 200 to its BYE, and the callee gets a BYE.
    c.caller
        .send(
            &caller_in_dialog("BYE", &c.caller, "1002", "b2b-talk", &c.tag)
                .replace("CSeq: 2", "CSeq: 3"),
        )
        .await;
    assert_eq!(status(&c.caller.recv().await), 200);
    let bye = c.callee.expect("BYE").await;
    assert_eq!(headers(&bye, "Call-ID"), headers(&c.invite, "Call-ID"));
    c.callee.respond(&bye, 200, None).await;
    s.stop().await;
}

#[tokio::test]
async fn the_callee_hangs_up_and_the_caller_gets_bye() {
    let s = start_with("", 36100).await;
    let c = connect(&s, "b2b-calleebye", "0 101", ("0", "0 PCMU/8000")).await;
    c.callee.phone.send(&c.callee.bye(&c.invite)).await;
    let ok = c.callee.phone.recv().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let bye = c.caller.recv().await;
    assert!(bye.starts_with("BYE "), "{bye}");
    assert_eq!(headers(&bye, "Call-ID")[0], "b2b-calleebye");
    // The call is gone: a second BYE from the caller finds nothing.
    c.caller
        .send(
            &caller_in_dialog("BYE", &c.caller, "1002", "b2b-calleebye", &c.tag)
                .replace("CSeq: 2", "CSeq: 3"),
        )
        .await;
    // The caller may also get Siphon's BYE again (this test never answered it).
    let mut codes = Vec::new();
    while !codes.contains(&481) {
        let Some(m) = c.caller.recv_within(WAIT).await else {
            break;
        };
        codes.push(status(&m));
    }
    assert!(codes.contains(&481), "{codes:?}");
    s.stop().await;
}

#[tokio::test]
async fn pcmu_caller_and_pcma_callee_are_transcoded() {
    let s = start_with("", 36200).await;
    let c = connect(&s, "b2b-transcode", "0 101", ("8", "8 PCMA/8000")).await;
    let from_caller: Vec<Vec<u8>> = (0..25).map(|n| speech_like(G711::Pcmu, n)).collect();
    let from_callee: Vec<Vec<u8>> = (0..25).map(|n| speech_like(G711::Pcma, n + 7)).collect();
    let settle = Duration::from_millis(200);
    let (got_callee, got_caller, _, _) = tokio::join!(
        collect_until(&c.callee.rtp, settle, |g| g.len() >= from_caller.len()),
        collect_until(&c.caller_rtp, settle, |g| g.len() >= from_callee.len()),
        send_stream(&c.caller_rtp, c.caller_dest, 0, 0x1111, &from_caller),
        send_stream(&c.callee.rtp, c.callee_dest, 8, 0x2222, &from_callee),
    );
    let convert = |frames: &[Vec<u8>], from: G711, to: G711| -> Vec<Vec<u8>> {
        frames
            .iter()
            .map(|f| {
                f.iter()
                    .map(|b| to.encode_sample(from.decode_sample(*b)))
                    .collect()
            })
            .collect()
    };
    // The callee gets A-law (PT 8) carrying the caller's µ-law audio, and the reverse.
    assert!(got_callee.iter().all(|p| p.pt == 8));
    let heard: Vec<Vec<u8>> = got_callee.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(heard, convert(&from_caller, G711::Pcmu, G711::Pcma));
    assert!(got_caller.iter().all(|p| p.pt == 0));
    let heard: Vec<Vec<u8>> = got_caller.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(heard, convert(&from_callee, G711::Pcma, G711::Pcmu));
    s.stop().await;
}

#[tokio::test]
async fn busy_callee_gives_the_caller_486() {
    let s = start_with("", 36300).await;
    let callee = register(s.addr, "1002").await;
    let (caller, _rtp) = call(s.addr, "1002", "b2b-busy", "0 101").await;
    let invite = callee.expect("INVITE").await;
    callee.respond(&invite, 486, None).await;
    // Siphon acknowledges the 486 (same branch, as for any non-2xx).
    let ack = callee.expect("ACK").await;
    assert_eq!(headers(&ack, "Call-ID"), headers(&invite, "Call-ID"));
    let busy = caller.final_response().await;
    assert_eq!(status(&busy), 486, "{busy}");
    s.stop().await;
}

#[tokio::test]
async fn caller_cancel_stops_the_ringing_phone() {
    let s = start_with("", 36400).await;
    let callee = register(s.addr, "1002").await;
    let (caller, _rtp) = call(s.addr, "1002", "b2b-cancel", "0 101").await;
    let invite = callee.expect("INVITE").await;
    callee.respond(&invite, 180, None).await;
    assert_eq!(status(&caller.final_response().await), 180);
    let local = caller.local();
    let cancel = format!(
        "CANCEL sip:1002@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKb2b-cancel2;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1001@127.0.0.1>;tag=fromb2b-cancel\r\n\
         To: <sip:1002@127.0.0.1>\r\n\
         Call-ID: b2b-cancel\r\n\
         CSeq: 2 CANCEL\r\n\
         Content-Length: 0\r\n\r\n"
    );
    caller.send(&cancel).await;
    let mut codes = vec![status(&caller.recv().await), status(&caller.recv().await)];
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    // The phone stops ringing: it gets a CANCEL for Siphon's INVITE.
    let cancel = callee.expect("CANCEL").await;
    assert_eq!(headers(&cancel, "Call-ID"), headers(&invite, "Call-ID"));
    assert_eq!(headers(&cancel, "Via")[0], headers(&invite, "Via")[0]);
    callee.respond(&cancel, 200, None).await;
    callee.respond(&invite, 487, None).await;
    s.stop().await;
}

#[tokio::test]
async fn every_registered_phone_rings_and_the_first_answer_wins() {
    let s = start_with("", 36500).await;
    let desk = register(s.addr, "1002").await;
    let mobile = register(s.addr, "1002").await;
    let (caller, _rtp) = call(s.addr, "1002", "b2b-fork", "0 101").await;
    let desk_invite = desk.expect("INVITE").await;
    let mobile_invite = mobile.expect("INVITE").await;
    desk.respond(&desk_invite, 180, None).await;
    mobile.respond(&mobile_invite, 180, None).await;
    let answer = mobile.answer_sdp("0", "0 PCMU/8000");
    mobile.respond(&mobile_invite, 200, Some(&answer)).await;
    // Each ringing phone's 180 reaches the caller; then the answer.
    let mut ok = caller.final_response().await;
    while status(&ok) == 180 {
        ok = caller.final_response().await;
    }
    assert_eq!(status(&ok), 200, "{ok}");
    mobile.expect("ACK").await;
    // The desk phone stops ringing.
    let cancel = desk.expect("CANCEL").await;
    assert_eq!(
        headers(&cancel, "Call-ID"),
        headers(&desk_invite, "Call-ID")
    );
    s.stop().await;
}

#[tokio::test]
async fn unanswered_call_times_out_with_480_and_unregistered_user_is_480() {
    let route = "\n[[dialplan]]\nnumber = \"2002\"\naction = \"user\"\nuser = \"1002\"\nauth = \"none\"\nring_timeout_s = 1\n";
    let s = start_with(route, 36600).await;
    // Nobody registered as 1002 yet.
    let caller = Phone::new(s.addr).await;
    let offer = sdp(4000, "0", "");
    let first = invite(
        caller.local(),
        "2002",
        "b2b-nobody",
        1,
        None,
        &offer,
        "application/sdp",
    );
    caller.send(&first).await;
    let unavailable = caller.final_response().await;
    assert_eq!(status(&unavailable), 480, "{unavailable}");
    caller.send(&ack_for(&first, &unavailable)).await;

    let callee = register(s.addr, "1002").await;
    caller
        .send(&invite(
            caller.local(),
            "2002",
            "b2b-noanswer",
            1,
            None,
            &offer,
            "application/sdp",
        ))
        .await;
    let invite_in = callee.expect("INVITE").await;
    callee.respond(&invite_in, 180, None).await;
    let mut last = caller.final_response().await;
    while status(&last) == 180 {
        last = caller.final_response().await;
    }
    assert_eq!(status(&last), 480, "{last}");
    callee.expect("CANCEL").await;
    s.stop().await;
}

#[tokio::test]
async fn a_cdr_line_per_call() {
    let dir = std::env::temp_dir().join(format!("siphon-cdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cdr.jsonl");
    let _ = std::fs::remove_file(&path);
    let extra = format!("\n[cdr]\npath = \"{}\"\n", path.display());
    let s = start_with(&extra, 36700).await;
    let c = connect(&s, "b2b-cdr", "0 101", ("8", "8 PCMA/8000")).await;
    let frames: Vec<Vec<u8>> = (0..10).map(|n| speech_like(G711::Pcmu, n)).collect();
    send_stream(&c.caller_rtp, c.caller_dest, 0, 0x1111, &frames).await;
    // Hang up once all 10 have been relayed (then both legs have counted them).
    let relayed = collect_n(&c.callee.rtp, frames.len()).await;
    assert_eq!(relayed.len(), frames.len());
    c.callee.phone.send(&c.callee.bye(&c.invite)).await;
    assert_eq!(status(&c.callee.phone.recv().await), 200);
    // And a call Siphon answers itself.
    let echo = place_call(s.addr, "600", "cdr-echo", "0").await;
    echo.phone
        .send(&in_dialog(
            "BYE",
            echo.phone.local(),
            "600",
            "cdr-echo",
            2,
            &echo.tag,
            "cdrbye",
        ))
        .await;
    assert_eq!(status(&echo.phone.recv().await), 200);
    let cdr_lines = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    eventually(|| std::future::ready(cdr_lines().len() >= 2)).await;
    let lines = cdr_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let bridged: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(bridged["call_id"], "b2b-cdr");
    assert_eq!(bridged["route"], "1002");
    assert_eq!(bridged["action"], "user");
    assert_eq!(bridged["result"], 200);
    assert_eq!(bridged["hung_up_by"], "callee");
    assert!(bridged["caller"].as_str().unwrap().contains("sip:1001@"));
    assert!(bridged["answer"].as_str().unwrap().ends_with('Z'));
    assert_eq!(bridged["caller_leg"]["codec"], "PCMU");
    assert_eq!(bridged["callee_leg"]["codec"], "PCMA");
    assert_eq!(bridged["caller_leg"]["packets_in"], 10);
    assert_eq!(bridged["callee_leg"]["packets_out"], 10);
    assert_eq!(bridged["forks"], serde_json::json!([]));
    let served: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(served["call_id"], "cdr-echo");
    assert_eq!(served["action"], "echo");
    assert_eq!(served["hung_up_by"], "caller");
    assert!(served["callee_leg"].is_null());
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_forked_bridged_call_streams_both_phones_in_stereo() {
    use siphon_analytics::{Mode, Options};
    let opts = Options {
        echo: false,
        log_levels: false,
        ..Options::default()
    };
    let svc = siphon_analytics::bind("127.0.0.1:0", opts).await.unwrap();
    let cdr = std::env::temp_dir().join(format!("siphon-stereo-cdr-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&cdr);
    let route = format!(
        "\n[[dialplan]]\nnumber = \"3002\"\naction = \"user\"\nuser = \"1002\"\n\
         [[dialplan.forks]]\nurl = \"{}\"\nmode = \"native\"\nencoding = \"l16\"\n\
         sample_rate = 8000\ntracks = \"both\"\n[cdr]\npath = \"{}\"\n",
        svc.url(Mode::Native),
        cdr.display()
    );
    let s = start_with(&route, 36900).await;
    let c = connect_to(&s, "3002", "b2b-stereo", "0 101", ("8", "8 PCMA/8000")).await;
    let from_caller: Vec<Vec<u8>> = (0..50).map(|n| speech_like(G711::Pcmu, n)).collect();
    let from_callee: Vec<Vec<u8>> = (0..50)
        .map(|n| speech_like(G711::Pcma, 3 * n + 1))
        .collect();
    tokio::join!(
        send_stream_ahead(&c.caller_rtp, c.caller_dest, 0, 0x1111, &from_caller, 8),
        send_stream_ahead(&c.callee.rtp, c.callee_dest, 8, 0x2222, &from_callee, 8),
    );
    // Hang up once the service has every frame of both (they reach it some 80 ms after
    // their slot, or later on a loaded machine).
    let spoken = |r: &siphon_analytics::StreamRecord| -> (usize, usize) {
        let samples: Vec<i16> = r
            .audio_bytes(None)
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let count = |channel: Vec<i16>| {
            channel
                .chunks(160)
                .filter(|f| f.iter().any(|s| *s != 0))
                .count()
        };
        (
            count(samples.iter().step_by(2).copied().collect()),
            count(samples.iter().skip(1).step_by(2).copied().collect()),
        )
    };
    let all_in = eventually(|| {
        let done = svc.streams().iter().any(|r| {
            let (left, right) = spoken(r);
            left >= 50 && right >= 50
        });
        std::future::ready(done)
    })
    .await;
    assert!(
        all_in,
        "the service got {:?} frames",
        svc.streams().iter().map(spoken).collect::<Vec<_>>()
    );
    c.caller
        .send(
            &caller_in_dialog("BYE", &c.caller, "3002", "b2b-stereo", &c.tag)
                .replace("CSeq: 2", "CSeq: 3"),
        )
        .await;
    assert_eq!(status(&c.caller.recv().await), 200);
    eventually(|| std::future::ready(svc.streams().iter().any(|r| r.stop.is_some()))).await;
    let record = svc
        .streams()
        .into_iter()
        .find(|r| r.stop.is_some())
        .expect("the fork's stop");
    // Interleaved 16-bit little-endian stereo: left the caller, right the callee.
    let audio = record.audio_bytes(None);
    let samples: Vec<i16> = audio
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let frames = |channel: &[i16]| -> Vec<(usize, Vec<i16>)> {
        channel
            .chunks(160)
            .enumerate()
            .filter(|(_, f)| f.iter().any(|s| *s != 0))
            .map(|(i, f)| (i, f.to_vec()))
            .collect()
    };
    let decode = |sent: &[Vec<u8>], law: G711| -> Vec<Vec<i16>> {
        sent.iter()
            .map(|f| f.iter().map(|b| law.decode_sample(*b)).collect())
            .collect()
    };
    let (l, r) = (frames(&left), frames(&right));
    // Each channel carries exactly what that phone sent, bit-exact after G.711 decode...
    let l_audio: Vec<Vec<i16>> = l.iter().map(|(_, f)| f.clone()).collect();
    let r_audio: Vec<Vec<i16>> = r.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(l_audio, decode(&from_caller, G711::Pcmu), "left channel");
    assert_eq!(r_audio, decode(&from_callee, G711::Pcma), "right channel");
    // ...and what both said in the same 20 ms shares a stereo frame (within one slot of
    // scheduling noise), frame after frame.
    for ((li, _), (ri, _)) in l.iter().zip(&r) {
        assert!(li.abs_diff(*ri) <= 1, "left frame {li} vs right frame {ri}");
    }
    // The CDR names the fork and what it carried.
    let cdr_text = || std::fs::read_to_string(&cdr).unwrap_or_default();
    eventually(|| std::future::ready(!cdr_text().is_empty())).await;
    let line = cdr_text();
    let record: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let fork = &record["forks"][0];
    assert!(
        fork["url"].as_str().unwrap().starts_with("ws://127.0.0.1:"),
        "{record}"
    );
    assert!(fork["frames_sent"].as_u64().unwrap() >= 50, "{record}");
    assert_eq!(fork["frames_dropped"], 0, "{record}");
    let _ = std::fs::remove_file(&cdr);
    s.stop().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_trunk_that_challenges_gets_credentials_and_the_call_connects() {
    // The trunk: a UDP socket playing the provider, with a real digest authenticator.
    let trunk_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let trunk_addr = trunk_sock.local_addr().unwrap();
    let extra = format!(
        "\n[[trunks]]\nname = \"upstream\"\naddress = \"{trunk_addr}\"\ndomain = \"carrier.example\"\n\
         username = \"siphon\"\npassword = \"trunkpass\"\n\
         [[dialplan]]\nnumber = \"_0X.\"\naction = \"trunk\"\ntrunk = \"upstream\"\nstrip = 1\nprepend = \"+44\"\n"
    );
    let s = start_with(&extra, 37000).await;
    let trunk = Callee {
        phone: Phone {
            sock: trunk_sock,
            server: s.addr,
        },
        rtp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    };
    let auth = siphon_sip::auth::Authenticator::new(siphon_sip::auth::DigestConfig::new("carrier"));
    let (caller, _rtp) = call(s.addr, "0201234", "b2b-trunk", "0 101").await;

    // The number is rewritten (0 stripped, +44 prepended) into the trunk's domain.
    let first = trunk.expect("INVITE").await;
    assert!(
        first.starts_with("INVITE sip:+44201234@carrier.example SIP/2.0"),
        "{first}"
    );
    assert!(headers(&first, "From")[0].starts_with("<sip:1001@carrier.example>;tag="));
    assert!(headers(&first, "Proxy-Authorization").is_empty());
    let challenge = auth.challenge(
        std::time::SystemTime::now(),
        std::net::IpAddr::from([127, 0, 0, 1]),
        false,
    );
    let mut text = "SIP/2.0 407 Proxy Authentication Required\r\n".to_string();
    for via in headers(&first, "Via") {
        text.push_str(&format!("Via: {via}\r\n"));
    }
    text.push_str(&format!(
        "From: {}\r\nTo: {};tag=trunk407\r\nCall-ID: {}\r\nCSeq: {}\r\nProxy-Authenticate: {}\r\nContent-Length: 0\r\n\r\n",
        headers(&first, "From")[0],
        headers(&first, "To")[0],
        headers(&first, "Call-ID")[0],
        headers(&first, "CSeq")[0],
        challenge[0],
    ));
    trunk.phone.send(&text).await;
    trunk.expect("ACK").await;

    // The INVITE again, same call, next CSeq, with credentials the trunk accepts.
    let second = trunk.expect("INVITE").await;
    assert_eq!(headers(&second, "Call-ID"), headers(&first, "Call-ID"));
    assert!(headers(&second, "CSeq")[0].starts_with("2 "), "{second}");
    let credentials = headers(&second, "Proxy-Authorization")[0];
    let password = |user: &str| (user == "siphon").then(|| "trunkpass".to_string());
    let verified = auth
        .verify(
            std::time::SystemTime::now(),
            std::net::IpAddr::from([127, 0, 0, 1]),
            "INVITE",
            credentials,
            &password,
        )
        .expect("the trunk accepts Siphon's credentials");
    assert_eq!(verified.username, "siphon");

    let answer = trunk.answer_sdp("0", "0 PCMU/8000");
    trunk.respond(&second, 200, Some(&answer)).await;
    let ok = caller.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    trunk.expect("ACK").await;
    caller
        .send(
            &caller_in_dialog("BYE", &caller, "0201234", "b2b-trunk", &to_tag(&ok))
                .replace("CSeq: 2", "CSeq: 3"),
        )
        .await;
    assert_eq!(status(&caller.recv().await), 200);
    let bye = trunk.expect("BYE").await;
    assert_eq!(headers(&bye, "Call-ID"), headers(&first, "Call-ID"));
    s.stop().await;
}

/// A response from a test registrar/trunk to `request`, with extra header lines.
fn reply(request: &str, code: u16, extra: &str) -> String {
    let mut text = format!("SIP/2.0 {code} Whatever\r\n");
    for via in headers(request, "Via") {
        text.push_str(&format!("Via: {via}\r\n"));
    }
    text.push_str(&format!(
        "From: {}\r\nTo: {};tag=registrar\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        headers(request, "From")[0],
        headers(request, "To")[0],
        headers(request, "Call-ID")[0],
        headers(request, "CSeq")[0],
    ));
    text
}

#[tokio::test]
async fn siphon_registers_to_a_trunk_refreshes_and_retries() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let extra = format!(
        "\n[[trunks]]\nname = \"provider\"\naddress = \"{addr}\"\ndomain = \"voip.example\"\n\
         username = \"siphon-gw\"\npassword = \"regpass\"\nregister = true\nregister_expires_s = 10\n"
    );
    let s = start_with(&extra, 37100).await;
    let registrar = Phone {
        sock,
        server: s.addr,
    };
    let auth = siphon_sip::auth::Authenticator::new(siphon_sip::auth::DigestConfig::new("voip"));
    let password = |user: &str| (user == "siphon-gw").then(|| "regpass".to_string());
    let wait = WAIT;
    // Answers REGISTERs until one carries valid credentials; returns that one.
    let authenticated = async |first: String| -> String {
        let mut request = first;
        loop {
            assert!(
                request.starts_with("REGISTER sip:voip.example SIP/2.0"),
                "{request}"
            );
            assert_eq!(headers(&request, "Expires"), vec!["10"]);
            match headers(&request, "Authorization").first() {
                Some(creds) => {
                    let v = auth.verify(
                        std::time::SystemTime::now(),
                        std::net::IpAddr::from([127, 0, 0, 1]),
                        "REGISTER",
                        creds,
                        &password,
                    );
                    assert_eq!(v.expect("valid credentials").username, "siphon-gw");
                    return request;
                }
                None => {
                    let challenge = auth.challenge(
                        std::time::SystemTime::now(),
                        std::net::IpAddr::from([127, 0, 0, 1]),
                        false,
                    );
                    let h = format!("WWW-Authenticate: {}\r\n", challenge[0]);
                    registrar.send(&reply(&request, 401, &h)).await;
                }
            }
            request = registrar
                .recv_within(wait)
                .await
                .expect("REGISTER after 401");
        }
    };
    let first = registrar
        .recv_within(wait)
        .await
        .expect("REGISTER at start");
    let call_id = headers(&first, "Call-ID")[0].to_string();
    let ok = authenticated(first).await;
    let contact = headers(&ok, "Contact")[0].to_string();
    assert!(contact.contains("sip:siphon-gw@127.0.0.1:"), "{contact}");
    registrar
        .send(&reply(
            &ok,
            200,
            &format!("Contact: {contact};expires=10\r\n"),
        ))
        .await;
    // Refreshed before the 10 s run out (at 80 %: 2 s to spare), on the same Call-ID.
    let t0 = tokio::time::Instant::now();
    let refresh = registrar.recv_within(wait).await.expect("refresh");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(headers(&refresh, "Call-ID")[0], call_id);
    // The provider fails this time: Siphon retries about a second later (well before the
    // next refresh would be due, 8 s on).
    registrar.send(&reply(&refresh, 503, "")).await;
    let t1 = tokio::time::Instant::now();
    let retry = registrar.recv_within(wait).await.expect("retry after 503");
    let waited = t1.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let ok = authenticated(retry).await;
    registrar
        .send(&reply(
            &ok,
            200,
            &format!("Contact: {contact};expires=10\r\n"),
        ))
        .await;
    s.stop().await;
}

#[tokio::test]
async fn hold_and_unhold_are_relayed_to_the_other_phone() {
    let s = start_with("", 37200).await;
    let c = connect(&s, "b2b-hold", "0 101", ("0", "0 PCMU/8000")).await;
    let port = c.caller_rtp.local_addr().unwrap().port();
    let frames: Vec<Vec<u8>> = (0..10).map(|n| speech_like(G711::Pcmu, n)).collect();
    let reinvite = |cseq: u32, direction: &str| {
        let body = sdp(
            port,
            "0 101",
            &format!("a=rtpmap:0 PCMU/8000\r\na={direction}\r\n"),
        );
        invite(
            c.caller.local(),
            "1002",
            "b2b-hold",
            cseq,
            Some(&c.tag),
            &body,
            "application/sdp",
        )
        .replace("sip:tester@", "sip:1001@")
    };
    let mut callee_seq = Vec::new();
    for (cseq, caller_says, callee_gets, callee_says) in [
        (3, "sendonly", "sendonly", "recvonly"),
        (4, "sendrecv", "sendrecv", "sendrecv"),
    ] {
        c.caller.send(&reinvite(cseq, caller_says)).await;
        let ok = c.caller.final_response().await;
        assert_eq!(status(&ok), 200, "{ok}");
        c.caller
            .send(
                &caller_in_dialog("ACK", &c.caller, "1002", "b2b-hold", &c.tag)
                    .replace("CSeq: 2", &format!("CSeq: {cseq}")),
            )
            .await;
        // The other phone learns of it in its own dialog.
        let relayed = c.callee.expect("INVITE").await;
        assert_eq!(headers(&relayed, "Call-ID"), headers(&c.invite, "Call-ID"));
        assert!(
            body(&relayed).contains(&format!("a={callee_gets}")),
            "{relayed}"
        );
        callee_seq.push(headers(&relayed, "CSeq")[0].to_string());
        let answer = c.callee.answer_sdp("0", "0 PCMU/8000") + &format!("a={callee_says}\r\n");
        c.callee.respond(&relayed, 200, Some(&answer)).await;
        let ack = c.callee.expect("ACK").await;
        assert_eq!(
            headers(&ack, "CSeq")[0],
            callee_seq.last().unwrap().replace("INVITE", "ACK")
        );
        // On hold the caller asked not to receive: the callee's audio stops there.
        let listen = async {
            if caller_says == "sendonly" {
                collect(&c.caller_rtp, Duration::from_millis(400)).await
            } else {
                let settle = Duration::from_millis(200);
                collect_until(&c.caller_rtp, settle, |g| g.len() >= frames.len()).await
            }
        };
        let (got, _) = tokio::join!(
            listen,
            send_stream(&c.callee.rtp, c.callee_dest, 0, 0x2222, &frames),
        );
        if caller_says == "sendonly" {
            assert!(got.is_empty(), "caller on hold got {} packets", got.len());
        } else {
            assert_eq!(got.len(), frames.len(), "after unhold");
        }
    }
    assert_eq!(callee_seq, vec!["2 INVITE", "3 INVITE"]);
    s.stop().await;
}

#[tokio::test]
async fn early_media_from_the_callee_reaches_the_caller_before_the_answer() {
    let s = start_with("", 37300).await;
    let callee = register(s.addr, "1002").await;
    let (caller, caller_rtp) = call(s.addr, "1002", "b2b-early", "0 101").await;
    let invite_in = callee.expect("INVITE").await;
    // A ring-back tone or announcement from the callee's side: 183 with SDP.
    let answer = callee.answer_sdp("0", "0 PCMU/8000");
    callee.respond(&invite_in, 183, Some(&answer)).await;
    let progress = caller.final_response().await;
    assert_eq!(status(&progress), 183, "{progress}");
    let caller_dest = sdp_addr(body(&progress));
    let callee_dest = sdp_addr(body(&invite_in));
    let tone: Vec<Vec<u8>> = (0..10).map(|n| speech_like(G711::Pcmu, n)).collect();
    let settle = Duration::from_millis(200);
    let (got, _) = tokio::join!(
        collect_until(&caller_rtp, settle, |g| g.len() >= tone.len()),
        send_stream(&callee.rtp, callee_dest, 0, 0x2222, &tone),
    );
    let heard: Vec<Vec<u8>> = got.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(heard, tone, "early media");
    // Then the answer (the SDP already given with the 183).
    callee.respond(&invite_in, 200, Some(&answer)).await;
    let ok = caller.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(
        sdp_addr(body(&ok)),
        caller_dest,
        "same session as the 183's"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_caller_without_an_offer_answers_in_its_ack() {
    let route =
        "\n[[dialplan]]\nnumber = \"2002\"\naction = \"user\"\nuser = \"1002\"\nauth = \"none\"\n";
    let s = start_with(route, 37400).await;
    let callee = register(s.addr, "1002").await;
    let caller = Phone::new(s.addr).await;
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    caller
        .send(&invite(
            caller.local(),
            "2002",
            "b2b-late",
            1,
            None,
            "",
            "application/sdp",
        ))
        .await;
    let invite_in = callee.expect("INVITE").await;
    callee
        .respond(
            &invite_in,
            200,
            Some(&callee.answer_sdp("0", "0 PCMU/8000")),
        )
        .await;
    let ok = caller.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    // Siphon's 200 carries its offer; the caller picks PCMA in the ACK.
    assert!(sdp_pts(body(&ok)).contains(&8), "{ok}");
    let answer = sdp(
        caller_rtp.local_addr().unwrap().port(),
        "8",
        "a=rtpmap:8 PCMA/8000\r\n",
    );
    let ack = in_dialog(
        "ACK",
        caller.local(),
        "2002",
        "b2b-late",
        1,
        &to_tag(&ok),
        "lateack",
    )
    .replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ),
    );
    caller.send(&ack).await;
    // Siphon relays to the caller once it has taken the answer in the ACK: until then the
    // callee's packets have nowhere to go. Silence from the callee until one gets through.
    let callee_dest = sdp_addr(body(&invite_in));
    let silence_mu = [0xffu8; 160];
    let silence_a = G711::Pcma.encode_sample(G711::Pcmu.decode_sample(0xff));
    let deadline = tokio::time::Instant::now() + WAIT;
    for seq in 1u16.. {
        let probe = rtp_bytes(
            0,
            seq == 1,
            1000 + seq,
            160 * u32::from(seq),
            0x3333,
            &silence_mu,
        );
        callee.rtp.send_to(&probe, callee_dest).await.unwrap();
        if !collect(&caller_rtp, Duration::from_millis(20))
            .await
            .is_empty()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing relayed to the caller after its ACK"
        );
    }
    let frames: Vec<Vec<u8>> = (0..10).map(|n| speech_like(G711::Pcmu, n)).collect();
    let as_pcma: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            f.iter()
                .map(|b| G711::Pcma.encode_sample(G711::Pcmu.decode_sample(*b)))
                .collect()
        })
        .collect();
    let settle = Duration::from_millis(200);
    let is_speech = |p: &Rtp| p.payload.iter().any(|b| *b != silence_a);
    let (got, _) = tokio::join!(
        collect_until(&caller_rtp, settle, |g| g
            .iter()
            .filter(|p| is_speech(p))
            .count()
            >= frames.len()),
        send_stream(&callee.rtp, callee_dest, 0, 0x2222, &frames),
    );
    // Every frame (after any late probe), transcoded to the PCMA the caller chose.
    let heard: Vec<Vec<u8>> = got
        .iter()
        .filter(|p| is_speech(p))
        .map(|p| p.payload.clone())
        .collect();
    assert_eq!(heard, as_pcma);
    assert!(
        got.iter().all(|p| p.pt == 8),
        "the caller gets the codec it chose"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_admin_api_forks_a_bridged_call() {
    use siphon_analytics::{Mode, Options};
    let opts = Options {
        echo: false,
        log_levels: false,
        ..Options::default()
    };
    let svc = siphon_analytics::bind("127.0.0.1:0", opts).await.unwrap();
    // The analytics service's port is picked at random: any fork URL may be attached.
    let s = start_edited(
        "",
        37500,
        &[("# token = \"change-me\"", "allow_any_fork_url = true")],
    )
    .await;
    let c = connect(&s, "b2b-admin-fork", "0 101", ("0", "0 PCMU/8000")).await;
    let fork = format!(
        "{{\"url\": \"{}\", \"mode\": \"native\", \"encoding\": \"l16\", \"tracks\": \"outbound\"}}",
        svc.url(Mode::Native)
    );
    let r = http(
        s.http,
        "POST",
        "/api/calls/b2b-admin-fork/forks",
        None,
        Some(&fork),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The call's media task has the fork once the call lists it.
    let h = s.http;
    let listed = eventually(|| async move {
        let forks = http(h, "GET", "/api/calls/b2b-admin-fork/forks", None, None).await;
        forks.json()["forks"]
            .as_array()
            .is_some_and(|f| f.len() == 1)
    })
    .await;
    assert!(listed, "the attached fork is not listed");
    // `outbound` on a bridged call is the callee.
    let from_callee: Vec<Vec<u8>> = (0..20).map(|n| speech_like(G711::Pcmu, n)).collect();
    send_stream_ahead(&c.callee.rtp, c.callee_dest, 0, 0x2222, &from_callee, 8).await;
    let expected: Vec<u8> = from_callee
        .iter()
        .flatten()
        .flat_map(|b| G711::Pcmu.decode_sample(*b).to_le_bytes())
        .collect();
    // Hang up once the service has it all.
    let n = expected.len();
    eventually(|| {
        let done = svc.streams().iter().any(|r| r.audio_bytes(None).len() >= n);
        std::future::ready(done)
    })
    .await;
    c.callee.phone.send(&c.callee.bye(&c.invite)).await;
    assert_eq!(status(&c.callee.phone.recv().await), 200);
    eventually(|| std::future::ready(svc.streams().iter().any(|r| r.stop.is_some()))).await;
    let record = svc
        .streams()
        .into_iter()
        .find(|r| r.stop.is_some())
        .expect("the fork's stop");
    assert_eq!(record.audio_bytes(None), expected);
    s.stop().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_reject_route_refuses_with_its_code_without_a_challenge() {
    let route = "\n[[dialplan]]\nnumber = \"_19XX\"\naction = \"reject\"\ncode = 603\n";
    let s = start_with(route, 37600).await;
    let caller = Phone::new(s.addr).await;
    let offer = sdp(4000, "0", "");
    let inv = invite(
        caller.local(),
        "1900",
        "b2b-reject",
        1,
        None,
        &offer,
        "application/sdp",
    );
    caller.send(&inv).await;
    let r = caller.final_response().await;
    assert_eq!(status(&r), 603, "{r}");
    caller.send(&ack_for(&inv, &r)).await;
    s.stop().await;
}

#[tokio::test]
async fn routes_can_depend_on_the_calling_account() {
    let routes = "\n[[dialplan]]\nnumber = \"5555\"\naction = \"user\"\nuser = \"1002\"\ncallers = [\"1001\"]\n\
                  [[dialplan]]\nnumber = \"5555\"\naction = \"reject\"\ncode = 603\n";
    let s = start_with(routes, 37700).await;
    let callee = register(s.addr, "1002").await;
    // 1001 (authenticated) reaches 1002.
    let (_caller, _rtp) = call(s.addr, "5555", "b2b-by-caller", "0 101").await;
    callee.expect("INVITE").await;
    // Anyone else gets the other route's 603.
    let other = Phone::new(s.addr).await;
    let offer = sdp(4000, "0", "");
    let inv = invite(
        other.local(),
        "5555",
        "b2b-other",
        1,
        None,
        &offer,
        "application/sdp",
    );
    other.send(&inv).await;
    let r = other.final_response().await;
    assert_eq!(status(&r), 603, "{r}");
    other.send(&ack_for(&inv, &r)).await;
    // Claiming to be 1001 with 1002's credentials does not reach 1001's route: the call is
    // routed as the account that authenticated (1002), whose route here is the 603.
    let spoof = invite(
        other.local(),
        "5555",
        "b2b-spoof",
        1,
        None,
        &offer,
        "application/sdp",
    )
    .replace("sip:tester@", "sip:1001@");
    other.send(&spoof).await;
    let challenge = other.final_response().await;
    assert_eq!(status(&challenge), 407, "{challenge}");
    other.send(&ack_for(&spoof, &challenge)).await;
    let creds = credentials(
        &challenge,
        "Proxy-Authenticate",
        "1002",
        "INVITE",
        "sip:5555@127.0.0.1",
    );
    let again = invite(
        other.local(),
        "5555",
        "b2b-spoof",
        2,
        None,
        &offer,
        "application/sdp",
    )
    .replace("sip:tester@", "sip:1001@")
    .replace(
        "Content-Type:",
        &format!("Proxy-Authorization: {creds}\r\nContent-Type:"),
    );
    other.send(&again).await;
    let r = other.final_response().await;
    assert_eq!(status(&r), 603, "{r}");
    s.stop().await;
}

#[tokio::test]
async fn hostile_packets_do_not_disturb_a_bridged_call() {
    let s = start_with("", 37800).await;
    let c = connect(&s, "b2b-hostile", "0 101", ("0", "0 PCMU/8000")).await;
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage, truncated RTP and packets from a stranger, at both of Siphon's RTP ports.
    for dest in [c.caller_dest, c.callee_dest] {
        for junk in [
            &b""[..],
            &[0x80][..],
            &[0xff; 40][..],
            &[0x80, 0x00, 0, 1, 0, 0][..],
        ] {
            stray.send_to(junk, dest).await.unwrap();
            c.caller_rtp.send_to(junk, dest).await.unwrap();
        }
        let pkt = rtp_bytes(0, false, 9, 9, 0x6666, &[0u8; 160]);
        stray.send_to(&pkt, dest).await.unwrap();
    }
    // A stranger that sends before a phone latches that leg (symmetric RTP takes the
    // first sender), but the phone's own address, from its SDP, takes the leg back with its
    // first packet. Here the callee's phone speaks first, then the caller.
    let hello = rtp_bytes(0, true, 1, 0, 0x2222, &speech_like(G711::Pcmu, 99));
    c.callee.rtp.send_to(&hello, c.callee_dest).await.unwrap();
    // Siphon has taken it (the leg is the phone's again) once it is relayed to the caller
    // leg: to the caller's phone, or to the stranger if that leg is still latched to it.
    let hello_payload = speech_like(G711::Pcmu, 99);
    let has_hello = |g: &[Rtp]| g.iter().any(|p| p.payload == hello_payload);
    let relayed = tokio::select! {
        g = collect_until(&c.caller_rtp, Duration::ZERO, has_hello) => has_hello(&g),
        g = collect_until(&stray, Duration::ZERO, has_hello) => has_hello(&g),
    };
    assert!(relayed, "the callee's first packet was not relayed");
    let from_caller: Vec<Vec<u8>> = (0..10).map(|n| speech_like(G711::Pcmu, n)).collect();
    let (got, _) = tokio::join!(
        collect_until(&c.callee.rtp, Duration::from_millis(200), |g| {
            in_order(g, &from_caller) == from_caller.len()
        }),
        send_stream(&c.caller_rtp, c.caller_dest, 0, 0x1111, &from_caller),
    );
    // The stranger's one packet (sent before the caller's first) may have been heard;
    // everything after is the caller's audio, whole and in order.
    let heard: Vec<Vec<u8>> = got.iter().map(|p| p.payload.clone()).collect();
    assert!(
        heard.len() <= from_caller.len() + 1,
        "{} frames",
        heard.len()
    );
    assert_eq!(
        heard[heard.len().saturating_sub(from_caller.len())..],
        from_caller[..]
    );
    // After that, the stranger is ignored.
    let pkt = rtp_bytes(0, false, 10, 10, 0x6666, &[0u8; 160]);
    stray.send_to(&pkt, c.caller_dest).await.unwrap();
    assert!(
        collect(&c.callee.rtp, Duration::from_millis(200))
            .await
            .is_empty()
    );
    assert!(siphon_server::counters::get(&s.counters.rtp_malformed) >= 4);
    // A second answer to Siphon's INVITE (a retransmitted 200) gets the ACK again, and the
    // call goes on.
    c.callee
        .respond(
            &c.invite,
            200,
            Some(&c.callee.answer_sdp("0", "0 PCMU/8000")),
        )
        .await;
    c.callee.expect("ACK").await;
    c.caller
        .send(
            &caller_in_dialog("BYE", &c.caller, "1002", "b2b-hostile", &c.tag)
                .replace("CSeq: 2", "CSeq: 3"),
        )
        .await;
    assert_eq!(status(&c.caller.recv().await), 200);
    c.callee.expect("BYE").await;
    s.stop().await;
}

#[tokio::test]
async fn a_phone_that_stops_sending_ends_the_call_for_both() {
    let s = start_edited(
        "",
        37900,
        &[("inactivity_timeout_s = 60", "inactivity_timeout_s = 1")],
    )
    .await;
    let c = connect(&s, "b2b-dead", "0 101", ("0", "0 PCMU/8000")).await;
    // The caller keeps talking; the callee's phone has gone silent (crashed, say).
    let frames: Vec<Vec<u8>> = (0..75).map(|n| speech_like(G711::Pcmu, n)).collect();
    let talk = send_stream(&c.caller_rtp, c.caller_dest, 0, 0x1111, &frames);
    let byes = async {
        let to_caller = c.caller.recv_within(WAIT).await;
        let to_callee = c.callee.phone.recv_within(WAIT).await;
        (to_caller, to_callee)
    };
    let (_, (to_caller, to_callee)) = tokio::join!(talk, byes);
    for bye in [to_caller, to_callee] {
        let bye = bye.expect("BYE within WAIT");
        assert!(bye.starts_with("BYE "), "{bye}");
        // The Reason is a fixed text (which phone went silent is in the log).
        assert!(
            bye.contains("Reason: SIP;cause=200;text=\"Media timeout\""),
            "{bye}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_trunk_calls_a_phone_without_digest_and_routes_by_trunk() {
    // An inbound trunk admitted by source address, with a route of its own: its calls to
    // 5000 reach 1002 (a DID), while anyone else's get 603.
    let extra = "\n[[accounts]]\nusername = \"carrier\"\nkind = \"trunk\"\nallowed_ips = [\"127.0.0.9/32\"]\n\
                 [[dialplan]]\nnumber = \"5000\"\naction = \"user\"\nuser = \"1002\"\ncallers = [\"carrier\"]\n\
                 [[dialplan]]\nnumber = \"5000\"\naction = \"reject\"\ncode = 603\n";
    let s = start_with(extra, 38000).await;
    let callee = register(s.addr, "1002").await;
    let trunk = Phone::from_ip(s.addr, "127.0.0.9").await;
    let rtp = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let offer = sdp(
        rtp.local_addr().unwrap().port(),
        "0",
        "a=rtpmap:0 PCMU/8000\r\n",
    )
    .replace("127.0.0.1", "127.0.0.9");
    let inv = invite(
        trunk.local(),
        "5000",
        "b2b-from-trunk",
        1,
        None,
        &offer,
        "application/sdp",
    );
    trunk.send(&inv).await;
    let invite_in = callee.expect("INVITE").await;
    callee
        .respond(
            &invite_in,
            200,
            Some(&callee.answer_sdp("0", "0 PCMU/8000")),
        )
        .await;
    let ok = trunk.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    // The same number from a phone is the other route.
    let phone = Phone::new(s.addr).await;
    let inv = invite(
        phone.local(),
        "5000",
        "b2b-not-trunk",
        1,
        None,
        &offer,
        "application/sdp",
    );
    phone.send(&inv).await;
    assert_eq!(status(&phone.final_response().await), 603);
    s.stop().await;
}

/// An account presents only its own identity or the caller IDs it is allowed: 1001
/// claiming to be +15550009999 reaches the callee (From and P-Asserted-Identity) and the
/// CDR as 1001; its allowed caller ID +15551001 goes through as sent.
#[tokio::test]
async fn a_spoofed_caller_id_is_replaced_by_the_account() {
    let dir = std::env::temp_dir().join(format!("siphon-cid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cdr.jsonl");
    let _ = std::fs::remove_file(&path);
    let extra = format!("\n[cdr]\npath = \"{}\"\n", path.display());
    let edits = [(
        "username = \"1001\"",
        "username = \"1001\"\ncaller_ids = [\"+15551001\"]",
    )];
    let s = start_edited(&extra, 38100, &edits).await;
    let callee = register(s.addr, "1002").await;

    let (caller, _rtp) = call_from(s.addr, "1002", "cid-spoof", "0 101", "+15550009999").await;
    let inv = callee.expect("INVITE").await;
    let from = headers(&inv, "From")[0];
    assert!(from.starts_with("<sip:1001@127.0.0.1>;tag="), "{inv}");
    assert_eq!(
        headers(&inv, "P-Asserted-Identity"),
        vec!["<sip:1001@127.0.0.1>"]
    );
    assert!(!inv.contains("15550009999"), "{inv}");
    callee.respond(&inv, 486, None).await;
    assert_eq!(status(&caller.final_response().await), 486);

    let (caller, _rtp) = call_from(s.addr, "1002", "cid-allowed", "0 101", "+15551001").await;
    let inv = callee.expect("INVITE").await;
    assert!(
        headers(&inv, "From")[0].starts_with("<sip:+15551001@127.0.0.1>;tag="),
        "{inv}"
    );
    callee.respond(&inv, 486, None).await;
    assert_eq!(status(&caller.final_response().await), 486);

    s.stop().await;
    // CDR lines are appended by a writer thread: wait for both.
    let mut cdr = String::new();
    for _ in 0..100 {
        cdr = std::fs::read_to_string(&path).unwrap_or_default();
        if cdr.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records: Vec<serde_json::Value> = cdr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let caller_of = |id: &str| {
        records
            .iter()
            .find(|r| r["call_id"] == id)
            .map(|r| r["caller"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(caller_of("cid-spoof"), "<sip:1001@127.0.0.1>");
    assert_eq!(caller_of("cid-allowed"), "<sip:+15551001@127.0.0.1>");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin API's transfer of a bridged call places its new leg like originate's: every
/// phone registered for the target account rings, the first answer wins, the other phone
/// gets CANCEL, and the callee the caller leaves gets BYE. (A REFER's leg is placed by the
/// same code, `place_leg_planned`.)
#[tokio::test]
async fn a_bridged_calls_transfer_rings_every_phone_of_the_target() {
    let s = start_with("", 39100).await;
    let c = connect(&s, "b2b-xfer-fork", "0 101", ("0", "0 PCMU/8000")).await;
    let desk = register(s.addr, "1001").await;
    let mobile = register(s.addr, "1001").await;
    let r = http(
        s.http,
        "POST",
        "/api/calls/b2b-xfer-fork/transfer",
        None,
        Some(r#"{"to": "user:1001"}"#),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let desk_invite = desk.expect("INVITE").await;
    let mobile_invite = mobile.expect("INVITE").await;
    // One leg, two INVITEs: same Call-ID, each to its own phone.
    assert_eq!(
        headers(&desk_invite, "Call-ID"),
        headers(&mobile_invite, "Call-ID")
    );
    assert_ne!(headers(&desk_invite, "Via"), headers(&mobile_invite, "Via"));
    desk.respond(&desk_invite, 180, None).await;
    mobile.respond(&mobile_invite, 180, None).await;
    let answer = mobile.answer_sdp("0", "0 PCMU/8000");
    mobile.respond(&mobile_invite, 200, Some(&answer)).await;
    mobile.expect("ACK").await;
    let cancel = desk.expect("CANCEL").await;
    assert_eq!(
        headers(&cancel, "Call-ID"),
        headers(&desk_invite, "Call-ID")
    );
    // The callee the caller leaves is hung up; the call now shows the transfer done.
    let bye = c.callee.expect("BYE").await;
    assert_eq!(headers(&bye, "Call-ID"), headers(&c.invite, "Call-ID"));
    let done = eventually(|| async {
        let call = http(s.http, "GET", "/api/calls/b2b-xfer-fork", None, None).await;
        call.json()["transfer"]["state"] == "completed"
    })
    .await;
    assert!(done, "the transfer never completed");
    s.stop().await;
}
