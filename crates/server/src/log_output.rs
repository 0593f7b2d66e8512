//! What the binary's log writer lost, for `/metrics`.
//!
//! The binary logs through a non-blocking writer with a bounded buffer, so that a slow
//! stdout (a full pipe, a stalled log shipper) never holds up a task that logs, signalling
//! included. When the buffer is full, lines are dropped and the writer counts them; the
//! binary hands that count here once at start, and `siphon_log_lines_dropped_total` reads
//! it at each scrape. A static rather than a field of the server: the writer is set up
//! before the configuration is read and outlives the server.
//!
//! A leaf: imports nothing from the crate.

use std::sync::OnceLock;

type Count = Box<dyn Fn() -> u64 + Send + Sync>;

static DROPPED_LINES: OnceLock<Count> = OnceLock::new();

/// Makes `siphon_log_lines_dropped_total` read `count`. One log writer per process: the
/// first call wins, and a later one answers false.
pub fn count_dropped_lines_with(count: impl Fn() -> u64 + Send + Sync + 'static) -> bool {
    DROPPED_LINES.set(Box::new(count)).is_ok()
}

/// Log lines dropped so far; 0 when no writer reported (a server embedded in tests logs
/// however its host set up, and loses nothing Siphon could count).
pub(crate) fn dropped_lines() -> u64 {
    DROPPED_LINES.get().map_or(0, |count| count())
}
