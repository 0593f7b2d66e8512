//! Overload and abuse control: rate limits (`governor`'s GCRA, a token bucket in all but
//! name), the per-source flood limiter of the UDP transport, and the fail2ban-style block
//! list fed by failed digest attempts.
//! Pure logic with explicit time; the tasks that use them own their instances (no locks),
//! except the block list, which transports read and the SIP core writes, and the stream
//! connection slots, which connection tasks give back when they end. Every table of
//! sources is bounded in size, and a full one makes room rather than refuse a new source.

mod auth_failures;
mod blocklist;
mod connections;
mod rate;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use auth_failures::{AuthFailures, Verdict};
pub use blocklist::Blocklist;
pub use connections::ConnectionSlots;
pub use rate::{SourceLimiter, TokenBucket};

/// The data behind a lock stays consistent even if a holder panicked (each writer changes
/// it in a few infallible steps), so a poisoned lock is used as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
