//! One call leg's media: jitter buffer, G.711 decoder, pacer, DTMF in and out, RTCP
//! statistics and reports, behind one sans-IO API. See the crate documentation for the
//! driving loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::dtmf::{DtmfError, DtmfEvent, DtmfReceiver, DtmfSender};
use crate::g711::G711;
use crate::jitter::{Frame, JitterBuffer, JitterConfig, JitterStats, PacketInfo};
use crate::pacer::Pacer;
use crate::packet::{RtpError, RtpPacket};
use crate::rtcp::{
    NtpClock, RtcpCompound, RtcpError, RtcpPacket, RtcpScheduler, RtcpWriter, SenderInfo,
};
use crate::stats::ReceiverStats;
use crate::{FRAME_SAMPLES, SAMPLE_RATE};

/// RFC 3389 comfort noise, static payload type 13: accepted and treated as silence.
const PT_COMFORT_NOISE: u8 = 13;
/// Events kept when the driver doesn't poll them; older ones are dropped beyond this.
const MAX_QUEUED_EVENTS: usize = 64;

/// What the SDP negotiation settled for this leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The G.711 variant both ways (its static payload type is used).
    pub codec: G711,
    /// The negotiated RFC 4733 `telephone-event/8000` payload type, if any (often 101).
    pub telephone_event: Option<u8>,
    /// The other G.711 law the peer may send (its static payload type), when its SDP
    /// listed both: RFC 3264 lets an answerer switch codecs per packet. Received packets
    /// are decoded by their own payload type; what we send stays `codec`.
    pub also_receive: Option<G711>,
    /// Jitter buffer bounds.
    pub jitter: JitterConfig,
    /// Our RTCP CNAME (RFC 7022 suggests a random per-session identifier).
    pub cname: String,
    /// Mean RTCP report interval (5 s).
    pub rtcp_interval: Duration,
}

impl SessionConfig {
    /// Defaults for a codec: no telephone-event, default jitter bounds, 5 s RTCP.
    pub fn new(codec: G711, cname: impl Into<String>) -> Self {
        SessionConfig {
            codec,
            telephone_event: None,
            also_receive: None,
            jitter: JitterConfig::default(),
            cname: cname.into(),
            rtcp_interval: RtcpScheduler::DEFAULT_INTERVAL,
        }
    }
}

/// Something the server may want to act on or log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MediaEvent {
    /// A key press (once per press).
    Dtmf(DtmfEvent),
    /// RTP from a new SSRC: the first one, or a change mid-call (buffers were reset).
    NewSource {
        /// The new SSRC.
        ssrc: u32,
    },
    /// A report block the peer sent about our stream.
    RemoteReport {
        /// The reporter.
        ssrc: u32,
        /// Fraction of our packets lost, 0.0–1.0, since its previous report.
        fraction_lost: f32,
        /// Cumulative packets lost.
        cumulative_lost: i32,
        /// Interarrival jitter it measured on our stream.
        jitter: Duration,
        /// Round-trip time, if the peer echoed one of our SRs.
        round_trip_time: Option<Duration>,
    },
}

/// Counters for one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    /// RTP packets accepted.
    pub rtp_packets: u64,
    /// RTP datagrams dropped as malformed.
    pub rtp_malformed: u64,
    /// RTP packets dropped for an unexpected payload type.
    pub rtp_unexpected_payload: u64,
    /// Comfort-noise packets (ignored).
    pub comfort_noise: u64,
    /// RTCP datagrams accepted.
    pub rtcp_packets: u64,
    /// RTCP datagrams dropped as malformed.
    pub rtcp_malformed: u64,
    /// Key presses reported.
    pub dtmf_events: u64,
    /// RTP packets sent.
    pub packets_sent: u32,
    /// Send slots skipped because the driver stalled.
    pub skipped_slots: u64,
    /// The jitter buffer's counters.
    pub jitter: JitterStats,
}

/// See the module and crate documentation.
#[derive(Debug)]
pub struct MediaSession {
    config: SessionConfig,
    pacer: Pacer,
    jitter: JitterBuffer,
    dtmf_rx: DtmfReceiver,
    dtmf_tx: VecDeque<DtmfSender>,
    remote: Option<ReceiverStats>,
    rtcp: RtcpScheduler,
    ntp: NtpClock,
    events: VecDeque<MediaEvent>,
    encoded: [u8; FRAME_SAMPLES],
    stats: SessionStats,
}

impl MediaSession {
    /// A session with a random SSRC, sequence number and timestamp, whose first send slot is
    /// `now`. `wallclock` is read once, at the same moment, for RTCP's NTP timestamps.
    pub fn new(config: SessionConfig, now: Instant, wallclock: SystemTime) -> Self {
        let seed = rand::random();
        Self::with_pacer(config, Pacer::random(now), now, wallclock, seed)
    }

    /// A session with an explicit pacer and RTCP seed (deterministic tests).
    pub fn with_pacer(
        config: SessionConfig,
        pacer: Pacer,
        now: Instant,
        wallclock: SystemTime,
        rtcp_seed: u64,
    ) -> Self {
        MediaSession {
            jitter: JitterBuffer::new(config.jitter),
            rtcp: RtcpScheduler::new(now, config.rtcp_interval, rtcp_seed),
            config,
            pacer,
            dtmf_rx: DtmfReceiver::new(),
            dtmf_tx: VecDeque::new(),
            remote: None,
            ntp: NtpClock::new(now, wallclock),
            // Grown when events come (few calls have any): not reserved per call.
            events: VecDeque::new(),
            encoded: [0; FRAME_SAMPLES],
            stats: SessionStats::default(),
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.pacer.ssrc()
    }

    /// The peer's SSRC, once it has sent RTP.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.remote.as_ref().map(ReceiverStats::ssrc)
    }

    /// RFC 3550 statistics about the peer's stream.
    pub fn receiver_stats(&self) -> Option<&ReceiverStats> {
        self.remote.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            packets_sent: self.pacer.packets_sent(),
            skipped_slots: self.pacer.skipped_slots(),
            jitter: self.jitter.stats(),
            ..self.stats
        }
    }

    /// The jitter buffer's current target delay.
    pub fn playout_delay(&self) -> Duration {
        self.jitter.target_delay()
    }

    fn push_event(&mut self, event: MediaEvent) {
        if self.events.len() == MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Feeds one datagram from the RTP socket. Errors mean the packet was dropped (and
    /// counted); they are for logging, the session carries on.
    pub fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), RtpError> {
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.stats.rtp_malformed += 1;
                return Err(e);
            }
        };
        let pt = packet.payload_type;
        let law = if pt == self.config.codec.payload_type() {
            Some(self.config.codec)
        } else {
            self.config.also_receive.filter(|l| l.payload_type() == pt)
        };
        let is_audio = law.is_some();
        let is_event = Some(pt) == self.config.telephone_event;
        if !is_audio && !is_event && pt != PT_COMFORT_NOISE {
            self.stats.rtp_unexpected_payload += 1;
            return Err(RtpError::UnexpectedPayloadType(pt));
        }
        self.stats.rtp_packets += 1;

        if self.remote_ssrc() != Some(packet.ssrc) {
            self.remote = Some(ReceiverStats::new(
                packet.ssrc,
                SAMPLE_RATE,
                packet.sequence_number,
                now,
            ));
            self.dtmf_rx.reset();
            self.push_event(MediaEvent::NewSource { ssrc: packet.ssrc });
        }
        if let Some(remote) = &mut self.remote {
            remote.update(now, packet.sequence_number, packet.timestamp);
        }

        if let Some(law) = law {
            let info = PacketInfo {
                sequence_number: packet.sequence_number,
                timestamp: packet.timestamp,
                ssrc: packet.ssrc,
            };
            self.jitter.push_g711(now, info, law, packet.payload);
        } else if is_event {
            if let Some(event) =
                self.dtmf_rx
                    .handle(packet.marker, packet.timestamp, packet.payload)?
            {
                self.stats.dtmf_events += 1;
                self.push_event(MediaEvent::Dtmf(event));
            }
        } else {
            // Comfort noise: the jitter buffer plays silence through the gap anyway.
            self.stats.comfort_noise += 1;
        }
        Ok(())
    }

    /// Feeds one datagram from the RTCP socket.
    pub fn handle_rtcp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), RtcpError> {
        let compound = match RtcpCompound::parse(datagram) {
            Ok(c) => c,
            Err(e) => {
                self.stats.rtcp_malformed += 1;
                return Err(e);
            }
        };
        self.stats.rtcp_packets += 1;
        let our_ssrc = self.pacer.ssrc();
        let arrival_ntp = self.ntp.ntp_at(now);
        for packet in compound.packets() {
            let (sender, reports) = match packet {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    if let Some(remote) = self.remote.as_mut().filter(|r| r.ssrc() == ssrc) {
                        remote.on_sender_report(now, info.ntp);
                    }
                    (ssrc, reports)
                }
                RtcpPacket::ReceiverReport { ssrc, reports } => (ssrc, reports),
                RtcpPacket::Other { .. } => continue,
            };
            for block in reports.filter(|b| b.ssrc == our_ssrc) {
                let jitter = Duration::from_nanos(
                    u64::from(block.jitter) * 1_000_000_000 / u64::from(SAMPLE_RATE),
                );
                self.push_event(MediaEvent::RemoteReport {
                    ssrc: sender,
                    fraction_lost: f32::from(block.fraction_lost) / 256.0,
                    cumulative_lost: block.cumulative_lost,
                    jitter,
                    round_trip_time: block.round_trip_time(arrival_ntp),
                });
            }
        }
        Ok(())
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work: a send slot or an
    /// RTCP report.
    pub fn poll_timeout(&self) -> Instant {
        self.pacer.poll_timeout().min(self.rtcp.poll_timeout())
    }

    /// Advances the send clock; returns how many 20 ms slots are due. For each, call
    /// [`pop_audio`](Self::pop_audio) (if you want the received audio) and then exactly one of
    /// [`send_audio`](Self::send_audio), [`send_payload`](Self::send_payload) or
    /// [`send_silence`](Self::send_silence). Then call [`poll_rtcp`](Self::poll_rtcp).
    pub fn handle_timeout(&mut self, now: Instant) -> u32 {
        self.pacer.handle_timeout(now)
    }

    /// Plays the received stream for the slot about to be filled: one 20 ms frame of decoded
    /// audio into `out`, or `None` while there is nothing to play (treat as silence).
    pub fn pop_audio(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> Option<Frame> {
        // The slot's nominal time, not the wake-up time: see `jitter`.
        self.jitter.pop(self.pacer.slot_time(), out)
    }

    /// Queues a digit to send as RFC 4733 events (it replaces the audio of the following
    /// slots). Fails if no telephone-event payload type was negotiated.
    pub fn send_dtmf(&mut self, digit: char, duration: Duration) -> Result<(), DtmfError> {
        if self.config.telephone_event.is_none() {
            return Err(DtmfError::NotNegotiated);
        }
        self.dtmf_tx
            .push_back(DtmfSender::new(digit, duration, 10)?);
        Ok(())
    }

    /// If a DTMF event is being sent, builds its packet for this slot.
    fn next_event_packet(&mut self, out: &mut [u8]) -> Result<Option<usize>, RtpError> {
        let Some(pt) = self.config.telephone_event else {
            return Ok(None);
        };
        while let Some(sender) = self.dtmf_tx.front_mut() {
            if let Some(p) = sender.next_packet(self.pacer.timestamp()) {
                let n = self
                    .pacer
                    .build_event(pt, p.marker, p.timestamp, &p.payload, out)?;
                return Ok(Some(n));
            }
            self.dtmf_tx.pop_front();
        }
        Ok(None)
    }

    /// Fills the slot with 20 ms of linear audio (encoded with the session codec), or with a
    /// DTMF event packet if one is being sent. Returns the datagram length in `out`.
    pub fn send_audio(
        &mut self,
        pcm: &[i16; FRAME_SAMPLES],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        if let Some(n) = self.next_event_packet(out)? {
            return Ok(n);
        }
        self.config.codec.encode(pcm, &mut self.encoded);
        self.pacer
            .build(self.config.codec.payload_type(), &self.encoded, out)
    }

    /// Fills the slot with an already-encoded payload in the session codec (a prompt cut into
    /// 160-byte frames, passthrough), or a DTMF event packet if one is being sent.
    pub fn send_payload(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
        if let Some(n) = self.next_event_packet(out)? {
            return Ok(n);
        }
        self.pacer
            .build(self.config.codec.payload_type(), payload, out)
    }

    /// Leaves the slot empty (nothing to say); the next audio packet gets the marker bit. A
    /// DTMF event being sent still needs its packet: then `Some(len)` is returned.
    pub fn send_silence(&mut self, out: &mut [u8]) -> Result<Option<usize>, RtpError> {
        if let Some(n) = self.next_event_packet(out)? {
            return Ok(Some(n));
        }
        self.pacer.idle();
        Ok(None)
    }

    /// When a report is due (call after every [`handle_timeout`](Self::handle_timeout)),
    /// builds an SR (if we have sent RTP) or RR, with a report block about the peer if it has
    /// sent RTP, and our SDES CNAME. `Ok(None)` when nothing is due.
    pub fn poll_rtcp(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<usize>, RtcpError> {
        if !self.rtcp.handle_timeout(now) {
            return Ok(None);
        }
        let block = self
            .remote
            .as_mut()
            .filter(|r| r.received() > 0)
            .map(|r| r.report_block(now));
        let info = (self.pacer.packets_sent() > 0).then(|| SenderInfo {
            ntp: self.ntp.ntp_at(now),
            rtp_timestamp: self.pacer.rtp_timestamp_at(now),
            packet_count: self.pacer.packets_sent(),
            octet_count: self.pacer.octets_sent(),
        });
        let ssrc = self.pacer.ssrc();
        let mut w = RtcpWriter::new(out);
        w.report(ssrc, info.as_ref(), block.as_slice())?;
        w.sdes_cname(ssrc, &self.config.cname)?;
        Ok(Some(w.len()))
    }

    /// A final RR/SR + SDES + BYE to send when the call ends.
    pub fn build_bye(&mut self, now: Instant, out: &mut [u8]) -> Result<usize, RtcpError> {
        let ssrc = self.pacer.ssrc();
        let info = (self.pacer.packets_sent() > 0).then(|| SenderInfo {
            ntp: self.ntp.ntp_at(now),
            rtp_timestamp: self.pacer.rtp_timestamp_at(now),
            packet_count: self.pacer.packets_sent(),
            octet_count: self.pacer.octets_sent(),
        });
        let mut w = RtcpWriter::new(out);
        w.report(ssrc, info.as_ref(), &[])?;
        w.sdes_cname(ssrc, &self.config.cname)?;
        w.bye(ssrc)?;
        Ok(w.len())
    }

    /// The next queued event, if any.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}
