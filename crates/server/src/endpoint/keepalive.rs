//! OPTIONS keepalives to phones registered over UDP (`registrar.keepalive_interval_s`).
//! A phone behind a home router is reachable only while the router keeps the mapping its
//! REGISTER opened, which many close after 30-60 s of silence; a ping every interval keeps
//! it open. A phone that stops answering (the OPTIONS transaction times out, 64·T1) has its
//! binding dropped, so calls to it stop ringing an address that leads nowhere. Any response
//! counts as an answer: a phone may well refuse OPTIONS with 405 or 404.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rsip::{Header, Headers, Method};
use siphon_sip::message;
use siphon_sip::registrar::Binding;
use siphon_sip::transaction::TransactionKey;
use siphon_sip::{Peer, Transport};
use tracing::{debug, info};

use super::{Endpoint, new_tag, now};

/// The keepalives in flight.
#[derive(Default)]
pub(super) struct Keepalives {
    pending: HashMap<TransactionKey, Pinged>,
}

/// The binding an OPTIONS went to.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Pinged {
    aor: String,
    contact: String,
    source: Peer,
}

impl Keepalives {
    /// The interval timer, when keepalives are configured.
    pub(super) fn timer(interval_s: u64) -> Option<tokio::time::Interval> {
        (interval_s > 0).then(|| {
            let period = Duration::from_secs(interval_s);
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        })
    }
}

/// Waits for the next keepalive round; never, when keepalives are off.
pub(super) async fn next_round(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Endpoint {
    /// One round: an OPTIONS to every UDP binding that has none in flight.
    pub(super) fn send_keepalives(&mut self) {
        let now_std = now();
        let all = self.registrar.store().all(now_std);
        let in_flight: HashSet<Pinged> = self.keepalives.pending.values().cloned().collect();
        for (aor, bindings) in all {
            for b in bindings
                .into_iter()
                .filter(|b| b.source.transport == Transport::Udp)
            {
                let pinged = Pinged {
                    aor: aor.clone(),
                    contact: b.contact.clone(),
                    source: b.source,
                };
                if in_flight.contains(&pinged) {
                    continue;
                }
                let Some(request) = self.keepalive_request(&b) else {
                    debug!(contact = %b.contact, "binding's contact is no SIP URI; no keepalive");
                    continue;
                };
                match self.layer.send_request(now_std, request, b.source) {
                    Ok(key) => {
                        self.keepalives.pending.insert(key, pinged);
                    }
                    Err(e) => debug!(error = %e, "could not send a keepalive"),
                }
            }
        }
    }

    fn keepalive_request(&self, binding: &Binding) -> Option<rsip::Request> {
        let uri = rsip::Uri::try_from(binding.contact.as_str()).ok()?;
        let mut headers = Headers::default();
        headers.push(Header::Via(self.via_value(binding.source).into()));
        headers.push(Header::MaxForwards("70".to_string().into()));
        headers.push(Header::From(
            format!(
                "<sip:siphon@{}>;tag={}",
                self.addr_for(binding.source),
                new_tag()
            )
            .into(),
        ));
        headers.push(Header::To(format!("<{}>", binding.contact).into()));
        headers.push(Header::CallId(format!("{}@siphon", new_tag()).into()));
        headers.push(Header::CSeq("1 OPTIONS".to_string().into()));
        message::finish(&mut headers, b"");
        Some(rsip::Request {
            method: Method::Options,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        })
    }

    /// A final response to a keepalive: the phone is there.
    pub(super) fn on_keepalive_response(&mut self, key: &TransactionKey, code: u16) {
        if code >= 200 {
            self.keepalives.pending.remove(key);
        }
    }

    /// A keepalive got no answer: the binding goes (a REGISTER since then to the same
    /// contact from another address or Call-ID made a new binding, which stays).
    pub(super) fn on_keepalive_timeout(&mut self, key: &TransactionKey) {
        let Some(pinged) = self.keepalives.pending.remove(key) else {
            return;
        };
        let store = self.registrar.store().clone();
        let before = store.bindings(&pinged.aor, now());
        let kept: Vec<Binding> = before
            .iter()
            .filter(|b| !(b.contact == pinged.contact && b.source == pinged.source))
            .cloned()
            .collect();
        if kept.len() < before.len() {
            info!(aor = %pinged.aor, contact = %pinged.contact, source = %pinged.source.addr,
                "a registered phone stopped answering keepalives; binding dropped");
            store.set_bindings(&pinged.aor, kept);
        }
    }
}
