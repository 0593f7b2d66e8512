//! The RFC 3261 §17 transaction layer, sans-IO.
//!
//! The layer sits between the transport and the transaction user (TU). It owns the four
//! transaction state machines (INVITE/non-INVITE × client/server) and all of their timers, so
//! that retransmission and absorption of retransmissions never reach the TU, and the TU sees
//! each request and response once (INVITE 2xx excepted, see [`Event::Response`]).
//!
//! Like quinn-proto or str0m it performs no I/O and reads no clock: inputs come in with the
//! current time (`handle_*`), outputs are drained (`poll_transmit`, `poll_event`), and the
//! caller sleeps until `poll_timeout` and then calls `handle_timeout`. With the same inputs
//! it always produces the same outputs, which is what makes every timer testable with
//! virtual time.
//!
//! Deviations from the letter of RFC 3261, all deliberate:
//! * INVITE server: the RFC 6026 Accepted state replaces "terminate on 2xx", and the layer
//!   (not the TU) retransmits the 2xx and matches its ACK, since the TU here is always a UA core.
//! * INVITE client: after a 2xx the transaction terminates (as in RFC 3261) but a record is kept
//!   for 64·T1 so 2xx retransmissions and forked 2xx still reach the TU (RFC 6026 Timer M).
//! * INVITE client: after the TU sends a CANCEL, a final response is awaited for 64·T1 at
//!   most (RFC 3261 §9.1), then the transaction times out.

mod error;
mod invite_client;
mod invite_server;
mod io;
mod key;
mod msg;
mod non_invite_client;
mod non_invite_server;
mod via_scan;

/// Shrinks `map` to twice its entries when it holds under a quarter of its capacity, so a
/// table that follows the load does not keep the memory of its largest burst forever.
pub fn shrink_if_sparse<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Instant;

use rsip::Method;

use crate::peer::Peer;
use crate::timers::TimerConfig;

pub use error::TransactionError;
pub use key::TransactionKey;

use invite_client::InviteClient;
use invite_server::{AckOutcome, InviteServer};
use io::{Flow, Io, Owner, Slot, TimerId, Timers};
use key::MAGIC_COOKIE;
use msg::AckMatch;
use non_invite_client::NonInviteClient;
use non_invite_server::NonInviteServer;

/// A fresh RFC 3261 branch: the magic cookie followed by 128 random bits, which makes it
/// unique across space and time without coordination (RFC 3261 §8.1.1.7).
pub fn new_branch() -> String {
    format!(
        "{MAGIC_COOKIE}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// Bytes to put on the wire to `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Vec<u8>,
}

/// What the layer tells the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request for the TU (a server transaction was created for it unless it is an ACK).
    Request {
        key: TransactionKey,
        request: rsip::Request,
        peer: Peer,
    },
    /// An ACK that matched no INVITE server transaction in Completed state and no Accepted
    /// 2xx (e.g. an ACK for a 2xx that already stopped retransmitting, or a stray ACK). The TU
    /// decides.
    StrayAck { request: rsip::Request, peer: Peer },
    /// The ACK for a 2xx this layer sent (matched to the Accepted INVITE server transaction).
    /// Reported once; repeated ACKs are absorbed.
    AckReceived {
        key: TransactionKey,
        request: rsip::Request,
        peer: Peer,
    },
    /// A response for a client transaction (provisional or final). Retransmitted final
    /// responses are absorbed and not reported again, except 2xx for INVITE, which the TU
    /// sees every time because it must ACK each one (RFC 3261 §13.2.2.4).
    Response {
        key: TransactionKey,
        response: rsip::Response,
    },
    /// A client transaction timed out (Timer B or F, or no final response within 64·T1 of a
    /// CANCEL): the TU should act as if a 408 arrived.
    Timeout { key: TransactionKey },
    /// An INVITE server transaction sent a 2xx and never got the ACK (Timer L), or a non-2xx
    /// final and never got the ACK (Timer H). The TU should end the call.
    AckTimeout { key: TransactionKey },
    /// A transaction reached Terminated and was removed.
    Terminated { key: TransactionKey },
}

/// Counters for monitoring; they only ever grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// Messages this layer re-sent: timer-driven retransmissions (A, E, G, 2xx) and responses
    /// or ACKs re-sent because the peer retransmitted.
    pub retransmissions_sent: u64,
    /// Retransmitted requests, responses and ACKs received and absorbed.
    pub retransmissions_absorbed: u64,
    /// Responses dropped because no transaction could take them.
    pub unmatched_responses: u64,
}

#[derive(Debug)]
enum ServerTransaction {
    Invite(InviteServer),
    NonInvite(NonInviteServer),
}

impl ServerTransaction {
    fn request(&self) -> Option<&rsip::Request> {
        match self {
            ServerTransaction::Invite(t) => Some(t.request()),
            ServerTransaction::NonInvite(t) => t.request(),
        }
    }

    fn timers_mut(&mut self) -> &mut Timers {
        match self {
            ServerTransaction::Invite(t) => t.timers_mut(),
            ServerTransaction::NonInvite(t) => t.timers_mut(),
        }
    }
}

#[derive(Debug)]
enum ClientTransaction {
    Invite(InviteClient),
    NonInvite(NonInviteClient),
}

impl ClientTransaction {
    fn request(&self) -> &rsip::Request {
        match self {
            ClientTransaction::Invite(t) => t.request(),
            ClientTransaction::NonInvite(t) => t.request(),
        }
    }

    fn timers_mut(&mut self) -> &mut Timers {
        match self {
            ClientTransaction::Invite(t) => t.timers_mut(),
            ClientTransaction::NonInvite(t) => t.timers_mut(),
        }
    }
}

/// What is left of an INVITE client transaction after its 2xx: enough to recognise later 2xx
/// and to give the TU the INVITE it needs to build each ACK.
#[derive(Debug)]
struct AckWindow {
    invite: rsip::Request,
    timers: Timers,
}

/// All live transactions of one SIP endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    io: Io,
    server: HashMap<TransactionKey, ServerTransaction>,
    client: HashMap<TransactionKey, ClientTransaction>,
    /// Accepted INVITE server transactions by dialog identifiers, for the 2xx's ACK.
    ack_index: HashMap<AckMatch, TransactionKey>,
    /// INVITE client transactions that got a 2xx in the last 64·T1.
    ack_windows: HashMap<TransactionKey, AckWindow>,
}

impl TransactionLayer {
    pub fn new(timers: TimerConfig) -> Self {
        TransactionLayer {
            io: Io::new(timers),
            server: HashMap::new(),
            client: HashMap::new(),
            ack_index: HashMap::new(),
            ack_windows: HashMap::new(),
        }
    }

    /// Feeds a request from the network.
    ///
    /// Retransmissions of a request matching an existing server transaction are absorbed: the
    /// last response sent (if any) is re-sent and no event is raised. ACKs go to the INVITE
    /// server transaction they acknowledge (see [`Event::AckReceived`], [`Event::StrayAck`]).
    /// A CANCEL is a server transaction of its own; see [`Self::find_invite_for_cancel`].
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: rsip::Request,
        peer: Peer,
    ) -> Result<(), TransactionError> {
        let key = TransactionKey::from_request(&request)?;
        msg::validate_request(&request)?;
        if request.method == Method::Ack {
            self.handle_ack(now, key, request, peer);
            return Ok(());
        }
        if let Some(txn) = self.server.get_mut(&key) {
            match txn {
                ServerTransaction::Invite(t) => t.on_retransmission(&mut self.io),
                ServerTransaction::NonInvite(t) => t.on_retransmission(&mut self.io),
            }
            return Ok(());
        }
        let txn = if request.method == Method::Invite {
            ServerTransaction::Invite(InviteServer::new(request.clone(), peer, &self.io))
        } else {
            ServerTransaction::NonInvite(NonInviteServer::new(request.clone(), peer))
        };
        self.server.insert(key.clone(), txn);
        self.io.event(Event::Request { key, request, peer });
        Ok(())
    }

    fn handle_ack(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: rsip::Request,
        peer: Peer,
    ) {
        // An ACK for a non-2xx (or from a UA that reuses the INVITE's branch) matches the
        // INVITE by key; an ACK for a 2xx has its own branch and matches on the dialog.
        let target = match self.ack_outcome(now, &key) {
            Some(outcome) => Some((key, outcome)),
            None => AckMatch::for_ack(&request)
                .and_then(|m| self.ack_index.get(&m).cloned())
                .and_then(|k| self.ack_outcome(now, &k).map(|outcome| (k, outcome))),
        };
        match target {
            Some((key, AckOutcome::Absorbed(Flow::Terminate))) => self.remove_server(&key),
            Some((_, AckOutcome::Absorbed(Flow::Continue))) => {}
            Some((key, AckOutcome::Report)) => {
                self.io.event(Event::AckReceived { key, request, peer })
            }
            Some((_, AckOutcome::NotMatched)) | None => {
                self.io.event(Event::StrayAck { request, peer })
            }
        }
    }

    /// Offers an ACK to INVITE server transaction `key`; None if there is none or it is not
    /// waiting for an ACK.
    fn ack_outcome(&mut self, now: Instant, key: &TransactionKey) -> Option<AckOutcome> {
        match self.server.get_mut(key) {
            Some(ServerTransaction::Invite(t)) => match t.on_ack(&mut self.io, now, key) {
                AckOutcome::NotMatched => None,
                outcome => Some(outcome),
            },
            _ => None,
        }
    }

    /// Feeds a response from the network. Responses that match no transaction are counted
    /// in [`TransactionStats::unmatched_responses`] and dropped; that is not an error.
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: rsip::Response,
        _peer: Peer,
    ) -> Result<(), TransactionError> {
        let key = TransactionKey::from_response(&response)?;
        let code = msg::status_code(&response)?;
        let is_invite_2xx = key.method() == Method::Invite && (200..300).contains(&code);
        if let Some(txn) = self.client.get_mut(&key) {
            let flow = match txn {
                ClientTransaction::Invite(t) => t.on_response(&mut self.io, now, &key, response)?,
                ClientTransaction::NonInvite(t) => {
                    t.on_response(&mut self.io, now, &key, response)?
                }
            };
            if flow == Flow::Terminate {
                let txn = self.remove_client(&key);
                if is_invite_2xx && let Some(ClientTransaction::Invite(t)) = txn {
                    let mut timers = Timers::default();
                    let m = self.io.config.t1x64();
                    self.io.arm(&mut timers, now, &key, Owner::AckWindow, m);
                    let invite = t.into_request();
                    self.ack_windows.insert(key, AckWindow { invite, timers });
                }
            }
        } else if is_invite_2xx && self.ack_windows.contains_key(&key) {
            self.io.event(Event::Response { key, response });
        } else {
            self.io.stats.unmatched_responses += 1;
        }
        Ok(())
    }

    /// Sends a response within server transaction `key`, driving its state machine
    /// (RFC 3261 §17.2). Refused if the key is unknown or the state has moved past responses
    /// of that class, e.g. a second final response.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        response: rsip::Response,
    ) -> Result<(), TransactionError> {
        let txn = self
            .server
            .get_mut(key)
            .ok_or_else(|| TransactionError::UnknownTransaction(key.clone()))?;
        let flow = match txn {
            ServerTransaction::Invite(t) => {
                let flow = t.send_response(&mut self.io, now, key, response)?;
                if let Some(m) = t.ack_match() {
                    self.ack_index.insert(m.clone(), key.clone());
                }
                flow
            }
            ServerTransaction::NonInvite(t) => t.send_response(&mut self.io, now, key, response)?,
        };
        if flow == Flow::Terminate {
            self.remove_server(key);
        }
        Ok(())
    }

    /// Starts a client transaction for `request`, which must carry a top Via with a unique
    /// RFC 3261 branch (see [`new_branch`]): responses are matched on nothing else.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: rsip::Request,
        peer: Peer,
    ) -> Result<TransactionKey, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckNotTransactional);
        }
        let via = msg::top_via(&request.headers)?;
        match via.branch() {
            None => return Err(TransactionError::MissingBranch),
            Some(b) if !b.value().starts_with(MAGIC_COOKIE) => {
                return Err(TransactionError::InvalidBranch(b.value().to_owned()));
            }
            Some(_) => {}
        }
        let key = TransactionKey::from_request(&request)?;
        msg::validate_request(&request)?;
        if self.client.contains_key(&key) || self.ack_windows.contains_key(&key) {
            return Err(TransactionError::DuplicateTransaction(key));
        }
        let method = request.method;
        let txn = if method == Method::Invite {
            ClientTransaction::Invite(InviteClient::start(&mut self.io, now, &key, request, peer)?)
        } else {
            ClientTransaction::NonInvite(NonInviteClient::start(
                &mut self.io,
                now,
                &key,
                request,
                peer,
            ))
        };
        if method == Method::Cancel {
            let invite = key.with_method(Method::Invite);
            if let Some(ClientTransaction::Invite(t)) = self.client.get_mut(&invite) {
                t.on_cancel_sent(&mut self.io, now, &invite);
            }
        }
        self.client.insert(key.clone(), txn);
        Ok(key)
    }

    /// Sends an ACK for a 2xx. That ACK is not part of any transaction (RFC 3261 §17.1.1.3),
    /// so it is just queued.
    pub fn send_ack_for_2xx(&mut self, request: rsip::Request, peer: Peer) {
        self.io.send(peer, crate::message::to_bytes(&request));
    }

    /// The INVITE server transaction that `cancel` targets (same branch, method INVITE), if it
    /// exists and has not sent a final response yet: only then can a CANCEL still take effect.
    pub fn find_invite_for_cancel(&self, cancel: &rsip::Request) -> Option<TransactionKey> {
        let key = TransactionKey::from_request(cancel)
            .ok()?
            .with_method(Method::Invite);
        match self.server.get(&key)? {
            ServerTransaction::Invite(t) if t.state() == invite_server::State::Proceeding => {
                Some(key)
            }
            _ => None,
        }
    }

    /// The request that created a server or client transaction (e.g. the INVITE, which the TU
    /// needs to build a 487 after a CANCEL). For an INVITE client transaction ended by a 2xx
    /// the INVITE stays available for 64·T1, because every 2xx in that time needs an ACK
    /// built from it. A non-INVITE server transaction forgets its request once its final
    /// response is sent (nothing more can be answered; only that response is re-sent).
    pub fn request(&self, key: &TransactionKey) -> Option<&rsip::Request> {
        self.server
            .get(key)
            .and_then(ServerTransaction::request)
            .or_else(|| self.client.get(key).map(ClientTransaction::request))
            .or_else(|| self.ack_windows.get(key).map(|w| &w.invite))
    }

    /// Fires every timer due at `now`, in deadline order.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((id, entry)) = self.io.timers.pop_due(now) {
            let key = entry.key;
            match entry.owner {
                Owner::Server(slot) => {
                    let flow = match self.server.get_mut(&key) {
                        Some(ServerTransaction::Invite(t)) => {
                            t.on_timer(&mut self.io, now, &key, slot, id)
                        }
                        Some(ServerTransaction::NonInvite(t)) => t.on_timer(slot, id),
                        None => Flow::Continue,
                    };
                    if flow == Flow::Terminate {
                        self.remove_server(&key);
                    }
                }
                Owner::Client(slot) => {
                    let flow = match self.client.get_mut(&key) {
                        Some(ClientTransaction::Invite(t)) => {
                            t.on_timer(&mut self.io, now, &key, slot, id)
                        }
                        Some(ClientTransaction::NonInvite(t)) => {
                            t.on_timer(&mut self.io, now, &key, slot, id)
                        }
                        None => Flow::Continue,
                    };
                    if flow == Flow::Terminate {
                        self.remove_client(&key);
                    }
                }
                Owner::AckWindow => self.expire_ack_window(&key, id),
            }
        }
    }

    fn expire_ack_window(&mut self, key: &TransactionKey, id: TimerId) {
        if let Some(window) = self.ack_windows.get_mut(key)
            && window.timers.fired(Slot::Timeout, id)
        {
            self.ack_windows.remove(key);
        }
    }

    /// The earliest pending deadline; call [`Self::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.io.timers.next_deadline()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.io.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.io.events.pop_front()
    }

    /// Gives back the memory a burst made the tables grow to: a `HashMap` keeps its peak
    /// capacity after its entries go (heaptrack, issue 16: 5 MB of empty table held after
    /// 2000 calls at 100/s had ended). Cheap enough for a housekeeping tick.
    pub fn shrink_tables(&mut self) {
        shrink_if_sparse(&mut self.server);
        shrink_if_sparse(&mut self.client);
    }

    /// Number of live transactions (server + client).
    pub fn len(&self) -> usize {
        self.server.len() + self.client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> TransactionStats {
        self.io.stats
    }

    fn remove_server(&mut self, key: &TransactionKey) {
        let Some(mut txn) = self.server.remove(key) else {
            return;
        };
        txn.timers_mut().cancel_all(&mut self.io.timers);
        if let ServerTransaction::Invite(t) = &txn
            && let Some(m) = t.ack_match()
            && self.ack_index.get(m) == Some(key)
        {
            self.ack_index.remove(m);
        }
        self.io.event(Event::Terminated { key: key.clone() });
    }

    fn remove_client(&mut self, key: &TransactionKey) -> Option<ClientTransaction> {
        let mut txn = self.client.remove(key)?;
        txn.timers_mut().cancel_all(&mut self.io.timers);
        self.io.event(Event::Terminated { key: key.clone() });
        Some(txn)
    }
}
