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
use tracing::{info, warn};

use crate::config::{Action, RouteAuth};
use crate::control::{CallSummary, Command};
use crate::counters::inc;
use crate::dialplan;
use crate::media::MediaParams;
use crate::media::leg::{self as media, LegSetup};

use super::auth::{Admission, asserted_identity};
use super::{Call, Endpoint, call_meta, new_tag, now, parse_offer, user_of, without_tag};

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
        // the account the From names until authentication says which it is.
        let trunk = self
            .config
            .trunk_for_ip(peer.addr.ip())
            .map(|a| a.username.get_ref().clone());
        let from_user = request
            .from_header()
            .ok()
            .and_then(|f| uri_of(f.value()))
            .and_then(|u| user_of(&u));
        let claimed = trunk.clone().or_else(|| from_user.clone());
        let mut route =
            dialplan::lookup_for(&self.config, &request.uri, claimed.as_deref()).cloned();
        if let Some(r) = route.as_ref().filter(|r| r.action == Action::Reject) {
            let code = r.code.unwrap_or(403);
            info!(number = %r.number.get_ref(), code, "rejected by the dialplan");
            inc(&self.counters.calls_rejected);
            self.reply_to(&key, &request, code, None, &[]);
            return;
        }
        // Only numbers made public (`auth = "none"`) are routed before authentication: to
        // anyone else an account's number and a number that does not exist look the same
        // (407), so a scanner sweeping numbers learns nothing.
        let public = route.as_ref().is_some_and(|r| r.auth == RouteAuth::None);
        let mut identity = header_value(&request.headers, "From")
            .map(|f| without_tag(&f))
            .unwrap_or_default();
        // Who authenticated (an account, or the trunk by its address), for webhooks.
        let mut account = None;
        if !public {
            match self.admit_call(&key, &request, peer) {
                Admission::Refused => {
                    inc(&self.counters.calls_rejected);
                    return;
                }
                Admission::Trunk => {
                    account = trunk.clone();
                    // A trunk (a carrier, or the edge of a cluster that authenticated the
                    // phone) vouches for its caller (RFC 3325); from anyone else
                    // P-Asserted-Identity is ignored.
                    if let Some(asserted) = asserted_identity(&request) {
                        identity = asserted;
                    }
                }
                Admission::Account(name) => {
                    // Routes and the caller's identity follow the account that
                    // authenticated, not what the From claims.
                    if claimed.as_deref() != Some(name.as_str()) {
                        route =
                            dialplan::lookup_for(&self.config, &request.uri, Some(&name)).cloned();
                    }
                    identity = self.presented_identity(&request, from_user.as_deref(), &name);
                    account = Some(name);
                }
            }
        }
        let Some(route) = route else {
            info!(uri = %request.uri, "no route; 404");
            inc(&self.counters.calls_rejected);
            self.reply_to(&key, &request, 404, None, &[]);
            return;
        };
        if route.action == Action::Webhook {
            let caller = super::webhook::Caller {
                identity,
                account,
                peer,
            };
            self.ask_webhook(key, request, route, caller);
            return;
        }
        self.serve_route(key, request, peer, route, identity).await;
    }

    /// Acts on the route a call takes (the dialplan's, or what a webhook answered).
    pub(super) async fn serve_route(
        &mut self,
        key: TransactionKey,
        request: rsip::Request,
        peer: Peer,
        route: crate::config::Route,
        identity: String,
    ) {
        if route.action == Action::Reject {
            let code = route.code.unwrap_or(403);
            info!(number = %route.number.get_ref(), code, "rejected by the dialplan");
            inc(&self.counters.calls_rejected);
            self.reply_to(&key, &request, code, None, &[]);
            return;
        }
        if matches!(route.action, Action::User | Action::Trunk | Action::Uri) {
            self.start_bridge(key, request, peer, route, identity).await;
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
        let Some(rtp) = self
            .ports
            .allocate(self.config.rtp_bind_address(peer.addr.ip()))
            .await
        else {
            warn!("RTP port pool exhausted; 503");
            inc(&self.counters.calls_rejected);
            let retry = Header::Other("Retry-After".into(), "5".into());
            self.reply_to(&key, &request, 503, Some("No RTP Ports"), &[retry]);
            return;
        };
        let local_tag = new_tag();
        let mut session = LocalSession::new(
            rand::random::<u32>() as u64,
            self.advertised.for_peer(peer.addr.ip()),
        );
        let local = self.local_media(rtp.port, peer.addr.ip());
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
                        also_receive: Vec::new(),
                        ptime: None,
                        rtcp_mux: false,
                        remote_rtcp: None,
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
            // A webhook's `play` has no prompt of its own: the built-in one.
            prompt: self
                .prompts
                .get(route.number.get_ref())
                .cloned()
                .or_else(|| route.prompt().ok().flatten()),
            params,
            call: id.clone(),
            inactivity: Duration::from_secs(self.config.rtp.inactivity_timeout_s),
            commands: self.commands.clone(),
            counters: self.counters.clone(),
            span: span.clone(),
            forks: route.forks.clone(),
            meta: call_meta(&id, &request, &identity, codec),
        });
        info!(number = %route.number.get_ref(), action = ?route.action, rtp_port, ?codec, "call accepted");
        self.call_events_start(&id.call_id, route.callback_url.as_deref());
        self.call_listed(&id.call_id);
        self.registry.insert(
            id.call_id.clone(),
            CallSummary {
                call_id: id.call_id.clone(),
                from: identity.clone(),
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
                transfer: None,
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
        resp.headers.push(self.contact_header(call.peer));
        message::finish(&mut resp.headers, b"");
        let key = call.invite_key.clone();
        let reliable = super::reliable::wants_reliable(&call.invite);
        self.send_provisional(id, &key, reliable, resp);
        self.emit_call_event(&id.call_id, crate::events::EventKind::CallRinging, None);
    }

    pub(super) fn answer(&mut self, id: &DialogId) {
        let (contact, invite) = match self.calls.get(id) {
            Some(call) => (self.contact_header(call.peer), call.invite.clone()),
            None => return,
        };
        let timer_headers = self.session_timer_headers(id, &invite);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some(sdp) = call.answer_sdp.take() else {
            return;
        };
        let mut resp = response_to(&call.invite, 200, None, Some(&id.local_tag));
        resp.headers.push(contact);
        resp.headers.extend(super::extensions::capabilities());
        resp.headers.extend(timer_headers);
        resp.headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut resp.headers, sdp.as_bytes());
        resp.body = sdp.into_bytes();
        let key = call.invite_key.clone();
        let _guard = call.span.enter();
        // A 180 without SDP never holds the 2xx (RFC 3262 §3), so this always sends.
        let Some(resp) = self.reliable.before_final(id, resp) else {
            return;
        };
        match self.layer.send_response(now(), &key, resp) {
            Ok(()) => {
                inc(&self.counters.calls_answered);
                // call.answered goes out before the forks start (and emit fork.started).
                if let Some(events) = &self.events {
                    let data = super::call_events::summary_data(&self.registry, &id.call_id);
                    events.emit(&id.call_id, crate::events::EventKind::CallAnswered, data);
                }
                call.media.answered();
                if let Some(mut s) = self.registry.get_mut(&id.call_id) {
                    s.answered = true;
                    let setup = s.started.elapsed();
                    s.setup_time = Some(setup);
                    self.counters.call_setup.observe(setup);
                }
                info!("answered");
            }
            Err(e) => warn!(error = %e, "could not send 200"),
        }
    }
}
