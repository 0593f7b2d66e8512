//! Siphon's async server: configuration, SIP transports, the SIP core driver and call
//! handling, dialplan, RTP port pool, per-call media tasks, and the HTTP side (Prometheus
//! metrics, health and the admin API).
//!
//! The protocol logic lives in `siphon-sip` and `siphon-media`; this crate is the thin I/O
//! layer around them.

pub(crate) mod cdr;
pub mod config;
pub(crate) mod control;
pub mod counters;
pub(crate) mod dialer;
pub(crate) mod dialplan;
pub(crate) mod endpoint;
pub mod events;
pub mod fork_metrics;
pub(crate) mod http;
pub(crate) mod http_post;
pub(crate) mod limits;
pub mod log_output;
pub mod media;
pub(crate) mod patterns;
pub mod prompt;
pub(crate) mod rtp_ports;
pub(crate) mod secret_file;
pub mod server;
pub(crate) mod sip_trace;
pub(crate) mod state_db;
pub(crate) mod stereo;
pub(crate) mod tls;
pub(crate) mod transfer;
pub(crate) mod transport;
pub(crate) mod trunk_dns;
/// Public for the benchmark's floor program (`siphon-load floor`), which must read RTP the
/// way Siphon does so that the floor stays the least a program can do.
pub mod udp_batch;

pub use config::{Config, ConfigError};
pub use server::Server;
