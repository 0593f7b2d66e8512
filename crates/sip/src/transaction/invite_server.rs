//! INVITE server transaction: RFC 3261 §17.2.1 with the RFC 6026 §7.1 Accepted state.
//!
//! ```text
//!                 INVITE → TU
//!                      |
//!                 Proceeding ── 1xx from TU: send, keep for re-sending
//!                 /         \
//!   2xx from TU  /           \  300-699 from TU
//!               v             v
//!          Accepted        Completed ── Timer G: re-send; Timer H: AckTimeout
//!   2xx re-sent at T1..T2      | ACK
//!   ACK → TU (AckReceived)     v
//!   Timer L: AckTimeout     Confirmed ── Timer I
//!   unless ACKed                |
//!               \              /
//!                 Terminated
//! ```
//!
//! The layer, not the TU, retransmits the 2xx: this softswitch is always a UA core, and doing it
//! here keeps every timer of the exchange in one deadline queue.

use std::time::Instant;

use crate::peer::Peer;

use super::io::{Backoff, Flow, Io, Owner, Slot, TimerId, Timers};
use super::msg::{self, AckMatch};
use super::{Event, TransactionError, TransactionKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Proceeding,
    Completed,
    Accepted,
    Confirmed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Proceeding => "Proceeding",
            State::Completed => "Completed",
            State::Accepted => "Accepted",
            State::Confirmed => "Confirmed",
        }
    }

    /// The only edges of the diagram above; everything else is a logic error.
    fn can_become(self, next: State) -> bool {
        matches!(
            (self, next),
            (State::Proceeding, State::Completed)
                | (State::Proceeding, State::Accepted)
                | (State::Completed, State::Confirmed)
        )
    }
}

/// What an ACK did to the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckOutcome {
    /// Consumed without telling the TU (ACK for a non-2xx, or a repeated ACK).
    Absorbed(Flow),
    /// The first ACK for our 2xx: the TU must hear about it.
    Report,
    /// No final response has been sent, so this ACK cannot belong here.
    NotMatched,
}

#[derive(Debug)]
pub(super) struct InviteServer {
    state: State,
    request: rsip::Request,
    peer: Peer,
    /// The most recent response, re-sent on INVITE retransmissions and by Timers G / 2xx.
    last_response: Option<Vec<u8>>,
    backoff: Backoff,
    timers: Timers,
    /// Set on sending a 2xx, so its ACK (which has a new branch) can be found.
    ack_match: Option<AckMatch>,
    ack_received: bool,
}

impl InviteServer {
    pub(super) fn new(request: rsip::Request, peer: Peer, io: &Io) -> Self {
        InviteServer {
            state: State::Proceeding,
            request,
            peer,
            last_response: None,
            backoff: Backoff::new(io.config.t1, Some(io.config.t2)),
            timers: Timers::default(),
            ack_match: None,
            ack_received: false,
        }
    }

    pub(super) fn request(&self) -> &rsip::Request {
        &self.request
    }

    pub(super) fn state(&self) -> State {
        self.state
    }

    pub(super) fn ack_match(&self) -> Option<&AckMatch> {
        self.ack_match.as_ref()
    }

    pub(super) fn timers_mut(&mut self) -> &mut Timers {
        &mut self.timers
    }

    fn enter(&mut self, next: State) {
        debug_assert!(
            self.state.can_become(next),
            "INVITE server transaction cannot go from {:?} to {next:?}",
            self.state
        );
        self.state = next;
    }

    /// A retransmitted INVITE: the peer has not seen our latest response, so send it again.
    /// Confirmed means the peer ACKed a final response, so it has it already.
    pub(super) fn on_retransmission(&mut self, io: &mut Io) {
        io.stats.retransmissions_absorbed += 1;
        if self.state == State::Confirmed {
            return;
        }
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
        if self.state != State::Proceeding {
            return Err(TransactionError::InvalidState {
                key: key.clone(),
                state: self.state.name(),
                status: code,
            });
        }
        let reliable = self.peer.transport.is_reliable();
        if (200..300).contains(&code) {
            self.ack_match = AckMatch::for_2xx(&self.request, &response);
        }
        let bytes = crate::message::to_bytes(&response);
        io.send(self.peer, bytes.clone());
        self.last_response = Some(bytes);
        match code {
            100..=199 => {}
            200..=299 => {
                self.enter(State::Accepted);
                self.arm_retransmit(io, now, key, reliable);
                // Timer L
                let l = io.config.t1x64();
                io.arm(&mut self.timers, now, key, Owner::Server(Slot::Timeout), l);
            }
            _ => {
                self.enter(State::Completed);
                // Timer G
                self.arm_retransmit(io, now, key, reliable);
                // Timer H
                let h = io.config.t1x64();
                io.arm(&mut self.timers, now, key, Owner::Server(Slot::Timeout), h);
            }
        }
        Ok(Flow::Continue)
    }

    fn arm_retransmit(&mut self, io: &mut Io, now: Instant, key: &TransactionKey, reliable: bool) {
        if reliable {
            return;
        }
        let after = self.backoff.advance();
        io.arm(
            &mut self.timers,
            now,
            key,
            Owner::Server(Slot::Retransmit),
            after,
        );
    }

    pub(super) fn on_ack(&mut self, io: &mut Io, now: Instant, key: &TransactionKey) -> AckOutcome {
        match self.state {
            State::Proceeding => AckOutcome::NotMatched,
            State::Completed => {
                self.timers.cancel_all(&mut io.timers);
                self.enter(State::Confirmed);
                if self.peer.transport.is_reliable() {
                    // Timer I is zero: there are no ACK retransmissions to absorb.
                    return AckOutcome::Absorbed(Flow::Terminate);
                }
                let i = io.config.t4;
                io.arm(&mut self.timers, now, key, Owner::Server(Slot::Timeout), i);
                AckOutcome::Absorbed(Flow::Continue)
            }
            State::Confirmed => {
                io.stats.retransmissions_absorbed += 1;
                AckOutcome::Absorbed(Flow::Continue)
            }
            State::Accepted if !self.ack_received => {
                self.ack_received = true;
                self.timers.cancel(&mut io.timers, Slot::Retransmit);
                AckOutcome::Report
            }
            // Each 2xx retransmission that crossed the first ACK draws another ACK.
            State::Accepted => {
                io.stats.retransmissions_absorbed += 1;
                AckOutcome::Absorbed(Flow::Continue)
            }
        }
    }

    pub(super) fn on_timer(
        &mut self,
        io: &mut Io,
        now: Instant,
        key: &TransactionKey,
        slot: Slot,
        id: TimerId,
    ) -> Flow {
        if !self.timers.fired(slot, id) {
            return Flow::Continue;
        }
        match (self.state, slot) {
            // Timer G, or the 2xx retransmission timer.
            (State::Completed | State::Accepted, Slot::Retransmit) => {
                if let Some(bytes) = &self.last_response {
                    io.resend(self.peer, bytes);
                }
                self.arm_retransmit(io, now, key, false);
                Flow::Continue
            }
            // Timer H.
            (State::Completed, Slot::Timeout) => {
                io.event(Event::AckTimeout { key: key.clone() });
                Flow::Terminate
            }
            // Timer L. After the ACK it only bounded how long INVITE retransmissions are
            // absorbed; without an ACK the dialog never got confirmed.
            (State::Accepted, Slot::Timeout) => {
                if !self.ack_received {
                    io.event(Event::AckTimeout { key: key.clone() });
                }
                Flow::Terminate
            }
            // Timer I.
            (State::Confirmed, Slot::Timeout) => Flow::Terminate,
            _ => Flow::Continue,
        }
    }
}
