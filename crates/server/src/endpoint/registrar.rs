//! REGISTER: authenticated, then handed to the registrar (`siphon_sip::registrar`).

use std::time::SystemTime;

use rsip::Header;
use rsip::prelude::*;
use siphon_sip::Peer;
use siphon_sip::dialog::uri_of;
use siphon_sip::message::header_value;
use siphon_sip::registrar::RegisterOutcome;
use siphon_sip::transaction::TransactionKey;
use tracing::{debug, info, warn};

use super::{Endpoint, now, user_of};
use crate::counters::inc;

impl Endpoint {
    pub(super) fn on_register(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        peer: Peer,
    ) {
        let Some(user) = request
            .to_header()
            .ok()
            .and_then(|to| uri_of(to.value()))
            .and_then(|uri| user_of(&uri))
        else {
            self.reply_to(key, request, 400, Some("Invalid To URI"), &[]);
            return;
        };
        let Some(authorization) = header_value(&request.headers, "Authorization") else {
            self.challenge(key, request, peer.addr.ip(), false, false);
            return;
        };
        let config = self.config.clone();
        let password_of = |name: &str| config.account(name).and_then(|a| a.password.clone());
        match self.auth.verify(
            SystemTime::now(),
            peer.addr.ip(),
            "REGISTER",
            &authorization,
            &password_of,
        ) {
            Ok(v) if v.username == user => self.auth_failures.success(peer.addr.ip()),
            Ok(v) => {
                self.auth_failed(peer.addr, &user);
                warn!(auth_user = %v.username, aor = %user, "REGISTER for another user's AOR");
                self.reply_to(key, request, 403, None, &[]);
                return;
            }
            Err(e) if e.is_stale() => {
                self.challenge(key, request, peer.addr.ip(), true, false);
                return;
            }
            Err(e) if !e.counts_as_failure() => {
                // Not an answer to a challenge of ours for this address (foreign, forged or
                // malformed credentials): a fresh challenge; anyone can forge the address,
                // so nothing is counted against it.
                debug!(%user, source = %peer.addr, error = %e, "REGISTER credentials not for us; 401");
                self.challenge(key, request, peer.addr.ip(), false, false);
                return;
            }
            Err(e) => {
                self.auth_failed(peer.addr, &user);
                // Unknown users and wrong passwords get the same answer: no enumeration.
                info!(%user, source = %peer.addr, error = %e, "REGISTER authentication failed");
                self.reply_to(key, request, 403, None, &[]);
                return;
            }
        }
        match self.registrar.handle_register(now(), &user, request, peer) {
            RegisterOutcome::Ok { contacts } => {
                inc(&self.counters.registrations);
                let headers: Vec<Header> = contacts
                    .iter()
                    .map(|(uri, expires)| {
                        Header::Contact(format!("<{uri}>;expires={expires}").into())
                    })
                    .collect();
                info!(%user, bindings = contacts.len(), "registered");
                self.reply_to(key, request, 200, None, &headers);
            }
            RegisterOutcome::IntervalTooBrief { min_expires } => {
                let h = Header::MinExpires(min_expires.into());
                self.reply_to(key, request, 423, None, &[h]);
            }
            RegisterOutcome::BadRequest(reason) => {
                self.reply_to(key, request, 400, Some(&reason), &[])
            }
            RegisterOutcome::OutOfOrder => self.reply_to(key, request, 500, None, &[]),
            RegisterOutcome::TooManyBindings => {
                self.reply_to(key, request, 403, Some("Too Many Bindings"), &[])
            }
        }
    }
}
