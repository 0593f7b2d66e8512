//! Configuration from TOML, forks that cannot start, and a multi-threaded runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde::Deserialize;
use siphon_fork::{
    Encoding, ForkConfig, ForkState, ForkStats, Instant, Mix, Mode, ServiceCommand, TlsRoots,
    Tracks, start,
};

#[derive(Deserialize)]
struct Dialplan {
    forks: Vec<ForkConfig>,
}

#[derive(Deserialize)]
struct File {
    dialplan: Dialplan,
}

#[test]
fn fork_config_reads_from_the_servers_toml_with_defaults() {
    let text = r#"
[[dialplan.forks]]
url = "wss://stt.example.com/v1/stream"
mode = "twilio"
tracks = "both"
custom_parameters = { lang = "en-US" }
headers = { Authorization = "Bearer abc" }
required = true
connect_timeout_ms = 1500
buffer_ms = 500

[[dialplan.forks]]
url = "ws://127.0.0.1:8080/audio-fork"
mode = "audio-fork"
sample_rate = 16000
mix = "mixed"
headers = [["X-Tenant", "7"], ["X-Tenant", "8"]]
tls_roots = "native"
"#;
    let f: File = toml::from_str(text).unwrap();
    let a = &f.dialplan.forks[0];
    assert_eq!(a.mode, Mode::Twilio);
    assert_eq!(a.tracks, Tracks::Both);
    assert!(a.required);
    assert_eq!(a.connect_timeout, Duration::from_millis(1500));
    assert_eq!(a.buffer, Duration::from_millis(500));
    assert_eq!(
        a.headers,
        vec![("Authorization".into(), "Bearer abc".into())]
    );
    assert_eq!(a.custom_parameters["lang"], "en-US");
    // Defaults.
    assert_eq!(a.max_message_bytes, 1 << 20);
    assert_eq!(a.ping_interval, Duration::from_secs(10));
    assert_eq!(a.tls_roots, TlsRoots::Webpki);
    assert!(a.validate().is_ok());
    let b = &f.dialplan.forks[1];
    assert_eq!(b.mode, Mode::AudioFork);
    assert_eq!(b.mix, Mix::Mono);
    assert_eq!(b.encoding, Encoding::L16);
    assert_eq!(b.headers.len(), 2);
    assert_eq!(b.tls_roots, TlsRoots::Native);
    assert_eq!(b.effective_format().sample_rate, 16000);

    let unknown = "[[dialplan.forks]]\nurl = \"ws://x\"\nsample_rte = 8000\n";
    assert!(toml::from_str::<File>(unknown).is_err());
}

#[test]
fn without_a_runtime_the_fork_fails_instead_of_panicking() {
    let mut cfg = ForkConfig::new("ws://127.0.0.1:9/", Mode::Native);
    cfg.required = true;
    let mut fork = start(cfg, meta());
    assert_eq!(fork.state(), ForkState::Failed);
    assert!(matches!(fork.try_recv(), Some(ServiceCommand::Failed(r)) if r.contains("runtime")));
    fork.send_audio(frame(0, 320), Instant::now());
    assert_eq!(ForkStats::get(&fork.stats().frames_dropped_disconnected), 1);
    drop(fork.stop("hangup"));
}

#[tokio::test]
async fn an_invalid_configuration_fails_the_fork() {
    let mut cfg = ForkConfig::new("http://example.com", Mode::Native);
    cfg.required = true;
    let mut fork = start(cfg, meta());
    assert_eq!(fork.state(), ForkState::Failed);
    match next_cmd(&mut fork).await {
        ServiceCommand::Failed(r) => assert!(r.contains("ws://"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fork.recv().await, None);

    // Best effort: failed, but no command asking to end the call.
    let mut cfg = ForkConfig::new("ws://x", Mode::Native);
    cfg.sample_rate = 11025;
    let mut bad = start(cfg, meta());
    assert_eq!(bad.state(), ForkState::Failed);
    assert_eq!(bad.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_forks_on_a_multi_threaded_runtime() {
    let svc = service().await;
    let mut forks = Vec::new();
    for i in 0..20 {
        let mode = [Mode::Native, Mode::Twilio, Mode::AudioFork][i % 3];
        let path = [
            siphon_analytics::Mode::Native,
            siphon_analytics::Mode::Twilio,
            siphon_analytics::Mode::AudioFork,
        ][i % 3];
        forks.push(start(config(svc.url(path), mode), meta()));
    }
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    for n in 0..25 {
        clock.tick().await;
        for f in &mut forks {
            f.send_audio(frame(n, f.format().frame_bytes()), Instant::now());
        }
    }
    let ids: Vec<String> = forks.iter().map(|f| f.stream_id().to_string()).collect();
    // Stop flushes what a connected fork buffered; a fork still connecting when stopped
    // would drop it. However slow the 20 connections are, each is up before its stop.
    for f in &forks {
        wait_state(f, ForkState::Connected).await;
    }
    for f in forks {
        let stats = f.stop("hangup").wait().await;
        assert_eq!(ForkStats::get(&stats.frames_sent), 25);
    }
    for id in ids {
        let rec = wait(&svc, &id, "stop", |r| r.stop.is_some()).await;
        assert_eq!(rec.audio.len(), 25);
        for (n, f) in rec.audio.iter().enumerate() {
            assert_eq!(f.data.len(), frame(n, f.data.len()).len());
            assert_eq!(f.data, frame(n, f.data.len()));
        }
    }
    svc.shutdown().await;
}
