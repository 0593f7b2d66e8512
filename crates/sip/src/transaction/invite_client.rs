//! INVITE client transaction (RFC 3261 §17.1.1).
//!
//! ```text
//!   INVITE sent
//!        |
//!     Calling ── Timer A: re-send (T1 doubling, UDP only); Timer B: Timeout
//!        | 1xx
//!    Proceeding ── (after the TU sends a CANCEL: 64·T1 limit, RFC 3261 §9.1)
//!        |
//!        +── 2xx → TU, Terminated (further 2xx still reach the TU for 64·T1)
//!        |
//!        +── 300-699 → TU, ACK sent ──> Completed ── re-send ACK per retransmitted final
//!                                           | Timer D
//!                                       Terminated
//! ```
//!
//! In Proceeding no timer runs: how long a call may ring is the TU's policy. The one exception
//! is after the TU cancels: a peer that never answers the CANCEL with a final response would
//! otherwise pin the transaction forever.

use std::time::Instant;

use rsip::prelude::*;
use rsip::{Header, Method};

use crate::peer::Peer;

use super::io::{Backoff, Flow, Io, Owner, Slot, TimerId, Timers};
use super::msg::{self, Field};
use super::{Event, TransactionError, TransactionKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Calling,
    Proceeding,
    Completed,
}

impl State {
    fn can_become(self, next: State) -> bool {
        matches!(
            (self, next),
            (State::Calling, State::Proceeding)
                | (State::Calling, State::Completed)
                | (State::Proceeding, State::Completed)
        )
    }
}

#[derive(Debug)]
pub(super) struct InviteClient {
    state: State,
    request: rsip::Request,
    bytes: Vec<u8>,
    peer: Peer,
    backoff: Backoff,
    timers: Timers,
    /// The ACK we generated for the non-2xx final response, re-sent for each retransmission.
    ack: Option<Vec<u8>>,
    /// The TU sent a CANCEL for this INVITE.
    cancelled: bool,
}

impl InviteClient {
    /// Sends the INVITE and arms Timers A and B.
    pub(super) fn start(
        io: &mut Io,
        now: Instant,
        key: &TransactionKey,
        request: rsip::Request,
        peer: Peer,
    ) -> Result<Self, TransactionError> {
        // Needed later to build the ACK; refuse now rather than fail on the final response.
        msg::require(&request.headers, Field::From)?;
        let bytes = crate::message::to_bytes(&request);
        io.send(peer, bytes.clone());
        let mut txn = InviteClient {
            state: State::Calling,
            request,
            bytes,
            peer,
            backoff: Backoff::new(io.config.t1, None),
            timers: Timers::default(),
            ack: None,
            cancelled: false,
        };
        if !peer.transport.is_reliable() {
            let a = txn.backoff.advance();
            io.arm(
                &mut txn.timers,
                now,
                key,
                Owner::Client(Slot::Retransmit),
                a,
            );
        }
        let b = io.config.t1x64();
        io.arm(&mut txn.timers, now, key, Owner::Client(Slot::Timeout), b);
        Ok(txn)
    }

    pub(super) fn request(&self) -> &rsip::Request {
        &self.request
    }

    pub(super) fn into_request(self) -> rsip::Request {
        self.request
    }

    pub(super) fn timers_mut(&mut self) -> &mut Timers {
        &mut self.timers
    }

    fn enter(&mut self, next: State) {
        debug_assert!(
            self.state.can_become(next),
            "INVITE client transaction cannot go from {:?} to {next:?}",
            self.state
        );
        self.state = next;
    }

    /// The TU sent a CANCEL for this INVITE: bound the wait for the final response to 64·T1
    /// (RFC 3261 §9.1), since an RFC 2543 UAS never sends a 487. In Calling, Timer B already
    /// bounds it; the limit starts if a provisional moves us to Proceeding.
    pub(super) fn on_cancel_sent(&mut self, io: &mut Io, now: Instant, key: &TransactionKey) {
        self.cancelled = true;
        if self.state == State::Proceeding {
            self.arm_cancel_limit(io, now, key);
        }
    }

    fn arm_cancel_limit(&mut self, io: &mut Io, now: Instant, key: &TransactionKey) {
        if !self.timers.is_armed(Slot::Timeout) {
            let limit = io.config.t1x64();
            io.arm(
                &mut self.timers,
                now,
                key,
                Owner::Client(Slot::Timeout),
                limit,
            );
        }
    }

    pub(super) fn on_response(
        &mut self,
        io: &mut Io,
        now: Instant,
        key: &TransactionKey,
        response: rsip::Response,
    ) -> Result<Flow, TransactionError> {
        let code = msg::status_code(&response)?;
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.timers.cancel(&mut io.timers, Slot::Retransmit);
                if self.state == State::Calling {
                    // Timer B only guards Calling.
                    self.timers.cancel(&mut io.timers, Slot::Timeout);
                    self.enter(State::Proceeding);
                    if self.cancelled {
                        self.arm_cancel_limit(io, now, key);
                    }
                }
                io.event(Event::Response {
                    key: key.clone(),
                    response,
                });
                Ok(Flow::Continue)
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.timers.cancel_all(&mut io.timers);
                io.event(Event::Response {
                    key: key.clone(),
                    response,
                });
                Ok(Flow::Terminate)
            }
            (State::Calling | State::Proceeding, _) => {
                // Build first so a response we cannot ACK leaves the state untouched.
                let ack = build_ack(&self.request, &response)?
                    .to_string()
                    .into_bytes();
                io.send(self.peer, ack.clone());
                self.ack = Some(ack);
                self.timers.cancel_all(&mut io.timers);
                self.enter(State::Completed);
                io.event(Event::Response {
                    key: key.clone(),
                    response,
                });
                if self.peer.transport.is_reliable() {
                    // Timer D is zero: the final response will not be retransmitted.
                    return Ok(Flow::Terminate);
                }
                let d = io.config.timer_d();
                io.arm(&mut self.timers, now, key, Owner::Client(Slot::Timeout), d);
                Ok(Flow::Continue)
            }
            (State::Completed, 300..=699) => {
                // The peer did not get our ACK.
                io.stats.retransmissions_absorbed += 1;
                if let Some(ack) = &self.ack {
                    io.resend(self.peer, ack);
                }
                Ok(Flow::Continue)
            }
            // A late provisional or a 2xx after a failure: nothing sensible to do with it.
            (State::Completed, _) => {
                io.stats.unmatched_responses += 1;
                Ok(Flow::Continue)
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
            // Timer A.
            (State::Calling, Slot::Retransmit) => {
                io.resend(self.peer, &self.bytes);
                let a = self.backoff.advance();
                io.arm(
                    &mut self.timers,
                    now,
                    key,
                    Owner::Client(Slot::Retransmit),
                    a,
                );
                Flow::Continue
            }
            // Timer B, or the post-CANCEL limit.
            (State::Calling | State::Proceeding, Slot::Timeout) => {
                io.event(Event::Timeout { key: key.clone() });
                Flow::Terminate
            }
            // Timer D.
            (State::Completed, Slot::Timeout) => Flow::Terminate,
            _ => Flow::Continue,
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3). It belongs to the INVITE's
/// transaction, so it reuses the INVITE's top Via (and branch) and goes hop-by-hop along the
/// same route set.
pub(super) fn build_ack(
    invite: &rsip::Request,
    response: &rsip::Response,
) -> Result<rsip::Request, TransactionError> {
    let via = msg::top_via_header(&invite.headers)?;
    let from = msg::require(&invite.headers, Field::From)?;
    let to = msg::require(&response.headers, Field::To)?;
    let call_id = msg::call_id(&invite.headers)?;
    let cseq = msg::cseq(&invite.headers)?;

    let mut headers = rsip::Headers::default();
    headers.push(via);
    headers.push(rsip::headers::MaxForwards::new("70").into());
    for header in invite.headers.iter() {
        if let Header::Route(route) = header {
            headers.push(Header::Route(route.clone()));
        }
    }
    headers.push(rsip::headers::From::new(from).into());
    headers.push(rsip::headers::To::new(to).into());
    headers.push(rsip::headers::CallId::new(call_id).into());
    headers.push(
        rsip::typed::CSeq {
            seq: cseq.seq,
            method: Method::Ack,
        }
        .into(),
    );
    headers.push(rsip::headers::ContentLength::new("0").into());

    Ok(rsip::Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    })
}
