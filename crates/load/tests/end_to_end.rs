//! The generator and the sink against a real Siphon in this process: echo (600), fork (700)
//! and digest (650), a few calls of two seconds each. Checks that every figure the benchmark
//! reports is actually produced and adds up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use siphon_load::generator::{self, Auth, Config};
use siphon_load::report::LevelResult;

/// Starts Siphon on its own runtime thread with `config` (SIP port 0); returns its address.
fn start_siphon(config: String) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = siphon_server::Config::parse(&config).unwrap();
            let server = siphon_server::Server::bind(config).await.unwrap();
            tx.send(server.sip_addr()).unwrap();
            server.run(std::future::pending()).await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn start_sink() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || siphon_load::sink::serve(listener, true));
    addr
}

fn config(rtp_min: u16, sink: SocketAddr) -> String {
    format!(
        r#"
[sip]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[rtp]
port_min = {rtp_min}
port_max = {}
[[accounts]]
username = "1001"
password = "secret1001"
kind = "phone"
[[dialplan]]
number = "600"
action = "echo"
auth = "none"
[[accounts]]
username = "1002"
password = "secret1002"
kind = "phone"
[[dialplan]]
number = "650"
action = "echo"
auth = "digest"
[[dialplan]]
number = "1002"
action = "user"
auth = "none"
[[dialplan]]
number = "700"
action = "fork"
auth = "none"
[[dialplan.forks]]
url = "ws://{sink}/native"
mode = "native"
encoding = "l16"
sample_rate = 8000
tracks = "inbound"
"#,
        rtp_min + 98
    )
}

fn run(
    server: SocketAddr,
    number: &str,
    calls: u32,
    auth: Option<Auth>,
    sink: Option<SocketAddr>,
) -> LevelResult {
    run_as(server, number, calls, auth, sink, None)
}

fn run_as(
    server: SocketAddr,
    number: &str,
    calls: u32,
    auth: Option<Auth>,
    sink: Option<SocketAddr>,
    answer_as: Option<Auth>,
) -> LevelResult {
    generator::run(Config {
        server,
        local_ip: "127.0.0.1".parse().unwrap(),
        number: number.into(),
        calls,
        rate: 20.0,
        hold: Duration::from_secs(2),
        // Time after the last packet for what is still on its way back (the echo, the fork's
        // playback) before the BYE: tens of milliseconds, generously more on a loaded
        // machine, since every frame played back must reach the caller.
        tail: Duration::from_millis(1500),
        auth,
        sink_control: sink.map(|s| format!("ws://{s}/control?reset")),
        watch: Vec::new(),
        label: number.into(),
        socket_buffer: 1 << 20,
        // Before asking the sink for its report: the forks' last frames and stops reach it
        // at the BYE (flushed within a moment; a loaded machine takes longer).
        settle: Duration::from_millis(if sink.is_some() { 3000 } else { 0 }),
        siphon_ports: None,
        answer_as,
    })
    .unwrap()
}

#[test]
fn echo_fork_and_digest_against_siphon() {
    let sink = start_sink();
    let server = start_siphon(config(42_000, sink));

    // Echo: every call completes, audio flows both ways, the markers come back.
    let r = run(server, "600", 3, None, None);
    assert_eq!(r.calls.completed, 3, "{:?}", r.calls);
    assert_eq!(r.setup_us.count, 3);
    assert!(r.rtp.sent >= 3 * 95, "sent {}", r.rtp.sent);
    assert_eq!(r.rtp.send_errors, 0);
    assert_eq!(r.rtp.down_missing, 0);
    assert!(
        r.rtp.echo_fresh as f64 >= r.rtp.sent as f64 * 0.9,
        "{:?}",
        r.rtp
    );
    assert!(r.echo_rtt_us.count > 0 && r.echo_rtt_us.p50.unwrap() < 500_000);
    assert!(r.pacing_us.count > 0);
    assert!(r.fork.is_none());

    // Fork: every packet the generator sent reaches the sink, in order, with its latency,
    // and every frame the sink plays back reaches the caller.
    let r = run(server, "700", 3, None, Some(sink));
    assert_eq!(r.calls.completed, 3, "{:?}", r.calls);
    let f = r.fork.as_ref().expect("the sink saw the fork streams");
    assert_eq!(f.streams, 3);
    assert_eq!(f.calls_without_stream, 0);
    assert_eq!(f.up_missing, 0, "{f:?}");
    assert_eq!(f.latency_us.count, r.rtp.sent);
    assert!(f.latency_us.p99.unwrap() < 1_000_000);
    assert_eq!(f.played, r.rtp.sent);
    assert_eq!(f.played_missing, 0);
    assert_eq!(r.rtp.playback_fresh, f.played);
    assert!(r.playback_us.count > 0);
    // Nothing is lost, so the benchmark's verdict can only fail on timing: its pacing or
    // fork-latency bound (20 ms), which a loaded machine running a debug build may miss.
    assert!(
        r.passes() || r.pacing_us.p99.unwrap() >= 20_000 || f.latency_us.p99.unwrap() >= 20_000,
        "{r:?}"
    );

    // Digest: with the account the calls go through (after a 407), without they fail.
    let auth = Auth {
        user: "1001".into(),
        password: "secret1001".into(),
        prefer: None,
    };
    let r = run(server, "650", 2, Some(auth), None);
    assert_eq!(r.calls.completed, 2, "{:?}", r.calls);
    let r = run(server, "650", 1, None, None);
    assert_eq!(r.calls.failed.get("INVITE 407"), Some(&1), "{:?}", r.calls);
}

/// Bridge mode: the generator registers as 1002, calls 1002 (a `user` route: Siphon is a
/// B2BUA and relays the media) and answers as the phone; each leg's audio reaches the other.
#[test]
fn bridged_calls_through_a_user_route() {
    let sink = start_sink();
    let server = start_siphon(config(42_200, sink));
    let phone = Auth {
        user: "1002".into(),
        password: "secret1002".into(),
        prefer: None,
    };
    let r = run_as(server, "1002", 3, None, None, Some(phone.clone()));
    assert_eq!(r.calls.completed, 3, "{:?} {:?}", r.calls, r.notes);
    // Both directions: every packet one leg sent arrived on the other, one way each.
    assert!(r.rtp.sent >= 3 * 95, "caller → callee {}", r.rtp.sent);
    assert!(
        r.rtp.down_expected >= 3 * 90,
        "callee → caller {}",
        r.rtp.down_expected
    );
    assert_eq!(r.up_missing, 0, "{:?}", r.notes);
    assert_eq!(r.rtp.down_missing, 0, "{:?}", r.notes);
    assert_eq!(r.bridge_us.count, r.rtp.sent + r.rtp.down_expected);
    assert!(r.bridge_us.p50.unwrap() < 500_000);
    assert_eq!(
        r.echo_rtt_us.count, 0,
        "nothing is echoed on a bridged call"
    );
    assert!(
        !r.notes
            .iter()
            .any(|n| n.contains("no callee leg") || n.contains("got no BYE")),
        "{:?}",
        r.notes
    );
    // A wrong password: the callee cannot register, and the run says so.
    let wrong = Auth {
        password: "nope".into(),
        ..phone
    };
    let err = generator::run(Config {
        server,
        local_ip: "127.0.0.1".parse().unwrap(),
        number: "1002".into(),
        calls: 1,
        rate: 20.0,
        hold: Duration::from_secs(1),
        tail: Duration::from_millis(100),
        auth: None,
        sink_control: None,
        watch: Vec::new(),
        label: "bridge".into(),
        socket_buffer: 1 << 20,
        settle: Duration::ZERO,
        siphon_ports: None,
        answer_as: Some(wrong),
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("REGISTER"), "{err:#}");
}
