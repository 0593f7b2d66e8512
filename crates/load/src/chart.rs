//! The ramp as SVG line charts (one line per mode, concurrent calls on x): CPU per call, and
//! the latency p99 (fork latency for forked modes, echo round trip otherwise).
//!
//! Hand-written SVG text: two small charts do not justify a plotting library and its
//! dependencies; the output is plain SVG 1.1 that browsers and GitHub render.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::LevelResult;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One line: a label and its (x, y) points, x ascending.
pub type Series = (String, Vec<(f64, f64)>);

/// The charts of a run: (file name, SVG text).
pub fn charts(results: &[LevelResult]) -> Vec<(String, String)> {
    let cpu = series(results, |r| {
        let c = r.procs.get("siphon")?.cpu_percent?;
        Some(c / r.level.max(1) as f64)
    });
    let p99 = series(results, |r| {
        let us = match &r.fork {
            Some(f) => f.latency_us.p99?,
            None if r.bridge_us.count > 0 => r.bridge_us.p99?,
            None => r.echo_rtt_us.p99?,
        };
        Some(us as f64 / 1000.0)
    });
    vec![
        (
            "cpu-per-call.svg".into(),
            svg(
                "CPU per call (% of one core) — the measured process",
                "% of a core per call",
                &cpu,
            ),
        ),
        (
            "latency-p99.svg".into(),
            svg(
                "p99 latency: fork (generator → sink), echo (round trip), bridge (one way)",
                "ms",
                &p99,
            ),
        ),
    ]
}

/// Per label (in order of first appearance), the levels that have a value.
fn series(results: &[LevelResult], y: impl Fn(&LevelResult) -> Option<f64>) -> Vec<Series> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for r in results {
        if !order.contains(&r.label) {
            order.push(r.label.clone());
        }
        if let Some(v) = y(r).filter(|v| v.is_finite()) {
            by.entry(r.label.clone()).or_default().insert(r.level, v);
        }
    }
    order
        .into_iter()
        .filter_map(|l| {
            let pts = by.remove(&l)?;
            Some((l, pts.into_iter().map(|(x, y)| (x as f64, y)).collect()))
        })
        .collect()
}

/// A "nice" upper bound and tick step for 0..max.
fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_tick(v: f64, step: f64) -> String {
    // As many decimals as the step needs (0.05 → 2, 0.25 → 2, 100 → 0).
    let decimals = (0..6)
        .find(|d| {
            let m = step * 10f64.powi(*d);
            (m - m.round()).abs() < 1e-6
        })
        .unwrap_or(6) as usize;
    format!("{v:.decimals$}")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line chart, x from 0 to the largest level.
pub fn svg(title: &str, y_label: &str, series: &[Series]) -> String {
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(0.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let (xmax, xstep) = nice(xmax);
    let (ymax, ystep) = nice(ymax);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + x / xmax * pw;
    let py = |y: f64| TOP + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    // Grid and ticks.
    let mut v = 0.0;
    while v <= ymax + ystep / 2.0 {
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(v, ystep)
        );
        v += ystep;
    }
    let mut v = 0.0;
    while v <= xmax + xstep / 2.0 {
        let x = px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_tick(v, xstep)
        );
        v += xstep;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent calls</text>"#,
        LEFT + pw / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (k, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let points: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for (x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{} {x}: {y:.4}</title></circle>"#,
                px(*x),
                py(*y),
                esc(label)
            );
        }
        let ly = TOP + 10.0 + 18.0 * k as f64;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        let (top, step) = nice(0.13);
        assert!((top - 0.15).abs() < 1e-9 && (step - 0.05).abs() < 1e-9);
        assert_eq!(fmt_tick(0.25, 0.25), "0.25");
        assert_eq!(nice(400.0), (400.0, 100.0));
        assert_eq!(nice(0.0), (1.0, 0.25));
    }

    #[test]
    fn one_polyline_per_series() {
        let s = svg(
            "t <x>",
            "y",
            &[
                ("echo".into(), vec![(200.0, 0.04), (400.0, 0.05)]),
                ("floor".into(), vec![(200.0, 0.01)]),
            ],
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("t &lt;x&gt;") && s.ends_with("</svg>\n"));
    }
}
