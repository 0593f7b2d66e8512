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
    // Twilio labels its media with the track; the others send one unlabeled stream.
    let track = (mode == Mode::Twilio).then_some("inbound");
    let expected = if encoding == "pcmu" {
        sent.iter().flatten().copied().collect::<Vec<u8>>()
    } else {
        as_l16(&sent)
    };
    // Once the service has as much audio as was sent, hang up: the service gets its stop.
    let n = expected.len();
    let arrived = eventually(|| {
        let got = svc
            .streams()
            .first()
            .map_or(0, |r| r.audio_bytes(track).len());
        std::future::ready(got >= n)
    })
    .await;
    assert!(
        arrived,
        "{mode_name}: the service did not get all the audio"
    );
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
    let stopped =
        eventually(|| std::future::ready(svc.streams().first().is_some_and(|r| r.stop.is_some())))
            .await;
    assert!(stopped, "{mode_name}: no stop after the BYE");
    let streams = svc.streams();
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
    let got = record.audio_bytes(track);
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
    // Until the service's echo of every frame has played (then a little more).
    let sent: Vec<Vec<u8>> = (0..100).map(|i| speech_like(G711::Pcmu, i)).collect();
    let got = collect_until(&rtp, Duration::from_millis(200), |got| {
        in_order(got, &sent) == sent.len()
    })
    .await;
    sender.await.unwrap();
    assert!(got.len() >= 95, "only {} packets came back", got.len());
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence gap");
    }
    // The service echoed our audio: its frames come back (µ-law -> L16 -> µ-law is exact).
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
    // The ten packets of playback, and (meanwhile) the mark, noted when it comes back: it
    // cannot before its audio has played (ten 20 ms slots, however late they run).
    // (Slots without service audio carry µ-law silence: those are not playback.)
    let audible = |got: &[Rtp]| got.iter().filter(|p| !is_silence(p)).count();
    let (played, mark) = tokio::join!(
        collect_until(&call.rtp, Duration::ZERO, |got| audible(got) >= 10),
        async {
            let record = svc.wait_stream(&id, WAIT, |r| !r.marks.is_empty()).await;
            (record, sent_at.elapsed())
        }
    );
    let (record, mark_after) = mark;
    let record = record.expect("mark never came back");
    assert!(
        record.marks[0].to_string().contains("m1"),
        "{:?}",
        record.marks
    );
    assert!(
        audible(&played) >= 9,
        "only {} packets of playback",
        audible(&played)
    );
    assert!(
        mark_after >= Duration::from_millis(180),
        "the mark came back {mark_after:?} after its audio was sent"
    );
    // Barge-in: queue 2 s of audio, clear it after 100 ms: playback stops at once, not
    // 1.9 s later (what was still queued). "At once" is within a slot or two; a second
    // leaves room for a loaded machine.
    let long: Vec<u8> = (0..16000)
        .flat_map(|i| ((((i as f64) * 0.3).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    assert!(svc.send(&id, Outgoing::Binary(long.into())));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(svc.send(&id, Outgoing::Text(r#"{"event":"clear"}"#.into())));
    let cleared_at = Instant::now();
    let after = collect(&call.rtp, Duration::from_millis(2500)).await;
    let last = after
        .iter()
        .filter(|p| !is_silence(p))
        .map(|p| p.at)
        .max()
        .unwrap_or(cleared_at);
    assert!(
        last.saturating_duration_since(cleared_at) <= Duration::from_secs(1),
        "playback went on {:?} after clear",
        last.saturating_duration_since(cleared_at)
    );
    s.stop().await;
    svc.shutdown().await;
}

/// A µ-law packet of digital silence: what a forked call sends in a slot its services
/// left empty.
fn is_silence(p: &Rtp) -> bool {
    p.pt == 0 && p.payload.iter().all(|b| *b == 0xFF)
}

/// A forked call whose service says nothing still sends a packet in every 20 ms slot
/// (µ-law silence, one stream: sequence +1, timestamp +160), so a carrier's RTP timeout
/// or a NAT's RTP binding does not end it; the service's audio, when it comes, takes its
/// slots in the same stream. (Before, nothing at all was sent while the service was
/// silent.) The interop version, over 10-60 s with a Twilio-mode service, is in
/// sip-tests/carrier.sh.
#[tokio::test]
async fn a_silent_service_still_gets_the_caller_a_packet_every_slot() {
    realtime();
    let svc = service(false).await;
    let route = fork_route("701", &svc.url(Mode::Native), "native", "l16", "");
    let s = start_with(&route, 38700).await;
    let call = place_call(s.addr, "701", "fork-silent", "0").await;
    let id = start_stream(&call, &svc).await;
    // One second of a silent service: about 50 packets, all silence, none missing.
    let quiet = collect_until(&call.rtp, Duration::ZERO, |got| got.len() >= 50).await;
    assert!(
        quiet.len() >= 50,
        "only {} packets in the silence",
        quiet.len()
    );
    assert!(quiet.iter().all(is_silence), "not silence: {quiet:?}");
    // Then 100 ms of audio from the service: it plays, in the same stream.
    let tone: Vec<u8> = (0..800)
        .flat_map(|i| ((((i as f64) * 0.3).sin() * 8000.0) as i16).to_le_bytes())
        .collect();
    assert!(svc.send(&id, Outgoing::Binary(tone.into())));
    let more = collect_until(&call.rtp, Duration::ZERO, |got| {
        got.iter().filter(|p| !is_silence(p)).count() >= 5 && got.last().is_some_and(is_silence)
    })
    .await;
    let all: Vec<&Rtp> = quiet.iter().chain(&more).collect();
    assert_eq!(
        all.iter()
            .map(|p| p.ssrc)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "one stream"
    );
    for w in all.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "a slot without a packet"
        );
        // +160 a slot; after a stall of the process (a loaded machine) the pacer skips
        // whole slots and marks the next packet (see siphon_media::pacer): no slot is
        // left without a packet, the receiver sees a new talk spurt.
        let step = w[1].ts.wrapping_sub(w[0].ts);
        assert!(
            step == 160 || (w[1].marker && step % 160 == 0 && step < 1 << 31),
            "timestamp step {step} without the marker of a skip"
        );
    }
    assert!(
        more.iter().filter(|p| !is_silence(p)).count() >= 5,
        "the service's audio did not play"
    );
    s.stop().await;
    svc.shutdown().await;
}

/// Measures (and prints) the fork's added latency: RTP packet sent by the phone → frame
/// received by the service over the WebSocket. It includes Siphon's jitter buffer (which
/// holds a packet until its 20 ms slot) and loopback transit, so it is what a service sees.
/// Asserted loosely (a stuck or batched path would take seconds; 1 s leaves room for a
/// loaded machine); the figures are printed.
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
    let arrived = eventually(|| {
        let got = svc.streams().first().map_or(0, |r| r.audio.len());
        std::future::ready(got >= 150)
    })
    .await;
    assert!(
        arrived,
        "frames missing at the service: {:?}",
        svc.streams()
    );
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
    assert!(p(0.99) < Duration::from_secs(1), "p99 {:?}", p(0.99));
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
    eventually(|| {
        let got = first.streams().first().map_or(0, |r| r.frame_count(None));
        std::future::ready(got >= 50)
    })
    .await;
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
    // What was buffered while nothing listened (50) and the 100 since: 150 frames.
    eventually(|| {
        let got = second.streams().first().map_or(0, |r| r.frame_count(None));
        std::future::ready(got >= 150)
    })
    .await;
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
        .wait_stream(&id, WAIT, |r| r.stop.is_some())
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
/// arrives late (WebSocket or scheduling jitter, up to a slot) still plays in its slot: the
/// caller gets one talk spurt, no silent slot in the middle. (Without the cushion a piece
/// that arrives after the send slot it was meant for leaves that slot silent.)
///
/// Driven slot by slot, as the call's media task drives its fork tap every 20 ms, with the
/// service's pieces coming over the real WebSocket: each is delivered (and seen to have
/// arrived) before the slot it is meant for, except five of the 48, which arrive just after
/// that slot (as late as a piece can be and still make it). No clock is involved, so how
/// busy the machine is cannot change the outcome; against the wall clock the same check
/// had only a few milliseconds to spare.
#[tokio::test]
async fn late_service_audio_is_absorbed_by_the_playback_cushion() {
    use siphon_server::fork_metrics::{ForkInfo, ForkMetrics};
    use siphon_server::media::forking::ForkTap;
    use std::sync::atomic::Ordering;

    let svc = service(false).await;
    let config = siphon_fork::ForkConfig::new(svc.url(Mode::Native), siphon_fork::Mode::Native);
    let meta = siphon_fork::CallMeta {
        call_id: "fork-cushion".into(),
        from: "sip:tester@127.0.0.1".into(),
        to: "sip:701@127.0.0.1".into(),
        codec: "PCMU".into(),
        account_sid: None,
    };
    let fork = siphon_fork::start(config.clone(), meta);
    let stats = fork.stats();
    let id = fork.stream_id().to_string();
    let metrics = std::sync::Arc::new(ForkMetrics::default());
    let registration = metrics.register(
        ForkInfo {
            call_id: "fork-cushion".into(),
            fork_id: "f1".into(),
            url: config.url.clone(),
            mode: config.mode,
        },
        fork.stats(),
    );
    let mut tap = ForkTap::new("f1".into(), fork, &config, registration);
    svc.wait_stream(&id, WAIT, |r| r.start().is_some())
        .await
        .expect("the fork connected");

    // Piece k: 20 ms of 8 kHz L16 that says which it is.
    let piece = |k: i16| -> [i16; 160] { std::array::from_fn(|i| 500 * (k + 1) + i as i16) };
    let deliver = async |k: i16| {
        let bytes: Vec<u8> = piece(k).iter().flat_map(|s| s.to_le_bytes()).collect();
        assert!(svc.send(&id, Outgoing::Binary(bytes.into())));
        let arrived = eventually(|| {
            std::future::ready(stats.frames_received.load(Ordering::Relaxed) > k as u64)
        })
        .await;
        assert!(arrived, "piece {k} never reached the fork");
    };
    // One send slot: what the caller hears in it (None: silence).
    let mut out = [0i16; 160];
    let mut requests = Vec::new();
    let mut slots: Vec<Option<i16>> = Vec::new();
    let mut slot = |tap: &mut ForkTap| {
        let played = tap.take_playback(&mut out, &mut requests);
        slots.push(played.then(|| (0..48).find(|k| out == piece(*k)).unwrap_or(-1)));
    };
    for k in 0..48i16 {
        let late = k % 8 == 0 && k > 0;
        if !late {
            deliver(k).await;
        }
        slot(&mut tap); // the slot piece k arrives for
        if late {
            deliver(k).await;
        }
    }
    for _ in 0..3 {
        slot(&mut tap);
    }
    assert!(requests.is_empty(), "{requests:?}");
    // One slot of cushion, then every piece in order in the next 48 slots, no silent slot
    // among them: one talk spurt.
    let mut want = vec![None];
    want.extend((0..48).map(Some));
    want.extend([None, None]);
    assert_eq!(slots, want, "the late pieces left silent slots");
    drop(tap);
    svc.shutdown().await;
}
