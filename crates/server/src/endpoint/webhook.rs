//! `action = "webhook"` routes: the call's attributes are POSTed to the application, whose
//! JSON answer (a [`CallAction`]) says what to do; the route's `fallback` when the
//! application is down, slow, or answers something that is not an action.
//!
//! The SIP core never waits on HTTP: the request runs in a task of its own and its outcome
//! comes back as `Command::WebhookAnswer`. Meanwhile the caller has its 100 Trying (and
//! 180 Ringing with `ringing = true`); a CANCEL forgets the call, and the answer that comes
//! later finds nothing to act on.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use siphon_sip::Peer;
use siphon_sip::message::{self, header_value, response_to};
use siphon_sip::transaction::TransactionKey;
use tracing::{info, warn};

use super::{Endpoint, call_id, new_tag, now};
use crate::config::{Action, CallAction, Route};
use crate::control::Command;
use crate::counters::inc;

/// Who is calling, as established before the webhook is asked.
pub(super) struct Caller {
    pub identity: String,
    /// The account that authenticated, or the trunk admitted by address.
    pub account: Option<String>,
    pub peer: Peer,
}

struct Waiting {
    request: rsip::Request,
    route: Route,
    caller: Caller,
}

/// Calls waiting for their application's answer, by INVITE transaction.
#[derive(Default)]
pub(super) struct Pending {
    calls: HashMap<TransactionKey, Waiting>,
}

impl Pending {
    /// The caller cancelled: the answer will find nothing.
    pub(super) fn cancel(&mut self, invite: &TransactionKey) {
        self.calls.remove(invite);
    }
}

/// What the application is told about the call.
fn call_attributes(request: &rsip::Request, route: &Route, caller: &Caller) -> Value {
    let mut headers = Map::new();
    for name in &route.pass_headers {
        if let Some(value) = header_value(&request.headers, name) {
            headers.insert(name.clone(), Value::String(value));
        }
    }
    json!({
        "call_id": call_id(request),
        "from": caller.identity,
        "to": header_value(&request.headers, "To").unwrap_or_default(),
        "request_uri": request.uri.to_string(),
        "number": crate::dialplan::dialled_number(&request.uri),
        "route": route.number.get_ref(),
        "source": caller.peer.addr.to_string(),
        "transport": caller.peer.transport.to_string(),
        "account": caller.account,
        "headers": headers,
        "direction": "inbound",
    })
}

impl Endpoint {
    /// Asks the route's application what to do with the call (see the module docs).
    pub(super) fn ask_webhook(
        &mut self,
        key: TransactionKey,
        request: rsip::Request,
        route: Route,
        caller: Caller,
    ) {
        let Some(url) = route.url.clone() else {
            // Config validation requires it.
            self.reply_to(&key, &request, 500, None, &[]);
            return;
        };
        if self.webhooks.calls.len() >= self.config.limits.webhooks_in_flight {
            warn!(url = %url, "too many webhooks in flight; fallback route");
            let span = tracing::Span::current();
            let tx = self.commands.clone();
            let invite = key.clone();
            self.webhooks.calls.insert(
                key,
                Waiting {
                    request,
                    route,
                    caller,
                },
            );
            // Through the command queue like any answer, so that one code path acts.
            tokio::spawn(async move {
                let _ = tx
                    .send(Command::WebhookAnswer {
                        invite,
                        action: Err("too many webhooks in flight".into()),
                    })
                    .await;
                drop(span);
            });
            return;
        }
        if route.ringing {
            let mut resp = response_to(&request, 180, None, Some(&new_tag()));
            resp.headers.push(self.contact_header(caller.peer));
            message::finish(&mut resp.headers, b"");
            let _ = self.layer.send_response(now(), &key, resp);
        }
        let body = Bytes::from(call_attributes(&request, &route, &caller).to_string());
        let mut headers = Vec::new();
        if let Some(secret) = self.config.events.as_ref().and_then(|e| e.secret.as_ref()) {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            headers.push((
                crate::events::sign::HEADER.to_string(),
                crate::events::sign::header_value(secret.as_bytes(), t, &body),
            ));
        }
        let connect = Duration::from_millis(route.connect_timeout_ms.max(1));
        let total = Duration::from_millis(route.timeout_ms.max(1));
        let config = self.config.clone();
        let tx = self.commands.clone();
        let invite = key.clone();
        info!(%url, "asking the application");
        self.webhooks.calls.insert(
            key,
            Waiting {
                request,
                route,
                caller,
            },
        );
        tokio::spawn(async move {
            let action =
                match crate::http_post::post_json(&url, &headers, body, connect, total).await {
                    Ok(a) if (200..300).contains(&a.status) => {
                        CallAction::from_json(&a.body, &config).map(Box::new)
                    }
                    Ok(a) => Err(format!("the application answered {}", a.status)),
                    Err(e) => Err(e),
                };
            let _ = tx.send(Command::WebhookAnswer { invite, action }).await;
        });
    }

    /// The application's answer (or why there is none): the call takes that route, or
    /// the fallback.
    pub(super) async fn on_webhook_answer(
        &mut self,
        invite: TransactionKey,
        action: Result<Box<CallAction>, String>,
    ) {
        let Some(waiting) = self.webhooks.calls.remove(&invite) else {
            return; // Cancelled meanwhile.
        };
        let span = tracing::info_span!("call", call_id = %call_id(&waiting.request));
        let _guard = span.enter();
        let number = waiting.route.number.get_ref().clone();
        let route = match action {
            Ok(action) => {
                inc(&self.counters.events.webhooks_answered);
                info!(action = ?action.action, "the application answered");
                Some(action.to_route(&number))
            }
            Err(reason) => {
                inc(&self.counters.events.webhooks_fallback);
                let fallback = waiting.route.fallback.as_deref().and_then(|f| {
                    self.config
                        .dialplan
                        .iter()
                        .find(|r| r.number.get_ref() == f && r.action != Action::Webhook)
                });
                warn!(%reason, fallback = ?fallback.map(|r| r.number.get_ref()), "webhook failed");
                fallback.cloned()
            }
        };
        let Waiting {
            request,
            route: webhook_route,
            caller,
        } = waiting;
        let Some(mut route) = route else {
            inc(&self.counters.calls_rejected);
            let retry = rsip::Header::Other(
                "Retry-After".into(),
                self.config.limits.retry_after_s.to_string(),
            );
            self.reply_to(
                &invite,
                &request,
                503,
                Some("Application Unavailable"),
                &[retry],
            );
            return;
        };
        if route.callback_url.is_none() {
            route.callback_url = webhook_route.callback_url.clone();
        }
        drop(_guard);
        self.serve_route(invite, request, caller.peer, route, caller.identity)
            .await;
    }
}
