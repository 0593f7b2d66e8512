//! Media of a bridged call (`user` routes): one task owns both legs' RTP sockets and relays
//! packets between them. Siphon stays in the media path (anchored) so that each phone only
//! ever talks to Siphon's address, and so the call's audio can be forked later.
//!
//! Per packet: parse, check it is the leg's negotiated audio or telephone-event type from
//! the latched source, re-stamp it for the other leg (payload type, sequence number,
//! timestamp, SSRC: see [`Restamp`]) and transcode G.711 µ-law ↔ A-law when the legs
//! negotiated different laws. Nothing on that path allocates or touches state shared with
//! another call; the server-wide counters are plain atomics and the leg totals are moved
//! into them once a second (`LegPublisher`).
//!
//! Forks of a bridged call hear both phones: `inbound` is the caller, `outbound` the
//! callee, `both` is stereo (left caller, right callee), put in time by `crate::stereo`
//! and handed to the forks every 20 ms. The forks run inside this task (`drive_forks` in the
//! select loop), like an answered call's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use siphon_fork::{CallMeta, ForkConfig, Tracks};
use siphon_media::FRAME_SAMPLES;
use siphon_media::dtmf::DtmfReceiver;
use siphon_media::g711::G711;
use siphon_media::packet::RtpPacket;
use siphon_media::relay_rtcp::RelayRtcp;
use siphon_sip::dialog::DialogId;
use siphon_sip::sdp::{Codec, Direction};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::MediaParams;
use super::forking::{ForkTap, Request, drive_forks};
use super::scratch::{self, RELAYED};
use crate::control::Command;
use crate::counters::{Counters, LegPublisher, LegStats, inc};
use crate::fork_metrics::ForkInfo;
use crate::rtp_ports::RtpPort;
use crate::stereo::{self, Aligner};
use crate::udp_batch::try_recv_batch;

mod leg_rtcp;
mod recut;
mod restamp;
use restamp::Restamp;

/// Which leg of a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller (Siphon's UAS leg).
    Caller,
    /// The callee (Siphon's UAC leg).
    Callee,
}

#[derive(Debug)]
enum Control {
    Update(Side, MediaParams),
    /// A transfer (REFER): the leg now talks to another phone, on the socket offered to it
    /// (or on the socket another bridge handed over, see `HandOver`).
    Replace(Side, Arc<RtpPort>, MediaParams),
    /// An attended transfer joins this call's leg `side` into another bridge: its socket
    /// and media go to `to` as that bridge's leg `to_side`, and this task ends (forks
    /// stopped, the other leg's port back to the pool).
    HandOver {
        side: Side,
        to: mpsc::UnboundedSender<Control>,
        to_side: Side,
    },
    Answered,
    /// The call is over; forks get the reason in their stop message.
    Stop(String),
    /// Admin API: start a fork named `id` (at once if answered, else at the answer).
    AttachFork {
        id: String,
        config: Box<ForkConfig>,
    },
    /// Admin API: stop the fork named `id`.
    DetachFork(String),
    /// A key press signalled in SIP (INFO), not in RTP: to the forks like an RFC 4733 one.
    Dtmf {
        digit: char,
        duration_ms: u32,
    },
}

/// The SIP core's handle on a bridge's media task; `stop` (or dropping it) ends the task
/// and returns both RTP ports to the pool.
#[derive(Debug)]
pub struct BridgeHandle {
    control: mpsc::UnboundedSender<Control>,
    caller_port: u16,
    callee_port: u16,
    caller_stats: Arc<LegStats>,
    callee_stats: Arc<LegStats>,
}

impl BridgeHandle {
    pub fn port(&self, side: Side) -> u16 {
        match side {
            Side::Caller => self.caller_port,
            Side::Callee => self.callee_port,
        }
    }

    /// The leg's RTP counters (live): `packets_in` is what that phone sent to Siphon.
    pub fn stats(&self, side: Side) -> Arc<LegStats> {
        match side {
            Side::Caller => self.caller_stats.clone(),
            Side::Callee => self.callee_stats.clone(),
        }
    }

    /// What offer/answer decided for a leg (first time, or after a re-INVITE).
    pub fn update(&self, side: Side, params: MediaParams) {
        let _ = self.control.send(Control::Update(side, params));
    }

    /// A transfer: `side` is now another phone, reached from `rtp` (the port Siphon
    /// offered it) with `params` from its answer. The old socket goes back to the pool; the
    /// other leg and the forks go on as they were.
    pub fn replace(&mut self, side: Side, rtp: RtpPort, params: MediaParams) {
        match side {
            Side::Caller => self.caller_port = rtp.port,
            Side::Callee => self.callee_port = rtp.port,
        }
        let _ = self
            .control
            .send(Control::Replace(side, Arc::new(rtp), params));
    }

    /// An attended transfer: this call's leg `side` (its phone, socket and negotiated
    /// media) becomes leg `to_side` of the bridge `to`, in place of the phone there; this
    /// bridge ends. The phone keeps sending to the same Siphon port, so it needs no
    /// re-INVITE. The media moves when this task reads the message (the order of this
    /// task's queue is kept: nothing sent to this handle before is lost).
    pub fn hand_over(self, side: Side, to: &mut BridgeHandle, to_side: Side) {
        let port = self.port(side);
        match to_side {
            Side::Caller => to.caller_port = port,
            Side::Callee => to.callee_port = port,
        }
        let _ = self.control.send(Control::HandOver {
            side,
            to: to.control.clone(),
            to_side,
        });
    }

    /// The call is answered: from now on silence counts as RTP inactivity.
    pub fn answered(&self) {
        let _ = self.control.send(Control::Answered);
    }

    /// Starts a fork of the call named `id`; `false` if the media task has ended.
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

    pub fn stop(self, reason: &str) {
        let _ = self.control.send(Control::Stop(reason.to_string()));
    }

    /// A key press one phone signalled by SIP INFO.
    pub fn dtmf(&self, digit: char, duration_ms: u32) {
        let _ = self.control.send(Control::Dtmf { digit, duration_ms });
    }
}

pub struct BridgeSetup {
    pub caller: RtpPort,
    pub callee: RtpPort,
    /// The caller's media is known from its offer (None: it made none, and answers our
    /// offer in its ACK); the callee's arrives with its answer.
    pub caller_params: Option<MediaParams>,
    /// The caller's dialog: what `Command::MediaEnded` names.
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

pub fn spawn(setup: BridgeSetup) -> BridgeHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = BridgeHandle {
        control: tx,
        caller_port: setup.caller.port,
        callee_port: setup.callee.port,
        caller_stats: Arc::new(LegStats::default()),
        callee_stats: Arc::new(LegStats::default()),
    };
    setup
        .counters
        .media_legs_active
        .fetch_add(2, Ordering::Relaxed);
    let task = Bridge {
        caller: Leg::new(
            setup.caller,
            setup.caller_params,
            handle.caller_stats.clone(),
        ),
        callee: Leg::new(setup.callee, None, handle.callee_stats.clone()),
        call: setup.call,
        inactivity: setup.inactivity,
        commands: setup.commands,
        pending_forks: setup
            .forks
            .into_iter()
            .map(|f| (setup.counters.forks.new_fork_id(), f))
            .collect(),
        counters: setup.counters,
        answered: false,
        taps: Vec::new(),
        aligner: None,
        meta: setup.meta,
        requests: Vec::new(),
    };
    tokio::spawn(task.run(rx).instrument(setup.span));
    handle
}

struct Leg {
    /// Shared only while an attended transfer hands it from one bridge task to another.
    rtp: Arc<RtpPort>,
    /// None until offer/answer with this leg is done (the callee, before it answers).
    params: Option<MediaParams>,
    /// Where this leg's RTP actually comes from (symmetric RTP, RFC 4961).
    latched: Option<SocketAddr>,
    /// Stamps the packets Siphon sends to this leg.
    out: Restamp,
    stats: Arc<LegStats>,
    publisher: LegPublisher,
    /// Key presses of this leg's phone, one per press (its events are relayed as they are).
    dtmf: DtmfReceiver,
    /// A key press seen by `relay`, for the forks.
    pressed: Option<char>,
    /// Relayed audio re-cut into this leg's `a=ptime`.
    recut: recut::Recut,
    /// This leg's RTCP (see `leg_rtcp`), and where the phone's RTCP comes from.
    rtcp: RelayRtcp,
    latched_rtcp: Option<SocketAddr>,
}

impl Leg {
    fn new(rtp: RtpPort, params: Option<MediaParams>, stats: Arc<LegStats>) -> Leg {
        let out = Restamp::new(rand::random(), rand::random(), rand::random());
        let rtcp = RelayRtcp::new(
            out.ssrc,
            format!("siphon-{:08x}", out.ssrc),
            Instant::now().into_std(),
            std::time::SystemTime::now(),
            rand::random(),
        );
        Leg {
            rtp: Arc::new(rtp),
            params,
            latched: None,
            out,
            rtcp,
            latched_rtcp: None,
            stats,
            publisher: LegPublisher::default(),
            dtmf: DtmfReceiver::new(),
            pressed: None,
            recut: recut::Recut::default(),
        }
        .following_params()
    }

    /// Sets the re-cutting for the parameters the leg starts with.
    fn following_params(mut self) -> Leg {
        if let Some(params) = &self.params {
            self.recut.follow(params);
        }
        self
    }

    fn update(&mut self, params: MediaParams) {
        if self
            .params
            .as_ref()
            .is_some_and(|p| p.remote != params.remote)
        {
            // The peer moved (re-INVITE): learn its address again.
            self.latched = None;
            self.stats.set_latched(None);
        }
        self.recut.follow(&params);
        self.params = Some(params);
    }

    /// The leg's phone changed (transfer): a new socket and peer, learnt afresh. The
    /// stream Siphon sends keeps its SSRC and numbering (one source seen by the
    /// new phone from its start); the counters go on accumulating for the leg.
    fn rehome(&mut self, rtp: Arc<RtpPort>, params: MediaParams) {
        let out_ssrc = self.out.ssrc;
        self.rtp = rtp;
        self.latched = None;
        self.latched_rtcp = None;
        self.stats.set_latched(None);
        self.rtcp = RelayRtcp::new(
            out_ssrc,
            format!("siphon-{out_ssrc:08x}"),
            Instant::now().into_std(),
            std::time::SystemTime::now(),
            rand::random(),
        );
        self.dtmf = DtmfReceiver::new();
        self.pressed = None;
        self.params = None;
        self.update(params);
    }

    /// The peer holds the call or sends nothing: its silence is not inactivity.
    fn on_hold(&self) -> bool {
        self.params
            .as_ref()
            .is_some_and(|p| matches!(p.direction, Direction::RecvOnly | Direction::Inactive))
    }
}

struct Bridge {
    caller: Leg,
    callee: Leg,
    call: DialogId,
    inactivity: Duration,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    answered: bool,
    /// Forks configured but not started (the call is not answered yet).
    pending_forks: Vec<(String, ForkConfig)>,
    taps: Vec<ForkTap>,
    /// Both legs on the call's 20 ms clock, while forks run.
    aligner: Option<Aligner>,
    meta: CallMeta,
    /// What fork services asked for in a slot (reused buffer).
    requests: Vec<Request>,
}

/// The last counts reach the server-wide totals however the task ends.
impl Drop for Bridge {
    fn drop(&mut self) {
        for leg in [&mut self.caller, &mut self.callee] {
            leg.send_rtcp_bye(&self.counters);
            leg.publisher.publish(&self.counters, &leg.stats, None);
        }
        self.counters
            .media_legs_active
            .fetch_sub(2, Ordering::Relaxed);
    }
}

impl Bridge {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        // No buffers here: the branches wait for readiness and borrow the thread's
        // (`scratch`) to read and relay, so a call's task holds none of them.
        // Each phone must keep sending: one that went away (crashed, lost its network)
        // ends the call even while the other still talks.
        let mut last_rx = [Instant::now(); 2];
        let mut slots = tokio::time::interval(stereo::SLOT);
        // The RTCP and inactivity timers live as long as the call and move only when their
        // deadline does (a `Sleep` made per loop turn enters and leaves the runtime's timer
        // wheel at every packet). The inactivity timer is not moved per packet: when it
        // fires early (RTP came since), it is set to the new deadline then.
        let mut rtcp_at = self.caller.rtcp_due().min(self.callee.rtcp_due());
        let mut rtcp_timer = std::pin::pin!(tokio::time::sleep_until(rtcp_at));
        let mut idle = std::pin::pin!(tokio::time::sleep_until(last_rx[0] + self.inactivity));
        loop {
            let forking = self.aligner.is_some();
            let rtcp_due = self.caller.rtcp_due().min(self.callee.rtcp_due());
            if rtcp_due != rtcp_at {
                rtcp_at = rtcp_due;
                rtcp_timer.as_mut().reset(rtcp_due);
            }
            tokio::select! {
                msg = control.recv() => match msg {
                    Some(Control::Update(side, params)) => {
                        last_rx = [Instant::now(); 2];
                        match side {
                            Side::Caller => self.caller.update(params),
                            Side::Callee => self.callee.update(params),
                        }
                    }
                    Some(Control::Replace(side, rtp, params)) => {
                        last_rx = [Instant::now(); 2];
                        let leg = match side {
                            Side::Caller => &mut self.caller,
                            Side::Callee => &mut self.callee,
                        };
                        info!(?side, port = rtp.port, "leg transferred to a new phone");
                        leg.send_rtcp_bye(&self.counters);
                        leg.rehome(rtp, params);
                    }
                    Some(Control::HandOver { side, to, to_side }) => {
                        let leg = match side {
                            Side::Caller => &self.caller,
                            Side::Callee => &self.callee,
                        };
                        match leg.params.clone() {
                            Some(params) => {
                                info!(?side, port = leg.rtp.port, "leg handed over to another call (attended transfer)");
                                let _ = to.send(Control::Replace(to_side, leg.rtp.clone(), params));
                            }
                            None => warn!(?side, "attended transfer of a leg without media; nothing handed over"),
                        }
                        self.stop_forks("joined to another call (attended transfer)");
                        return;
                    }
                    Some(Control::Answered) => {
                        last_rx = [Instant::now(); 2];
                        self.answered = true;
                        if !self.pending_forks.is_empty() {
                            self.aligner = Some(Aligner::new(Instant::now()));
                            slots.reset();
                        }
                        for (id, config) in std::mem::take(&mut self.pending_forks) {
                            self.start_fork(id, config);
                        }
                    }
                    Some(Control::AttachFork { id, config }) => {
                        if !self.answered {
                            self.pending_forks.push((id, *config));
                        } else {
                            if self.aligner.is_none() {
                                self.aligner = Some(Aligner::new(Instant::now()));
                                slots.reset();
                            }
                            self.start_fork(id, *config);
                        }
                    }
                    Some(Control::DetachFork(id)) => {
                        if let Some(i) = self.taps.iter().position(|t| t.id == id) {
                            info!(fork = %id, "detaching fork");
                            let _stopping = self.taps.remove(i).fork.stop("detached");
                        }
                    }
                    Some(Control::Dtmf { digit, duration_ms }) => {
                        inc(&self.counters.dtmf_events);
                        info!(%digit, duration_ms, "DTMF received by SIP INFO");
                        for tap in &mut self.taps {
                            tap.fork.send_dtmf(digit, duration_ms);
                        }
                    }
                    Some(Control::Stop(reason)) => {
                        self.stop_forks(&reason);
                        return;
                    }
                    None => {
                        self.stop_forks("call ended");
                        return;
                    }
                },
                _ = slots.tick(), if forking => {
                    if let Some(reason) = self.on_slot() {
                        warn!(%reason, "ending bridged call");
                        self.stop_forks(&reason);
                        let _ = self.commands.send(Command::MediaEnded { call: self.call.clone(), reason }).await;
                        return;
                    }
                }
                // The forks' sockets, connection attempts and timers: writes the frames the
                // last slot queued, reads what the services sent. Never completes.
                () = drive_forks(&mut self.taps) => {}
                r = self.caller.rtp.socket.readable() => {
                    if r.is_ok() && self.on_rtp(stereo::Leg::Caller) {
                        last_rx[0] = Instant::now();
                    }
                }
                r = self.callee.rtp.socket.readable() => {
                    if r.is_ok() && self.on_rtp(stereo::Leg::Callee) {
                        last_rx[1] = Instant::now();
                    }
                }
                r = self.caller.rtp.rtcp.readable() => {
                    if r.is_ok() {
                        self.caller.read_rtcp(&self.counters);
                    }
                }
                r = self.callee.rtp.rtcp.readable() => {
                    if r.is_ok() {
                        self.callee.read_rtcp(&self.counters);
                    }
                }
                () = &mut rtcp_timer => {
                    self.caller.poll_rtcp(&self.counters);
                    self.callee.poll_rtcp(&self.counters);
                    // A report that is not due yet leaves the deadline where it was: set
                    // the timer again so it is not polled ready in a loop.
                    let due = self.caller.rtcp_due().min(self.callee.rtcp_due());
                    rtcp_at = due;
                    rtcp_timer.as_mut().reset(due);
                }
                () = &mut idle => {
                    let now = Instant::now();
                    let deadline = last_rx[0].min(last_rx[1]) + self.inactivity;
                    if deadline > now {
                        idle.as_mut().reset(deadline);
                        continue;
                    }
                    if !self.answered || self.caller.on_hold() || self.callee.on_hold() {
                        last_rx = [now; 2];
                        idle.as_mut().reset(now + self.inactivity);
                        continue;
                    }
                    let silent = if last_rx[0] <= last_rx[1] { "caller" } else { "callee" };
                    let reason = format!("no RTP from the {silent} for {} s", self.inactivity.as_secs());
                    warn!(%reason, "ending bridged call");
                    self.stop_forks(&reason);
                    let _ = self.commands.send(Command::MediaEnded { call: self.call.clone(), reason }).await;
                    return;
                }
            }
        }
    }
}

impl Bridge {
    /// The datagrams queued on `side`'s RTP socket (it said it is readable): RTCP multiplexed
    /// there, or RTP relayed to the other leg. Returns whether it counted as the phone's RTP.
    fn on_rtp(&mut self, side: stereo::Leg) -> bool {
        let (from_leg, to_leg) = match side {
            stereo::Leg::Caller => (&mut self.caller, &mut self.callee),
            stereo::Leg::Callee => (&mut self.callee, &mut self.caller),
        };
        let (counters, aligner) = (&self.counters, &mut self.aligner);
        let heard = scratch::with(|s| {
            // One `recvmmsg` for what is queued, and no empty read after it (`udp_batch`):
            // a relay that read one datagram per readiness paid an `EAGAIN` read per packet.
            let scratch::Scratch { rx, relayed, .. } = s;
            if try_recv_batch(&from_leg.rtp.socket, rx).is_err() {
                return false;
            }
            let mut heard = false;
            for (data, from) in rx.packets() {
                if from_leg.muxed(data) {
                    from_leg.on_rtcp(data, from, counters);
                    continue;
                }
                let fork = aligner.as_mut().map(|a| (a, side));
                heard |= relay(from_leg, to_leg, data, from, relayed, counters, fork);
            }
            heard
        });
        self.forward_dtmf(side);
        heard
    }

    /// One 20 ms slot: the aligned audio of both legs goes to every fork; what the
    /// services asked for is acted on. Returns a reason to end the call.
    fn on_slot(&mut self) -> Option<String> {
        let now = Instant::now();
        let Bridge { aligner, taps, .. } = self;
        if let Some(aligner) = aligner.as_mut() {
            aligner.emit(now, &mut |caller, callee| {
                for tap in taps.iter_mut() {
                    match tap.tracks() {
                        Tracks::Inbound => {
                            if let Some(frame) = caller {
                                tap.on_inbound(frame, now);
                            }
                        }
                        Tracks::Outbound => tap.on_slot(callee, now),
                        Tracks::Both => {
                            // One stereo frame per slot: the caller's frame (or silence)
                            // waits for the callee's in the tap.
                            tap.on_inbound(caller.unwrap_or(&[0; FRAME_SAMPLES]), now);
                            tap.on_slot(callee, now);
                        }
                    }
                }
            });
        }
        // Nothing is played into a bridged call: the phones hear each other. Services'
        // audio is drained and dropped; their requests still count.
        let mut discard = [0i16; FRAME_SAMPLES];
        for tap in &mut self.taps {
            while tap.take_playback(&mut discard, &mut self.requests) {}
        }
        let mut end = None;
        for request in self.requests.drain(..) {
            match request {
                Request::Hangup => end = Some("analytics service hung up".to_string()),
                Request::Failed(reason) => end = Some(format!("required fork failed: {reason}")),
                Request::Dtmf(digits) => {
                    debug!(%digits, "DTMF from a service ignored on a bridged call")
                }
                Request::Transfer(to) => {
                    info!(%to, "transfer asked by a service ignored: a bridged call is transferred by the API or REFER")
                }
            }
        }
        end
    }

    fn start_fork(&mut self, id: String, config: ForkConfig) {
        info!(fork = %id, url = %siphon_fork::redact_url(&config.url), mode = ?config.mode, tracks = ?config.tracks, "starting fork");
        // The fork runs inside this task (the select loop drives it), as an answered
        // call's does: a slot's frame reaches the WebSocket in the same wake-up.
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
        // Exactly the room needed (a `ForkTap` is most of a kilobyte; see `leg.rs`).
        self.taps.reserve_exact(1);
        self.taps
            .push(ForkTap::new(id, fork, &config, registration));
    }

    /// A key press from one phone goes to every fork as a DTMF event.
    fn forward_dtmf(&mut self, leg: stereo::Leg) {
        let from = match leg {
            stereo::Leg::Caller => &mut self.caller,
            stereo::Leg::Callee => &mut self.callee,
        };
        if let Some(digit) = from.pressed.take() {
            for tap in &mut self.taps {
                tap.fork.send_dtmf(digit, 100);
            }
        }
    }

    fn stop_forks(&mut self, reason: &str) {
        for tap in self.taps.drain(..) {
            let _stopping = tap.fork.stop(reason);
        }
    }
}

fn law(codec: Codec) -> G711 {
    match codec {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    }
}

fn latch(leg: &mut Leg, source: SocketAddr) {
    debug!(%source, "RTP latched");
    leg.latched = Some(source);
    leg.stats.set_latched(Some(source));
}

/// Relays one datagram that arrived on `from`'s socket to `to`; returns whether it counted
/// as RTP from `from`'s peer.
fn relay(
    from: &mut Leg,
    to: &mut Leg,
    data: &[u8],
    source: SocketAddr,
    tx: &mut [u8; RELAYED],
    counters: &Counters,
    fork: Option<(&mut Aligner, stereo::Leg)>,
) -> bool {
    // Before offer/answer with this leg we cannot tell its media from stray packets.
    let Some(params) = from.params.as_ref() else {
        return false;
    };
    let packet = match RtpPacket::parse(data) {
        Ok(p) => p,
        Err(e) => {
            inc(&counters.rtp_malformed);
            debug!(%source, error = %e, "malformed RTP dropped");
            return false;
        }
    };
    // Any codec the leg's SDP allows, switching per packet (RFC 3264): each packet is
    // decoded or transcoded by its own payload type.
    let packet_codec = params.audio_codec(packet.payload_type);
    let audio = packet_codec.is_some();
    let event = Some(packet.payload_type) == params.telephone_event_pt;
    let (from_codec, sdp_remote) = (packet_codec.unwrap_or(params.codec), params.remote);
    match from.latched {
        Some(addr) if addr == source => {}
        // Latch only onto the negotiated types, so a stray sender cannot take the leg over.
        // The address the phone's SDP gave always wins: a stranger that got in before the
        // phone's first packet loses the leg again as soon as the phone sends.
        None if audio || event => latch(from, source),
        Some(_) if (audio || event) && sdp_remote == Some(source) => latch(from, source),
        _ => {
            inc(&counters.rtp_stray);
            return false;
        }
    }
    inc(&counters.rtp_packets_in);
    from.stats.received(data.len());
    from.rtcp.received(
        Instant::now().into_std(),
        packet.ssrc,
        packet.sequence_number,
        packet.timestamp,
    );
    from.publisher.tick(counters, &from.stats, None);
    if event
        && let Ok(Some(press)) = from
            .dtmf
            .handle(packet.marker, packet.timestamp, packet.payload)
        && let Some(digit) = press.digit()
    {
        inc(&counters.dtmf_events);
        info!(%digit, "DTMF received");
        from.pressed = Some(digit);
    }
    if audio && let Some((aligner, leg)) = fork {
        let mut pcm = [0i16; 1024];
        let n = law(from_codec).decode(packet.payload, &mut pcm);
        aligner.push(
            leg,
            packet.ssrc,
            packet.timestamp,
            &pcm[..n],
            Instant::now(),
        );
    }
    let Some(out) = to.params.as_ref() else {
        return true; // the other leg has not answered yet: nowhere to send
    };
    if matches!(out.direction, Direction::RecvOnly | Direction::Inactive) {
        return true; // the other leg holds the call: it does not want our media
    }
    let Some(dest) = to.latched.or(out.remote) else {
        return true;
    };
    let mut transcoded = [0u8; 1024];
    let (payload_type, payload) = if audio {
        if from_codec == out.codec {
            (out.payload_type, packet.payload)
        } else {
            let Some(buf) = transcoded.get_mut(..packet.payload.len()) else {
                return true; // larger than any 20 ms G.711 frame: not ours to relay
            };
            let (src, dst) = (law(from_codec), law(out.codec));
            for (o, i) in buf.iter_mut().zip(packet.payload) {
                *o = dst.encode_sample(src.decode_sample(*i));
            }
            (out.payload_type, &*buf)
        }
    } else {
        match out.telephone_event_pt {
            // RFC 4733 events are codec-independent: only the payload type changes.
            Some(pt) => (pt, packet.payload),
            None => return true,
        }
    };
    let (sequence_number, timestamp, new_source) = to.out.stamp(
        packet.ssrc,
        packet.sequence_number,
        packet.timestamp,
        Instant::now(),
    );
    let relayed = RtpPacket {
        marker: packet.marker || new_source,
        payload_type,
        sequence_number,
        timestamp,
        ssrc: to.out.ssrc,
        payload,
    };
    match relayed.write_to(tx) {
        Ok(n) => {
            let (socket, stats, rtcp) = (&to.rtp.socket, &to.stats, &mut to.rtcp);
            to.recut.send(&tx[..n], &mut |bytes| {
                if socket.try_send_to(bytes, dest).is_ok() {
                    inc(&counters.rtp_packets_out);
                    stats.sent(bytes.len());
                    // Siphon builds these packets: a 12-byte header, the timestamp at 4..8.
                    if let Some(ts) = bytes.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
                        let now = Instant::now().into_std();
                        rtcp.sent(now, u32::from_be_bytes(ts), bytes.len().saturating_sub(12));
                    }
                } else {
                    inc(&counters.rtp_send_failures);
                }
            });
        }
        Err(e) => debug!(error = %e, "RTP build failed"),
    }
    true
}
