//! Counters for what the server dropped, rejected and handled. Plain atomics so every task
//! can bump them without a lock; the metrics endpoint exports them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Labels of [`siphon_sip::message::ParseError::kind`], in a fixed order so the counters
/// can live in an array.
pub const PARSE_ERROR_KINDS: &[&str] = &[
    "empty",
    "too_large",
    "not_utf8",
    "no_header_end",
    "bad_start_line",
    "unsupported_version",
    "unknown_method",
    "method_not_allowed",
    "unsupported_uri_scheme",
    "bad_header_line",
    "missing_header",
    "invalid_header",
    "cseq_mismatch",
    "content_length",
    "too_many_hops",
    "unparseable",
];

#[derive(Debug, Default)]
pub struct Counters {
    pub parse_errors: [AtomicU64; 16],
    pub requests_received: AtomicU64,
    pub responses_received: AtomicU64,
    /// Responses matching no client transaction (counted by the transaction layer too).
    pub unsolicited_responses: AtomicU64,
    /// Messages dropped because the SIP core's queue was full.
    pub overload_drops: AtomicU64,
    /// Datagrams that could not be sent (socket buffer full, connection gone).
    pub send_failures: AtomicU64,
    pub auth_challenges: AtomicU64,
    pub auth_failures: AtomicU64,
    pub registrations: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_answered: AtomicU64,
    pub calls_ended: AtomicU64,
    pub calls_rejected: AtomicU64,
    pub rtp_packets_in: AtomicU64,
    pub rtp_packets_out: AtomicU64,
    pub rtp_malformed: AtomicU64,
    /// RTP from an address other than the latched one, or not of a negotiated type before
    /// latching (symmetric RTP refuses to be hijacked).
    pub rtp_stray: AtomicU64,
    /// Well-formed RTP the media session refused (unexpected payload type, bad event).
    pub rtp_rejected: AtomicU64,
    pub rtcp_packets_in: AtomicU64,
    pub rtcp_packets_out: AtomicU64,
    pub dtmf_events: AtomicU64,
    /// Datagrams dropped because their source is blocked (failed authentication).
    pub blocked_drops: AtomicU64,
    /// Datagrams dropped by the per-source flood limit.
    pub flood_drops: AtomicU64,
    /// Requests answered 503 because a limit was reached.
    pub overload_rejections: AtomicU64,
    /// Sources blocked after repeated authentication failures.
    pub auth_blocks: AtomicU64,
    /// TCP connections refused at the connection limit.
    pub tcp_rejected: AtomicU64,
}

impl Counters {
    pub fn parse_error(&self, kind: &str) {
        if let Some(i) = PARSE_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.parse_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn parse_errors_of(&self, kind: &str) -> u64 {
        PARSE_ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.parse_errors[i].load(Ordering::Relaxed))
    }

    pub fn parse_errors_total(&self) -> u64 {
        self.parse_errors
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Shorthand for `counter.fetch_add(1, Relaxed)`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
