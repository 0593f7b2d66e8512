//! The fork's per-frame work on Siphon's side: turning 20 ms of the call's linear audio into
//! the fork's format (`forking::encode_frame`: L16 or G.711, 8 or 16 kHz, mono, mixed or
//! stereo), and the wire message a protocol makes of it (native and audio_fork send the
//! bytes as they are; Twilio wraps base64 in JSON). `cargo bench -p siphon-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use siphon_fork::protocol::{Codec, StreamInfo};
use siphon_fork::{AudioFormat, CallMeta, Encoding, ForkConfig, Mix, Mode};
use siphon_media::FRAME_SAMPLES;
use siphon_media::resample::Upsampler;
use siphon_server::media::forking::encode_frame;

fn speech(seed: i16) -> [i16; FRAME_SAMPLES] {
    let mut f = [0i16; FRAME_SAMPLES];
    for (i, s) in f.iter_mut().enumerate() {
        *s = ((i as i16).wrapping_mul(397).wrapping_add(seed)) % 12000;
    }
    f
}

fn encode(c: &mut Criterion) {
    let a = speech(1);
    let b = speech(7);
    let cases = [
        ("L16 8 kHz mono", Encoding::L16, 8000, 1, Mix::Mono, false),
        ("PCMU 8 kHz mono", Encoding::Pcmu, 8000, 1, Mix::Mono, false),
        (
            "L16 16 kHz mono (upsampled)",
            Encoding::L16,
            16000,
            1,
            Mix::Mono,
            false,
        ),
        (
            "L16 8 kHz stereo (two tracks)",
            Encoding::L16,
            8000,
            2,
            Mix::Stereo,
            true,
        ),
        (
            "L16 16 kHz stereo (two tracks)",
            Encoding::L16,
            16000,
            2,
            Mix::Stereo,
            true,
        ),
    ];
    for (name, encoding, sample_rate, channels, mix, two) in cases {
        let format = AudioFormat {
            encoding,
            sample_rate,
            channels,
        };
        let (mut up_a, mut up_b) = (Upsampler::new(), Upsampler::new());
        let mut out = BytesMut::with_capacity(4096);
        c.bench_function(&format!("fork/encode_frame {name}"), |bench| {
            bench.iter(|| {
                out.clear();
                encode_frame(
                    format,
                    mix,
                    &a,
                    two.then_some(&b),
                    (&mut up_a, &mut up_b),
                    &mut out,
                );
                out.len()
            })
        });
    }
}

fn wire(c: &mut Criterion) {
    let meta = CallMeta {
        call_id: "bench-call".into(),
        from: "sip:1001@127.0.0.1".into(),
        to: "sip:700@127.0.0.1".into(),
        codec: "PCMU".into(),
        account_sid: None,
    };
    for (name, mode, bytes) in [
        ("native (L16 8 kHz)", Mode::Native, 320),
        ("twilio (mu-law, base64 JSON)", Mode::Twilio, 160),
    ] {
        let config = ForkConfig::new("ws://127.0.0.1:9/x", mode);
        let mut codec = Codec::new(
            mode,
            StreamInfo::new("MZbench".into(), &config, meta.clone()),
        );
        let frame = bytes::Bytes::from(vec![0x55u8; bytes]);
        let mut out = Vec::with_capacity(8);
        codec.on_connect(false, &mut out);
        let mut index = 0u64;
        c.bench_function(&format!("fork/wire message {name}"), |bench| {
            bench.iter(|| {
                out.clear();
                codec.audio(&frame, index, &mut out);
                index += 1;
                out.iter().map(|m| m.len()).sum::<usize>()
            })
        });
    }
}

criterion_group!(benches, encode, wire);
criterion_main!(benches);
