//! Siphon's async server: configuration, SIP transports, the SIP core driver and call
//! handling, dialplan, RTP port pool, per-call media tasks, and the HTTP side (Prometheus
//! metrics, health and the admin API).
//!
//! The protocol logic lives in `siphon-sip` and `siphon-media`; this crate is the thin I/O
//! layer around them.

pub mod cdr;
pub mod config;
pub mod control;
pub mod counters;
pub mod dialplan;
pub mod endpoint;
pub mod fork_metrics;
pub mod http;
pub mod limits;
pub mod media;
pub mod patterns;
pub mod prompt;
pub mod redact;
pub mod rtp_ports;
pub mod rtp_socket;
pub mod server;
pub mod stereo;
pub mod tls;
pub mod transport;

pub use config::{Config, ConfigError};
pub use server::Server;
