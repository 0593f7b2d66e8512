//! Siphon's media layer (docs in progress).

use std::time::Duration;

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod pacer;
pub mod packet;
pub mod resample;
pub mod rtcp;
pub mod session;
pub mod stats;
pub mod tone;
pub mod wav;

/// Narrowband sample rate (G.711, telephone-event).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms narrowband frame.
pub const FRAME_SAMPLES: usize = 160;
/// Samples in one 20 ms wideband (16 kHz) frame.
pub const WIDEBAND_FRAME_SAMPLES: usize = 320;
/// The packetisation interval for everything Siphon sends and plays out.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
