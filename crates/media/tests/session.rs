//! A whole call leg in virtual time: the driving loop from the crate docs, with a simulated
//! peer.

// Helpers outside #[test] fns unwrap too (clippy.toml only covers the test fns).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use siphon_media::dtmf::{DtmfError, TelephoneEvent};
use siphon_media::g711::G711;
use siphon_media::jitter::FrameKind;
use siphon_media::pacer::Pacer;
use siphon_media::packet::{RtpError, RtpPacket};
use siphon_media::rtcp::{RtcpCompound, RtcpPacket, RtcpWriter};
use siphon_media::session::{MediaEvent, MediaSession, SessionConfig};
use siphon_media::tone::ToneGenerator;

const MS: Duration = Duration::from_millis(1);
const PEER_SSRC: u32 = 0x5EE5;

fn session(t0: Instant) -> MediaSession {
    let mut config = SessionConfig::new(G711::Pcmu, "test@siphon");
    config.telephone_event = Some(101);
    MediaSession::with_pacer(
        config,
        Pacer::new(t0, 0xAB, 1000, 0),
        t0,
        SystemTime::now(),
        1,
    )
}

/// The peer's packet `i` of a PCMU tone stream.
fn peer_packet(i: u32, tone: &mut ToneGenerator, out: &mut [u8]) -> usize {
    let mut pcm = [0i16; 160];
    tone.fill(&mut pcm);
    let mut payload = [0u8; 160];
    G711::Pcmu.encode(&pcm, &mut payload);
    RtpPacket {
        marker: i == 0,
        payload_type: 0,
        sequence_number: 40_000u16.wrapping_add(i as u16),
        timestamp: 777 + 160 * i,
        ssrc: PEER_SSRC,
        payload: &payload,
    }
    .write_to(out)
    .unwrap()
}

#[test]
fn echo_call_in_virtual_time() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut tone = ToneGenerator::test_tone();
    let mut rx = [0u8; 1500];
    let mut tx = [0u8; 1500];
    let mut pcm = [0i16; 160];
    let mut sent = Vec::new();
    let mut frames = Vec::new();
    let mut next_peer = 0u32;
    let end = t0 + Duration::from_secs(2);
    loop {
        // The peer sends every 20 ms, 7 ms off our grid.
        let peer_at = t0 + 20 * MS * next_peer + 7 * MS;
        let timer = s.poll_timeout();
        if peer_at.min(timer) > end {
            break;
        }
        if peer_at <= timer {
            let n = peer_packet(next_peer, &mut tone, &mut rx);
            s.handle_rtp(peer_at, &rx[..n]).unwrap();
            next_peer += 1;
            continue;
        }
        let now = timer;
        for _ in 0..s.handle_timeout(now) {
            let frame = s.pop_audio(&mut pcm);
            frames.push(frame.map(|f| f.kind));
            // Echo what we play, silence before the first frame.
            let n = if frame.is_some() {
                s.send_audio(&pcm, &mut tx).unwrap()
            } else {
                s.send_audio(&[0; 160], &mut tx).unwrap()
            };
            sent.push(RtpPacket::parse(&tx[..n]).unwrap().sequence_number);
        }
        s.poll_rtcp(now, &mut tx).unwrap();
    }
    // 2 s of slots: 101 (0 ms to 2000 ms inclusive).
    assert_eq!(sent.len(), 101);
    assert!(sent.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    let audio = frames
        .iter()
        .filter(|k| **k == Some(FrameKind::Audio))
        .count();
    assert!(audio >= 95, "{audio}");
    assert_eq!(
        s.poll_event(),
        Some(MediaEvent::NewSource { ssrc: PEER_SSRC })
    );
    let stats = s.stats();
    assert_eq!(stats.rtp_packets, 100);
    assert_eq!(stats.packets_sent, 101);
    assert_eq!(stats.jitter.late, 0);
    assert_eq!(s.remote_ssrc(), Some(PEER_SSRC));
    assert_eq!(s.receiver_stats().unwrap().cumulative_lost(), 0);
}

#[test]
fn dtmf_in_and_out() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut buf = [0u8; 200];
    // Peer presses '#': start, two updates, three ends.
    for (i, (end, dur)) in [
        (false, 160),
        (false, 320),
        (false, 480),
        (true, 640),
        (true, 640),
        (true, 640),
    ]
    .into_iter()
    .enumerate()
    {
        let payload = TelephoneEvent {
            code: 11,
            end,
            volume: 10,
            duration: dur,
        }
        .to_bytes();
        let n = RtpPacket {
            marker: i == 0,
            payload_type: 101,
            sequence_number: 5 + i as u16,
            timestamp: 8000,
            ssrc: PEER_SSRC,
            payload: &payload,
        }
        .write_to(&mut buf)
        .unwrap();
        s.handle_rtp(t0 + 20 * MS * i as u32, &buf[..n]).unwrap();
    }
    assert!(matches!(s.poll_event(), Some(MediaEvent::NewSource { .. })));
    match s.poll_event() {
        Some(MediaEvent::Dtmf(e)) => assert_eq!((e.digit(), e.timestamp), (Some('#'), 8000)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.poll_event(), None);

    // We send '5' for 60 ms between audio frames.
    s.send_dtmf('5', Duration::from_millis(60)).unwrap();
    let mut kinds = Vec::new();
    for slot in 0..8u32 {
        assert_eq!(s.handle_timeout(t0 + 20 * MS * slot), 1);
        let n = s.send_audio(&[0; 160], &mut buf).unwrap();
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        kinds.push((p.payload_type, p.marker, p.sequence_number, p.timestamp));
    }
    // 60 ms = 3 frames: updates at 160 and 320, three ends at 480; then audio.
    let pts: Vec<u8> = kinds.iter().map(|k| k.0).collect();
    assert_eq!(pts, vec![101, 101, 101, 101, 101, 0, 0, 0]);
    assert!(kinds[0].1 && !kinds[1].1);
    assert!(kinds[..5].iter().all(|k| k.3 == 0)); // event timestamp = first slot
    assert_eq!(kinds[5].3, 5 * 160); // audio continues in real time
    let seqs: Vec<u16> = kinds.iter().map(|k| k.2).collect();
    assert_eq!(seqs, (1000..1008).collect::<Vec<u16>>());
    // Audio after DTMF: the very first audio packet of the stream carries the marker.
    assert!(kinds[5].1);
}

#[test]
fn dtmf_without_negotiation_is_refused() {
    let t0 = Instant::now();
    let config = SessionConfig::new(G711::Pcma, "x");
    let mut s = MediaSession::new(config, t0, SystemTime::now());
    assert_eq!(
        s.send_dtmf('1', Duration::from_millis(100)),
        Err(DtmfError::NotNegotiated)
    );
}

#[test]
fn bad_packets_are_counted_and_typed() {
    let t0 = Instant::now();
    let mut s = session(t0);
    assert_eq!(
        s.handle_rtp(t0, &[0x80, 0]),
        Err(RtpError::TooShort { len: 2 })
    );
    let mut buf = [0u8; 200];
    let n = RtpPacket {
        marker: false,
        payload_type: 18,
        sequence_number: 1,
        timestamp: 1,
        ssrc: 1,
        payload: &[0; 20],
    }
    .write_to(&mut buf)
    .unwrap();
    assert_eq!(
        s.handle_rtp(t0, &buf[..n]),
        Err(RtpError::UnexpectedPayloadType(18))
    );
    // A telephone-event with a short payload.
    let n = RtpPacket {
        marker: true,
        payload_type: 101,
        sequence_number: 1,
        timestamp: 1,
        ssrc: 1,
        payload: &[1, 2],
    }
    .write_to(&mut buf)
    .unwrap();
    assert_eq!(
        s.handle_rtp(t0, &buf[..n]),
        Err(RtpError::BadTelephoneEvent(2))
    );
    assert!(s.handle_rtcp(t0, &[0x80, 201, 0, 9]).is_err());
    let stats = s.stats();
    assert_eq!(
        (
            stats.rtp_malformed,
            stats.rtp_unexpected_payload,
            stats.rtcp_malformed
        ),
        (1, 1, 1)
    );
}

#[test]
fn rtcp_reports_both_ways() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut tone = ToneGenerator::test_tone();
    let mut buf = [0u8; 1500];
    let mut report = None;
    // 10 s: peer sends, we send, RTCP goes out when due.
    for slot in 0..500u32 {
        let now = t0 + 20 * MS * slot;
        let n = peer_packet(slot, &mut tone, &mut buf);
        s.handle_rtp(now + 3 * MS, &buf[..n]).unwrap();
        for _ in 0..s.handle_timeout(now) {
            s.send_audio(&[0; 160], &mut buf).unwrap();
        }
        if let Some(n) = s.poll_rtcp(now, &mut buf).unwrap() {
            report.get_or_insert((now, buf[..n].to_vec()));
        }
    }
    let (at, bytes) = report.unwrap();
    assert!(at - t0 >= Duration::from_millis(1250) && at - t0 <= Duration::from_millis(3750));
    let packets: Vec<_> = RtcpCompound::parse(&bytes).unwrap().packets().collect();
    let sr_ntp = match &packets[0] {
        RtcpPacket::SenderReport {
            ssrc,
            info,
            reports,
        } => {
            assert_eq!(*ssrc, 0xAB);
            assert!(info.packet_count > 0);
            assert_eq!(info.octet_count, info.packet_count * 160);
            let blocks: Vec<_> = reports.clone().collect();
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].ssrc, PEER_SSRC);
            assert_eq!(blocks[0].cumulative_lost, 0);
            info.ntp
        }
        other => panic!("{other:?}"),
    };
    assert!(matches!(packets[1], RtcpPacket::Other { packet_type: 202 }));

    // The peer answers 40 ms later with an RR about us that echoes our SR (held 30 ms).
    let mut rr = [0u8; 100];
    let mut w = RtcpWriter::new(&mut rr);
    w.report(
        PEER_SSRC,
        None,
        &[siphon_media::rtcp::ReportBlock {
            ssrc: 0xAB,
            fraction_lost: 64,
            cumulative_lost: 3,
            extended_highest_seq: 100,
            jitter: 80,
            last_sr: (sr_ntp >> 16) as u32,
            delay_since_last_sr: 65536 * 30 / 1000,
        }],
    )
    .unwrap();
    let n = w.len();
    s.handle_rtcp(at + 40 * MS, &rr[..n]).unwrap();
    let event = std::iter::from_fn(|| s.poll_event())
        .find(|e| matches!(e, MediaEvent::RemoteReport { .. }))
        .unwrap();
    match event {
        MediaEvent::RemoteReport {
            ssrc,
            fraction_lost,
            cumulative_lost,
            jitter,
            round_trip_time,
        } => {
            assert_eq!(ssrc, PEER_SSRC);
            assert_eq!(fraction_lost, 0.25);
            assert_eq!(cumulative_lost, 3);
            assert_eq!(jitter, Duration::from_millis(10));
            let rtt = round_trip_time.unwrap();
            assert!(
                rtt > Duration::from_millis(9) && rtt < Duration::from_millis(11),
                "{rtt:?}"
            );
        }
        _ => unreachable!(),
    }

    // Hang-up: SR + SDES + BYE.
    let n = s.build_bye(at, &mut buf).unwrap();
    let types: Vec<u8> = RtcpCompound::parse(&buf[..n])
        .unwrap()
        .packets()
        .map(|p| match p {
            RtcpPacket::SenderReport { .. } => 200,
            RtcpPacket::ReceiverReport { .. } => 201,
            RtcpPacket::Other { packet_type } => packet_type,
        })
        .collect();
    assert_eq!(types, vec![200, 202, 203]);
}

#[test]
fn ssrc_change_is_an_event_and_resets_playout() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut buf = [0u8; 400];
    for (i, ssrc) in [1u32, 1, 1, 2, 2].into_iter().enumerate() {
        let n = RtpPacket {
            marker: false,
            payload_type: 0,
            sequence_number: i as u16 * 1000,
            timestamp: i as u32 * 100_000,
            ssrc,
            payload: &[0xFF; 160],
        }
        .write_to(&mut buf)
        .unwrap();
        s.handle_rtp(t0 + 20 * MS * i as u32, &buf[..n]).unwrap();
    }
    assert_eq!(s.poll_event(), Some(MediaEvent::NewSource { ssrc: 1 }));
    assert_eq!(s.poll_event(), Some(MediaEvent::NewSource { ssrc: 2 }));
    assert_eq!(s.remote_ssrc(), Some(2));
    assert_eq!(s.stats().jitter.source_changes, 1);
}

#[test]
fn prompt_payloads_and_silence_slots() {
    let t0 = Instant::now();
    let mut s = session(t0);
    let mut buf = [0u8; 400];
    assert_eq!(s.handle_timeout(t0), 1);
    let n = s.send_payload(&[0x11; 160], &mut buf).unwrap();
    let p = RtpPacket::parse(&buf[..n]).unwrap();
    assert!(p.marker);
    assert_eq!(p.payload, &[0x11; 160]);
    assert_eq!(s.handle_timeout(t0 + 20 * MS), 1);
    assert_eq!(s.send_silence(&mut buf).unwrap(), None);
    assert_eq!(s.handle_timeout(t0 + 40 * MS), 1);
    let n = s.send_payload(&[0x22; 160], &mut buf).unwrap();
    let p = RtpPacket::parse(&buf[..n]).unwrap();
    assert!(p.marker, "talk spurt after silence");
    assert_eq!((p.sequence_number, p.timestamp), (1001, 320));
    // Nothing received: no audio to pop.
    let mut pcm = [0i16; 160];
    assert_eq!(s.pop_audio(&mut pcm), None);
}

/// A peer whose SDP listed both laws switches from PCMU to PCMA halfway (same SSRC,
/// continuous sequence numbers and timestamps): with `also_receive` every packet is taken
/// and decoded by its own payload type, so the played audio carries on without a gap and
/// matches the tone; without it the PCMA half is refused as an unexpected payload type.
#[test]
fn peer_switching_law_mid_stream_is_decoded_per_packet() {
    fn run(also_receive: Option<G711>) -> (MediaSession, Vec<Option<FrameKind>>, i64) {
        let t0 = Instant::now();
        let mut config = SessionConfig::new(G711::Pcmu, "test@siphon");
        config.also_receive = also_receive;
        let mut s = MediaSession::with_pacer(
            config,
            Pacer::new(t0, 0xAB, 1000, 0),
            t0,
            SystemTime::now(),
            1,
        );
        let mut tone = ToneGenerator::test_tone();
        let mut reference = ToneGenerator::test_tone();
        let (mut rx, mut tx) = ([0u8; 1500], [0u8; 1500]);
        let (mut pcm, mut expected) = ([0i16; 160], [0i16; 160]);
        let mut frames = Vec::new();
        let mut worst = 0i64;
        let mut played = 0;
        for i in 0..100u32 {
            let now = t0 + 20 * MS * i;
            tone.fill(&mut pcm);
            let (law, pt) = if i < 50 {
                (G711::Pcmu, 0)
            } else {
                (G711::Pcma, 8)
            };
            let mut payload = [0u8; 160];
            law.encode(&pcm, &mut payload);
            let n = RtpPacket {
                marker: i == 0,
                payload_type: pt,
                sequence_number: 100u16.wrapping_add(i as u16),
                timestamp: 5000 + 160 * i,
                ssrc: PEER_SSRC,
                payload: &payload,
            }
            .write_to(&mut rx)
            .unwrap();
            let _ = s.handle_rtp(now, &rx[..n]);
            for _ in 0..s.handle_timeout(now) {
                let frame = s.pop_audio(&mut pcm);
                if frame.is_some_and(|f| f.kind == FrameKind::Audio) {
                    // The played frames are the tone's, in order, whatever law carried them.
                    reference.fill(&mut expected);
                    played += 1;
                    let diff = pcm
                        .iter()
                        .zip(&expected)
                        .map(|(a, b)| (i64::from(*a) - i64::from(*b)).abs())
                        .max()
                        .unwrap_or(0);
                    worst = worst.max(diff);
                }
                frames.push(frame.map(|f| f.kind));
                s.send_audio(&[0; 160], &mut tx).unwrap();
            }
        }
        assert!(played > 0);
        (s, frames, worst)
    }

    let (s, frames, worst) = run(Some(G711::Pcma));
    let stats = s.stats();
    assert_eq!(stats.rtp_packets, 100);
    assert_eq!(stats.rtp_unexpected_payload, 0);
    // From the first played frame on, every slot is received audio: no gap at the switch.
    let first = frames.iter().position(|k| k.is_some()).unwrap();
    assert!(
        frames[first..].iter().all(|k| *k == Some(FrameKind::Audio)),
        "{frames:?}"
    );
    // G.711 quantisation of a -10 dBm0 tone: well under 5 % of full scale either law.
    assert!(
        worst < 1600,
        "played audio differs from the tone by {worst}"
    );

    let (s, _, _) = run(None);
    assert_eq!(s.stats().rtp_packets, 50);
    assert_eq!(s.stats().rtp_unexpected_payload, 50);
}
