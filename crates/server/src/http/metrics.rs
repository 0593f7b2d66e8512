//! `GET /metrics`: the Prometheus text exposition (`text/plain; version=0.0.4`).
//!
//! Nothing is counted here. The server counts with plain atomics ([`Counters`], per-leg
//! [`crate::counters::LegStats`], per-fork `ForkStats`) and `prometheus` histograms
//! (call setup, jitter); a scrape reads them, builds the metric families and lets the
//! `prometheus` crate's encoder write the text. Process metrics (`process_*`: CPU, memory,
//! file descriptors) come from its `ProcessCollector`.
//!
//! Why the other families are built here rather than kept in `prometheus` counter and
//! gauge vectors: most values only exist at scrape time (registrar bindings by kind, calls
//! in the table, free ports, forks by state), the fork totals add up live forks' own
//! counters and those of ended ones (a fork's counters are its `ForkStats`, shared with
//! the fork task, not a child of a vector), and some series are shown at 0 before anything
//! happened while others only once non-zero. Building `MetricFamily`s in a collector is how
//! the `prometheus` crate exports such values; the names, labels and buckets stay those
//! that `docs/operations.md`, the dashboards and the alerts use.
//!
//! Names follow Prometheus conventions: `siphon_` prefix, `_total` counters, `_seconds`
//! histograms, base units. Labels are small fixed sets (method, status class, code,
//! result, mode, state, direction, kind); never a Call-ID, a user or a number.
//! `docs/operations.md` lists every metric.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder as _, TextEncoder};
use siphon_fork::stats::LATENCY_BUCKETS_US;
use tokio::time::Instant;

use super::HttpContext;
use crate::counters::{
    CLASSES, Counters, END_RESULTS, METHODS, PARSE_ERROR_KINDS, REJECT_CODES, get,
};
use crate::fork_metrics::{MODES, ModeTotals, STATES};

/// The version and commit this binary was built from (see `build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = env!("SIPHON_GIT_SHA");

pub(super) async fn handler(State(ctx): State<Arc<HttpContext>>) -> Response {
    let families = gather(&ctx);
    let mut out = Vec::with_capacity(16 * 1024);
    let encoder = TextEncoder::new();
    match encoder.encode(&families, &mut out) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            out,
        )
            .into_response(),
        Err(e) => {
            super::ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

/// The process collector, where the platform has one (Linux `/proc`).
pub(super) struct Process {
    #[cfg(target_os = "linux")]
    collector: prometheus::process_collector::ProcessCollector,
}

impl Process {
    pub(super) fn new() -> Process {
        Process {
            #[cfg(target_os = "linux")]
            collector: prometheus::process_collector::ProcessCollector::for_self(),
        }
    }

    fn collect(&self) -> Vec<MetricFamily> {
        #[cfg(target_os = "linux")]
        {
            use prometheus::core::Collector as _;
            self.collector.collect()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Vec::new()
        }
    }
}

/// Every family, in a stable order.
pub fn gather(ctx: &HttpContext) -> Vec<MetricFamily> {
    let mut f = Families::default();
    let c = &*ctx.counters;
    build_info(&mut f, ctx);
    sip(&mut f, c);
    registrations(&mut f, ctx);
    calls(&mut f, ctx);
    rtp(&mut f, ctx);
    forks(&mut f, c);
    f.gauge(
        "siphon_table_entries",
        "Entries in the SIP core's tables as of its last housekeeping (every 10 s): each is \
         bounded by size and age, so after the calls end they return to a baseline.",
        c.tables
            .all()
            .into_iter()
            .map(|(t, n)| (vec![("table", t.into())], n as f64)),
    );
    f.gauge1(
        "siphon_tokio_tasks_alive",
        "Tasks alive in Siphon's async runtime (one per call leg, fork and connection, plus \
         a fixed few).",
        tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks()) as f64,
    );
    let mut out = f.0;
    out.extend(ctx.process.collect());
    out.retain(|mf| !mf.get_metric().is_empty());
    out
}

fn build_info(f: &mut Families, ctx: &HttpContext) {
    f.gauge(
        "siphon_build_info",
        "Always 1; the labels say which build runs.",
        [(
            vec![("version", VERSION.into()), ("git_sha", GIT_SHA.into())],
            1.0,
        )],
    );
    f.gauge(
        "siphon_draining",
        "1 while shutting down: new calls are refused and /readyz fails.",
        [(vec![], if ctx.counters.is_draining() { 1.0 } else { 0.0 })],
    );
    f.counter(
        "siphon_log_lines_dropped_total",
        "Log lines dropped because the log output (stdout) did not keep up with the \
         writer's bounded buffer.",
        [(vec![], crate::log_output::dropped_lines() as f64)],
    );
}

fn sip(f: &mut Families, c: &Counters) {
    let mut requests = Vec::new();
    for (direction, arr) in [("in", &c.sip_requests_in), ("out", &c.sip_requests_out)] {
        for (m, n) in METHODS.iter().zip(arr.iter()) {
            let n = get(n);
            if n > 0 || (*m == "INVITE" && direction == "in") {
                requests.push((
                    vec![("direction", direction.into()), ("method", (*m).into())],
                    n as f64,
                ));
            }
        }
    }
    f.counter(
        "siphon_sip_requests_total",
        "SIP requests received (parsed) and sent (retransmissions included), by method.",
        requests,
    );
    let mut responses = Vec::new();
    for (direction, arr) in [("in", &c.sip_responses_in), ("out", &c.sip_responses_out)] {
        for (m, classes) in METHODS.iter().zip(arr.iter()) {
            for (class, n) in CLASSES.iter().zip(classes.iter()) {
                let n = get(n);
                if n > 0 {
                    responses.push((
                        vec![
                            ("direction", direction.into()),
                            ("method", (*m).into()),
                            ("class", (*class).into()),
                        ],
                        n as f64,
                    ));
                }
            }
        }
    }
    f.counter(
        "siphon_sip_responses_total",
        "SIP responses received and sent, by the method of their CSeq and status class.",
        responses,
    );
    f.counter(
        "siphon_sip_parse_errors_total",
        "SIP messages refused by the parser (answered with an error or dropped), by kind.",
        PARSE_ERROR_KINDS
            .iter()
            .zip(c.parse_errors.iter())
            .map(|(k, n)| (vec![("kind", (*k).into())], get(n) as f64)),
    );
    f.counter1(
        "siphon_sip_retransmissions_sent_total",
        "SIP messages re-sent by the transaction layer (timers, or the peer retransmitted).",
        &c.retransmissions_sent,
    );
    f.counter1(
        "siphon_sip_retransmissions_received_total",
        "Retransmitted SIP requests, responses and ACKs received and absorbed.",
        &c.retransmissions_absorbed,
    );
    f.gauge1(
        "siphon_sip_transactions_active",
        "SIP transactions the transaction layer holds.",
        get(&c.transactions_active) as f64,
    );
    f.counter1(
        "siphon_sip_unsolicited_responses_total",
        "Responses matching no client transaction (dropped).",
        &c.unsolicited_responses,
    );
    f.counter1(
        "siphon_sip_overload_drops_total",
        "Parsed SIP messages dropped because the SIP core's queue was full.",
        &c.overload_drops,
    );
    f.counter1(
        "siphon_sip_send_failures_total",
        "SIP messages that could not be sent (socket buffer full, connection gone).",
        &c.send_failures,
    );
    f.counter1(
        "siphon_sip_tls_handshake_failures_total",
        "SIP over TLS connections whose handshake failed or timed out.",
        &c.tls_handshake_failures,
    );
    f.counter1(
        "siphon_sip_connect_failures_total",
        "TCP/TLS connections Siphon opened to trunks that failed (refused, timed out, \
         certificate refused); the requests waiting on them fail over as on a 503.",
        &c.tcp_connect_failures,
    );
    f.counter1(
        "siphon_trunk_failovers_total",
        "Trunk calls moved on to the trunk's next address (SRV order) after a 5xx, a \
         timeout or a transport error.",
        &c.trunk_failovers,
    );
    f.counter1(
        "siphon_sip_tcp_rejected_total",
        "SIP over TCP/TLS connections refused: too many in all or from one address.",
        &c.tcp_rejected,
    );
    f.counter1(
        "siphon_sip_tcp_write_timeouts_total",
        "SIP over TCP/TLS connections dropped because the peer stopped reading.",
        &c.tcp_write_timeouts,
    );
    f.counter1(
        "siphon_sip_auth_challenges_total",
        "Digest challenges sent (401 to REGISTER, 407 to INVITE).",
        &c.auth_challenges,
    );
    f.counter1(
        "siphon_sip_blocked_drops_total",
        "SIP messages dropped because their source is blocked after failed logins.",
        &c.blocked_drops,
    );
    f.counter1(
        "siphon_sip_auth_failures_total",
        "Digest authentications that failed (wrong password, unknown user, wrong AOR).",
        &c.auth_failures,
    );
}

fn registrations(f: &mut Families, ctx: &HttpContext) {
    let c = &*ctx.counters;
    let mut kinds = [("phone", 0u64), ("trunk", 0), ("unknown", 0)];
    let now = Instant::now().into_std();
    for (aor, bindings) in ctx.locations.all(now) {
        let kind = super::admin::account_kind(ctx, &aor);
        if let Some(k) = kinds.iter_mut().find(|(name, _)| *name == kind) {
            k.1 += bindings.len() as u64;
        }
    }
    f.gauge(
        "siphon_registrar_bindings",
        "Unexpired registrar bindings (contacts), by account kind.",
        kinds
            .iter()
            .filter(|(k, n)| *k != "unknown" || *n > 0)
            .map(|(k, n)| (vec![("kind", (*k).into())], *n as f64)),
    );
    f.counter1(
        "siphon_registrar_registrations_total",
        "REGISTER requests accepted (200), refreshes and removals included.",
        &c.registrations,
    );
    f.counter1(
        "siphon_registrar_expired_total",
        "Bindings that expired without a refresh.",
        &c.registrations_expired,
    );
}

fn calls(f: &mut Families, ctx: &HttpContext) {
    let c = &*ctx.counters;
    f.gauge1(
        "siphon_calls_active",
        "Calls in the call table (ringing or answered).",
        ctx.calls.len() as f64,
    );
    f.counter1(
        "siphon_calls_started_total",
        "Initial INVITEs taken (each authentication round trip counts).",
        &c.calls_started,
    );
    f.counter1(
        "siphon_calls_answered_total",
        "Calls answered with 200 OK.",
        &c.calls_answered,
    );
    let mut rejected = Vec::new();
    for (i, n) in c.calls_rejected_by_code.iter().enumerate() {
        let n = get(n);
        if n == 0 {
            continue;
        }
        let code = REJECT_CODES
            .get(i)
            .map_or_else(|| "other".to_string(), u16::to_string);
        rejected.push((vec![("code", code)], n as f64));
    }
    f.counter(
        "siphon_calls_rejected_total",
        "Final non-2xx responses to initial INVITEs, by status code.",
        rejected,
    );
    f.counter(
        "siphon_calls_ended_total",
        "Calls that left the call table, by result.",
        END_RESULTS
            .iter()
            .zip(c.calls_ended_by.iter())
            .filter(|(r, n)| get(n) > 0 || matches!(**r, "completed" | "rtp_timeout"))
            .map(|(r, n)| (vec![("result", (*r).into())], get(n) as f64)),
    );
    f.0.extend(c.call_setup.families());
    f.gauge1(
        "siphon_calls_lost_on_restart",
        "Calls that were up (ringing or answered) when the previous run of Siphon stopped \
         without ending them (a crash, kill -9, power cut), counted at this start from the \
         call journal in the registrar store; they have no CDR. 0 after a clean stop or \
         without [registrar] store.",
        get(&c.calls_cut_off_at_start) as f64,
    );
    f.counter(
        "siphon_cdr_records_total",
        "CDR lines written to the CDR file, and lost (queue full or write error).",
        [
            (
                vec![("result", "written".into())],
                get(&c.cdr_written) as f64,
            ),
            (vec![("result", "lost".into())], get(&c.cdr_lost) as f64),
        ],
    );
    let e = &c.events;
    f.counter(
        "siphon_events_total",
        "Status events ([events], callback URLs): delivered, dropped because the \
         destination's queue was full, failed after retrying for give_up_s, and failed \
         attempts that were retried.",
        [
            (vec![("result", "sent".into())], get(&e.sent) as f64),
            (vec![("result", "dropped".into())], get(&e.dropped) as f64),
            (vec![("result", "failed".into())], get(&e.failed) as f64),
            (vec![("result", "retried".into())], get(&e.retries) as f64),
        ],
    );
    f.counter(
        "siphon_webhooks_total",
        "Webhook routes: the application's action used, or the fallback route taken.",
        [
            (
                vec![("result", "answered".into())],
                get(&e.webhooks_answered) as f64,
            ),
            (
                vec![("result", "fallback".into())],
                get(&e.webhooks_fallback) as f64,
            ),
        ],
    );
}

fn rtp(f: &mut Families, ctx: &HttpContext) {
    let c = &*ctx.counters;
    f.counter(
        "siphon_rtp_packets_total",
        "RTP packets received from peers (accepted) and sent to them.",
        directions(&c.rtp_packets_in, &c.rtp_packets_out),
    );
    f.counter(
        "siphon_rtp_bytes_total",
        "RTP bytes (whole datagrams) received and sent; updated once a second per leg.",
        directions(&c.rtp_bytes_in, &c.rtp_bytes_out),
    );
    f.counter(
        "siphon_rtcp_packets_total",
        "RTCP packets received and sent.",
        directions(&c.rtcp_packets_in, &c.rtcp_packets_out),
    );
    f.counter1(
        "siphon_rtp_packets_lost_total",
        "Packets the peers sent that never arrived (sequence gaps, RFC 3550).",
        &c.rtp_lost,
    );
    f.counter(
        "siphon_rtp_packets_dropped_total",
        "RTP packets received but not used, by reason.",
        [
            ("late", &c.rtp_late),
            ("duplicate", &c.rtp_duplicates),
            ("stray", &c.rtp_stray),
            ("rejected", &c.rtp_rejected),
        ]
        .map(|(r, n)| (vec![("reason", r.into())], get(n) as f64)),
    );
    f.counter1(
        "siphon_rtp_malformed_total",
        "RTP/RTCP datagrams that did not parse.",
        &c.rtp_malformed,
    );
    f.counter1(
        "siphon_rtp_send_failures_total",
        "RTP datagrams that could not be sent.",
        &c.rtp_send_failures,
    );
    f.counter1(
        "siphon_dtmf_events_total",
        "Key presses received (RFC 4733).",
        &c.dtmf_events,
    );
    f.0.extend(c.rtp_jitter.families());
    let total = ctx.ports.total();
    let free = ctx.ports.available();
    f.gauge1(
        "siphon_rtp_ports_in_use",
        "RTP port pairs held by call legs.",
        total.saturating_sub(free) as f64,
    );
    f.gauge1(
        "siphon_rtp_ports_free",
        "RTP port pairs free in the pool.",
        free as f64,
    );
    f.gauge1(
        "siphon_media_tasks_active",
        "Per-leg media tasks running.",
        get(&c.media_legs_active) as f64,
    );
}

fn forks(f: &mut Families, c: &Counters) {
    let totals = c.forks.totals();
    let per_mode = |value: ModeField| {
        MODES
            .iter()
            .zip(totals.iter())
            .map(|(m, t)| (vec![("mode", m.as_str().into())], value(t) as f64))
            .collect::<Vec<_>>()
    };
    f.gauge(
        "siphon_fork_connections_active",
        "Forks connected to their service now.",
        per_mode(|t| t.states[1]),
    );
    let mut states = Vec::new();
    for (m, t) in MODES.iter().zip(totals.iter()) {
        for (s, n) in STATES.iter().zip(t.states) {
            states.push((
                vec![("mode", m.as_str().into()), ("state", s.as_str().into())],
                n as f64,
            ));
        }
    }
    f.gauge(
        "siphon_forks_active",
        "Forks registered by live calls, by state.",
        states,
    );
    let counters: [(&str, &str, ModeField); 13] = [
        ("siphon_forks_started_total", "Forks started.", |t| {
            t.started
        }),
        (
            "siphon_forks_failed_total",
            "Forks that ended failed (required fork that could not connect, protocol error).",
            |t| t.failed,
        ),
        (
            "siphon_fork_connects_total",
            "Successful WebSocket connections (first ones and reconnections).",
            |t| t.connects,
        ),
        (
            "siphon_fork_connect_failures_total",
            "Failed WebSocket connection attempts.",
            |t| t.connect_failures,
        ),
        (
            "siphon_fork_reconnects_total",
            "Reconnections after a lost connection.",
            |t| t.reconnects,
        ),
        (
            "siphon_fork_frames_sent_total",
            "Audio frames written to services.",
            |t| t.frames_sent,
        ),
        (
            "siphon_fork_bytes_sent_total",
            "Bytes of WebSocket data messages written to services.",
            |t| t.bytes_sent,
        ),
        (
            "siphon_fork_frames_received_total",
            "Audio messages received from services.",
            |t| t.frames_received,
        ),
        (
            "siphon_fork_bytes_received_total",
            "Bytes of audio received from services (decoded).",
            |t| t.bytes_received,
        ),
        (
            "siphon_fork_messages_ignored_total",
            "Messages from services ignored (unknown, unsupported, flooding).",
            |t| t.messages_ignored,
        ),
        (
            "siphon_fork_frames_played_total",
            "20 ms frames of service audio played into calls.",
            |t| t.frames_played,
        ),
        (
            "siphon_fork_marks_total",
            "Marks received from services.",
            |t| t.marks,
        ),
        (
            "siphon_fork_clears_total",
            "Clears received from services.",
            |t| t.clears,
        ),
    ];
    for (name, help, value) in counters {
        f.counter(name, help, per_mode(value));
    }
    f.counter(
        "siphon_fork_marks_played_total",
        "Marks that playback reached (echoed to the service).",
        per_mode(|t| t.marks_played),
    );
    let mut dropped = Vec::new();
    for (m, t) in MODES.iter().zip(totals.iter()) {
        for (cause, n) in [
            ("queue_full", t.dropped_queue_full),
            ("disconnected", t.dropped_disconnected),
            ("slow_service", t.dropped_slow),
            ("playback_overflow", t.playback_dropped),
        ] {
            dropped.push((
                vec![("mode", m.as_str().into()), ("cause", cause.into())],
                n as f64,
            ));
        }
    }
    f.counter(
        "siphon_fork_frames_dropped_total",
        "Audio frames lost on the fork path, by cause (playback_overflow: service audio).",
        dropped,
    );
    let bounds: Vec<f64> = LATENCY_BUCKETS_US
        .iter()
        .map(|us| *us as f64 / 1_000_000.0)
        .collect();
    let mut hist = Vec::new();
    for (m, t) in MODES.iter().zip(totals.iter()) {
        hist.push((
            vec![("mode", m.as_str().into())],
            t.latency_buckets.to_vec(),
            t.latency_sum,
        ));
    }
    f.histogram(
        "siphon_fork_latency_seconds",
        "RTP packet arrival to its audio written to the service.",
        &bounds,
        hist,
    );
}

type Labels = Vec<(&'static str, String)>;
/// Picks one number out of a mode's fork totals.
type ModeField = fn(&ModeTotals) -> u64;

fn directions(received: &AtomicU64, sent: &AtomicU64) -> [(Labels, f64); 2] {
    [
        (vec![("direction", "in".into())], get(received) as f64),
        (vec![("direction", "out".into())], get(sent) as f64),
    ]
}

/// Builds metric families; label pairs are kept in the order given.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        self.0.push(mf);
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    fn samples(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let metrics: Vec<proto::Metric> = samples
            .into_iter()
            .map(|(labels, value)| {
                let mut m = proto::Metric::from_label(label_pairs(labels));
                match kind {
                    MetricType::COUNTER => {
                        let mut c = proto::Counter::default();
                        c.set_value(value);
                        m.set_counter(c);
                    }
                    _ => {
                        let mut g = proto::Gauge::default();
                        g.set_value(value);
                        m.set_gauge(g);
                    }
                }
                m
            })
            .collect();
        self.family(name, help, kind).set_metric(metrics);
    }

    fn counter(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        self.samples(name, help, MetricType::COUNTER, samples);
    }

    fn counter1(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.counter(name, help, [(vec![], get(value) as f64)]);
    }

    fn gauge(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, f64)>) {
        self.samples(name, help, MetricType::GAUGE, samples);
    }

    fn gauge1(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, [(vec![], value)]);
    }

    /// `series`: labels, per-bucket (not cumulative) counts with the `+Inf` one last, sum.
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        series: Vec<(Labels, Vec<u64>, Duration)>,
    ) {
        let metrics: Vec<proto::Metric> = series
            .into_iter()
            .map(|(labels, counts, sum)| {
                let mut cumulative = 0;
                let mut buckets = Vec::with_capacity(bounds.len());
                for (bound, n) in bounds.iter().zip(counts.iter()) {
                    cumulative += n;
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative);
                    buckets.push(b);
                }
                let mut h = proto::Histogram::default();
                h.set_bucket(buckets);
                h.set_sample_count(counts.iter().sum());
                h.set_sample_sum(sum.as_secs_f64());
                let mut m = proto::Metric::from_label(label_pairs(labels));
                m.set_histogram(h);
                m
            })
            .collect();
        self.family(name, help, MetricType::HISTOGRAM)
            .set_metric(metrics);
    }
}

fn label_pairs(labels: Labels) -> Vec<proto::LabelPair> {
    labels
        .into_iter()
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v);
            p
        })
        .collect()
}
