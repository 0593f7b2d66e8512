//! One task per call leg owns that leg's RTP/RTCP sockets and its
//! [`MediaSession`](siphon_media::session::MediaSession): jitter buffer, decoder, 20 ms
//! pacer, DTMF and RTCP. The SIP core talks to it through a small control channel; nothing
//! here is shared with other calls, so a slow or dead peer affects only its own call.
//!
//! The task is the "forker thread per call" of the design: a tokio task, not an OS thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use siphon_fork::ForkConfig;
use siphon_media::FRAME_SAMPLES;
use siphon_media::g711::G711;
use siphon_media::jitter::FrameKind;
use siphon_media::packet::RtpPacket;
use siphon_media::repacketize::Repacketizer;
use siphon_media::rtcp_mux;
use siphon_media::session::{MediaEvent, MediaSession, SessionConfig};
use siphon_media::tone::ToneGenerator;
use siphon_sip::dialog::DialogId;
use siphon_sip::sdp::{Codec, Direction};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::MediaParams;
use super::agent_leg::{AgentLeg, AgentSetup};
use super::forking::{ForkTap, InOrder, Request, drive_forks};
use super::scratch;
use crate::config::Action;
use crate::control::Command;
use crate::counters::{Counters, LegPublisher, LegStats, inc};
use crate::fork_metrics::ForkInfo;
use crate::prompt::Prompt;
use crate::rtp_ports::RtpPort;
use crate::udp_batch::try_recv_batch;
use siphon_fork::CallMeta;

#[derive(Debug)]
enum Control {
    Update(MediaParams),
    Answered,
    /// The call is over: stop the forks with this reason and end the task.
    Stop(String),
    /// Start forking this leg's audio (admin API: `POST /api/calls/{id}/forks`). `id` is
    /// the fork's name for the admin API and metrics (`ForkMetrics::new_fork_id`).
    AttachFork {
        id: String,
        config: Box<ForkConfig>,
    },
    /// Stop the fork named `id` (admin API: `DELETE /api/calls/{id}/forks/{fork}`).
    DetachFork(String),
    /// A key press signalled in SIP (INFO), not in RTP: to the forks like an RFC 4733 one.
    Dtmf {
        digit: char,
        duration_ms: u32,
    },
    /// A transfer's new leg answered: relay the caller to it from the next slot on (the
    /// forks stay, hearing the agent where they heard their own playback).
    Transfer(Box<AgentSetup>),
    /// A transfer's progress, for the forks (the native mode's `transfer` event).
    TransferEvent {
        target: String,
        status: &'static str,
        reason: Option<String>,
    },
}

/// The SIP core's handle on a call's media task. Dropping it (or `stop`) ends the task
/// and returns the RTP port to the pool.
#[derive(Debug)]
pub struct MediaHandle {
    port: u16,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<LegStats>,
}

impl MediaHandle {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn update(&self, params: MediaParams) {
        let _ = self.control.send(Control::Update(params));
    }

    /// The 200 OK went out: start the send clock.
    pub fn answered(&self) {
        let _ = self.control.send(Control::Answered);
    }

    /// Ends the leg; forks get `reason` in their stop message.
    pub fn stop(self, reason: &str) {
        let _ = self.control.send(Control::Stop(reason.to_string()));
    }
    /// The leg's RTP counters (live).
    pub fn stats(&self) -> Arc<LegStats> {
        self.stats.clone()
    }

    /// Starts a fork of this leg named `id`; `false` if the media task has ended.
    pub fn attach_fork(&self, id: String, config: ForkConfig) -> bool {
        let config = Box::new(config);
        self.control
            .send(Control::AttachFork { id, config })
            .is_ok()
    }

    /// Stops the fork named `id`; `false` if the media task has ended.
    pub fn detach_fork(&self, id: String) -> bool {
        self.control.send(Control::DetachFork(id)).is_ok()
    }

    /// Hands the caller to a transfer's answered leg; `false` if the media task has ended.
    pub fn transfer(&self, setup: AgentSetup) -> bool {
        self.control
            .send(Control::Transfer(Box::new(setup)))
            .is_ok()
    }

    /// Tells the forks how a transfer goes (`trying`, `answered`, `failed` with a reason).
    pub fn transfer_event(&self, target: &str, status: &'static str, reason: Option<String>) {
        let _ = self.control.send(Control::TransferEvent {
            target: target.to_string(),
            status,
            reason,
        });
    }

    /// A key press the caller signalled by SIP INFO.
    pub fn dtmf(&self, digit: char, duration_ms: u32) {
        let _ = self.control.send(Control::Dtmf { digit, duration_ms });
    }
}

/// Where a leg's outgoing audio comes from.
enum Source {
    /// The caller's own audio, decoded and re-encoded (never a raw reflection).
    Echo,
    Tone(ToneGenerator),
    Prompt {
        prompt: Arc<Prompt>,
        position: usize,
    },
    /// Nothing of its own to send (ringing numbers, which are never answered).
    Nothing,
    /// Forked calls play only what their services send back; a slot with none is filled
    /// with the codec's silence, so the peer gets a packet every 20 ms: carriers and SBCs
    /// end calls that send no RTP (media timeouts of 30-60 s), and a NAT's RTP binding
    /// closes. (Comfort noise, RFC 3389, is not offered, so it is never negotiated.)
    Silence,
}

pub struct LegSetup {
    pub rtp: RtpPort,
    pub action: Action,
    pub prompt: Option<Arc<Prompt>>,
    pub params: MediaParams,
    pub call: DialogId,
    pub inactivity: Duration,
    pub commands: mpsc::Sender<Command>,
    pub counters: Arc<Counters>,
    pub span: tracing::Span,
    /// Forks to start when the call is answered.
    pub forks: Vec<ForkConfig>,
    /// Who is calling whom, for the forks' start messages.
    pub meta: CallMeta,
}

pub fn spawn(setup: LegSetup) -> MediaHandle {
    let pending_forks: Vec<(String, ForkConfig)> = setup
        .forks
        .iter()
        .map(|f| (setup.counters.forks.new_fork_id(), f.clone()))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let port = setup.rtp.port;
    let source = match (setup.action, setup.prompt) {
        (Action::Echo, _) => Source::Echo,
        // A forked call hears only what its services send back: a speech-to-text service
        // that never answers leaves the caller in silence, not listening to themselves.
        (Action::Fork, _) => Source::Silence,
        (Action::Tone, _) => Source::Tone(ToneGenerator::test_tone()),
        (Action::Play, Some(prompt)) => Source::Prompt {
            prompt,
            position: 0,
        },
        // Dialplan `user` and `trunk` calls are bridged (see `bridge`); an originated call
        // with `on_answer` `user` (click-to-call) gets this task while its second leg rings,
        // and its first party hears silence until the transfer hands them over.
        (Action::User | Action::Trunk | Action::Uri, _) => Source::Silence,
        (Action::Play, None) | (Action::Ring, _) | (Action::Reject | Action::Webhook, _) => {
            Source::Nothing
        }
    };
    let stats = Arc::new(LegStats::default());
    setup
        .counters
        .media_legs_active
        .fetch_add(1, Ordering::Relaxed);
    let leg = Leg {
        stats: stats.clone(),
        publisher: LegPublisher::default(),
        rtp: setup.rtp,
        source,
        params: setup.params,
        call: setup.call,
        inactivity: setup.inactivity,
        commands: setup.commands,
        counters: setup.counters,
        session: None,
        latched: None,
        latched_rtcp: None,
        pending_forks,
        taps: Vec::new(),
        meta: setup.meta,
        requests: Vec::new(),
        in_order: InOrder::default(),
        repacketizer: None,
        agent: None,
    };
    tokio::spawn(leg.run(rx).instrument(setup.span));
    MediaHandle {
        port,
        control: tx,
        stats,
    }
}

struct Leg {
    rtp: RtpPort,
    source: Source,
    params: MediaParams,
    call: DialogId,
    inactivity: Duration,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    /// Created when the call is answered: its pacer's first slot is the answer time.
    session: Option<MediaSession>,
    /// Where the peer's RTP actually comes from (symmetric RTP, RFC 4961).
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// Forks configured but not started (the call is not answered yet).
    pending_forks: Vec<(String, ForkConfig)>,
    /// Running forks: each owns its conversion state; their sockets live in their own tasks.
    taps: Vec<ForkTap>,
    meta: CallMeta,
    /// Requests from fork services collected during a slot (reused buffer).
    requests: Vec<Request>,
    /// The caller's audio for forks, in order at arrival (not through the playout buffer).
    in_order: InOrder,
    /// Re-cuts the 20 ms packets the session builds into the peer's `a=ptime` (10, 30 or
    /// 40 ms); `None` at 20 ms.
    repacketizer: Option<Repacketizer>,
    /// This leg's RTP counters, also read by the admin API.
    stats: Arc<LegStats>,
    /// Moves `stats` into the server-wide counters once a second.
    publisher: LegPublisher,
    /// The transfer's answered leg, once the caller was handed to it.
    agent: Option<AgentLeg>,
}

/// The last counts reach the server-wide totals however the task ends.
impl Drop for Leg {
    fn drop(&mut self) {
        self.publisher
            .publish(&self.counters, &self.stats, self.session.as_ref());
        self.counters
            .media_legs_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn g711(codec: Codec) -> G711 {
    match codec {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    }
}

impl Leg {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        // No buffers here: the branches wait for readiness and borrow the thread's
        // (`scratch`) for the synchronous part, so a call's task holds none of them.
        let mut last_rx = Instant::now();
        // Two timers for the whole call, moved only when their deadline does: a `Sleep`
        // made per loop turn would be put into and taken out of the runtime's timer wheel
        // at every wake-up (several per 20 ms). The pacer moves once a slot; the inactivity
        // timer is not moved per packet: when it fires early (RTP came since), it is set
        // to the new deadline then.
        let mut pacer = std::pin::pin!(tokio::time::sleep_until(last_rx));
        let mut pacer_at: Option<Instant> = None;
        let mut idle = std::pin::pin!(tokio::time::sleep_until(last_rx + self.inactivity));
        loop {
            let send_deadline = self
                .session
                .as_ref()
                .map(|s| Instant::from_std(s.poll_timeout()));
            if send_deadline != pacer_at {
                pacer_at = send_deadline;
                if let Some(at) = send_deadline {
                    pacer.as_mut().reset(at);
                }
            }
            // Biased, in this order: a control message (the answer that attaches the forks)
            // is handled before RTP that arrived after it, so a call's first packet is never
            // read before its forks exist; a due send slot goes before reading more RTP, so
            // a flood on this port cannot delay what the caller hears.
            tokio::select! {
                biased;
                msg = control.recv() => match msg {
                    Some(Control::Update(p)) => {
                        // Coming off hold restarts the inactivity clock.
                        last_rx = Instant::now();
                        if p.codec != self.params.codec || p.telephone_event_pt != self.params.telephone_event_pt || p.also_receive != self.params.also_receive {
                            self.session = self.session.take().map(|_| self.new_session(&p));
                        }
                        if p.ptime != self.params.ptime || p.codec != self.params.codec {
                            self.repacketizer = repacketizer_for(&p);
                        }
                        if p.remote != self.params.remote {
                            // The peer moved: learn its address again.
                            self.latched = None;
                            self.latched_rtcp = None;
                        }
                        self.params = p;
                    }
                    Some(Control::Answered) => {
                        last_rx = Instant::now();
                        self.session = Some(self.new_session(&self.params.clone()));
                        self.repacketizer = repacketizer_for(&self.params);
                        for (id, config) in std::mem::take(&mut self.pending_forks) {
                            self.start_fork(id, config);
                        }
                    }
                    Some(Control::AttachFork { id, config }) => {
                        if self.session.is_some() {
                            self.start_fork(id, *config);
                        } else {
                            self.pending_forks.push((id, *config));
                        }
                    }
                    Some(Control::DetachFork(id)) => {
                        if let Some(i) = self.taps.iter().position(|t| t.id == id) {
                            let tap = self.taps.remove(i);
                            info!(fork = %id, "detaching fork");
                            let _stopping = tap.fork.stop("detached");
                        }
                    }
                    Some(Control::Dtmf { digit, duration_ms }) => {
                        inc(&self.counters.dtmf_events);
                        info!(%digit, duration_ms, "DTMF received by SIP INFO");
                        for tap in &mut self.taps {
                            tap.fork.send_dtmf(digit, duration_ms);
                        }
                    }
                    Some(Control::Transfer(setup)) => {
                        info!(port = setup.rtp.port, remote = ?setup.params.remote, "caller handed to the transfer's leg");
                        self.agent = Some(AgentLeg::new(*setup));
                    }
                    Some(Control::TransferEvent { target, status, reason }) => {
                        for tap in &mut self.taps {
                            tap.fork.send_transfer(&target, status, reason.as_deref());
                        }
                    }
                    Some(Control::Stop(reason)) => {
                        self.finish(&reason);
                        return;
                    }
                    None => {
                        self.finish("call ended");
                        return;
                    }
                },
                () = &mut pacer, if pacer_at.is_some() => {
                    // Set again (to the next slot) at the top of the loop.
                    pacer_at = None;
                    scratch::with(|s| self.on_send_slots(&mut s.pcm_in, &mut s.pcm_out, &mut s.tx));
                    if let Some(reason) = self.service_requests() {
                        warn!(%reason, "ending call");
                        self.finish(&reason);
                        let _ = self.commands.send(Command::MediaEnded { call: self.call.clone(), reason }).await;
                        return;
                    }
                }
                // The forks' sockets, connection attempts and timers: writes the frames the
                // last branch queued, reads what the services sent. Never completes.
                () = drive_forks(&mut self.taps) => {}
                // RTP arrives in batches of one recvmmsg each (no empty read per packet;
                // see udp_batch).
                r = self.rtp.socket.readable() => {
                    if r.is_err() {
                        continue;
                    }
                    let heard = scratch::with(|s| {
                        let scratch::Scratch { rx, decode, .. } = s;
                        if try_recv_batch(&self.rtp.socket, rx).is_err() {
                            return false;
                        }
                        let mut heard = false;
                        for (packet, from) in rx.packets() {
                            // RFC 5761 §4: RTCP multiplexed on the RTP port is never audio.
                            if self.params.rtcp_mux && rtcp_mux::is_rtcp(packet) {
                                self.on_rtcp(packet, from);
                            } else if self.on_rtp(packet, from, decode) {
                                heard = true;
                            }
                        }
                        heard
                    });
                    if heard {
                        last_rx = Instant::now();
                    }
                }
                r = agent_readable(self.agent.as_ref()) => {
                    if r.is_err() {
                        continue;
                    }
                    let (agent, counters) = (self.agent.as_mut(), &self.counters);
                    if let Some(agent) = agent {
                        scratch::with(|s| {
                            if let Ok((len, from)) = agent.rtp.socket.try_recv_from(&mut s.datagram)
                                && let Some(data) = s.datagram.get(..len)
                            {
                                agent.on_rtp(data, from, counters);
                            }
                        });
                    }
                }
                r = self.rtp.rtcp.readable() => {
                    if r.is_err() {
                        continue;
                    }
                    scratch::with(|s| {
                        if let Ok((len, from)) = self.rtp.rtcp.try_recv_from(&mut s.datagram)
                            && let Some(data) = s.datagram.get(..len)
                        {
                            self.on_rtcp(data, from);
                        }
                    });
                }
                () = &mut idle => {
                    let now = Instant::now();
                    let deadline = last_rx + self.inactivity;
                    if deadline > now {
                        idle.as_mut().reset(deadline);
                        continue;
                    }
                    if self.on_hold() || self.session.is_none() {
                        last_rx = now;
                        idle.as_mut().reset(now + self.inactivity);
                        continue;
                    }
                    let reason = format!("no RTP for {} s", self.inactivity.as_secs());
                    warn!(%reason, "ending call");
                    self.finish(&reason);
                    let _ = self.commands.send(Command::MediaEnded { call: self.call.clone(), reason }).await;
                    return;
                }
            }
        }
    }

    fn new_session(&self, params: &MediaParams) -> MediaSession {
        let mut config =
            SessionConfig::new(g711(params.codec), format!("siphon-{}", self.rtp.port));
        config.telephone_event = params.telephone_event_pt;
        config.also_receive = params
            .also_receive
            .iter()
            .map(|(c, _)| g711(*c))
            .find(|law| *law != config.codec);
        MediaSession::new(config, Instant::now().into_std(), SystemTime::now())
    }

    /// Hold (we only receive, or nothing flows): silence from the peer is expected.
    fn on_hold(&self) -> bool {
        matches!(
            self.params.direction,
            Direction::RecvOnly | Direction::Inactive
        )
    }

    fn sends(&self) -> bool {
        matches!(
            self.params.direction,
            Direction::SendRecv | Direction::SendOnly
        )
    }

    /// Where our RTP goes: the latched source, else what the SDP said.
    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.params.remote)
    }

    /// Handles one datagram; returns whether it counted as activity from the peer.
    /// `decode` is room to decode the packet for the forks (the thread's, see `scratch`).
    fn on_rtp(&mut self, data: &[u8], from: SocketAddr, decode: &mut [i16]) -> bool {
        let counters = &self.counters;
        let packet = match RtpPacket::parse(data) {
            Ok(p) => p,
            Err(e) => {
                inc(&counters.rtp_malformed);
                debug!(%from, error = %e, "malformed RTP dropped");
                return false;
            }
        };
        let packet_codec = self.params.audio_codec(packet.payload_type);
        let negotiated =
            packet_codec.is_some() || Some(packet.payload_type) == self.params.telephone_event_pt;
        match self.latched {
            Some(addr) if addr == from => {}
            // Latch only onto packets of the negotiated types, so a stray sender cannot
            // take the stream over. The address the phone's SDP gave always wins: someone
            // spraying RTP who got in before the phone's first packet loses the stream (and
            // the forks) as soon as the phone sends.
            None if negotiated => {
                latch(&mut self.latched, &mut self.latched_rtcp, &self.stats, from)
            }
            Some(_) if negotiated && self.params.remote == Some(from) => {
                latch(&mut self.latched, &mut self.latched_rtcp, &self.stats, from)
            }
            _ => {
                inc(&counters.rtp_stray);
                return false;
            }
        }
        inc(&counters.rtp_packets_in);
        if !self.taps.is_empty()
            && let Some(codec) = packet_codec
        {
            // Forks take the caller's audio at arrival, in order (see InOrder), decoded by
            // the packet's own codec (the peer may switch per packet).
            let law = g711(codec);
            let n = law.decode(packet.payload, decode);
            let taps = &mut self.taps;
            let arrival = Instant::now();
            self.in_order.push(
                packet.ssrc,
                packet.sequence_number,
                &decode[..n],
                arrival,
                &mut |frame, at| {
                    for tap in taps.iter_mut() {
                        tap.on_inbound(frame, at);
                    }
                },
            );
        }
        self.stats.received(data.len());
        let Some(session) = self.session.as_mut() else {
            return true; // early media before the answer: nothing to do with it yet
        };
        if let Err(e) = session.handle_rtp(Instant::now().into_std(), data) {
            inc(&counters.rtp_rejected);
            debug!(error = %e, "RTP rejected");
        }
        while let Some(event) = session.poll_event() {
            match event {
                MediaEvent::Dtmf(ev) => {
                    inc(&counters.dtmf_events);
                    let digit = ev.digit().unwrap_or('?');
                    info!(%digit, "DTMF received");
                    for tap in &mut self.taps {
                        tap.fork.send_dtmf(digit, 100);
                    }
                }
                MediaEvent::NewSource { ssrc } => debug!(ssrc, "new RTP source"),
                MediaEvent::RemoteReport { .. } => {}
            }
        }
        true
    }

    fn on_rtcp(&mut self, data: &[u8], from: SocketAddr) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        match session.handle_rtcp(Instant::now().into_std(), data) {
            Ok(()) => {
                // RTCP comes from the RTP source's host; latch its port the same way.
                if self.latched_rtcp.is_none()
                    && self.latched.is_none_or(|rtp| rtp.ip() == from.ip())
                {
                    self.latched_rtcp = Some(from);
                }
                inc(&self.counters.rtcp_packets_in);
            }
            Err(_) => inc(&self.counters.rtp_malformed),
        }
    }

    /// One iteration per due 20 ms slot: take the caller's audio out of the jitter buffer
    /// and fill the slot from this leg's source.
    fn on_send_slots(
        &mut self,
        pcm_in: &mut [i16; FRAME_SAMPLES],
        pcm_out: &mut [i16; FRAME_SAMPLES],
        tx: &mut [u8; 1500],
    ) {
        let now = Instant::now().into_std();
        let sends = self.sends();
        let dest = self.destination();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let codec = g711(self.params.codec);
        for _ in 0..session.handle_timeout(now) {
            let frame = session.pop_audio(pcm_in);
            let heard = frame.is_some_and(|f| f.kind != FrameKind::Silence);
            // Audio a fork's service sends back takes the slot (voicebots talk over
            // prompts); several services are mixed.
            let mut injected = false;
            let mut service = [0i16; FRAME_SAMPLES];
            // After a transfer the agent takes the slot; the services' playback is still
            // read (and dropped), so their marks and requests go on.
            let agent = self.agent.as_mut().map(|agent| {
                let caller = if heard { &*pcm_in } else { &SILENCE };
                *agent.on_slot(caller, tx, &self.counters)
            });
            for tap in &mut self.taps {
                if tap.take_playback(&mut service, &mut self.requests) && agent.is_none() {
                    if injected {
                        for (o, s) in pcm_out.iter_mut().zip(&service) {
                            *o = o.saturating_add(*s);
                        }
                    } else {
                        *pcm_out = service;
                        injected = true;
                    }
                }
            }
            // What this slot plays to the caller, as linear audio for the forks'
            // outbound track, and the packet that carries it.
            let mut played = false;
            let built = if let Some(agent) = agent {
                *pcm_out = agent;
                played = true;
                session.send_audio(pcm_out, tx).map(Some)
            } else if !sends {
                session.send_silence(tx)
            } else if injected {
                played = true;
                session.send_audio(pcm_out, tx).map(Some)
            } else {
                match &mut self.source {
                    Source::Echo if heard => {
                        *pcm_out = *pcm_in;
                        played = true;
                        session.send_audio(pcm_in, tx).map(Some)
                    }
                    Source::Tone(tone) => {
                        tone.fill(pcm_out);
                        played = true;
                        session.send_audio(pcm_out, tx).map(Some)
                    }
                    Source::Prompt { prompt, position } => {
                        let frames = prompt.frames(codec);
                        let payload = &frames[*position..*position + FRAME_SAMPLES];
                        *position = (*position + FRAME_SAMPLES) % frames.len();
                        codec.decode(payload, pcm_out);
                        played = true;
                        session.send_payload(payload, tx).map(Some)
                    }
                    Source::Silence => {
                        *pcm_out = [0; FRAME_SAMPLES];
                        session.send_audio(pcm_out, tx).map(Some)
                    }
                    Source::Echo | Source::Nothing => session.send_silence(tx),
                }
            };
            match (built, dest) {
                (Ok(Some(n)), Some(dest)) => {
                    let (socket, counters, stats) = (&self.rtp.socket, &self.counters, &self.stats);
                    let mut send = |packet: &[u8]| {
                        if socket.try_send_to(packet, dest).is_ok() {
                            inc(&counters.rtp_packets_out);
                            stats.sent(packet.len());
                        } else {
                            inc(&counters.rtp_send_failures);
                        }
                    };
                    match self.repacketizer.as_mut() {
                        None => send(&tx[..n]),
                        Some(r) => {
                            let mut wire = [0u8; 1500];
                            if let Err(e) = r.push(&tx[..n], &mut wire, &mut send) {
                                debug!(error = %e, "RTP re-cut failed");
                            }
                        }
                    }
                }
                (Ok(_), _) => {}
                (Err(e), _) => debug!(error = %e, "RTP build failed"),
            }
            let outbound = played.then_some(&*pcm_out);
            let slot_time = Instant::now();
            let taps = &mut self.taps;
            self.in_order.tick(slot_time, &mut |frame, at| {
                for tap in taps.iter_mut() {
                    tap.on_inbound(frame, at);
                }
            });
            for tap in &mut self.taps {
                tap.on_slot(outbound, slot_time);
            }
        }
        let rtcp_socket = if self.params.rtcp_mux {
            &self.rtp.socket
        } else {
            &self.rtp.rtcp
        };
        if let Ok(Some(n)) = session.poll_rtcp(now, tx)
            && let Some(rtcp_dest) = self
                .params
                .rtcp_peer()
                .destination(self.latched, self.latched_rtcp)
            && rtcp_socket.try_send_to(&tx[..n], rtcp_dest).is_ok()
        {
            self.counters
                .rtcp_packets_out
                .fetch_add(1, Ordering::Relaxed);
        }
        self.publisher
            .tick(&self.counters, &self.stats, self.session.as_ref());
    }

    /// Acts on what fork services asked for in the last slots; a reason to end the call.
    fn service_requests(&mut self) -> Option<String> {
        let mut end = None;
        for request in self.requests.drain(..) {
            match request {
                Request::Hangup => end = Some("analytics service hung up".to_string()),
                Request::Failed(reason) => end = Some(format!("required fork failed: {reason}")),
                Request::Transfer(to) => {
                    info!(%to, "the service asks for a transfer");
                    let cmd = Command::ServiceTransfer {
                        call_id: self.call.call_id.clone(),
                        to,
                    };
                    if self.commands.try_send(cmd).is_err() {
                        warn!("SIP core busy; the service's transfer request is dropped");
                    }
                }
                Request::Dtmf(digits) => {
                    if let Some(session) = self.session.as_mut() {
                        for d in digits.chars() {
                            if let Err(e) = session.send_dtmf(d, Duration::from_millis(100)) {
                                debug!(error = %e, digit = %d, "cannot send DTMF");
                            }
                        }
                    }
                }
            }
        }
        end
    }

    fn start_fork(&mut self, id: String, config: ForkConfig) {
        info!(fork = %id, url = %siphon_fork::redact_url(&config.url), mode = ?config.mode, "starting fork");
        // The fork runs inside this task (the select loop drives it): a frame goes from the
        // RTP packet to the WebSocket in one wake-up, without a channel or a second task.
        let fork = siphon_fork::start_inline(config.clone(), self.meta.clone());
        let registration = self.counters.forks.register(
            ForkInfo {
                call_id: self.meta.call_id.clone(),
                fork_id: id.clone(),
                url: config.url.clone(),
                mode: config.mode,
            },
            fork.stats(),
        );
        // Exactly the room needed: a `ForkTap` is most of a kilobyte and a call has one fork
        // or two, so the default growth (four at once) would waste kilobytes per call.
        self.taps.reserve_exact(1);
        self.taps
            .push(ForkTap::new(id, fork, &config, registration));
    }

    /// Stops forks (their stop message carries `reason`) and says RTCP BYE.
    fn finish(&mut self, reason: &str) {
        for tap in self.taps.drain(..) {
            let stats = tap.fork.stats();
            let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            info!(
                %reason,
                frames_pushed = stats.frames_pushed.load(Ordering::Relaxed),
                frames_sent = stats.frames_sent.load(Ordering::Relaxed),
                frames_dropped = stats.frames_dropped(),
                reconnects = stats.reconnects.load(Ordering::Relaxed),
                latency_p50_ms = ms(stats.latency.quantile(0.5)),
                latency_p99_ms = ms(stats.latency.quantile(0.99)),
                latency_max_ms = ms(Some(stats.latency.max())),
                "stopping fork"
            );
            let _stopping = tap.fork.stop(reason);
        }
        self.send_rtcp_bye();
    }

    fn send_rtcp_bye(&mut self) {
        let dest = self
            .params
            .rtcp_peer()
            .destination(self.latched, self.latched_rtcp);
        let socket = if self.params.rtcp_mux {
            &self.rtp.socket
        } else {
            &self.rtp.rtcp
        };
        if let (Some(session), Some(dest)) = (self.session.as_mut(), dest) {
            let mut out = [0u8; 512];
            if let Ok(n) = session.build_bye(Instant::now().into_std(), &mut out) {
                let _ = socket.try_send_to(&out[..n], dest);
            }
        }
    }
}

const SILENCE: [i16; FRAME_SAMPLES] = [0; FRAME_SAMPLES];

/// The transfer leg's socket has a datagram; never ready without a transfer leg.
async fn agent_readable(agent: Option<&AgentLeg>) -> std::io::Result<()> {
    match agent {
        Some(agent) => agent.rtp.socket.readable().await,
        None => std::future::pending().await,
    }
}

/// RTCP goes where `RtcpPeer::destination` says (the RTP port + 1 unless the SDP or the
/// peer's own RTCP says otherwise).
/// Sends the leg's RTP to `from` from now on. RTCP follows the RTP source's host, so its
/// latched address is learnt again.
fn latch(
    latched: &mut Option<SocketAddr>,
    latched_rtcp: &mut Option<SocketAddr>,
    stats: &LegStats,
    from: SocketAddr,
) {
    debug!(%from, "RTP latched");
    *latched = Some(from);
    *latched_rtcp = None;
    stats.set_latched(Some(from));
}

/// The re-cutting the peer's `a=ptime` asks for (none at 20 ms or without one).
fn repacketizer_for(params: &MediaParams) -> Option<Repacketizer> {
    let ptime = params.ptime?;
    Repacketizer::new(ptime, g711(params.codec).payload_type())
}
