//! Carriers and phones (issue 20), in process: a real Siphon on an ephemeral loopback port
//! and a phone over a real TCP connection. The interop side (SIPp, Kamailio) is in
//! sip-tests/carrier.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `tcp` until a complete response with status `code` and CSeq `cseq` arrived;
/// returns it.
async fn tcp_response(tcp: &mut TcpStream, buf: &mut String, code: u16, cseq: &str) -> String {
    let mut chunk = vec![0u8; 8192];
    loop {
        // Complete messages in the buffer (these responses have no body but the SDP, whose
        // length Content-Length gives).
        while let Some(end) = buf.find("\r\n\r\n") {
            let head = buf[..end].to_string();
            let len: usize = header(&head, "Content-Length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let msg: String = buf.drain(..end + 4 + len).collect();
            if status(&msg) == code && header(&msg, "CSeq") == Some(cseq) {
                return msg;
            }
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a response over TCP")
            .unwrap();
        assert!(n > 0, "connection closed; had {buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

/// A phone on TCP re-INVITEs its call (hold): the 200 keeps the dialog on TCP. Its Contact
/// becomes the phone's remote target, so a UDP one would move Siphon's side of the dialog
/// off the phone's connection (through its NAT, often nowhere).
#[tokio::test]
async fn the_200_to_a_reinvite_over_tcp_names_tcp_in_its_contact() {
    let s = start_with("", 47100).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let tcp_of = |msg: String| msg.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let mut buf = String::new();
    let offer = sdp(40100, "0", "");
    tcp.write_all(
        tcp_of(invite(
            local,
            "600",
            "rt1",
            1,
            None,
            &offer,
            "application/sdp",
        ))
        .as_bytes(),
    )
    .await
    .unwrap();
    let ok = tcp_response(&mut tcp, &mut buf, 200, "1 INVITE").await;
    let contact = header(&ok, "Contact").unwrap();
    assert!(contact.contains("transport=tcp"), "{contact}");
    let tag = to_tag(&ok);
    tcp.write_all(tcp_of(in_dialog("ACK", local, "600", "rt1", 1, &tag, "rt1ack")).as_bytes())
        .await
        .unwrap();
    let hold = sdp(40100, "0", "a=sendonly\r\n");
    let reinvite = tcp_of(invite(
        local,
        "600",
        "rt1",
        2,
        Some(&tag),
        &hold,
        "application/sdp",
    ));
    tcp.write_all(reinvite.as_bytes()).await.unwrap();
    let ok = tcp_response(&mut tcp, &mut buf, 200, "2 INVITE").await;
    let contact = header(&ok, "Contact").unwrap();
    assert!(
        contact.contains("transport=tcp"),
        "the re-INVITE's 200 moves the phone off TCP: Contact {contact}"
    );
    tcp.write_all(tcp_of(in_dialog("ACK", local, "600", "rt1", 2, &tag, "rt1ack2")).as_bytes())
        .await
        .unwrap();
    tcp.write_all(tcp_of(in_dialog("BYE", local, "600", "rt1", 3, &tag, "rt1bye")).as_bytes())
        .await
        .unwrap();
    tcp_response(&mut tcp, &mut buf, 200, "3 BYE").await;
    s.stop().await;
}
