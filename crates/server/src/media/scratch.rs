//! Buffers a media task needs only while it handles one wake-up (a batch of received
//! datagrams, an RTCP, transfer-leg or bridged datagram, the packet being built or relayed,
//! a slot's audio),
//! shared by every call on a runtime thread instead of kept in each call's task.
//!
//! A task's future holds whatever lives across its `await`s; receive buffers passed to
//! `recv_from` futures do, so each call carried ~12 KiB of buffers it used for microseconds
//! per 20 ms (docs/benchmarks.md, issue 19's heap breakdown). The tasks now wait for
//! readiness without a buffer and borrow these for the synchronous part: nothing is held
//! across an `await`, so one set per thread serves all of its calls.

use std::cell::RefCell;

use siphon_media::FRAME_SAMPLES;

use crate::udp_batch::{RTP_DATAGRAM, RecvBatch};

/// Room for a relayed packet (a bridged call's, at most the datagram it came in).
pub const RELAYED: usize = 2048;

/// One thread's buffers.
pub struct Scratch {
    /// RTP datagrams of one `recvmmsg`.
    pub rx: RecvBatch,
    /// One RTCP datagram, or one from a transfer's leg (larger than any RTP MTU's packet).
    pub datagram: [u8; 2048],
    /// The packet being built (RTP or RTCP).
    pub tx: [u8; 1500],
    /// A bridged call's packet, re-stamped for the other leg.
    pub relayed: [u8; RELAYED],
    /// A received packet decoded for the forks (60 ms; `InOrder` takes no more).
    pub decode: [i16; 3 * FRAME_SAMPLES],
    /// A slot's audio: what the caller said, what the slot plays.
    pub pcm_in: [i16; FRAME_SAMPLES],
    pub pcm_out: [i16; FRAME_SAMPLES],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            rx: RecvBatch::new(RTP_DATAGRAM),
            datagram: [0; 2048],
            tx: [0; 1500],
            relayed: [0; RELAYED],
            decode: [0; 3 * FRAME_SAMPLES],
            pcm_in: [0; FRAME_SAMPLES],
            pcm_out: [0; FRAME_SAMPLES],
        }
    }
}

thread_local! {
    /// Allocated on first use by a media task on this thread.
    static SCRATCH: RefCell<Option<Box<Scratch>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's buffers. `f` must not await (it cannot: it is a plain
/// closure) nor call `with` again; if it did, it would get buffers of its own rather than
/// a panic.
pub fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(Box::default)),
        Err(_) => f(&mut Box::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_use_gets_its_own_buffers() {
        with(|outer| {
            outer.tx[0] = 7;
            with(|inner| {
                inner.tx[0] = 9;
            });
            assert_eq!(outer.tx[0], 7);
        });
        // The thread's buffers are kept between uses (not reallocated per wake-up).
        with(|again| assert_eq!(again.tx[0], 7));
    }
}
