//! Operations through a real server: Prometheus metrics scraped over HTTP while a call runs
//! (and the exposition checked line by line against the text format), the admin API
//! (calls, forks, registrations, hang-up by BYE), its bearer token, and the drain on
//! shutdown (`/readyz`, 503 to new INVITEs, BYE at the drain timeout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// The Prometheus text format (version 0.0.4), checked strictly.

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y\"z"}` → pairs and the rest of the line after `}`.
fn parse_labels(s: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').unwrap();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let eq = rest.find('=').expect("label without =");
        let name = &rest[..eq];
        assert!(is_name(name, false), "bad label name {name:?}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .expect("label value quoted");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '\\' => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => panic!("bad escape \\{other}"),
                },
                '"' => break i,
                '\n' => panic!("newline in label value"),
                c => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses an exposition, panicking on anything the format does not allow; also checks
/// that every sample belongs to a family whose `# TYPE` came first, that counters end in
/// `_total`, and that histogram buckets are cumulative and end with `+Inf` = `_count`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().expect("HELP name");
                    assert!(is_name(name, true), "{line}");
                }
                Some("TYPE") => {
                    let name = parts.next().expect("TYPE name");
                    let kind = parts.next().expect("TYPE kind");
                    assert!(is_name(name, true), "{line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.into(), kind.into()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample without value");
        let name = &line[..name_end];
        assert!(is_name(name, true), "bad metric name in {line:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .unwrap_or_else(|| panic!("bad value in {line:?}"));
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().expect("timestamp");
        }
        assert!(fields.next().is_none(), "trailing text in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("{name} has no # TYPE before it"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} lacks _total");
            assert!(value >= 0.0, "negative counter {line}");
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets per label set, the +Inf one equal to _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut series: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = s.labels.iter().find(|(k, _)| k == "le").expect("le label");
            let others: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            series
                .entry(others)
                .or_default()
                .push((parse_value(&le.1).unwrap(), s.value));
        }
        for (labels, buckets) in series {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for b in &buckets {
                assert!(
                    b.0 > last.0 && b.1 >= last.1,
                    "{family} buckets not cumulative"
                );
                last = *b;
            }
            assert_eq!(last.0, f64::INFINITY, "{family} lacks +Inf");
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                .expect("_count")
                .value;
            assert_eq!(count, last.1, "{family}: +Inf bucket != _count");
        }
    }
    samples
}

/// Sum of the samples named `name` whose labels include all of `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let r = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ctype = r.header("content-type").unwrap();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    parse_exposition(&r.body)
}

// ---------------------------------------------------------------------------------------
// A phone in a call.

struct Call {
    phone: Phone,
    rtp: UdpSocket,
    remote: SocketAddr,
    tag: String,
    call_id: String,
    number: String,
}

async fn place_call(server: SocketAddr, number: &str, call_id: &str) -> Call {
    let phone = Phone::new(server).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rtp.local_addr().unwrap().port();
    let body = sdp(
        port,
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let local = phone.local();
    phone
        .send(&invite(
            local,
            number,
            call_id,
            1,
            None,
            &body,
            "application/sdp",
        ))
        .await;
    let ok = phone.final_response().await;
    assert_eq!(status(&ok), 200, "{ok}");
    let answer = ok.split("\r\n\r\n").nth(1).unwrap();
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let tag = to_tag(&ok);
    phone
        .send(&in_dialog(
            "ACK",
            local,
            number,
            call_id,
            1,
            &tag,
            &format!("{call_id}ack"),
        ))
        .await;
    Call {
        phone,
        rtp,
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        tag,
        call_id: call_id.to_string(),
        number: number.to_string(),
    }
}

impl Call {
    /// `n` packets of µ-law silence at 20 ms, sequence numbers from `first`.
    async fn send_rtp(&self, first: u16, n: u16) {
        for i in 0..n {
            let seq = first.wrapping_add(i);
            let mut pkt = vec![0x80, 0x00];
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            pkt.extend_from_slice(&[0xff; 160]);
            self.rtp.send_to(&pkt, self.remote).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn bye(&self, cseq: u32) -> String {
        let local = self.phone.local();
        let bye = in_dialog(
            "BYE",
            local,
            &self.number,
            &self.call_id,
            cseq,
            &self.tag,
            &format!("{}bye", self.call_id),
        );
        self.phone.send(&bye).await;
        self.next_sip().await
    }

    /// The next SIP message (skipping nothing but waiting up to WAIT).
    async fn next_sip(&self) -> String {
        self.phone.recv().await
    }

    /// Waits for a request from Siphon with this method, answering it 200.
    async fn expect_request(&self, method: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let msg = self
                .phone
                .recv_within(left)
                .await
                .unwrap_or_else(|| panic!("no {method} from Siphon"));
            if msg.starts_with(&format!("{method} ")) {
                self.reply_ok(&msg).await;
                return msg;
            }
        }
    }

    async fn reply_ok(&self, request: &str) {
        let mut resp = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for l in request.lines() {
                if l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                {
                    resp.push_str(l);
                    resp.push_str("\r\n");
                }
            }
        }
        resp.push_str("Content-Length: 0\r\n\r\n");
        self.phone.send(&resp).await;
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_follow_a_call_and_parse_as_prometheus_text() {
    let trunk = "\n[[accounts]]\nusername = \"carrier\"\nkind = \"trunk\"\nallowed_ips = [\"127.0.0.7/32\"]\n";
    let s = start_with(trunk, 33000).await;
    let m = scrape(s.http).await;
    assert_eq!(value(&m, "siphon_calls_active", &[]), 0.0);
    assert_eq!(value(&m, "siphon_build_info", &[]), 1.0);
    let info = m.iter().find(|x| x.name == "siphon_build_info").unwrap();
    assert!(
        info.labels
            .iter()
            .any(|(k, v)| k == "version" && v == env!("CARGO_PKG_VERSION"))
    );
    assert!(
        info.labels
            .iter()
            .any(|(k, v)| k == "git_sha" && !v.is_empty())
    );
    assert!(has(&m, "process_resident_memory_bytes"), "process metrics");
    assert!(has(&m, "process_open_fds"));
    assert!(has(&m, "process_cpu_seconds_total"));
    assert_eq!(value(&m, "siphon_rtp_ports_in_use", &[]), 0.0);
    assert_eq!(value(&m, "siphon_rtp_ports_free", &[]), 50.0);
    assert_eq!(value(&m, "siphon_draining", &[]), 0.0);

    let call = place_call(s.addr, "600", "metrics-call-1").await;
    // 60 packets with one gap of 5 (lost) and a 1 s publication tick in between.
    call.send_rtp(1, 30).await;
    call.send_rtp(36, 30).await;
    let http = s.http;
    let moved = eventually(|| async move {
        let m = scrape(http).await;
        value(&m, "siphon_rtp_bytes_total", &[("direction", "in")]) >= 60.0 * 172.0
            && value(&m, "siphon_rtp_packets_lost_total", &[]) >= 5.0
    })
    .await;
    assert!(
        moved,
        "RTP bytes and loss reach the totals within a second or two"
    );
    let m = scrape(s.http).await;
    assert!(
        value(
            &m,
            "siphon_sip_requests_total",
            &[("direction", "in"), ("method", "INVITE")]
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "siphon_sip_requests_total",
            &[("direction", "in"), ("method", "ACK")]
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "siphon_sip_responses_total",
            &[("direction", "out"), ("method", "INVITE"), ("class", "2xx")]
        ) >= 1.0
    );
    assert!(
        value(
            &m,
            "siphon_sip_responses_total",
            &[("direction", "out"), ("class", "1xx")]
        ) >= 1.0
    );
    assert_eq!(value(&m, "siphon_calls_active", &[]), 1.0);
    assert_eq!(value(&m, "siphon_calls_started_total", &[]), 1.0);
    assert_eq!(value(&m, "siphon_calls_answered_total", &[]), 1.0);
    assert_eq!(value(&m, "siphon_call_setup_seconds_count", &[]), 1.0);
    assert!(value(&m, "siphon_call_setup_seconds_sum", &[]) < 1.0);
    assert_eq!(value(&m, "siphon_rtp_ports_in_use", &[]), 1.0);
    assert_eq!(value(&m, "siphon_media_tasks_active", &[]), 1.0);
    assert!(value(&m, "siphon_rtp_packets_total", &[("direction", "in")]) >= 60.0);
    assert!(value(&m, "siphon_rtp_packets_total", &[("direction", "out")]) >= 1.0);
    assert!(value(&m, "siphon_rtp_jitter_seconds_count", &[]) >= 1.0);
    assert!(value(&m, "siphon_sip_transactions_active", &[]) >= 1.0);

    // A rejected call and a parse error show up by code and kind. The caller is a trunk
    // (by its address): unknown numbers are 404 to callers Siphon knows.
    let other = Phone::from_ip(s.addr, "127.0.0.7").await;
    other
        .send(&invite(
            other.local(),
            "999",
            "metrics-404",
            1,
            None,
            "",
            "application/sdp",
        ))
        .await;
    assert_eq!(status(&other.final_response().await), 404);
    other.send_bytes(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n").await;

    let ok = call.bye(2).await;
    assert_eq!(status(&ok), 200, "{ok}");
    let http = s.http;
    assert!(
        eventually(|| async move {
            value(&scrape(http).await, "siphon_media_tasks_active", &[]) == 0.0
        })
        .await
    );
    let m = scrape(s.http).await;
    assert_eq!(value(&m, "siphon_calls_active", &[]), 0.0);
    assert_eq!(
        value(&m, "siphon_calls_ended_total", &[("result", "completed")]),
        1.0
    );
    assert_eq!(
        value(&m, "siphon_calls_rejected_total", &[("code", "404")]),
        1.0
    );
    assert!(value(&m, "siphon_sip_parse_errors_total", &[]) >= 1.0);
    assert!(
        value(
            &m,
            "siphon_sip_requests_total",
            &[("direction", "in"), ("method", "BYE")]
        ) >= 1.0
    );
    assert_eq!(value(&m, "siphon_rtp_ports_in_use", &[]), 0.0);
    // No Call-ID, number or address ever appears in a label.
    for sample in &m {
        for (_, v) in &sample.labels {
            assert!(
                !v.contains("metrics-") && !v.contains("127.0.0.1"),
                "{sample:?}"
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn admin_api_lists_shows_and_hangs_up_calls() {
    // The fork attached below goes to ws://127.0.0.1:9, which is no dialplan fork's service.
    let s = start_edited(
        "",
        33100,
        &[(
            "# token = \"change-me\"",
            "fork_url_prefixes = [\"ws://127.0.0.1:9/\"]",
        )],
    )
    .await;
    let h = s.http;
    assert_eq!(http(h, "GET", "/healthz", None, None).await.status, 200);
    let ready = http(h, "GET", "/readyz", None, None).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let empty = http(h, "GET", "/api/calls", None, None).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["count"], 0);

    let call = place_call(s.addr, "600", "admin-call-1@host").await;
    call.send_rtp(1, 10).await;
    let list = http(h, "GET", "/api/calls", None, None).await.json();
    assert_eq!(list["count"], 1, "{list}");
    let c = &list["calls"][0];
    assert_eq!(c["call_id"], "admin-call-1@host");
    assert_eq!(c["number"], "600");
    assert_eq!(c["codec"], "PCMU");
    assert_eq!(c["state"], "answered");
    assert!(c["from"].as_str().unwrap().contains("tester"));
    assert!(c["duration_s"].as_f64().unwrap() >= 0.0);
    assert!(c["setup_time_s"].as_f64().unwrap() < 1.0);
    assert_eq!(c["forks"], serde_json::json!([]));

    // Call-IDs with '@' work as path segments, raw or percent-encoded.
    for path in [
        "/api/calls/admin-call-1@host",
        "/api/calls/admin-call-1%40host",
    ] {
        let one = http(h, "GET", path, None, None).await;
        assert_eq!(one.status, 200, "{path}: {}", one.body);
        let one = one.json();
        assert_eq!(one["call_id"], "admin-call-1@host");
        assert!(one["rtp"]["packets_in"].as_u64().unwrap() >= 10, "{one}");
        assert!(
            one["rtp"]["bytes_in"].as_u64().unwrap() >= 10 * 172,
            "{one}"
        );
        assert_eq!(
            one["rtp"]["remote"],
            call.rtp.local_addr().unwrap().to_string()
        );
    }
    let missing = http(h, "GET", "/api/calls/nope", None, None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("nope"));

    // Forks: bad JSON, a bad configuration, an unknown call, an unknown fork.
    let forks = "/api/calls/admin-call-1@host/forks";
    for bad in [
        "{",
        "\"a string\"",
        "{\"url\": 5}",
        "{\"url\": \"ws://x\", \"colour\": \"red\"}",
        "",
    ] {
        let r = http(h, "POST", forks, None, Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["status"], 400);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("fork configuration")
        );
    }
    let r = http(h, "POST", forks, None, Some("{\"url\": \"http://not-ws\"}")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = http(
        h,
        "POST",
        "/api/calls/nope/forks",
        None,
        Some("{\"url\": \"ws://127.0.0.1:9/x\"}"),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http(
        h,
        "POST",
        forks,
        None,
        Some("{\"url\": \"ws://127.0.0.1:9/x?token=secret\", \"mode\": \"twilio\"}"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert!(created["id"].as_str().unwrap().starts_with('f'));
    assert_eq!(
        created["url"], "ws://127.0.0.1:9/x",
        "query (credentials) not echoed"
    );
    assert!(
        r.header("location")
            .unwrap()
            .ends_with(created["id"].as_str().unwrap())
    );
    let r = http(h, "DELETE", &format!("{forks}/f999999"), None, None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(http(h, "GET", forks, None, None).await.status, 200);

    // A fork the media task registered shows in the call, in the metrics, and can be
    // detached by its id.
    let stats = std::sync::Arc::new(siphon_fork::ForkStats::default());
    stats
        .frames_sent
        .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
    let reg = s.counters.forks.register(
        siphon_server::fork_metrics::ForkInfo {
            call_id: "admin-call-1@host".into(),
            fork_id: "f-test".into(),
            url: "wss://user:pw@svc.example/x?k=v".into(),
            mode: siphon_fork::Mode::AudioFork,
        },
        stats,
    );
    reg.frame_played();
    let one = http(h, "GET", "/api/calls/admin-call-1@host", None, None)
        .await
        .json();
    // The fork attached through the API above is live too now; find the registered one.
    let f = one["forks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "f-test")
        .expect("f-test listed");
    assert_eq!(f["url"], "wss://svc.example/x");
    assert_eq!(f["mode"], "audio_fork");
    assert_eq!(f["state"], "connecting");
    assert_eq!(f["frames_sent"], 7);
    assert_eq!(f["frames_played"], 1);
    let listed = http(h, "GET", forks, None, None).await.json();
    // The API-attached fork (f1) and the registered one.
    assert_eq!(listed["forks"].as_array().unwrap().len(), 2);
    let m = scrape(h).await;
    let af = [("mode", "audio_fork")];
    assert_eq!(value(&m, "siphon_forks_started_total", &af), 1.0);
    assert_eq!(
        value(
            &m,
            "siphon_forks_active",
            &[("mode", "audio_fork"), ("state", "connecting")]
        ),
        1.0
    );
    assert_eq!(value(&m, "siphon_fork_frames_sent_total", &af), 7.0);
    assert_eq!(value(&m, "siphon_fork_frames_played_total", &af), 1.0);
    let r = http(h, "DELETE", &format!("{forks}/f-test"), None, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    drop(reg);
    let m = scrape(h).await;
    assert_eq!(value(&m, "siphon_forks_active", &af), 0.0);
    assert_eq!(
        value(&m, "siphon_fork_frames_sent_total", &af),
        7.0,
        "totals keep ended forks"
    );

    // Routes and methods that do not exist answer in JSON too.
    let r = http(h, "GET", "/api/nothing", None, None).await;
    assert_eq!((r.status, r.json()["status"].as_u64()), (404, Some(404)));
    let r = http(h, "PUT", "/api/calls", None, Some("{}")).await;
    assert_eq!((r.status, r.json()["status"].as_u64()), (405, Some(405)));
    let big = format!("{{\"url\": \"ws://x/{}\"}}", "a".repeat(100_000));
    let r = http(h, "POST", forks, None, Some(&big)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["status"], 413);

    // DELETE hangs up: the phone gets a BYE, the call is gone.
    let r = http(h, "DELETE", "/api/calls/admin-call-1@host", None, None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let bye = call.expect_request("BYE", WAIT).await;
    assert!(bye.contains("Call-ID: admin-call-1@host"), "{bye}");
    let list = http(h, "GET", "/api/calls", None, None).await.json();
    assert_eq!(list["count"], 0);
    assert_eq!(
        http(h, "DELETE", "/api/calls/admin-call-1@host", None, None)
            .await
            .status,
        404
    );
    let m = scrape(h).await;
    assert_eq!(
        value(&m, "siphon_calls_ended_total", &[("result", "admin")]),
        1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn registrations_are_listed_with_their_kind() {
    let s = start_with("", 33200).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    let register = |cseq: u32, auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bKopsreg{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:1001@127.0.0.1>;tag=opsreg\r\n\
             To: <sip:1001@127.0.0.1>\r\n\
             Call-ID: opsreg\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:1001@{local}>\r\n\
             User-Agent: ops-test\r\n\
             Expires: 600\r\n{auth}\
             Content-Length: 0\r\n\r\n"
        )
    };
    phone.send(&register(1, None)).await;
    let challenge = phone.recv().await;
    assert_eq!(status(&challenge), 401);
    let value_of = challenge
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .unwrap();
    let auth = siphon_sip::auth::Challenge::parse(value_of)
        .unwrap()
        .authorization(
            "1001",
            "secret1001",
            "REGISTER",
            "sip:127.0.0.1",
            1,
            &siphon_sip::auth::new_cnonce(),
        );
    phone.send(&register(2, Some(auth))).await;
    assert_eq!(status(&phone.recv().await), 200);

    let r = http(s.http, "GET", "/api/registrations", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["count"], 1, "{j}");
    let reg = &j["registrations"][0];
    assert_eq!(reg["aor"], "1001");
    assert_eq!(reg["kind"], "phone");
    let b = &reg["bindings"][0];
    assert_eq!(b["contact"], format!("sip:1001@{local}"));
    assert_eq!(b["user_agent"], "ops-test");
    assert_eq!(b["source"], local.to_string());
    let left = b["expires_in_s"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{left}");

    let m = scrape(s.http).await;
    assert_eq!(
        value(&m, "siphon_registrar_bindings", &[("kind", "phone")]),
        1.0
    );
    assert_eq!(
        value(&m, "siphon_registrar_bindings", &[("kind", "trunk")]),
        0.0
    );
    assert_eq!(value(&m, "siphon_registrar_registrations_total", &[]), 1.0);
    assert_eq!(value(&m, "siphon_sip_auth_challenges_total", &[]), 1.0);
    assert_eq!(
        value(
            &m,
            "siphon_sip_responses_total",
            &[
                ("direction", "out"),
                ("method", "REGISTER"),
                ("class", "4xx")
            ]
        ),
        1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn the_admin_api_wants_the_token_when_one_is_set() {
    let s = start_edited(
        "",
        33300,
        &[("# token = \"change-me\"", "token = \"s3cret-token\"")],
    )
    .await;
    let h = s.http;
    let none = http(h, "GET", "/api/calls", None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"siphon\"")
    );
    assert_eq!(none.json()["status"], 401);
    let wrong = http(h, "GET", "/api/calls", Some("s3cret-tokem"), None).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"].as_str().unwrap().contains("wrong"));
    for path in ["/api/registrations", "/api/calls/x", "/api/calls/x/forks"] {
        assert_eq!(http(h, "GET", path, None, None).await.status, 401, "{path}");
    }
    assert_eq!(
        http(h, "DELETE", "/api/calls/x", Some("nope"), None)
            .await
            .status,
        401
    );
    let right = http(h, "GET", "/api/calls", Some("s3cret-token"), None).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(
        http(h, "GET", "/api/calls/x", Some("s3cret-token"), None)
            .await
            .status,
        404
    );
    // SIP message tracing: off by default, switched by PUT, protected like the rest.
    let trace = |method, body| http(h, method, "/api/sip-trace", Some("s3cret-token"), body);
    assert_eq!(trace("GET", None).await.json()["enabled"], false);
    let on = trace("PUT", Some(r#"{"enabled": true}"#)).await;
    assert_eq!(
        (on.status, on.json()["enabled"].clone()),
        (200, true.into())
    );
    assert_eq!(trace("GET", None).await.json()["enabled"], true);
    for bad in [
        r#"{"enabled": "yes"}"#,
        "{}",
        "not json",
        r#"{"enabled": true, "x": 1}"#,
    ] {
        let r = trace("PUT", Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].as_str().is_some(), "{}", r.body);
    }
    assert_eq!(trace("GET", None).await.json()["enabled"], true);
    let anonymous = http(
        h,
        "PUT",
        "/api/sip-trace",
        None,
        Some(r#"{"enabled": false}"#),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    // Scraping and health checks need no token.
    assert_eq!(http(h, "GET", "/metrics", None, None).await.status, 200);
    assert_eq!(http(h, "GET", "/healthz", None, None).await.status, 200);
    assert_eq!(http(h, "GET", "/readyz", None, None).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn draining_refuses_new_calls_and_lets_current_ones_finish() {
    let mut s = start_edited(
        "",
        33400,
        &[("drain_timeout_s = 0", "drain_timeout_s = 120")],
    )
    .await;
    let h = s.http;
    let call = place_call(s.addr, "600", "drain-call-1").await;
    s.begin_stop();
    let flipped =
        eventually(|| async move { http(h, "GET", "/readyz", None, None).await.status == 503 })
            .await;
    assert!(flipped, "/readyz fails while draining");
    let r = http(h, "GET", "/readyz", None, None).await;
    assert_eq!(r.json()["status"], "draining");
    assert_eq!(http(h, "GET", "/healthz", None, None).await.status, 200);
    assert_eq!(value(&scrape(h).await, "siphon_draining", &[]), 1.0);

    // A new call is refused with 503 and Retry-After; the running one is not disturbed.
    let newcomer = Phone::new(s.addr).await;
    newcomer
        .send(&invite(
            newcomer.local(),
            "600",
            "drain-new",
            1,
            None,
            "",
            "application/sdp",
        ))
        .await;
    let refused = newcomer.final_response().await;
    assert_eq!(status(&refused), 503, "{refused}");
    assert!(header(&refused, "Retry-After").is_some(), "{refused}");
    call.send_rtp(1, 10).await;
    let list = http(h, "GET", "/api/calls", None, None).await.json();
    assert_eq!(list["count"], 1);
    assert!(!s.is_finished());

    // The caller hangs up; with no call left the server finishes well before the timeout
    // (at once; 60 s leaves room for a loaded machine and is still half the timeout).
    let started = Instant::now();
    assert_eq!(status(&call.bye(2).await), 200);
    tokio::time::timeout(Duration::from_secs(60), s.join())
        .await
        .expect("server stops once drained");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn calls_still_up_at_the_drain_timeout_get_bye() {
    let mut s = start_edited("", 33500, &[("drain_timeout_s = 0", "drain_timeout_s = 1")]).await;
    let call = place_call(s.addr, "600", "drain-call-2").await;
    let counters = s.counters.clone();
    let began = Instant::now();
    s.begin_stop();
    let bye = call.expect_request("BYE", WAIT).await;
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "BYE only at the timeout"
    );
    assert!(bye.contains("Call-ID: drain-call-2"), "{bye}");
    tokio::time::timeout(WAIT, s.join())
        .await
        .expect("server stops after the drain");
    let ended = siphon_server::counters::END_RESULTS
        .iter()
        .position(|r| *r == "drain_timeout")
        .unwrap();
    assert_eq!(
        siphon_server::counters::get(&counters.calls_ended_by[ended]),
        1
    );
}

#[test]
fn every_route_is_in_the_openapi_description() {
    let spec = include_str!("../../../docs/openapi.yaml");
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/calls",
        "/api/calls/{id}",
        "/api/calls/{id}/forks",
        "/api/calls/{id}/forks/{fork}",
        "/api/calls/{id}/transfer",
        "/api/registrations",
    ] {
        assert!(spec.contains(&format!("\n  {path}:\n")), "{path} missing");
    }
}
