//! The far leg a served call is transferred to (issue 17 part 2): once the new leg (the
//! human agent) answers, the served call's media task ([`super::leg`]) takes it over. Each of
//! the caller's 20 ms slots sends the caller's audio to the agent and plays the agent's
//! audio to the caller instead of the services' playback, so the forks keep their
//! WebSocket connections and go on hearing the caller (inbound track) and, where the bot
//! was, the agent (outbound track, the second channel with `tracks = "both"`).
//!
//! The agent leg has its own RTP socket, session (SSRC, sequence, jitter buffer) and
//! latching; its pacer is driven from the caller's slots: the agent's clock advances 20 ms
//! per caller slot (one agent slot each, never none or two when a wake-up is late), so the
//! two streams cannot slip against each other.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use siphon_media::FRAME_SAMPLES;
use siphon_media::g711::G711;
use siphon_media::jitter::FrameKind;
use siphon_media::packet::RtpPacket;
use siphon_media::session::{MediaSession, SessionConfig};
use siphon_sip::sdp::Codec;
use tokio::time::Instant;
use tracing::debug;

use super::MediaParams;
use crate::counters::{Counters, LegStats, inc};
use crate::rtp_ports::RtpPort;

/// What the SIP core hands the media task when the transfer's new leg answers.
#[derive(Debug)]
pub struct AgentSetup {
    pub rtp: RtpPort,
    pub params: MediaParams,
}

/// The agent leg inside a served call's media task.
pub(super) struct AgentLeg {
    pub(super) rtp: RtpPort,
    params: MediaParams,
    /// Created at the first caller slot after the takeover (see the module doc), with the
    /// agent clock's start.
    session: Option<(MediaSession, std::time::Instant)>,
    /// Caller slots since the takeover: the agent clock is `start + slots · 20 ms`.
    slots: u32,
    latched: Option<SocketAddr>,
    stats: LegStats,
    /// The agent's audio for the caller's current slot.
    heard: [i16; FRAME_SAMPLES],
}

fn law(codec: Codec) -> G711 {
    match codec {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    }
}

/// One slot.
const SLOT: Duration = Duration::from_millis(20);

impl AgentLeg {
    pub(super) fn new(setup: AgentSetup) -> Self {
        AgentLeg {
            rtp: setup.rtp,
            params: setup.params,
            session: None,
            slots: 0,
            latched: None,
            stats: LegStats::default(),
            heard: [0; FRAME_SAMPLES],
        }
    }

    /// One datagram from the agent's socket.
    pub(super) fn on_rtp(&mut self, data: &[u8], from: SocketAddr, counters: &Counters) {
        let Ok(packet) = RtpPacket::parse(data) else {
            inc(&counters.rtp_malformed);
            return;
        };
        let negotiated = self.params.audio_codec(packet.payload_type).is_some()
            || Some(packet.payload_type) == self.params.telephone_event_pt;
        match self.latched {
            Some(addr) if addr == from => {}
            None if negotiated => self.latched = Some(from),
            Some(_) if negotiated && self.params.remote == Some(from) => {
                self.latched = Some(from);
            }
            _ => {
                inc(&counters.rtp_stray);
                return;
            }
        }
        inc(&counters.rtp_packets_in);
        self.stats.received(data.len());
        if let Some((session, _)) = self.session.as_mut() {
            if let Err(e) = session.handle_rtp(Instant::now().into_std(), data) {
                inc(&counters.rtp_rejected);
                debug!(error = %e, "agent RTP rejected");
            }
            while session.poll_event().is_some() {}
        }
    }

    /// One caller slot: sends `caller` (the caller's audio, zeros when there was none: the
    /// agent's phone gets a packet every 20 ms) to the agent and returns the agent's audio
    /// for the caller's slot.
    pub(super) fn on_slot(
        &mut self,
        caller: &[i16; FRAME_SAMPLES],
        tx: &mut [u8; 1500],
        counters: &Counters,
    ) -> &[i16; FRAME_SAMPLES] {
        let params = &self.params;
        let (session, start) = self.session.get_or_insert_with(|| {
            let mut config = SessionConfig::new(law(params.codec), "siphon-transfer");
            config.telephone_event = params.telephone_event_pt;
            let start = Instant::now().into_std();
            (MediaSession::new(config, start, SystemTime::now()), start)
        });
        let now = *start + SLOT * self.slots;
        self.slots = self.slots.wrapping_add(1);
        let dest = self.latched.or(self.params.remote);
        for _ in 0..session.handle_timeout(now) {
            match session.pop_audio(&mut self.heard) {
                Some(f) if f.kind != FrameKind::Silence => {}
                _ => self.heard = [0; FRAME_SAMPLES],
            }
            let built = session.send_audio(caller, tx);
            if let (Ok(n), Some(dest)) = (built, dest) {
                if self.rtp.socket.try_send_to(&tx[..n], dest).is_ok() {
                    inc(&counters.rtp_packets_out);
                    self.stats.sent(n);
                } else {
                    inc(&counters.rtp_send_failures);
                }
            }
        }
        if let Ok(Some(n)) = session.poll_rtcp(now, tx)
            && let Some(rtcp) = dest.map(|d| SocketAddr::new(d.ip(), d.port().wrapping_add(1)))
        {
            let _ = self.rtp.rtcp.try_send_to(&tx[..n], rtcp);
        }
        &self.heard
    }
}
