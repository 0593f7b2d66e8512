//! Calls Siphon answers itself (echo, tone, prompt, fork, ring): the INVITE is routed,
//! authenticated and answered, and its media task started.

use std::time::{Duration, SystemTime};

use rsip::Header;
use rsip::prelude::*;
use siphon_sip::Peer;
use siphon_sip::dialog::{Dialog, DialogId, uri_of};
use siphon_sip::message::{self, ACCEPT, header_value, response_to};
use siphon_sip::sdp::{Codec, LocalSession};
use siphon_sip::transaction::TransactionKey;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{Action, RouteAuth};
use crate::control::{CallSummary, Command};
use crate::counters::{SETUP_BUCKETS, inc};
use crate::dialplan;
use crate::media::MediaParams;
use crate::media::leg::{self as media, LegSetup};

use super::auth::credentials_user;
use super::{Call, Endpoint, allow, call_meta, new_tag, now, parse_offer, user_of};

impl Endpoint {
    pub(super) async fn on_invite(
        &mut self,
        key: TransactionKey,
        request: rsip::Request,
        peer: Peer,
    ) {
        inc(&self.counters.calls_started);
        self.reply_to(&key, &request, 100, None, &[]);
        // Who calls, for routes limited to some callers: a trunk by its source address, else
        // the account the From names (checked against the credentials below).
        let trunk = self
            .config
            .trunk_for_ip(peer.addr.ip())
            .map(|a| a.username.get_ref().clone());
        let caller = trunk.clone().or_else(|| {
            request
                .from_header()
                .ok()
                .and_then(|f| uri_of(f.value()))
                .and_then(|u| user_of(&u))
        });
        let Some(route) =
            dialplan::lookup_for(&self.config, &request.uri, caller.as_deref()).cloned()
        else {
            info!(uri = %request.uri, "no route; 404");
            inc(&self.counters.calls_rejected);
            self.reply_to(&key, &request, 404, None, &[]);
            return;
        };
        if route.action == Action::Reject {
            let code = route.code.unwrap_or(403);
            info!(number = %route.number.get_ref(), code, "rejected by the dialplan");
            inc(&self.counters.calls_rejected);
            self.reply_to(&key, &request, code, None, &[]);
            return;
        }
        if route.auth == RouteAuth::Digest && !self.admit_call(&key, &request, peer) {
            inc(&self.counters.calls_rejected);
            return;
        }
        if !route.callers.is_empty() && trunk.is_none() {
            // The route was chosen for the account the From names: the credentials must
            // be that account's.
            let user =
                header_value(&request.headers, "Proxy-Authorization").map(|h| credentials_user(&h));
            if user != caller {
                info!(?user, ?caller, "credentials of another account; 403");
                inc(&self.counters.calls_rejected);
                self.reply_to(&key, &request, 403, None, &[]);
                return;
            }
        }
        if matches!(route.action, Action::User | Action::Trunk) {
            self.start_bridge(key, request, peer, route).await;
            return;
        }
        let offer = match parse_offer(&request) {
            Ok(offer) => offer,
            Err((code, reason)) => {
                inc(&self.counters.calls_rejected);
                let accept = Header::Accept(ACCEPT.into());
                self.reply_to(&key, &request, code, Some(&reason), &[accept]);
                return;
            }
        };
        let Some(rtp) = self.ports.allocate(self.config.sip.listen.ip()).await else {
            warn!("RTP port pool exhausted; 503");
            inc(&self.counters.calls_rejected);
            let retry = Header::Other("Retry-After".into(), "5".into());
            self.reply_to(&key, &request, 503, Some("No RTP Ports"), &[retry]);
            return;
        };
        let local_tag = new_tag();
        let mut session = LocalSession::new(
            rand::random::<u32>() as u64,
            self.config.advertised_address(),
        );
        let local = self.local_media(rtp.port);
        let (answer_sdp, params) = match offer {
            Some(offer) => match session.answer(&offer, &local) {
                Ok(n) => (n.answer.to_string(), MediaParams::from(&n)),
                Err(e) => {
                    inc(&self.counters.calls_rejected);
                    let reason = e.to_string();
                    self.reply_to(&key, &request, e.status_code(), Some(&reason), &[]);
                    return;
                }
            },
            None => {
                // No offer in the INVITE: we offer in the 200 and learn the peer's media from
                // the ACK (RFC 3264 §4, "late offer").
                let offer = session.offer(&local, siphon_sip::sdp::Direction::SendRecv);
                (
                    offer.to_string(),
                    MediaParams {
                        codec: Codec::Pcmu,
                        payload_type: 0,
                        telephone_event_pt: Some(101),
                        remote: None,
                        direction: siphon_sip::sdp::Direction::SendRecv,
                    },
                )
            }
        };
        let dialog = match Dialog::new_uas(&request, &local_tag) {
            Ok(d) => d,
            Err(e) => {
                inc(&self.counters.calls_rejected);
                let reason = e.to_string();
                self.reply_to(&key, &request, e.status(), Some(&reason), &[]);
                return;
            }
        };
        let id = dialog.id.clone();
        let span = tracing::Span::current();
        let rtp_port = rtp.port;
        let codec = params.codec;
        let media = media::spawn(LegSetup {
            rtp,
            action: route.action,
            prompt: self.prompts.get(route.number.get_ref()).cloned(),
            params,
            call: id.clone(),
            inactivity: Duration::from_secs(self.config.rtp.inactivity_timeout_s),
            commands: self.commands.clone(),
            counters: self.counters.clone(),
            span: span.clone(),
            forks: route.forks.clone(),
            meta: call_meta(&id, &request, codec),
        });
        info!(number = %route.number.get_ref(), action = ?route.action, rtp_port, ?codec, "call accepted");
        self.registry.insert(
            id.call_id.clone(),
            CallSummary {
                call_id: id.call_id.clone(),
                from: request
                    .from_header()
                    .map(|h| h.value().to_string())
                    .unwrap_or_default(),
                to: request
                    .to_header()
                    .map(|h| h.value().to_string())
                    .unwrap_or_default(),
                number: route.number.get_ref().clone(),
                codec: Some(codec),
                rtp_port,
                answered: false,
                started: Instant::now(),
                started_at: SystemTime::now(),
                setup_time: None,
                source: peer.addr,
                rtp: media.stats(),
            },
        );
        self.calls.insert(
            id.clone(),
            Call {
                dialog,
                peer,
                invite_key: key.clone(),
                invite: request,
                session,
                media,
                action: route.action,
                answer_sdp: Some(answer_sdp),
                span,
            },
        );
        self.by_invite.insert(key.clone(), id.clone());
        match (route.action, route.ring_ms) {
            (Action::Ring, _) => {
                self.ringing(&id);
                self.schedule(
                    Duration::from_secs(self.config.sip.ring_timeout_s),
                    Command::RingTimeout(key),
                );
            }
            (_, 0) => self.answer(&id),
            (_, ms) => {
                self.ringing(&id);
                self.schedule(Duration::from_millis(ms), Command::Answer(key));
            }
        }
    }

    pub(super) fn ringing(&mut self, id: &DialogId) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let mut resp = response_to(&call.invite, 180, None, Some(&id.local_tag));
        resp.headers.push(self.contact_header(call.peer.transport));
        message::finish(&mut resp.headers, b"");
        let key = call.invite_key.clone();
        if let Err(e) = self.layer.send_response(now(), &key, resp) {
            debug!(error = %e, "could not send 180");
        }
    }

    pub(super) fn answer(&mut self, id: &DialogId) {
        let contact = match self.calls.get(id) {
            Some(call) => self.contact_header(call.peer.transport),
            None => return,
        };
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some(sdp) = call.answer_sdp.take() else {
            return;
        };
        let mut resp = response_to(&call.invite, 200, None, Some(&id.local_tag));
        resp.headers.push(contact);
        resp.headers.push(allow());
        resp.headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut resp.headers, sdp.as_bytes());
        resp.body = sdp.into_bytes();
        let key = call.invite_key.clone();
        let _guard = call.span.enter();
        match self.layer.send_response(now(), &key, resp) {
            Ok(()) => {
                inc(&self.counters.calls_answered);
                call.media.answered();
                if let Some(mut s) = self.registry.get_mut(&id.call_id) {
                    s.answered = true;
                    let setup = s.started.elapsed();
                    s.setup_time = Some(setup);
                    self.counters.call_setup.observe(SETUP_BUCKETS, setup);
                }
                info!("answered");
            }
            Err(e) => warn!(error = %e, "could not send 200"),
        }
    }
}
