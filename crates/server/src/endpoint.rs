//! The SIP core driver and transaction user (UAS): one task owns the transaction layer,
//! the dialogs and the registrar's view of requests. It feeds the sans-IO layer with
//! parsed messages and time, sends what the layer wants sent, and acts on its events.
//!
//! Signalling is not the media hot path: one task comfortably handles thousands of
//! messages per second, and owning all dialogs in one place removes every lock between
//! them. Each call's media runs in its own task (see `media`).

mod b2bua;
mod outbound_register;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use rsip::prelude::*;
use rsip::{Header, Method};
use siphon_fork::ForkConfig;
use siphon_sip::auth::{Authenticator, DigestConfig};
use siphon_sip::dialog::{Dialog, DialogId, DialogState, uri_of};
use siphon_sip::message::{self, ACCEPT, ALLOW, header_value, response_to};
use siphon_sip::registrar::{LocationStore, MemoryLocationStore, RegisterOutcome, Registrar};
use siphon_sip::sdp::{Codec, LocalMedia, LocalSession, SessionDescription};
use siphon_sip::transaction::{Event, TransactionKey, TransactionLayer, new_branch};
use siphon_sip::{Peer, Transport};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cdr::{CdrFork, CdrLeg, CdrRecord, CdrWriter, Party};
use crate::config::{Action, Config, RouteAuth};
use crate::counters::{Counters, EndResult, LegStats, inc};
use crate::dialplan;
use crate::limits::{AuthFailures, Blocklist, TokenBucket, Verdict};
use crate::media::{self, LegSetup, MediaHandle, MediaParams, Prompt};
use crate::rtp_ports::PortPool;
use crate::transport::{Inbound, Outbound};
use siphon_fork::CallMeta;

/// Things other tasks ask the SIP core to do.
#[derive(Debug)]
pub enum Command {
    /// A ringing INVITE reached its answer time.
    Answer(TransactionKey),
    /// A ringing INVITE was never answered.
    RingTimeout(TransactionKey),
    /// A bridged call's phones rang for the route's ring timeout (the caller's dialog).
    BridgeNoAnswer(DialogId),
    /// Time to (re-)register to the trunk with this index in the configuration.
    RegisterTrunk(usize),
    /// The call's media ended on its own (RTP inactivity): hang up with BYE.
    MediaEnded { call: DialogId, reason: String },
    /// Admin API: hang up the call with this Call-ID (BYE, or 480 while it rings). `done`
    /// says whether there was such a call.
    HangUp {
        call_id: String,
        done: oneshot::Sender<bool>,
    },
    /// Admin API: start a fork named `fork_id` on a live call's media. `done` says whether
    /// the call was found.
    AttachFork {
        call_id: String,
        fork_id: String,
        config: Box<ForkConfig>,
        done: oneshot::Sender<bool>,
    },
    /// Admin API: stop a call's fork. `done` says whether the call was found.
    DetachFork {
        call_id: String,
        fork_id: String,
        done: oneshot::Sender<bool>,
    },
    /// Shutdown: refuse new calls (503), let the current ones go on for `timeout`, then BYE
    /// them. `done` fires once no call is left.
    Drain {
        timeout: Duration,
        done: oneshot::Sender<()>,
    },
}

/// What the admin API and tests can see of a call.
#[derive(Debug, Clone)]
pub struct CallSummary {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub number: String,
    pub codec: Option<Codec>,
    pub rtp_port: u16,
    pub answered: bool,
    /// When the INVITE was taken (monotonic, for durations) and the wall clock then.
    pub started: Instant,
    pub started_at: SystemTime,
    /// INVITE to 200 OK, once answered.
    pub setup_time: Option<Duration>,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// The leg's RTP counters, kept by its media task.
    pub rtp: Arc<LegStats>,
}

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
}

struct Drain {
    deadline: Instant,
    done: Option<oneshot::Sender<()>>,
    /// Calls up when the drain began, and how many of them the timeout hung up: the
    /// closing log line says what the drain did.
    calls_at_start: usize,
    hung_up: usize,
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
    ) -> Endpoint {
        let auth = Authenticator::new(DigestConfig {
            algorithms: config.auth.algorithms.iter().map(|a| (*a).into()).collect(),
            nonce_lifetime: Duration::from_secs(config.auth.nonce_lifetime_s),
            ..DigestConfig::new(config.sip.realm.clone())
        });
        let r = &config.registrar;
        let registrar = Registrar::new(
            siphon_sip::registrar::RegistrarConfig {
                min_expires: r.min_expires,
                max_expires: r.max_expires,
                default_expires: r.default_expires,
                max_bindings_per_aor: r.max_bindings_per_account,
            },
            Arc::new(MemoryLocationStore::default()),
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
        let cdr = config
            .cdr
            .as_ref()
            .and_then(|c| match CdrWriter::open(&c.path) {
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
            sip_addr: if sip_addr.ip().is_unspecified() || config.rtp.advertised_address.is_some() {
                SocketAddr::new(config.advertised_address(), sip_addr.port())
            } else {
                sip_addr
            },
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
        }
    }

    /// The registrar's bindings, for the admin API and metrics (read-only use).
    /// SIP over TLS listens at `addr`; a wildcard is advertised as `sip_addr`'s host.
    pub fn set_tls_addr(&mut self, addr: SocketAddr) {
        let ip = if addr.ip().is_unspecified() {
            self.sip_addr.ip()
        } else {
            addr.ip()
        };
        self.tls_addr = Some(SocketAddr::new(ip, addr.port()));
    }

    /// The address peers reach Siphon at over `transport`.
    fn addr_for(&self, transport: Transport) -> SocketAddr {
        match (transport, self.tls_addr) {
            (Transport::Tls, Some(tls)) => tls,
            _ => self.sip_addr,
        }
    }

    pub fn location_store(&self) -> Arc<dyn LocationStore> {
        self.registrar.store().clone()
    }

    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: broadcast::Receiver<()>,
    ) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(10));
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
                Some(cmd) = commands.recv() => self.handle_command(cmd),
                () = timer => self.layer.handle_timeout(now()),
                _ = housekeeping.tick() => {
                    let now = now();
                    self.auth.purge(now);
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
                }
                () = drain_timer => {
                    warn!(calls = self.calls.len(), "drain timeout; hanging up the calls left");
                    if let Some(d) = self.drain.as_mut() {
                        d.hung_up = self.calls.len() + self.bridges.len();
                    }
                    self.hang_up_all("shutdown", EndResult::DrainTimeout);
                }
                _ = shutdown.recv() => {
                    self.hang_up_all("shutdown", EndResult::Shutdown);
                    self.flush().await;
                    return;
                }
            }
            self.flush().await;
            self.check_drained();
        }
    }

    fn check_drained(&mut self) {
        if !self.calls.is_empty() || !self.bridges.is_empty() {
            return;
        }
        if let Some(d) = self.drain.as_mut()
            && let Some(done) = d.done.take()
        {
            info!(
                calls = d.calls_at_start,
                ended_by_their_parties = d.calls_at_start.saturating_sub(d.hung_up),
                hung_up_at_timeout = d.hung_up,
                "drained: no call left"
            );
            let _ = done.send(());
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
                let peer = match inbound.transport {
                    Transport::Udp => {
                        let via = request
                            .via_header()
                            .map(|v| v.value().to_string())
                            .unwrap_or_default();
                        Peer::new(
                            message::response_address(&via, inbound.source),
                            Transport::Udp,
                        )
                    }
                    t => Peer::new(inbound.source, t),
                };
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
                Method::Invite => self.on_branch_response(key, response),
                Method::Register => self.on_register_response(&key, &response),
                // Responses to our BYE and CANCEL need nothing.
                _ => {}
            },
            Event::Terminated { .. } => {}
            Event::Timeout { key } => {
                debug!(%key, "client transaction timed out");
                match key.method() {
                    Method::Invite => self.on_branch_timeout(&key),
                    Method::Register => self.on_register_timeout(&key),
                    _ => {}
                }
            }
            Event::AckTimeout { key } => {
                if self.bridge_ack_timeout(&key) {
                    return;
                }
                if let Some(id) = self.by_invite.get(&key).cloned() {
                    warn!(call_id = %id.call_id, "no ACK for our final response; ending call");
                    self.hang_up_as(&id, "no ACK", EndResult::NoAck);
                }
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Answer(key) => {
                if let Some(id) = self.by_invite.get(&key).cloned() {
                    self.answer(&id);
                }
            }
            Command::RingTimeout(key) => {
                if let Some(id) = self.by_invite.get(&key).cloned()
                    && self.calls.get(&id).is_some_and(|c| c.answer_sdp.is_none())
                {
                    info!(call_id = %id.call_id, "no answer; 480");
                    self.reply(&key, 480, None, &[]);
                    self.end_call_as(&id, EndResult::NoAnswer);
                }
            }
            Command::BridgeNoAnswer(id) => self.bridge_no_answer(&id),
            Command::RegisterTrunk(index) => self.register_trunk(index, None),
            Command::MediaEnded { call, reason } => {
                info!(call_id = %call.call_id, %reason, "media ended; sending BYE");
                let result = if reason.starts_with("no RTP") {
                    EndResult::RtpTimeout
                } else {
                    EndResult::MediaEnded
                };
                self.hang_up_as(&call, &reason, result);
            }
            Command::HangUp { call_id, done } => {
                let id = self.find_call(&call_id);
                if let Some(id) = &id {
                    info!(%call_id, "hung up through the admin API");
                    self.hang_up_as(id, "admin", EndResult::Admin);
                }
                let _ = done.send(id.is_some());
            }
            Command::AttachFork {
                call_id,
                fork_id,
                config,
                done,
            } => {
                let ok = match self.find_call(&call_id) {
                    Some(id) => match self.calls.get(&id) {
                        Some(c) => c.media.attach_fork(fork_id, *config),
                        None => self.bridges.attach_fork(&id, fork_id, *config),
                    },
                    None => false,
                };
                let _ = done.send(ok);
            }
            Command::DetachFork {
                call_id,
                fork_id,
                done,
            } => {
                let ok = match self.find_call(&call_id) {
                    Some(id) => match self.calls.get(&id) {
                        Some(c) => c.media.detach_fork(fork_id),
                        None => self.bridges.detach_fork(&id, fork_id),
                    },
                    None => false,
                };
                let _ = done.send(ok);
            }
            Command::Drain { timeout, done } => {
                info!(
                    calls = self.calls.len(),
                    ?timeout,
                    "draining: new calls get 503"
                );
                self.counters
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.drain = Some(Drain {
                    deadline: Instant::now() + timeout,
                    done: Some(done),
                    calls_at_start: self.calls.len() + self.bridges.len(),
                    hung_up: 0,
                });
            }
        }
    }

    fn find_call(&self, call_id: &str) -> Option<DialogId> {
        self.calls
            .keys()
            .find(|id| id.call_id == call_id)
            .cloned()
            .or_else(|| self.bridges.find(call_id))
    }

    async fn on_request(&mut self, key: TransactionKey, request: rsip::Request, peer: Peer) {
        let in_dialog = request
            .to_header()
            .ok()
            .and_then(|to| message::header_param(to.value(), "tag").map(|_| ()))
            .is_some();
        if let Some(reason) = self.over_limit(&request, in_dialog) {
            inc(&self.counters.overload_rejections);
            debug!(method = %request.method, reason, "over a limit; 503");
            let retry = Header::Other(
                "Retry-After".into(),
                self.config.limits.retry_after_s.to_string(),
            );
            self.reply_to(&key, &request, 503, Some(reason), &[retry]);
            return;
        }
        if self.bridge_request(&key, &request) {
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
            Method::Invite => {
                let span = info_span!("call", call_id = %call_id(&request));
                self.on_invite(key, request, peer).instrument(span).await
            }
            Method::Bye => self.on_bye(&key, &request),
            Method::Cancel => self.on_cancel(&key, &request),
            Method::Info => self.on_info(&key, &request),
            _ => self.reply_to(&key, &request, 405, None, &[allow()]),
        }
    }

    /// The limit a new request would break, if any. In-dialog requests (BYE, re-INVITE)
    /// are never refused: they keep established calls working under load.
    fn over_limit(&mut self, request: &rsip::Request, in_dialog: bool) -> Option<&'static str> {
        if in_dialog || matches!(request.method, Method::Ack | Method::Cancel | Method::Bye) {
            return None;
        }
        let limits = &self.config.limits;
        if self.layer.len() > limits.max_transactions {
            return Some("Too Many Transactions");
        }
        let now = now();
        match request.method {
            Method::Invite if self.calls.len() + self.bridges.len() >= limits.max_calls => {
                Some("Too Many Calls")
            }
            Method::Invite if !self.invite_rate.allow(now) => Some("Call Rate Exceeded"),
            Method::Register if !self.register_rate.allow(now) => {
                Some("Registration Rate Exceeded")
            }
            _ => None,
        }
    }

    /// Counts a failed authentication; blocks the source past the threshold.
    fn auth_failed(&mut self, source: SocketAddr, account: &str) {
        inc(&self.counters.auth_failures);
        match self.auth_failures.record(source.ip(), account, now()) {
            Verdict::Block {
                until,
                source_failures,
            } => {
                inc(&self.counters.auth_blocks);
                warn!(
                    source = %source.ip(),
                    %account,
                    failures = source_failures,
                    block_s = self.config.limits.auth_block_s,
                    "too many failed authentications; blocking the source"
                );
                self.blocklist.block(source.ip(), until);
            }
            Verdict::Counted {
                account_failures, ..
            } => {
                if account_failures > 0 && account_failures % 50 == 0 {
                    warn!(%account, account_failures, "many failed authentications for one account");
                }
            }
        }
    }

    fn on_options(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let headers = [
            allow(),
            Header::Accept(ACCEPT.into()),
            Header::Other("Supported".into(), "".into()),
        ];
        self.reply_to(key, request, 200, None, &headers);
    }

    fn on_register(&mut self, key: &TransactionKey, request: &rsip::Request, peer: Peer) {
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
            self.challenge(key, request, false, false);
            return;
        };
        let config = self.config.clone();
        let password_of = |name: &str| config.account(name).and_then(|a| a.password.clone());
        match self
            .auth
            .verify(now(), "REGISTER", &authorization, &password_of)
        {
            Ok(v) if v.username == user => self.auth_failures.success(peer.addr.ip()),
            Ok(v) => {
                self.auth_failed(peer.addr, &user);
                warn!(auth_user = %v.username, aor = %user, "REGISTER for another user's AOR");
                self.reply_to(key, request, 403, None, &[]);
                return;
            }
            Err(e) if e.is_stale() => {
                self.challenge(key, request, true, false);
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

    /// 401 (registrar) or 407 (calls) with one challenge per configured algorithm.
    fn challenge(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        stale: bool,
        proxy: bool,
    ) {
        inc(&self.counters.auth_challenges);
        let headers: Vec<Header> = self
            .auth
            .challenge(now(), stale)
            .into_iter()
            .map(|c| {
                if proxy {
                    Header::ProxyAuthenticate(c.into())
                } else {
                    Header::WwwAuthenticate(c.into())
                }
            })
            .collect();
        let code = if proxy { 407 } else { 401 };
        self.reply_to(key, request, code, None, &headers);
    }

    /// Checks a call's caller against the route's policy. `false` means a response was sent.
    fn admit_call(&mut self, key: &TransactionKey, request: &rsip::Request, peer: Peer) -> bool {
        if self.config.trunk_for_ip(peer.addr.ip()).is_some() {
            return true;
        }
        let Some(authorization) = header_value(&request.headers, "Proxy-Authorization") else {
            self.challenge(key, request, false, true);
            return false;
        };
        let config = self.config.clone();
        let password_of = |name: &str| config.account(name).and_then(|a| a.password.clone());
        match self.auth.verify(
            now(),
            request.method.to_string().as_str(),
            &authorization,
            &password_of,
        ) {
            Ok(_) => {
                self.auth_failures.success(peer.addr.ip());
                true
            }
            Err(e) if e.is_stale() => {
                self.challenge(key, request, true, true);
                false
            }
            Err(e) => {
                let account = credentials_user(&authorization);
                self.auth_failed(peer.addr, &account);
                info!(source = %peer.addr, error = %e, "INVITE authentication failed");
                self.reply_to(key, request, 403, None, &[]);
                false
            }
        }
    }

    async fn on_invite(&mut self, key: TransactionKey, request: rsip::Request, peer: Peer) {
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

    fn ringing(&mut self, id: &DialogId) {
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

    fn answer(&mut self, id: &DialogId) {
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
                    self.counters.call_setup.observe(setup);
                }
                info!("answered");
            }
            Err(e) => warn!(error = %e, "could not send 200"),
        }
    }

    fn on_ack(&mut self, ack: &rsip::Request) {
        let Some(id) = DialogId::for_incoming(ack) else {
            return;
        };
        let local = self
            .calls
            .get(&id)
            .map(|c| self.local_media(c.media.port()));
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.dialog.state = DialogState::Confirmed;
        // Late offer: the ACK carries the answer to the offer we put in the 200.
        if !ack.body.is_empty()
            && let (Ok(text), Some(local)) = (std::str::from_utf8(&ack.body), local)
            && let Ok(answer) = SessionDescription::parse(text)
            && let Ok(n) = call.session.answer(&answer, &local)
        {
            call.media.update(MediaParams::from(&n));
        }
    }

    fn on_reinvite(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let Some(id) = DialogId::for_incoming(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        let local = self
            .calls
            .get(&id)
            .map(|c| self.local_media(c.media.port()));
        let contact = self.contact_header(Transport::Udp);
        let (Some(call), Some(local)) = (self.calls.get_mut(&id), local) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        if let Err(e) = call.dialog.on_remote_request(request) {
            let reason = e.to_string();
            let code = e.status();
            self.reply_to(key, request, code, Some(&reason), &[]);
            return;
        }
        let offer = match parse_offer(request) {
            Ok(Some(offer)) => offer,
            Ok(None) => {
                // A re-INVITE without an offer asks for ours; answer with the current session.
                let sdp = call
                    .session
                    .offer(&local, siphon_sip::sdp::Direction::SendRecv)
                    .to_string();
                self.reply_sdp(key, request, &id.local_tag, contact, sdp);
                return;
            }
            Err((code, reason)) => {
                self.reply_to(key, request, code, Some(&reason), &[]);
                return;
            }
        };
        match call.session.answer(&offer, &local) {
            Ok(n) => {
                info!(call_id = %id.call_id, direction = ?n.direction, "re-INVITE");
                call.media.update(MediaParams::from(&n));
                let sdp = n.answer.to_string();
                self.reply_sdp(key, request, &id.local_tag, contact, sdp);
            }
            Err(e) => {
                // A failed re-INVITE leaves the session as it was (RFC 3261 §14.2).
                let reason = e.to_string();
                self.reply_to(key, request, e.status_code(), Some(&reason), &[]);
            }
        }
    }

    fn reply_sdp(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        tag: &str,
        contact: Header,
        sdp: String,
    ) {
        let mut resp = response_to(request, 200, None, Some(tag));
        resp.headers.push(contact);
        resp.headers
            .push(Header::ContentType("application/sdp".into()));
        message::finish(&mut resp.headers, sdp.as_bytes());
        resp.body = sdp.into_bytes();
        if let Err(e) = self.layer.send_response(now(), key, resp) {
            debug!(error = %e, "could not send response");
        }
    }

    fn on_bye(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let id = DialogId::for_incoming(request);
        match id.as_ref().and_then(|id| self.calls.get_mut(id)) {
            Some(call) => {
                if let Err(e) = call.dialog.on_remote_request(request) {
                    let reason = e.to_string();
                    let code = e.status();
                    self.reply_to(key, request, code, Some(&reason), &[]);
                    return;
                }
                self.reply_to(key, request, 200, None, &[]);
                if let Some(id) = id {
                    info!(call_id = %id.call_id, "caller hung up");
                    self.end_call_as(&id, EndResult::Completed);
                }
            }
            None => self.reply_to(key, request, 481, None, &[]),
        }
    }

    fn on_cancel(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let Some(invite_key) = self.layer.find_invite_for_cancel(request) else {
            self.reply_to(key, request, 481, None, &[]);
            return;
        };
        self.reply_to(key, request, 200, None, &[]);
        match self.by_invite.get(&invite_key).cloned() {
            Some(id) => {
                info!(call_id = %id.call_id, "cancelled");
                self.reply(&invite_key, 487, Some(&id.local_tag.clone()), &[]);
                self.end_call_as(&id, EndResult::Cancelled);
            }
            None => self.reply(&invite_key, 487, None, &[]),
        }
    }

    fn on_info(&mut self, key: &TransactionKey, request: &rsip::Request) {
        let known = DialogId::for_incoming(request).is_some_and(|id| self.calls.contains_key(&id));
        let code = if known { 200 } else { 481 };
        self.reply_to(key, request, code, None, &[]);
    }

    /// Sends BYE for a call (a final response if it never answered) and forgets it,
    /// counting it as ended for `result`.
    fn hang_up_as(&mut self, id: &DialogId, reason: &str, result: EndResult) {
        if self.bridges.contains(id) {
            self.hang_up_bridge(id, reason, result);
            return;
        }
        let Some(transport) = self.calls.get(id).map(|c| c.peer.transport) else {
            return;
        };
        let via = self.via_value(transport);
        let contact = self.contact_uri(transport);
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        if call.answer_sdp.is_some() {
            // Never answered: the INVITE gets a final response instead of a BYE.
            let key = call.invite_key.clone();
            self.reply(&key, 480, Some(&id.local_tag.clone()), &[]);
        } else {
            let mut bye = call.dialog.request(Method::Bye, &via, &contact);
            bye.headers.push(Header::Other(
                "Reason".into(),
                format!("SIP;cause=200;text=\"{reason}\""),
            ));
            let peer = call.peer;
            if let Err(e) = self.layer.send_request(now(), bye, peer) {
                warn!(error = %e, "could not send BYE");
            }
        }
        self.end_call_as(id, result);
    }

    fn hang_up_all(&mut self, reason: &str, result: EndResult) {
        let mut ids: Vec<DialogId> = self.calls.keys().cloned().collect();
        ids.extend(self.bridges.ids());
        for id in ids {
            self.hang_up_as(&id, reason, result);
        }
    }

    fn end_call_as(&mut self, id: &DialogId, result: EndResult) {
        if let Some(call) = self.calls.remove(id) {
            self.by_invite.remove(&call.invite_key);
            let summary = self.registry.remove(&id.call_id).map(|(_, s)| s);
            if let (Some(cdr), Some(s)) = (&self.cdr, summary) {
                let forks = CdrFork::of_call(&self.counters.forks, &id.call_id);
                cdr.write(&served_call_cdr(&s, call.action, result, forks));
            }
            inc(&self.counters.calls_ended);
            self.counters.call_ended(result);
            let _guard = call.span.enter();
            debug!(action = ?call.action, "call ended");
            call.media.stop(&format!("{result:?}"));
        }
    }

    fn schedule(&self, after: Duration, cmd: Command) {
        let tx = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(cmd).await;
        });
    }

    fn reply_to(
        &mut self,
        key: &TransactionKey,
        request: &rsip::Request,
        code: u16,
        reason: Option<&str>,
        extra: &[Header],
    ) {
        self.count_rejection(request, code);
        let tag = (code > 100).then(new_tag);
        let mut resp = response_to(request, code, reason, tag.as_deref());
        for h in extra {
            resp.headers.push(h.clone());
        }
        message::finish(&mut resp.headers, b"");
        if let Err(e) = self.layer.send_response(now(), key, resp) {
            debug!(%key, error = %e, "could not send response");
        }
    }

    /// A response to a server transaction's own request (looked up in the layer).
    fn reply(&mut self, key: &TransactionKey, code: u16, tag: Option<&str>, extra: &[Header]) {
        let Some(request) = self.layer.request(key).cloned() else {
            return;
        };
        self.count_rejection(&request, code);
        let mut resp = response_to(&request, code, None, tag.or(Some(&new_tag())));
        for h in extra {
            resp.headers.push(h.clone());
        }
        message::finish(&mut resp.headers, b"");
        if let Err(e) = self.layer.send_response(now(), key, resp) {
            debug!(%key, error = %e, "could not send response");
        }
    }

    /// Final non-2xx responses to initial INVITEs, by code (re-INVITEs are not calls).
    fn count_rejection(&self, request: &rsip::Request, code: u16) {
        let initial = request
            .to_header()
            .ok()
            .and_then(|to| message::header_param(to.value(), "tag"))
            .is_none();
        if request.method == Method::Invite && code >= 300 && initial {
            self.counters.call_rejected(code);
        }
    }

    fn local_media(&self, port: u16) -> LocalMedia {
        LocalMedia {
            address: self.config.advertised_address(),
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime: 20,
        }
    }

    fn contact_uri(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("sip:siphon@{}", self.sip_addr),
            t => format!(
                "sip:siphon@{};transport={}",
                self.addr_for(t),
                t.via_token().to_lowercase()
            ),
        }
    }

    fn contact_header(&self, transport: Transport) -> Header {
        Header::Contact(format!("<{}>", self.contact_uri(transport)).into())
    }

    fn via_value(&self, transport: Transport) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            transport.via_token(),
            self.addr_for(transport),
            new_branch()
        )
    }
}

/// The CDR of a call Siphon answered itself (echo, tone, prompt, fork, ring).
fn served_call_cdr(
    s: &CallSummary,
    action: Action,
    result: EndResult,
    forks: Vec<CdrFork>,
) -> CdrRecord {
    let code = match result {
        _ if s.answered => 200,
        EndResult::Cancelled => 487,
        _ => 480,
    };
    let hung_up_by = match result {
        EndResult::Completed | EndResult::Cancelled => Party::Caller,
        _ => Party::Siphon,
    };
    CdrRecord {
        call_id: s.call_id.clone(),
        start: s.started_at,
        answer: s.setup_time.map(|d| s.started_at + d),
        end: SystemTime::now(),
        caller: s.from.split(";tag=").next().unwrap_or_default().to_string(),
        callee: s.number.clone(),
        route: s.number.clone(),
        action: format!("{action:?}").to_lowercase(),
        result: code,
        end_reason: format!("{result:?}"),
        hung_up_by,
        caller_leg: CdrLeg::new(s.codec, &s.rtp),
        callee_leg: None,
        forks,
    }
}

/// Who is calling whom, for the forks' start messages.
pub(crate) fn call_meta(id: &DialogId, request: &rsip::Request, codec: Codec) -> CallMeta {
    CallMeta {
        call_id: id.call_id.clone(),
        from: header_value(&request.headers, "From").unwrap_or_default(),
        to: header_value(&request.headers, "To").unwrap_or_default(),
        codec: codec.name().to_string(),
        account_sid: None,
    }
}

fn allow() -> Header {
    Header::Allow(ALLOW.into())
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

/// The username a credentials header claims (for counting failures), or empty.
fn credentials_user(header: &str) -> String {
    header
        .split(',')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .trim_start_matches("Digest")
                .trim()
                .eq_ignore_ascii_case("username")
                .then(|| v.trim().trim_matches('"').to_string())
        })
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
