//! Siphon → service: each mode end to end over a real WebSocket to the reference service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use serde_json::json;
use siphon_fork::{Encoding, ForkState, Mix, Mode, Tracks, start};

#[tokio::test]
async fn native_streams_start_frames_dtmf_and_stop() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::L16;
    cfg.sample_rate = 16000;
    cfg.tracks = Tracks::Both;
    cfg.mix = Mix::Stereo;
    cfg.custom_parameters.insert("lang".into(), "en-US".into());
    cfg.headers
        .push(("Authorization".into(), "Bearer t0ken".into()));
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    assert_eq!(fork.format().channels, 2);
    let len = fork.format().frame_bytes();
    assert_eq!(len, 1280);

    push(&mut fork, 0..50, len).await;
    wait(&svc, &id, "50 frames", |r| r.audio.len() == 50).await;
    fork.send_dtmf('5', 100);
    wait(&svc, &id, "dtmf", |r| !r.dtmf.is_empty()).await;
    let stats = fork.stop("hangup").wait().await;
    let rec = wait(&svc, &id, "stop and close", |r| {
        r.stop.is_some() && r.closed()
    })
    .await;

    assert_eq!(
        rec.start().unwrap(),
        &json!({
            "event": "start",
            "protocol": "siphon",
            "version": 1,
            "streamId": id,
            "resumed": false,
            "callId": "a84b4c76e66710@pc33.example.com",
            "from": "sip:1001@example.com",
            "to": "sip:700@example.com",
            "codec": "PCMU",
            "accountSid": "AC0001",
            "mediaFormat": {"encoding": "pcm_s16le", "sampleRate": 16000, "channels": 2},
            "tracks": ["inbound", "outbound"],
            "mix": "stereo",
            "frameMs": 20,
            "customParameters": {"lang": "en-US"}
        })
    );
    assert_eq!(rec.audio.len(), 50);
    for (i, f) in rec.audio.iter().enumerate() {
        assert_eq!(f.data, frame(i, len), "frame {i}");
        assert_eq!(f.track, None);
    }
    assert_eq!(
        rec.dtmf,
        vec![json!({"event": "dtmf", "digit": "5", "durationMs": 100})]
    );
    assert_eq!(
        rec.stop.unwrap(),
        json!({
            "event": "stop",
            "reason": "hangup",
            "framesSent": 50,
            "framesDropped": 0,
            "framesDroppedQueueFull": 0,
            "framesDroppedDisconnected": 0,
            "framesDroppedSlow": 0,
            "reconnects": 0
        })
    );
    assert_eq!(rec.closes, vec![Some((1000, "hangup".to_string()))]);
    assert!(
        rec.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer t0ken")
    );
    assert_eq!(rec.path, "/native");
    assert_eq!(rec.subprotocol, None);
    assert_eq!(stats.state(), ForkState::Stopped);
    assert_eq!(siphon_fork::ForkStats::get(&stats.frames_sent), 50);
    assert_eq!(stats.latency.count(), 50);
    assert_eq!(stats.frames_dropped(), 0);
    svc.shutdown().await;
}

#[tokio::test]
async fn twilio_streams_exact_media_streams_messages() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Twilio), Mode::Twilio);
    // Twilio forces µ-law 8 kHz whatever is asked.
    cfg.encoding = Encoding::L16;
    cfg.sample_rate = 16000;
    cfg.custom_parameters
        .insert("FirstName".into(), "Jane".into());
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    assert!(id.starts_with("MZ") && id.len() == 34);
    let len = fork.format().frame_bytes();
    assert_eq!(len, 160);

    push(&mut fork, 0..50, len).await;
    wait(&svc, &id, "50 frames", |r| r.audio.len() == 50).await;
    fork.send_dtmf('#', 80);
    wait(&svc, &id, "dtmf", |r| !r.dtmf.is_empty()).await;
    fork.stop("hangup").wait().await;
    let rec = wait(&svc, &id, "stop", |r| r.stop.is_some() && r.closed()).await;

    assert_eq!(
        rec.connected,
        vec![json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})]
    );
    assert_eq!(
        rec.start().unwrap(),
        &json!({
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC0001",
                "streamSid": id,
                "callSid": "a84b4c76e66710@pc33.example.com",
                "tracks": ["inbound"],
                "customParameters": {"FirstName": "Jane"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            },
            "streamSid": id
        })
    );
    assert_eq!(rec.audio.len(), 50);
    for (i, f) in rec.audio.iter().enumerate() {
        assert_eq!(f.data, frame(i, len), "frame {i}");
        assert_eq!(f.track.as_deref(), Some("inbound"));
        assert_eq!(
            f.sequence_number.as_deref(),
            Some((i + 2).to_string().as_str())
        );
        assert_eq!(f.chunk.as_deref(), Some((i + 1).to_string().as_str()));
        assert_eq!(f.timestamp.as_deref(), Some((i * 20).to_string().as_str()));
    }
    // Every media message has exactly Twilio's fields.
    let media = rec
        .texts
        .iter()
        .find(|t| t["event"] == "media")
        .unwrap()
        .clone();
    assert_eq!(
        media,
        json!({
            "event": "media",
            "sequenceNumber": "2",
            "media": {
                "track": "inbound",
                "chunk": "1",
                "timestamp": "0",
                "payload": BASE64.encode(frame(0, 160))
            },
            "streamSid": id
        })
    );
    assert_eq!(
        rec.dtmf,
        vec![json!({
            "event": "dtmf",
            "streamSid": id,
            "sequenceNumber": "52",
            "dtmf": {"track": "inbound_track", "digit": "#"}
        })]
    );
    assert_eq!(
        rec.stop.unwrap(),
        json!({
            "event": "stop",
            "sequenceNumber": "53",
            "stop": {"accountSid": "AC0001", "callSid": "a84b4c76e66710@pc33.example.com"},
            "streamSid": id
        })
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn twilio_both_tracks_become_two_media_tracks() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::Twilio), Mode::Twilio);
    cfg.tracks = Tracks::Both;
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    assert_eq!(fork.format().channels, 2);
    let len = fork.format().frame_bytes();
    assert_eq!(len, 320);
    push(&mut fork, 0..50, len).await;
    fork.stop("done").wait().await;
    let rec = wait(&svc, &id, "stop", |r| r.stop.is_some()).await;
    assert_eq!(
        rec.start().unwrap()["start"]["tracks"],
        json!(["inbound", "outbound"])
    );
    assert_eq!(rec.frame_count(Some("inbound")), 50);
    assert_eq!(rec.frame_count(Some("outbound")), 50);
    for (i, pair) in rec.audio.chunks(2).enumerate() {
        let f = frame(i, len);
        let inbound: Vec<u8> = f.iter().step_by(2).copied().collect();
        let outbound: Vec<u8> = f.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(pair[0].track.as_deref(), Some("inbound"));
        assert_eq!(pair[0].data, inbound);
        assert_eq!(pair[1].track.as_deref(), Some("outbound"));
        assert_eq!(pair[1].data, outbound);
        assert_eq!(pair[1].chunk.as_deref(), Some((i + 1).to_string().as_str()));
        assert_eq!(pair[1].timestamp, pair[0].timestamp);
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn audio_fork_streams_preamble_pcm_and_stop() {
    let svc = service().await;
    let mut cfg = config(svc.url(siphon_analytics::Mode::AudioFork), Mode::AudioFork);
    cfg.sample_rate = 16000;
    cfg.encoding = Encoding::Pcmu; // forced to L16
    cfg.custom_parameters.insert("botId".into(), "b-7".into());
    let mut fork = start(cfg, meta());
    let id = fork.stream_id().to_string();
    let len = fork.format().frame_bytes();
    assert_eq!(len, 640);
    push(&mut fork, 0..50, len).await;
    wait(&svc, &id, "50 frames", |r| r.audio.len() == 50).await;
    fork.send_dtmf('1', 250);
    wait(&svc, &id, "dtmf", |r| !r.dtmf.is_empty()).await;
    fork.stop("hangup").wait().await;
    let rec = wait(&svc, &id, "stop", |r| r.stop.is_some() && r.closed()).await;
    assert_eq!(rec.subprotocol.as_deref(), Some("audio.jambonz.org"));
    assert_eq!(
        rec.start().unwrap(),
        &json!({
            "callSid": id,
            "callId": "a84b4c76e66710@pc33.example.com",
            "from": "sip:1001@example.com",
            "to": "sip:700@example.com",
            "direction": "inbound",
            "accountSid": "AC0001",
            "sampleRate": 16000,
            "mixType": "mono",
            "botId": "b-7"
        })
    );
    assert_eq!(rec.audio.len(), 50);
    for (i, f) in rec.audio.iter().enumerate() {
        assert_eq!(f.data, frame(i, len), "frame {i}");
    }
    assert_eq!(
        rec.dtmf,
        vec![json!({"event": "dtmf", "dtmf": "1", "duration": "2000"})]
    );
    assert_eq!(rec.stop.as_ref().unwrap()["framesSent"], 50);
    assert_eq!(rec.stop.as_ref().unwrap()["reason"], "hangup");
    assert_eq!(rec.closes, vec![Some((1000, "hangup".to_string()))]);
    svc.shutdown().await;
}

#[tokio::test]
async fn audio_fork_stereo_and_mixed_announce_their_mix_type() {
    let svc = service().await;
    for (mix, name, channels) in [(Mix::Stereo, "stereo", 2), (Mix::Mono, "mixed", 1)] {
        let mut cfg = config(svc.url(siphon_analytics::Mode::AudioFork), Mode::AudioFork);
        cfg.tracks = Tracks::Both;
        cfg.mix = mix;
        let mut fork = start(cfg, meta());
        let id = fork.stream_id().to_string();
        assert_eq!(fork.format().channels, channels);
        let len = fork.format().frame_bytes();
        push(&mut fork, 0..3, len).await;
        fork.stop("hangup").wait().await;
        let rec = wait(&svc, &id, "stop", |r| r.stop.is_some()).await;
        assert_eq!(rec.start().unwrap()["mixType"], name);
        assert_eq!(rec.audio.len(), 3);
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn reference_service_writes_wav_files_per_stream_and_track() {
    let dir = std::env::temp_dir().join(format!("siphon-analytics-wav-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let opts = siphon_analytics::Options {
        out_dir: Some(dir.clone()),
        ..quiet()
    };
    let svc = siphon_analytics::bind("127.0.0.1:0", opts).await.unwrap();

    let mut cfg = config(svc.url(siphon_analytics::Mode::Twilio), Mode::Twilio);
    cfg.tracks = Tracks::Both;
    let mut twilio = start(cfg, meta());
    let mut cfg = config(svc.url(siphon_analytics::Mode::Native), Mode::Native);
    cfg.encoding = Encoding::L16;
    cfg.sample_rate = 16000;
    cfg.tracks = Tracks::Both;
    let mut native = start(cfg, meta());
    let (tid, nid) = (
        twilio.stream_id().to_string(),
        native.stream_id().to_string(),
    );
    push(&mut twilio, 0..10, 320).await;
    push(&mut native, 0..10, 1280).await;
    twilio.stop("hangup").wait().await;
    native.stop("hangup").wait().await;
    wait(&svc, &tid, "twilio closed", |r| r.closed()).await;
    wait(&svc, &nid, "native closed", |r| r.closed()).await;
    svc.shutdown().await;

    let header = |name: &str| {
        let b = std::fs::read(dir.join(name)).unwrap();
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let channels = u16::from_le_bytes(b[22..24].try_into().unwrap());
        (channels, u32_at(24), u32_at(40), b.len() - 44)
    };
    // 10 frames of 160 µ-law samples per track, written as 16-bit PCM.
    assert_eq!(header(&format!("{tid}-inbound.wav")), (1, 8000, 3200, 3200));
    assert_eq!(
        header(&format!("{tid}-outbound.wav")),
        (1, 8000, 3200, 3200)
    );
    // 10 frames of 16 kHz stereo 16-bit: 12800 bytes, copied as is.
    assert_eq!(header(&format!("{nid}.wav")), (2, 16000, 12800, 12800));
    let data = std::fs::read(dir.join(format!("{nid}.wav"))).unwrap();
    assert_eq!(&data[44..44 + 1280], &frame(0, 1280)[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}
