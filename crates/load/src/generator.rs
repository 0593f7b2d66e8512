//! The call generator: one task, one SIP socket and one RTP socket for every call.
//!
//! # Shape
//!
//! A single tokio task on a current-thread runtime owns every call. It wakes on three things:
//! the SIP socket, the RTP socket, and a 1 ms tick. Each call is pinned to one of 20 one-ms
//! slots (its answer time modulo 20 ms), so at 4000 calls each tick sends about 200 packets,
//! spread evenly rather than in one burst every 20 ms. Sends go out in `sendmmsg` batches of
//! up to 64; receives come in `recvmmsg` batches of 64 with kernel receive timestamps
//! (`SO_TIMESTAMPNS`), so a busy generator does not inflate what it measures. Nothing per
//! packet allocates.
//!
//! All calls share one RTP socket: every SDP offer names the same address, and Siphon (a
//! separate RTP port per call) is told apart by the source port of what it sends back.
//!
//! # Per call
//!
//! INVITE (retransmitted at T1, 2·T1, ... until a response) → optional 407 → ACK + INVITE
//! with `Proxy-Authorization` → 200 → ACK → PCMU every 20 ms for `hold` → `tail` of silence
//! (so Siphon's jitter buffer drains into the fork) → BYE (retransmitted) → 200.
//!
//! Each payload is real speech (Siphon's built-in prompt, looped, each call at its own
//! offset) with the latency [`marker`](crate::marker) in its first 15 samples.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg,
    setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use siphon_media::g711::G711;
use tokio::net::UdpSocket;

use crate::clock::now_us;
use crate::digest::{Algorithm, Challenge};
use crate::hist::Histogram;
use crate::marker::{self, Origin, Stamp};
use crate::procstat::{self, ProcSample};
use crate::report::{Calls, Fork, LevelResult, ProcFigures, Rtp, SinkReport};
use crate::seq::{Arrival, SeqTracker};
use crate::sip::{self, Leg, StartLine};

const SLOTS: u64 = 20;
const SLOT_US: u64 = 1_000;
const FRAME_US: u64 = 20_000;
const BATCH: usize = 64;
const RTP_LEN: usize = 12 + 160;
const T1_US: u64 = 500_000;
const T2_US: u64 = 4_000_000;
const TRANSACTION_US: u64 = 32_000_000;

/// Credentials for routes that challenge.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: String,
    pub password: String,
    pub prefer: Option<Algorithm>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: SocketAddr,
    pub local_ip: Ipv4Addr,
    pub number: String,
    /// Calls to place (the concurrency level, when `hold` outlasts the ramp).
    pub calls: u32,
    /// Calls per second.
    pub rate: f64,
    pub hold: Duration,
    pub tail: Duration,
    pub auth: Option<Auth>,
    /// `ws://HOST:PORT/control` of the fork sink, to fetch its report at the end.
    pub sink_control: Option<String>,
    /// Processes to measure: name → pid (e.g. siphon, sink).
    pub watch: Vec<(String, u32)>,
    pub label: String,
    /// Socket buffer size for the RTP socket (forced, needs root; else the sysctl cap).
    pub socket_buffer: usize,
    /// Wait after the last call before asking the sink (fork stop messages, flushes).
    pub settle: Duration,
    /// Siphon's RTP port range: receive drops on those sockets are read at the end of the
    /// steady window (loss on the way up, attributed to Siphon's sockets only).
    pub siphon_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Bridge mode: register as this account (Contact: the generator's SIP socket) and
    /// answer the calls the server places to it, sending RTP on those legs too. Each call's
    /// two legs are paired by the caller's From user (`b<index>`).
    pub answer_as: Option<Auth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Inviting,
    Established,
    Tail,
    Byeing,
    Done,
}

struct Call {
    state: State,
    leg: Leg,
    timer_gen: u32,
    // INVITE transaction
    cseq: u32,
    branch: String,
    branch_n: u32,
    invite: String,
    first_invite_us: u64,
    rto_us: u64,
    next_retx_us: u64,
    provisional: bool,
    authenticated: bool,
    // dialog
    to_tag: String,
    remote_uri: String,
    siphon_port: u16,
    media: Media,
    /// Bridge mode: the leg Siphon placed to the generator's registered phone for this call.
    callee: Option<Box<Callee>>,
    // BYE transaction
    bye: String,
    outcome: Option<Result<(), String>>,
    answered: bool,
}

/// One leg's RTP as the generator sends and receives it.
struct Media {
    remote: Option<SockaddrIn>,
    // out
    seq: u16,
    ts: u32,
    ssrc: u32,
    counter: u16,
    audio_pos: usize,
    sent: u64,
    // in
    down: SeqTracker,
    last_arrival_us: u64,
    /// Generator markers that arrived on this leg: its own echoed back (echo), or the
    /// other leg's relayed through the bridge (bridge mode).
    echo: SeqTracker,
    playback: SeqTracker,
}

impl Media {
    fn new(audio_pos: usize) -> Media {
        Media {
            remote: None,
            seq: rand::random(),
            ts: rand::random(),
            ssrc: rand::random(),
            counter: 0,
            audio_pos,
            sent: 0,
            down: SeqTracker::default(),
            last_arrival_us: 0,
            echo: SeqTracker::default(),
            playback: SeqTracker::default(),
        }
    }
}

/// Bridge mode: the callee leg of a call, answered by the generator as the registered phone.
struct Callee {
    call_id: String,
    /// The 200 we answered with, sent again if Siphon retransmits its INVITE.
    answer: String,
    media: Media,
    /// Siphon ended this leg with a BYE.
    byed: bool,
}

/// In `slots` and `by_port`: the entry is the call's callee leg, not its caller leg.
const CALLEE: u32 = 1 << 31;

struct TxBatch {
    bufs: Vec<[u8; RTP_LEN]>,
    addrs: Vec<Option<SockaddrIn>>,
    hdrs: MultiHeaders<SockaddrIn>,
}

struct RxBatch {
    bufs: Vec<[u8; 2048]>,
    hdrs: MultiHeaders<SockaddrIn>,
    meta: Vec<(usize, u16, Option<u64>)>,
}

struct Engine {
    cfg: Config,
    run_id: u32,
    sip: UdpSocket,
    /// Not registered with the runtime on purpose: polled every tick (see `drain_rtp`).
    rtp: std::net::UdpSocket,
    rtp_local: SocketAddr,
    calls: Vec<Call>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    slots: Vec<Vec<u32>>,
    /// Siphon RTP port → call index.
    by_port: Vec<u32>,
    audio: Vec<u8>,
    t0: u64,
    next_slot: u64,
    tx: TxBatch,
    tx_len: usize,
    rx: RxBatch,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, µs: kernel receive stamps are real time.
    realtime_offset: i64,
    /// Bridge mode: callee leg Call-ID → call index.
    callee_by_id: std::collections::HashMap<String, u32>,
    /// INVITEs from the server that named no call of ours.
    stray_invites: u64,
    // results
    /// Bridge mode: one-way latency through the bridge (either direction), µs.
    bridge: Histogram,
    setup: Histogram,
    lag: Histogram,
    echo_rtt: Histogram,
    playback: Histogram,
    pacing: Histogram,
    counts: Rtp,
    resolved: u32,
    done: u32,
    window: Option<Window>,
    window_closed: bool,
}

struct Window {
    start_us: u64,
    end_us: Option<u64>,
    start: Vec<Option<ProcSample>>,
    end: Vec<Option<ProcSample>>,
    cores_start: Vec<(u64, u64)>,
    cores_end: Vec<(u64, u64)>,
    /// Siphon RTP sockets open and their receive drops, at the end.
    socket_drops: Option<(u64, u64)>,
}

/// Runs one level and returns its result.
pub fn run(cfg: Config) -> anyhow::Result<LevelResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> anyhow::Result<LevelResult> {
    if cfg.calls == 0 || cfg.rate <= 0.0 {
        bail!("need at least one call and a positive rate");
    }
    if cfg.answer_as.is_some() && cfg.auth.is_some() {
        bail!(
            "bridge mode pairs a call's legs by the caller's From user: call a public route (no --auth)"
        );
    }
    let sip = UdpSocket::bind(SocketAddr::new(cfg.local_ip.into(), 0)).await?;
    let rtp = std::net::UdpSocket::bind(SocketAddr::new(cfg.local_ip.into(), 0))?;
    rtp.set_nonblocking(true)?;
    for (opt, name) in [(true, "receive"), (false, "send")] {
        let r = if opt {
            setsockopt(&rtp, sockopt::RcvBufForce, &cfg.socket_buffer)
                .or_else(|_| setsockopt(&rtp, sockopt::RcvBuf, &cfg.socket_buffer))
        } else {
            setsockopt(&rtp, sockopt::SndBufForce, &cfg.socket_buffer)
                .or_else(|_| setsockopt(&rtp, sockopt::SndBuf, &cfg.socket_buffer))
        };
        r.with_context(|| format!("RTP {name} buffer"))?;
    }
    setsockopt(&rtp, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    let _ = setsockopt(&sip, sockopt::RcvBuf, &(4 << 20));
    let sip_local = sip.local_addr()?;
    let rtp_local = rtp.local_addr()?;
    if let Some(phone) = &cfg.answer_as {
        register(&sip, cfg.server, sip_local, phone)
            .await
            .context("registering the callee")?;
    }

    let wav = siphon_media::wav::Wav::parse(include_bytes!("../../../configs/prompts/welcome.wav"))
        .context("built-in prompt")?;
    let mut audio = wav.to_g711(G711::Pcmu);
    audio.truncate(audio.len() / 160 * 160);
    if audio.is_empty() {
        bail!("empty prompt");
    }
    let run_id = rand::random::<u32>();
    let n = cfg.calls as usize;
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        calls.push(Call {
            state: State::Pending,
            leg: Leg {
                server: cfg.server,
                local: sip_local,
                number: cfg.number.clone(),
                user: match (&cfg.auth, &cfg.answer_as) {
                    (Some(a), _) => a.user.clone(),
                    // The server presents a public route's caller by its From: that
                    // names the call on the callee leg.
                    (None, Some(_)) => format!("b{i}"),
                    (None, None) => "load".to_string(),
                },
                call_id: format!("{i}-{run_id:08x}@siphon-load"),
                from_tag: format!("{run_id:x}{i:x}"),
            },
            timer_gen: 0,
            cseq: 1,
            branch: String::new(),
            branch_n: 0,
            invite: String::new(),
            first_invite_us: 0,
            rto_us: T1_US,
            next_retx_us: 0,
            provisional: false,
            authenticated: false,
            to_tag: String::new(),
            remote_uri: String::new(),
            siphon_port: 0,
            media: Media::new((i * 7 * 160) % audio.len()),
            callee: None,
            bye: String::new(),
            outcome: None,
            answered: false,
        });
    }
    let t0 = now_us() + 200_000;
    let mut timers = BinaryHeap::with_capacity(2 * n);
    for i in 0..n {
        let at = t0 + (i as f64 * 1e6 / cfg.rate) as u64;
        timers.push(Reverse((at, i as u32, 0)));
    }
    let realtime_offset = {
        let rt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        rt - now_us() as i64
    };
    let mut e = Engine {
        run_id,
        sip,
        rtp,
        rtp_local,
        calls,
        timers,
        slots: vec![Vec::new(); SLOTS as usize],
        by_port: vec![u32::MAX; 65536],
        audio,
        t0,
        next_slot: 0,
        tx: TxBatch {
            bufs: vec![[0u8; RTP_LEN]; BATCH],
            addrs: vec![None; BATCH],
            hdrs: MultiHeaders::preallocate(BATCH, None),
        },
        tx_len: 0,
        rx: RxBatch {
            bufs: vec![[0u8; 2048]; BATCH],
            hdrs: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec))),
            meta: Vec::with_capacity(BATCH),
        },
        realtime_offset,
        callee_by_id: std::collections::HashMap::with_capacity(n),
        stray_invites: 0,
        bridge: Histogram::default(),
        setup: Histogram::default(),
        lag: Histogram::default(),
        echo_rtt: Histogram::default(),
        playback: Histogram::default(),
        pacing: Histogram::default(),
        counts: Rtp::default(),
        resolved: 0,
        done: 0,
        window: None,
        window_closed: false,
        cfg,
    };
    let base: Vec<Option<ProcSample>> = e.sample_procs();
    let self_start = procstat::sample(std::process::id(), now_us());
    let udp_start = procstat::udp_drops();
    let ramp_us = (e.cfg.calls as f64 * 1e6 / e.cfg.rate) as u64;
    let deadline = t0
        + ramp_us
        + e.cfg.hold.as_micros() as u64
        + e.cfg.tail.as_micros() as u64
        + 2 * TRANSACTION_US;
    e.event_loop(deadline).await;
    // Bridge mode: the server's BYEs to the callee legs follow its 200 to the caller's.
    if e.cfg.answer_as.is_some() {
        let until = now_us() + 2_000_000;
        while now_us() < until
            && e.calls
                .iter()
                .any(|c| c.callee.as_ref().is_some_and(|k| !k.byed))
        {
            if tokio::time::timeout(Duration::from_millis(100), e.sip.readable())
                .await
                .is_ok_and(|r| r.is_ok())
            {
                e.drain_sip();
            }
        }
    }
    for i in 0..e.calls.len() {
        if e.calls[i].state != State::Done {
            e.finish(i, Err("unfinished".into()), now_us());
        }
    }
    let self_end = procstat::sample(std::process::id(), now_us());
    let udp_drops = procstat::udp_drops().since(&udp_start);
    tokio::time::sleep(e.cfg.settle).await;
    let sink = match &e.cfg.sink_control {
        Some(url) => Some(fetch_sink_report(url).await?),
        None => None,
    };
    Ok(e.result(base, self_start, self_end, udp_drops, sink))
}

/// Asks the sink for its report over its `/control` WebSocket.
pub async fn fetch_sink_report(url: &str) -> anyhow::Result<SinkReport> {
    use futures_util::StreamExt as _;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("sink control {url}"))?;
    while let Some(msg) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg? {
            return Ok(serde_json::from_str(&t)?);
        }
    }
    bail!("sink closed without a report")
}

/// Registers `phone` with its Contact at our SIP socket (answering one digest challenge),
/// before any call is placed.
async fn register(
    sip: &UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    phone: &Auth,
) -> anyhow::Result<()> {
    let call_id = format!("reg-{:08x}@siphon-load", rand::random::<u32>());
    let mut auth: Option<String> = None;
    let mut buf = vec![0u8; 65536];
    for cseq in 1..=3u32 {
        let branch = format!("z9hG4bK-reg-{:08x}", rand::random::<u32>());
        let msg = sip::register(
            server,
            local,
            &phone.user,
            &call_id,
            "regtag",
            &branch,
            cseq,
            3600,
            auth.as_deref(),
        );
        // A few tries: UDP, and a server that may still be starting.
        let mut reply = None;
        for _ in 0..5 {
            sip.send_to(msg.as_bytes(), server).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            while let Ok(r) = tokio::time::timeout_at(deadline, sip.recv_from(&mut buf)).await {
                let (n, _) = r?;
                if let Some(m) = sip::parse(&buf[..n])
                    && m.call_id == call_id
                    && m.cseq == cseq
                    && let StartLine::Response(code) = m.start
                    && code >= 200
                {
                    let challenges: Vec<String> =
                        m.challenges.iter().map(|(v, _)| v.to_string()).collect();
                    reply = Some((code, challenges));
                    break;
                }
            }
            if reply.is_some() {
                break;
            }
        }
        match reply {
            None => bail!("no answer to REGISTER from {server}"),
            Some((200..=299, _)) => return Ok(()),
            Some((401 | 407, challenges)) if auth.is_none() => {
                let Some(ch) =
                    Challenge::choose(challenges.iter().map(String::as_str), phone.prefer)
                else {
                    bail!("REGISTER challenged without a usable challenge");
                };
                let uri = format!("sip:{server}");
                let cnonce = format!("{:016x}", rand::random::<u64>());
                auth = Some(ch.authorization(
                    &phone.user,
                    &phone.password,
                    "REGISTER",
                    &uri,
                    1,
                    &cnonce,
                ));
            }
            Some((code, _)) => bail!("REGISTER answered {code}"),
        }
    }
    bail!("REGISTER not accepted")
}

fn to_sockaddr(a: SocketAddr) -> Option<SockaddrIn> {
    match a {
        SocketAddr::V4(v4) => Some(SockaddrIn::from(v4)),
        SocketAddr::V6(_) => None,
    }
}

impl Engine {
    fn sample_procs(&self) -> Vec<Option<ProcSample>> {
        let now = now_us();
        let mut v: Vec<Option<ProcSample>> = self
            .cfg
            .watch
            .iter()
            .map(|(_, pid)| procstat::sample(*pid, now))
            .collect();
        v.push(procstat::sample(std::process::id(), now));
        v
    }

    async fn event_loop(&mut self, deadline: u64) {
        loop {
            let now = now_us();
            if self.done as usize == self.calls.len() || now >= deadline {
                return;
            }
            let next_slot_at = self.t0 + self.next_slot * SLOT_US;
            let next_timer = self.timers.peek().map_or(u64::MAX, |Reverse((t, _, _))| *t);
            let wake = next_slot_at.min(next_timer).min(deadline);
            let sleep = tokio::time::sleep(Duration::from_micros(wake.saturating_sub(now)));
            tokio::select! {
                () = sleep => {}
                r = self.sip.readable() => if r.is_ok() { self.drain_sip(); },
            }
            self.drain_rtp();
            let now = now_us();
            self.fire_timers(now);
            self.send_due_slots(now);
            self.check_window(now);
        }
    }

    // ---- timers and SIP ----

    fn schedule(&mut self, i: usize, at: u64) {
        let c = &mut self.calls[i];
        c.timer_gen = c.timer_gen.wrapping_add(1);
        self.timers.push(Reverse((at, i as u32, c.timer_gen)));
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(Reverse((at, i, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let i = i as usize;
            if self.calls[i].timer_gen != generation {
                continue;
            }
            self.on_timer(i, now);
        }
    }

    fn on_timer(&mut self, i: usize, now: u64) {
        match self.calls[i].state {
            State::Pending => {
                let c = &mut self.calls[i];
                c.first_invite_us = now;
                c.state = State::Inviting;
                self.send_invite(i, None, now);
            }
            State::Inviting => {
                let c = &self.calls[i];
                if now >= c.first_invite_us + TRANSACTION_US {
                    self.finish(i, Err("INVITE timeout".into()), now);
                } else if !c.provisional && now >= c.next_retx_us {
                    let msg = c.invite.clone();
                    self.send_sip(&msg);
                    let c = &mut self.calls[i];
                    c.rto_us = (c.rto_us * 2).min(T2_US);
                    c.next_retx_us = now + c.rto_us;
                    let at = c.next_retx_us.min(c.first_invite_us + TRANSACTION_US);
                    self.schedule(i, at);
                } else {
                    let at = self.calls[i].first_invite_us + TRANSACTION_US;
                    self.schedule(i, at);
                }
            }
            State::Established => {
                // Hold time is over: stop sending, let the far end's buffers drain.
                self.calls[i].state = State::Tail;
                self.window_closed = true;
                let at = now + self.cfg.tail.as_micros() as u64;
                self.schedule(i, at);
            }
            State::Tail => {
                let c = &mut self.calls[i];
                c.state = State::Byeing;
                c.cseq += 1;
                c.branch_n += 1;
                c.branch = sip::branch(i as u32, c.branch_n, self.run_id);
                c.bye = c.leg.bye(&c.remote_uri, &c.branch, c.cseq, &c.to_tag);
                c.first_invite_us = now; // reused as the BYE transaction start
                c.rto_us = T1_US;
                let msg = c.bye.clone();
                self.send_sip(&msg);
                self.schedule(i, now + T1_US);
            }
            State::Byeing => {
                let c = &self.calls[i];
                if now >= c.first_invite_us + TRANSACTION_US {
                    self.finish(i, Err("BYE timeout".into()), now);
                    return;
                }
                let msg = c.bye.clone();
                self.send_sip(&msg);
                let c = &mut self.calls[i];
                c.rto_us = (c.rto_us * 2).min(T2_US);
                let at = now + c.rto_us;
                self.schedule(i, at);
            }
            State::Done => {}
        }
    }

    fn send_invite(&mut self, i: usize, auth: Option<(String, bool)>, now: u64) {
        let sdp = sip::sdp_offer(self.rtp_local, u64::from(self.run_id) + i as u64);
        let c = &mut self.calls[i];
        c.branch_n += 1;
        c.branch = sip::branch(i as u32, c.branch_n, self.run_id);
        c.invite = c.leg.invite(
            &c.branch,
            c.cseq,
            &sdp,
            auth.as_ref().map(|(v, w)| (v.as_str(), *w)),
        );
        c.provisional = false;
        c.rto_us = T1_US;
        c.next_retx_us = now + T1_US;
        let msg = c.invite.clone();
        self.send_sip(&msg);
        self.schedule(i, now + T1_US);
    }

    fn send_sip(&self, msg: &str) {
        if self
            .sip
            .try_send_to(msg.as_bytes(), self.cfg.server)
            .is_err()
        {
            // Lost like any UDP datagram; the retransmission timer covers it.
        }
    }

    fn drain_sip(&mut self) {
        let mut buf = [0u8; 65536];
        loop {
            let n = match self.sip.try_recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(_) => return,
            };
            let now = now_us();
            let Some(msg) = sip::parse(&buf[..n]) else {
                continue;
            };
            let Some(i) = msg
                .call_id
                .split('-')
                .next()
                .and_then(|x| x.parse::<usize>().ok())
                .filter(|i| *i < self.calls.len() && self.calls[*i].leg.call_id == msg.call_id)
            else {
                if let StartLine::Request(method) = msg.start {
                    self.on_foreign_request(method, &msg, now);
                }
                continue;
            };
            match msg.start {
                StartLine::Response(code) => self.on_response(i, code, &msg, now),
                StartLine::Request("ACK") => {}
                StartLine::Request(method) => {
                    let ok = sip::ok_response(&msg);
                    self.send_sip(&ok);
                    if method == "BYE"
                        && matches!(self.calls[i].state, State::Established | State::Tail)
                    {
                        self.finish(i, Err("BYE from Siphon".into()), now);
                    }
                }
            }
        }
    }

    /// A request outside the caller legs' dialogs: in bridge mode the server's INVITE, ACK
    /// and BYE on a callee leg; anything else (OPTIONS, a stray BYE) gets a 200.
    fn on_foreign_request(&mut self, method: &str, msg: &sip::Message<'_>, now: u64) {
        match method {
            "ACK" => {}
            "INVITE" if self.cfg.answer_as.is_some() => self.on_callee_invite(msg, now),
            _ => {
                if method == "BYE"
                    && let Some(&i) = self.callee_by_id.get(msg.call_id)
                    && let Some(k) = self.calls[i as usize].callee.as_mut()
                {
                    k.byed = true;
                }
                let ok = sip::ok_response(msg);
                self.send_sip(&ok);
            }
        }
    }

    /// Bridge mode: the server calls the registered phone for call `b<i>`; answer at once
    /// and start this leg's RTP (it sends while the caller leg is up).
    fn on_callee_invite(&mut self, msg: &sip::Message<'_>, now: u64) {
        let Some(i) = sip::from_user(msg)
            .and_then(|u| u.strip_prefix('b'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < self.calls.len())
        else {
            self.stray_invites += 1;
            return;
        };
        if let Some(k) = &self.calls[i].callee {
            if k.call_id == msg.call_id {
                // A retransmission (our 200 crossed it, or was lost): the same answer.
                let answer = k.answer.clone();
                self.send_sip(&answer);
            } else {
                self.stray_invites += 1;
            }
            return;
        }
        let Some(remote) = sip::sdp_audio_addr(msg.body).and_then(to_sockaddr) else {
            self.stray_invites += 1;
            return;
        };
        let user = self
            .cfg
            .answer_as
            .as_ref()
            .map_or("callee", |a| a.user.as_str());
        let contact = format!("sip:{user}@{}", self.calls[i].leg.local);
        let session = (u64::from(self.run_id) << 20) + i as u64;
        let sdp = sip::sdp_offer(self.rtp_local, session);
        let answer = sip::answer_invite(msg, &format!("cb{i:x}"), &contact, &sdp);
        // Another stretch of the prompt than the caller's.
        let mut media = Media::new((i * 7 * 160 + 50 * 160) % self.audio.len());
        media.remote = Some(remote);
        self.callee_by_id.insert(msg.call_id.to_string(), i as u32);
        self.by_port[usize::from(remote.port())] = i as u32 | CALLEE;
        self.send_sip(&answer);
        self.calls[i].callee = Some(Box::new(Callee {
            call_id: msg.call_id.to_string(),
            answer,
            media,
            byed: false,
        }));
        // Half a frame after the caller leg's slot would be, so the legs' sends interleave.
        let slot = (now.saturating_sub(self.t0) / SLOT_US + 1 + SLOTS / 2) % SLOTS;
        self.slots[slot as usize].push(i as u32 | CALLEE);
    }

    fn on_response(&mut self, i: usize, code: u16, msg: &sip::Message<'_>, now: u64) {
        let c = &self.calls[i];
        if msg.cseq_method == "INVITE" {
            if msg.cseq != c.cseq {
                return;
            }
            match code {
                100..=199 => self.calls[i].provisional = true,
                200..=299 => self.on_answer(i, msg, now),
                401 | 407
                    if !c.authenticated
                        && self.cfg.auth.is_some()
                        && c.state == State::Inviting =>
                {
                    let ack = c
                        .leg
                        .ack(&c.leg.request_uri(), &c.branch, c.cseq, msg.to_tag);
                    self.send_sip(&ack);
                    let Some(auth) = self.cfg.auth.clone() else {
                        return;
                    };
                    let www = msg.challenges.first().is_some_and(|(_, w)| *w);
                    let Some(ch) =
                        Challenge::choose(msg.challenges.iter().map(|(v, _)| *v), auth.prefer)
                    else {
                        self.finish(i, Err(format!("{code} without a usable challenge")), now);
                        return;
                    };
                    let uri = c.leg.request_uri();
                    let cnonce = format!("{:016x}", rand::random::<u64>());
                    let value =
                        ch.authorization(&auth.user, &auth.password, "INVITE", &uri, 1, &cnonce);
                    let c = &mut self.calls[i];
                    c.authenticated = true;
                    c.cseq += 1;
                    self.send_invite(i, Some((value, www)), now);
                }
                300.. if c.state == State::Inviting => {
                    let ack = c
                        .leg
                        .ack(&c.leg.request_uri(), &c.branch, c.cseq, msg.to_tag);
                    self.send_sip(&ack);
                    self.finish(i, Err(format!("INVITE {code}")), now);
                }
                _ => {}
            }
        } else if msg.cseq_method == "BYE" && c.state == State::Byeing && code >= 200 {
            let r = if code < 300 {
                Ok(())
            } else {
                Err(format!("BYE {code}"))
            };
            self.finish(i, r, now);
        }
    }

    fn on_answer(&mut self, i: usize, msg: &sip::Message<'_>, now: u64) {
        let run_id = self.run_id;
        let c = &mut self.calls[i];
        if c.state != State::Inviting {
            // A retransmitted 200: our ACK was lost. Send it again.
            if c.answered && c.state != State::Done {
                c.branch_n += 1;
                let ack = c.leg.ack(
                    &c.remote_uri,
                    &sip::branch(i as u32, c.branch_n, run_id),
                    c.cseq,
                    Some(&c.to_tag),
                );
                self.send_sip(&ack);
            }
            return;
        }
        let Some(remote) = sip::sdp_audio_addr(msg.body).and_then(to_sockaddr) else {
            self.finish(i, Err("200 without usable SDP".into()), now);
            return;
        };
        c.to_tag = msg.to_tag.unwrap_or_default().to_string();
        c.remote_uri = msg
            .contact
            .map_or_else(|| c.leg.request_uri(), str::to_string);
        c.media.remote = Some(remote);
        c.siphon_port = remote.port();
        c.branch_n += 1;
        let ack = c.leg.ack(
            &c.remote_uri,
            &sip::branch(i as u32, c.branch_n, run_id),
            c.cseq,
            Some(&c.to_tag),
        );
        c.state = State::Established;
        c.answered = true;
        let setup = now - c.first_invite_us;
        let port = usize::from(remote.port());
        self.send_sip(&ack);
        self.setup.record(setup);
        self.rtp_answered(i, port, now);
        self.resolved += 1;
        let at = now + self.cfg.hold.as_micros() as u64;
        self.schedule(i, at);
    }

    fn rtp_answered(&mut self, i: usize, port: usize, now: u64) {
        self.by_port[port] = i as u32;
        let slot = (now.saturating_sub(self.t0) / SLOT_US + 1) % SLOTS;
        self.slots[slot as usize].push(i as u32);
    }

    fn finish(&mut self, i: usize, outcome: Result<(), String>, now: u64) {
        let c = &mut self.calls[i];
        if c.state == State::Done {
            return;
        }
        if !c.answered {
            self.resolved += 1;
        } else if c.state == State::Established {
            // A call lost while up ends the steady window.
            self.window_closed = true;
        }
        c.state = State::Done;
        c.outcome = Some(outcome);
        c.timer_gen = c.timer_gen.wrapping_add(1);
        self.done += 1;
        let _ = now;
    }

    fn check_window(&mut self, now: u64) {
        if self.window.is_none() && self.resolved as usize == self.calls.len() {
            self.window = Some(Window {
                start_us: now,
                end_us: None,
                start: self.sample_procs(),
                end: Vec::new(),
                cores_start: procstat::cores(),
                cores_end: Vec::new(),
                socket_drops: None,
            });
        }
        if self.window_closed {
            let procs = self
                .window
                .as_ref()
                .filter(|w| w.end_us.is_none())
                .map(|_| self.sample_procs());
            if let (Some(w), Some(p)) = (self.window.as_mut(), procs) {
                w.end_us = Some(now);
                w.end = p;
                w.cores_end = procstat::cores();
                w.socket_drops = self.cfg.siphon_ports.clone().map(procstat::socket_drops);
            }
        }
    }

    // ---- RTP out ----

    fn send_due_slots(&mut self, now: u64) {
        while self.t0 + self.next_slot * SLOT_US <= now {
            let nominal = self.t0 + self.next_slot * SLOT_US;
            let slot = (self.next_slot % SLOTS) as usize;
            self.next_slot += 1;
            let members = std::mem::take(&mut self.slots[slot]);
            for &m in &members {
                if self.calls[(m & !CALLEE) as usize].state == State::Established {
                    self.build_packet(m, nominal);
                }
            }
            // Keep only legs that may still send: a callee leg answers before its caller
            // leg is up, and waits for it (the caller leg must be able to take its audio).
            let mut members = members;
            members.retain(|&m| match self.calls[(m & !CALLEE) as usize].state {
                State::Established => true,
                State::Pending | State::Inviting => m & CALLEE != 0,
                _ => false,
            });
            self.slots[slot] = members;
        }
        self.flush_tx();
    }

    /// The next packet of leg `m` (a call index, with [`CALLEE`] for its callee leg).
    fn build_packet(&mut self, m: u32, nominal: u64) {
        if self.tx_len == BATCH {
            self.flush_tx();
        }
        let call = &mut self.calls[(m & !CALLEE) as usize];
        let c = if m & CALLEE == 0 {
            &mut call.media
        } else if let Some(k) = call.callee.as_mut() {
            &mut k.media
        } else {
            return;
        };
        let now = now_us();
        self.lag.record(now.saturating_sub(nominal));
        let buf = &mut self.tx.bufs[self.tx_len];
        buf[0] = 0x80;
        buf[1] = if c.sent == 0 { 0x80 } else { 0x00 }; // marker bit on the first packet, PT 0
        buf[2..4].copy_from_slice(&c.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&c.ts.to_be_bytes());
        buf[8..12].copy_from_slice(&c.ssrc.to_be_bytes());
        buf[12..].copy_from_slice(&self.audio[c.audio_pos..c.audio_pos + 160]);
        marker::write_ulaw(
            &mut buf[12..],
            Stamp {
                origin: Origin::Generator,
                counter: c.counter,
                time_us: now as u32,
            },
        );
        c.audio_pos = (c.audio_pos + 160) % self.audio.len();
        c.seq = c.seq.wrapping_add(1);
        c.ts = c.ts.wrapping_add(160);
        c.counter = c.counter.wrapping_add(1);
        c.sent += 1;
        self.tx.addrs[self.tx_len] = c.remote;
        self.tx_len += 1;
    }

    fn flush_tx(&mut self) {
        let fd: RawFd = self.rtp.as_raw_fd();
        let mut start = 0;
        while start < self.tx_len {
            let iovs: Vec<[IoSlice<'_>; 1]> = self.tx.bufs[start..self.tx_len]
                .iter()
                .map(|b| [IoSlice::new(&b[..])])
                .collect();
            let cmsgs: [ControlMessage<'_>; 0] = [];
            let r = sendmmsg(
                fd,
                &mut self.tx.hdrs,
                &iovs,
                &self.tx.addrs[start..self.tx_len],
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|res| res.count());
            match r {
                Ok(n) if n > 0 => {
                    self.counts.sent += n as u64;
                    start += n;
                }
                _ => {
                    // Socket full or an error: these packets are lost, and counted.
                    self.counts.send_errors += (self.tx_len - start) as u64;
                    self.counts.sent += (self.tx_len - start) as u64;
                    break;
                }
            }
        }
        self.tx_len = 0;
    }

    // ---- RTP in ----

    /// Reads everything queued on the RTP socket. It is polled once per loop turn (at least
    /// every millisecond) instead of waiting for readiness: a socket nobody waits on costs
    /// the sender no wake-up, and on loopback that wake-up (an inter-processor interrupt,
    /// very dear in a VM) is paid by Siphon's core in its `sendto`. Arrival times come from
    /// the kernel (`SO_TIMESTAMPNS`), so polling does not blur them.
    fn drain_rtp(&mut self) {
        loop {
            let fd = self.rtp.as_raw_fd();
            let RxBatch { bufs, hdrs, meta } = &mut self.rx;
            meta.clear();
            let r = (|| -> std::io::Result<()> {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(&mut b[..])])
                    .collect();
                let res = recvmmsg(fd, hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                    .map_err(std::io::Error::from)?;
                for m in res {
                    let port = m.address.map_or(0, |a| a.port());
                    let ts = m.cmsgs().ok().and_then(|mut it| {
                        it.find_map(|c| match c {
                            ControlMessageOwned::ScmTimestampns(t) => {
                                Some(t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
                            }
                            _ => None,
                        })
                    });
                    meta.push((m.bytes, port, ts.map(|t| t as u64)));
                }
                Ok(())
            })();
            if r.is_err() || self.rx.meta.is_empty() {
                return;
            }
            let now = now_us();
            let count = self.rx.meta.len();
            for k in 0..count {
                let (len, port, ts) = self.rx.meta[k];
                let arrival = ts.map_or(now, |t| (t as i64 - self.realtime_offset) as u64);
                self.on_rtp(k, len, port, arrival);
            }
            if count < BATCH {
                return;
            }
        }
    }

    fn on_rtp(&mut self, k: usize, len: usize, port: u16, arrival: u64) {
        let data = &self.rx.bufs[k][..len];
        let m = self.by_port[usize::from(port)];
        if m == u32::MAX || len < 12 || data[0] >> 6 != 2 || data[1] & 0x7F != 0 {
            self.counts.stray += 1;
            return;
        }
        let bridged = self.cfg.answer_as.is_some();
        let call = &mut self.calls[(m & !CALLEE) as usize];
        let c = if m & CALLEE == 0 {
            &mut call.media
        } else if let Some(k) = call.callee.as_mut() {
            &mut k.media
        } else {
            self.counts.stray += 1;
            return;
        };
        self.counts.received += 1;
        let seq = u16::from_be_bytes([data[2], data[3]]);
        if let Arrival::Fresh { gap } = c.down.push(seq) {
            if gap == 0 && c.last_arrival_us != 0 {
                let d = arrival.abs_diff(c.last_arrival_us);
                self.pacing.record(d.abs_diff(FRAME_US));
            }
            c.last_arrival_us = arrival;
        }
        let header = 12 + 4 * usize::from(data[0] & 0x0F);
        let Some(payload) = data.get(header..) else {
            return;
        };
        if let Some(stamp) = marker::read_ulaw(payload) {
            let age = u64::from(stamp.age_us(arrival));
            match stamp.origin {
                Origin::Generator => {
                    if let Arrival::Fresh { .. } = c.echo.push(stamp.counter) {
                        // Bridge mode: the other leg's packet, one way through the bridge.
                        if bridged {
                            self.bridge.record(age);
                        } else {
                            self.echo_rtt.record(age);
                        }
                    }
                }
                Origin::Sink => {
                    if let Arrival::Fresh { .. } = c.playback.push(stamp.counter) {
                        self.playback.record(age);
                    }
                }
            }
        }
    }

    // ---- results ----

    fn result(
        &self,
        base: Vec<Option<ProcSample>>,
        self_start: Option<ProcSample>,
        self_end: Option<ProcSample>,
        udp_drops: procstat::UdpDrops,
        sink: Option<SinkReport>,
    ) -> LevelResult {
        let mut calls = Calls {
            attempted: self.calls.len() as u64,
            ..Calls::default()
        };
        let mut rtp = self.counts.clone();
        let mut echo_fresh = 0;
        let mut playback_fresh = 0;
        let debug = std::env::var_os("SIPHON_LOAD_DEBUG").is_some();
        for c in &self.calls {
            if debug {
                eprintln!(
                    "{}: sent {} echo {:?} fresh {} playback {:?} down {:?}/{} {:?}",
                    c.leg.call_id,
                    c.media.sent,
                    c.media.echo.span(),
                    c.media.echo.fresh,
                    c.media.playback.span(),
                    c.media.down.span(),
                    c.media.down.fresh,
                    c.outcome
                );
            }
            if c.answered {
                calls.answered += 1;
            }
            match &c.outcome {
                Some(Ok(())) => calls.completed += 1,
                Some(Err(reason)) => *calls.failed.entry(reason.clone()).or_default() += 1,
                None => *calls.failed.entry("unfinished".into()).or_default() += 1,
            }
            rtp.down_expected += c.media.down.expected();
            rtp.down_missing += c.media.down.missing();
            echo_fresh += c.media.echo.fresh;
            playback_fresh += c.media.playback.fresh;
        }
        rtp.echo_fresh = echo_fresh;
        rtp.playback_fresh = playback_fresh;
        let mut notes = Vec::new();
        let sent: u64 = self
            .calls
            .iter()
            .filter(|c| c.answered)
            .map(|c| c.media.sent)
            .sum();
        let host_drops = udp_drops.rcvbuf_errors + udp_drops.in_errors;
        let (fork, up_missing, not_returned) = match &sink {
            // Bridge mode: each leg's markers counted on the other leg. Up is caller →
            // callee, down callee → caller; `sent` and `down_expected` become each
            // direction's packets so the loss columns read per direction.
            _ if self.cfg.answer_as.is_some() => {
                let (mut up_sent, mut up_missing, mut without, mut unended) = (0, 0, 0, 0);
                let (mut down_sent, mut down_missing) = (0, 0);
                for c in self.calls.iter().filter(|c| c.answered) {
                    up_sent += c.media.sent;
                    match &c.callee {
                        Some(k) => {
                            up_missing += c.media.sent.saturating_sub(k.media.echo.fresh);
                            down_sent += k.media.sent;
                            down_missing += k.media.sent.saturating_sub(c.media.echo.fresh);
                            if !k.byed {
                                unended += 1;
                            }
                        }
                        None => {
                            without += 1;
                            up_missing += c.media.sent;
                        }
                    }
                }
                notes.push(format!(
                    "bridge: {up_sent} packets caller → callee, {down_sent} callee → caller ({} sent in all)",
                    rtp.sent
                ));
                if without > 0 {
                    notes.push(format!("{without} answered calls had no callee leg"));
                }
                if unended > 0 {
                    notes.push(format!("{unended} callee legs got no BYE"));
                }
                if self.stray_invites > 0 {
                    notes.push(format!("{} INVITEs named no call", self.stray_invites));
                }
                if let Some((sockets, drops)) = self.window.as_ref().and_then(|w| w.socket_drops)
                    && drops > 0
                {
                    notes.push(format!(
                        "{sockets} server RTP sockets dropped {drops} datagrams"
                    ));
                }
                rtp.sent = up_sent;
                rtp.down_expected = down_sent;
                rtp.down_missing = down_missing;
                (None, up_missing, 0)
            }
            Some(s) if s.streams > 0 => {
                let per_call: BTreeMap<&str, (u64, u64)> = s
                    .per_call
                    .iter()
                    .map(|(id, fresh, played)| (id.as_str(), (*fresh, *played)))
                    .collect();
                let mut up_missing = 0;
                let mut without = 0;
                let mut played_missing = 0;
                for c in self.calls.iter().filter(|c| c.answered) {
                    match per_call.get(c.leg.call_id.as_str()) {
                        Some((fresh, played)) => {
                            up_missing += c.media.sent.saturating_sub(*fresh);
                            played_missing += played.saturating_sub(c.media.playback.fresh);
                        }
                        None => {
                            without += 1;
                            up_missing += c.media.sent;
                        }
                    }
                }
                let fork = Fork {
                    streams: s.streams,
                    frames: s.frames,
                    marker_frames: s.marker_frames,
                    repeats: s.repeats,
                    calls_without_stream: without,
                    up_missing,
                    latency_us: Histogram::from_wire(&s.latency_us).summary(),
                    played: s.played,
                    played_missing,
                    encodings: s.encodings.clone(),
                };
                if !s.errors.is_empty() {
                    notes.push(format!("sink errors: {:?}", s.errors));
                }
                let dropped: u64 = s
                    .stop_counters
                    .iter()
                    .filter(|(k, _)| k.as_str() == "framesDropped")
                    .map(|(_, v)| *v)
                    .sum();
                if s.late_streams > 0 {
                    notes.push(format!(
                        "{} fork streams began after the call's first packet ({} packets never forked)",
                        s.late_streams, s.frames_before_stream
                    ));
                }
                if let Some((sockets, drops)) = self.window.as_ref().and_then(|w| w.socket_drops)
                    && drops > 0
                {
                    notes.push(format!(
                        "{sockets} Siphon RTP sockets dropped {drops} datagrams"
                    ));
                }
                if up_missing > 0 || dropped > 0 {
                    notes.push(format!(
                        "Siphon's fork stop counters ({} stops): {:?}",
                        s.stops, s.stop_counters
                    ));
                }
                if s.connections > s.streams {
                    notes.push(format!("{} fork reconnections", s.connections - s.streams));
                }
                let not_returned = if s.played > 0 {
                    sent.saturating_sub(playback_fresh)
                } else {
                    0
                };
                (Some(fork), up_missing, not_returned)
            }
            other => {
                if other.is_some() {
                    notes.push(
                        "the sink saw no fork stream: this number does not fork (yet)".into(),
                    );
                }
                let socket_drops = self.window.as_ref().and_then(|w| w.socket_drops);
                let up = match socket_drops {
                    Some((sockets, drops)) => {
                        notes.push(format!(
                            "{sockets} Siphon RTP sockets dropped {drops} datagrams"
                        ));
                        drops
                    }
                    None => host_drops.saturating_sub(rtp.down_missing),
                };
                (None, up, sent.saturating_sub(echo_fresh))
            }
        };
        let mut procs = BTreeMap::new();
        let names: Vec<String> = self
            .cfg
            .watch
            .iter()
            .map(|(n, _)| n.clone())
            .chain(std::iter::once("generator".to_string()))
            .collect();
        let mut steady_s = 0.0;
        let mut cores = Vec::new();
        if let Some(w) = &self.window
            && let Some(end) = w.end_us
            && end - w.start_us >= 1_000_000
        {
            steady_s = (end - w.start_us) as f64 / 1e6;
            cores = procstat::core_percent(&w.cores_start, &w.cores_end);
            for (k, name) in names.iter().enumerate() {
                let (a, b) = (
                    w.start.get(k).copied().flatten(),
                    w.end.get(k).copied().flatten(),
                );
                procs.insert(
                    name.clone(),
                    ProcFigures {
                        cpu_percent: a.zip(b).and_then(|(a, b)| procstat::cpu_percent(&a, &b)),
                        user_percent: a.zip(b).and_then(|(a, b)| procstat::user_percent(&a, &b)),
                        rss_kb: b.map(|b| b.rss_kb),
                        rss_base_kb: base.get(k).copied().flatten().map(|s| s.rss_kb),
                    },
                );
            }
            if steady_s < 2.0 {
                notes.push(format!(
                    "steady window only {steady_s:.1} s: CPU figures are rough"
                ));
            }
        } else {
            notes.push(
                "no steady window of 1 s (calls never all up at once): no CPU figures".into(),
            );
        }
        if let (Some(a), Some(b)) = (self_start, self_end) {
            procs
                .entry("generator-whole-run".into())
                .or_insert(ProcFigures {
                    cpu_percent: procstat::cpu_percent(&a, &b),
                    user_percent: procstat::user_percent(&a, &b),
                    rss_kb: Some(b.rss_kb),
                    rss_base_kb: Some(a.rss_kb),
                });
        }
        LevelResult {
            label: self.cfg.label.clone(),
            number: self.cfg.number.clone(),
            level: self.calls.len() as u64,
            rate: self.cfg.rate,
            hold_s: self.cfg.hold.as_secs_f64(),
            steady_s,
            calls,
            setup_us: self.setup.summary(),
            rtp,
            up_missing,
            not_returned,
            gen_lag_us: self.lag.summary(),
            echo_rtt_us: self.echo_rtt.summary(),
            bridge_us: self.bridge.summary(),
            playback_us: self.playback.summary(),
            pacing_us: self.pacing.summary(),
            fork,
            procs,
            cores,
            udp_drops,
            notes,
        }
    }
}
