//! Forking end to end: a phone sends known G.711 into a forked number; the reference
//! analytics service (real WebSocket on loopback, in-process) must receive every frame,
//! in order, bit-exact, in each protocol mode; what it sends back must reach the phone as
//! a continuous RTP stream; a service that dies must not take the call with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use siphon_analytics::{Mode, Options, Outgoing};
use siphon_media::g711::G711;

use tokio::time::Instant;

fn fork_route(number: &str, url: &str, mode: &str, encoding: &str, extra: &str) -> String {
    format!(
        "\n[[dialplan]]\nnumber = \"{number}\"\naction = \"fork\"\nauth = \"none\"\n\
         [[dialplan.forks]]\nurl = \"{url}\"\nmode = \"{mode}\"\nencoding = \"{encoding}\"\n\
         sample_rate = 8000\ntracks = \"inbound\"\ncustom_parameters = {{ campaign = \"spring\" }}\n{extra}"
    )
}

async fn service(echo: bool) -> siphon_analytics::Handle {
    let opts = Options {
        echo,
        log_levels: false,
        ..Options::default()
    };
    siphon_analytics::bind("127.0.0.1:0", opts).await.unwrap()
}

/// Sends frames `from..from + n` of known µ-law audio at 20 ms from the call's RTP socket
/// (sequence numbers and timestamps continue from earlier calls with the same `from`).
async fn send_audio_from(call: &Call, from: usize, n: usize) -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = (from..from + n)
        .map(|i| speech_like(G711::Pcmu, i))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (k, f) in frames.iter().enumerate() {
        tick.tick().await;
        let i = from + k;
        let p = rtp_bytes(0, i == 0, 100 + i as u16, 160 * i as u32, 0x5151, f);
        call.rtp.send_to(&p, call.remote).await.unwrap();
    }
    frames
}

/// Latches the call with one packet and waits for the service's stream: its id.
async fn start_stream(call: &Call, svc: &siphon_analytics::Handle) -> String {
    let p = rtp_bytes(0, true, 1, 0, 9, &[0xff; 160]);
    call.rtp.send_to(&p, call.remote).await.unwrap();
    loop {
        if let Some(r) = svc.streams().first() {
            return r.stream_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_audio(call: &Call, n: usize) -> Vec<Vec<u8>> {
    send_audio_from(call, 0, n).await
}

/// The G.711 decode of what was sent, as the little-endian L16 bytes a service receives.
fn as_l16(frames: &[Vec<u8>]) -> Vec<u8> {
    frames
        .iter()
        .flatten()
        .flat_map(|b| G711::Pcmu.decode_sample(*b).to_le_bytes())
        .collect()
}

async fn mode_end_to_end(mode: Mode, mode_name: &str, encoding: &str, rtp_min: u16) {
    let svc = service(false).await;
    let route = fork_route("701", &svc.url(mode), mode_name, encoding, "");
    let s = start_with(&route, rtp_min).await;
    let call = place_call(s.addr, "701", &format!("fork-{mode_name}"), "0").await;
    let sent = send_audio(&call, 100).await;
    // Let the jitter buffer drain, then hang up: the service gets its stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let local = call.phone.local();
    call.phone
        .send(&in_dialog(
            "BYE",
            local,
            "701",
            &call.call_id,
            2,
            &call.tag,
            "byef",
        ))
        .await;
    assert_eq!(status(&call.phone.recv().await), 200);
    let streams = loop {
        let st = svc.streams();
        if st.first().is_some_and(|r| r.stop.is_some()) {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let record = &streams[0];
    let start = record.start().unwrap().to_string();
    assert!(
        start.contains(&call.call_id),
        "start lacks the Call-ID: {start}"
    );
    assert!(
        start.contains("spring"),
        "start lacks custom parameters: {start}"
    );
    // Every frame, in order, bit-exact: the G.711 decode of what the phone sent (or the
    // µ-law bytes themselves in Twilio's passthrough).
    // Twilio labels its media with the track; the others send one unlabeled stream.
    let track = (mode == Mode::Twilio).then_some("inbound");
    let got = record.audio_bytes(track);
    let expected = if encoding == "pcmu" {
        sent.iter().flatten().copied().collect::<Vec<u8>>()
    } else {
        as_l16(&sent)
    };
    assert_eq!(
        got.len(),
        expected.len(),
        "{mode_name}: wrong amount of audio"
    );
    assert!(
        got == expected,
        "{mode_name}: audio differs from what was sent"
    );
    s.stop().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn native_mode_receives_every_frame_bit_exact() {
    mode_end_to_end(Mode::Native, "native", "l16", 33000).await;
}

#[tokio::test]
async fn twilio_mode_receives_every_frame_bit_exact() {
    mode_end_to_end(Mode::Twilio, "twilio", "pcmu", 33100).await;
}

#[tokio::test]
async fn audio_fork_mode_receives_every_frame_bit_exact() {
    mode_end_to_end(Mode::AudioFork, "audio_fork", "l16", 33200).await;
}

#[tokio::test]
async fn service_audio_is_played_back_as_one_continuous_stream() {
    let svc = service(true).await;
    let route = fork_route("701", &svc.url(Mode::Native), "native", "l16", "");
    let s = start_with(&route, 33300).await;
    let call = place_call(s.addr, "701", "fork-echo", "0").await;
    let rtp = std::sync::Arc::new(call.rtp);
    let tx = rtp.clone();
    let remote = call.remote;
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..100usize {
            tick.tick().await;
            let f = speech_like(G711::Pcmu, i);
            let p = rtp_bytes(0, i == 0, i as u16, 160 * i as u32, 0x77, &f);
            tx.send_to(&p, remote).await.unwrap();
        }
    });
    let got = collect(&rtp, Duration::from_millis(2800)).await;
    sender.await.unwrap();
    assert!(got.len() >= 95, "only {} packets came back", got.len());
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence gap");
    }
    // The service echoed our audio: its frames come back (µ-law -> L16 -> µ-law is exact).
    let sent: Vec<Vec<u8>> = (0..100).map(|i| speech_like(G711::Pcmu, i)).collect();
    let mut it = got.iter().map(|p| &p.payload);
    let found = sent.iter().filter(|f| it.any(|g| g == *f)).count();
    assert!(
        found >= 95,
        "only {found} of 100 frames came back through the service"
    );
    s.stop().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn marks_come_back_after_playback_and_clear_stops_it() {
    let svc = service(false).await;
    let route = fork_route("701", &svc.url(Mode::Native), "native", "l16", "");
    let s = start_with(&route, 33400).await;
    let call = place_call(s.addr, "701", "fork-mark", "0").await;
    let id = start_stream(&call, &svc).await;
    // 200 ms of audio, then a mark: the mark must come back only after ~10 packets played.
    let tone: Vec<u8> = (0..1600)
        .flat_map(|i| ((((i as f64) * 0.3).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    assert!(svc.send(&id, Outgoing::Binary(tone.into())));
    assert!(svc.send(
        &id,
        Outgoing::Text(r#"{"event":"mark","name":"m1"}"#.into())
    ));
    let sent_at = Instant::now();
    let played = collect(&call.rtp, Duration::from_millis(500)).await;
    let record = svc
        .wait_stream(&id, Duration::from_secs(2), |r| !r.marks.is_empty())
        .await
        .expect("mark never came back");
    assert!(
        record.marks[0].to_string().contains("m1"),
        "{:?}",
        record.marks
    );
    assert!(
        played.len() >= 9,
        "only {} packets of playback",
        played.len()
    );
    assert!(sent_at.elapsed() >= Duration::from_millis(180));
    // Barge-in: queue 2 s of audio, clear it after 100 ms; playback stops within 40 ms.
    let long: Vec<u8> = (0..16000)
        .flat_map(|i| ((((i as f64) * 0.3).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    assert!(svc.send(&id, Outgoing::Binary(long.into())));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(svc.send(&id, Outgoing::Text(r#"{"event":"clear"}"#.into())));
    let cleared_at = Instant::now();
    let after = collect(&call.rtp, Duration::from_millis(600)).await;
    let last = after.iter().map(|p| p.at).max().unwrap_or(cleared_at);
    assert!(
        last.saturating_duration_since(cleared_at) <= Duration::from_millis(40),
        "playback went on {:?} after clear",
        last.saturating_duration_since(cleared_at)
    );
    s.stop().await;
    svc.shutdown().await;
}

/// Measures (and prints) the fork's added latency: RTP packet sent by the phone → frame
/// received by the service over the WebSocket. It includes Siphon's jitter buffer (which
/// holds a packet until its 20 ms slot) and loopback transit, so it is what a service sees.
/// Asserted loosely (a stuck or batched path would take seconds); the figures are printed.
#[tokio::test]
async fn fork_latency_is_measured_and_reported() {
    let svc = service(false).await;
    let route = fork_route("701", &svc.url(Mode::Native), "native", "l16", "");
    let s = start_with(&route, 33600).await;
    let call = place_call(s.addr, "701", "fork-latency", "0").await;
    let mut sent_at = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..150usize {
        tick.tick().await;
        let f = speech_like(G711::Pcmu, i);
        let p = rtp_bytes(0, i == 0, i as u16, 160 * i as u32, 0x42, &f);
        sent_at.push(std::time::Instant::now());
        call.rtp.send_to(&p, call.remote).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let record = svc.streams().remove(0);
    let expected: Vec<Vec<u8>> = (0..150)
        .map(|i| as_l16(&[speech_like(G711::Pcmu, i)]))
        .collect();
    let missing: Vec<usize> = (0..150)
        .filter(|i| !record.audio.iter().any(|f| f.data[..] == expected[*i][..]))
        .collect();
    assert!(
        missing.is_empty(),
        "frames missing at the service: {missing:?}"
    );
    let mut lat: Vec<Duration> = record
        .audio
        .iter()
        .zip(&sent_at)
        .map(|(f, t)| f.received_at.saturating_duration_since(*t))
        .collect();
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "fork latency (RTP sent -> frame at service), 150 frames: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    assert!(p(0.99) < Duration::from_millis(500), "p99 {:?}", p(0.99));
    s.stop().await;
    svc.shutdown().await;
}

/// A service that dies mid-call: the call stays up, the fork reconnects when the service
/// is back on the same address (sending what it buffered meanwhile), and the `stop` the
/// new connection gets accounts for every frame: sent + dropped = what the phone sent.
#[tokio::test]
async fn a_killed_service_leaves_the_call_up_and_the_fork_reconnects() {
    let first = service(false).await;
    let addr = first.local_addr();
    let route = fork_route(
        "701",
        &first.url(Mode::Native),
        "native",
        "l16",
        "reconnect_min_ms = 50\nreconnect_max_ms = 200\n",
    );
    let s = start_with(&route, 34400).await;
    let call = place_call(s.addr, "701", "fork-reconnect", "0").await;
    send_audio_from(&call, 0, 50).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before_kill = first.streams().first().map_or(0, |r| r.frame_count(None));
    assert!(
        before_kill >= 45,
        "only {before_kill} frames before the kill"
    );
    first.kill().await;
    // One second of audio while nothing listens: kept in the 2 s buffer.
    send_audio_from(&call, 50, 50).await;
    let second = siphon_analytics::bind(
        &addr.to_string(),
        Options {
            log_levels: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    send_audio_from(&call, 100, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = second.streams();
    assert_eq!(after.len(), 1, "the fork did not reconnect once: {after:?}");
    let resumed = after[0].frame_count(None);
    assert!(resumed >= 140, "only {resumed} frames after the reconnect");
    // The call is still up: BYE is answered 200 (not 481).
    let local = call.phone.local();
    call.phone
        .send(&in_dialog(
            "BYE",
            local,
            "701",
            &call.call_id,
            2,
            &call.tag,
            "byer",
        ))
        .await;
    assert_eq!(status(&call.phone.recv().await), 200);
    let id = after[0].stream_id.clone();
    let record = second
        .wait_stream(&id, Duration::from_secs(3), |r| r.stop.is_some())
        .await
        .expect("no stop after the BYE");
    let stop = record.stop.clone().unwrap();
    let sent = stop["framesSent"].as_u64().unwrap();
    let dropped = stop["framesDropped"].as_u64().unwrap();
    assert_eq!(
        sent + dropped,
        200,
        "stop does not account for 200 frames: {stop}"
    );
    assert!(stop["reconnects"].as_u64().unwrap() >= 1, "{stop}");
    // What the two services received is what the fork says it sent, give or take what
    // was in flight in the killed connection's socket buffers.
    let received = (before_kill + record.frame_count(None)) as u64;
    assert!(
        received <= sent && received + 10 >= sent,
        "services got {received} frames, the fork says it sent {sent}"
    );
    s.stop().await;
    second.shutdown().await;
}

/// Service audio plays one slot behind its arrival, so a piece of a real-time stream that
/// arrives late (here five of 48 frames, 2 to 16 ms: WebSocket or scheduling jitter) still
/// plays in its slot: the caller gets one talk spurt, no silent slot in the middle. (Without
/// the cushion a frame later than the gap between its arrival and the next send slot misses
/// it; with delays up to 16 ms that happens unless that gap is over 16 ms.)
#[tokio::test]
async fn late_service_audio_is_absorbed_by_the_playback_cushion() {
    let svc = service(false).await;
    let route = fork_route("701", &svc.url(Mode::Native), "native", "l16", "");
    let s = start_with(&route, 34900).await;
    let call = place_call(s.addr, "701", "fork-cushion", "0").await;
    let id = start_stream(&call, &svc).await;
    let rtp = std::sync::Arc::new(call.rtp);
    let collector = {
        let rtp = rtp.clone();
        tokio::spawn(async move { collect(&rtp, Duration::from_millis(1600)).await })
    };
    let frame: Vec<u8> = (0..160)
        .flat_map(|i| ((((i as f64) * 0.3).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for k in 0..48u64 {
        tick.tick().await;
        if k % 8 == 0 && k > 0 {
            let late = [2, 6, 10, 13, 16][(k / 8 - 1) as usize];
            tokio::time::sleep(Duration::from_millis(late)).await;
        }
        assert!(svc.send(&id, Outgoing::Binary(frame.clone().into())));
    }
    let got = collector.await.unwrap();
    assert!(got.len() >= 46, "only {} packets of playback", got.len());
    let markers = got.iter().filter(|p| p.marker).count();
    let jumps = got
        .windows(2)
        .filter(|w| {
            w[1].ts.wrapping_sub(w[0].ts) != 160 * u32::from(w[1].seq.wrapping_sub(w[0].seq))
        })
        .count();
    assert_eq!(
        (markers, jumps),
        (1, 0),
        "the late frames left silent slots (talk spurts: {markers})"
    );
    s.stop().await;
    svc.shutdown().await;
}
