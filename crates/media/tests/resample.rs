//! Half-band resampler: passband, aliasing, images, streaming state.

use std::f64::consts::TAU;

use siphon_media::resample::{Downsampler, Upsampler};

fn tone(freq: f64, rate: f64, amplitude: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (amplitude * (TAU * freq * i as f64 / rate).sin()).round() as i16)
        .collect()
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Magnitude of the `freq` component (Goertzel), as a peak amplitude.
fn amplitude_at(x: &[i16], freq: f64, rate: f64) -> f64 {
    let w = TAU * freq / rate;
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        re += f64::from(s) * (w * n as f64).cos();
        im -= f64::from(s) * (w * n as f64).sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

fn upsample_frames(input: &[i16]) -> Vec<i16> {
    let mut up = Upsampler::new();
    let mut out = Vec::new();
    let mut frame = [0i16; 320];
    let mut chunk = [0i16; 160];
    for piece in input.chunks_exact(160) {
        chunk.copy_from_slice(piece);
        up.process_frame(&chunk, &mut frame);
        out.extend_from_slice(&frame);
    }
    out
}

fn downsample_frames(input: &[i16]) -> Vec<i16> {
    let mut down = Downsampler::new();
    let mut out = Vec::new();
    let mut frame = [0i16; 160];
    let mut chunk = [0i16; 320];
    for piece in input.chunks_exact(320) {
        chunk.copy_from_slice(piece);
        down.process_frame(&chunk, &mut frame);
        out.extend_from_slice(&frame);
    }
    out
}

#[test]
fn one_khz_survives_up_then_down_within_half_a_db() {
    let input = tone(1000.0, 8000.0, 10_000.0, 8000);
    let wide = upsample_frames(&input);
    assert_eq!(wide.len(), 16_000);
    let back = downsample_frames(&wide);
    assert_eq!(back.len(), 8000);
    // Skip the filters' settling (a few ms), measure over whole periods.
    let steady_in = &input[800..7200];
    let steady_wide = &wide[1600..14400];
    let steady_out = &back[800..7200];
    let gain_wide = db(rms(steady_wide) / rms(steady_in));
    let gain_round = db(rms(steady_out) / rms(steady_in));
    assert!(gain_wide.abs() < 0.5, "8->16 gain {gain_wide} dB");
    assert!(gain_round.abs() < 0.5, "8->16->8 gain {gain_round} dB");
    // In fact the design is flat to ~0.01 dB.
    assert!(gain_round.abs() < 0.05, "8->16->8 gain {gain_round} dB");
    // And the tone is still at 1 kHz.
    let a = amplitude_at(steady_out, 1000.0, 8000.0);
    assert!((db(a / 10_000.0)).abs() < 0.05);
}

#[test]
fn six_khz_is_not_aliased_into_the_narrowband() {
    let input = tone(6000.0, 16_000.0, 10_000.0, 16_000);
    let out = downsample_frames(&input);
    // 6 kHz would fold to 2 kHz at 8 kHz.
    let steady_in = &input[1600..14400];
    let steady_out = &out[800..7200];
    let attenuation = db(rms(steady_out) / rms(steady_in));
    assert!(attenuation <= -40.0, "6 kHz only {attenuation} dB down");
    let folded = amplitude_at(steady_out, 2000.0, 8000.0);
    assert!(db(folded / 10_000.0) <= -60.0, "{}", db(folded / 10_000.0));
}

#[test]
fn whole_stopband_is_at_least_50_db_down() {
    let mut f = 4800.0;
    while f < 8000.0 {
        let input = tone(f, 16_000.0, 10_000.0, 6400);
        let out = downsample_frames(&input);
        let att = db(rms(&out[400..3000]) / rms(&input[800..6000]));
        assert!(att <= -50.0, "{f} Hz only {att} dB down");
        f += 200.0;
    }
}

#[test]
fn upsampling_images_are_suppressed() {
    let input = tone(1000.0, 8000.0, 10_000.0, 8000);
    let wide = upsample_frames(&input);
    let steady = &wide[1600..14400];
    let wanted = amplitude_at(steady, 1000.0, 16_000.0);
    let image = amplitude_at(steady, 7000.0, 16_000.0);
    assert!(
        db(image / wanted) <= -60.0,
        "image at {} dB",
        db(image / wanted)
    );
}

#[test]
fn odd_phase_of_the_upsampler_is_an_exact_copy() {
    // The half-band centre tap makes every other output sample the input delayed by 11.
    let input = tone(440.0, 8000.0, 20_000.0, 320);
    let mut up = Upsampler::new();
    let mut out = vec![0i16; 640];
    assert_eq!(up.process(&input, &mut out), 640);
    for m in 11..320 {
        assert_eq!(out[2 * m + 1], input[m - 11]);
    }
}

#[test]
fn state_carries_across_any_chunking() {
    let input16 = tone(1234.0, 16_000.0, 12_000.0, 3200);
    let input8 = tone(1234.0, 8000.0, 12_000.0, 1600);
    let sizes = [1usize, 7, 160, 13, 320, 2, 99];

    let mut whole = vec![0i16; 1600];
    assert_eq!(Downsampler::new().process(&input16, &mut whole), 1600);
    let mut down = Downsampler::new();
    let mut pieces = Vec::new();
    let mut at = 0;
    for &n in sizes.iter().cycle() {
        if at >= input16.len() {
            break;
        }
        let chunk = &input16[at..(at + n).min(input16.len())];
        let mut out = vec![0i16; down.output_len(chunk.len())];
        let written = down.process(chunk, &mut out);
        assert_eq!(written, out.len());
        pieces.extend_from_slice(&out);
        at += chunk.len();
    }
    assert_eq!(pieces, whole);

    let mut whole = vec![0i16; 3200];
    Upsampler::new().process(&input8, &mut whole);
    let mut up = Upsampler::new();
    let mut pieces = Vec::new();
    let mut at = 0;
    for &n in sizes.iter().cycle() {
        if at >= input8.len() {
            break;
        }
        let chunk = &input8[at..(at + n).min(input8.len())];
        let mut out = vec![0i16; 2 * chunk.len()];
        up.process(chunk, &mut out);
        pieces.extend_from_slice(&out);
        at += chunk.len();
    }
    assert_eq!(pieces, whole);
}

#[test]
fn short_outputs_and_clipping_are_safe() {
    let mut down = Downsampler::new();
    let mut out = [0i16; 3];
    assert_eq!(down.process(&[i16::MAX; 100], &mut out), 3);
    let mut up = Upsampler::new();
    let mut out = [0i16; 5];
    assert_eq!(up.process(&[i16::MIN; 10], &mut out), 4);
    // Full-scale square waves overshoot the filter; outputs saturate, no panic.
    let square: Vec<i16> = (0..640)
        .map(|i| if i % 4 < 2 { i16::MAX } else { i16::MIN })
        .collect();
    let mut out = vec![0i16; 1280];
    up.reset();
    up.process(&square, &mut out);
    down.reset();
    let mut out8 = vec![0i16; 320];
    down.process(&square, &mut out8);
}
