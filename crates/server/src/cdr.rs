//! Call detail records: one JSON line per call, appended to the file named by `[cdr] path`.
//!
//! The SIP core only formats the line and hands it to a writer thread over a channel, so a
//! slow disk never holds up signalling; the thread writes each line whole (one `write`
//! call) so a reader tailing the file never sees half a record.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use siphon_sip::sdp::Codec;
use tracing::warn;

use crate::counters::LegStats;
use crate::fork_metrics::ForkMetrics;

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    Caller,
    Callee,
    /// Siphon itself: no answer in time, admin API, shutdown, RTP timeout.
    Siphon,
}

/// One leg's media as the CDR shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CdrLeg {
    pub codec: Option<&'static str>,
    /// What the phone sent to Siphon.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// What Siphon sent to the phone.
    pub packets_out: u64,
    pub bytes_out: u64,
}

impl CdrLeg {
    pub fn new(codec: Option<Codec>, stats: &LegStats) -> CdrLeg {
        CdrLeg {
            codec: codec.map(Codec::name),
            packets_in: stats.packets_in.load(Ordering::Relaxed),
            bytes_in: stats.bytes_in.load(Ordering::Relaxed),
            packets_out: stats.packets_out.load(Ordering::Relaxed),
            bytes_out: stats.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// One fork of the call, as of the hang-up.
#[derive(Debug, Clone, Serialize)]
pub struct CdrFork {
    pub id: String,
    /// Without credentials or query.
    pub url: String,
    pub frames_sent: u64,
    pub frames_dropped: u64,
}

impl CdrFork {
    /// The forks of `call_id` still running (the CDR is written before they stop).
    pub fn of_call(forks: &ForkMetrics, call_id: &str) -> Vec<CdrFork> {
        forks
            .forks_of(Some(call_id))
            .into_iter()
            .map(|f| CdrFork {
                id: f.info.fork_id,
                url: siphon_fork::redact_url(&f.info.url),
                frames_sent: f.frames_sent,
                frames_dropped: f.frames_dropped,
            })
            .collect()
    }
}

/// One call. Times are RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct CdrRecord {
    pub call_id: String,
    #[serde(serialize_with = "rfc3339")]
    pub start: SystemTime,
    #[serde(serialize_with = "rfc3339_opt")]
    pub answer: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339")]
    pub end: SystemTime,
    /// The caller's From (without tag).
    pub caller: String,
    /// The account (or number) called.
    pub callee: String,
    /// The dialplan number the call matched.
    pub route: String,
    pub action: String,
    /// The final response the caller got (200 for answered calls).
    pub result: u16,
    /// Why the call ended (the `result` label of `siphon_calls_ended_total`).
    pub end_reason: String,
    pub hung_up_by: Party,
    pub caller_leg: CdrLeg,
    /// Bridged calls only.
    pub callee_leg: Option<CdrLeg>,
    pub forks: Vec<CdrFork>,
}

/// Appends records to the CDR file from a thread of its own.
#[derive(Debug)]
pub struct CdrWriter {
    lines: mpsc::Sender<String>,
}

impl CdrWriter {
    /// Opens (creating) the file for appending; the error names the path.
    pub fn open(path: &Path) -> std::io::Result<CdrWriter> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("CDR file {}: {e}", path.display()))
            })?;
        let (tx, rx) = mpsc::channel::<String>();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("siphon-cdr".into())
            .spawn(move || {
                // Ends when the SIP core (the only sender) is gone.
                for line in rx {
                    if let Err(e) = file.write_all(line.as_bytes()) {
                        warn!(path = %shown, error = %e, "cannot write CDR");
                    }
                }
            })?;
        Ok(CdrWriter { lines: tx })
    }

    pub fn write(&self, record: &CdrRecord) {
        match serde_json::to_string(record) {
            Ok(mut line) => {
                line.push('\n');
                let _ = self.lines.send(line);
            }
            Err(e) => warn!(error = %e, "cannot format CDR"),
        }
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(*t)),
        None => s.serialize_none(),
    }
}

/// `2026-11-26T01:31:13.042Z`. A clock set before 1970 or past 9999 (which `humantime`
/// panics on or refuses) shows as the nearest end of that range rather than losing the
/// record.
pub fn format_time(t: SystemTime) -> String {
    let last = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, last)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) and 2026-11-26 01:31:13.042.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_time(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_656_673_042);
        assert_eq!(format_time(t), "2026-11-26T01:31:13.042Z");
    }
}
