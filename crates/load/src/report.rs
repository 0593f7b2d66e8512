//! What one level of a run produced (one JSON line per level), and the table built from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::hist::{Summary, WireHistogram};
use crate::procstat::UdpDrops;

/// One process's figures over the steady window (all calls up).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcFigures {
    pub cpu_percent: Option<f64>,
    /// User space only.
    #[serde(default)]
    pub user_percent: Option<f64>,
    pub rss_kb: Option<u64>,
    /// RSS before the first call.
    pub rss_base_kb: Option<u64>,
}

/// Call outcomes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Calls {
    pub attempted: u64,
    pub answered: u64,
    /// Answered, held for the whole hold time, and ended by our BYE with a 200.
    pub completed: u64,
    /// Failure reason → count.
    pub failed: BTreeMap<String, u64>,
}

/// RTP as the generator saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rtp {
    /// Packets the generator sent.
    pub sent: u64,
    pub send_errors: u64,
    /// Packets received from Siphon (any call).
    pub received: u64,
    /// Siphon's RTP sequence numbers expected / missing (loss Siphon → generator).
    pub down_expected: u64,
    pub down_missing: u64,
    /// Echo: generator markers that came back (first time each).
    pub echo_fresh: u64,
    /// Fork playback: sink markers that arrived (first time each).
    pub playback_fresh: u64,
    /// Datagrams from unknown sources or not RTP/PCMU.
    pub stray: u64,
}

/// What the fork sink saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkReport {
    /// Distinct Call-IDs.
    pub streams: u64,
    /// WebSocket connections (more than streams when forks reconnected).
    #[serde(default)]
    pub connections: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Frames whose marker was readable.
    pub marker_frames: u64,
    /// New counters (each generator packet counted once).
    pub fresh: u64,
    /// A counter equal to the previous one (jitter-buffer concealment repeating a frame).
    pub repeats: u64,
    pub late: u64,
    /// Frames sent back into the call.
    pub played: u64,
    /// Generator send → sink receive, µs.
    pub latency_us: WireHistogram,
    /// Per call: (Call-ID, fresh counters, frames played back).
    pub per_call: Vec<(String, u64, u64)>,
    pub errors: Vec<String>,
    pub encodings: BTreeMap<String, u64>,
    /// `stop` messages received, and Siphon's counters in them summed (framesSent,
    /// framesDropped, framesDroppedQueueFull, ..., reconnects).
    #[serde(default)]
    pub stops: u64,
    #[serde(default)]
    pub stop_counters: BTreeMap<String, u64>,
    /// Streams whose first frame was not the call's first packet, and the packets they missed.
    #[serde(default)]
    pub late_streams: u64,
    #[serde(default)]
    pub frames_before_stream: u64,
}

/// The fork's figures after joining the sink's report with the generator's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Fork {
    pub streams: u64,
    pub frames: u64,
    pub marker_frames: u64,
    pub repeats: u64,
    /// Answered calls with no stream at the sink.
    pub calls_without_stream: u64,
    /// Generator packets (of answered calls) that never reached the sink.
    pub up_missing: u64,
    pub latency_us: Summary,
    /// Frames the sink sent back, and how many of them reached the generator.
    pub played: u64,
    pub played_missing: u64,
    pub encodings: BTreeMap<String, u64>,
}

/// One level.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LevelResult {
    pub label: String,
    pub number: String,
    pub level: u64,
    pub rate: f64,
    pub hold_s: f64,
    /// Seconds during which every call was up (the CPU/RSS window).
    pub steady_s: f64,
    pub calls: Calls,
    pub setup_us: Summary,
    pub rtp: Rtp,
    /// Generator packets lost on the way up: for a fork, those that never reached the sink;
    /// otherwise the receive drops of Siphon's RTP sockets (`/proc/net/udp`, read at the end
    /// of the steady window), or without a port range the host's UDP receive drops less the
    /// gaps seen on the way down (an upper bound: any socket on the host counts).
    pub up_missing: u64,
    /// Generator packets whose audio never came back (echo: dropped by Siphon's jitter buffer
    /// or lost either way; fork with a playing sink: lost anywhere on the round trip).
    pub not_returned: u64,
    /// Generator lateness: actual send − scheduled send, µs.
    pub gen_lag_us: Summary,
    /// Echo round trip: generator send → echoed packet back (kernel receive time), µs.
    pub echo_rtt_us: Summary,
    /// Sink send → generator receive of played-back audio, µs.
    pub playback_us: Summary,
    /// Bridge mode: one leg's send → the other leg's receive (both directions), µs.
    #[serde(default)]
    pub bridge_us: Summary,
    /// |interarrival − 20 ms| of consecutive packets from Siphon, µs.
    pub pacing_us: Summary,
    pub fork: Option<Fork>,
    /// Process name → figures (siphon, generator, sink).
    pub procs: BTreeMap<String, ProcFigures>,
    /// Busy % of each core over the steady window.
    pub cores: Vec<f64>,
    pub udp_drops: UdpDrops,
    pub notes: Vec<String>,
}

impl LevelResult {
    /// Completed / attempted.
    pub fn completion(&self) -> f64 {
        if self.calls.attempted == 0 {
            0.0
        } else {
            self.calls.completed as f64 / self.calls.attempted as f64
        }
    }

    /// Loss caller → measuring end.
    pub fn loss_up(&self) -> f64 {
        ratio(self.up_missing, self.rtp.sent)
    }

    /// Loss Siphon → caller (sequence gaps), plus played-back frames lost on the way.
    pub fn loss_down(&self) -> f64 {
        let (played, missing) = self
            .fork
            .as_ref()
            .map_or((0, 0), |f| (f.played, f.played_missing));
        ratio(
            self.rtp.down_missing + missing,
            self.rtp.down_expected + played,
        )
    }

    /// The latency the headline judges: fork latency when forking, else none.
    pub fn fork_p99_us(&self) -> Option<u64> {
        self.fork.as_ref().and_then(|f| f.latency_us.p99)
    }

    /// The level is clean: 100 % completion, no loss either way, and the audio Siphon plays
    /// back paced within 20 ms at p99. With a fork, also fork p99 under 20 ms and a stream
    /// for every call; without one, under 1 % of the caller's frames not echoed (the
    /// jitter buffer trims a frame now and then, about 0.1 %).
    pub fn passes(&self) -> bool {
        let fork_ok = match &self.fork {
            Some(f) => f.latency_us.p99.is_some_and(|p| p < 20_000) && f.calls_without_stream == 0,
            // Bridged: every packet crossed (the loss checks below) within 20 ms at p99.
            None if self.bridge_us.count > 0 => self.bridge_us.p99.is_some_and(|p| p < 20_000),
            None => ratio(self.not_returned, self.rtp.sent) < 0.01,
        };
        self.calls.attempted > 0
            && self.calls.completed == self.calls.attempted
            && self.up_missing == 0
            && self.loss_down() == 0.0
            && self.pacing_us.p99.is_some_and(|p| p < 20_000)
            && fork_ok
    }
}

fn cpu_user(p: Option<&ProcFigures>) -> String {
    match p {
        Some(ProcFigures {
            cpu_percent: Some(c),
            user_percent: Some(u),
            ..
        }) => format!("{c:.0} ({u:.0})"),
        Some(p) => opt1(p.cpu_percent),
        None => "–".into(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn ms(v: Option<u64>) -> String {
    v.map_or("–".into(), |us| format!("{:.1}", us as f64 / 1000.0))
}

fn trio(s: &Summary) -> String {
    if s.count == 0 {
        return "–".into();
    }
    format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.max))
}

fn pct(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x < 0.0001 {
        format!("{:.4}%", x * 100.0)
    } else {
        format!("{:.2}%", x * 100.0)
    }
}

fn opt1(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.1}"))
}

/// The Markdown table of a run, then the headline per label. Rows are grouped by label (in
/// order of first appearance) and sorted by level, so several runs' files can be combined.
pub fn table(results: &[LevelResult]) -> String {
    let mut order: Vec<&str> = Vec::new();
    for r in results {
        if !order.contains(&r.label.as_str()) {
            order.push(&r.label);
        }
    }
    let mut sorted: Vec<&LevelResult> = results.iter().collect();
    sorted.sort_by_key(|r| (order.iter().position(|l| *l == r.label), r.level));
    let results: Vec<LevelResult> = sorted.into_iter().cloned().collect();
    let results = results.as_slice();
    let mut out = String::new();
    out.push_str(
        "| mode | calls | completed | loss ↑ | loss ↓ | fork latency ms p50/p99/max | echo RTT / playback / bridge ms p50/p99/max | not returned | generator lag ms p50/p99/max | pacing jitter ms p99/max | setup ms p50/p99 | Siphon CPU % | Siphon RSS MB | CPU %/call | KB/call | gen CPU % (user) | sink CPU % (user) |\n",
    );
    out.push_str(
        "|---|---:|---:|---:|---:|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let siphon = r.procs.get("siphon").cloned().unwrap_or_default();
        let cpu_call = siphon.cpu_percent.map(|c| c / r.level.max(1) as f64);
        let kb_call = match (siphon.rss_kb, siphon.rss_base_kb) {
            (Some(a), Some(b)) => Some(a.saturating_sub(b) as f64 / r.level.max(1) as f64),
            _ => None,
        };
        let back = if r.bridge_us.count > 0 {
            format!("bridge {}", trio(&r.bridge_us))
        } else if r.playback_us.count > 0 {
            format!("play {}", trio(&r.playback_us))
        } else {
            trio(&r.echo_rtt_us)
        };
        let fork = r.fork.as_ref().map_or("–".into(), |f| trio(&f.latency_us));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.level,
            pct(r.completion()),
            pct(r.loss_up()),
            pct(r.loss_down()),
            fork,
            back,
            pct(ratio(r.not_returned, r.rtp.sent)),
            trio(&r.gen_lag_us),
            ms(r.pacing_us.p99),
            ms(r.pacing_us.max),
            ms(r.setup_us.p50),
            ms(r.setup_us.p99),
            opt1(siphon.cpu_percent),
            opt1(siphon.rss_kb.map(|k| k as f64 / 1024.0)),
            cpu_call.map_or("–".into(), |c| format!("{c:.3}")),
            opt1(kb_call),
            cpu_user(r.procs.get("generator")),
            cpu_user(r.procs.get("sink")),
        );
    }
    out.push('\n');
    for r in results {
        // Older result files noted zero drops too.
        let notes: Vec<&str> = r
            .notes
            .iter()
            .map(String::as_str)
            .filter(|n| !n.ends_with("dropped 0 datagrams"))
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(out, "- {} {}: {}", r.label, r.level, notes.join("; "));
        }
    }
    out.push('\n');
    for label in order {
        let best = results
            .iter()
            .filter(|r| r.label == label && r.passes())
            .map(|r| r.level)
            .max();
        let _ = match best {
            Some(n) => writeln!(
                out,
                "**{label}: {n} concurrent calls** (highest level with 100 % completion, 0 loss, playback pacing p99 < 20 ms, {}).\n",
                if results.iter().any(|r| r.label == label && r.fork.is_some()) {
                    "fork p99 < 20 ms"
                } else if results
                    .iter()
                    .any(|r| r.label == label && r.bridge_us.count > 0)
                {
                    "one-way p99 through the bridge < 20 ms"
                } else {
                    "< 1 % of frames not echoed"
                }
            ),
            None => writeln!(out, "**{label}: no level passed.**\n"),
        };
    }
    // Fork vs echo cost ratio at equal levels (the floor is not Siphon).
    // Keyed by label and level: `fork-main` compares with `echo-main`.
    let echo: BTreeMap<(String, u64), f64> = results
        .iter()
        .filter(|r| r.fork.is_none() && r.label.starts_with("echo"))
        .filter_map(|r| {
            Some((
                (r.label.clone(), r.level),
                r.procs.get("siphon")?.cpu_percent?,
            ))
        })
        .collect();
    for r in results
        .iter()
        .filter(|r| r.fork.is_some() && !r.label.starts_with("floor"))
    {
        if let (Some(e), Some(f)) = (
            echo.get(&(r.label.replacen("fork", "echo", 1), r.level))
                .or_else(|| echo.get(&("echo".to_string(), r.level))),
            r.procs.get("siphon").and_then(|p| p.cpu_percent),
        ) && *e > 0.0
        {
            // A ratio of two saturated cores says nothing about the fork.
            let _ = if *e < 85.0 && f < 85.0 {
                writeln!(
                    out,
                    "- {} calls: Siphon CPU with fork / echo only = {:.2}× ({f:.1} % / {e:.1} %){}",
                    r.level,
                    f / e,
                    if r.label == "fork" {
                        String::new()
                    } else {
                        format!(" [{}]", r.label)
                    }
                )
            } else {
                writeln!(
                    out,
                    "- {} calls: Siphon saturated ({f:.1} % with fork, {e:.1} % echo only)",
                    r.level
                )
            };
        }
    }
    // Siphon's forked call vs the floor's (`siphon-load floor`) at equal levels.
    // `fork-opt` compares with `floor-opt` when there is one, else with `floor`.
    let floor: BTreeMap<(String, u64), f64> = results
        .iter()
        .filter(|r| r.label.starts_with("floor"))
        .filter_map(|r| {
            Some((
                (r.label.clone(), r.level),
                r.procs.get("siphon")?.cpu_percent?,
            ))
        })
        .collect();
    for r in results
        .iter()
        .filter(|r| r.fork.is_some() && !r.label.starts_with("floor"))
    {
        if let (Some(fl), Some(f)) = (
            floor
                .get(&(r.label.replacen("fork", "floor", 1), r.level))
                .or_else(|| floor.get(&("floor".to_string(), r.level))),
            r.procs.get("siphon").and_then(|p| p.cpu_percent),
        ) && *fl > 0.0
        {
            let _ = writeln!(
                out,
                "- {} calls: {} CPU / floor = {:.2}× ({f:.1} % / {fl:.1} %)",
                r.level,
                r.label,
                f / fl
            );
        }
    }
    // Siphon's bridged call vs rtpengine relaying the same two legs, at equal levels:
    // `bridge-X` with `rtpengine-X` when there is one, else with `rtpengine`.
    let rtpengine: BTreeMap<(String, u64), f64> = results
        .iter()
        .filter(|r| r.label.starts_with("rtpengine"))
        .filter_map(|r| {
            Some((
                (r.label.clone(), r.level),
                r.procs.get("siphon")?.cpu_percent?,
            ))
        })
        .collect();
    for r in results.iter().filter(|r| r.label.starts_with("bridge")) {
        let own = r.label.replacen("bridge", "rtpengine", 1);
        let other = if rtpengine.contains_key(&(own.clone(), r.level)) {
            own
        } else {
            "rtpengine".to_string()
        };
        if let (Some(e), Some(b)) = (
            rtpengine.get(&(other.clone(), r.level)),
            r.procs.get("siphon").and_then(|p| p.cpu_percent),
        ) && *e > 0.0
        {
            // The kernel caps a real-time task at 95 % of its core: a capped figure is
            // the cap, not the cost, and their ratio says nothing.
            let _ = if b < 93.0 && *e < 93.0 {
                writeln!(
                    out,
                    "- {} calls: {} CPU / {other} = {:.2}× ({b:.1} % / {e:.1} %; {:.3} / {:.3} % of a core per bridged call)",
                    r.level,
                    r.label,
                    b / e,
                    b / r.level.max(1) as f64,
                    e / r.level.max(1) as f64
                )
            } else {
                writeln!(
                    out,
                    "- {} calls: core saturated ({} {b:.1} %, {other} {e:.1} %): no ratio",
                    r.level, r.label
                )
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(n: u64, completed: u64, p99: Option<u64>) -> LevelResult {
        LevelResult {
            label: "fork".into(),
            level: n,
            calls: Calls {
                attempted: n,
                completed,
                ..Calls::default()
            },
            rtp: Rtp {
                sent: 100,
                down_expected: 100,
                ..Rtp::default()
            },
            pacing_us: Summary {
                count: 10,
                p99: Some(3_000),
                ..Summary::default()
            },
            fork: Some(Fork {
                latency_us: Summary {
                    count: 10,
                    p99,
                    ..Summary::default()
                },
                ..Fork::default()
            }),
            ..LevelResult::default()
        }
    }

    #[test]
    fn headline_is_the_highest_passing_level() {
        let rs = vec![
            level(100, 100, Some(5_000)),
            level(250, 250, Some(19_999)),
            level(500, 500, Some(20_000)), // p99 not under 20 ms
            level(1000, 999, Some(5_000)), // one call failed
        ];
        assert!(rs[1].passes() && !rs[2].passes() && !rs[3].passes());
        let mut jittery = level(100, 100, Some(5_000));
        jittery.pacing_us.p99 = Some(25_000);
        assert!(!jittery.passes());
        let mut echo = level(100, 100, None);
        echo.fork = None;
        echo.rtp.sent = 1000;
        echo.not_returned = 1;
        assert!(
            echo.passes(),
            "0.1 % not echoed is the jitter buffer's normal trimming"
        );
        echo.not_returned = 20;
        assert!(!echo.passes());
        let t = table(&rs);
        assert!(t.contains("**fork: 250 concurrent calls**"), "{t}");
        assert_eq!(t.lines().filter(|l| l.starts_with("| fork |")).count(), 4);
    }

    #[test]
    fn bridge_against_rtpengine() {
        let with_cpu = |label: &str, n: u64, cpu: f64| {
            let mut r = level(n, n, None);
            r.label = label.into();
            r.fork = None;
            r.bridge_us = Summary {
                count: 10,
                p50: Some(400),
                p99: Some(1_500),
                max: Some(9_000),
                mean: None,
            };
            r.procs.insert(
                "siphon".into(),
                ProcFigures {
                    cpu_percent: Some(cpu),
                    ..ProcFigures::default()
                },
            );
            r
        };
        let rs = vec![
            with_cpu("bridge", 200, 30.0),
            with_cpu("rtpengine", 200, 20.0),
            with_cpu("bridge-opt", 200, 18.0),
            with_cpu("bridge", 400, 60.0), // no rtpengine run at 400: no ratio
        ];
        let t = table(&rs);
        assert!(
            t.contains("- 200 calls: bridge CPU / rtpengine = 1.50× (30.0 % / 20.0 %; 0.150 / 0.100 % of a core per bridged call)"),
            "{t}"
        );
        assert!(
            t.contains("- 200 calls: bridge-opt CPU / rtpengine = 0.90×"),
            "{t}"
        );
        assert!(!t.contains("- 400 calls: bridge CPU"), "{t}");
        let paired = table(&[
            with_cpu("rtpengine", 200, 10.0),
            with_cpu("rtpengine-x", 200, 40.0),
            with_cpu("bridge-x", 200, 20.0),
        ]);
        assert!(
            paired.contains("- 200 calls: bridge-x CPU / rtpengine-x = 0.50×"),
            "{paired}"
        );
        let capped = table(&[
            with_cpu("bridge", 1000, 95.2),
            with_cpu("rtpengine", 1000, 95.0),
        ]);
        assert!(
            capped.contains(
                "- 1000 calls: core saturated (bridge 95.2 %, rtpengine 95.0 %): no ratio"
            ),
            "{capped}"
        );
        assert!(t.contains("| bridge 0.4 / 1.5 / 9.0 |"), "{t}");
        assert!(t.contains("**bridge: 400 concurrent calls** (highest level with 100 % completion, 0 loss, playback pacing p99 < 20 ms, one-way p99 through the bridge < 20 ms)"), "{t}");
        let mut slow = with_cpu("bridge", 200, 30.0);
        slow.bridge_us.p99 = Some(20_000);
        assert!(!slow.passes());
    }

    #[test]
    fn losses() {
        let mut r = level(10, 10, Some(1));
        r.up_missing = 1;
        assert_eq!(r.loss_up(), 0.01);
        assert!(!r.passes());
        r.up_missing = 0;
        r.rtp.down_missing = 2;
        assert_eq!(r.loss_down(), 0.02);
        assert_eq!(pct(0.02), "2.00%");
        assert_eq!(pct(0.0), "0");
    }
}
