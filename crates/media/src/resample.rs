//! 8 kHz ↔ 16 kHz resampling of linear PCM with a half-band FIR filter.
//!
//! Why not `rubato`: it is block-oriented (fixed chunk sizes, `Vec<Vec<f32>>` channel buffers),
//! generic over arbitrary ratios and pulls in an FFT stack, all for a fixed 2:1 ratio on 20 ms
//! mono frames. A half-band filter is the textbook tool for exactly 2:1: every other tap is
//! zero, so up-sampling splits into one 24-tap phase and one pure delay, and down-sampling
//! costs 25 multiply-adds per output sample. It streams sample by sample (state carries
//! across frames of any length), allocates nothing and is a few dozen lines.
//!
//! # The filter
//!
//! 47 taps at 16 kHz, a Kaiser-windowed (β = 5.0) ideal low-pass at fs/4 = 4 kHz, the 24
//! side taps rescaled to sum to exactly 0.5 and the centre tap set to exactly 0.5 so the
//! half-band identity `H(f) + H(fs/2 − f) = 1` holds exactly (that is what makes one
//! up-sampling phase an exact copy of the input). Designed response:
//!
//! | frequency | gain |
//! |-----------|------|
//! | 0–3.4 kHz | within ±0.01 dB |
//! | 3.6 kHz | −0.39 dB |
//! | 4 kHz | −6.02 dB (half-band point) |
//! | ≥ 4.6 kHz | ≤ −53.6 dB |
//! | 6 kHz | −98 dB |
//!
//! So telephone band audio (300–3400 Hz) passes untouched, and anything above 4.6 kHz in a
//! 16 kHz signal is gone before decimation folds it onto the 8 kHz band. The delay is 23
//! samples at 16 kHz (1.44 ms) per conversion.

use crate::{FRAME_SAMPLES, WIDEBAND_FRAME_SAMPLES};

/// h[±1], h[±3], …, h[±23] of the half-band filter (the even offsets are zero, h[0] = 0.5),
/// as designed in `f64`; the filter runs in `f32`.
const SIDE_TAPS: [f64; 12] = [
    3.171_045_930_2e-1,
    -1.021_766_418_5e-1,
    5.724_601_119_4e-2,
    -3.683_010_031_3e-2,
    2.482_882_255_5e-2,
    -1.688_292_362_4e-2,
    1.132_235_443_0e-2,
    -7.356_148_258_8e-3,
    4.542_039_736_6e-3,
    -2.594_200_722_5e-3,
    1.304_474_981_3e-3,
    -5.082_811_444_3e-4,
];

/// Total taps of the half-band filter.
pub const TAPS: usize = 47;
const CENTER: usize = TAPS / 2; // 23
/// Nonzero side taps, which are also the input history the up-sampler needs.
const SIDE: usize = 24;

/// The side taps in window order: index `t` multiplies the sample `2 × (23 − t)` positions
/// back at 16 kHz, i.e. `h[2t − 23]`. Symmetric, so the order only matters for clarity.
const fn side_in_window_order() -> [f32; SIDE] {
    let mut out = [0.0; SIDE];
    let mut t = 0;
    while t < SIDE {
        let offset = (2 * t) as isize - CENTER as isize; // −23, −21, …, 23
        let abs = if offset < 0 { -offset } else { offset } as usize;
        out[t] = SIDE_TAPS[(abs - 1) / 2] as f32;
        t += 1;
    }
    out
}

const SIDE_WINDOW: [f32; SIDE] = side_in_window_order();

/// Dot product of the 24-sample window with the side taps. Eight independent accumulators
/// let the compiler vectorise; a plain `.sum()` is a serial chain of dependent float adds.
#[inline]
fn dot_side(window: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (w, h) in window.chunks_exact(8).zip(SIDE_WINDOW.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += w[k] * h[k];
        }
    }
    acc.iter().sum()
}

fn to_i16(x: f32) -> i16 {
    // Round half away from zero, like `f32::round`, which on baseline x86-64 (no SSE4.1) is a
    // libm call per sample; `as` truncates towards zero and saturates at the i16 limits.
    (x + 0.5f32.copysign(x)) as i16
}

/// Streaming 8 kHz → 16 kHz converter (160 → 320 samples per 20 ms frame).
#[derive(Debug, Clone)]
pub struct Upsampler {
    /// The last 24 input samples, stored twice so a contiguous window always exists.
    history: [f32; 2 * SIDE],
    pos: usize,
}

impl Default for Upsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler {
    /// A converter with silent history.
    pub fn new() -> Self {
        Upsampler {
            history: [0.0; 2 * SIDE],
            pos: 0,
        }
    }

    /// Forgets the history (after a discontinuity).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Converts `input`, writing `2 × input.len()` samples to the front of `out`, and returns
    /// that count. If `out` is shorter, only the input that fits is consumed.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let n = input.len().min(out.len() / 2);
        for (pair, &x) in out.chunks_exact_mut(2).zip(&input[..n]) {
            let x = f32::from(x);
            self.history[self.pos] = x;
            self.history[self.pos + SIDE] = x;
            self.pos = (self.pos + 1) % SIDE;
            // window[t] = x[m − 23 + t], oldest first.
            let window = &self.history[self.pos..self.pos + SIDE];
            // Even output phase: zero-stuffed input through the side taps, gain 2 to make up
            // for the stuffed zeros.
            pair[0] = to_i16(2.0 * dot_side(window));
            // Odd output phase: only the centre tap (0.5 × 2) lands on a real sample, 11.5
            // input samples back: an exact copy.
            pair[1] = to_i16(window[SIDE / 2]);
        }
        2 * n
    }

    /// Converts one 20 ms frame.
    pub fn process_frame(
        &mut self,
        input: &[i16; FRAME_SAMPLES],
        out: &mut [i16; WIDEBAND_FRAME_SAMPLES],
    ) {
        self.process(input, out);
    }
}

/// Streaming 16 kHz → 8 kHz converter (320 → 160 samples per 20 ms frame).
///
/// Polyphase: the even input samples (which produce outputs) meet the 24 side taps, the odd
/// ones only the centre tap, so they are kept in two separate delay lines and the side-tap
/// window stays contiguous.
#[derive(Debug, Clone)]
pub struct Downsampler {
    /// The last 24 even-phase samples, stored twice.
    even_history: [f32; 2 * SIDE],
    even_pos: usize,
    /// The last 12 odd-phase samples; the oldest is the one under the centre tap.
    odd_history: [f32; SIDE / 2],
    odd_pos: usize,
    /// Whether the next input sample is an even one (produces an output).
    even: bool,
}

impl Default for Downsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Downsampler {
    /// A converter with silent history.
    pub fn new() -> Self {
        Downsampler {
            even_history: [0.0; 2 * SIDE],
            even_pos: 0,
            odd_history: [0.0; SIDE / 2],
            odd_pos: 0,
            even: true,
        }
    }

    /// Forgets the history.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// How many samples [`process`](Self::process) will write for `input_len` input samples
    /// given the current phase.
    pub fn output_len(&self, input_len: usize) -> usize {
        if self.even {
            input_len.div_ceil(2)
        } else {
            input_len / 2
        }
    }

    /// Converts `input` (any length; the phase carries over) into the front of `out` and
    /// returns the number of samples written. If `out` is too short, input stops where it
    /// is full.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let mut written = 0;
        for &x in input {
            let x = f32::from(x);
            if self.even {
                if written == out.len() {
                    break;
                }
                // y[m] = Σ h[2i]·x[2m−2i] (side taps) + 0.5·x[2m−23] (centre tap).
                self.even_history[self.even_pos] = x;
                self.even_history[self.even_pos + SIDE] = x;
                self.even_pos = (self.even_pos + 1) % SIDE;
                let window = &self.even_history[self.even_pos..self.even_pos + SIDE];
                let centre = self.odd_history[self.odd_pos];
                out[written] = to_i16(dot_side(window) + 0.5 * centre);
                written += 1;
            } else {
                self.odd_history[self.odd_pos] = x;
                self.odd_pos = (self.odd_pos + 1) % (SIDE / 2);
            }
            self.even = !self.even;
        }
        written
    }

    /// Converts one 20 ms frame.
    pub fn process_frame(
        &mut self,
        input: &[i16; WIDEBAND_FRAME_SAMPLES],
        out: &mut [i16; FRAME_SAMPLES],
    ) {
        self.process(input, out);
    }
}
