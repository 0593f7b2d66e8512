//! Siphon as a node behind SIP edges (docs/scaling.md): the OPTIONS answer a load balancer
//! reads (200 with the load, 503 when full or draining), calls to registered users sent
//! to the edge as outbound proxy (Route header, the edge's Record-Route on every in-dialog
//! request), and the caller identity a trusted edge asserts kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

/// OPTIONS from a "dispatcher" and its answer.
async fn probe(server: SocketAddr, branch: &str) -> String {
    let pinger = Phone::new(server).await;
    pinger.send(&options(pinger.local(), branch)).await;
    pinger.final_response().await
}

/// The caller of `place_call` hangs up; the response to its BYE.
async fn hang_up(call: &Call, number: &str) -> String {
    let bye = in_dialog(
        "BYE",
        call.phone.local(),
        number,
        &call.call_id,
        2,
        &call.tag,
        &format!("{}bye", call.call_id),
    );
    call.phone.send(&bye).await;
    call.phone.final_response().await
}

#[tokio::test]
async fn options_carry_the_load_and_refuse_when_full_or_draining() {
    let edits = [
        ("max_calls = 2000", "max_calls = 1"),
        ("drain_timeout_s = 0", "drain_timeout_s = 120"),
    ];
    let mut s = start_edited("", 47100, &edits).await;

    let idle = probe(s.addr, "idle").await;
    assert_eq!(status(&idle), 200, "{idle}");
    assert_eq!(
        header(&idle, "X-Siphon-Load"),
        Some("calls=0; capacity=1"),
        "{idle}"
    );
    assert!(header(&idle, "Retry-After").is_none(), "{idle}");

    // At max_calls: the balancer is told before a caller is refused.
    let call = place_call(s.addr, "600", "node-full", "0").await;
    let full = probe(s.addr, "full").await;
    assert_eq!(status(&full), 503, "{full}");
    assert_eq!(
        header(&full, "X-Siphon-Load"),
        Some("calls=1; capacity=1"),
        "{full}"
    );
    assert_eq!(header(&full, "Retry-After"), Some("5"), "{full}");
    assert_eq!(status(&hang_up(&call, "600").await), 200);
    let open = eventually(|| async move { status(&probe(s.addr, "open").await) == 200 }).await;
    assert!(open, "a node with room again answers 200");

    // Draining (SIGTERM): 503 while its calls finish, whatever the load.
    let call = place_call(s.addr, "600", "node-drain", "0").await;
    s.begin_stop();
    let addr = s.addr;
    let draining = eventually(|| async move { status(&probe(addr, "drain").await) == 503 }).await;
    assert!(draining, "a draining node answers OPTIONS 503");
    let drain = probe(s.addr, "drain2").await;
    assert_eq!(
        header(&drain, "X-Siphon-Load"),
        Some("calls=1; draining"),
        "{drain}"
    );
    assert_eq!(header(&drain, "Retry-After"), Some("30"), "{drain}");
    assert_eq!(status(&hang_up(&call, "600").await), 200);
    tokio::time::timeout(Duration::from_secs(60), s.join())
        .await
        .expect("the drained node stops");
}

/// What the edge's socket received, read in arrival order; `take` finds the first message
/// that starts with a prefix, keeping the others for later.
struct Edge {
    sock: UdpSocket,
    stash: Vec<String>,
}

impl Edge {
    async fn take(&mut self, prefix: &str) -> String {
        if let Some(i) = self.stash.iter().position(|m| m.starts_with(prefix)) {
            return self.stash.remove(i);
        }
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("nothing starting with {prefix:?} reached the edge"))
                .unwrap();
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.starts_with(prefix) {
                return msg;
            }
            self.stash.push(msg);
        }
    }

    async fn send(&self, text: &str, to: SocketAddr) {
        self.sock.send_to(text.as_bytes(), to).await.unwrap();
    }
}

/// A response the edge relays from the phone to Siphon's request: Via, From, To (with the
/// phone's tag), Call-ID and CSeq of the request.
fn response(request: &str, code: &str, extra: &str, body: &str) -> String {
    let copy = |name: &str| {
        request
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            })
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
    };
    let to = header(request, "To").unwrap();
    let to = if to.contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag=phone")
    };
    format!(
        "SIP/2.0 {code}\r\n{}{}To: {to}\r\n{}{}{extra}Content-Length: {}\r\n\r\n{body}",
        copy("Via"),
        copy("From"),
        copy("Call-ID"),
        copy("CSeq"),
        body.len()
    )
}

#[tokio::test]
async fn calls_to_users_go_through_the_edge_with_its_asserted_identity() {
    let sock = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let edge_addr = sock.local_addr().unwrap();
    let edge_uri = format!("sip:{edge_addr};lr");
    let proxy = format!("realm = \"siphon\"\noutbound_proxy = \"{edge_uri}\"");
    let trunk = "\n[[accounts]]\nusername = \"edges\"\nkind = \"trunk\"\nallowed_ips = [\"127.0.0.5/32\"]\n";
    let s = start_edited(trunk, 47200, &[("realm = \"siphon\"", &proxy)]).await;
    let mut edge = Edge {
        sock,
        stash: Vec::new(),
    };

    // A phone the edge authenticated as 1001 calls 1002; the edge asserts who it is, and
    // the From it relays claims someone else.
    let offer = sdp(40000, "0", "a=rtpmap:0 PCMU/8000\r\n").replace("127.0.0.1", "127.0.0.5");
    let inv = invite(
        edge_addr,
        "1002",
        "node-edge-1",
        1,
        None,
        &offer,
        "application/sdp",
    )
    .replace(
        "Max-Forwards: 70\r\n",
        &format!(
            "Max-Forwards: 70\r\nRecord-Route: <{edge_uri}>\r\n\
                 P-Asserted-Identity: \"Alice\" <sip:1001@siphon>\r\n"
        ),
    );
    edge.send(&inv, s.addr).await;

    // Siphon does not look 1002 up itself: the INVITE goes to the edge, addressed to the
    // AOR, routed through the edge (loose routing), with the asserted caller.
    let out = edge.take("INVITE ").await;
    assert!(out.starts_with("INVITE sip:1002@siphon SIP/2.0"), "{out}");
    assert_eq!(
        headers(&out, "Route"),
        vec![format!("<{edge_uri}>")],
        "{out}"
    );
    assert_eq!(
        headers(&out, "P-Asserted-Identity"),
        vec!["\"Alice\" <sip:1001@siphon>"],
        "{out}"
    );
    assert!(
        header(&out, "From")
            .unwrap()
            .starts_with("\"Alice\" <sip:1001@siphon>;tag="),
        "{out}"
    );

    // The phone answers through the edge, which record-routed; its Contact is an address
    // Siphon must not send to directly.
    let answer = sdp(40002, "0", "a=rtpmap:0 PCMU/8000\r\n");
    let ok = response(
        &out,
        "200 OK",
        &format!(
            "Record-Route: <{edge_uri}>\r\nContact: <sip:1002@127.0.0.1:9>\r\n\
             Content-Type: application/sdp\r\n"
        ),
        &answer,
    );
    edge.send(&ok, s.addr).await;
    let ack = edge.take("ACK ").await;
    assert!(ack.starts_with("ACK sip:1002@127.0.0.1:9 SIP/2.0"), "{ack}");
    assert_eq!(
        headers(&ack, "Route"),
        vec![format!("<{edge_uri}>")],
        "{ack}"
    );

    // The caller's leg is answered (with the edge's Record-Route copied) and hangs up:
    // Siphon's BYE to the callee follows the route set too.
    let answered = edge.take("SIP/2.0 200").await;
    assert_eq!(
        headers(&answered, "Record-Route"),
        vec![format!("<{edge_uri}>")],
        "{answered}"
    );
    let tag = to_tag(&answered);
    edge.send(
        &in_dialog("ACK", edge_addr, "1002", "node-edge-1", 1, &tag, "eack"),
        s.addr,
    )
    .await;
    edge.send(
        &in_dialog("BYE", edge_addr, "1002", "node-edge-1", 2, &tag, "ebye"),
        s.addr,
    )
    .await;
    let bye = edge.take("BYE ").await;
    assert!(bye.starts_with("BYE sip:1002@127.0.0.1:9 SIP/2.0"), "{bye}");
    assert_eq!(
        headers(&bye, "Route"),
        vec![format!("<{edge_uri}>")],
        "{bye}"
    );
    edge.send(&response(&bye, "200 OK", "", ""), s.addr).await;
    let bye_ok = edge.take("SIP/2.0 200").await;
    assert!(bye_ok.contains("CSeq: 2 BYE"), "{bye_ok}");
    s.stop().await;
}

/// Without a trusted source, P-Asserted-Identity is ignored: a caller that is not an edge
/// (no trunk account admits its address) cannot claim an identity with it.
#[tokio::test]
async fn an_asserted_identity_from_an_untrusted_source_is_not_kept() {
    let sock = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    let edge_addr = sock.local_addr().unwrap();
    let proxy = format!("realm = \"siphon\"\noutbound_proxy = \"sip:{edge_addr};lr\"");
    // The edge is trusted; the caller below (127.0.0.6) is not.
    let trunk = "\n[[accounts]]\nusername = \"edges\"\nkind = \"trunk\"\nallowed_ips = [\"127.0.0.5/32\"]\n\
                 [[dialplan]]\nnumber = \"1003\"\naction = \"user\"\nuser = \"1002\"\nauth = \"none\"\n";
    let s = start_edited(trunk, 47300, &[("realm = \"siphon\"", &proxy)]).await;
    let mut edge = Edge {
        sock,
        stash: Vec::new(),
    };
    let caller = Phone::from_ip(s.addr, "127.0.0.6").await;
    let offer = sdp(40010, "0", "a=rtpmap:0 PCMU/8000\r\n");
    let inv = invite(
        caller.local(),
        "1003",
        "node-untrusted",
        1,
        None,
        &offer,
        "application/sdp",
    )
    .replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nP-Asserted-Identity: <sip:boss@siphon>\r\n",
    );
    caller.send(&inv).await;
    let out = edge.take("INVITE ").await;
    assert!(!out.contains("boss"), "{out}");
    assert!(
        header(&out, "From")
            .unwrap()
            .starts_with("<sip:tester@127.0.0.1>;tag="),
        "{out}"
    );
    s.stop().await;
}
