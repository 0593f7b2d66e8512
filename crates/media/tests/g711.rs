//! G.711 bit-exactness. Expected values are derived here from the standard's own description
//! (segment end points and the "reconstruct at the middle of the interval" rule), not from the
//! crate's tables or formulas.

use siphon_media::g711::{G711, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};

/// µ-law decoder output per ITU-T G.711 Table 2b, in the 14-bit domain ("normalised to 8159").
///
/// Segment `s` (0..=7) ends at `END[s]` and is cut into 16 intervals of width 2^(s+1); the
/// code's 4-bit step number `q` counts intervals from the bottom of the segment; the decoder
/// outputs the middle of the interval. The code on the line is the complement of
/// `sign | s << 4 | q`, with the sign bit set for positive values.
fn ulaw_reference(code: u8) -> i16 {
    const END: [i32; 8] = [31, 95, 223, 479, 991, 2015, 4063, 8159];
    let c = !code;
    let negative = c & 0x80 != 0;
    let s = usize::from((c >> 4) & 7);
    let q = i32::from(c & 0x0F);
    let step = 1 << (s + 1);
    let bottom = END[s] - 16 * step;
    let magnitude = bottom + q * step + step / 2;
    // 14-bit to 16-bit: two bits of left shift.
    let v = magnitude * 4;
    (if negative { -v } else { v }) as i16
}

/// A-law decoder output per ITU-T G.711 Tables 1a/1b, in the 12-bit magnitude domain
/// ("normalised to 4096"). Segments 0 and 1 both have step 2 and cover 0..32 and 32..64;
/// segment s >= 1 covers 2^(s+4)..2^(s+5) with step 2^s. The decoder outputs the middle of the
/// interval. Even bits are inverted on the line (XOR 0x55); the sign bit is set for positive.
fn alaw_reference(code: u8) -> i16 {
    let c = code ^ 0x55;
    let positive = c & 0x80 != 0;
    let s = u32::from((c >> 4) & 7);
    let q = i32::from(c & 0x0F);
    let (bottom, step) = if s == 0 {
        (0, 2)
    } else {
        (1 << (s + 4), 1 << s)
    };
    let magnitude = bottom + q * step + step / 2;
    // 13-bit signed to 16-bit: three bits of left shift.
    let v = magnitude * 8;
    (if positive { v } else { -v }) as i16
}

#[test]
fn ulaw_all_256_codes_decode_to_g711_values() {
    for code in 0..=255u8 {
        assert_eq!(
            ulaw_decode(code),
            ulaw_reference(code),
            "µ-law code {code:#04x}"
        );
    }
}

#[test]
fn alaw_all_256_codes_decode_to_g711_values() {
    for code in 0..=255u8 {
        assert_eq!(
            alaw_decode(code),
            alaw_reference(code),
            "A-law code {code:#04x}"
        );
    }
}

#[test]
fn spot_values_from_the_brief() {
    assert_eq!(ulaw_decode(0x00), -32124);
    assert_eq!(ulaw_decode(0x80), 32124);
    assert_eq!(ulaw_decode(0xFF), 0);
    assert_eq!(ulaw_decode(0x7F), 0);
    assert_eq!(alaw_decode(0xD5), 8);
    assert_eq!(alaw_decode(0x55), -8);
    // The brief asked to check "0x80 -> -5504?": 0x80 ^ 0x55 = 0xD5 has the sign bit set,
    // which in A-law means positive, so it is +5504; 0x00 is -5504.
    assert_eq!(alaw_decode(0x80), 5504);
    assert_eq!(alaw_decode(0x00), -5504);
    // Extremes: µ-law ±32124, A-law ±32256.
    assert_eq!(alaw_decode(0xAA), 32256);
    assert_eq!(alaw_decode(0x2A), -32256);
}

#[test]
fn round_trip_every_code() {
    for code in 0..=255u8 {
        let back = ulaw_encode(ulaw_decode(code));
        if code == 0x7F {
            // µ-law negative zero decodes to 0, which encodes as positive zero.
            assert_eq!(back, 0xFF);
        } else {
            assert_eq!(back, code, "µ-law {code:#04x}");
        }
        assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
    }
}

/// Transcription of ITU-T G.191 STL `ulaw_compress` (g711.c) for one sample.
fn stl_ulaw_compress(x: i16) -> u8 {
    let mut absno: i32 = if x < 0 {
        (i32::from(!x) >> 2) + 33
    } else {
        (i32::from(x) >> 2) + 33
    };
    if absno > 0x1FFF {
        absno = 0x1FFF;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high_nibble = 0x0008 - segno;
    let mut low_nibble = (absno >> segno) & 0x000F;
    low_nibble = 0x000F - low_nibble;
    let mut out = (high_nibble << 4) | low_nibble;
    if x >= 0 {
        out |= 0x0080;
    }
    out as u8
}

/// Transcription of ITU-T G.191 STL `alaw_compress` (g711.c) for one sample.
fn stl_alaw_compress(x: i16) -> u8 {
    let mut ix: i32 = if x < 0 {
        i32::from(!x) >> 4
    } else {
        i32::from(x) >> 4
    };
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if x >= 0 {
        ix |= 0x0080;
    }
    (ix ^ 0x0055) as u8
}

#[test]
fn encoders_match_the_stl_for_all_65536_inputs() {
    for x in i16::MIN..=i16::MAX {
        assert_eq!(ulaw_encode(x), stl_ulaw_compress(x), "µ-law encode {x}");
        assert_eq!(alaw_encode(x), stl_alaw_compress(x), "A-law encode {x}");
    }
}

#[test]
fn encoding_error_is_within_half_a_step() {
    // Independent of the STL: every input lands in the interval whose middle is the decoded
    // value, so the error is at most half the interval width (plus the one's-complement
    // offset of 1 for negatives), except where the input is beyond the top of the scale.
    for x in i16::MIN..=i16::MAX {
        let x32 = i32::from(x);
        let u = i32::from(ulaw_decode(ulaw_encode(x)));
        let a = i32::from(alaw_decode(alaw_encode(x)));
        if x32.abs() <= 32124 {
            // Largest µ-law interval: 256 in 14-bit = 1024 in 16-bit.
            let half_step = 512 + 4;
            assert!((u - x32).abs() <= half_step, "µ-law {x} -> {u}");
        }
        if x32.abs() <= 32256 {
            let half_step = 1024 + 8;
            assert!((a - x32).abs() <= half_step, "A-law {x} -> {a}");
        }
    }
}

#[test]
fn encoding_is_monotonic() {
    let mut prev_u = i16::MIN;
    let mut prev_a = i16::MIN;
    for x in i16::MIN..=i16::MAX {
        let u = ulaw_decode(ulaw_encode(x));
        let a = alaw_decode(alaw_encode(x));
        assert!(u >= prev_u && a >= prev_a, "not monotonic at {x}");
        prev_u = u;
        prev_a = a;
    }
}

#[test]
fn slice_codecs_and_metadata() {
    let pcm: Vec<i16> = (0..160).map(|i| (i * 200 - 16000) as i16).collect();
    for law in [G711::Pcmu, G711::Pcma] {
        assert_eq!(G711::from_payload_type(law.payload_type()), Some(law));
        let mut enc = [0u8; 160];
        assert_eq!(law.encode(&pcm, &mut enc), 160);
        let mut dec = [0i16; 160];
        assert_eq!(law.decode(&enc, &mut dec), 160);
        for (i, (&d, &e)) in dec.iter().zip(&enc).enumerate() {
            assert_eq!(d, law.decode_sample(e));
            assert_eq!(e, law.encode_sample(pcm[i]));
        }
        assert_eq!(law.encode_sample(0), law.silence());
        assert!(law.decode_sample(law.silence()).abs() <= 8);
        // Shorter output: only what fits.
        assert_eq!(law.decode(&enc, &mut dec[..10]), 10);
    }
    assert_eq!(G711::from_payload_type(18), None);
}
