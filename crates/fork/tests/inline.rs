//! Forks started with `start_inline`: the test's task plays the call's media task, polling
//! `Fork::drive` in its select loop next to a 20 ms clock, as `media/leg.rs` does. Nothing
//! else runs the fork: if `drive` did not write, read, connect or close, these fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use common::*;
use siphon_fork::{
    Encoding, Fork, ForkState, ForkStats, Instant, Mode, ServiceCommand, start_inline,
};

/// The media task's loop: one frame per 20 ms tick for `frames` ticks, then `extra` more
/// ticks without audio, collecting every command the service sent.
async fn media_loop(fork: &mut Fork, frames: usize, extra: usize) -> Vec<ServiceCommand> {
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let mut got = Vec::new();
    let mut tick = 0;
    let len = fork.format().frame_bytes();
    while tick < frames + extra {
        tokio::select! {
            _ = clock.tick() => {
                if tick < frames {
                    fork.send_audio(frame(tick, len), Instant::now());
                }
                while let Some(c) = fork.try_recv() {
                    got.push(c);
                }
                tick += 1;
            }
            () = poll_fn(|cx| {
                fork.drive(cx);
                Poll::Pending
            }) => {}
        }
    }
    got
}

#[tokio::test]
async fn an_inline_fork_streams_reads_playback_echoes_marks_and_stops() {
    let opts = siphon_analytics::Options {
        echo: true,
        mark_every: Some(5),
        ..quiet()
    };
    let svc = siphon_analytics::bind("127.0.0.1:0", opts).await.unwrap();
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::Pcmu;
    let mut fork = start_inline(cfg, meta());
    let id = fork.stream_id().to_string();

    // Frames pushed before the connection is up wait in the backlog and go out once it is.
    let got = media_loop(&mut fork, 25, 25).await;
    let echoed: Vec<_> = got
        .iter()
        .filter_map(|c| match c {
            ServiceCommand::Audio { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(echoed.len(), 25, "every frame played back: {got:?}");
    for (i, data) in echoed.iter().enumerate() {
        assert_eq!(data, &frame(i, 160));
    }
    assert!(got.contains(&ServiceCommand::Mark("echo-5".into())));
    assert_eq!(fork.state(), ForkState::Connected);

    fork.mark_played("echo-5".into());
    fork.send_dtmf('9', 100);
    let _ = media_loop(&mut fork, 0, 3).await;
    let rec = wait(&svc, &id, "mark echo and dtmf", |r| {
        !r.marks.is_empty() && !r.dtmf.is_empty()
    })
    .await;
    assert_eq!(rec.audio.len(), 25);

    let stats = fork.stop("hangup").wait().await;
    assert_eq!(stats.state(), ForkState::Stopped);
    assert_eq!(ForkStats::get(&stats.frames_sent), 25);
    assert_eq!(stats.frames_dropped(), 0);
    let rec = wait(&svc, &id, "stop and close", |r| {
        r.stop.is_some() && r.closed()
    })
    .await;
    let stop = rec.stop.unwrap();
    assert_eq!(stop["reason"], "hangup");
    assert_eq!(stop["framesSent"], 25);
    assert_eq!(stop["framesDroppedQueueFull"], 0);
    svc.shutdown().await;
}

#[tokio::test]
async fn a_dropped_inline_fork_still_says_stop() {
    let svc = service().await;
    let cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    let mut fork = start_inline(cfg, meta());
    let id = fork.stream_id().to_string();
    let _ = media_loop(&mut fork, 5, 5).await;
    drop(fork);
    let rec = wait(&svc, &id, "stop and close", |r| {
        r.stop.is_some() && r.closed()
    })
    .await;
    assert_eq!(rec.stop.unwrap()["reason"], "fork dropped");
    assert_eq!(rec.audio.len(), 5);
    svc.shutdown().await;
}

#[tokio::test]
async fn a_required_inline_fork_that_cannot_connect_asks_to_end_the_call() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut cfg = config(format!("ws://127.0.0.1:{port}/"), Mode::Native);
    cfg.required = true;
    cfg.connect_timeout = Duration::from_millis(300);
    let mut fork = start_inline(cfg, meta());
    let got = media_loop(&mut fork, 30, 0).await;
    assert!(
        matches!(got.first(), Some(ServiceCommand::Failed(_))),
        "got {got:?}"
    );
    assert_eq!(fork.state(), ForkState::Failed);
    let stats = fork.stop("call ended").wait().await;
    // Every frame handed over is accounted for.
    assert_eq!(
        ForkStats::get(&stats.frames_pushed),
        ForkStats::get(&stats.frames_sent) + stats.frames_dropped()
    );
}

/// Drives the fork (no audio) until `state`, or fails after [`WAIT`].
async fn drive_until(fork: &mut Fork, state: ForkState) {
    let deadline = Instant::now() + WAIT;
    while fork.state() != state {
        assert!(Instant::now() < deadline, "fork stayed {:?}", fork.state());
        let _ = media_loop(fork, 0, 1).await;
    }
}

#[tokio::test]
async fn an_inline_fork_reconnects_to_a_restarted_service_and_resumes() {
    let svc1 = service().await;
    let port = svc1.local_addr().port();
    let mut cfg = config(svc1.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::Pcmu;
    cfg.buffer = Duration::from_millis(200); // 10 frames
    let mut fork = start_inline(cfg, meta());
    let id = fork.stream_id().to_string();
    let _ = media_loop(&mut fork, 5, 3).await;
    wait(&svc1, &id, "5 frames", |r| r.audio.len() == 5).await;
    svc1.kill().await;
    drive_until(&mut fork, ForkState::Reconnecting).await;

    // 15 frames while down: the backlog keeps the newest 10.
    let _ = media_loop(&mut fork, 15, 0).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let svc2 = siphon_analytics::serve(listener, quiet()).unwrap();
    drive_until(&mut fork, ForkState::Connected).await;
    let _ = media_loop(&mut fork, 0, 3).await;
    let rec = wait(&svc2, &id, "buffered frames", |r| r.audio.len() == 10).await;
    assert_eq!(rec.start().unwrap()["resumed"], true);
    let stats = fork.stop("hangup").wait().await;
    assert_eq!(ForkStats::get(&stats.reconnects), 1);
    assert_eq!(ForkStats::get(&stats.frames_sent), 15);
    assert_eq!(ForkStats::get(&stats.frames_dropped_disconnected), 5);
    svc2.shutdown().await;
}
