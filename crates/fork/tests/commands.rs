//! Service → Siphon: what the service sends arrives as ServiceCommands, marks are echoed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use common::*;
use serde_json::json;
use siphon_analytics::Outgoing;
use siphon_fork::{AudioFormat, Encoding, ForkStats, Mode, ServiceCommand, start};

fn audio(cmd: ServiceCommand) -> (AudioFormat, Bytes) {
    match cmd {
        ServiceCommand::Audio { format, data } => (format, data),
        other => panic!("expected audio, got {other:?}"),
    }
}

#[tokio::test]
async fn native_commands_arrive_in_order_and_marks_echo() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::L16;
    cfg.sample_rate = 8000;
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "start", |r| r.start().is_some()).await;

    // 50 ms of audio: two 20 ms frames now, the last 10 ms once sealed by the mark.
    let sent = frame(1, 800);
    assert!(svc.send(&id, Outgoing::Binary(sent.clone())));
    assert!(svc.send(&id, Outgoing::json(json!({"event": "mark", "name": "m1"}))));
    assert!(svc.send(
        &id,
        Outgoing::json(json!({"event": "dtmf", "digits": "12#"}))
    ));
    assert!(svc.send(&id, Outgoing::json(json!({"event": "hangup"}))));

    let l16 = AudioFormat {
        encoding: Encoding::L16,
        sample_rate: 8000,
        channels: 1,
    };
    let mut got = Vec::new();
    for _ in 0..3 {
        let (format, data) = audio(next_cmd(&mut fork).await);
        assert_eq!(format, l16);
        got.extend_from_slice(&data);
    }
    assert_eq!(got, sent);
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Mark("m1".into()));
    fork.mark_played("m1".into());
    assert_eq!(
        next_cmd(&mut fork).await,
        ServiceCommand::Dtmf("12#".into())
    );
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Hangup);
    assert_eq!(fork.try_recv(), None);

    let rec = wait(&svc, &id, "mark echo", |r| !r.marks.is_empty()).await;
    assert_eq!(
        rec.marks,
        vec![json!({"event": "mark", "name": "m1", "status": "played"})]
    );
    let stats = fork.stats();
    assert_eq!(ForkStats::get(&stats.frames_received), 1);
    assert_eq!(ForkStats::get(&stats.bytes_received), 800);
    assert_eq!(ForkStats::get(&stats.marks), 1);
    fork.stop("hangup").wait().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn native_clear_drops_queued_audio_and_echoes_pending_marks() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::Pcmu;
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "start", |r| r.start().is_some()).await;

    svc.send(&id, Outgoing::Binary(frame(0, 8000))); // one second
    svc.send(
        &id,
        Outgoing::json(json!({"event": "mark", "name": "after-prompt"})),
    );
    svc.send(&id, Outgoing::json(json!({"event": "clear"})));
    let rec = wait(&svc, &id, "cleared mark", |r| !r.marks.is_empty()).await;
    assert_eq!(
        rec.marks,
        vec![json!({"event": "mark", "name": "after-prompt", "status": "cleared"})]
    );
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Clear);
    assert_eq!(fork.try_recv(), None, "the queued second of audio is gone");
    assert_eq!(ForkStats::get(&fork.stats().clears), 1);
    fork.stop("hangup").wait().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn twilio_media_mark_clear_from_the_service() {
    let svc = service().await;
    let cfg = config(svc.url(siphon_analytics::Mode::Twilio), Mode::Twilio);
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "start", |r| r.start().is_some()).await;

    let payload = frame(3, 160);
    svc.send(
        &id,
        Outgoing::json(json!({"event": "media", "streamSid": id, "media": {"payload": BASE64.encode(&payload)}})),
    );
    svc.send(
        &id,
        Outgoing::json(json!({"event": "mark", "streamSid": id, "mark": {"name": "said-hello"}})),
    );
    let (format, data) = audio(next_cmd(&mut fork).await);
    assert_eq!(
        format,
        AudioFormat {
            encoding: Encoding::Pcmu,
            sample_rate: 8000,
            channels: 1
        }
    );
    assert_eq!(data, payload);
    assert_eq!(
        next_cmd(&mut fork).await,
        ServiceCommand::Mark("said-hello".into())
    );
    fork.mark_played("said-hello".into());
    let rec = wait(&svc, &id, "mark echo", |r| !r.marks.is_empty()).await;
    assert_eq!(
        rec.marks,
        vec![
            json!({"event": "mark", "sequenceNumber": "2", "streamSid": id, "mark": {"name": "said-hello"}})
        ]
    );

    svc.send(
        &id,
        Outgoing::json(json!({"event": "clear", "streamSid": id})),
    );
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Clear);
    // An unknown event is ignored and counted, not fatal.
    svc.send(
        &id,
        Outgoing::json(json!({"event": "sendDigits", "streamSid": id})),
    );
    svc.send(
        &id,
        Outgoing::json(json!({"event": "media", "streamSid": id, "media": {"payload": BASE64.encode([0xffu8; 160])}})),
    );
    let (_, data) = audio(next_cmd(&mut fork).await);
    assert_eq!(data.len(), 160);
    assert_eq!(ForkStats::get(&fork.stats().messages_ignored), 1);
    fork.stop("hangup").wait().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn audio_fork_play_kill_disconnect_marks_binary_and_events() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::AudioFork), Mode::AudioFork);
    cfg.sample_rate = 16000;
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "preamble", |r| r.start().is_some()).await;

    let raw = frame(5, 320); // 20 ms at 8 kHz
    svc.send(
        &id,
        Outgoing::json(json!({"type": "playAudio", "data": {
            "audioContentType": "raw", "sampleRate": 8000,
            "audioContent": BASE64.encode(&raw), "textContent": "hello"}})),
    );
    let (format, data) = audio(next_cmd(&mut fork).await);
    assert_eq!(
        format,
        AudioFormat {
            encoding: Encoding::L16,
            sample_rate: 8000,
            channels: 1
        }
    );
    assert_eq!(data, raw);

    // Bidirectional streaming: binary L16 at the fork's rate.
    let streamed = frame(6, 640);
    svc.send(&id, Outgoing::Binary(streamed.clone()));
    let (format, data) = audio(next_cmd(&mut fork).await);
    assert_eq!(format.sample_rate, 16000);
    assert_eq!(data, streamed);

    svc.send(
        &id,
        Outgoing::json(json!({"type": "mark", "data": {"name": "p1"}})),
    );
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Mark("p1".into()));
    fork.mark_played("p1".into());
    svc.send(
        &id,
        Outgoing::json(json!({"type": "transcription", "data": {"text": "hi"}})),
    );
    assert_eq!(
        next_cmd(&mut fork).await,
        ServiceCommand::Event {
            name: "transcription".into(),
            data: r#"{"text":"hi"}"#.into()
        }
    );
    svc.send(&id, Outgoing::json(json!({"type": "killAudio"})));
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Clear);
    svc.send(&id, Outgoing::json(json!({"type": "disconnect"})));
    assert_eq!(next_cmd(&mut fork).await, ServiceCommand::Hangup);
    let rec = wait(&svc, &id, "mark echo", |r| !r.marks.is_empty()).await;
    assert_eq!(
        rec.marks,
        vec![json!({"type": "mark", "data": {"name": "p1", "event": "playout"}})]
    );
    fork.stop("hangup").wait().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn audio_faster_than_real_time_is_bounded_dropping_the_oldest() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Twilio), Mode::Twilio);
    cfg.playback_buffer = Duration::from_millis(100);
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    wait(&svc, &id, "start", |r| r.start().is_some()).await;
    // One second in one message, then a mark to know it was processed.
    let second = frame(9, 8000);
    svc.send(
        &id,
        Outgoing::json(json!({"event": "media", "streamSid": id, "media": {"payload": BASE64.encode(&second)}})),
    );
    svc.send(
        &id,
        Outgoing::json(json!({"event": "mark", "streamSid": id, "mark": {"name": "end"}})),
    );
    let mut kept = Vec::new();
    loop {
        match next_cmd(&mut fork).await {
            ServiceCommand::Audio { data, .. } => kept.extend_from_slice(&data),
            ServiceCommand::Mark(m) => {
                assert_eq!(m, "end");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(kept.len(), 800, "100 ms kept");
    assert_eq!(&kept[..], &second[7200..], "the newest audio is kept");
    assert_eq!(ForkStats::get(&fork.stats().playback_dropped), 45);
    fork.stop("hangup").wait().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn reference_service_echoes_and_plays_tones_on_dtmf() {
    let opts = siphon_analytics::Options {
        echo: true,
        tone_on_dtmf: true,
        mark_every: Some(5),
        log_levels: true,
        ..quiet()
    };
    let svc = siphon_analytics::bind("127.0.0.1:0", opts).await.unwrap();
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::Pcma;
    let mut fork = start(cfg, meta());
    push(&mut fork, 0..5, 160).await;
    let mut echoed = Vec::new();
    for _ in 0..5 {
        let (format, data) = audio(next_cmd(&mut fork).await);
        assert_eq!(format.encoding, Encoding::Pcma);
        echoed.push(data);
    }
    for (i, data) in echoed.iter().enumerate() {
        assert_eq!(data, &frame(i, 160));
    }
    assert_eq!(
        next_cmd(&mut fork).await,
        ServiceCommand::Mark("echo-5".into())
    );
    fork.send_dtmf('7', 100);
    let mut tone = 0;
    loop {
        match next_cmd(&mut fork).await {
            ServiceCommand::Audio { data, .. } => tone += data.len(),
            ServiceCommand::Mark(m) => {
                assert_eq!(m, "tone-7");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tone, 2400, "300 ms of A-law at 8 kHz");
    fork.stop("hangup").wait().await;
    svc.shutdown().await;
}
