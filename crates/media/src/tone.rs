//! Sine tone generator (test tones, ringback-style beeps, the 1 kHz "milliwatt").
//!
//! # Level
//!
//! Levels are in dBm0 with 0 dBm0 defined by the G.711 µ-law *digital milliwatt* (the
//! 8-byte PCMU sequence `1E 0B 0B 1E 9E 8B 8B 9E`, ITU-T G.711 Table 5), whose decoded RMS is
//! 16 016 in 16-bit linear PCM, i.e. a sine of peak [`DBM0_PEAK`] = 22 650. That matches
//! G.711's statement that a full-scale µ-law sine (peak 8159 in 14-bit units = 32 636 here) is
//! +3.17 dBm0 to within 0.01 dB. A-law's full scale is +3.14 dBm0; the 0.03 dB difference is
//! ignored.
//!
//! The default test tone, [`ToneGenerator::test_tone`], is 1 kHz at −10 dBm0: peak
//! 22 650 × 10^(−10/20) ≈ **7 163**, RMS ≈ 5 065.
//!
//! # Continuity
//!
//! The phase is an `f64` fraction of a cycle carried across calls, so consecutive frames join
//! without a click whatever their length, and the frequency is exact (an `f64` step has no
//! audible accumulated error over any call length).

use std::f64::consts::TAU;

use crate::SAMPLE_RATE;

/// Peak amplitude (16-bit linear) of a 0 dBm0 sine: see the module doc.
pub const DBM0_PEAK: f64 = 22_650.0;

/// Phase-continuous sine generator.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    /// Phase in cycles, in `[0, 1)`.
    phase: f64,
    /// Phase advance per sample, in cycles.
    step: f64,
    amplitude: f64,
}

impl ToneGenerator {
    /// A tone of `frequency` Hz at `level_dbm0` for the given sample rate, starting at phase 0.
    pub fn new(frequency: f64, level_dbm0: f64, sample_rate: u32) -> Self {
        ToneGenerator {
            phase: 0.0,
            step: frequency / f64::from(sample_rate),
            amplitude: (DBM0_PEAK * 10f64.powf(level_dbm0 / 20.0)).min(f64::from(i16::MAX)),
        }
    }

    /// 1 kHz at −10 dBm0, 8 kHz sample rate (peak ≈ 7 163).
    pub fn test_tone() -> Self {
        Self::new(1000.0, -10.0, SAMPLE_RATE)
    }

    /// Peak amplitude in 16-bit linear units.
    pub fn amplitude(&self) -> f64 {
        self.amplitude
    }

    /// Fills `out` with the next samples of the tone.
    pub fn fill(&mut self, out: &mut [i16]) {
        for o in out {
            *o = (self.amplitude * (TAU * self.phase).sin()).round() as i16;
            self.phase += self.step;
            if self.phase >= 1.0 {
                self.phase -= 1.0;
            }
        }
    }
}
