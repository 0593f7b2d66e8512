//! Safe on the public internet, over TCP and TLS: no peer can hold connection slots
//! forever. A peer that stops reading loses its connection (and its slot) after the write
//! timeout; a TLS client that never finishes its handshake is closed after the handshake
//! timeout; one address cannot take every slot; and a source blocked for brute-forcing
//! gets no more answers on the connection it already has open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use siphon_server::counters::get;
use siphon_testkit::SelfSignedCert;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Generous: the machine running the tests may be loaded.
const DEADLINE: Duration = Duration::from_secs(30);

/// An OPTIONS over TCP from `local`, with `vias` extra Via headers (Siphon copies every
/// Via into its response, so a long stack makes a long response).
fn tcp_options(local: SocketAddr, branch: &str, vias: usize) -> String {
    let extra: String = (0..vias)
        .map(|i| format!("Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK{branch}x{i:06}\r\n"))
        .collect();
    options(local, branch)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replacen("Max-Forwards:", &format!("{extra}Max-Forwards:"), 1)
}

/// What a read from a connection came to.
#[derive(Debug)]
enum Heard {
    Message(String),
    /// Siphon closed the connection (end of stream or reset).
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// The next whole SIP message on `stream` (`buf` keeps what came after it), within `wait`.
async fn hear<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>, wait: Duration) -> Heard {
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = header(&head, "Content-Length")
                    .or_else(|| header(&head, "l"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let total = end + 4 + len;
                if buf.len() >= total {
                    let msg = buf.drain(..total).collect::<Vec<u8>>();
                    return Heard::Message(String::from_utf8(msg).unwrap());
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Heard::Closed,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read)
        .await
        .unwrap_or(Heard::Silent)
}

/// A TCP connection to `server` from `ip` (another loopback address is another source).
async fn connect_from(ip: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Sends an OPTIONS and returns the answer's status, or what came instead.
async fn ping(stream: &mut TcpStream, branch: &str) -> Result<u16, Heard> {
    let local = stream.local_addr().unwrap();
    // A connection Siphon refused may already be reset: the read below tells.
    let _ = stream
        .write_all(tcp_options(local, branch, 0).as_bytes())
        .await;
    match hear(stream, &mut Vec::new(), Duration::from_secs(5)).await {
        Heard::Message(m) => Ok(status(&m)),
        other => Err(other),
    }
}

/// Waits until `done` holds (polling), up to `DEADLINE`.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + DEADLINE;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn one_address_cannot_take_every_tcp_slot() {
    let edits = [(
        "max_tcp_connections_per_source = 64",
        "max_tcp_connections_per_source = 2",
    )];
    let s = start_edited("", 36100, &edits).await;
    let mut first = connect_from("127.0.0.1", s.addr).await;
    let mut second = connect_from("127.0.0.1", s.addr).await;
    assert_eq!(ping(&mut first, "ps1").await.unwrap(), 200);
    assert_eq!(ping(&mut second, "ps2").await.unwrap(), 200);
    // A third connection from the same address is closed unanswered, and counted.
    let mut third = connect_from("127.0.0.1", s.addr).await;
    let refused = ping(&mut third, "ps3").await;
    assert!(matches!(refused, Err(Heard::Closed)), "{refused:?}");
    assert_eq!(get(&s.counters.tcp_rejected), 1);
    // Another address is served.
    let mut other = connect_from("127.0.0.2", s.addr).await;
    assert_eq!(ping(&mut other, "ps4").await.unwrap(), 200);
    // A slot given back can be taken again.
    drop(first);
    let end = Instant::now() + DEADLINE;
    loop {
        let mut again = connect_from("127.0.0.1", s.addr).await;
        if ping(&mut again, "ps5").await.is_ok_and(|code| code == 200) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the closed connection's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// One failed attempt on an open connection: REGISTER, 401, REGISTER with a wrong
/// password; the final status.
async fn wrong_password(stream: &mut TcpStream, n: u32) -> u16 {
    let local = stream.local_addr().unwrap();
    let call = format!("brute{n}");
    let over_tcp = |text: String| text.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let mut buf = Vec::new();
    let first = over_tcp(register_request(local, "1001", &call, 1, None));
    stream.write_all(first.as_bytes()).await.unwrap();
    let Heard::Message(challenge) = hear(stream, &mut buf, Duration::from_secs(5)).await else {
        panic!("no challenge");
    };
    assert_eq!(status(&challenge), 401, "{challenge}");
    let guess = format!("guess{n}");
    let auth = answer_challenge(
        &challenge_of(&challenge),
        "1001",
        &guess,
        "REGISTER",
        "sip:127.0.0.1",
        1,
    );
    let second = over_tcp(register_request(local, "1001", &call, 2, Some(&auth)));
    stream.write_all(second.as_bytes()).await.unwrap();
    match hear(stream, &mut buf, Duration::from_secs(5)).await {
        Heard::Message(m) => status(&m),
        other => panic!("no answer to the credentials: {other:?}"),
    }
}

#[tokio::test]
async fn a_source_blocked_for_brute_force_gets_nothing_more_on_its_open_connection() {
    let edits = [("auth_failures_to_block = 10", "auth_failures_to_block = 3")];
    let s = start_edited("", 36200, &edits).await;
    let mut attacker = connect_from("127.0.0.1", s.addr).await;
    for n in 0..3 {
        assert_eq!(wrong_password(&mut attacker, n).await, 403);
    }
    // The third 403 went out after the block: the same connection now gets no answer,
    // and Siphon drops it.
    assert_eq!(get(&s.counters.auth_blocks), 1);
    let local = attacker.local_addr().unwrap();
    let more = register_request(local, "1001", "brute9", 1, None).replace("/UDP", "/TCP");
    let _ = attacker.write_all(more.as_bytes()).await;
    let heard = hear(&mut attacker, &mut Vec::new(), Duration::from_secs(10)).await;
    assert!(matches!(heard, Heard::Closed), "{heard:?}");
    assert!(get(&s.counters.blocked_drops) >= 1);
    // Another address is served as before.
    let mut honest = connect_from("127.0.0.2", s.addr).await;
    assert_eq!(ping(&mut honest, "bf1").await.unwrap(), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_tls_client_that_never_finishes_its_handshake_is_closed_soon() {
    let cert = SelfSignedCert::new("handshake");
    let tls_lines = cert.config();
    let edits = [
        ("drain_timeout_s = 0", tls_lines.as_str()),
        ("tls_handshake_timeout_s = 5", "tls_handshake_timeout_s = 1"),
    ];
    let s = start_edited("", 36300, &edits).await;
    // Connects and says nothing: no ClientHello.
    let mut silent = TcpStream::connect(s.tls.unwrap()).await.unwrap();
    let heard = hear(&mut silent, &mut Vec::new(), Duration::from_secs(15)).await;
    assert!(matches!(heard, Heard::Closed), "{heard:?}");
    assert!(eventually(|| get(&s.counters.tls_handshake_failures) == 1).await);
    s.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_loses_its_connection_and_slot() {
    let edits = [
        ("max_message_size = 16384", "max_message_size = 65000"),
        ("max_tcp_connections = 1024", "max_tcp_connections = 1"),
        ("tcp_write_timeout_s = 10", "tcp_write_timeout_s = 1"),
    ];
    let s = start_edited("", 36400, &edits).await;
    // A small receive buffer, never read: Siphon's answers (about 60 kB each, for 800
    // Vias) soon fill it and Siphon's send buffer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(s.addr).await.unwrap();
    let local = stalled.local_addr().unwrap();
    let flood = async {
        for n in 0..200 {
            let request = tcp_options(local, &format!("st{n}"), 800);
            if stalled.write_all(request.as_bytes()).await.is_err() {
                break; // Siphon dropped the connection
            }
        }
    };
    tokio::time::timeout(DEADLINE, flood).await.unwrap();
    // The stalled peer held the only slot; once it is dropped another client is served.
    let end = Instant::now() + DEADLINE;
    loop {
        let mut next = connect_from("127.0.0.1", s.addr).await;
        if ping(&mut next, "st-next")
            .await
            .is_ok_and(|code| code == 200)
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the stalled connection kept the only slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&s.counters.tcp_write_timeouts), 1);
    let metrics = http(s.http, "GET", "/metrics", None, None).await;
    assert!(
        metrics
            .body
            .contains("siphon_sip_tcp_write_timeouts_total 1"),
        "{}",
        metrics.body
    );
    drop(stalled);
    s.stop().await;
}
