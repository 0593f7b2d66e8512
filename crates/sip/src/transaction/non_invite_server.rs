//! Non-INVITE server transaction (RFC 3261 §17.2.2).
//!
//! ```text
//!   request → TU
//!        |
//!     Trying ── 1xx from TU ──> Proceeding
//!        |                          |
//!        +── final from TU ─────────+
//!                  |
//!              Completed ── Timer J (64·T1 UDP, 0 reliable)
//!                  |
//!              Terminated
//! ```
//!
//! Server non-INVITE transactions never retransmit on their own: the client's Timer E
//! retransmissions drive the re-sending of our last response.

use std::time::Instant;

use crate::peer::Peer;

use super::io::{Flow, Io, Owner, Slot, TimerId, Timers};
use super::{TransactionError, TransactionKey, msg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Trying,
    Proceeding,
    Completed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Trying => "Trying",
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
        }
    }

    fn can_become(self, next: State) -> bool {
        matches!(
            (self, next),
            (State::Trying, State::Proceeding)
                | (State::Trying, State::Completed)
                | (State::Proceeding, State::Proceeding)
                | (State::Proceeding, State::Completed)
        )
    }
}

#[derive(Debug)]
pub(super) struct NonInviteServer {
    state: State,
    /// Until the final response: after it, Timer J keeps the transaction 32 s over UDP only
    /// to re-send that response, and a registrar at a few hundred REGISTERs a second would
    /// otherwise hold every request's parsed headers for that long.
    request: Option<rsip::Request>,
    peer: Peer,
    last_response: Option<Vec<u8>>,
    timers: Timers,
}

impl NonInviteServer {
    pub(super) fn new(request: rsip::Request, peer: Peer) -> Self {
        NonInviteServer {
            state: State::Trying,
            request: Some(request),
            peer,
            last_response: None,
            timers: Timers::default(),
        }
    }

    pub(super) fn request(&self) -> Option<&rsip::Request> {
        self.request.as_ref()
    }

    pub(super) fn timers_mut(&mut self) -> &mut Timers {
        &mut self.timers
    }

    fn enter(&mut self, next: State) {
        debug_assert!(
            self.state.can_become(next),
            "non-INVITE server transaction cannot go from {:?} to {next:?}",
            self.state
        );
        self.state = next;
    }

    /// In Trying there is nothing to re-send yet; the request is simply absorbed.
    pub(super) fn on_retransmission(&mut self, io: &mut Io) {
        io.stats.retransmissions_absorbed += 1;
        if let Some(bytes) = &self.last_response {
            io.resend(self.peer, bytes);
        }
    }

    pub(super) fn send_response(
        &mut self,
        io: &mut Io,
        now: Instant,
        key: &TransactionKey,
        response: rsip::Response,
    ) -> Result<Flow, TransactionError> {
        let code = msg::status_code(&response)?;
        if self.state == State::Completed {
            return Err(TransactionError::InvalidState {
                key: key.clone(),
                state: self.state.name(),
                status: code,
            });
        }
        let bytes = crate::message::to_bytes(&response);
        io.send(self.peer, bytes.clone());
        self.last_response = Some(bytes);
        if code < 200 {
            self.enter(State::Proceeding);
            return Ok(Flow::Continue);
        }
        self.enter(State::Completed);
        self.request = None;
        if self.peer.transport.is_reliable() {
            // Timer J is zero: no request retransmissions will arrive to absorb.
            return Ok(Flow::Terminate);
        }
        let j = io.config.t1x64();
        io.arm(&mut self.timers, now, key, Owner::Server(Slot::Timeout), j);
        Ok(Flow::Continue)
    }

    pub(super) fn on_timer(&mut self, slot: Slot, id: TimerId) -> Flow {
        if !self.timers.fired(slot, id) {
            return Flow::Continue;
        }
        match (self.state, slot) {
            // Timer J.
            (State::Completed, Slot::Timeout) => Flow::Terminate,
            _ => Flow::Continue,
        }
    }
}
