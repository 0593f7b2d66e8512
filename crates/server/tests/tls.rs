//! SIP over TLS end to end: a certificate made at test time (rcgen), Siphon listening for
//! TLS on its own port, and a phone that speaks SIP over a real rustls connection: it
//! registers with digest authentication, calls the echo number (audio over RTP comes back),
//! and hangs up. A client that does not trust the certificate gets no SIP service.
//!
//! SIPp would be the natural peer, but Debian's sip-tester 3.6.1 is built without OpenSSL
//! ("To use a TLS transport you must compile SIPp with OpenSSL"), so the phone is this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use siphon_testkit::SelfSignedCert;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn connector(trusted: Option<&CertificateDer<'static>>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(cert) = trusted {
        roots.add(cert.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A phone on a TLS connection: SIP messages as text, framed by Content-Length.
struct TlsPhone {
    stream: TlsStream<TcpStream>,
    local: SocketAddr,
    buf: Vec<u8>,
}

impl TlsPhone {
    async fn connect(server: SocketAddr, cert: &CertificateDer<'static>) -> TlsPhone {
        let tcp = TcpStream::connect(server).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = connector(Some(cert)).connect(name, tcp).await.unwrap();
        TlsPhone {
            stream,
            local,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next whole message (5 s at most).
    async fn recv(&mut self) -> String {
        let read = async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                    let len: usize = header(&head, "Content-Length")
                        .or_else(|| header(&head, "l"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    let total = end + 4 + len;
                    if self.buf.len() >= total {
                        let msg = String::from_utf8(self.buf.drain(..total).collect()).unwrap();
                        return msg;
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "Siphon closed the TLS connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a SIP message over TLS within WAIT")
    }

    /// The next final (non-1xx) response.
    async fn final_response(&mut self) -> String {
        loop {
            let r = self.recv().await;
            if status(&r) >= 200 {
                return r;
            }
        }
    }
}

/// `text` as sent over TLS: the Via names the TLS transport.
fn over_tls(text: &str) -> String {
    text.replace("SIP/2.0/UDP", "SIP/2.0/TLS")
}

fn register(local: SocketAddr, cseq: u32, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sips:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bKtlsreg{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sips:1001@127.0.0.1>;tag=tlsreg\r\n\
         To: <sips:1001@127.0.0.1>\r\n\
         Call-ID: tls-register\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sips:1001@{local}>\r\n\
         Expires: 300\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn a_phone_registers_and_calls_over_tls() {
    let cert = SelfSignedCert::new("call");
    let s = start_edited("", 34500, &[("drain_timeout_s = 0", &cert.config())]).await;
    let tls = s.tls.expect("TLS listener");
    let mut phone = TlsPhone::connect(tls, &cert.der).await;
    let local = phone.local;

    // REGISTER with digest: challenged, then accepted.
    phone.send(&register(local, 1, None)).await;
    let challenge = phone.recv().await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let value = header(&challenge, "WWW-Authenticate").unwrap();
    let auth = siphon_sip::auth::Challenge::parse(value)
        .unwrap()
        .authorization(
            "1001",
            "secret1001",
            "REGISTER",
            "sips:127.0.0.1",
            1,
            &siphon_sip::auth::new_cnonce(),
        );
    phone.send(&register(local, 2, Some(&auth))).await;
    let ok = phone.recv().await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(
        header(&ok, "Contact").unwrap().contains("sips:1001@"),
        "{ok}"
    );

    // A call to the echo number over the same connection.
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let body = sdp(rtp.local_addr().unwrap().port(), "0", "");
    phone
        .send(&over_tls(&invite(
            local,
            "600",
            "tls-call",
            1,
            None,
            &body,
            "application/sdp",
        )))
        .await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    // The dialog's remote target is Siphon's TLS address, over TLS.
    let contact = header(&ok, "Contact").unwrap();
    assert!(
        contact.contains(&format!("{tls};transport=tls")),
        "Contact {contact} does not name the TLS listener {tls}"
    );
    let tag = to_tag(&ok);
    phone
        .send(&over_tls(&in_dialog(
            "ACK", local, "600", "tls-call", 1, &tag, "tlsack",
        )))
        .await;
    let answer = ok.split("\r\n\r\n").nth(1).unwrap();
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let remote: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for i in 0..10u16 {
        let pkt = rtp_bytes(0, i == 0, i, u32::from(i) * 160, 9, &[0x55; 160]);
        rtp.send_to(&pkt, remote).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let echoed = collect_n(&rtp, 8).await;
    assert!(echoed.len() >= 8, "only {} packets echoed", echoed.len());
    phone
        .send(&over_tls(&in_dialog(
            "BYE", local, "600", "tls-call", 2, &tag, "tlsbye",
        )))
        .await;
    assert_eq!(status(&phone.final_response().await), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_gets_no_sip() {
    let cert = SelfSignedCert::new("untrusted");
    let s = start_edited("", 34600, &[("drain_timeout_s = 0", &cert.config())]).await;
    let tls = s.tls.unwrap();
    let tcp = TcpStream::connect(tls).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let refused = connector(None).connect(name, tcp).await;
    assert!(refused.is_err(), "the handshake succeeded without trust");
    // Plain SIP sent to the TLS port is not SIP service either: the handshake fails and
    // the connection closes without an answer.
    let mut plain = TcpStream::connect(tls).await.unwrap();
    plain
        .write_all(options(plain.local_addr().unwrap(), "p1").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the connection was not closed"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("SIP/2.0 200"),
        "plain SIP answered on the TLS port"
    );
    // Both failed handshakes are counted, and Siphon still serves trusted clients.
    let counters = s.counters.clone();
    eventually(|| {
        std::future::ready(siphon_server::counters::get(&counters.tls_handshake_failures) >= 2)
    })
    .await;
    assert_eq!(
        siphon_server::counters::get(&s.counters.tls_handshake_failures),
        2
    );
    let mut phone = TlsPhone::connect(tls, &cert.der).await;
    let local = phone.local;
    phone.send(&over_tls(&options(local, "ok1"))).await;
    assert_eq!(status(&phone.recv().await), 200);
    s.stop().await;
}

/// A dialplan fork to a `wss://` service whose certificate a private CA signed, trusted
/// through the fork's `tls_ca_file`: the service (the reference analytics service behind
/// a TLS terminator on loopback) receives every frame of the call, bit-exact.
#[tokio::test]
async fn a_fork_streams_over_wss_to_a_service_with_a_private_ca() {
    use siphon_media::g711::G711;
    let siphon_testkit::PrivateCa { ca_pem, acceptor } = siphon_testkit::private_ca();
    let dir = std::env::temp_dir().join(format!("siphon-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    let service = siphon_analytics::bind(
        "127.0.0.1:0",
        siphon_analytics::Options {
            log_levels: false,
            ..siphon_analytics::Options::default()
        },
    )
    .await
    .unwrap();
    let plain = service.local_addr();
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    let terminator = tokio::spawn(async move {
        while let Ok((sock, _)) = front.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut inner) = TcpStream::connect(plain).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
            });
        }
    });

    let route = format!(
        "\n[[dialplan]]\nnumber = \"703\"\naction = \"fork\"\nauth = \"none\"\n\
         [[dialplan.forks]]\nurl = \"wss://localhost:{port}/native\"\nmode = \"native\"\n\
         encoding = \"l16\"\nsample_rate = 8000\ntracks = \"inbound\"\nrequired = true\n\
         tls_ca_file = \"{}\"\n",
        ca_file.display()
    );
    let s = start_with(&route, 34700).await;
    let call = place_call(s.addr, "703", "wss-call", "0").await;
    let sent: Vec<Vec<u8>> = (0..50).map(|i| speech_like(G711::Pcmu, i)).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, f) in sent.iter().enumerate() {
        tick.tick().await;
        let p = rtp_bytes(0, i == 0, i as u16, 160 * i as u32, 0x3333, f);
        call.rtp.send_to(&p, call.remote).await.unwrap();
    }
    let expected: Vec<u8> = sent
        .iter()
        .flatten()
        .flat_map(|b| G711::Pcmu.decode_sample(*b).to_le_bytes())
        .collect();
    // Every frame has crossed the wss hop before the hang-up (at once, or a little later on
    // a loaded machine).
    let arrived = eventually(|| {
        let streams = service.streams();
        std::future::ready(
            streams.len() == 1 && streams[0].audio_bytes(None).len() >= expected.len(),
        )
    })
    .await;
    assert!(arrived, "the service did not get every frame over wss");
    let local = call.phone.local();
    call.phone
        .send(&in_dialog(
            "BYE",
            local,
            "703",
            &call.call_id,
            2,
            &call.tag,
            "wssbye",
        ))
        .await;
    assert_eq!(status(&call.phone.recv().await), 200);
    let streams = service.streams();
    assert_eq!(streams.len(), 1, "the service saw no stream over wss");
    let got = streams[0].audio_bytes(None);
    assert!(
        got == expected,
        "wss audio differs: {} bytes, expected {}",
        got.len(),
        expected.len()
    );
    s.stop().await;
    service.shutdown().await;
    terminator.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One HTTP/1.1 request over TLS; the whole response as text.
async fn https_get(addr: SocketAddr, cert: &CertificateDer<'static>, path: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(Some(cert)).connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A peer that closes without close_notify is an error to rustls; the bytes are there.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw).to_string()
}

/// `[http] tls_cert`/`tls_key`: metrics, health and the admin API over HTTPS only.
#[tokio::test]
async fn the_http_listener_serves_https_when_configured() {
    let cert = SelfSignedCert::new("https");
    let lines = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.dir.join("cert.pem").display(),
        cert.dir.join("key.pem").display()
    );
    let s = start_edited("", 34800, &[("# token = \"change-me\"", &lines)]).await;
    let health = https_get(s.http, &cert.der, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let calls = https_get(s.http, &cert.der, "/api/calls").await;
    assert!(
        calls.starts_with("HTTP/1.1 200") && calls.contains("\"count\":0"),
        "{calls}"
    );
    let metrics = https_get(s.http, &cert.der, "/metrics").await;
    assert!(metrics.contains("siphon_calls_active"), "{metrics}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let mut plain = TcpStream::connect(s.http).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut raw)).await;
    assert!(
        !String::from_utf8_lossy(&raw).contains("HTTP/1.1 200"),
        "plain HTTP was served on the HTTPS port"
    );
    s.stop().await;
}
