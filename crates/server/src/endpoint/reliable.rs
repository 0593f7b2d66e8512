//! Siphon's reliable provisional responses to callers (RFC 3262, UAS side): a caller
//! whose INVITE lists `100rel` in `Supported` or `Require` gets its 18x with `Require:
//! 100rel` and `RSeq`, sent again at T1, 2·T1... until its PRACK (answered 200); a PRACK
//! matching nothing gets 481. A 2xx waits for the PRACK of a 18x that carried SDP (§3);
//! a 18x made while another waits for its PRACK is sent after it. No PRACK in 64·T1: the
//! call is ended (480 to the INVITE). The numbering and timing are `siphon_sip::reliable`.

use std::collections::HashMap;
use std::time::Duration;

use rsip::Header;
use siphon_sip::dialog::{DialogId, cseq_number};
use siphon_sip::message::{self, header_value, header_values};
use siphon_sip::reliable::{self, RAck, Retransmit, UasReliable};
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use super::{Endpoint, now};
use crate::control::Command;
use crate::counters::EndResult;

/// The reliable provisional state of each caller's INVITE that asked for it, by the
/// caller's dialog.
#[derive(Default)]
pub(super) struct Reliable {
    by_dialog: HashMap<DialogId, Entry>,
}

struct Entry {
    invite_key: TransactionKey,
    state: UasReliable,
    /// The response waiting for its PRACK (sent again until then).
    outstanding: Option<rsip::Response>,
    /// A 18x made meanwhile: sent reliably once the outstanding one is PRACKed.
    queued: Option<rsip::Response>,
    /// A 2xx held until the PRACK of a 18x with SDP.
    held_2xx: Option<rsip::Response>,
}

/// The INVITE's CSeq number when the caller lists `100rel` (its 18x are to be reliable).
pub(super) fn wants_reliable(invite: &rsip::Request) -> Option<u32> {
    let supported = header_values(&invite.headers, "Supported");
    let require = header_values(&invite.headers, "Require");
    let listed = reliable::names_100rel(supported.iter().chain(&require).map(String::as_str));
    listed.then(|| cseq_number(invite)).flatten()
}

impl Reliable {
    /// The final response to `id`'s INVITE is about to go. A 2xx that must wait for a
    /// PRACK is kept (`None`); otherwise the entry is done with and the response returned,
    /// to be sent.
    pub(super) fn before_final(
        &mut self,
        id: &DialogId,
        response: rsip::Response,
    ) -> Option<rsip::Response> {
        let code = response.status_code.code();
        if let Some(entry) = self.by_dialog.get_mut(id)
            && (200..300).contains(&code)
            && entry.state.holds_2xx()
        {
            debug!("2xx held until the PRACK of the 18x with SDP");
            entry.held_2xx = Some(response);
            return None;
        }
        self.by_dialog.remove(id);
        Some(response)
    }

    /// Forgets a call's state (the call ended).
    pub(super) fn forget(&mut self, id: &DialogId) {
        self.by_dialog.remove(id);
    }
}

impl Endpoint {
    /// Sends a 18x on the caller's INVITE `key` (dialog `id`), reliably when the caller
    /// asked for it (`reliable_cseq`, see `wants_reliable`).
    pub(super) fn send_provisional(
        &mut self,
        id: &DialogId,
        key: &TransactionKey,
        reliable_cseq: Option<u32>,
        mut response: rsip::Response,
    ) {
        let code = response.status_code.code();
        let Some(cseq) = reliable_cseq.filter(|_| (101..=199).contains(&code)) else {
            if let Err(e) = self.layer.send_response(now(), key, response) {
                debug!(error = %e, "could not send a provisional response");
            }
            return;
        };
        let t1 = self.config.timers().t1;
        let entry = self.reliable.by_dialog.entry(id.clone()).or_insert(Entry {
            invite_key: key.clone(),
            state: UasReliable::new(rand::random::<u32>(), t1),
            outstanding: None,
            queued: None,
            held_2xx: None,
        });
        let with_sdp = !response.body.is_empty();
        let Some(rseq) = entry.state.send(now(), cseq, with_sdp) else {
            debug!(
                code,
                "a reliable 18x waits for its PRACK; this one goes after it"
            );
            entry.queued = Some(response);
            return;
        };
        response.headers.push(Header::Require(reliable::TAG.into()));
        response
            .headers
            .push(Header::Other("RSeq".into(), rseq.to_string()));
        let body = response.body.clone();
        message::finish(&mut response.headers, &body);
        entry.outstanding = Some(response.clone());
        if let Err(e) = self.layer.send_response(now(), key, response) {
            debug!(error = %e, "could not send a reliable provisional response");
            self.reliable.by_dialog.remove(id);
            return;
        }
        self.schedule(t1, Command::ReliableRetransmit(id.clone()));
    }

    /// `Command::ReliableRetransmit`: the outstanding 18x of `id` goes again, or the call
    /// ends when 64·T1 passed without a PRACK.
    pub(super) fn reliable_retransmit(&mut self, id: &DialogId) {
        let Some(entry) = self.reliable.by_dialog.get_mut(id) else {
            return;
        };
        match entry.state.poll(now()) {
            Retransmit::Wait => {}
            Retransmit::Send => {
                if let Some(resp) = entry.outstanding.clone() {
                    let key = entry.invite_key.clone();
                    if let Err(e) = self.layer.send_response(now(), &key, resp) {
                        // The INVITE has its final response: nothing more to repeat.
                        debug!(error = %e, "reliable 18x not repeated");
                        self.reliable.by_dialog.remove(id);
                        return;
                    }
                }
            }
            Retransmit::GiveUp => {
                warn!(call_id = %id.call_id, "no PRACK for a reliable 18x in 64·T1; ending the call");
                self.reliable.by_dialog.remove(id);
                self.hang_up_as(id, EndResult::Other);
                return;
            }
        }
        let Some(deadline) = self
            .reliable
            .by_dialog
            .get(id)
            .and_then(|e| e.state.deadline())
        else {
            return;
        };
        let after = deadline.saturating_duration_since(now());
        self.schedule(
            after.max(Duration::from_millis(1)),
            Command::ReliableRetransmit(id.clone()),
        );
    }

    /// A PRACK from a caller: 200 when it acknowledges the outstanding 18x (then a held
    /// 2xx or a queued 18x goes), 481 when it matches nothing, 400 without a usable `RAck`.
    pub(super) fn on_prack(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let Some(rack) = header_value(&request.headers, "RAck").and_then(|v| RAck::parse(&v))
        else {
            self.reply_to(key, request, 400, Some("Missing or Bad RAck"), &[]);
            return;
        };
        let Some(id) = DialogId::for_incoming(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        let Some(entry) = self.reliable.by_dialog.get_mut(&id) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        if !entry.state.prack(&rack) {
            debug!(rseq = rack.rseq, "PRACK matching no outstanding 18x; 481");
            self.reply_to(key, request, 481, None, &[]);
            return;
        }
        info!(rseq = rack.rseq, "PRACK");
        entry.outstanding = None;
        let invite_key = entry.invite_key.clone();
        let held = entry.held_2xx.take();
        let queued = entry.queued.take();
        self.reply_to(key, request, 200, None, &[]);
        if let Some(resp) = held {
            self.reliable.by_dialog.remove(&id);
            if let Err(e) = self.layer.send_response(now(), &invite_key, resp) {
                warn!(error = %e, "could not send the 2xx held for the PRACK");
            }
            return;
        }
        if let Some(resp) = queued {
            let cseq = self
                .layer
                .request(&invite_key)
                .and_then(cseq_number)
                .unwrap_or(1);
            self.send_provisional(&id, &invite_key, Some(cseq), resp);
        }
    }
}
