//! G.711 µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8).
//!
//! Decoding is a table lookup: the two 256-entry tables below hold the ITU-T G.711
//! reconstruction values (Tables 1a/2a for A-law, 2b for µ-law) scaled to 16-bit linear PCM
//! (µ-law's 14-bit values shifted left by 2, A-law's 13-bit values by 3). The tests derive
//! every entry independently from the segment end points printed in the standard.
//!
//! Encoding follows the ITU-T G.191 Software Tool Library (`ulaw_compress` /
//! `alaw_compress`): negative samples are folded with a one's complement (`!x`, i.e. `-x-1`)
//! rather than a negation, which makes the quantiser exactly symmetric around -0.5 and means
//! that `-1` encodes like `0`. The tests compare all 65 536 inputs against a transcription of
//! the STL loop.
//!
//! Round trip: `encode(decode(c)) == c` for every code except µ-law `0x7F` ("negative
//! zero"), which decodes to 0 and therefore re-encodes as `0xFF` (positive zero). A-law has no
//! zero code (its smallest magnitudes are ±8), so all 256 A-law codes round-trip.

/// A G.711 variant. Both run at 8 kHz with one byte per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum G711 {
    /// µ-law, static RTP payload type 0 (North America, Japan).
    Pcmu,
    /// A-law, static RTP payload type 8 (everywhere else).
    Pcma,
}

impl G711 {
    /// The static RTP payload type (RFC 3551 table 4).
    pub const fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }

    /// The variant for a static payload type, if it is one of the two.
    pub const fn from_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }

    /// The WAV `wFormatTag` for this variant (6 = A-law, 7 = µ-law).
    pub const fn wav_format_tag(self) -> u16 {
        match self {
            G711::Pcmu => 7,
            G711::Pcma => 6,
        }
    }

    /// The code a silent (0) sample encodes to: `0xFF` for µ-law, `0xD5` for A-law (A-law
    /// has no zero code; `0xD5` decodes to +8).
    pub const fn silence(self) -> u8 {
        match self {
            G711::Pcmu => 0xFF,
            G711::Pcma => 0xD5,
        }
    }

    /// Decodes one code.
    #[inline]
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            G711::Pcmu => ulaw_decode(code),
            G711::Pcma => alaw_decode(code),
        }
    }

    /// Encodes one sample.
    #[inline]
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            G711::Pcmu => ulaw_encode(sample),
            G711::Pcma => alaw_encode(sample),
        }
    }

    /// Decodes `input` into the front of `out` and returns how many samples were written
    /// (`min(input.len(), out.len())`). Allocates nothing: the caller owns the buffer.
    pub fn decode(self, input: &[u8], out: &mut [i16]) -> usize {
        // Matching once outside the loop keeps the inner loop a plain table lookup.
        let table = match self {
            G711::Pcmu => &ULAW_TO_LINEAR,
            G711::Pcma => &ALAW_TO_LINEAR,
        };
        let n = input.len().min(out.len());
        for (o, &c) in out[..n].iter_mut().zip(&input[..n]) {
            *o = table[usize::from(c)];
        }
        n
    }

    /// Encodes `input` into the front of `out` and returns how many bytes were written
    /// (`min(input.len(), out.len())`).
    pub fn encode(self, input: &[i16], out: &mut [u8]) -> usize {
        let n = input.len().min(out.len());
        match self {
            G711::Pcmu => {
                for (o, &s) in out[..n].iter_mut().zip(&input[..n]) {
                    *o = ulaw_encode(s);
                }
            }
            G711::Pcma => {
                for (o, &s) in out[..n].iter_mut().zip(&input[..n]) {
                    *o = alaw_encode(s);
                }
            }
        }
        n
    }
}

/// Decodes one µ-law code to 16-bit linear PCM.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one A-law code to 16-bit linear PCM.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Encodes one 16-bit linear sample as µ-law (G.191 STL `ulaw_compress`).
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    // Sign-magnitude with a one's-complement fold (see module doc), then drop to the 14-bit
    // domain µ-law is specified in.
    let (mag, sign) = if sample < 0 {
        (i32::from(!sample) >> 2, 0x00)
    } else {
        (i32::from(sample) >> 2, 0x80)
    };
    // Adding the bias of 33 makes every segment start at a power of two (32 << seg), so the
    // segment is just the position of the leading one bit. 0x1FFF clips at the top of
    // segment 7.
    let biased = (mag + 33).min(0x1FFF) as u32;
    let seg = (31 - biased.leading_zeros()) - 5; // 0..=7, since biased is in 33..=8191
    let mantissa = (biased >> (seg + 1)) & 0x0F;
    // µ-law transmits the complement of sign|segment|mantissa, sign bit set for positive.
    sign | (((7 - seg) << 4) | (0x0F - mantissa)) as u8
}

/// Encodes one 16-bit linear sample as A-law (G.191 STL `alaw_compress`).
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 12-bit magnitudes (13-bit signed): drop four bits after the fold.
    let (mag, sign) = if sample < 0 {
        ((i32::from(!sample) >> 4) as u32, 0x00u8)
    } else {
        ((i32::from(sample) >> 4) as u32, 0x80u8)
    };
    // Magnitudes 0..=15 are segment 0 verbatim; above that the segment is the leading-one
    // position (16..=31 -> 1, 32..=63 -> 2, ...) and the mantissa the next four bits.
    let code = if mag > 15 {
        let top = 31 - mag.leading_zeros(); // 4..=10
        let seg = top - 3; // 1..=7
        let mantissa = (mag >> (seg - 1)) & 0x0F;
        ((seg << 4) | mantissa) as u8
    } else {
        mag as u8
    };
    // Even bits are inverted on the line (G.711 §A: "alternate digit inversion").
    (code | sign) ^ 0x55
}

// The tables: index = code on the wire, value = 16-bit linear sample.
pub(crate) static ULAW_TO_LINEAR: [i16; 256] = [
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956, // 0x00
    -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764, // 0x08
    -15996, -15484, -14972, -14460, -13948, -13436, -12924, -12412, // 0x10
    -11900, -11388, -10876, -10364, -9852, -9340, -8828, -8316, // 0x18
    -7932, -7676, -7420, -7164, -6908, -6652, -6396, -6140, // 0x20
    -5884, -5628, -5372, -5116, -4860, -4604, -4348, -4092, // 0x28
    -3900, -3772, -3644, -3516, -3388, -3260, -3132, -3004, // 0x30
    -2876, -2748, -2620, -2492, -2364, -2236, -2108, -1980, // 0x38
    -1884, -1820, -1756, -1692, -1628, -1564, -1500, -1436, // 0x40
    -1372, -1308, -1244, -1180, -1116, -1052, -988, -924, // 0x48
    -876, -844, -812, -780, -748, -716, -684, -652, // 0x50
    -620, -588, -556, -524, -492, -460, -428, -396, // 0x58
    -372, -356, -340, -324, -308, -292, -276, -260, // 0x60
    -244, -228, -212, -196, -180, -164, -148, -132, // 0x68
    -120, -112, -104, -96, -88, -80, -72, -64, // 0x70
    -56, -48, -40, -32, -24, -16, -8, 0, // 0x78
    32124, 31100, 30076, 29052, 28028, 27004, 25980, 24956, // 0x80
    23932, 22908, 21884, 20860, 19836, 18812, 17788, 16764, // 0x88
    15996, 15484, 14972, 14460, 13948, 13436, 12924, 12412, // 0x90
    11900, 11388, 10876, 10364, 9852, 9340, 8828, 8316, // 0x98
    7932, 7676, 7420, 7164, 6908, 6652, 6396, 6140, // 0xA0
    5884, 5628, 5372, 5116, 4860, 4604, 4348, 4092, // 0xA8
    3900, 3772, 3644, 3516, 3388, 3260, 3132, 3004, // 0xB0
    2876, 2748, 2620, 2492, 2364, 2236, 2108, 1980, // 0xB8
    1884, 1820, 1756, 1692, 1628, 1564, 1500, 1436, // 0xC0
    1372, 1308, 1244, 1180, 1116, 1052, 988, 924, // 0xC8
    876, 844, 812, 780, 748, 716, 684, 652, // 0xD0
    620, 588, 556, 524, 492, 460, 428, 396, // 0xD8
    372, 356, 340, 324, 308, 292, 276, 260, // 0xE0
    244, 228, 212, 196, 180, 164, 148, 132, // 0xE8
    120, 112, 104, 96, 88, 80, 72, 64, // 0xF0
    56, 48, 40, 32, 24, 16, 8, 0, // 0xF8
];
pub(crate) static ALAW_TO_LINEAR: [i16; 256] = [
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736, // 0x00
    -7552, -7296, -8064, -7808, -6528, -6272, -7040, -6784, // 0x08
    -2752, -2624, -3008, -2880, -2240, -2112, -2496, -2368, // 0x10
    -3776, -3648, -4032, -3904, -3264, -3136, -3520, -3392, // 0x18
    -22016, -20992, -24064, -23040, -17920, -16896, -19968, -18944, // 0x20
    -30208, -29184, -32256, -31232, -26112, -25088, -28160, -27136, // 0x28
    -11008, -10496, -12032, -11520, -8960, -8448, -9984, -9472, // 0x30
    -15104, -14592, -16128, -15616, -13056, -12544, -14080, -13568, // 0x38
    -344, -328, -376, -360, -280, -264, -312, -296, // 0x40
    -472, -456, -504, -488, -408, -392, -440, -424, // 0x48
    -88, -72, -120, -104, -24, -8, -56, -40, // 0x50
    -216, -200, -248, -232, -152, -136, -184, -168, // 0x58
    -1376, -1312, -1504, -1440, -1120, -1056, -1248, -1184, // 0x60
    -1888, -1824, -2016, -1952, -1632, -1568, -1760, -1696, // 0x68
    -688, -656, -752, -720, -560, -528, -624, -592, // 0x70
    -944, -912, -1008, -976, -816, -784, -880, -848, // 0x78
    5504, 5248, 6016, 5760, 4480, 4224, 4992, 4736, // 0x80
    7552, 7296, 8064, 7808, 6528, 6272, 7040, 6784, // 0x88
    2752, 2624, 3008, 2880, 2240, 2112, 2496, 2368, // 0x90
    3776, 3648, 4032, 3904, 3264, 3136, 3520, 3392, // 0x98
    22016, 20992, 24064, 23040, 17920, 16896, 19968, 18944, // 0xA0
    30208, 29184, 32256, 31232, 26112, 25088, 28160, 27136, // 0xA8
    11008, 10496, 12032, 11520, 8960, 8448, 9984, 9472, // 0xB0
    15104, 14592, 16128, 15616, 13056, 12544, 14080, 13568, // 0xB8
    344, 328, 376, 360, 280, 264, 312, 296, // 0xC0
    472, 456, 504, 488, 408, 392, 440, 424, // 0xC8
    88, 72, 120, 104, 24, 8, 56, 40, // 0xD0
    216, 200, 248, 232, 152, 136, 184, 168, // 0xD8
    1376, 1312, 1504, 1440, 1120, 1056, 1248, 1184, // 0xE0
    1888, 1824, 2016, 1952, 1632, 1568, 1760, 1696, // 0xE8
    688, 656, 752, 720, 560, 528, 624, 592, // 0xF0
    944, 912, 1008, 976, 816, 784, 880, 848, // 0xF8
];
