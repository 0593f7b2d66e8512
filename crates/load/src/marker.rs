//! The latency marker: a send timestamp and a per-stream packet counter hidden in the first
//! [`MARKER_LEN`] samples of each 20 ms G.711 payload, in a form that survives Siphon's
//! decode → jitter buffer → re-encode and the fork's conversion to 16-bit PCM.
//!
//! # Why it survives
//!
//! Every marker byte is a µ-law code in `0xE0..=0xFF`. µ-law decoding is a table lookup, and
//! `encode(decode(c)) == c` for every code except `0x7F` (negative zero), which is not used.
//! So a marker byte comes back bit-exactly whether the far end receives µ-law (Siphon
//! re-encodes what it decoded: echo, or a fork in `pcmu`) or 16-bit PCM (the fork in `l16` at
//! 8 kHz sends the decoded sample: `ulaw_encode` of it gives the byte back). It does not
//! survive resampling to 16 kHz or A-law transcoding; the sink then counts frames only.
//!
//! # Why it is inaudible
//!
//! Codes `0xE0..=0xFF` are the smallest positive µ-law values (0 to 372 of 32767, below
//! -39 dBFS), and the marker spans 15 of 160 samples. The rest of the payload is real speech.
//!
//! # Layout (15 bytes)
//!
//! | byte | content |
//! |---|---|
//! | 0 | `0xE5`, magic |
//! | 1 | origin: `0xEA` generator, `0xEC` sink (audio the sink sends back) |
//! | 2..6 | 16-bit counter, one nibble per byte (`0xF0 | n`), most significant first |
//! | 6..14 | 32-bit send time (µs of `CLOCK_MONOTONIC`, wrapping), nibbles likewise |
//! | 14 | XOR of the 12 data nibbles, `0xF0 | x` |
//!
//! A chance match in real audio needs two exact magic bytes, twelve bytes in a 16-code range
//! and a matching checksum: about 2⁻⁶⁴.

use siphon_media::g711::{ulaw_decode, ulaw_encode};

/// Samples (µ-law bytes) the marker occupies at the start of a payload.
pub const MARKER_LEN: usize = 15;

const MAGIC: u8 = 0xE5;
const ORIGIN_GENERATOR: u8 = 0xEA;
const ORIGIN_SINK: u8 = 0xEC;

/// Who stamped the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The load generator (caller's audio).
    Generator,
    /// The fork sink (audio sent back into the call).
    Sink,
}

/// What a marker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Who wrote it.
    pub origin: Origin,
    /// Packet counter within the stream (wraps at 65536).
    pub counter: u16,
    /// Send time, µs of `CLOCK_MONOTONIC` modulo 2³².
    pub time_us: u32,
}

impl Stamp {
    /// Microseconds from the stamp to `now_us` (same clock), allowing for the 32-bit wrap.
    pub fn age_us(&self, now_us: u64) -> u32 {
        (now_us as u32).wrapping_sub(self.time_us)
    }

    fn codes(&self) -> [u8; MARKER_LEN] {
        let mut out = [0u8; MARKER_LEN];
        out[0] = MAGIC;
        out[1] = match self.origin {
            Origin::Generator => ORIGIN_GENERATOR,
            Origin::Sink => ORIGIN_SINK,
        };
        let data = (u64::from(self.counter) << 32) | u64::from(self.time_us);
        let mut check = 0u8;
        for i in 0..12 {
            let nibble = ((data >> (4 * (11 - i))) & 0x0F) as u8;
            check ^= nibble;
            out[2 + i] = 0xF0 | nibble;
        }
        out[14] = 0xF0 | check;
        out
    }

    fn from_codes(codes: &[u8]) -> Option<Stamp> {
        if codes.len() < MARKER_LEN || codes[0] != MAGIC {
            return None;
        }
        let origin = match codes[1] {
            ORIGIN_GENERATOR => Origin::Generator,
            ORIGIN_SINK => Origin::Sink,
            _ => return None,
        };
        let mut data = 0u64;
        let mut check = 0u8;
        for &c in &codes[2..14] {
            if c & 0xF0 != 0xF0 {
                return None;
            }
            let nibble = c & 0x0F;
            check ^= nibble;
            data = (data << 4) | u64::from(nibble);
        }
        if codes[14] != 0xF0 | check {
            return None;
        }
        Some(Stamp {
            origin,
            counter: (data >> 32) as u16,
            time_us: data as u32,
        })
    }
}

/// Writes the marker over the first [`MARKER_LEN`] bytes of a µ-law payload (no-op if shorter).
pub fn write_ulaw(payload: &mut [u8], stamp: Stamp) {
    if let Some(head) = payload.get_mut(..MARKER_LEN) {
        head.copy_from_slice(&stamp.codes());
    }
}

/// Reads a marker from the start of a µ-law payload.
pub fn read_ulaw(payload: &[u8]) -> Option<Stamp> {
    Stamp::from_codes(payload)
}

/// Reads a marker from channel 0 of interleaved 16-bit little-endian PCM at 8 kHz.
pub fn read_l16(pcm: &[u8], channels: usize) -> Option<Stamp> {
    let stride = 2 * channels.max(1);
    if pcm.len() < stride * (MARKER_LEN - 1) + 2 {
        return None;
    }
    let mut codes = [0u8; MARKER_LEN];
    for (i, c) in codes.iter_mut().enumerate() {
        let at = i * stride;
        let sample = i16::from_le_bytes([pcm[at], pcm[at + 1]]);
        *c = ulaw_encode(sample);
    }
    Stamp::from_codes(&codes)
}

/// Writes the marker into the first samples of mono 16-bit little-endian PCM.
pub fn write_l16(pcm: &mut [u8], stamp: Stamp) {
    if pcm.len() < 2 * MARKER_LEN {
        return;
    }
    for (i, c) in stamp.codes().iter().enumerate() {
        pcm[2 * i..2 * i + 2].copy_from_slice(&ulaw_decode(*c).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use siphon_media::g711::G711;

    fn stamp(counter: u16, time_us: u32) -> Stamp {
        Stamp {
            origin: Origin::Generator,
            counter,
            time_us,
        }
    }

    #[test]
    fn round_trips_through_ulaw() {
        for (c, t) in [(0, 0), (1, 2), (0xFFFF, u32::MAX), (0x1234, 0xDEADBEEF)] {
            let mut p = [0x55u8; 160];
            write_ulaw(&mut p, stamp(c, t));
            assert_eq!(read_ulaw(&p), Some(stamp(c, t)));
            assert_eq!(p[MARKER_LEN], 0x55, "audio after the marker is untouched");
        }
    }

    #[test]
    fn survives_decode_reencode_as_siphon_echo_does() {
        let mut p = [0u8; 160];
        write_ulaw(&mut p, stamp(777, 123_456_789));
        let mut pcm = [0i16; 160];
        G711::Pcmu.decode(&p, &mut pcm);
        let mut back = [0u8; 160];
        G711::Pcmu.encode(&pcm, &mut back);
        assert_eq!(read_ulaw(&back), Some(stamp(777, 123_456_789)));
    }

    #[test]
    fn survives_the_l16_fork_mono_and_stereo() {
        let mut p = [0xA0u8; 160];
        let s = Stamp {
            origin: Origin::Sink,
            counter: 9,
            time_us: 42,
        };
        write_ulaw(&mut p, s);
        let mut pcm = [0i16; 160];
        G711::Pcmu.decode(&p, &mut pcm);
        let mono: Vec<u8> = pcm.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(read_l16(&mono, 1), Some(s));
        // Stereo: inbound on channel 0, something loud on channel 1.
        let stereo: Vec<u8> = pcm
            .iter()
            .flat_map(|x| [x.to_le_bytes(), 12345i16.to_le_bytes()])
            .flatten()
            .collect();
        assert_eq!(read_l16(&stereo, 2), Some(s));
        let mut out = vec![0u8; 320];
        write_l16(&mut out, s);
        assert_eq!(read_l16(&out, 1), Some(s));
    }

    #[test]
    fn rejects_audio_and_damage() {
        assert_eq!(read_ulaw(&[0xFF; 160]), None);
        assert_eq!(read_ulaw(&[0xE5; 3]), None);
        let mut p = [0u8; 160];
        write_ulaw(&mut p, stamp(5, 6));
        for i in 0..MARKER_LEN {
            let mut d = p;
            d[i] ^= 0x01;
            assert_eq!(read_ulaw(&d), None, "byte {i} flipped");
        }
    }

    #[test]
    fn marker_is_quiet() {
        let mut p = [0u8; 160];
        write_ulaw(&mut p, stamp(0xFFFF, u32::MAX));
        for &c in &p[..MARKER_LEN] {
            assert!(ulaw_decode(c).abs() <= 372);
        }
    }

    #[test]
    fn age_wraps() {
        let s = stamp(0, u32::MAX - 9);
        assert_eq!(s.age_us((1u64 << 32) + 10), 20);
        assert_eq!(stamp(0, 100).age_us(250), 150);
    }
}
