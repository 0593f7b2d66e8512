//! Per-20 ms-frame costs of the hot paths. Run: `cargo bench -p siphon-media -- --quick`.

// A benchmark that fails to set up should stop loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use siphon_media::g711::G711;
use siphon_media::jitter::{JitterBuffer, JitterConfig, PacketInfo};
use siphon_media::pacer::Pacer;
use siphon_media::packet::RtpPacket;
use siphon_media::resample::{Downsampler, Upsampler};
use siphon_media::session::{MediaSession, SessionConfig};
use siphon_media::tone::ToneGenerator;

fn speech_like_frame() -> [i16; 160] {
    let mut pcm = [0i16; 160];
    ToneGenerator::new(437.0, -6.0, 8000).fill(&mut pcm);
    pcm
}

fn g711(c: &mut Criterion) {
    let pcm = speech_like_frame();
    for law in [G711::Pcmu, G711::Pcma] {
        let mut encoded = [0u8; 160];
        law.encode(&pcm, &mut encoded);
        let mut decoded = [0i16; 160];
        let mut reencoded = [0u8; 160];
        c.bench_function(&format!("g711/{law:?}/decode+encode 160"), |b| {
            b.iter(|| {
                law.decode(black_box(&encoded), &mut decoded);
                law.encode(black_box(&decoded), &mut reencoded);
                black_box(&reencoded);
            })
        });
    }
}

fn resample(c: &mut Criterion) {
    let narrow = speech_like_frame();
    let mut up = Upsampler::new();
    let mut wide = [0i16; 320];
    c.bench_function("resample/8k->16k 160->320", |b| {
        b.iter(|| {
            up.process_frame(black_box(&narrow), &mut wide);
            black_box(&wide);
        })
    });
    let mut down = Downsampler::new();
    let mut out = [0i16; 160];
    c.bench_function("resample/16k->8k 320->160", |b| {
        b.iter(|| {
            down.process_frame(black_box(&wide), &mut out);
            black_box(&out);
        })
    });
}

fn jitter(c: &mut Criterion) {
    let pcm = speech_like_frame();
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut out = [0i16; 160];
    let mut n: u32 = 0;
    c.bench_function("jitter/push+pop 160", |b| {
        b.iter(|| {
            // Steady state: one packet in, one frame out, 20 ms of virtual time apart.
            let now = t0 + Duration::from_millis(20) * n;
            let info = PacketInfo {
                sequence_number: n as u16,
                timestamp: n.wrapping_mul(160),
                ssrc: 1,
            };
            black_box(jb.push(now, info, black_box(&pcm)));
            black_box(jb.pop(now + Duration::from_millis(10), &mut out));
            n = n.wrapping_add(1);
        })
    });
}

fn rtp(c: &mut Criterion) {
    let payload = [0xD5u8; 160];
    let mut buf = [0u8; 1500];
    let t0 = Instant::now();
    let mut pacer = Pacer::new(t0, 1, 0, 0);
    c.bench_function("rtp/build 172 B", |b| {
        b.iter(|| black_box(pacer.build(8, black_box(&payload), &mut buf).unwrap()))
    });
    let n = pacer.build(8, &payload, &mut buf).unwrap();
    c.bench_function("rtp/parse 172 B", |b| {
        b.iter(|| black_box(RtpPacket::parse(black_box(&buf[..n])).unwrap()))
    });
}

fn session(c: &mut Criterion) {
    // Everything one call leg does per 20 ms in echo mode: receive + decode + buffer, play
    // out, encode + send.
    let t0 = Instant::now();
    let config = SessionConfig::new(G711::Pcmu, "bench");
    let mut s = MediaSession::with_pacer(config, Pacer::new(t0, 1, 0, 0), t0, SystemTime::now(), 1);
    let mut payload = [0u8; 160];
    G711::Pcmu.encode(&speech_like_frame(), &mut payload);
    let mut rx = [0u8; 1500];
    let mut tx = [0u8; 1500];
    let mut pcm = [0i16; 160];
    let mut n: u32 = 0;
    c.bench_function("session/echo frame (rtp in, pop, rtp out)", |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(20) * n;
            let len = RtpPacket {
                marker: false,
                payload_type: 0,
                sequence_number: n as u16,
                timestamp: n.wrapping_mul(160),
                ssrc: 7,
                payload: &payload,
            }
            .write_to(&mut rx)
            .unwrap();
            s.handle_rtp(now, &rx[..len]).unwrap();
            for _ in 0..s.handle_timeout(now) {
                s.pop_audio(&mut pcm);
                black_box(s.send_audio(&pcm, &mut tx).unwrap());
            }
            n = n.wrapping_add(1);
        })
    });
}

criterion_group!(benches, g711, resample, jitter, rtp, session);
criterion_main!(benches);
