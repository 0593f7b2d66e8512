//! Siphon's SIP core.
//!
//! Everything in this crate is sans-IO: callers feed bytes (or parsed messages) and the
//! current time in, and take bytes to send, events and the next deadline out. There are no
//! sockets, no tokio and no clock reads here, so every timer and retransmission can be
//! tested deterministically with virtual time.

pub mod acl;
pub mod auth;
pub mod dialog;
pub mod extensions;
pub mod glare;
pub mod info_dtmf;
pub mod message;
pub mod peer;
pub mod refer;
pub mod registrar;
pub mod reliable;
pub mod sdp;
pub mod session_timer;
pub mod timers;
pub mod transaction;

pub use peer::{Peer, Transport};
pub use timers::TimerConfig;
