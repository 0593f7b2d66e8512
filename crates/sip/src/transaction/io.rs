//! What the state machines share: the deadline queue and the output queues.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::timers::TimerConfig;

use super::{Event, TransactionKey, TransactionStats, Transmit};

/// Retransmission intervals never go below this, so that a zero T1 (a configuration mistake)
/// cannot make `handle_timeout` spin on a timer that is always due.
pub(super) const MIN_RETRANSMIT_INTERVAL: Duration = Duration::from_millis(1);

/// A scheduled deadline. The sequence number makes ids unique and orders equal instants by
/// scheduling order, so timers due at the same time fire deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TimerId {
    at: Instant,
    seq: u64,
}

/// Each transaction needs at most two timers at once: one driving retransmissions
/// (A, E, G, 2xx) and one bounding its lifetime or state (B, D, F, H, I, J, K, L, and the
/// RFC 3261 §9.1 CANCEL limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Retransmit,
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Server(Slot),
    Client(Slot),
    /// The 64·T1 window after an INVITE client transaction got a 2xx, during which further
    /// 2xx (retransmissions, other forks) still reach the TU.
    AckWindow,
}

#[derive(Debug, Clone)]
pub(super) struct TimerEntry {
    pub(super) key: TransactionKey,
    pub(super) owner: Owner,
}

/// Deadlines ordered by time. Cancelled timers are removed eagerly (an O(log n) removal by id)
/// so the map only ever holds live deadlines and `poll_timeout` is its first key.
#[derive(Debug, Default)]
pub(super) struct TimerQueue {
    entries: BTreeMap<TimerId, TimerEntry>,
    next_seq: u64,
}

impl TimerQueue {
    pub(super) fn schedule(&mut self, at: Instant, entry: TimerEntry) -> TimerId {
        let id = TimerId {
            at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.entries.insert(id, entry);
        id
    }

    pub(super) fn cancel(&mut self, id: TimerId) {
        self.entries.remove(&id);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|(id, _)| id.at)
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, TimerEntry)> {
        let entry = self.entries.first_entry()?;
        if entry.key().at > now {
            return None;
        }
        Some(entry.remove_entry())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Exponential backoff: T1, 2·T1, 4·T1, … optionally capped (at T2).
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    next: Duration,
    cap: Option<Duration>,
}

impl Backoff {
    pub(super) fn new(first: Duration, cap: Option<Duration>) -> Self {
        let cap = cap.map(|c| c.max(MIN_RETRANSMIT_INTERVAL));
        let first = first.max(MIN_RETRANSMIT_INTERVAL);
        Backoff {
            next: cap.map_or(first, |c| first.min(c)),
            cap,
        }
    }

    /// The interval to wait now; the following one doubles.
    pub(super) fn advance(&mut self) -> Duration {
        let current = self.next;
        let doubled = current.saturating_mul(2);
        self.next = match self.cap {
            Some(cap) => doubled.min(cap),
            None => doubled,
        };
        current
    }
}

/// The two timer slots of one transaction.
#[derive(Debug, Default)]
pub(super) struct Timers {
    retransmit: Option<TimerId>,
    timeout: Option<TimerId>,
}

impl Timers {
    fn slot_mut(&mut self, slot: Slot) -> &mut Option<TimerId> {
        match slot {
            Slot::Retransmit => &mut self.retransmit,
            Slot::Timeout => &mut self.timeout,
        }
    }

    pub(super) fn is_armed(&self, slot: Slot) -> bool {
        match slot {
            Slot::Retransmit => self.retransmit.is_some(),
            Slot::Timeout => self.timeout.is_some(),
        }
    }

    /// Called when `id` fired for `slot`: true if it is the timer this transaction armed
    /// there (it always is, since cancelled timers are removed from the queue; checking keeps
    /// a stale timer from driving a state machine if that ever changes).
    pub(super) fn fired(&mut self, slot: Slot, id: TimerId) -> bool {
        let s = self.slot_mut(slot);
        if *s == Some(id) {
            *s = None;
            true
        } else {
            false
        }
    }

    pub(super) fn cancel(&mut self, queue: &mut TimerQueue, slot: Slot) {
        if let Some(id) = self.slot_mut(slot).take() {
            queue.cancel(id);
        }
    }

    pub(super) fn cancel_all(&mut self, queue: &mut TimerQueue) {
        self.cancel(queue, Slot::Retransmit);
        self.cancel(queue, Slot::Timeout);
    }
}

/// Whether a state machine lives on after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum Flow {
    Continue,
    Terminate,
}

/// Everything a state machine may touch besides itself.
#[derive(Debug)]
pub(super) struct Io {
    pub(super) config: TimerConfig,
    pub(super) timers: TimerQueue,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
    pub(super) stats: TransactionStats,
}

impl Io {
    pub(super) fn new(config: TimerConfig) -> Self {
        Io {
            config,
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TransactionStats::default(),
        }
    }

    pub(super) fn send(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    pub(super) fn resend(&mut self, peer: Peer, bytes: &[u8]) {
        self.stats.retransmissions_sent += 1;
        self.send(peer, bytes.to_vec());
    }

    pub(super) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Arms the slot `owner` names in `timers` to fire `after` from `now`, replacing (and
    /// unscheduling) whatever was armed there, so a slot never owns two deadlines.
    pub(super) fn arm(
        &mut self,
        timers: &mut Timers,
        now: Instant,
        key: &TransactionKey,
        owner: Owner,
        after: Duration,
    ) {
        let slot = match owner {
            Owner::Server(slot) | Owner::Client(slot) => slot,
            Owner::AckWindow => Slot::Timeout,
        };
        timers.cancel(&mut self.timers, slot);
        let id = self.timers.schedule(
            now + after,
            TimerEntry {
                key: key.clone(),
                owner,
            },
        );
        *timers.slot_mut(slot) = Some(id);
    }
}
