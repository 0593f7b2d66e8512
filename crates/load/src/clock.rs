//! One clock for every process of a benchmark run: `CLOCK_MONOTONIC` in microseconds.
//!
//! The generator stamps each RTP payload with this clock and the sink (another process on the
//! same machine) subtracts the stamp from its own reading, so both must read the same clock.
//! `std::time::Instant` is `CLOCK_MONOTONIC` on Linux but opaque; this exposes the number.

use nix::time::{ClockId, clock_gettime};

/// Microseconds of `CLOCK_MONOTONIC` (system-wide, never steps).
pub fn now_us() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64) * 1_000_000 + (ts.tv_nsec() as u64) / 1_000,
        // CLOCK_MONOTONIC cannot fail on Linux; 0 makes any latency computed from it absurd
        // rather than silently plausible.
        Err(_) => 0,
    }
}
