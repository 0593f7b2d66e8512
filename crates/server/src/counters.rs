//! Counters for what the server dropped, rejected and handled. Plain atomics so every task
//! can bump them without a lock; `GET /metrics` (see `http::metrics`) reads them at scrape
//! time and writes the Prometheus exposition.
//!
//! Labelled counters are arrays indexed by a fixed list of label values (`METHODS`,
//! `CLASSES`, `REJECT_CODES`, `END_RESULTS`), so counting never allocates or locks and the
//! label sets stay bounded whatever the network sends.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::Collector as _;
use rsip::prelude::*;
use siphon_media::session::MediaSession;
use tokio::time::Instant;

use crate::fork_metrics::ForkMetrics;

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
    /// TCP/TLS connections dropped because a write timed out (the peer stopped reading).
    pub tcp_write_timeouts: AtomicU64,

    /// SIP requests by method (`METHODS` order): received from the network (parsed), and
    /// sent by Siphon (retransmissions included).
    pub sip_requests_in: [AtomicU64; METHOD_SLOTS],
    pub sip_requests_out: [AtomicU64; METHOD_SLOTS],
    /// SIP responses by the method of their CSeq and status class (`CLASSES` order).
    pub sip_responses_in: [[AtomicU64; 6]; METHOD_SLOTS],
    pub sip_responses_out: [[AtomicU64; 6]; METHOD_SLOTS],
    /// Copied from the transaction layer after each turn of the SIP core.
    pub transactions_active: AtomicU64,
    pub retransmissions_sent: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
    /// Registrar bindings that expired without a refresh.
    pub registrations_expired: AtomicU64,
    /// Final non-2xx responses to initial INVITEs, by code (`REJECT_CODES` order).
    pub calls_rejected_by_code: [AtomicU64; 32],
    /// Calls that left the call table, by why (`END_RESULTS` order).
    pub calls_ended_by: [AtomicU64; 16],
    /// INVITE received to 200 OK sent.
    pub call_setup: Histogram<CallSetup>,
    pub rtp_bytes_in: AtomicU64,
    pub rtp_bytes_out: AtomicU64,
    /// Packets the peer sent that never arrived (RFC 3550 cumulative loss, from sequence
    /// gaps), summed over legs.
    pub rtp_lost: AtomicU64,
    /// Packets the jitter buffer discarded as too late or as duplicates.
    pub rtp_late: AtomicU64,
    pub rtp_duplicates: AtomicU64,
    /// RTP/RTCP datagrams that could not be sent.
    pub rtp_send_failures: AtomicU64,
    /// RFC 3550 interarrival jitter of the peers' streams, sampled once a second per leg
    /// while RTP flows.
    pub rtp_jitter: Histogram<RtpJitter>,
    /// Media tasks running (they end a little after their call: RTCP BYE, fork stop).
    pub media_legs_active: AtomicU64,
    /// Set on shutdown: new INVITEs get 503 and `/readyz` fails.
    pub draining: AtomicBool,
    /// SIP message tracing on (`[sip] trace_messages`, `PUT /api/sip-trace`).
    pub sip_trace: AtomicBool,
    /// CDR lines written to the file, and lines lost (queue full, write error).
    pub cdr_written: AtomicU64,
    pub cdr_lost: AtomicU64,
    /// Calls the previous run left up when it stopped without ending them (a crash): the
    /// rows its call journal still held when this process opened the registrar store.
    pub calls_cut_off_at_start: AtomicU64,
    /// The SIP core's tables, as of its last housekeeping (every 10 s).
    pub tables: TableSizes,
    /// TLS connections that failed or never finished their handshake.
    pub tls_handshake_failures: AtomicU64,
    /// Connections Siphon tried to open (trunks over TCP/TLS) that failed.
    pub tcp_connect_failures: AtomicU64,
    /// Trunk calls moved on to the trunk's next address (RFC 3263 failover).
    pub trunk_failovers: AtomicU64,
    /// Live forks' statistics and the totals of ended ones.
    pub forks: Arc<ForkMetrics>,
    /// Status events (`[events]`) and webhook requests.
    pub events: EventCounters,
}

/// What became of status events and webhook requests (`siphon_events_total`,
/// `siphon_webhooks_total`).
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events a destination accepted (2xx).
    pub sent: AtomicU64,
    /// Events not queued: the destination's queue was full.
    pub dropped: AtomicU64,
    /// Events given up after retrying for `give_up_s`.
    pub failed: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Webhook answers used, and fallbacks taken (app down, slow, nonsense, too many in
    /// flight).
    pub webhooks_answered: AtomicU64,
    pub webhooks_fallback: AtomicU64,
}

/// Entries in the SIP core's tables, published at its housekeeping: what a soak run watches
/// to tell a table that grows with every call from one that follows the calls up.
#[derive(Debug, Default)]
pub struct TableSizes {
    /// SIP transactions (server and client), including those waiting out Timer J/K.
    pub transactions: AtomicU64,
    /// Calls Siphon answers itself (dialogs), with their INVITE index.
    pub dialogs: AtomicU64,
    pub invites: AtomicU64,
    /// Bridged calls and their indexes (INVITEs sent, callee Call-IDs, re-INVITEs).
    pub bridges: AtomicU64,
    /// Used digest nonces remembered (replay protection), until their lifetime ends.
    pub nonces: AtomicU64,
    /// Sources and accounts with failed authentications in the window.
    pub auth_failure_sources: AtomicU64,
    pub auth_failure_accounts: AtomicU64,
    /// Sources ignored after failed authentications.
    pub blocked_sources: AtomicU64,
}

impl TableSizes {
    /// (label, entries) for the metrics.
    pub fn all(&self) -> [(&'static str, u64); 8] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("transactions", g(&self.transactions)),
            ("dialogs", g(&self.dialogs)),
            ("invites", g(&self.invites)),
            ("bridges", g(&self.bridges)),
            ("nonces", g(&self.nonces)),
            ("auth_failure_sources", g(&self.auth_failure_sources)),
            ("auth_failure_accounts", g(&self.auth_failure_accounts)),
            ("blocked_sources", g(&self.blocked_sources)),
        ]
    }
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

    /// A parsed message arrived from the network.
    pub fn message_in(&self, message: &rsip::SipMessage) {
        match message {
            rsip::SipMessage::Request(r) => {
                inc(&self.sip_requests_in[method_index(&r.method.to_string())]);
            }
            rsip::SipMessage::Response(r) => {
                let cseq = r.cseq_header().map(|h| h.value().to_string());
                let method = cseq
                    .as_deref()
                    .ok()
                    .and_then(|v| v.split_whitespace().nth(1))
                    .unwrap_or("other");
                if let Some(class) = class_index(r.status_code.code()) {
                    inc(&self.sip_responses_in[method_index(method)][class]);
                }
            }
        }
    }

    /// Siphon sent these bytes (a whole SIP message): counted by method or status class
    /// from the start line and CSeq, without a full parse.
    pub fn message_out(&self, bytes: &[u8]) {
        let head = &bytes[..bytes.len().min(2048)];
        let text = String::from_utf8_lossy(head);
        if let Some(rest) = text.strip_prefix("SIP/2.0 ") {
            let code = rest.get(..3).and_then(|c| c.parse::<u16>().ok());
            let method = cseq_method(&text).unwrap_or("other");
            if let Some(class) = code.and_then(class_index) {
                inc(&self.sip_responses_out[method_index(method)][class]);
            }
        } else if let Some(method) = text.split(' ').next() {
            inc(&self.sip_requests_out[method_index(method)]);
        }
    }

    /// Copies the transaction layer's own counters (they only grow).
    pub fn transactions(&self, active: usize, stats: siphon_sip::transaction::TransactionStats) {
        let set = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        set(&self.transactions_active, active as u64);
        set(&self.retransmissions_sent, stats.retransmissions_sent);
        set(
            &self.retransmissions_absorbed,
            stats.retransmissions_absorbed,
        );
    }

    /// An initial INVITE got a final non-2xx response.
    pub fn call_rejected(&self, code: u16) {
        let i = REJECT_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(REJECT_CODES.len());
        inc(&self.calls_rejected_by_code[i]);
    }

    pub fn call_ended(&self, result: EndResult) {
        inc(&self.calls_ended_by[result as usize]);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// SIP methods counted by name; anything else is `other` (the last slot).
pub const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];
pub const METHOD_SLOTS: usize = 16;

/// Status classes, label values of `class`.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Codes counted one by one in `calls_rejected_by_code`; others go to `other`.
pub const REJECT_CODES: &[u16] = &[
    300, 301, 302, 400, 401, 403, 404, 405, 407, 408, 410, 413, 415, 416, 420, 480, 481, 482, 483,
    484, 486, 487, 488, 491, 500, 501, 502, 503, 504, 600, 603,
];

/// Why a call left the call table (label `result` of `siphon_calls_ended_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndResult {
    /// Answered, then the caller sent BYE.
    Completed,
    /// CANCEL before the answer (487).
    Cancelled,
    /// Rang until `ring_timeout_s` (480).
    NoAnswer,
    /// No RTP from the peer for `inactivity_timeout_s` (BYE).
    RtpTimeout,
    /// The media task ended the call for another reason (BYE).
    MediaEnded,
    /// Our final response was never ACKed.
    NoAck,
    /// `DELETE /api/calls/{id}`.
    Admin,
    /// Still up when the drain timeout passed (BYE).
    DrainTimeout,
    /// Still up when the server stopped without draining.
    Shutdown,
    /// The session timer (RFC 4028) ran out without a refresh (BYE).
    SessionExpired,
    Other,
}

/// Label values of [`EndResult`], in its order.
pub const END_RESULTS: &[&str] = &[
    "completed",
    "cancelled",
    "no_answer",
    "rtp_timeout",
    "media_ended",
    "no_ack",
    "admin",
    "drain_timeout",
    "shutdown",
    "session_expired",
    "other",
];

pub fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or(METHODS.len() - 1)
}

fn class_index(code: u16) -> Option<usize> {
    (100..700)
        .contains(&code)
        .then(|| usize::from(code / 100 - 1))
}

/// The method in a message's CSeq header (`CSeq: 1 INVITE`).
fn cseq_method(text: &str) -> Option<&str> {
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("CSeq")
            .then(|| value.split_whitespace().nth(1))
            .flatten()
    })
}

/// Bucket upper bounds (seconds) of `siphon_call_setup_seconds`.
pub const SETUP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket upper bounds (seconds) of `siphon_rtp_jitter_seconds`.
pub const JITTER_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5];

/// Name, help and buckets of a [`Histogram`].
pub trait HistogramSpec {
    const NAME: &'static str;
    const HELP: &'static str;
    const BUCKETS: &'static [f64];
}

/// `siphon_call_setup_seconds`.
#[derive(Debug)]
pub enum CallSetup {}

impl HistogramSpec for CallSetup {
    const NAME: &'static str = "siphon_call_setup_seconds";
    const HELP: &'static str = "Time from INVITE received to 200 OK sent.";
    const BUCKETS: &'static [f64] = SETUP_BUCKETS;
}

/// `siphon_rtp_jitter_seconds`.
#[derive(Debug)]
pub enum RtpJitter {}

impl HistogramSpec for RtpJitter {
    const NAME: &'static str = "siphon_rtp_jitter_seconds";
    const HELP: &'static str =
        "Interarrival jitter of the peers' RTP (RFC 3550), sampled once a second per leg.";
    const BUCKETS: &'static [f64] = JITTER_BUCKETS;
}

/// A `prometheus` histogram (lock-free counts and sum) that knows its family, so that
/// [`Counters`] can still be built with `Default` and `GET /metrics` exports it as it is.
#[derive(Debug)]
pub struct Histogram<S> {
    inner: prometheus::Histogram,
    spec: PhantomData<S>,
}

impl<S: HistogramSpec> Default for Histogram<S> {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new(S::NAME, S::HELP).buckets(S::BUCKETS.to_vec());
        // Only an invalid name or unsorted buckets are refused, and both are constants
        // that the tests build.
        #[allow(clippy::expect_used)]
        let inner = prometheus::Histogram::with_opts(opts).expect("constant histogram options");
        Histogram {
            inner,
            spec: PhantomData,
        }
    }
}

impl<S> Histogram<S> {
    pub fn observe(&self, value: Duration) {
        self.inner.observe(value.as_secs_f64());
    }

    /// The family for the exposition.
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.inner.collect()
    }
}

/// One call leg's RTP counters, shared by its media task (the only writer) and the admin
/// API. Nothing here is shared between calls.
#[derive(Debug, Default)]
pub struct LegStats {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Cumulative loss of the peer's stream (sequence gaps), refreshed once a second.
    pub lost: AtomicU64,
    /// Packets discarded by the jitter buffer as late, refreshed once a second.
    pub late: AtomicU64,
    /// Interarrival jitter in microseconds, refreshed once a second.
    pub jitter_us: AtomicU64,
    /// Where the peer's RTP comes from, once latched.
    latched: std::sync::Mutex<Option<SocketAddr>>,
}

impl LegStats {
    pub fn received(&self, bytes: usize) {
        inc(&self.packets_in);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        inc(&self.packets_out);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Once per leg (on latching), so a per-leg mutex is no cost.
    pub fn set_latched(&self, addr: Option<SocketAddr>) {
        if let Ok(mut l) = self.latched.lock() {
            *l = addr;
        }
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched.lock().ok().and_then(|l| *l)
    }
}

/// Moves a leg's counters into the server-wide totals: per-packet work stays on the leg's
/// own atomics, and the shared counters see one update a second per leg (and a last one
/// when the leg ends).
#[derive(Debug)]
pub struct LegPublisher {
    next: Instant,
    bytes_in: u64,
    bytes_out: u64,
    lost: u64,
    late: u64,
    duplicates: u64,
    packets_in: u64,
}

impl Default for LegPublisher {
    fn default() -> Self {
        LegPublisher {
            next: Instant::now() + PUBLISH_EVERY,
            bytes_in: 0,
            bytes_out: 0,
            lost: 0,
            late: 0,
            duplicates: 0,
            packets_in: 0,
        }
    }
}

const PUBLISH_EVERY: Duration = Duration::from_secs(1);

impl LegPublisher {
    /// Publishes if a second has passed since the last time.
    pub fn tick(&mut self, counters: &Counters, leg: &LegStats, session: Option<&MediaSession>) {
        let now = Instant::now();
        if now >= self.next {
            self.next = now + PUBLISH_EVERY;
            self.publish(counters, leg, session);
        }
    }

    pub fn publish(&mut self, counters: &Counters, leg: &LegStats, session: Option<&MediaSession>) {
        // Counters only grow; a session replaced mid-call (codec change) restarts its own
        // counts, so anything that went down starts a new baseline instead.
        fn delta(total: &AtomicU64, last: &mut u64, now: u64) {
            if now < *last {
                *last = 0;
            }
            if now > *last {
                total.fetch_add(now - *last, Ordering::Relaxed);
            }
            *last = now;
        }
        delta(
            &counters.rtp_bytes_in,
            &mut self.bytes_in,
            get(&leg.bytes_in),
        );
        delta(
            &counters.rtp_bytes_out,
            &mut self.bytes_out,
            get(&leg.bytes_out),
        );
        let Some(session) = session else {
            return;
        };
        let stats = session.stats();
        delta(&counters.rtp_late, &mut self.late, stats.jitter.late);
        delta(
            &counters.rtp_duplicates,
            &mut self.duplicates,
            stats.jitter.duplicates,
        );
        leg.late.store(stats.jitter.late, Ordering::Relaxed);
        if let Some(rx) = session.receiver_stats() {
            let lost = u64::try_from(rx.cumulative_lost()).unwrap_or(0);
            delta(&counters.rtp_lost, &mut self.lost, lost);
            leg.lost.store(lost, Ordering::Relaxed);
            let jitter = rx.jitter_duration();
            leg.jitter_us
                .store(jitter.as_micros() as u64, Ordering::Relaxed);
            // Sample only while RTP flows: a held leg's jitter is stale.
            let packets = get(&leg.packets_in);
            if packets > self.packets_in {
                counters.rtp_jitter.observe(jitter);
            }
            self.packets_in = packets;
        }
    }
}

/// Shorthand for `counter.fetch_add(1, Relaxed)`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn outgoing_messages_are_counted_by_start_line_and_cseq() {
        let c = Counters::default();
        c.message_out(b"SIP/2.0 180 Ringing\r\nVia: x\r\ncseq:  7 INVITE\r\n\r\n");
        c.message_out(b"SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
        c.message_out(b"BYE sip:a@b SIP/2.0\r\nCSeq: 3 BYE\r\n\r\n");
        c.message_out(b"FROB sip:a@b SIP/2.0\r\n\r\n");
        c.message_out(b"SIP/2.0 9");
        let invite = method_index("INVITE");
        let bye = method_index("bye");
        assert_eq!(get(&c.sip_responses_out[invite][0]), 1);
        assert_eq!(get(&c.sip_responses_out[bye][1]), 1);
        assert_eq!(get(&c.sip_requests_out[bye]), 1);
        assert_eq!(get(&c.sip_requests_out[method_index("other")]), 1);
        let all: u64 = c.sip_responses_out.iter().flatten().map(get).sum();
        assert_eq!(all, 2, "a truncated status line is not counted");
    }

    #[test]
    fn rejections_and_results_have_slots() {
        let c = Counters::default();
        c.call_rejected(404);
        c.call_rejected(499);
        let i404 = REJECT_CODES.iter().position(|c| *c == 404).unwrap();
        assert_eq!(get(&c.calls_rejected_by_code[i404]), 1);
        assert_eq!(get(&c.calls_rejected_by_code[REJECT_CODES.len()]), 1);
        assert!(REJECT_CODES.len() < c.calls_rejected_by_code.len());
        assert_eq!(END_RESULTS.len(), EndResult::Other as usize + 1);
        c.call_ended(EndResult::DrainTimeout);
        assert_eq!(get(&c.calls_ended_by[7]), 1);
        assert_eq!(END_RESULTS[7], "drain_timeout");
    }

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::<CallSetup>::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(80));
        h.observe(Duration::from_secs(100));
        // Per-bucket counts (the exposition's are cumulative; +Inf is the sample count).
        let families = h.families();
        let hist = families[0].get_metric()[0].get_histogram();
        let mut counts: Vec<u64> = hist
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        counts.push(hist.get_sample_count());
        for i in (1..counts.len()).rev() {
            counts[i] -= counts[i - 1];
        }
        let sum = hist.get_sample_sum();
        assert_eq!(families[0].name(), "siphon_call_setup_seconds");
        assert_eq!(counts.len(), SETUP_BUCKETS.len() + 1);
        assert_eq!(counts[0], 1);
        assert_eq!(counts[4], 1); // <= 0.1
        assert_eq!(counts[SETUP_BUCKETS.len()], 1); // +Inf
        assert!((sum - 100.083).abs() < 1e-9, "{sum}");
    }

    #[tokio::test]
    async fn leg_totals_are_published_as_deltas() {
        let c = Counters::default();
        let leg = LegStats::default();
        let mut p = LegPublisher::default();
        leg.received(172);
        leg.sent(172);
        p.publish(&c, &leg, None);
        leg.received(100);
        p.publish(&c, &leg, None);
        p.publish(&c, &leg, None);
        assert_eq!(get(&c.rtp_bytes_in), 272);
        assert_eq!(get(&c.rtp_bytes_out), 172);
    }
}
