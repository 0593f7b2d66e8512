//! The test harness shared by the integration tests: a real server on an ephemeral
//! loopback port (SIP, and HTTP for metrics and the admin API), a UDP "phone" that speaks
//! SIP to it as text, and a minimal HTTP/1.1 client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use siphon_media::g711::G711;
use siphon_media::packet::RtpPacket;
use siphon_server::counters::Counters;
use siphon_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a test waits for something that should happen at once (a response, a packet,
/// a counter moving): only a guard against hanging, so generous enough for a loaded
/// machine. Waits end as soon as what they wait for happens.
pub const WAIT: Duration = Duration::from_secs(20);

/// Real-time scheduling (`SCHED_RR`, priority 20) for the calling thread, when this machine
/// allows it (root, util-linux's `chrt`): for a `#[tokio::test]` (a current-thread runtime)
/// that is the test and the server it started. scripts/bench.sh runs what it measures the
/// same way. A test that checks 20 ms media timing end to end then measures Siphon's own
/// allowances (its jitter buffer's delay, its pacer's 60 ms), not how a busy machine shares
/// two cores with unrelated work: on a machine at load 10 the echo test lost frames in 9 of
/// 15 runs without this, none in 15 with it. Without the rights the test runs unchanged.
pub fn realtime() -> bool {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return false;
    };
    let Some(tid) = link.file_name().and_then(|t| t.to_str()) else {
        return false;
    };
    std::process::Command::new("chrt")
        .args(["-r", "-p", "20", tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Running {
    pub addr: SocketAddr,
    /// Metrics, health and the admin API.
    pub http: SocketAddr,
    /// SIP over TLS, when the configuration sets `tls_listen`.
    pub tls: Option<SocketAddr>,
    pub counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        self.begin_stop();
        self.join().await;
    }

    /// Signals shutdown (the drain starts) without waiting for the server to finish.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to finish (after `begin_stop`).
    pub async fn join(mut self) {
        self.task.take().unwrap().await.unwrap();
    }

    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// The embedded default on an ephemeral SIP port, RTP ports from `rtp_min` (each test
/// takes its own range so tests can run in parallel), plus `extra` TOML appended.
pub async fn start_with(extra: &str, rtp_min: u16) -> Running {
    start_edited(extra, rtp_min, &[]).await
}

/// Like `start_with`, with textual replacements applied to the default configuration.
pub async fn start_edited(extra: &str, rtp_min: u16, edits: &[(&str, &str)]) -> Running {
    // RUST_LOG=debug shows the server's logs while debugging a test.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
    let mut text = siphon_server::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:5060\"", "listen = \"127.0.0.1:0\"")
        .replace("port_min = 20000", &format!("port_min = {rtp_min}"))
        .replace("port_max = 29998", &format!("port_max = {}", rtp_min + 98))
        // Parallel tests cannot all own the demo analytics port.
        .replace("listen = \"127.0.0.1:8090\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        // Stopping a test server ends its calls at once, as before draining existed.
        .replace("drain_timeout_s = 30", "drain_timeout_s = 0")
        // Parallel test servers cannot share one registrar store (the second is refused),
        // and each starts empty: bindings in memory, a random nonce key per server.
        .replace("store = \"siphon-state/registrations.db\"\n", "")
        .replace("nonce_secret_file = \"siphon-state/nonce.key\"\n", "");
    for (from, to) in edits {
        assert!(text.contains(from), "default config lacks {from}");
        text = text.replace(from, to);
    }
    text.push_str(extra);
    let config = Config::parse(&text).unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.sip_addr();
    let http = server.http_addr();
    let tls = server.tls_addr();
    let counters = server.counters();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        http,
        tls,
        counters,
        stop: Some(tx),
        task: Some(task),
    }
}

pub struct Phone {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl Phone {
    pub async fn new(server: SocketAddr) -> Phone {
        Phone::from_ip(server, "127.0.0.1").await
    }

    /// A phone on another loopback address (Linux routes all of 127/8 to lo), so tests
    /// can have several distinct sources.
    pub async fn from_ip(server: SocketAddr, ip: &str) -> Phone {
        Phone {
            sock: UdpSocket::bind(format!("{ip}:0")).await.unwrap(),
            server,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub async fn send(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.server)
            .await
            .unwrap();
    }

    pub async fn send_bytes(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).await.unwrap();
    }

    /// The next datagram, or None after `wait`.
    pub async fn recv_within(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    pub async fn recv(&self) -> String {
        self.recv_within(WAIT)
            .await
            .expect("no response from Siphon")
    }

    /// The next response whose status is not 100.
    pub async fn final_response(&self) -> String {
        loop {
            let r = self.recv().await;
            if !r.starts_with("SIP/2.0 100") {
                return r;
            }
        }
    }
}

pub fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn options(local: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:siphon@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@127.0.0.1>;tag=t{branch}\r\n\
         To: <sip:siphon@127.0.0.1>\r\n\
         Call-ID: opt-{branch}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

pub fn sdp(port: u16, pts: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pts}\r\n{extra}"
    )
}

pub fn invite(
    local: SocketAddr,
    number: &str,
    call: &str,
    cseq: u32,
    tag: Option<&str>,
    body: &str,
    ctype: &str,
) -> String {
    let to_tag = tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{call}{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@127.0.0.1>;tag=from{call}\r\n\
         To: <sip:{number}@127.0.0.1>{to_tag}\r\n\
         Call-ID: {call}\r\n\
         CSeq: {cseq} INVITE\r\n\
         Contact: <sip:tester@{local}>\r\n\
         Content-Type: {ctype}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn in_dialog(
    method: &str,
    local: SocketAddr,
    number: &str,
    call: &str,
    cseq: u32,
    to_tag: &str,
    branch: &str,
) -> String {
    format!(
        "{method} sip:siphon@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@127.0.0.1>;tag=from{call}\r\n\
         To: <sip:{number}@127.0.0.1>;tag={to_tag}\r\n\
         Call-ID: {call}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

pub fn to_tag(response: &str) -> String {
    let to = header(response, "To").unwrap();
    to.split(";tag=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// An RTP packet as received: owned copy of the fields we check.
#[derive(Debug, Clone)]
pub struct Rtp {
    pub at: Instant,
    pub from: SocketAddr,
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

pub fn rtp_bytes(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let p = RtpPacket {
        marker,
        payload_type: pt,
        sequence_number: seq,
        timestamp: ts,
        ssrc,
        payload,
    };
    let mut out = vec![0u8; 12 + payload.len()];
    let n = p.write_to(&mut out).unwrap();
    out.truncate(n);
    out
}

/// Collects RTP arriving on `sock` for `window`: for checking that nothing (more) comes.
/// To wait for packets that must come, use [`collect_until`].
pub async fn collect(sock: &UdpSocket, window: Duration) -> Vec<Rtp> {
    let mut got = Vec::new();
    collect_into(sock, Instant::now() + window, &mut got, |_| false).await;
    got
}

/// Collects RTP arriving on `sock` until `done(&got)` holds (or [`WAIT`] passes), then for
/// `settle` more, so that a surplus packet right behind the expected ones is seen too.
pub async fn collect_until(
    sock: &UdpSocket,
    settle: Duration,
    done: impl Fn(&[Rtp]) -> bool,
) -> Vec<Rtp> {
    let mut got = Vec::new();
    if collect_into(sock, Instant::now() + WAIT, &mut got, done).await && !settle.is_zero() {
        collect_into(sock, Instant::now() + settle, &mut got, |_| false).await;
    }
    got
}

/// At least `n` packets (fewer only if [`WAIT`] passes first).
pub async fn collect_n(sock: &UdpSocket, n: usize) -> Vec<Rtp> {
    collect_until(sock, Duration::ZERO, |got| got.len() >= n).await
}

/// How many of `want` (payloads) appear in `got`, in order (not necessarily adjacent).
/// Frames can repeat (a steady tone repeats every few frames), so a frame is recognised by
/// its place in the sequence, not by its bytes alone.
pub fn in_order(got: &[Rtp], want: &[Vec<u8>]) -> usize {
    let mut it = got.iter();
    want.iter()
        .take_while(|w| it.any(|p| p.payload == **w))
        .count()
}

/// Appends what arrives until `done` holds (true) or `end` (false).
async fn collect_into(
    sock: &UdpSocket,
    end: Instant,
    got: &mut Vec<Rtp>,
    done: impl Fn(&[Rtp]) -> bool,
) -> bool {
    let mut buf = [0u8; 2048];
    loop {
        if done(got) {
            return true;
        }
        let Ok(Ok((n, from))) = tokio::time::timeout_at(end, sock.recv_from(&mut buf)).await else {
            return false;
        };
        if let Ok(p) = RtpPacket::parse(&buf[..n]) {
            got.push(Rtp {
                at: Instant::now(),
                from,
                marker: p.marker,
                pt: p.payload_type,
                seq: p.sequence_number,
                ts: p.timestamp,
                ssrc: p.ssrc,
                payload: p.payload.to_vec(),
            });
        }
    }
}

/// Polls `f` (every 20 ms) until it holds or [`WAIT`] passes; whether it held.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + WAIT;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of an unlabelled sample in Siphon's `/metrics` (None if absent).
pub async fn metric(http_addr: SocketAddr, name: &str) -> Option<f64> {
    let r = http(http_addr, "GET", "/metrics", None, None).await;
    r.body.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// A phone with an RTP socket, in an answered call to `number`.
pub struct Call {
    pub phone: Phone,
    pub rtp: UdpSocket,
    /// Siphon's RTP address from the SDP answer.
    pub remote: SocketAddr,
    pub answer: String,
    pub tag: String,
    pub call_id: String,
}

pub async fn place_call(server: SocketAddr, number: &str, call_id: &str, pts: &str) -> Call {
    let phone = Phone::new(server).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rtp.local_addr().unwrap().port();
    let extra = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n";
    let body = sdp(port, pts, extra);
    let local = phone.local();
    phone
        .send(&invite(
            local,
            number,
            call_id,
            1,
            None,
            &body,
            "application/sdp",
        ))
        .await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let answer = ok.split("\r\n\r\n").nth(1).unwrap().to_string();
    let ip = answer
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap()
        .trim()
        .to_string();
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let tag = to_tag(&ok);
    phone
        .send(&in_dialog("ACK", local, number, call_id, 1, &tag, "ack"))
        .await;
    Call {
        phone,
        rtp,
        remote: format!("{ip}:{port}").parse().unwrap(),
        answer,
        tag,
        call_id: call_id.to_string(),
    }
}

/// 20 ms of a 440 Hz sine, frame `n`, encoded with `law`.
pub fn speech_like(law: G711, n: usize) -> Vec<u8> {
    let pcm: Vec<i16> = (0..160)
        .map(|i| {
            let t = (n * 160 + i) as f64 / 8000.0;
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    let mut out = vec![0u8; 160];
    law.encode(&pcm, &mut out);
    out
}

/// An HTTP response as the tests look at it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), read to the end.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP response within WAIT");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut payload = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("HTTP status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        payload = dechunk(&payload);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(payload).expect("UTF-8 body"),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A REGISTER for `user` from `local` (UDP, expires 600), with an `Authorization` value.
pub fn register_request(
    local: SocketAddr,
    user: &str,
    call: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    register_expiring(local, user, call, cseq, "600", auth)
}

/// A REGISTER with this `Expires`; `"*"` removes every binding (`Contact: *`, expires 0).
pub fn register_expiring(
    local: SocketAddr,
    user: &str,
    call: &str,
    cseq: u32,
    expires: &str,
    auth: Option<&str>,
) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let (contact, expires) = if expires == "*" {
        ("*".to_string(), "0")
    } else {
        (format!("<sip:{user}@{local}>"), expires)
    };
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{call}r{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=reg{call}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: {contact}\r\n\
         Expires: {expires}\r\n{auth}\
         Content-Length: 0\r\n\r\n"
    )
}

/// The first challenge in a 401/407 (`WWW-Authenticate` or `Proxy-Authenticate`), parsed.
pub fn challenge_of(response: &str) -> siphon_sip::auth::Challenge {
    let value = response
        .lines()
        .find_map(|l| {
            l.strip_prefix("WWW-Authenticate: ")
                .or_else(|| l.strip_prefix("Proxy-Authenticate: "))
        })
        .unwrap_or_else(|| panic!("no challenge in {response}"));
    siphon_sip::auth::Challenge::parse(value).unwrap()
}

/// Credentials answering `challenge` as a phone would (nonce-count `nc`).
pub fn answer_challenge(
    challenge: &siphon_sip::auth::Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    challenge.authorization(
        user,
        password,
        method,
        uri,
        nc,
        &siphon_sip::auth::new_cnonce(),
    )
}

/// A SIP request or response's header values by name.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// The ACK for a non-2xx final response (same branch as the INVITE).
pub fn ack_for(invite: &str, response: &str) -> String {
    let cseq = headers(invite, "CSeq")[0]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!(
        "ACK {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        invite
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        headers(invite, "Via")[0],
        headers(invite, "From")[0],
        headers(response, "To")[0],
        headers(invite, "Call-ID")[0],
    )
}
