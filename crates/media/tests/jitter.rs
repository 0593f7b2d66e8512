//! Jitter buffer behaviour, driven in virtual time: packets arrive at chosen instants, the
//! playout clock pops every 20 ms. Each packet's samples all hold its index + 1, so the
//! played frames say exactly which packet they came from.

use std::time::{Duration, Instant};

use siphon_media::jitter::{FrameKind, JitterBuffer, JitterConfig, PacketInfo, PushOutcome};

const US: Duration = Duration::from_micros(1);
const TICK: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug)]
struct Arrival {
    at_us: u64,
    seq: u16,
    ts: u32,
    ssrc: u32,
    value: i16,
    len: usize,
}

fn stream(n: usize, seq0: u16, ts0: u32, ssrc: u32) -> Vec<Arrival> {
    (0..n)
        .map(|i| Arrival {
            at_us: 20_000 * i as u64,
            seq: seq0.wrapping_add(i as u16),
            ts: ts0.wrapping_add(160 * i as u32),
            ssrc,
            value: (i + 1) as i16,
            len: 160,
        })
        .collect()
}

#[derive(Debug, Default)]
struct Run {
    /// (kind, first sample) of every frame played, `None` when pop returned nothing.
    frames: Vec<Option<(FrameKind, i16)>>,
    outcomes: Vec<PushOutcome>,
}

impl Run {
    /// The values of audio frames, in play order.
    fn played(&self) -> Vec<i16> {
        self.frames
            .iter()
            .flatten()
            .filter(|(k, _)| matches!(k, FrameKind::Audio | FrameKind::Partial))
            .map(|&(_, v)| v)
            .collect()
    }

    fn kinds(&self) -> Vec<FrameKind> {
        self.frames.iter().flatten().map(|&(k, _)| k).collect()
    }
}

/// Runs arrivals and 20 ms pops (offset by `phase_us`) until `end_us`.
fn simulate(jb: &mut JitterBuffer, mut arrivals: Vec<Arrival>, phase_us: u64, end_us: u64) -> Run {
    let t0 = Instant::now();
    arrivals.sort_by_key(|a| a.at_us);
    let mut run = Run::default();
    let mut next_pop = phase_us;
    let mut i = 0;
    let mut pcm = vec![0i16; 4096];
    let mut out = [0i16; 160];
    loop {
        let next_arrival = arrivals.get(i).map(|a| a.at_us);
        match next_arrival {
            Some(at) if at <= next_pop => {
                let a = arrivals[i];
                pcm[..a.len].fill(a.value);
                let info = PacketInfo {
                    sequence_number: a.seq,
                    timestamp: a.ts,
                    ssrc: a.ssrc,
                };
                run.outcomes
                    .push(jb.push(t0 + US * at as u32, info, &pcm[..a.len]));
                i += 1;
            }
            _ => {
                if next_pop > end_us {
                    break;
                }
                let frame = jb.pop(t0 + US * next_pop as u32, &mut out);
                run.frames.push(frame.map(|f| {
                    // Frames are uniform per packet; partial/odd cases are checked separately.
                    (f.kind, out[0])
                }));
                next_pop += 20_000;
            }
        }
    }
    run
}

fn buffer() -> JitterBuffer {
    JitterBuffer::new(JitterConfig::default())
}

#[test]
fn in_order_stream_plays_everything_after_the_initial_delay() {
    let mut jb = buffer();
    let run = simulate(&mut jb, stream(50, 1000, 5000, 7), 5_000, 1_200_000);
    let expected: Vec<i16> = (1..=50).collect();
    assert_eq!(run.played(), expected);
    // Nothing is played for the first 60 ms (initial delay): pops at 5, 25, 45 ms are None.
    assert_eq!(&run.frames[..3], &[None, None, None]);
    assert!(run.frames[3].is_some());
    assert!(run.outcomes.iter().all(|&o| o == PushOutcome::Buffered));
    let stats = jb.stats();
    assert_eq!((stats.late, stats.duplicates), (0, 0));
    // The only concealment is the single repeat after the stream ends, then silence.
    let kinds = run.kinds();
    assert!(kinds[..50].iter().all(|&k| k == FrameKind::Audio));
    assert_eq!(kinds[50], FrameKind::Repeat);
    assert!(kinds[51..].iter().all(|&k| k == FrameKind::Silence));
}

#[test]
fn reorders() {
    let mut jb = buffer();
    let mut arrivals = stream(30, 0, 0, 7);
    // Packet 10 arrives 30 ms late, after 11 and 12; 20 and 21 swap.
    arrivals[10].at_us += 30_000;
    arrivals.swap(20, 21);
    let (a, b) = (arrivals[20].at_us, arrivals[21].at_us);
    arrivals[20].at_us = b;
    arrivals[21].at_us = a;
    let run = simulate(&mut jb, arrivals, 5_000, 800_000);
    assert_eq!(run.played(), (1..=30).collect::<Vec<i16>>());
    assert_eq!(jb.stats().late, 0);
}

#[test]
fn conceals_loss_by_repeating_once_then_silence() {
    let mut jb = buffer();
    let mut arrivals = stream(30, 0, 0, 7);
    // Lose packet index 10 (value 11), and indices 20..=22 (values 21..=23).
    arrivals.retain(|a| a.value != 11 && !(21..=23).contains(&a.value));
    let run = simulate(&mut jb, arrivals, 5_000, 800_000);
    let frames: Vec<_> = run.frames.iter().flatten().copied().collect();
    let pos = |v: i16| {
        frames
            .iter()
            .position(|&(k, x)| k == FrameKind::Audio && x == v)
            .unwrap()
    };
    let p10 = pos(10);
    assert_eq!(frames[p10 + 1], (FrameKind::Repeat, 10));
    assert_eq!(frames[p10 + 2], (FrameKind::Audio, 12));
    let p20 = pos(20);
    assert_eq!(frames[p20 + 1], (FrameKind::Repeat, 20));
    assert_eq!(frames[p20 + 2], (FrameKind::Silence, 0));
    assert_eq!(frames[p20 + 3], (FrameKind::Silence, 0));
    assert_eq!(frames[p20 + 4], (FrameKind::Audio, 24));
}

#[test]
fn drops_duplicates() {
    let mut jb = buffer();
    let mut arrivals = stream(20, 0, 0, 7);
    let mut dup = arrivals[5];
    dup.at_us += 5_000;
    arrivals.push(dup);
    // And a duplicate of a packet already played: that one is simply too late.
    let mut old = arrivals[1];
    old.at_us = 300_000;
    arrivals.push(old);
    let run = simulate(&mut jb, arrivals, 5_000, 600_000);
    assert_eq!(run.played(), (1..=20).collect::<Vec<i16>>());
    assert_eq!(jb.stats().duplicates, 1);
    assert_eq!(jb.stats().late, 1);
    assert!(run.outcomes.contains(&PushOutcome::Duplicate));
}

#[test]
fn drops_too_late_packets() {
    let mut jb = buffer();
    let mut arrivals = stream(40, 0, 0, 7);
    // Packet value 15 arrives 400 ms late: its slot was concealed long ago.
    arrivals[14].at_us += 400_000;
    let run = simulate(&mut jb, arrivals, 5_000, 1_000_000);
    assert!(run.outcomes.contains(&PushOutcome::TooLate));
    assert_eq!(jb.stats().late, 1);
    let played = run.played();
    assert!(!played.contains(&15));
    assert_eq!(played.len(), 39);
    // Playing continued in order around it.
    assert!(played.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn sequence_wrap_around() {
    let mut jb = buffer();
    let run = simulate(&mut jb, stream(30, 65520, 0, 7), 5_000, 800_000);
    assert_eq!(run.played(), (1..=30).collect::<Vec<i16>>());
    assert_eq!(
        jb.stats().late + jb.stats().duplicates + jb.stats().rejected,
        0
    );
}

#[test]
fn timestamp_wrap_around() {
    let mut jb = buffer();
    let mut arrivals = stream(30, 100, u32::MAX - 160 * 10 + 1, 7);
    // Reorder right across the wrap too.
    arrivals[10].at_us += 25_000;
    let run = simulate(&mut jb, arrivals, 5_000, 800_000);
    assert_eq!(run.played(), (1..=30).collect::<Vec<i16>>());
    assert_eq!(jb.stats().late, 0);
}

#[test]
fn ssrc_change_resets_and_rebuffers() {
    let mut jb = buffer();
    let mut arrivals = stream(20, 10, 1000, 0xAAAA);
    let mut second = stream(20, 50_000, 9_000_000, 0xBBBB);
    for a in &mut second {
        a.at_us += 400_000;
        a.value += 100;
    }
    arrivals.extend(second);
    let run = simulate(&mut jb, arrivals, 5_000, 1_000_000);
    // The reset flushes what was still buffered of the old source (the last 60 ms, three
    // frames), then the new source plays from its first packet.
    let expected: Vec<i16> = (1..=17).chain(101..=120).collect();
    assert_eq!(run.played(), expected);
    assert_eq!(jb.stats().source_changes, 1);
    assert_eq!(jb.ssrc(), Some(0xBBBB));
    assert_eq!(run.outcomes[20], PushOutcome::NewSource);
}

#[test]
fn timestamp_jump_within_one_ssrc_resyncs() {
    let mut jb = buffer();
    let mut arrivals = stream(20, 10, 5_000_000, 7);
    // Same SSRC, contiguous sequence numbers, timestamps restart far back.
    let mut second = stream(20, 30, 1000, 7);
    for a in &mut second {
        a.at_us += 400_000;
        a.value += 100;
    }
    arrivals.extend(second);
    let run = simulate(&mut jb, arrivals, 5_000, 1_000_000);
    assert_eq!(run.outcomes[20], PushOutcome::Resynced);
    // As for an SSRC change, the buffered tail of the old timeline is flushed.
    let expected: Vec<i16> = (1..=17).chain(101..=120).collect();
    assert_eq!(run.played(), expected);
    assert_eq!(jb.stats().resyncs, 1);
}

#[test]
fn ten_ms_packets_play_as_full_20_ms_frames() {
    let mut jb = buffer();
    let arrivals: Vec<Arrival> = (0..60)
        .map(|i| Arrival {
            at_us: 10_000 * i as u64,
            seq: i as u16,
            ts: 80 * i as u32,
            ssrc: 1,
            value: (i / 2 + 1) as i16,
            len: 80,
        })
        .collect();
    let run = simulate(&mut jb, arrivals, 5_000, 900_000);
    assert_eq!(run.played(), (1..=30).collect::<Vec<i16>>());
    assert!(run.kinds().iter().all(|&k| k != FrameKind::Partial));
}

/// A deterministic generator for network delay.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn adapts_to_jitter_within_bounds() {
    let mut jb = buffer();
    let mut s = 99u64;
    let mut arrivals = stream(1500, 0, 0, 7); // 30 s
    for a in &mut arrivals {
        a.at_us += xorshift(&mut s) % 80_000; // 0–80 ms of network delay
    }
    let run = simulate(&mut jb, arrivals, 7_000, 31_000_000);
    let target = jb.target_delay();
    assert!(
        target >= Duration::from_millis(70) && target <= Duration::from_millis(100),
        "{target:?}"
    );
    // After adaptation (first 5 s), next to nothing is late.
    let late = jb.stats().late;
    assert!(late < 15, "late: {late}");
    assert!(run.played().len() >= 1480);

    // Absurd jitter: the target is capped at 200 ms.
    let mut jb = buffer();
    let mut arrivals = stream(500, 0, 0, 7);
    for a in &mut arrivals {
        a.at_us += xorshift(&mut s) % 600_000;
    }
    simulate(&mut jb, arrivals, 7_000, 11_000_000);
    assert_eq!(jb.target_delay(), Duration::from_millis(200));

    // A clean network converges towards the 20 ms floor.
    let mut jb = buffer();
    let run = simulate(&mut jb, stream(1500, 0, 0, 7), 7_000, 31_000_000);
    assert_eq!(jb.target_delay(), Duration::from_millis(20));
    assert!(
        jb.buffered() <= Duration::from_millis(60),
        "{:?}",
        jb.buffered()
    );
    assert_eq!(
        run.played().len(),
        1500 - jb.stats().frames_dropped as usize
    );
    assert_eq!(jb.stats().late, 0);
}

#[test]
fn sender_clock_drift_does_not_grow_the_buffer() {
    // The sender's clock runs 0.1 % fast: 1 packet per 19.98 ms of our time.
    let mut jb = buffer();
    let mut arrivals = stream(3000, 0, 0, 7); // 60 s
    for (i, a) in arrivals.iter_mut().enumerate() {
        a.at_us = i as u64 * 19_980;
    }
    simulate(&mut jb, arrivals, 3_000, 60_000_000);
    let stats = jb.stats();
    assert_eq!(stats.late, 0);
    // 60 s × 0.1 % = 60 ms = 3 frames to drop (plus the convergence from the initial delay).
    assert!(
        stats.frames_dropped >= 3 && stats.frames_dropped <= 8,
        "{stats:?}"
    );
    assert!(
        jb.buffered() <= Duration::from_millis(80),
        "{:?}",
        jb.buffered()
    );
}

#[test]
fn partial_frames_and_rejects() {
    let t0 = Instant::now();
    let mut jb = buffer();
    let info = |seq: u16, ts: u32| PacketInfo {
        sequence_number: seq,
        timestamp: ts,
        ssrc: 1,
    };
    assert_eq!(jb.push(t0, info(0, 0), &[]), PushOutcome::Rejected);
    assert_eq!(jb.push(t0, info(0, 0), &[1; 5000]), PushOutcome::Rejected);
    // 100 samples, then a gap: the first frame is partial with zeros at the end.
    assert_eq!(jb.push(t0, info(1, 0), &[5; 100]), PushOutcome::Buffered);
    let mut out = [7i16; 160];
    assert_eq!(jb.pop(t0, &mut out), None); // still buffering
    let frame = jb.pop(t0 + 3 * TICK, &mut out).unwrap();
    assert_eq!(frame.kind, FrameKind::Partial);
    assert_eq!(frame.timestamp, 0);
    assert!(out[..100].iter().all(|&s| s == 5));
    assert!(out[100..].iter().all(|&s| s == 0));
}

#[test]
fn grows_when_jitter_appears_mid_call() {
    let mut jb = buffer();
    let mut s = 7u64;
    let mut arrivals = stream(1500, 0, 0, 7);
    // Clean for 10 s, then 0–100 ms of random delay.
    for a in arrivals.iter_mut().skip(500) {
        a.at_us += xorshift(&mut s) % 100_000;
    }
    let run = simulate(&mut jb, arrivals, 11_000, 31_000_000);
    let stats = jb.stats();
    assert!(stats.frames_inserted >= 3, "{stats:?}");
    assert!(
        jb.target_delay() >= Duration::from_millis(90),
        "{:?}",
        jb.target_delay()
    );
    // The first delayed packets come too late; then the delay has grown and it stops.
    assert!(stats.late > 0 && stats.late < 20, "{stats:?}");
    // Every packet was played, too late, or in a frame dropped while converging from the
    // initial 60 ms towards 20 ms during the clean part.
    assert_eq!(
        run.played().len() as u64 + stats.late + stats.frames_dropped,
        1500
    );
}

#[test]
fn the_ring_is_sized_to_the_largest_delay() {
    // The default 200 ms bound gets the small ring (512 ms), a 500 ms bound the large one.
    assert_eq!(buffer().capacity(), siphon_media::jitter::MIN_CAPACITY);
    let long = JitterBuffer::new(JitterConfig {
        max_delay: Duration::from_millis(500),
        ..JitterConfig::default()
    });
    assert_eq!(long.capacity(), siphon_media::jitter::CAPACITY);
    // The small ring takes packets up to half its size (256 ms), no longer.
    let t0 = Instant::now();
    let info = |seq: u16| PacketInfo {
        sequence_number: seq,
        timestamp: 0,
        ssrc: 1,
    };
    let mut jb = buffer();
    assert_eq!(jb.push(t0, info(0), &[1; 2049]), PushOutcome::Rejected);
    assert_eq!(jb.push(t0, info(1), &[1; 2048]), PushOutcome::Buffered);
}

#[test]
fn a_500_ms_delay_bound_still_holds_400_ms_of_jitter() {
    // Every packet 400 ms late but one in ten on time: with a 500 ms bound the buffer must
    // grow to ~400 ms and play every packet (the ring is the large one for this bound).
    let mut jb = JitterBuffer::new(JitterConfig {
        max_delay: Duration::from_millis(500),
        ..JitterConfig::default()
    });
    let mut arrivals = stream(100, 0, 0, 3);
    for (i, a) in arrivals.iter_mut().enumerate() {
        if i % 10 != 0 {
            a.at_us += 400_000;
        }
    }
    let run = simulate(&mut jb, arrivals, 5_000, 3_500_000);
    let played = run.played();
    // The first packets come before the buffer has grown; from then on nothing is lost.
    let tail: Vec<i16> = (30..=100).collect();
    assert!(played.ends_with(&tail), "{played:?}");
}

#[test]
fn g711_packets_decode_straight_into_the_ring() {
    // push_g711 plays exactly what push of the decoded samples plays.
    let law = siphon_media::g711::G711::Pcmu;
    let payload: Vec<u8> = (0..160u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut decoded = vec![0i16; 160];
    law.decode(&payload, &mut decoded);
    let t0 = Instant::now();
    let info = PacketInfo {
        sequence_number: 1,
        timestamp: 0,
        ssrc: 1,
    };
    let (mut a, mut b) = (buffer(), buffer());
    assert_eq!(a.push_g711(t0, info, law, &payload), PushOutcome::Buffered);
    assert_eq!(b.push(t0, info, &decoded), PushOutcome::Buffered);
    let (mut out_a, mut out_b) = ([0i16; 160], [0i16; 160]);
    let fa = a.pop(t0 + 3 * TICK, &mut out_a).unwrap();
    let fb = b.pop(t0 + 3 * TICK, &mut out_b).unwrap();
    assert_eq!((fa, out_a), (fb, out_b));
    assert_eq!(fa.kind, FrameKind::Audio);
    assert_eq!(&out_a[..], &decoded[..]);
}
