//! The SIP core driver and transaction user (UAS): one task owns the transaction layer,
//! the dialogs and the registrar's view of requests. It feeds the sans-IO layer with
//! parsed messages and time, sends what the layer wants sent, and acts on its events.
//!
//! Signalling is not the media hot path: one task comfortably handles thousands of
//! messages per second, and owning all dialogs in one place removes every lock between
//! them. Each call's media runs in its own task (see `media`).

mod auth;
mod b2bua;
mod call_events;
mod commands;
mod extensions;
mod in_dialog;
mod info;
mod keepalive;
mod leg_attempts;
mod leg_targets;
mod node_load;
mod originate;
mod outbound_register;
mod registrar;
mod reliable;
mod replies;
mod served_refer;
mod session_timers;
mod transfer_leg;
mod uac_leg;
mod uas;
mod update;
mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rsip::prelude::*;
use rsip::{Header, Method};
use siphon_sip::auth::{Authenticator, DigestConfig};
use siphon_sip::dialog::{Dialog, DialogId};
use siphon_sip::message::{self, ACCEPT, header_value};
use siphon_sip::registrar::{LocationStore, MemoryLocationStore, Registrar};
use siphon_sip::sdp::{Codec, LocalSession, SessionDescription};
use siphon_sip::transaction::{Event, TransactionKey, TransactionLayer, shrink_if_sparse};
use siphon_sip::{Peer, Transport};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cdr::CdrWriter;
use crate::config::{Action, Advertised, Config, TrunkAddress, TrunkConfig};
use crate::control::{CallSummary, Command};
use crate::counters::{Counters, EndResult, inc};
use crate::limits::{AuthFailures, Blocklist, TokenBucket};
use crate::media::leg::MediaHandle;
use crate::prompt::Prompt;
use crate::rtp_ports::PortPool;
use crate::state_db::{AorBindings, PersistentLocationStore, StateDb};
use crate::transport::{Inbound, Outbound};
use crate::trunk_dns::TrunkTargets;
use commands::Drain;
use replies::allow;
use siphon_fork::CallMeta;

struct Call {
    dialog: Dialog,
    /// Where in-dialog requests go: the address the INVITE came from, which also works for
    /// phones behind NAT (their Contact is often a private address).
    peer: Peer,
    invite_key: TransactionKey,
    invite: rsip::Request,
    session: LocalSession,
    media: MediaHandle,
    action: Action,
    answer_sdp: Option<String>,
    span: tracing::Span,
}

pub struct Endpoint {
    config: Arc<Config>,
    /// Siphon's own address per address family (Contact, Via, SDP), found once at start.
    advertised: Advertised,
    /// Where SIP listens (UDP and TCP); its port is the one Contact and Via name.
    sip_addr: SocketAddr,
    /// Where SIP over TLS listens (Contact and Via of TLS dialogs name it).
    tls_addr: Option<SocketAddr>,
    layer: TransactionLayer,
    out: Outbound,
    auth: Authenticator,
    registrar: Registrar,
    ports: Arc<PortPool>,
    counters: Arc<Counters>,
    calls: HashMap<DialogId, Call>,
    /// Every call's INVITE transaction, for CANCEL, ring timers and ACK timeouts.
    by_invite: HashMap<TransactionKey, DialogId>,
    commands: mpsc::Sender<Command>,
    registry: Arc<DashMap<String, CallSummary>>,
    /// Prompts of `play` routes by number, loaded once.
    prompts: HashMap<String, Arc<Prompt>>,
    /// Sources ignored after failed authentication (read by the transports).
    blocklist: Blocklist,
    auth_failures: AuthFailures,
    invite_rate: TokenBucket,
    register_rate: TokenBucket,
    /// Set by `Command::Drain`.
    drain: Option<Drain>,
    /// Calls to `user` routes (B2BUA), kept apart from the calls Siphon answers itself.
    bridges: b2bua::Bridges,
    /// Where CDRs go, when configured.
    cdr: Option<CdrWriter>,
    /// Siphon's own registrations to trunks (`register = true`).
    registrations: outbound_register::Registrations,
    /// OPTIONS keepalives in flight to phones registered over UDP.
    keepalives: keepalive::Keepalives,
    /// The addresses of trunks given by host name, kept resolved (RFC 3263).
    trunk_targets: TrunkTargets,
    /// The TLS client setup of each trunk reached over TLS, by trunk name.
    trunk_tls: HashMap<String, Arc<rustls::ClientConfig>>,
    /// Session timers (RFC 4028) of the dialogs Siphon answered.
    session_timers: session_timers::SessionTimers,
    /// Siphon's reliable 18x to callers that asked for them (RFC 3262).
    reliable: reliable::Reliable,
    /// `[registrar] store`: the bindings' file, also journalling the calls that are up.
    state: Option<Arc<StateDb>>,
    /// Status events (`[events]`, per-call callback URLs); set by `Server` at start.
    events: Option<crate::events::Events>,
    /// Calls waiting for their webhook's answer (`action = "webhook"`).
    webhooks: webhook::Pending,
    /// Calls Siphon places itself (`POST /api/calls`) until answered.
    originating: originate::Outgoing,
    /// Transfer legs of served calls (`POST /api/calls/{id}/transfer`).
    transfers: transfer_leg::Transfers,
    /// Served calls whose caller asked for a transfer by REFER (their NOTIFYs).
    served_refers: served_refer::ServedRefers,
    /// The ACKs of the legs Siphon placed as UAC (originate, transfers), for 2xx resent.
    uac_acks: uac_leg::AckCache,
    /// The further INVITEs of those legs (other bindings, retries, failover).
    leg_attempts: leg_attempts::LegAttempts,
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        sip_addr: SocketAddr,
        out: Outbound,
        ports: Arc<PortPool>,
        counters: Arc<Counters>,
        commands: mpsc::Sender<Command>,
        registry: Arc<DashMap<String, CallSummary>>,
        blocklist: Blocklist,
        nonce_secret: [u8; 32],
        state: Option<(Arc<StateDb>, AorBindings)>,
    ) -> Endpoint {
        let auth = Authenticator::new(DigestConfig {
            algorithms: config.auth.algorithms.iter().map(|a| (*a).into()).collect(),
            nonce_lifetime: Duration::from_secs(config.auth.nonce_lifetime_s),
            secret: nonce_secret,
            ..DigestConfig::new(config.sip.realm.clone())
        });
        let r = &config.registrar;
        let mut state_db = None;
        let registrar = Registrar::new(
            siphon_sip::registrar::RegistrarConfig {
                min_expires: r.min_expires,
                max_expires: r.max_expires,
                default_expires: r.default_expires,
                max_bindings_per_aor: r.max_bindings_per_account,
            },
            match state {
                Some((db, loaded)) => {
                    state_db = Some(db.clone());
                    Arc::new(PersistentLocationStore::new(db, loaded)) as Arc<dyn LocationStore>
                }
                None => Arc::new(MemoryLocationStore::default()),
            },
        );
        let prompts = config
            .dialplan
            .iter()
            .filter_map(|route| match route.prompt() {
                Ok(p) => p.map(|p| (route.number.get_ref().clone(), p)),
                Err(e) => {
                    // Config validation already loaded it; the file changed since.
                    warn!(error = %e, "prompt unavailable");
                    None
                }
            })
            .collect();
        let cdr =
            config
                .cdr
                .as_ref()
                .and_then(|c| match CdrWriter::open(&c.path, counters.clone()) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::error!(error = %e, "CDRs disabled");
                        None
                    }
                });
        let l = &config.limits;
        let t0 = now();
        Endpoint {
            bridges: b2bua::Bridges::default(),
            registrations: outbound_register::Registrations::new(&config),
            keepalives: keepalive::Keepalives::default(),
            trunk_targets: TrunkTargets::spawn(&config),
            trunk_tls: HashMap::new(),
            session_timers: session_timers::SessionTimers::new(config.sip.session_min_se_s),
            reliable: reliable::Reliable::default(),
            cdr,
            blocklist,
            auth_failures: AuthFailures::new(
                l.auth_failures_to_block,
                Duration::from_secs(l.auth_failure_window_s),
                Duration::from_secs(l.auth_block_s),
            ),
            invite_rate: TokenBucket::new(l.calls_per_second, l.calls_per_second, t0),
            register_rate: TokenBucket::new(l.registers_per_second, l.registers_per_second, t0),
            prompts,
            layer: TransactionLayer::new(config.timers()),
            // Contact and Via must name an address peers can send to: never a wildcard.
            advertised: config.advertised_addresses(),
            sip_addr,
            tls_addr: None,
            config,
            out,
            auth,
            registrar,
            ports,
            counters,
            calls: HashMap::new(),
            by_invite: HashMap::new(),
            commands,
            registry,
            drain: None,
            state: state_db,
            events: None,
            webhooks: webhook::Pending::default(),
            originating: originate::Outgoing::default(),
            transfers: transfer_leg::Transfers::default(),
            served_refers: served_refer::ServedRefers::default(),
            uac_acks: uac_leg::AckCache::default(),
            leg_attempts: leg_attempts::LegAttempts::default(),
        }
    }

    /// The registrar's bindings, for the admin API and metrics (read-only use).
    /// SIP over TLS listens at `addr`.
    pub fn set_tls_addr(&mut self, addr: SocketAddr) {
        self.tls_addr = Some(addr);
    }

    /// Where status events go (`Server::run` starts them).
    pub fn set_events(&mut self, events: crate::events::Events) {
        self.events = Some(events);
    }

    /// The TLS client setups of the trunks reached over TLS (`Server::bind` loads them).
    pub fn set_trunk_tls(&mut self, trunk_tls: HashMap<String, Arc<rustls::ClientConfig>>) {
        self.trunk_tls = trunk_tls;
    }

    /// Where a new request to `trunk` goes, in the order to try (RFC 3263: by SRV
    /// priority and weight; empty while its name has not resolved). Over TCP/TLS each
    /// address may be connected to, with the trunk's host as the TLS name.
    fn trunk_peers(&self, trunk: &TrunkConfig) -> Vec<Peer> {
        let transport: Transport = trunk.transport.into();
        let host = match &trunk.address {
            TrunkAddress::Host { name, .. } => name.clone(),
            TrunkAddress::Socket(a) => a.ip().to_string(),
        };
        let addrs = self.trunk_targets.for_call(trunk);
        for addr in &addrs {
            if let Some(dial) =
                crate::dialer::dial_for(transport, &host, self.trunk_tls.get(&trunk.name))
            {
                self.out.allow_dial(*addr, dial);
            }
        }
        addrs.into_iter().map(|a| Peer::new(a, transport)).collect()
    }

    /// The address `peer` reaches Siphon at over its transport, in the peer's address
    /// family (a dual-stack Siphon names its IPv6 address to IPv6 peers): the listener's
    /// own address when it is a specific one and no address is configured to advertise,
    /// else the advertised one.
    fn addr_for(&self, peer: Peer) -> SocketAddr {
        let listen = match (peer.transport, self.tls_addr) {
            (Transport::Tls, Some(tls)) => tls,
            _ => self.sip_addr,
        };
        let ip = if listen.ip().is_unspecified() || self.config.rtp.advertised_address.is_some() {
            self.advertised.for_peer(peer.addr.ip())
        } else {
            listen.ip()
        };
        SocketAddr::new(ip, listen.port())
    }

    pub fn location_store(&self) -> Arc<dyn LocationStore> {
        self.registrar.store().clone()
    }

    /// What the metrics show of the tables (`siphon_table_entries`).
    fn publish_table_sizes(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.counters.tables;
        let (sources, accounts) = self.auth_failures.tracked();
        t.transactions.store(self.layer.len() as u64, Relaxed);
        t.dialogs.store(self.calls.len() as u64, Relaxed);
        t.invites.store(self.by_invite.len() as u64, Relaxed);
        t.bridges.store(self.bridges.entries() as u64, Relaxed);
        t.nonces
            .store(self.auth.outstanding_nonces() as u64, Relaxed);
        t.auth_failure_sources.store(sources as u64, Relaxed);
        t.auth_failure_accounts.store(accounts as u64, Relaxed);
        t.blocked_sources
            .store(self.blocklist.len() as u64, Relaxed);
    }

    /// A call entered the call table (`registry`): journalled, so that a crash before
    /// [`Self::call_unlisted`] counts it as cut off at the next start.
    fn call_listed(&self, call_id: &str) {
        if let Some(db) = &self.state {
            db.call_started(call_id);
        }
    }

    fn call_unlisted(&self, call_id: &str) {
        if let Some(db) = &self.state {
            db.call_ended(call_id);
        }
    }

    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: broadcast::Receiver<()>,
    ) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(10));
        let mut keepalives =
            keepalive::Keepalives::timer(self.config.registrar.keepalive_interval_s);
        // Session timers run in seconds (RFC 4028 intervals are 90 s and more).
        let mut session_clock = tokio::time::interval(Duration::from_secs(1));
        self.start_registrations();
        self.flush().await;
        loop {
            let deadline = self.layer.poll_timeout().map(Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let drain_deadline = self
                .drain
                .as_ref()
                .filter(|_| !self.calls.is_empty() || !self.bridges.is_empty())
                .map(|d| d.deadline);
            let drain_timer = async {
                match drain_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(msg) = inbound.recv() => self.handle_inbound(msg).await,
                Some(cmd) = commands.recv() => match cmd {
                    Command::WebhookAnswer { invite, action } => {
                        self.on_webhook_answer(invite, action).await
                    }
                    Command::Originate { request, done } => {
                        self.on_originate_command(*request, done).await
                    }
                    Command::Transfer {
                        call_id,
                        to,
                        from,
                        done,
                    } => {
                        self.on_transfer_command(call_id, to, from, done).await
                    }
                    Command::ServiceTransfer { call_id, to } => {
                        self.on_service_transfer(call_id, to).await
                    }
                    cmd => self.handle_command(cmd),
                },
                () = timer => self.layer.handle_timeout(now()),
                () = keepalive::next_round(&mut keepalives) => self.send_keepalives(),
                _ = session_clock.tick() => self.check_session_timers(),
                _ = housekeeping.tick() => {
                    let now = now();
                    self.auth.purge(std::time::SystemTime::now());
                    self.auth_failures.purge(now);
                    self.blocklist.purge(now);
                    // No response matches an INVITE after 64·T1 (Timer B / RFC 6026 M).
                    let keep = self.config.timers().t1 * 64;
                    self.bridges.purge(Instant::now(), keep);
                    let expired = self.registrar.purge_expired(now);
                    if expired > 0 {
                        self.counters
                            .registrations_expired
                            .fetch_add(expired as u64, std::sync::atomic::Ordering::Relaxed);
                        info!(expired, "registrations expired");
                    }
                    self.layer.shrink_tables();
                    shrink_if_sparse(&mut self.calls);
                    shrink_if_sparse(&mut self.by_invite);
                    self.bridges.shrink_tables();
                    self.publish_table_sizes();
                }
                () = drain_timer => {
                    warn!(calls = self.calls.len(), "drain timeout; hanging up the calls left");
                    if let Some(d) = self.drain.as_mut() {
                        d.hung_up = self.calls.len() + self.bridges.len();
                    }
                    self.hang_up_all(EndResult::DrainTimeout);
                }
                _ = shutdown.recv() => {
                    self.hang_up_all(EndResult::Shutdown);
                    self.flush().await;
                    return;
                }
            }
            self.flush().await;
            self.check_drained();
        }
    }

    /// Drains the layer: events to the TU, datagrams to the transports.
    async fn flush(&mut self) {
        loop {
            while let Some(t) = self.layer.poll_transmit() {
                self.out.send(t.peer, t.bytes);
            }
            let Some(event) = self.layer.poll_event() else {
                break;
            };
            self.handle_event(event).await;
        }
        self.counters
            .transactions(self.layer.len(), self.layer.stats());
    }

    async fn handle_inbound(&mut self, inbound: Inbound) {
        let now = now();
        match inbound.message {
            rsip::SipMessage::Request(request) => {
                inc(&self.counters.requests_received);
                // The packet's real source, with or without rport in the Via: responses,
                // registrations and call peers all follow the flow the request came on
                // (RFC 5626 spirit; Kamailio's force_rport). A phone behind a NAT that does
                // not ask for rport puts its private address in the Via, which nothing
                // outside its LAN can reach; the NAT's mapping is the source.
                let peer = Peer::new(inbound.source, inbound.transport);
                if let Err(e) = self.layer.handle_request(now, request, peer) {
                    debug!(error = %e, "transaction layer refused request");
                }
            }
            rsip::SipMessage::Response(response) => {
                inc(&self.counters.responses_received);
                let peer = Peer::new(inbound.source, inbound.transport);
                let before = self.layer.stats().unmatched_responses;
                if let Err(e) = self.layer.handle_response(now, response, peer) {
                    debug!(error = %e, "transaction layer refused response");
                }
                if self.layer.stats().unmatched_responses > before {
                    inc(&self.counters.unsolicited_responses);
                }
            }
        }
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Request { key, request, peer } => self.on_request(key, request, peer).await,
            Event::AckReceived { request, .. } | Event::StrayAck { request, .. } => {
                if !self.bridge_ack(&request) {
                    self.on_ack(&request)
                }
            }
            Event::Response { key, response } => match key.method() {
                Method::Invite if self.ack_again(&key, response.status_code.code()) => {}
                Method::Invite if self.on_abandoned_attempt(&key, &response) => {}
                Method::Invite if self.on_originate_response(&key, &response) => {}
                Method::Invite if self.on_transfer_response(&key, &response) => {
                    self.served_refer_sync()
                }
                Method::Invite if self.on_refer_leg_response(&key, &response) => {}
                Method::Invite => self.on_branch_response(key, response),
                Method::Register => self.on_register_response(&key, &response),
                Method::Options => self.on_keepalive_response(&key, response.status_code.code()),
                Method::Update if self.on_update_relay_response(&key, &response) => {}
                Method::Update => {
                    let code = response.status_code.code();
                    self.on_refresh_response(&key, code, Some(&response.headers))
                }
                // Responses to our BYE and CANCEL need nothing.
                _ => {}
            },
            Event::Terminated { .. } => {}
            Event::Timeout { key } => {
                debug!(%key, "client transaction timed out");
                match key.method() {
                    Method::Invite if self.on_abandoned_timeout(&key) => {}
                    Method::Invite if self.on_originate_timeout(&key) => {}
                    Method::Invite if self.on_transfer_timeout(&key) => self.served_refer_sync(),
                    Method::Invite if self.on_refer_leg_timeout(&key) => {}
                    Method::Invite => self.on_branch_timeout(&key),
                    Method::Register => self.on_register_timeout(&key),
                    Method::Options => self.on_keepalive_timeout(&key),
                    Method::Update => self.on_refresh_response(&key, 408, None),
                    _ => {}
                }
            }
            Event::AckTimeout { key } => {
                if self.bridge_ack_timeout(&key) {
                    return;
                }
                if let Some(id) = self.by_invite.get(&key).cloned() {
                    warn!(call_id = %id.call_id, "no ACK for our final response; ending call");
                    self.hang_up_as(&id, EndResult::NoAck);
                }
            }
        }
    }

    async fn on_request(&mut self, key: TransactionKey, request: rsip::Request, peer: Peer) {
        let in_dialog = request
            .to_header()
            .ok()
            .and_then(|to| message::header_param(to.value(), "tag").map(|_| ()))
            .is_some();
        // Only a dialog Siphon holds exempts a request from the limits: a To tag alone is
        // something any flood can add.
        let exempt = match request.method {
            Method::Ack => true,
            Method::Cancel => self.layer.find_invite_for_cancel(&request).is_some(),
            _ => {
                in_dialog
                    && DialogId::for_incoming(&request).is_some_and(|id| {
                        self.calls.contains_key(&id)
                            || self.bridges.holds_dialog(&id)
                            || self.holds_agent_dialog(&id)
                    })
            }
        };
        if let Some(reason) = self.over_limit(&request, exempt) {
            inc(&self.counters.overload_rejections);
            debug!(method = %request.method, reason, "over a limit; 503");
            let retry = Header::Other(
                "Retry-After".into(),
                self.config.limits.retry_after_s.to_string(),
            );
            self.reply_to(&key, &request, 503, Some(reason), &[retry]);
            return;
        }
        if self.refuse_unsupported(&key, &request) || self.refuse_session_interval(&key, &request) {
            return;
        }
        if request.method == Method::PRack {
            self.on_prack(&key, &request);
            return;
        }
        if self.bridge_request(&key, &request).await {
            return;
        }
        match request.method {
            Method::Register => self.on_register(&key, &request, peer),
            Method::Options => self.on_options(&key, &request),
            Method::Invite if in_dialog => self.on_reinvite(&key, &request),
            Method::Invite if self.drain.is_some() || self.counters.is_draining() => {
                inc(&self.counters.calls_started);
                let retry = Header::Other("Retry-After".into(), "30".into());
                self.reply_to(&key, &request, 503, Some("Draining"), &[retry]);
            }
            // RFC 3891: an INVITE naming a dialog to replace is answered by what it names.
            Method::Invite if self.refuse_invite_replaces(&key, &request) => {}
            Method::Invite => {
                let span = info_span!("call", call_id = %call_id(&request));
                self.on_invite(key, request, peer).instrument(span).await
            }
            Method::Bye => self.on_bye(&key, &request),
            Method::Cancel => self.on_cancel(&key, &request),
            Method::Info => self.on_info(&key, &request),
            Method::Update => self.on_update(&key, &request),
            Method::Refer => self.on_refer(&key, &request, None).await,
            _ => self.reply_to(&key, &request, 405, None, &[allow()]),
        }
    }

    /// The limit a new request would break, if any. Requests in a dialog Siphon holds
    /// (BYE, re-INVITE), ACKs and CANCELs of pending INVITEs are never refused (`exempt`):
    /// they keep established calls working under load.
    fn over_limit(&mut self, request: &rsip::Request, exempt: bool) -> Option<&'static str> {
        if exempt {
            return None;
        }
        let limits = &self.config.limits;
        if self.layer.len() > limits.max_transactions {
            return Some("Too Many Transactions");
        }
        let now = now();
        match request.method {
            Method::Invite
                if self.calls.len() + self.bridges.len() + self.originating.len()
                    >= limits.max_calls =>
            {
                Some("Too Many Calls")
            }
            Method::Invite if !self.invite_rate.allow(now) => Some("Call Rate Exceeded"),
            Method::Register if !self.register_rate.allow(now) => {
                Some("Registration Rate Exceeded")
            }
            _ => None,
        }
    }

    fn on_options(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let headers = [
            allow(),
            Header::Accept(ACCEPT.into()),
            extensions::supported(),
        ];
        // A load balancer's probe learns whether this node takes calls (node_load.rs).
        let draining = self.drain.is_some() || self.counters.is_draining();
        let calls = self.calls.len() + self.bridges.len();
        let state = node_load::NodeState::of(draining, calls, self.config.limits.max_calls);
        let (code, reason) = state.status();
        let mut headers = headers.to_vec();
        headers.extend(state.headers(self.config.limits.retry_after_s));
        self.reply_to(key, request, code, reason, &headers);
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn call_id(request: &rsip::Request) -> String {
    request
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default()
}

/// The user part of a SIP URI string.
fn user_of(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next()?;
    (!user.is_empty()).then(|| user.to_string())
}

/// The SDP offer of an INVITE: `Ok(None)` when there is no body (late offer); otherwise
/// the status and reason for a body that cannot be used (415 wrong type, 400 malformed).
fn parse_offer(request: &rsip::Request) -> Result<Option<SessionDescription>, (u16, String)> {
    if request.body.is_empty() {
        return Ok(None);
    }
    let content_type = header_value(&request.headers, "Content-Type").unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/sdp") {
        return Err((415, "Unsupported Media Type".into()));
    }
    let text = std::str::from_utf8(&request.body)
        .map_err(|_| (400, "Bad Request (SDP is not UTF-8)".to_string()))?;
    SessionDescription::parse(text)
        .map(Some)
        .map_err(|e| (e.status_code(), format!("Bad Request (SDP: {e})")))
}

/// Who is calling whom, for the forks' start messages.
fn call_meta(id: &DialogId, request: &rsip::Request, identity: &str, codec: Codec) -> CallMeta {
    CallMeta {
        call_id: id.call_id.clone(),
        from: identity.to_string(),
        to: header_value(&request.headers, "To").unwrap_or_default(),
        codec: codec.name().to_string(),
        account_sid: None,
    }
}

/// A From/To value without its tag parameter (`<sip:a@h>;tag=1;x=y` → `<sip:a@h>;x=y`).
fn without_tag(value: &str) -> String {
    // Header parameters start after the URI: after `>` in name-addr form, else after the
    // first `;` (an addr-spec cannot carry URI parameters, RFC 3261 §20.10).
    let split = match value.find('>') {
        Some(i) => i + 1,
        None => value.find(';').unwrap_or(value.len()),
    };
    let (head, params) = value.split_at(split);
    let kept: String = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("tag="))
        .map(|p| format!(";{p}"))
        .collect();
    format!("{}{kept}", head.trim())
}
