//! RFC 3264 offer/answer for a G.711 voice endpoint.

use std::net::{IpAddr, SocketAddr};

use super::rtcp::{RtcpAttribute, has_rtcp_mux, remote_rtcp, rtcp_mux_attribute};
use super::{
    Codec, Direction, MediaDescription, Origin, RawLine, RtpMap, SdpError, SessionDescription,
};

/// The payload type we offer telephone-event (RFC 4733 DTMF) under. 101 is what nearly
/// every SIP stack uses, which makes traces easy to read; any dynamic PT would do.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// The events we offer: DTMF digits 0-9, *, #, A-D (0-15) and flash (16), matching what
/// common phones advertise so a B2BUA can relay whatever the other leg sends.
const TELEPHONE_EVENT_FMTP: &str = "0-16";

/// The `s=` we send. RFC 8866 §5.3 recommends "-" when there is no meaningful name.
const SESSION_NAME: &str = "-";

/// Our side of a media negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Address advertised in our `c=` line (the media socket's public address).
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Codecs we can use, in our preference order (used when we make an offer; when we
    /// answer, the offerer's order wins — see [`LocalSession::answer`]).
    pub codecs: Vec<Codec>,
    /// Whether we handle RFC 4733 telephone-event.
    pub telephone_event: bool,
    /// Packetisation time we send and advertise, in ms (G.711 convention: 20).
    pub ptime: u32,
}

impl LocalMedia {
    /// PCMU then PCMA, telephone-event enabled, 20 ms ptime.
    pub fn new(address: IpAddr, port: u16) -> Self {
        LocalMedia {
            address,
            port,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            ptime: 20,
        }
    }
}

/// The outcome of answering an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// What we send back.
    pub answer: SessionDescription,
    pub codec: Codec,
    /// The PT the offerer used for that codec (normally 0/8, but a dynamic PT mapped to
    /// PCMU/PCMA is honoured). We send and expect this PT.
    pub payload_type: u8,
    /// The offerer's PT for telephone-event/8000 when offered and we support it.
    pub telephone_event_pt: Option<u8>,
    /// Where to send RTP; None when the offer's address is 0.0.0.0 / `::` (hold).
    pub remote_rtp: Option<SocketAddr>,
    /// OUR direction in the answer (offer sendonly → we recvonly, etc.).
    pub direction: Direction,
    /// The offerer's `a=ptime` for the accepted stream: how it would like to receive.
    pub remote_ptime: Option<u32>,
    /// The other codecs of ours the accepted stream lists, with their PTs, in its order.
    /// When the description read is an answer (Siphon offered), its answerer may send any
    /// of them, switching per packet (RFC 3264 §5.1, §6.1); from an offerer Siphon answered
    /// with one codec, they are tolerated rather than dropped.
    pub also_receive: Vec<(Codec, u8)>,
    /// Index of the accepted stream among the offer's (and answer's) m= lines.
    pub media_index: usize,
    /// The stream read carries `a=rtcp-mux` (RFC 5761): RTCP goes to and comes from the
    /// RTP ports. (Siphon offers it and accepts it when offered, so whenever the
    /// description read has it, both sides multiplex.)
    pub rtcp_mux: bool,
    /// Where the peer receives RTCP per its `a=rtcp` (RFC 3605); None without a usable
    /// attribute, when its RTP address + 1 applies.
    pub remote_rtcp: Option<SocketAddr>,
}

/// Keeps our o= line stable across a dialog: same session id, version incremented only when
/// what we send changes (RFC 3264 §8; RFC 8866 §5.2). Both offers and answers count as
/// "what we send", since the version sequence is per session, not per role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSession {
    session_id: u64,
    version: u64,
    address: IpAddr,
    /// The last description we produced, compared (ignoring the version) against the next
    /// one to decide whether the version moves.
    last_sent: Option<SessionDescription>,
}

/// Why an audio stream couldn't be used, ranked so the 488 reason describes the closest
/// miss (a codec mismatch is more useful to report than an unsupported transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Miss {
    NoAudio,
    Protocol,
    Srtp,
    Codec,
}

impl LocalSession {
    /// `session_id` should be unique per session (random or NTP-based); `address` goes in
    /// the o= line. The first description carries version = `session_id`, the widespread
    /// convention (any starting value is allowed).
    pub fn new(session_id: u64, address: IpAddr) -> Self {
        LocalSession {
            session_id,
            version: session_id,
            address,
            last_sent: None,
        }
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version of the last description produced (or of the first one, before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answer an offer (RFC 3264 §6).
    ///
    /// - One m= line per offered m= line, in order. The first offered audio stream over
    ///   `RTP/AVP` or `RTP/AVPF` with a port and a codec in common gets our media; every
    ///   other stream is rejected with port 0, keeping its format list. (Streams over SRTP
    ///   profiles, `RTP/SAVP` and friends, are rejected: we don't do SRTP.) Taking the first
    ///   *usable* audio stream rather than strictly the first one only matters for the
    ///   rare offer with several audio streams, and there it saves the call.
    /// - Codec: the first format in the OFFERER's order that we support. RFC 3264 leaves
    ///   the choice to the answerer; following the offerer's preference is what common
    ///   softswitches do, and it is what the caller's UI/admin configured. We answer with
    ///   that single codec so the offerer can't switch codecs mid-stream.
    /// - telephone-event/8000 is echoed with the offerer's PT and fmtp when offered and
    ///   `local.telephone_event` is set.
    /// - Direction (media level wins over session level): we answer with the reverse.
    ///   `c=0.0.0.0` (RFC 2543 hold) means the offerer can't receive, so its sendrecv counts
    ///   as sendonly (we answer recvonly) and its recvonly as inactive; `remote_rtp` is None.
    /// - `a=ptime` is always ours (`local.ptime`).
    ///
    /// Nothing changes in `self` when this fails.
    pub fn answer(
        &mut self,
        offer: &SessionDescription,
        local: &LocalMedia,
    ) -> Result<Negotiated, SdpError> {
        let mut miss = Miss::NoAudio;
        let mut accepted = None;
        for (index, media) in offer.media.iter().enumerate() {
            if !media.kind.eq_ignore_ascii_case("audio") || media.port == 0 {
                continue;
            }
            if is_srtp(&media.protocol) {
                miss = miss.max(Miss::Srtp);
                continue;
            }
            if !is_plain_rtp(&media.protocol) {
                miss = miss.max(Miss::Protocol);
                continue;
            }
            match choose_codec(media, &local.codecs) {
                Some((codec, pt)) => {
                    accepted = Some((index, media, codec, pt));
                    break;
                }
                None => miss = miss.max(Miss::Codec),
            }
        }
        let Some((index, offered, codec, payload_type)) = accepted else {
            return Err(SdpError::NotAcceptable(not_acceptable_reason(miss, local)));
        };

        let telephone_event_pt = if local.telephone_event {
            offered.payload_types().find(|pt| {
                offered.rtpmap(*pt).is_some_and(|m| {
                    m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == 8000
                })
            })
        } else {
            None
        };

        let remote_addr = offer
            .connection_for(offered)
            .filter(|a| !a.is_unspecified());
        let mut offered_direction = offer.direction_for(offered);
        if remote_addr.is_none() {
            // RFC 2543 hold: the offerer gave no address to send to, so it can't receive.
            offered_direction = match offered_direction {
                Direction::SendRecv => Direction::SendOnly,
                Direction::RecvOnly => Direction::Inactive,
                other => other,
            };
        }
        let direction = offered_direction.reversed();
        let remote_rtp = remote_addr.map(|addr| SocketAddr::new(addr, offered.port));

        let rtcp_mux = has_rtcp_mux(offered);
        let mut ours = audio_media(local, direction);
        ours.attributes = rtcp_attributes(local, rtcp_mux, rtcp_mux);
        ours.protocol = offered.protocol.clone();
        ours.formats = vec![payload_type.to_string()];
        ours.rtpmaps = vec![codec.rtpmap(payload_type)];
        if let Some(te) = telephone_event_pt {
            ours.formats.push(te.to_string());
            ours.rtpmaps.push(telephone_event_rtpmap(te));
            if let Some(params) = offered.format_parameters(te) {
                ours.fmtp.push((te, params.to_owned()));
            }
        }

        let media = offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == index {
                    ours.clone()
                } else {
                    rejected(m)
                }
            })
            .collect();
        let answer = self.stamp(self.description(local.address, media));

        Ok(Negotiated {
            answer,
            codec,
            payload_type,
            telephone_event_pt,
            remote_rtp,
            direction,
            remote_ptime: offered.ptime,
            also_receive: offered
                .payload_types()
                .filter(|pt| *pt != payload_type)
                .filter_map(|pt| {
                    offered
                        .codec_for(pt)
                        .filter(|c| local.codecs.contains(c))
                        .map(|c| (c, pt))
                })
                .collect(),
            media_index: index,
            rtcp_mux,
            remote_rtcp: remote_addr.and(remote_rtcp(offered, remote_addr)),
        })
    }

    /// Build an initial offer: our codecs in our order under their static PTs, plus
    /// telephone-event under [`TELEPHONE_EVENT_PT`] when enabled. `direction` is written
    /// explicitly (sendonly for putting a peer on hold, sendrecv otherwise).
    pub fn offer(&mut self, local: &LocalMedia, direction: Direction) -> SessionDescription {
        let mut media = audio_media(local, direction);
        media.attributes = rtcp_attributes(local, false, true);
        for codec in &local.codecs {
            let pt = codec.payload_type();
            if media.rtpmap(pt).is_none() {
                media.formats.push(pt.to_string());
                media.rtpmaps.push(codec.rtpmap(pt));
            }
        }
        if local.telephone_event {
            media.formats.push(TELEPHONE_EVENT_PT.to_string());
            media
                .rtpmaps
                .push(telephone_event_rtpmap(TELEPHONE_EVENT_PT));
            media
                .fmtp
                .push((TELEPHONE_EVENT_PT, TELEPHONE_EVENT_FMTP.to_owned()));
        }
        self.stamp(self.description(local.address, vec![media]))
    }

    fn description(&self, address: IpAddr, media: Vec<MediaDescription>) -> SessionDescription {
        SessionDescription {
            origin: Origin {
                username: "-".to_owned(),
                session_id: self.session_id,
                session_version: self.version,
                address: self.address.to_string(),
            },
            session_name: SESSION_NAME.to_owned(),
            // c= at session level so it also covers the rejected streams.
            connection: Some(address),
            direction: None,
            attributes: Vec::new(),
            other_lines: vec![RawLine {
                kind: 't',
                value: "0 0".to_owned(),
            }],
            media,
        }
    }

    /// Sets the o= version: unchanged if `sd` equals what we last sent, bumped by one
    /// otherwise.
    fn stamp(&mut self, mut sd: SessionDescription) -> SessionDescription {
        if let Some(last) = &self.last_sent {
            sd.origin.session_version = last.origin.session_version;
            if *last != sd {
                self.version = self.version.wrapping_add(1);
            }
        }
        sd.origin.session_version = self.version;
        self.last_sent = Some(sd.clone());
        sd
    }
}

/// Our RTCP attributes: `a=rtcp` naming our RTCP port (RFC 3605) — the RTP port in an
/// answer that accepts multiplexing (`on_rtp_port`), the next one otherwise; never an
/// address, as Siphon's RTCP socket is on the `c=` address — and `a=rtcp-mux` (RFC 5761)
/// in offers and in answers to offers that have it. An offer keeps `a=rtcp` on the next
/// port (RFC 5761 §5.1.3): where RTCP goes if the answerer does not multiplex.
fn rtcp_attributes(local: &LocalMedia, on_rtp_port: bool, mux: bool) -> Vec<super::Attribute> {
    let mut attributes = Vec::with_capacity(2);
    let port = if on_rtp_port {
        Some(local.port)
    } else {
        local.port.checked_add(1)
    };
    if let Some(port) = port.filter(|_| local.port != 0) {
        attributes.push(RtcpAttribute::new(port, local.address, local.address).to_attribute());
    }
    if mux {
        attributes.push(rtcp_mux_attribute());
    }
    attributes
}

/// Our audio m= section without formats.
fn audio_media(local: &LocalMedia, direction: Direction) -> MediaDescription {
    MediaDescription {
        kind: "audio".to_owned(),
        port: local.port,
        port_count: None,
        protocol: "RTP/AVP".to_owned(),
        formats: Vec::new(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtp: Vec::new(),
        // Always explicit: some phones mishandle a missing direction in re-INVITE answers.
        direction: Some(direction),
        ptime: (local.ptime > 0).then_some(local.ptime),
        attributes: Vec::new(),
        other_lines: Vec::new(),
    }
}

/// A rejected stream (RFC 3264 §6): same media and protocol, port 0, the offered format
/// list, nothing else.
fn rejected(offered: &MediaDescription) -> MediaDescription {
    MediaDescription {
        kind: offered.kind.clone(),
        port: 0,
        port_count: None,
        protocol: offered.protocol.clone(),
        formats: offered.formats.clone(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtp: Vec::new(),
        direction: None,
        ptime: None,
        attributes: Vec::new(),
        other_lines: Vec::new(),
    }
}

fn telephone_event_rtpmap(pt: u8) -> RtpMap {
    RtpMap {
        payload_type: pt,
        encoding: "telephone-event".to_owned(),
        clock_rate: 8000,
        channels: None,
    }
}

/// Plain RTP profiles we can serve. AVPF (RFC 4585) is AVP plus optional feedback
/// messages, which an AVP endpoint may simply not send, so accepting it is safe.
fn is_plain_rtp(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("RTP/AVP") || protocol.eq_ignore_ascii_case("RTP/AVPF")
}

/// SRTP profiles (`RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP[F]`): rejected, we don't do SRTP.
fn is_srtp(protocol: &str) -> bool {
    protocol.to_ascii_uppercase().contains("SAVP")
}

/// The first offered format we support, in the offerer's order, with the PT it used.
fn choose_codec(media: &MediaDescription, ours: &[Codec]) -> Option<(Codec, u8)> {
    media.payload_types().find_map(|pt| {
        media
            .codec_for(pt)
            .filter(|codec| ours.contains(codec))
            .map(|codec| (codec, pt))
    })
}

fn not_acceptable_reason(miss: Miss, local: &LocalMedia) -> String {
    match miss {
        Miss::NoAudio => "no audio stream offered".to_owned(),
        Miss::Protocol => "audio transport not supported (need RTP/AVP)".to_owned(),
        Miss::Srtp => "SRTP (RTP/SAVP) not supported".to_owned(),
        Miss::Codec => {
            let names: Vec<&str> = local.codecs.iter().map(|c| c.name()).collect();
            if names.is_empty() {
                "no codecs configured".to_owned()
            } else {
                format!("no common codec (we support {})", names.join(", "))
            }
        }
    }
}
