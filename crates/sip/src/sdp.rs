//! SDP (RFC 8866) parsing and serialisation, and the RFC 3264 offer/answer rules Siphon
//! needs to answer calls with G.711 audio.
//!
//! Why a hand-written parser rather than a crate: SDP is a simple `<type>=<value>` line
//! format, and the only mature Rust implementation (webrtc-rs' `sdp`) is heavy and
//! WebRTC-oriented (ICE/DTLS/bundle concerns, strict about things real SIP phones get
//! wrong). A softswitch wants the opposite trade-off: understand the handful of lines that
//! matter for a voice call, tolerate everything else (unknown lines and attributes are kept
//! or skipped, never an error), bound the work done on hostile input, and report the few
//! real problems as typed errors that map straight onto SIP status codes (400 / 488).
//!
//! Like the rest of this crate the module is sans-IO: it turns text into values and values
//! into text, and never touches sockets or clocks.

mod negotiate;
mod parse;
mod rtcp;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

pub use negotiate::{LocalMedia, LocalSession, Negotiated, TELEPHONE_EVENT_PT};
pub use parse::{MAX_LINE_BYTES, MAX_LINES, MAX_MEDIA, MAX_SDP_BYTES};
pub use rtcp::{RtcpAttribute, has_rtcp_mux, remote_rtcp, rtcp_attribute};

/// Why an SDP body could not be used. Each variant maps onto the SIP status a server should
/// answer an INVITE with (see [`SdpError::status_code`]).
///
/// The messages never quote the offending input: they end up in a SIP reason phrase, and
/// echoing attacker-controlled bytes there would invite header injection.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// The body isn't parseable SDP → 400 Bad Request. `line` is 1-based; 0 means the
    /// body as a whole (empty, too large, a required line missing).
    #[error("malformed SDP (line {line}): {reason}")]
    Malformed { line: usize, reason: String },
    /// Parseable, but no audio stream we can accept / no common codec → 488 Not Acceptable Here.
    #[error("{0}")]
    NotAcceptable(String),
}

impl SdpError {
    /// The SIP response code for this error: 400 for malformed bodies, 488 for offers we
    /// understand but cannot accept.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Malformed { .. } => 400,
            SdpError::NotAcceptable(_) => 488,
        }
    }
}

/// A parsed session description (RFC 8866): only what a voice softswitch needs, but
/// tolerant of everything else.
///
/// Lines this type doesn't interpret are kept in [`SessionDescription::other_lines`] /
/// [`SessionDescription::attributes`] (so a parse → display round trip keeps them), except
/// for unknown type letters, which are dropped: they are not valid SDP and re-emitting them
/// would make *our* output invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    /// `s=`; empty when the line was missing or blank (tolerated: some phones omit it).
    pub session_name: String,
    /// Session-level `c=` (a media-level `c=` overrides it).
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute (a media-level one overrides it).
    pub direction: Option<Direction>,
    /// Other session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Session-level lines we keep but don't interpret (`i= u= e= p= b= t= r= z= k=`), in
    /// RFC 8866 order (source order within a group, so each `r=` stays after its `t=`).
    /// Parsing guarantees at least one `t=` line (inserting `t=0 0` when the
    /// sender omitted it), because the grammar requires one.
    pub other_lines: Vec<RawLine>,
    pub media: Vec<MediaDescription>,
}

/// The `o=` line. The network type is always `IN`; the address type is derived from the
/// address when serialising (IPv6 literals contain `:`, IPv4 literals and host names don't).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// RFC 8866 allows any number of digits; values beyond `u64` are reduced modulo 2^64,
    /// which keeps them usable for the only thing we do with a peer's origin: compare it.
    pub session_id: u64,
    pub session_version: u64,
    /// Unicast address or host name, kept as text because it is informational only.
    pub address: String,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    /// 0 means the stream is disabled / rejected (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The `/<number of ports>` suffix of `m=<kind> <port>/<count>`, when present.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `udp`, ...
    pub protocol: String,
    /// The format list as sent. Strings rather than payload types because non-RTP
    /// protocols use arbitrary tokens, and a rejected stream must echo the list verbatim
    /// (RFC 3264 §6); see [`MediaDescription::payload_types`] for the numeric view.
    pub formats: Vec<String>,
    /// Media-level `c=` (the first one, when a multicast offer lists several).
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<pt> <parameters>` lines, in order.
    pub fmtp: Vec<(u8, String)>,
    pub direction: Option<Direction>,
    /// `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
    /// Other media-level `a=` lines, in order (including rtpmap/fmtp/ptime lines we
    /// couldn't parse: kept, never an error).
    pub attributes: Vec<Attribute>,
    /// Media-level lines we keep but don't interpret (`i= b= k=`), in RFC 8866 order
    /// (source order within a group).
    pub other_lines: Vec<RawLine>,
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

/// A generic attribute: `a=<name>` (flag, `value` None) or `a=<name>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// A line kept verbatim: its type letter and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub kind: char,
    pub value: String,
}

/// Media direction attributes (RFC 3264 §5.1). Absent means `sendrecv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The attribute name (`sendrecv`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Recognises a direction attribute name. Case-insensitive, because being lenient
    /// here costs nothing and some stacks capitalise.
    pub fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str()))
    }

    /// The direction an answerer uses for a stream offered with `self` (RFC 3264 §6.1):
    /// the peer's sendonly is our recvonly and vice versa.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The codecs Siphon's media engine implements: G.711 µ-law and A-law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 Table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// RTP clock rate; G.711 is always 8 kHz.
    pub fn clock_rate(self) -> u32 {
        8000
    }

    /// The codec a static payload type stands for when no rtpmap says otherwise.
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The codec an rtpmap describes: `PCMU/8000` or `PCMA/8000` (names are
    /// case-insensitive per RFC 4855 §3), mono or without a channel count.
    pub fn from_rtpmap(map: &RtpMap) -> Option<Codec> {
        if map.clock_rate != 8000 || !matches!(map.channels, None | Some(1)) {
            return None;
        }
        [Codec::Pcmu, Codec::Pcma]
            .into_iter()
            .find(|c| map.encoding.eq_ignore_ascii_case(c.name()))
    }

    /// The rtpmap line describing this codec under `payload_type`.
    pub fn rtpmap(self, payload_type: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding: self.name().to_owned(),
            clock_rate: self.clock_rate(),
            channels: None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl SessionDescription {
    /// Parses an SDP body.
    ///
    /// Errors ([`SdpError::Malformed`]): an empty body, a first line other than `v=0`, a
    /// line that isn't `<letter>=<value>`, CR or NUL inside a line, a missing or unreadable
    /// `o=`, an unreadable `c=` (host names included) or `m=` line, an `m=` without
    /// formats, an audio stream with a port but no `c=` at either level, and bodies over
    /// [`MAX_SDP_BYTES`] / [`MAX_LINE_BYTES`] / [`MAX_LINES`] / [`MAX_MEDIA`].
    ///
    /// Tolerated: CRLF or bare LF endings, blank lines, surrounding whitespace, a UTF-8
    /// BOM, missing `s=` / `t=`, repeated single-instance lines (the first wins), lines in
    /// the wrong section and unknown type letters (skipped), unknown attributes (kept), and
    /// rtpmap/fmtp/ptime values we can't read (kept as generic attributes).
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        parse::parse(text)
    }

    /// Parses a SIP message body. Invalid UTF-8 is replaced rather than rejected: only the
    /// free-text lines (`s=`, `i=`) may legitimately use another charset (`a=charset`),
    /// and we never interpret those.
    pub fn parse_bytes(body: &[u8]) -> Result<Self, SdpError> {
        parse::parse(&String::from_utf8_lossy(body))
    }

    /// The connection address that applies to `media` (media level wins over session).
    pub fn connection_for(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// The direction that applies to `media` (media level wins over session, absent means
    /// sendrecv). This does not apply the RFC 2543 `c=0.0.0.0` hold convention; the
    /// offer/answer code does that.
    pub fn direction_for(&self, media: &MediaDescription) -> Direction {
        media
            .direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }
}

impl MediaDescription {
    /// The formats that are RTP payload types (0–127), in offer order. Non-numeric tokens
    /// and out-of-range numbers are skipped.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= 127)
    }

    /// The first rtpmap for `payload_type`.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == payload_type)
    }

    /// The parameters of the first `a=fmtp` line for `payload_type`.
    pub fn format_parameters(&self, payload_type: u8) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, params)| params.as_str())
    }

    /// The G.711 codec `payload_type` stands for in this stream: an rtpmap wins (so a
    /// dynamic PT mapped to `PCMU/8000` counts), otherwise the static assignment.
    pub fn codec_for(&self, payload_type: u8) -> Option<Codec> {
        match self.rtpmap(payload_type) {
            Some(map) => Codec::from_rtpmap(map),
            None => Codec::from_static_payload_type(payload_type),
        }
    }
}

/// The `IP4`/`IP6` address type for an address written as text.
fn address_type(address: &str) -> &'static str {
    if address.contains(':') { "IP6" } else { "IP4" }
}

fn write_connection(f: &mut fmt::Formatter<'_>, addr: IpAddr) -> fmt::Result {
    let kind = match addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    write!(f, "c=IN {kind} {addr}\r\n")
}

fn write_raw_lines(f: &mut fmt::Formatter<'_>, lines: &[RawLine], kinds: &[char]) -> fmt::Result {
    for line in lines.iter().filter(|l| kinds.contains(&l.kind)) {
        write!(f, "{}={}\r\n", line.kind, line.value)?;
    }
    Ok(())
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "a={}:{}", self.name, value),
            None => write!(f, "a={}", self.name),
        }
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a=rtpmap:{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        if let Some(channels) = self.channels {
            write!(f, "/{channels}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "o={} {} {} IN {} {}",
            self.username,
            self.session_id,
            self.session_version,
            address_type(&self.address),
            self.address
        )
    }
}

/// Serialises in the line order RFC 8866 §5 mandates (v o s i u e p c b t/r z k a, then per
/// media m i c b k a), with CRLF line endings. Kept lines are emitted in their group, in
/// source order, so parse → display → parse is the identity.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=0\r\n")?;
        write!(f, "{}\r\n", self.origin)?;
        // RFC 8866 §5.3: "s= " is the recommended spelling of "no name"; it parses back
        // to the empty string.
        write!(
            f,
            "s={}\r\n",
            if self.session_name.is_empty() {
                " "
            } else {
                &self.session_name
            }
        )?;
        write_raw_lines(f, &self.other_lines, &['i', 'u', 'e', 'p'])?;
        if let Some(addr) = self.connection {
            write_connection(f, addr)?;
        }
        write_raw_lines(f, &self.other_lines, &['b'])?;
        // t= and r= interleave (each r= belongs to the t= before it), so one pass.
        if self.other_lines.iter().any(|l| l.kind == 't') {
            write_raw_lines(f, &self.other_lines, &['t', 'r'])?;
        } else {
            f.write_str("t=0 0\r\n")?;
        }
        write_raw_lines(f, &self.other_lines, &['z', 'k'])?;
        for attr in &self.attributes {
            write!(f, "{attr}\r\n")?;
        }
        if let Some(direction) = self.direction {
            write!(f, "a={direction}\r\n")?;
        }
        for media in &self.media {
            write!(f, "{media}")?;
        }
        Ok(())
    }
}

/// One `m=` section including its trailing CRLF (so it can be concatenated).
impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.kind, self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", self.protocol)?;
        for format in &self.formats {
            write!(f, " {format}")?;
        }
        f.write_str("\r\n")?;
        write_raw_lines(f, &self.other_lines, &['i'])?;
        if let Some(addr) = self.connection {
            write_connection(f, addr)?;
        }
        write_raw_lines(f, &self.other_lines, &['b', 'k'])?;
        for map in &self.rtpmaps {
            write!(f, "{map}\r\n")?;
        }
        for (pt, params) in &self.fmtp {
            if params.is_empty() {
                write!(f, "a=fmtp:{pt}\r\n")?;
            } else {
                write!(f, "a=fmtp:{pt} {params}\r\n")?;
            }
        }
        if let Some(ptime) = self.ptime {
            write!(f, "a=ptime:{ptime}\r\n")?;
        }
        for attr in &self.attributes {
            write!(f, "{attr}\r\n")?;
        }
        if let Some(direction) = self.direction {
            write!(f, "a={direction}\r\n")?;
        }
        Ok(())
    }
}
