//! When the network misbehaves: reconnect with a bounded buffer and exact loss accounting,
//! required forks that cannot connect, hostile services, slow readers, dead peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use serde_json::json;
use siphon_analytics::Outgoing;
use siphon_fork::{
    Encoding, ForkConfig, ForkState, ForkStats, Instant, Mode, ServiceCommand, start,
};
use tokio::net::TcpListener;

/// A port that refuses connections for as long as the returned socket lives: bound (so
/// nothing else can take it meanwhile, as could happen to a port merely closed again) but
/// not listening.
fn dead_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn reconnects_to_a_restarted_service_delivering_the_buffer_and_counting_the_loss() {
    let svc1 = service().await;
    let port = svc1.local_addr().port();
    let mut cfg = config(svc1.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::Pcmu;
    cfg.buffer = Duration::from_millis(200); // 10 frames
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();

    push(&mut fork, 0..20, 160).await;
    wait(&svc1, &id, "20 frames", |r| r.audio.len() == 20).await;
    let first = svc1.stream(&id).unwrap();
    svc1.kill().await;
    wait_state(&fork, ForkState::Reconnecting).await;

    // 30 frames while down: the buffer keeps the newest 10.
    push(&mut fork, 20..50, 160).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let svc2 = siphon_analytics::serve(listener, quiet()).unwrap();
    let rec = wait(&svc2, &id, "buffered frames", |r| r.audio.len() == 10).await;
    wait_state(&fork, ForkState::Connected).await;
    assert_eq!(rec.start().unwrap()["resumed"], json!(true));
    assert_eq!(rec.start().unwrap()["streamId"], json!(id));

    let stats = fork.stop("hangup").wait().await;
    let rec = wait(&svc2, &id, "stop", |r| r.stop.is_some()).await;

    for (i, f) in first.audio.iter().enumerate() {
        assert_eq!(f.data, frame(i, 160));
    }
    for (k, f) in rec.audio.iter().enumerate() {
        assert_eq!(f.data, frame(40 + k, 160), "the oldest were dropped");
    }
    let pushed = ForkStats::get(&stats.frames_pushed);
    let sent = ForkStats::get(&stats.frames_sent);
    assert_eq!(pushed, 50);
    assert_eq!(sent, 30);
    assert_eq!(ForkStats::get(&stats.frames_dropped_disconnected), 20);
    assert_eq!(sent + stats.frames_dropped(), pushed);
    assert_eq!(ForkStats::get(&stats.reconnects), 1);
    assert_eq!(
        ForkStats::get(&stats.connects),
        2,
        "the first connection and the reconnection"
    );
    assert_eq!(
        rec.stop.unwrap(),
        json!({
            "event": "stop", "reason": "hangup",
            "framesSent": 30, "framesDropped": 20,
            "framesDroppedQueueFull": 0, "framesDroppedDisconnected": 20, "framesDroppedSlow": 0,
            "reconnects": 1
        })
    );
    svc2.shutdown().await;
}

#[tokio::test]
async fn required_fork_to_a_dead_port_fails_within_the_connect_timeout() {
    let (_held, port) = dead_port();
    let mut cfg = config(format!("ws://127.0.0.1:{port}/native"), Mode::Native);
    cfg.required = true;
    // Not the default (3 s): giving up after about 1 s shows this setting is the one used.
    cfg.connect_timeout = Duration::from_millis(1000);
    let t0 = Instant::now();
    let mut fork = start(cfg, meta());
    match next_cmd(&mut fork).await {
        ServiceCommand::Failed(reason) => assert!(reason.contains("could not connect"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "kept trying: {elapsed:?}"
    );
    // Gave up at the timeout, not later (1.5 s to spare for a loaded machine, and still
    // short of the 3 s default).
    assert!(elapsed <= Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(fork.state(), ForkState::Failed);
    assert!(ForkStats::get(&fork.stats().connect_failures) >= 2);
    assert_eq!(fork.recv().await, None);
    // Frames pushed to a dead fork are counted, not lost silently.
    fork.send_audio(frame(0, 160), Instant::now());
    assert_eq!(ForkStats::get(&fork.stats().frames_dropped_disconnected), 1);
}

#[tokio::test]
async fn wss_to_a_plain_server_is_a_connection_failure_not_a_panic() {
    let svc = service().await;
    let mut cfg = config(format!("wss://{}/native", svc.local_addr()), Mode::Native);
    cfg.required = true;
    cfg.connect_timeout = Duration::from_millis(400);
    let mut fork = start(cfg, meta());
    match next_cmd(&mut fork).await {
        ServiceCommand::Failed(reason) => assert!(reason.contains("could not connect"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(svc.streams().is_empty());
    svc.shutdown().await;
}

#[tokio::test]
async fn best_effort_fork_to_a_dead_port_keeps_the_call_going() {
    let (_held, port) = dead_port();
    let mut cfg = config(format!("ws://127.0.0.1:{port}/native"), Mode::Native);
    cfg.connect_timeout = Duration::from_millis(200);
    let mut fork = start(cfg, meta());
    push(&mut fork, 0..5, 320).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!fork.state().is_final(), "{:?}", fork.state());
    assert_eq!(fork.try_recv(), None, "no Failed for a best-effort fork");
    let stats = fork.stop("hangup").wait().await;
    assert_eq!(stats.state(), ForkState::Stopped);
    assert_eq!(ForkStats::get(&stats.frames_dropped_disconnected), 5);
    assert_eq!(ForkStats::get(&stats.frames_sent), 0);
}

#[tokio::test]
async fn oversized_message_closes_the_fork_with_1009_not_the_call() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.max_message_bytes = 4096;
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "start", |r| r.start().is_some()).await;
    svc.send(&id, Outgoing::Text("x".repeat(5000)));
    let rec = wait(&svc, &id, "close", |r| r.closed()).await;
    let (code, reason) = rec.closes[0].clone().expect("a close frame");
    assert_eq!(code, 1009);
    assert!(reason.contains("exceeds"), "{reason}");
    assert_eq!(tokio::time::timeout(WAIT, fork.recv()).await.unwrap(), None);
    assert_eq!(fork.state(), ForkState::Failed);
    // No reconnect after a protocol violation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(svc.stream(&id).unwrap().connections, 1);
    fork.send_audio(frame(0, 320), Instant::now());
    fork.stop("hangup").wait().await;
}

#[tokio::test]
async fn malformed_messages_close_the_fork_with_a_reason() {
    let cases = [
        (
            Mode::Native,
            Outgoing::Text("{not json".into()),
            1007,
            "invalid JSON",
        ),
        (
            Mode::Twilio,
            Outgoing::json(json!({"event": "media", "media": {"payload": "%%%"}})),
            1007,
            "base64",
        ),
        (Mode::Twilio, Outgoing::Binary(frame(0, 10)), 1003, "binary"),
        (
            Mode::AudioFork,
            Outgoing::json(
                json!({"type": "playAudio", "data": {"audioContentType": "wav", "audioContent": "AAAA"}}),
            ),
            1007,
            "WAV",
        ),
        (
            Mode::AudioFork,
            Outgoing::Binary(frame(0, 3)),
            1007,
            "16-bit",
        ),
    ];
    let svc = service().await;
    for (mode, msg, want_code, want_reason) in cases {
        let path = match mode {
            Mode::Native => siphon_analytics::Mode::Native,
            Mode::Twilio => siphon_analytics::Mode::Twilio,
            Mode::AudioFork => siphon_analytics::Mode::AudioFork,
        };
        let mut fork = start(config(svc.url(path), mode), meta());
        let id = fork.stream_id().to_string();
        wait(&svc, &id, "start", |r| r.start().is_some()).await;
        svc.send(&id, msg);
        let rec = wait(&svc, &id, "close", |r| r.closed()).await;
        let (code, reason) = rec.closes[0].clone().expect("close frame");
        assert_eq!(code, want_code, "{mode:?}: {reason}");
        assert!(reason.contains(want_reason), "{mode:?}: {reason}");
        assert_eq!(tokio::time::timeout(WAIT, fork.recv()).await.unwrap(), None);
        assert_eq!(fork.state(), ForkState::Failed);
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn service_closing_normally_ends_the_fork_without_reconnecting() {
    let svc = service().await;
    let mut fork = start(
        config(svc.url(siphon_analytics::Mode::Native), Mode::Native),
        meta(),
    );
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "start", |r| r.start().is_some()).await;
    svc.send(&id, Outgoing::Close(1000, "bot finished".into()));
    assert_eq!(tokio::time::timeout(WAIT, fork.recv()).await.unwrap(), None);
    assert_eq!(fork.state(), ForkState::Stopped);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(svc.stream(&id).unwrap().connections, 1);
    svc.shutdown().await;
}

/// Accepts WebSocket connections and then never reads from them.
async fn deaf_service() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(sock).await {
                held.push(ws);
            }
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_slow_reader_loses_its_own_frames_and_never_blocks_the_caller() {
    let (port, task) = deaf_service().await;
    let mut cfg: ForkConfig = config(format!("ws://127.0.0.1:{port}/"), Mode::Native);
    cfg.buffer = Duration::from_millis(200);
    cfg.stop_timeout = Duration::from_millis(300);
    cfg.ping_interval = Duration::ZERO;
    let mut fork = start(cfg, meta());
    wait_state(&fork, ForkState::Connected).await;
    // 64 KiB frames fill the socket buffers quickly.
    let big = frame(1, 64 * 1024);
    let mut slowest = Duration::ZERO;
    for _ in 0..400 {
        let t = std::time::Instant::now();
        fork.send_audio(big.clone(), Instant::now());
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A call takes microseconds; waiting for this deaf peer would take until the stop
    // timeout or forever. The bound only has to be far from both, and above what a loaded
    // machine adds by preempting the thread during the call (several milliseconds).
    assert!(
        slowest < Duration::from_millis(100),
        "send_audio took {slowest:?}"
    );
    let stats = fork.stop("hangup").wait().await;
    let pushed = ForkStats::get(&stats.frames_pushed);
    let sent = ForkStats::get(&stats.frames_sent);
    let slow = ForkStats::get(&stats.frames_dropped_slow);
    assert_eq!(pushed, 400);
    assert!(slow > 0, "sent {sent}, dropped {}", stats.frames_dropped());
    assert!(sent < 400);
    assert_eq!(sent + stats.frames_dropped(), pushed);
    task.abort();
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped_and_retried() {
    let (port, task) = deaf_service().await;
    let mut cfg = config(format!("ws://127.0.0.1:{port}/"), Mode::Native);
    // Each connection lasts two ping periods (1 s), long enough to be seen connected.
    cfg.ping_interval = Duration::from_millis(500);
    let t0 = Instant::now();
    let fork = start(cfg, meta());
    wait_state(&fork, ForkState::Connected).await;
    wait_state(&fork, ForkState::Reconnecting).await;
    // Not dropped before two periods without an answer (counted from before the connection).
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    wait_state(&fork, ForkState::Connected).await;
    assert_eq!(ForkStats::get(&fork.stats().reconnects), 1);
    fork.stop("hangup").wait().await;
    task.abort();
}

#[tokio::test]
async fn a_replying_peer_keeps_the_connection_alive() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    // Four periods; a pong late by up to a period (a loaded machine) is still in time.
    cfg.ping_interval = Duration::from_millis(500);
    let fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait_state(&fork, ForkState::Connected).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(fork.state(), ForkState::Connected);
    assert_eq!(ForkStats::get(&fork.stats().reconnects), 0);
    fork.stop("hangup").wait().await;
    assert_eq!(svc.stream(&id).unwrap().connections, 1);
    svc.shutdown().await;
}

#[tokio::test]
async fn frames_beyond_the_queue_are_counted_as_queue_full() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.queue_frames = 4;
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait_state(&fork, ForkState::Connected).await;
    // Without yielding, the fork task cannot drain: 4 fit, 6 are refused.
    for i in 0..10 {
        fork.send_audio(frame(i, 320), Instant::now());
    }
    let stats = fork.stop("hangup").wait().await;
    assert_eq!(ForkStats::get(&stats.frames_dropped_queue_full), 6);
    assert_eq!(ForkStats::get(&stats.frames_sent), 4);
    let rec = wait(&svc, &id, "stop", |r| r.stop.is_some()).await;
    assert_eq!(rec.stop.unwrap()["framesDroppedQueueFull"], 6);
    svc.shutdown().await;
}

#[tokio::test]
async fn raw_websocket_client_sees_the_start_first() {
    // The reference service is not the only consumer: a bare tokio-tungstenite server sees
    // the native start as the first frame.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fork = start(
        config(format!("ws://127.0.0.1:{port}/x"), Mode::Native),
        meta(),
    );
    let (sock, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(sock).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(v["event"], "start");
    assert_eq!(v["streamId"], fork.stream_id());
    fork.stop("hangup");
}

/// The index of the frame `data` is (see [`frame`]), among the first `n`.
fn frame_index(data: &[u8], n: usize) -> Option<usize> {
    (0..n).find(|&i| frame(i, data.len()) == data)
}

#[tokio::test]
async fn audio_keeps_flowing_after_reconnecting_to_a_restarted_service() {
    // A 20 ms clock pushes frames through a kill and a restart, as a call would; every
    // frame pushed once the fork is back must reach the new service, in order, without
    // waiting for the stop's final flush.
    const LEN: usize = 320;
    // The restart is at frame 45; the fork must be back 20 frames before the end, i.e. within
    // 80 frames (at least 1.6 s: the clock waits out a stall instead of catching up) while
    // it retries every 100-300 ms.
    const TOTAL: usize = 145;
    let svc1 = service().await;
    let port = svc1.local_addr().port();
    let mut cfg = config(svc1.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.reconnect_min = Duration::from_millis(100);
    cfg.reconnect_max = Duration::from_millis(300);
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait_state(&fork, ForkState::Connected).await;

    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut svc1 = Some(svc1);
    let mut svc2 = None;
    let mut resumed_at = None;
    for i in 0..TOTAL {
        tick.tick().await;
        if i == 20 {
            svc1.take().unwrap().kill().await;
        }
        if i == 45 {
            let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            svc2 = Some(siphon_analytics::serve(listener, quiet()).unwrap());
        }
        if resumed_at.is_none()
            && fork.state() == ForkState::Connected
            && ForkStats::get(&fork.stats().reconnects) == 1
        {
            resumed_at = Some(i);
        }
        fork.send_audio(frame(i, LEN), Instant::now());
    }
    let svc2 = svc2.unwrap();
    let resumed_at = resumed_at.expect("the fork reconnected while frames were flowing");
    assert!(
        resumed_at < TOTAL - 20,
        "reconnected late, at frame {resumed_at}"
    );

    // Everything pushed has reached the service (or been counted as dropped) before the
    // fork is stopped: stop flushes, so checking after it would hide a stalled writer.
    let last = frame(TOTAL - 1, LEN);
    let rec = svc2
        .wait_stream(&id, WAIT, |r| {
            r.audio.last().is_some_and(|f| f.data == last)
        })
        .await;
    let stats = fork.stats();
    let Some(rec) = rec else {
        let got: Vec<_> = svc2
            .stream(&id)
            .map(|r| {
                r.audio
                    .iter()
                    .map(|f| frame_index(&f.data, TOTAL))
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "frame {} never arrived (reconnected at frame {resumed_at}); the new service got \
             {got:?}; pushed {} sent {} dropped {}",
            TOTAL - 1,
            ForkStats::get(&stats.frames_pushed),
            ForkStats::get(&stats.frames_sent),
            stats.frames_dropped(),
        );
    };
    let pushed = ForkStats::get(&stats.frames_pushed);
    let sent = ForkStats::get(&stats.frames_sent);
    assert_eq!(pushed, TOTAL as u64);
    assert_eq!(
        sent + stats.frames_dropped(),
        pushed,
        "every frame accounted for"
    );
    assert_eq!(ForkStats::get(&stats.reconnects), 1);
    assert_eq!(rec.start().unwrap()["resumed"], json!(true));

    // The new service got a run of consecutive frames, in order, ending with the newest and
    // covering every frame pushed since the reconnect.
    let got: Vec<usize> = rec
        .audio
        .iter()
        .map(|f| frame_index(&f.data, TOTAL).expect("a frame we pushed"))
        .collect();
    let first = got[0];
    assert!(first <= resumed_at, "frames from {resumed_at} on: {got:?}");
    assert_eq!(
        got,
        (first..TOTAL).collect::<Vec<_>>(),
        "in order, none missing"
    );

    let stats = fork.stop("hangup").wait().await;
    assert_eq!(
        ForkStats::get(&stats.frames_sent) + stats.frames_dropped(),
        ForkStats::get(&stats.frames_pushed)
    );
    svc2.shutdown().await;
}
