//! Media through a real server: RTP over loopback sockets into the test numbers, and what
//! comes back decoded and checked the way a listener would notice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use siphon_media::g711::G711;
use siphon_server::counters::get;
use tokio::net::UdpSocket;
use tokio::time::Instant;

#[tokio::test]
async fn echo_returns_every_frame_in_order_on_its_own_paced_stream() {
    // Every frame back, paced at 20 ms: real time end to end (see `realtime`).
    realtime();
    let s = start_with("", 32000).await;
    let call = place_call(s.addr, "600", "echo1", "0 101").await;
    let sent: Vec<Vec<u8>> = (0..100).map(|n| speech_like(G711::Pcmu, n)).collect();
    let (dest, frames) = (call.remote, sent.clone());
    let rtp = std::sync::Arc::new(call.rtp);
    let tx = rtp.clone();
    let send_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (n, payload) in frames.iter().enumerate() {
            tick.tick().await;
            let pkt = rtp_bytes(
                0,
                n == 0,
                1000 + n as u16,
                5000 + 160 * n as u32,
                0xabcd,
                payload,
            );
            tx.send_to(&pkt, dest).await.unwrap();
        }
    });
    // Until every frame has come back (then a little more: a surplus packet would follow).
    let got = collect_until(&rtp, Duration::from_millis(300), |got| {
        in_order(got, &sent) == sent.len()
    })
    .await;
    send_task.await.unwrap();
    assert!(!got.is_empty(), "no echo");
    // Every packet sent comes back: the count matches within 1 %.
    assert!(
        got.len() >= 99 && got.len() <= 101,
        "sent 100, echoed {}",
        got.len()
    );
    // Siphon's own stream: one SSRC (not ours), continuous sequence numbers, +160 timestamps.
    assert!(
        got.iter()
            .all(|p| p.ssrc == got[0].ssrc && p.ssrc != 0xabcd)
    );
    assert!(got.iter().all(|p| p.pt == 0 && p.from == call.remote));
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence gap");
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "timestamp step");
    }
    assert!(got[0].marker, "talk spurt starts with the marker bit");
    // The audio is the caller's, in order (decode + re-encode of µ-law is exact).
    let echoed: Vec<&Vec<u8>> = got.iter().map(|p| &p.payload).collect();
    let mut it = echoed.iter();
    for (n, frame) in sent.iter().enumerate() {
        assert!(it.any(|e| *e == frame), "frame {n} missing or out of order");
    }
    // Paced at 20 ms: the median spacing of what arrived.
    let mut gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_micros())
        .collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        (18_000..=22_000).contains(&median),
        "median spacing {median} µs"
    );
    s.stop().await;
}

#[tokio::test]
async fn tone_is_1000_hz_at_minus_10_dbm0() {
    let s = start_with("", 32100).await;
    let call = place_call(s.addr, "601", "tone1", "0").await;
    // Before the caller sends anything, Siphon sends to the SDP address.
    let got = collect_n(&call.rtp, 50).await;
    assert!(got.len() >= 50, "only {} packets", got.len());
    let mut pcm = Vec::new();
    for p in &got {
        let mut frame = [0i16; 160];
        G711::Pcmu.decode(&p.payload, &mut frame);
        pcm.extend_from_slice(&frame);
    }
    // Frequency from interpolated upward zero crossings over the whole capture.
    let crossings: Vec<f64> = pcm
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
        .map(|(i, w)| i as f64 + (-w[0] as f64) / (w[1] as f64 - w[0] as f64))
        .collect();
    let cycles = (crossings.len() - 1) as f64;
    let freq = cycles * 8000.0 / (crossings[crossings.len() - 1] - crossings[0]);
    assert!((freq - 1000.0).abs() <= 1.0, "frequency {freq} Hz");
    // Level: -10 dBm0 is an RMS of 22650 / sqrt(2) * 10^(-10/20) (G.711's 0 dBm0 sine
    // peaks at 22650). µ-law quantisation keeps it within a few tenths of a dB.
    let rms = (pcm.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    let dbm0 = 20.0 * (rms / (22650.0 / 2f64.sqrt())).log10();
    assert!((dbm0 + 10.0).abs() < 0.3, "level {dbm0:.2} dBm0");
    s.stop().await;
}

#[tokio::test]
async fn prompt_number_plays_the_builtin_prompt_samples() {
    let s = start_with("", 32200).await;
    let call = place_call(s.addr, "602", "play1", "8").await;
    let got = collect_n(&call.rtp, 40).await;
    assert!(got.len() >= 40, "only {} packets", got.len());
    let wav = siphon_media::wav::Wav::parse(siphon_server::prompt::BUILTIN_PROMPT).unwrap();
    let expected = wav.to_g711(G711::Pcma);
    let mut decoded = vec![0i16; 160];
    let mut want = vec![0i16; 160];
    for (n, p) in got.iter().enumerate() {
        assert_eq!(p.pt, 8);
        G711::Pcma.decode(&p.payload, &mut decoded);
        G711::Pcma.decode(&expected[n * 160..(n + 1) * 160], &mut want);
        assert_eq!(decoded, want, "frame {n} differs from the prompt");
    }
    // The prompt is speech, not silence.
    let energy: i64 = got
        .iter()
        .flat_map(|p| p.payload.iter())
        .map(|b| (G711::Pcma.decode_sample(*b) as i64).abs())
        .sum();
    assert!(energy > 1_000_000, "prompt is silent");
    s.stop().await;
}

fn dtmf_packets(digit_code: u8, ts: u32, first_seq: u16) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = first_seq;
    for (i, duration) in [160u16, 320, 480, 640].iter().enumerate() {
        let payload = [digit_code, 10, (duration >> 8) as u8, *duration as u8];
        out.push(rtp_bytes(101, i == 0, seq, ts, 0x1234, &payload));
        seq += 1;
    }
    // Three end packets, same duration (RFC 4733 §2.5.1.4).
    for _ in 0..3 {
        let payload = [digit_code, 0x80 | 10, 0x03, 0x20];
        out.push(rtp_bytes(101, false, seq, ts, 0x1234, &payload));
        seq += 1;
    }
    out
}

#[tokio::test]
async fn dtmf_is_reported_once_per_key_press() {
    let s = start_with("", 32300).await;
    let call = place_call(s.addr, "600", "dtmf1", "0 101").await;
    let audio = rtp_bytes(0, true, 1, 0, 0x1234, &[0xff; 160]);
    call.rtp.send_to(&audio, call.remote).await.unwrap();
    let mut seq = 2;
    for (k, code) in [5u8, 7].iter().enumerate() {
        let packets = dtmf_packets(*code, 1000 + 2000 * k as u32, seq);
        seq += packets.len() as u16;
        for p in &packets {
            call.rtp.send_to(p, call.remote).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A retransmitted start packet of the same event is not a new press.
        call.rtp.send_to(&packets[0], call.remote).await.unwrap();
    }
    // One more audio packet: once Siphon has taken it (the 18th from this phone), it has
    // handled every event packet before it.
    let audio = rtp_bytes(0, false, seq, 5000, 0x1234, &[0xff; 160]);
    call.rtp.send_to(&audio, call.remote).await.unwrap();
    let counters = s.counters.clone();
    assert!(eventually(|| std::future::ready(get(&counters.rtp_packets_in) >= 18)).await);
    assert_eq!(get(&s.counters.rtp_packets_in), 18);
    assert_eq!(get(&s.counters.dtmf_events), 2);
    s.stop().await;
}

#[tokio::test]
async fn latched_stream_cannot_be_hijacked_by_a_stray_sender() {
    let s = start_with("", 32400).await;
    let call = place_call(s.addr, "600", "latch1", "0").await;
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in 0..30u16 {
        let p = rtp_bytes(
            0,
            n == 0,
            n,
            160 * n as u32,
            0x1111,
            &speech_like(G711::Pcmu, n as usize),
        );
        call.rtp.send_to(&p, call.remote).await.unwrap();
        let q = rtp_bytes(0, n == 0, n, 160 * n as u32, 0x2222, &[0x55; 160]);
        stray.send_to(&q, call.remote).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until the echo of all 30 of ours; whatever the stray socket got meanwhile is queued.
    let ours: Vec<Vec<u8>> = (0..30).map(|n| speech_like(G711::Pcmu, n)).collect();
    let mine = collect_until(&call.rtp, Duration::ZERO, |got| {
        in_order(got, &ours) == ours.len()
    })
    .await;
    let theirs = collect(&stray, Duration::from_millis(50)).await;
    assert!(!mine.is_empty(), "the latched caller gets its echo");
    assert!(
        theirs.is_empty(),
        "the stray sender got {} packets",
        theirs.len()
    );
    assert!(
        mine.iter().all(|p| p.payload != vec![0x55; 160]),
        "stray audio was echoed"
    );
    let counters = s.counters.clone();
    assert!(eventually(|| std::future::ready(get(&counters.rtp_stray) >= 30)).await);
    s.stop().await;
}

/// Waits for a request from Siphon on the phone's SIP socket.
async fn expect_request(phone: &Phone, method: &str, within: Duration) -> Option<String> {
    let end = Instant::now() + within;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let msg = phone.recv_within(left).await?;
        if msg.starts_with(method) {
            return Some(msg);
        }
    }
}

#[tokio::test]
async fn rtp_inactivity_ends_the_call_with_bye_but_hold_does_not() {
    let edits = [("inactivity_timeout_s = 60", "inactivity_timeout_s = 1")];
    let s = start_edited("", 32500, &edits).await;
    // Call 1: a little RTP, then silence: BYE within about a second.
    let call = place_call(s.addr, "600", "idle1", "0").await;
    for n in 0..5u16 {
        let p = rtp_bytes(0, n == 0, n, 160 * n as u32, 7, &[0xff; 160]);
        call.rtp.send_to(&p, call.remote).await.unwrap();
    }
    let bye = expect_request(&call.phone, "BYE", WAIT).await;
    let bye = bye.expect("no BYE after RTP stopped");
    assert!(bye.contains(&format!("Call-ID: {}", call.call_id)), "{bye}");
    assert!(bye.contains("Reason:"), "{bye}");
    // Call 2: put on hold (sendonly offer), no RTP: still up after the timeout.
    let held = place_call(s.addr, "600", "hold1", "0").await;
    let port = held.rtp.local_addr().unwrap().port();
    let hold_sdp = sdp(port, "0", "a=sendonly\r\n");
    let local = held.phone.local();
    held.phone
        .send(&invite(
            local,
            "600",
            "hold1",
            2,
            Some(&held.tag),
            &hold_sdp,
            "application/sdp",
        ))
        .await;
    let ok = held.phone.final_response().await;
    assert!(ok.contains("a=recvonly"), "{ok}");
    held.phone
        .send(&in_dialog(
            "ACK", local, "600", "hold1", 2, &held.tag, "ackh",
        ))
        .await;
    let early = expect_request(&held.phone, "BYE", Duration::from_millis(2500)).await;
    assert!(early.is_none(), "held call was hung up: {early:?}");
    s.stop().await;
}

#[tokio::test]
async fn rtp_port_exhaustion_is_503_and_ports_come_back() {
    let edits = [("port_max = 32698", "port_max = 32602")];
    // Two port pairs: 32600 and 32602.
    let s = start_edited("", 32600, &edits).await;
    let a = place_call(s.addr, "600", "ex1", "0").await;
    let _b = place_call(s.addr, "600", "ex2", "0").await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    phone
        .send(&invite(
            local,
            "600",
            "ex3",
            1,
            None,
            &sdp(40000, "0", ""),
            "application/sdp",
        ))
        .await;
    let r = phone.final_response().await;
    assert_eq!(status(&r), 503, "{r}");
    assert!(header(&r, "Retry-After").is_some());
    // Hang up one call: its port returns and a new call gets it.
    let la = a.phone.local();
    a.phone
        .send(&in_dialog("BYE", la, "600", "ex1", 2, &a.tag, "byeex1"))
        .await;
    assert_eq!(status(&a.phone.recv().await), 200);
    // The port comes back when the call's media task has ended (at once, on a loaded
    // machine a little later): wait for the pool to say so.
    let h = s.http;
    assert!(
        eventually(|| async move { metric(h, "siphon_rtp_ports_in_use").await == Some(1.0) }).await
    );
    let c = place_call(s.addr, "600", "ex4", "0").await;
    // Ports are drawn at random: the only free one is the hung-up call's.
    assert_eq!(c.remote.port(), a.remote.port());
    s.stop().await;
}

#[tokio::test]
async fn sdp_answer_advertises_the_configured_address() {
    let edits = [(
        "# advertised_address = \"203.0.113.5\"",
        "advertised_address = \"203.0.113.5\"",
    )];
    let s = start_edited("", 32700, &edits).await;
    let call = place_call(s.addr, "601", "adv1", "0").await;
    assert!(
        call.answer.contains("c=IN IP4 203.0.113.5"),
        "{}",
        call.answer
    );
    s.stop().await;
}
