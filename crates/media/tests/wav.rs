//! WAV reader: supported formats and typed errors for everything else.

use std::time::Duration;

use siphon_media::g711::G711;
use siphon_media::wav::{Wav, WavEncoding, WavError};

struct Fmt {
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
}

fn fmt_chunk(f: &Fmt) -> Vec<u8> {
    let block_align = f.channels * f.bits.div_ceil(8);
    let mut v = Vec::new();
    v.extend_from_slice(&f.tag.to_le_bytes());
    v.extend_from_slice(&f.channels.to_le_bytes());
    v.extend_from_slice(&f.rate.to_le_bytes());
    v.extend_from_slice(&(f.rate * u32::from(block_align)).to_le_bytes());
    v.extend_from_slice(&block_align.to_le_bytes());
    v.extend_from_slice(&f.bits.to_le_bytes());
    v
}

fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = id.to_vec();
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    if body.len() % 2 == 1 {
        v.push(0);
    }
    v
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut v = b"RIFF".to_vec();
    v.extend_from_slice(&(4 + body.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVE");
    v.extend_from_slice(&body);
    v
}

fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
    chunk(
        b"fmt ",
        &fmt_chunk(&Fmt {
            tag,
            channels,
            rate,
            bits,
        }),
    )
}

#[test]
fn pcm16_8k_with_other_chunks_around() {
    let samples: Vec<i16> = (0..800).map(|i| (i * 37 - 9000) as i16).collect();
    let bytes = riff(&[
        chunk(b"LIST", b"odd"), // odd size: padded
        fmt(1, 1, 8000, 16),
        chunk(b"fact", &[0, 0, 0, 0]),
        chunk(b"data", &pcm_bytes(&samples)),
    ]);
    let wav = Wav::parse(&bytes).unwrap();
    assert_eq!(wav.sample_rate, 8000);
    assert_eq!(wav.encoding, WavEncoding::Pcm16);
    assert_eq!(wav.sample_count(), 800);
    assert_eq!(wav.duration(), Duration::from_millis(100));
    assert_eq!(wav.to_pcm(), samples);
    assert_eq!(wav.to_pcm_8k(), samples);
    let ulaw = wav.to_g711(G711::Pcmu);
    assert_eq!(ulaw.len(), 800);
    assert_eq!(ulaw[0], G711::Pcmu.encode_sample(samples[0]));
}

#[test]
fn pcm16_16k_is_downsampled_for_8k() {
    let samples = vec![1000i16; 3200];
    let bytes = riff(&[fmt(1, 1, 16_000, 16), chunk(b"data", &pcm_bytes(&samples))]);
    let wav = Wav::parse(&bytes).unwrap();
    assert_eq!(wav.sample_rate, 16_000);
    assert_eq!(wav.duration(), Duration::from_millis(200));
    let narrow = wav.to_pcm_8k();
    assert_eq!(narrow.len(), 1600);
    // DC passes at unity gain once the filter has filled.
    assert!(narrow[100..].iter().all(|&s| (s - 1000).abs() <= 1));
}

#[test]
fn g711_formats_6_and_7() {
    let codes: Vec<u8> = (0..=255).collect();
    for (tag, law) in [(6, G711::Pcma), (7, G711::Pcmu)] {
        let bytes = riff(&[fmt(tag, 1, 8000, 8), chunk(b"data", &codes)]);
        let wav = Wav::parse(&bytes).unwrap();
        assert_eq!(wav.encoding, WavEncoding::G711(law));
        assert_eq!(wav.sample_count(), 256);
        assert_eq!(wav.data, &codes[..]);
        let pcm = wav.to_pcm();
        assert_eq!(pcm[5], law.decode_sample(5));
        // Same law: bytes copied as they are.
        assert_eq!(wav.to_g711(law), codes);
        assert_eq!(law.wav_format_tag(), tag);
    }
    // A-law file sent as µ-law: transcoded via linear.
    let bytes = riff(&[fmt(6, 1, 8000, 8), chunk(b"data", &[0xD5; 10])]);
    let wav = Wav::parse(&bytes).unwrap();
    assert_eq!(
        wav.to_g711(G711::Pcmu),
        vec![G711::Pcmu.encode_sample(8); 10]
    );
}

#[test]
fn extensible_format() {
    let mut body = fmt_chunk(&Fmt {
        tag: 0xFFFE,
        channels: 1,
        rate: 8000,
        bits: 16,
    });
    body.extend_from_slice(&22u16.to_le_bytes()); // cbSize
    body.extend_from_slice(&16u16.to_le_bytes()); // valid bits
    body.extend_from_slice(&4u32.to_le_bytes()); // channel mask
    // KSDATAFORMAT_SUBTYPE_PCM: 00000001-0000-0010-8000-00aa00389b71
    body.extend_from_slice(&[
        1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
    ]);
    let bytes = riff(&[chunk(b"fmt ", &body), chunk(b"data", &[1, 0, 2, 0])]);
    let wav = Wav::parse(&bytes).unwrap();
    assert_eq!(wav.to_pcm(), vec![1, 2]);
    // Truncated extensible header.
    let bytes = riff(&[chunk(b"fmt ", &body[..30]), chunk(b"data", &[1, 0])]);
    assert_eq!(Wav::parse(&bytes), Err(WavError::Truncated));
}

#[test]
fn typed_errors_for_everything_else() {
    let data = chunk(b"data", &[0; 16]);
    assert_eq!(Wav::parse(b"RIFX"), Err(WavError::NotRiff));
    assert_eq!(Wav::parse(b"OggS0000WAVE"), Err(WavError::NotRiff));
    assert_eq!(
        Wav::parse(b"RIFF\x04\x00\x00\x00AVI "),
        Err(WavError::NotWave)
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(1, 2, 8000, 16), data.clone()])),
        Err(WavError::UnsupportedChannels(2))
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(1, 1, 44_100, 16), data.clone()])),
        Err(WavError::UnsupportedSampleRate(44_100))
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(7, 1, 16_000, 8), data.clone()])),
        Err(WavError::UnsupportedSampleRate(16_000))
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(1, 1, 8000, 8), data.clone()])),
        Err(WavError::UnsupportedBitsPerSample { format: 1, bits: 8 })
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(6, 1, 8000, 16), data.clone()])),
        Err(WavError::UnsupportedBitsPerSample {
            format: 6,
            bits: 16
        })
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(2, 1, 8000, 4), data.clone()])),
        Err(WavError::UnsupportedFormat(2))
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(3, 1, 8000, 32), data.clone()])),
        Err(WavError::UnsupportedFormat(3))
    );
    assert_eq!(
        Wav::parse(&riff(&[fmt(1, 1, 8000, 16)])),
        Err(WavError::MissingData)
    );
    assert_eq!(
        Wav::parse(&riff(&[data.clone(), fmt(1, 1, 8000, 16)])),
        Err(WavError::MissingFormat)
    );
    // fmt chunk shorter than 16 bytes, and a chunk header cut in half.
    assert_eq!(
        Wav::parse(&riff(&[chunk(b"fmt ", &[1, 0, 1, 0]), data.clone()])),
        Err(WavError::Truncated)
    );
    let mut cut = riff(&[fmt(1, 1, 8000, 16)]);
    cut.extend_from_slice(b"dat");
    assert_eq!(Wav::parse(&cut), Err(WavError::Truncated));
}

#[test]
fn data_size_past_the_end_reads_what_is_there() {
    let mut bytes = riff(&[fmt(1, 1, 8000, 16)]);
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[1, 0, 2, 0, 3]); // odd trailing byte dropped
    let wav = Wav::parse(&bytes).unwrap();
    assert_eq!(wav.to_pcm(), vec![1, 2]);
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_bytes_never_panic() {
    let base = riff(&[fmt(1, 1, 8000, 16), chunk(b"data", &[0; 32])]);
    let mut s = 5u64;
    for _ in 0..50_000 {
        let mut b = base.clone();
        for _ in 0..3 {
            let i = (xorshift(&mut s) as usize) % b.len();
            b[i] = xorshift(&mut s) as u8;
        }
        let len = (xorshift(&mut s) as usize) % (b.len() + 1);
        if let Ok(w) = Wav::parse(&b[..len]) {
            let _ = w.to_pcm_8k();
        }
    }
}
