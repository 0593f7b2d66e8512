//! The SDP text parser.
//!
//! What is an error (→ [`SdpError::Malformed`], a 400): an empty body, a first line other
//! than `v=0`, a line that isn't `<letter>=<value>`, CR or NUL inside a line, a missing
//! `o=` or one we can't read, an unreadable `c=` or `m=` line, an `m=` without formats, an
//! audio stream with a port but no connection address at either level, and bodies over the
//! size limits below.
//!
//! What is tolerated, because real phones send it: LF-only line endings, blank lines,
//! surrounding whitespace, a UTF-8 BOM, a missing `s=` or `t=`, repeated single-instance
//! lines (the first wins), lines in the wrong section (skipped), unknown type letters
//! (skipped), unknown attributes (kept), and rtpmap/fmtp/ptime values we can't read (kept as
//! generic attributes instead of failing the whole offer).

use std::net::IpAddr;

use super::{
    Attribute, Direction, MediaDescription, Origin, RawLine, RtpMap, SdpError, SessionDescription,
};

/// Largest body we parse. Real voice SDP is well under 2 KiB and even WebRTC offers with
/// many ICE candidates stay far below this; anything bigger is abuse.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Longest single line.
pub const MAX_LINE_BYTES: usize = 4 * 1024;
/// Most lines in a body (blank ones included), bounding the per-line allocations.
pub const MAX_LINES: usize = 1024;
/// Most `m=` sections. An answer has one m= line per offered one, so this also bounds the
/// answer we build.
pub const MAX_MEDIA: usize = 64;

fn malformed(line: usize, reason: impl Into<String>) -> SdpError {
    SdpError::Malformed {
        line,
        reason: reason.into(),
    }
}

/// Session-level fields collected while scanning, before we know all required lines exist.
#[derive(Default)]
struct Builder {
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<IpAddr>,
    direction: Option<Direction>,
    attributes: Vec<Attribute>,
    other_lines: Vec<RawLine>,
    /// Each media section with the line number of its `m=` (for error reporting).
    media: Vec<(usize, MediaDescription)>,
}

pub(super) fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    if text.len() > MAX_SDP_BYTES {
        return Err(malformed(0, "SDP body exceeds 64 KiB"));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut seen_version = false;
    let mut b = Builder::default();

    for (index, raw) in text.split('\n').enumerate() {
        let line_no = index + 1;
        if line_no > MAX_LINES {
            return Err(malformed(line_no, "too many lines"));
        }
        if raw.len() > MAX_LINE_BYTES {
            return Err(malformed(line_no, "line exceeds 4 KiB"));
        }
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        // trim() removed the CR of a CRLF ending; any CR left is a bare CR inside the line,
        // which would turn into a line break if we ever re-emitted the value.
        if line.contains(['\r', '\0']) {
            return Err(malformed(line_no, "control character inside line"));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(malformed(line_no, "expected <type>=<value>"));
        };
        // Compare by chars, not byte offsets: a non-ASCII key must be an error, not a
        // panic on a char boundary.
        let mut key_chars = key.chars();
        let kind = match (key_chars.next(), key_chars.next()) {
            (Some(c), None) if c.is_ascii_alphabetic() => c,
            _ => return Err(malformed(line_no, "line type must be a single letter")),
        };
        let value = value.trim();

        if !seen_version {
            if kind != 'v' {
                return Err(malformed(line_no, "SDP must start with v=0"));
            }
            if value != "0" {
                return Err(malformed(line_no, "unsupported SDP version"));
            }
            seen_version = true;
            continue;
        }

        if kind == 'm' {
            if b.media.len() >= MAX_MEDIA {
                return Err(malformed(line_no, "too many m= lines"));
            }
            let media = parse_media_line(value, line_no)?;
            b.media.push((line_no, media));
            continue;
        }

        match b.media.last_mut() {
            None => session_line(&mut b, kind, value, line_no)?,
            Some((_, media)) => media_line(media, kind, value, line_no)?,
        }
    }

    if !seen_version {
        return Err(malformed(0, "empty SDP body"));
    }
    let Some(origin) = b.origin else {
        return Err(malformed(0, "missing o= line"));
    };
    for (line_no, media) in &b.media {
        // RFC 8866 §5.7 requires c= at one level or the other. We only insist for audio we
        // might use; a video or data stream without it is going to be rejected anyway.
        if media.kind.eq_ignore_ascii_case("audio")
            && media.port != 0
            && media.connection.is_none()
            && b.connection.is_none()
        {
            return Err(malformed(*line_no, "audio stream without a c= line"));
        }
    }
    let mut other_lines = b.other_lines;
    if !other_lines.iter().any(|l| l.kind == 't') {
        // The grammar requires t=, and Display emits "t=0 0" when none is stored; storing
        // it here too keeps parse → display → parse the identity.
        other_lines.push(RawLine {
            kind: 't',
            value: "0 0".to_owned(),
        });
    }
    // Store kept lines in the order Display emits them (RFC 8866 §5 order; stable, so t=/r=
    // pairs and repeated lines keep their relative order), again for round-trip identity
    // when a sender got the order wrong.
    other_lines.sort_by_key(|l| session_line_rank(l.kind));
    let mut media: Vec<MediaDescription> = b.media.into_iter().map(|(_, m)| m).collect();
    for m in &mut media {
        m.other_lines.sort_by_key(|l| media_line_rank(l.kind));
    }

    Ok(SessionDescription {
        origin,
        session_name: b.session_name.unwrap_or_default(),
        connection: b.connection,
        direction: b.direction,
        attributes: b.attributes,
        other_lines,
        media,
    })
}

/// Position of a kept session-level line relative to the others (c= sits between 0 and 1).
fn session_line_rank(kind: char) -> u8 {
    match kind {
        'i' | 'u' | 'e' | 'p' => 0,
        'b' => 1,
        't' | 'r' => 2,
        _ => 3, // z, k
    }
}

/// Position of a kept media-level line (c= sits between 0 and 1).
fn media_line_rank(kind: char) -> u8 {
    match kind {
        'i' => 0,
        _ => 1, // b, k
    }
}

fn session_line(b: &mut Builder, kind: char, value: &str, line_no: usize) -> Result<(), SdpError> {
    match kind {
        // Single-instance lines: the first wins; repeats fall through to the skip arm
        // rather than failing the call.
        'o' if b.origin.is_none() => b.origin = Some(parse_origin(value, line_no)?),
        's' if b.session_name.is_none() => b.session_name = Some(value.to_owned()),
        'c' => {
            let addr = parse_connection(value, line_no)?;
            b.connection.get_or_insert(addr);
        }
        'a' => {
            if let Some(attr) = parse_attribute(value) {
                match Direction::from_attribute(&attr.name) {
                    Some(direction) if attr.value.is_none() => b.direction = Some(direction),
                    _ => b.attributes.push(attr),
                }
            }
        }
        'i' | 'u' | 'e' | 'p' | 'b' | 't' | 'r' | 'z' | 'k' => b.other_lines.push(RawLine {
            kind,
            value: value.to_owned(),
        }),
        // Repeated v=/o=/s=, or an unknown letter: not ours to judge, skip.
        _ => {}
    }
    Ok(())
}

fn media_line(
    media: &mut MediaDescription,
    kind: char,
    value: &str,
    line_no: usize,
) -> Result<(), SdpError> {
    match kind {
        'c' => {
            // Multicast offers may list several c= lines; we only ever use one address.
            let addr = parse_connection(value, line_no)?;
            media.connection.get_or_insert(addr);
        }
        'a' => {
            if let Some(attr) = parse_attribute(value) {
                apply_media_attribute(media, attr);
            }
        }
        'i' | 'b' | 'k' => media.other_lines.push(RawLine {
            kind,
            value: value.to_owned(),
        }),
        // Session-only lines inside a media section, or unknown letters: skip.
        _ => {}
    }
    Ok(())
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
fn parse_origin(value: &str, line_no: usize) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().take(6).collect();
    let [username, id, version, _nettype, _addrtype, address] = fields[..] else {
        return Err(malformed(line_no, "o= needs six fields"));
    };
    let session_id = parse_digits_wrapping(id)
        .ok_or_else(|| malformed(line_no, "o= session id is not a number"))?;
    let session_version = parse_digits_wrapping(version)
        .ok_or_else(|| malformed(line_no, "o= session version is not a number"))?;
    Ok(Origin {
        username: username.to_owned(),
        session_id,
        session_version,
        address: address.to_owned(),
    })
}

/// A decimal digit string of any length, reduced modulo 2^64. RFC 8866 puts no bound on
/// sess-id / sess-version and some stacks send more than 20 digits; we only compare these
/// values, so wrapping keeps them usable where rejecting the call would not.
fn parse_digits_wrapping(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
    }))
}

/// `c=<nettype> <addrtype> <address>[/<ttl>][/<count>]`. We accept whatever literal is
/// there regardless of the addrtype token (some stacks say IP4 for IPv6 literals and vice
/// versa); host names are an error because resolving them would need DNS, which this
/// sans-IO crate can't do, and nobody sends them for media in practice.
fn parse_connection(value: &str, line_no: usize) -> Result<IpAddr, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().take(4).collect();
    let [_nettype, _addrtype, address] = fields[..] else {
        return Err(malformed(line_no, "c= needs three fields"));
    };
    let address = address.split('/').next().unwrap_or(address);
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    address
        .parse::<IpAddr>()
        .map_err(|_| malformed(line_no, "c= address is not an IP address"))
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`.
fn parse_media_line(value: &str, line_no: usize) -> Result<MediaDescription, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(kind), Some(port_field), Some(protocol)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed(
            line_no,
            "m= needs media, port, protocol and formats",
        ));
    };
    let formats: Vec<String> = fields.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(malformed(line_no, "m= has no formats"));
    }
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(count)),
        None => (port_field, None),
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| malformed(line_no, "m= port is not a number in 0-65535"))?;
    let port_count = port_count
        .map(|c| c.parse::<u16>())
        .transpose()
        .map_err(|_| malformed(line_no, "m= port count is not a number"))?;
    Ok(MediaDescription {
        kind: kind.to_owned(),
        port,
        port_count,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtp: Vec::new(),
        direction: None,
        ptime: None,
        attributes: Vec::new(),
        other_lines: Vec::new(),
    })
}

/// `a=<name>` or `a=<name>:<value>`; None for a nameless attribute, which we skip.
fn parse_attribute(value: &str) -> Option<Attribute> {
    let attr = match value.split_once(':') {
        Some((name, value)) => Attribute {
            name: name.trim().to_owned(),
            value: Some(value.trim().to_owned()),
        },
        None => Attribute {
            name: value.to_owned(),
            value: None,
        },
    };
    (!attr.name.is_empty()).then_some(attr)
}

/// Files a media-level attribute under the typed field it belongs to, or keeps it as a
/// generic attribute when it's unknown or its value can't be read.
fn apply_media_attribute(media: &mut MediaDescription, attr: Attribute) {
    let name = attr.name.to_ascii_lowercase();
    match (name.as_str(), attr.value.as_deref()) {
        ("rtpmap", Some(value)) => {
            if let Some(map) = parse_rtpmap(value) {
                media.rtpmaps.push(map);
                return;
            }
        }
        ("fmtp", Some(value)) => {
            let (pt, params) = value
                .split_once(|c: char| c.is_ascii_whitespace())
                .unwrap_or((value, ""));
            if let Some(pt) = parse_payload_type(pt) {
                media.fmtp.push((pt, params.trim().to_owned()));
                return;
            }
        }
        ("ptime", Some(value)) => {
            if let Ok(ptime) = value.parse::<u32>() {
                media.ptime = Some(ptime);
                return;
            }
        }
        (_, None) => {
            if let Some(direction) = Direction::from_attribute(&name) {
                media.direction = Some(direction);
                return;
            }
        }
        _ => {}
    }
    media.attributes.push(attr);
}

fn parse_payload_type(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

/// `<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    let payload_type = parse_payload_type(pt)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse::<u32>().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse::<u8>().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}
