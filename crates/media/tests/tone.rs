//! Tone generator: frequency, level, phase continuity.

use std::f64::consts::TAU;

use siphon_media::g711::ulaw_decode;
use siphon_media::tone::{DBM0_PEAK, ToneGenerator};

fn power_at(x: &[i16], freq: f64, rate: f64) -> f64 {
    let w = TAU * freq / rate;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        re += f64::from(s) * (w * n as f64).cos();
        im -= f64::from(s) * (w * n as f64).sin();
    }
    re * re + im * im
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

fn one_second() -> Vec<i16> {
    let mut g = ToneGenerator::test_tone();
    let mut out = vec![0i16; 8000];
    for frame in out.chunks_mut(160) {
        g.fill(frame);
    }
    out
}

#[test]
fn frequency_is_1000_hz_within_1_hz() {
    let x = one_second();
    // One second of signal: DFT bins 1 Hz apart. The peak must be the 1000 Hz bin, and
    // clearly so against its neighbours.
    let peak = (990..=1010)
        .map(|f| (f, power_at(&x, f64::from(f), 8000.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(peak.0, 1000);
    let neighbour = power_at(&x, 999.0, 8000.0).max(power_at(&x, 1001.0, 8000.0));
    assert!(peak.1 > 1e6 * neighbour);
}

#[test]
fn frequency_by_zero_crossings() {
    // At exactly 8 samples per cycle some samples are exactly 0: count sign changes of the
    // non-zero samples. 1000 cycles = 2000 sign changes (±1 at the ends).
    let x = one_second();
    let signs: Vec<bool> = x.iter().filter(|&&s| s != 0).map(|&s| s > 0).collect();
    let changes = signs.windows(2).filter(|w| w[0] != w[1]).count();
    assert!((1998..=2000).contains(&changes), "{changes}");
}

#[test]
fn level_is_minus_10_dbm0() {
    let x = one_second();
    let peak = x.iter().map(|&s| i32::from(s).abs()).max().unwrap();
    // Peak 22 650 × 10^(-10/20) = 7162.6; at 8 samples/cycle the samples hit the peak.
    assert_eq!(peak, 7163);
    let level = 20.0 * (rms(&x) / (DBM0_PEAK / 2f64.sqrt())).log10();
    assert!((level + 10.0).abs() < 0.01, "{level} dBm0");
    assert!((ToneGenerator::test_tone().amplitude() - 7162.6).abs() < 0.1);
}

#[test]
fn zero_dbm0_matches_the_g711_digital_milliwatt() {
    // ITU-T G.711 Table 5: the µ-law digital milliwatt sequence is 0 dBm0 at 1 kHz.
    let dmw: Vec<i16> = [0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E]
        .iter()
        .map(|&c| ulaw_decode(c))
        .collect();
    let dmw_level = 20.0 * (rms(&dmw) / (DBM0_PEAK / 2f64.sqrt())).log10();
    assert!(dmw_level.abs() < 0.01, "{dmw_level}");
}

#[test]
fn phase_is_continuous_across_frames() {
    let mut whole = vec![0i16; 8000];
    ToneGenerator::new(1234.5, -3.0, 8000).fill(&mut whole);
    let mut g = ToneGenerator::new(1234.5, -3.0, 8000);
    let mut pieces = vec![0i16; 8000];
    let mut at = 0;
    for n in [1usize, 160, 7, 333].iter().cycle() {
        if at >= 8000 {
            break;
        }
        let end = (at + n).min(8000);
        g.fill(&mut pieces[at..end]);
        at = end;
    }
    assert_eq!(pieces, whole);
}

#[test]
fn levels_above_full_scale_clip_the_amplitude() {
    let g = ToneGenerator::new(1000.0, 10.0, 8000);
    assert_eq!(g.amplitude(), f64::from(i16::MAX));
    let mut out = [0i16; 160];
    ToneGenerator::new(1000.0, 10.0, 16_000).fill(&mut out);
}
