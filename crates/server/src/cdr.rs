//! Call detail records: one JSON line per call, appended to the file named by `[cdr] path`.
//!
//! The SIP core only formats the line and hands it to a writer thread over a bounded
//! queue, so a slow disk never holds up signalling; the thread writes whole lines (a
//! reader tailing the file never sees half a record), and a clean stop writes, flushes and
//! syncs everything queued before Siphon exits (see [`CdrWriter`]).
//!
//! Crashes: each line goes to the file in one `write()` of its own, unbuffered, as soon as
//! the thread takes it, so a line is in the kernel's page cache (it survives the process)
//! moments after the call ended; `kill -9` loses only lines still queued. A write cut off
//! in the middle (the process killed inside the system call, a full disk) would leave a
//! torn last line, so opening the file cuts any partial last line off (logged and counted
//! as lost): the file holds whole lines only, every one a JSON object.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use siphon_sip::sdp::Codec;
use tracing::warn;

use crate::counters::{Counters, LegStats};
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
    /// The call's transfer, if it had one (`POST /api/calls/{id}/transfer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::transfer::TransferStatus>,
}

/// Most formatted records waiting for the writer thread. A disk that falls this far behind
/// (10 000 calls ended and not yet written) loses records rather than memory or signalling
/// time; each one lost is counted (`siphon_cdr_records_total{result="lost"}`) and logged.
const QUEUE: usize = 10_000;

/// Appends records to the CDR file from a thread of its own. Dropping it (the SIP core
/// stops) closes the queue and waits for the thread to write, flush and sync everything
/// queued: nothing is lost on a clean stop.
#[derive(Debug)]
pub struct CdrWriter {
    lines: Option<mpsc::SyncSender<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl CdrWriter {
    /// Opens (creating) the file for appending; the error names the path.
    pub fn open(path: &Path, counters: Arc<Counters>) -> std::io::Result<CdrWriter> {
        Self::with_queue(path, counters, QUEUE)
    }

    fn with_queue(
        path: &Path,
        counters: Arc<Counters>,
        queue: usize,
    ) -> std::io::Result<CdrWriter> {
        let context = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("CDR file {}: {e}", path.display()))
        };
        if cut_torn_tail(path).map_err(context)? {
            warn!(path = %path.display(), "the CDR file ended in a partial line (a crash while writing): cut off");
            counters.cdr_lost.fetch_add(1, Ordering::Relaxed);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(context)?;
        let (tx, rx) = mpsc::sync_channel::<String>(queue);
        let shown = path.display().to_string();
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("siphon-cdr".into())
            .spawn(move || write_lines(rx, file, &shown, &thread_counters))?;
        Ok(CdrWriter {
            lines: Some(tx),
            thread: Some(thread),
            counters,
        })
    }

    pub fn write(&self, record: &CdrRecord) {
        let line = match serde_json::to_string(record) {
            Ok(mut line) => {
                line.push('\n');
                line
            }
            Err(e) => {
                warn!(error = %e, "cannot format CDR");
                self.counters.cdr_lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let sent = self.lines.as_ref().map(|tx| tx.try_send(line));
        if !matches!(sent, Some(Ok(()))) {
            let lost = self.counters.cdr_lost.fetch_add(1, Ordering::Relaxed) + 1;
            if lost.is_power_of_two() {
                warn!(lost, "CDR queue full (the disk is too slow): records lost");
            }
        }
    }
}

impl Drop for CdrWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop once it has written what is queued.
        self.lines = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the CDR writer thread panicked");
        }
    }
}

/// The writer thread: each line in one unbuffered append of its own (a buffer would hold
/// finished records back from the file, and split them across writes), synced at the end.
fn write_lines(
    rx: mpsc::Receiver<String>,
    mut file: std::fs::File,
    path: &str,
    counters: &Counters,
) {
    // Ends when the CdrWriter is dropped and the queue is empty.
    while let Ok(line) = rx.recv() {
        match file.write_all(line.as_bytes()) {
            Ok(()) => counters.cdr_written.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                warn!(%path, error = %e, "cannot write CDR");
                counters.cdr_lost.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
    if let Err(e) = file.sync_data() {
        warn!(%path, error = %e, "cannot sync the CDR file");
    }
}

/// Cuts a partial last line (no newline at the end) off the file; true if there was one.
/// A missing or empty file is fine. Reads backwards from the end, a block at a time, so
/// a large file costs little.
fn cut_torn_tail(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep == len {
                return Ok(false);
            }
            file.set_len(keep)?;
            return Ok(true);
        }
        end = start;
    }
    // No newline at all: one torn line, or nothing.
    if len > 0 {
        file.set_len(0)?;
    }
    Ok(len > 0)
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn record(n: usize) -> CdrRecord {
        CdrRecord {
            call_id: format!("call-{n}"),
            start: UNIX_EPOCH,
            answer: None,
            end: UNIX_EPOCH,
            caller: "<sip:1001@127.0.0.1>".into(),
            callee: "600".into(),
            route: "600".into(),
            action: "echo".into(),
            result: 200,
            end_reason: "Completed".into(),
            hung_up_by: Party::Caller,
            caller_leg: CdrLeg::new(None, &LegStats::default()),
            callee_leg: None,
            forks: Vec::new(),
            transfer: None,
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("siphon-cdr-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Billing data: once the writer is dropped (a clean stop), every record is in the
    /// file, whole, and counted as written.
    #[test]
    fn a_clean_stop_loses_no_record() {
        let path = temp("all.jsonl");
        let counters = Arc::new(Counters::default());
        let writer = CdrWriter::open(&path, counters.clone()).unwrap();
        for n in 0..5000 {
            writer.write(&record(n));
        }
        drop(writer);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5000);
        for (n, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["call_id"], format!("call-{n}"));
        }
        assert_eq!(counters.cdr_written.load(Ordering::Relaxed), 5000);
        assert_eq!(counters.cdr_lost.load(Ordering::Relaxed), 0);
    }

    /// The queue is bounded: past it records are counted as lost, never buffered without
    /// limit; every record is either in the file or counted lost.
    #[test]
    fn a_full_queue_counts_what_it_loses() {
        let path = temp("bounded.jsonl");
        let counters = Arc::new(Counters::default());
        let writer = CdrWriter::with_queue(&path, counters.clone(), 2).unwrap();
        for n in 0..20_000 {
            writer.write(&record(n));
        }
        drop(writer);
        let written = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(counters.cdr_written.load(Ordering::Relaxed), written);
        assert_eq!(written + counters.cdr_lost.load(Ordering::Relaxed), 20_000);
    }

    /// A crash inside a write leaves a partial last line: the next start cuts it off and
    /// counts it, and appends after the last whole line.
    #[test]
    fn a_torn_last_line_is_cut_off_at_open() {
        let path = temp("torn.jsonl");
        std::fs::write(
            &path,
            "{\"call_id\":\"a\"}\n{\"call_id\":\"b\"}\n{\"call_id\":\"c\",\"st",
        )
        .unwrap();
        let counters = Arc::new(Counters::default());
        let writer = CdrWriter::open(&path, counters.clone()).unwrap();
        writer.write(&record(7));
        drop(writer);
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["call_id"].to_string())
            .collect();
        assert_eq!(ids, ["\"a\"", "\"b\"", "\"call-7\""]);
        assert_eq!(counters.cdr_lost.load(Ordering::Relaxed), 1);
        // Whole lines: nothing to cut.
        assert!(!cut_torn_tail(&path).unwrap());
        std::fs::write(&path, "no newline at all").unwrap();
        assert!(cut_torn_tail(&path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

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
