#![forbid(unsafe_code)]
//! `siphon-load`: Siphon's load and latency benchmark.
//!
//! - [`generator`]: the call generator (SIP/UDP with digest, G.711 RTP with a latency marker,
//!   `sendmmsg`/`recvmmsg`, one task for every call).
//! - [`sink`]: the fork sink (native protocol; timestamps every frame, optionally plays back).
//! - [`report`]: per-level results and the table; [`chart`]: the same as SVG line charts.
//! - [`floor`]: the least a program can do for one forked call (the benchmark's floor).
//! - Pure parts: [`sip`] (messages), [`digest`], [`marker`], [`hist`], [`seq`], [`procstat`].
//!
//! See docs/benchmarks.md for the method and the figures.

pub mod chart;
pub mod clock;
pub mod digest;
pub mod floor;
pub mod generator;
pub mod hist;
pub mod marker;
pub mod procstat;
pub mod report;
pub mod seq;
pub mod sink;
pub mod sip;
