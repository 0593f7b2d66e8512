//! Turning datagrams into SIP messages, and SIP messages that cannot be used into the error
//! responses RFC 3261 asks for.
//!
//! rsip parses well-formed messages, but it rejects whole messages for things a UAS must
//! answer rather than drop (an unknown method is a 501, an unknown version a 505) and it
//! does not know compact header names or folded lines. So a datagram goes through a small
//! tolerant scanner first: it splits the start line, unfolds and canonicalises headers,
//! checks what RFC 3261 §8.2 and §16.3 ask a server to check, and only then hands a
//! normalised text to rsip. When a request fails a check, the scanner still has the raw
//! Via/From/To/Call-ID/CSeq values, which is all an error response needs.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rsip::{Header, Headers, StatusCode};

/// Methods Siphon handles; sent in `Allow` (OPTIONS, 405).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER";
/// Bodies Siphon understands; sent in `Accept` (OPTIONS, 415).
pub const ACCEPT: &str = "application/sdp";
/// Default largest message accepted (bytes). Larger gets 513.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024;

/// Methods rsip knows but Siphon does not implement: answered 405 with `Allow`.
const KNOWN_UNSUPPORTED: &[&str] = &["MESSAGE", "NOTIFY", "PUBLISH", "SUBSCRIBE"];
const SUPPORTED: &[&str] = &[
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK", "REFER",
];

/// Why a datagram could not be used. Each variant maps to the response RFC 3261 asks for
/// (see [`ParseError::status`]) and to a metric label (see [`ParseError::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("message headers are not valid UTF-8")]
    NotUtf8,
    #[error("no blank line ends the headers")]
    NoHeaderEnd,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version {0}")]
    UnsupportedVersion(String),
    #[error("unknown method {0}")]
    UnknownMethod(String),
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    #[error("unsupported URI scheme {0}")]
    UnsupportedUriScheme(String),
    #[error("malformed header line")]
    BadHeaderLine,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        name: &'static str,
        reason: &'static str,
    },
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("Content-Length larger than the body")]
    ContentLengthTooLarge,
    #[error("Max-Forwards reached zero")]
    TooManyHops,
    #[error("unparseable message: {0}")]
    Unparseable(String),
}

impl ParseError {
    /// The status code and reason phrase RFC 3261 asks for, or `None` for problems that
    /// leave nothing to answer (the datagram is dropped and counted).
    pub fn status(&self) -> (u16, String) {
        match self {
            ParseError::TooLarge { .. } => (513, "Message Too Large".into()),
            ParseError::UnsupportedVersion(_) => (505, "Version Not Supported".into()),
            ParseError::UnknownMethod(_) => (501, "Not Implemented".into()),
            ParseError::MethodNotAllowed(_) => (405, "Method Not Allowed".into()),
            ParseError::UnsupportedUriScheme(_) => (416, "Unsupported URI Scheme".into()),
            ParseError::TooManyHops => (483, "Too Many Hops".into()),
            other => (400, reason_phrase_for(other)),
        }
    }

    /// A short, fixed label for metrics (low cardinality).
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::TooLarge { .. } => "too_large",
            ParseError::NotUtf8 => "not_utf8",
            ParseError::NoHeaderEnd => "no_header_end",
            ParseError::BadStartLine => "bad_start_line",
            ParseError::UnsupportedVersion(_) => "unsupported_version",
            ParseError::UnknownMethod(_) => "unknown_method",
            ParseError::MethodNotAllowed(_) => "method_not_allowed",
            ParseError::UnsupportedUriScheme(_) => "unsupported_uri_scheme",
            ParseError::BadHeaderLine => "bad_header_line",
            ParseError::MissingHeader(_) => "missing_header",
            ParseError::InvalidHeader { .. } => "invalid_header",
            ParseError::CSeqMethodMismatch => "cseq_mismatch",
            ParseError::ContentLengthTooLarge => "content_length",
            ParseError::TooManyHops => "too_many_hops",
            ParseError::Unparseable(_) => "unparseable",
        }
    }
}

/// A 400's reason phrase names the problem so the peer's log says what was wrong.
fn reason_phrase_for(err: &ParseError) -> String {
    let mut s = String::from("Bad Request (");
    let _ = write!(s, "{err}");
    s.push(')');
    // Reason phrases cannot carry CR/LF; the error text comes from our own enum, but a
    // method or scheme could be echoed, so be safe.
    s.retain(|c| c != '\r' && c != '\n');
    s
}

/// A datagram that could not be used, and the response to send for it if one can be built.
#[derive(Debug)]
pub struct Rejection {
    pub error: ParseError,
    /// `Some` when the datagram was a request carrying enough headers to answer it.
    pub response: Option<Box<rsip::Response>>,
}

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_message_size: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// Parses one complete SIP message (a UDP datagram, or one framed TCP message).
///
/// On success the returned message has canonical header names, one Via per header line,
/// and a body cut to Content-Length. Requests also get `received`/`rport` stamped on the
/// top Via for `source` (RFC 3261 §18.2.1, RFC 3581), so every response copies them.
pub fn parse(
    bytes: &[u8],
    source: SocketAddr,
    limits: ParseLimits,
) -> Result<rsip::SipMessage, Rejection> {
    let scanned = match Scanned::scan(bytes) {
        Ok(s) => s,
        Err(error) => {
            return Err(Rejection {
                error,
                response: None,
            });
        }
    };
    let reject = |error: ParseError, scanned: &Scanned<'_>| Rejection {
        response: scanned.error_response(&error, source).map(Box::new),
        error,
    };
    if bytes.len() > limits.max_message_size {
        let error = ParseError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_size,
        };
        return Err(reject(error, &scanned));
    }
    if let Err(error) = scanned.validate() {
        return Err(reject(error, &scanned));
    }
    let parsed = match scanned.start {
        StartLine::Request { .. } => scanned.request(source).map(rsip::SipMessage::Request),
        StartLine::Response { .. } => {
            let text = scanned.normalised(source);
            rsip::SipMessage::try_from(text.as_bytes())
        }
    };
    match parsed {
        Ok(mut msg) => {
            *msg.body_mut() = scanned.body[..scanned.body_len()].to_vec();
            Ok(msg)
        }
        Err(e) => {
            let mut reason = e.to_string();
            reason.truncate(120);
            Err(reject(ParseError::Unparseable(reason), &scanned))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartLine<'a> {
    Request {
        method: &'a str,
        uri: &'a str,
        version: &'a str,
    },
    Response {
        version: &'a str,
        code: u16,
        reason: &'a str,
    },
}

/// A message split into start line, headers (unfolded, canonical names) and body.
struct Scanned<'a> {
    start: StartLine<'a>,
    /// Canonical name and value. Values are owned because unfolding joins lines.
    headers: Vec<(&'static str, String)>,
    /// Names we did not canonicalise (extension headers), kept verbatim.
    extra: Vec<(&'a str, String)>,
    /// Order of all headers: index into `headers` (Ok) or `extra` (Err).
    order: Vec<Result<usize, usize>>,
    body: &'a [u8],
}

/// Canonical names, with compact forms (RFC 3261 §7.3.3, RFC 3262, RFC 3515).
fn canonical_name(name: &str) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("v", "Via"),
        ("via", "Via"),
        ("f", "From"),
        ("from", "From"),
        ("t", "To"),
        ("to", "To"),
        ("i", "Call-ID"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
        ("m", "Contact"),
        ("contact", "Contact"),
        ("l", "Content-Length"),
        ("content-length", "Content-Length"),
        ("c", "Content-Type"),
        ("content-type", "Content-Type"),
        ("e", "Content-Encoding"),
        ("content-encoding", "Content-Encoding"),
        ("k", "Supported"),
        ("supported", "Supported"),
        ("s", "Subject"),
        ("subject", "Subject"),
        ("max-forwards", "Max-Forwards"),
        ("route", "Route"),
        ("record-route", "Record-Route"),
        ("expires", "Expires"),
        ("authorization", "Authorization"),
        ("proxy-authorization", "Proxy-Authorization"),
        ("user-agent", "User-Agent"),
        ("allow", "Allow"),
        ("require", "Require"),
        ("accept", "Accept"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

impl<'a> Scanned<'a> {
    fn scan(bytes: &'a [u8]) -> Result<Self, ParseError> {
        // Leading CRLFs are allowed (RFC 3261 §7.5) and used as keepalives.
        let start_at = bytes
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .ok_or(ParseError::Empty)?;
        let bytes = &bytes[start_at..];
        let (head_len, sep_len) = find_header_end(bytes).ok_or(ParseError::NoHeaderEnd)?;
        let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| ParseError::NotUtf8)?;
        let body = &bytes[head_len + sep_len..];

        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().ok_or(ParseError::BadStartLine)?;
        let start = parse_start_line(first)?;

        let mut scanned = Scanned {
            start,
            headers: Vec::new(),
            extra: Vec::new(),
            order: Vec::new(),
            body,
        };
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                // Folded continuation (RFC 3261 §7.3.1): joins the previous header.
                let last = scanned.order.last().ok_or(ParseError::BadHeaderLine)?;
                let value = match *last {
                    Ok(i) => &mut scanned.headers[i].1,
                    Err(i) => &mut scanned.extra[i].1,
                };
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeaderLine)?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ParseError::BadHeaderLine);
            }
            let value = value.trim();
            match canonical_name(name) {
                Some("Via") => {
                    // One Via per line makes the top Via easy to find and rewrite.
                    for part in split_list(value) {
                        scanned.order.push(Ok(scanned.headers.len()));
                        scanned.headers.push(("Via", part.to_string()));
                    }
                }
                Some(c) => {
                    scanned.order.push(Ok(scanned.headers.len()));
                    scanned.headers.push((c, value.to_string()));
                }
                None => {
                    scanned.order.push(Err(scanned.extra.len()));
                    scanned.extra.push((name, value.to_string()));
                }
            }
        }
        Ok(scanned)
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// RFC 3261 §8.2.1–8.2.2 and §16.3 checks, in the order the RFC lists them so the
    /// most fundamental problem is the one reported.
    fn validate(&self) -> Result<(), ParseError> {
        match self.start {
            StartLine::Response { version, .. } => {
                if version != "SIP/2.0" {
                    return Err(ParseError::UnsupportedVersion(version.into()));
                }
                for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    if self.first(name).is_none() {
                        return Err(ParseError::MissingHeader(static_name(name)));
                    }
                }
                Ok(())
            }
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                if !version.eq_ignore_ascii_case("SIP/2.0") {
                    return Err(ParseError::UnsupportedVersion(version.into()));
                }
                for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    if self.first(name).is_none() {
                        return Err(ParseError::MissingHeader(static_name(name)));
                    }
                }
                let cseq = self.first("CSeq").unwrap_or_default();
                let (num, cseq_method) =
                    cseq.split_once(char::is_whitespace)
                        .ok_or(ParseError::InvalidHeader {
                            name: "CSeq",
                            reason: "expected a number and a method",
                        })?;
                // CSeq numbers are below 2**31 (RFC 3261 §8.1.1.5).
                match num.trim().parse::<u32>() {
                    Ok(n) if n < 1 << 31 => {}
                    _ => {
                        return Err(ParseError::InvalidHeader {
                            name: "CSeq",
                            reason: "sequence number is not a number below 2^31",
                        });
                    }
                }
                if cseq_method.trim() != method {
                    return Err(ParseError::CSeqMethodMismatch);
                }
                if let Some(mf) = self.first("Max-Forwards") {
                    match mf.trim().parse::<u32>() {
                        Ok(0) => return Err(ParseError::TooManyHops),
                        Ok(_) => {}
                        Err(_) => {
                            return Err(ParseError::InvalidHeader {
                                name: "Max-Forwards",
                                reason: "not a number",
                            });
                        }
                    }
                }
                if !SUPPORTED.contains(&method) {
                    if KNOWN_UNSUPPORTED.contains(&method) {
                        return Err(ParseError::MethodNotAllowed(method.into()));
                    }
                    return Err(ParseError::UnknownMethod(method.into()));
                }
                let scheme = uri.split(':').next().unwrap_or_default();
                if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
                    return Err(ParseError::UnsupportedUriScheme(scheme.into()));
                }
                Ok(())
            }
        }
        .and_then(|()| self.check_content_length())
    }

    fn check_content_length(&self) -> Result<(), ParseError> {
        if let Some(cl) = self.first("Content-Length") {
            let n: usize = cl.trim().parse().map_err(|_| ParseError::InvalidHeader {
                name: "Content-Length",
                reason: "not a number",
            })?;
            if n > self.body.len() {
                return Err(ParseError::ContentLengthTooLarge);
            }
        }
        Ok(())
    }

    /// The body cut to Content-Length (RFC 3261 §18.3: extra bytes in a datagram are discarded).
    fn body_len(&self) -> usize {
        self.first("Content-Length")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(self.body.len(), |n| n.min(self.body.len()))
    }

    /// The request as rsip would parse [`Self::normalised`]'s text, built from the scanned
    /// lines without writing that text and tokenizing it again: rsip's own tokenizer reads
    /// the request line (short), and rsip's own conversion turns each (name, value) into
    /// its header, so names map to the same variants and values are the same strings. The
    /// header order, the stamped top Via and the trailing Content-Length are those of
    /// `normalised`. Requests are every message a registrar or a call setup receives; a
    /// response still takes the text path (it is rarer, and has no Via to stamp).
    fn request(&self, source: SocketAddr) -> Result<rsip::Request, rsip::Error> {
        use rsip::headers::header::Tokenizer as HeaderTokenizer;
        use rsip::message::request::tokenizer::Tokenizer as RequestTokenizer;
        let StartLine::Request {
            method,
            uri,
            version,
        } = self.start
        else {
            return Err(rsip::Error::Unexpected("not a request".into()));
        };
        let line = format!("{method} {uri} {version}\r\n\r\n");
        let (_, start) = RequestTokenizer::tokenize(line.as_bytes())?;
        let top_via = self
            .order
            .iter()
            .find_map(|entry| match *entry {
                Ok(i) if self.headers[i].0 == "Via" => Some(stamp_via(&self.headers[i].1, source)),
                _ => None,
            })
            .unwrap_or_default();
        let content_length = self.body_len().to_string();
        let mut headers = Vec::with_capacity(self.order.len() + 1);
        let mut first_via = true;
        for entry in &self.order {
            let (name, value) = match *entry {
                Ok(i) => (self.headers[i].0, self.headers[i].1.as_str()),
                Err(i) => (self.extra[i].0, self.extra[i].1.as_str()),
            };
            let value = if name == "Via" && first_via {
                first_via = false;
                top_via.as_str()
            } else if name == "Content-Length" {
                continue; // added last, matching the cut body
            } else {
                value
            };
            headers.push(HeaderTokenizer {
                name: name.as_bytes(),
                value: value.as_bytes(),
            });
        }
        headers.push(HeaderTokenizer {
            name: b"Content-Length",
            value: content_length.as_bytes(),
        });
        RequestTokenizer {
            headers,
            body: &[],
            ..start
        }
        .try_into()
    }

    /// Text rsip can parse: canonical names, one Via per line, received/rport stamped.
    fn normalised(&self, source: SocketAddr) -> String {
        let mut out = String::with_capacity(512);
        match self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                let _ = write!(out, "{method} {uri} {version}\r\n");
            }
            StartLine::Response {
                version,
                code,
                reason,
            } => {
                let _ = write!(out, "{version} {code} {reason}\r\n");
            }
        }
        let is_request = matches!(self.start, StartLine::Request { .. });
        let mut first_via = true;
        for entry in &self.order {
            let (name, value) = match *entry {
                Ok(i) => (self.headers[i].0, self.headers[i].1.as_str()),
                Err(i) => (self.extra[i].0, self.extra[i].1.as_str()),
            };
            if name == "Via" && first_via && is_request {
                first_via = false;
                let _ = write!(out, "Via: {}\r\n", stamp_via(value, source));
            } else if name == "Content-Length" {
                continue; // rewritten below to match the cut body
            } else {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body_len());
        out
    }

    /// Builds the error response for `error`, from the raw headers, when the message is a
    /// request with at least a Via (without one there is nowhere RFC-correct to answer).
    fn error_response(&self, error: &ParseError, source: SocketAddr) -> Option<rsip::Response> {
        let StartLine::Request { method, .. } = self.start else {
            return None;
        };
        if method == "ACK" {
            return None; // ACKs are never answered (RFC 3261 §17.2.3)
        }
        let (code, reason) = error.status();
        let mut headers = Headers::default();
        let mut first_via = true;
        for (name, value) in &self.headers {
            if *name != "Via" {
                continue;
            }
            let value = if first_via {
                first_via = false;
                stamp_via(value, source)
            } else {
                value.clone()
            };
            headers.push(Header::Via(value.into()));
        }
        if first_via {
            return None;
        }
        if let Some(v) = self.first("From") {
            headers.push(Header::From(v.into()));
        }
        if let Some(v) = self.first("To") {
            let to = if has_tag(v) {
                v.to_string()
            } else {
                format!("{v};tag={}", error_tag())
            };
            headers.push(Header::To(to.into()));
        }
        if let Some(v) = self.first("Call-ID") {
            headers.push(Header::CallId(v.into()));
        }
        if let Some(v) = self.first("CSeq") {
            headers.push(Header::CSeq(v.into()));
        }
        match error {
            ParseError::MethodNotAllowed(_) => headers.push(Header::Allow(ALLOW.into())),
            ParseError::UnknownMethod(_) => headers.push(Header::Allow(ALLOW.into())),
            _ => {}
        }
        headers.push(Header::ContentLength(0.into()));
        Some(rsip::Response {
            status_code: StatusCode::Other(code, reason),
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        })
    }
}

fn static_name(name: &str) -> &'static str {
    match name {
        "Via" => "Via",
        "From" => "From",
        "To" => "To",
        "Call-ID" => "Call-ID",
        _ => "CSeq",
    }
}

/// A fixed To-tag for stateless error responses: it only has to differ from the caller's.
fn error_tag() -> &'static str {
    "siphon-err"
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Finds the end of the headers: returns (offset of the blank line, separator length).
/// Accepts bare LF line endings, which some stacks send.
fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, 2)),
        (Some(c), _) => Some((c, 4)),
        (None, Some(l)) => Some((l, 2)),
        (None, None) => None,
    }
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    let mut parts = line.splitn(3, ' ');
    let a = parts.next().ok_or(ParseError::BadStartLine)?;
    let b = parts.next().ok_or(ParseError::BadStartLine)?;
    let c = parts.next().ok_or(ParseError::BadStartLine)?;
    // Compare bytes: slicing the str at 4 would panic inside a multi-byte character
    // (found by fuzzing).
    let sip_prefix = |t: &str| {
        t.as_bytes()
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    };
    if sip_prefix(a) {
        let code: u16 = b.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..700).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response {
            version: a,
            code,
            reason: c,
        });
    }
    if a.is_empty() || !a.bytes().all(is_token_char) || b.is_empty() || c.contains(' ') {
        return Err(ParseError::BadStartLine);
    }
    if !b.contains(':') || !sip_prefix(c) {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: a,
        uri: b,
        version: c,
    })
}

/// Splits a header value on commas that are outside quotes and angle brackets.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, ch) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

fn has_tag(value: &str) -> bool {
    header_param(value, "tag").is_some()
}

/// The value of a `;name=value` parameter of a name-addr header (From/To/Contact), looking
/// only after the closing `>` when there is one (URI parameters are not header parameters).
pub fn header_param<'v>(value: &'v str, name: &str) -> Option<&'v str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then_some(v.trim().trim_matches('"'))
    })
}

/// Adds `received` (when the sent-by host is not the source IP) and fills an empty
/// `rport` (RFC 3581) on a Via value.
pub fn stamp_via(via: &str, source: SocketAddr) -> String {
    let mut params = via.split(';');
    let sent = params.next().unwrap_or_default();
    let host = sent
        .split_whitespace()
        .nth(1)
        .map(|hp| {
            if let Some(rest) = hp.strip_prefix('[') {
                rest.split(']').next().unwrap_or_default()
            } else {
                hp.split(':').next().unwrap_or_default()
            }
        })
        .unwrap_or_default();
    let mut out = String::with_capacity(via.len() + 40);
    out.push_str(sent.trim_end());
    let mut has_received = false;
    for p in params {
        let (k, _) = p.split_once('=').unwrap_or((p, ""));
        let k = k.trim();
        if k.eq_ignore_ascii_case("rport") {
            let _ = write!(out, ";rport={}", source.port());
        } else if k.eq_ignore_ascii_case("received") {
            has_received = true;
            let _ = write!(out, ";received={}", source.ip());
        } else {
            out.push(';');
            out.push_str(p.trim());
        }
    }
    if !has_received && host.parse::<std::net::IpAddr>().ok() != Some(source.ip()) {
        let _ = write!(out, ";received={}", source.ip());
    }
    out
}

/// Where a response to a request with this (stamped) top Via goes: RFC 3581 says the
/// source port when `rport` is present; RFC 3261 §18.2.2 says the received address and
/// the sent-by port otherwise.
pub fn response_address(top_via: &str, source: SocketAddr) -> SocketAddr {
    let lower = top_via.to_ascii_lowercase();
    if lower.contains(";rport") {
        return source;
    }
    let sent = top_via.split(';').next().unwrap_or_default();
    let port = sent
        .split_whitespace()
        .nth(1)
        .and_then(|hp| {
            let after = if hp.starts_with('[') {
                hp.rsplit_once("]:").map(|(_, p)| p)
            } else {
                hp.rsplit_once(':').map(|(_, p)| p)
            };
            after.and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(5060);
    SocketAddr::new(source.ip(), port)
}

/// The standard reason phrase for a code (rsip spells its own as CamelCase identifiers).
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A response to `request` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied; a To
/// tag added when the request had none and one is given. The caller adds anything else and
/// the body; [`finish`] sets Content-Length.
pub fn response_to(
    request: &rsip::Request,
    code: u16,
    reason_phrase: Option<&str>,
    to_tag: Option<&str>,
) -> rsip::Response {
    let mut headers = Headers::default();
    for h in request.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                // The value as received (no formatting of the header and stripping its
                // name again: this runs for every response).
                let value = rsip::headers::UntypedHeader::value(to);
                let value = match to_tag {
                    Some(tag) if code != 100 && !has_tag(value) => {
                        let mut v = String::with_capacity(value.len() + 5 + tag.len());
                        v.push_str(value);
                        v.push_str(";tag=");
                        v.push_str(tag);
                        v
                    }
                    _ => value.to_owned(),
                };
                headers.push(Header::To(value.into()));
            }
            _ => {}
        }
    }
    // Record-Route is copied into responses that create dialogs (RFC 3261 §12.1.1).
    if (101..300).contains(&code) {
        for h in request.headers.iter() {
            if let Header::RecordRoute(_) = h {
                headers.push(h.clone());
            }
        }
    }
    rsip::Response {
        status_code: StatusCode::Other(code, reason_phrase.unwrap_or(reason(code)).into()),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The wire bytes of a message (rsip's text form). Formatted into a buffer the thread
/// keeps (formatting into an empty `String` regrew it several times per message, for every
/// response and request Siphon sends), then copied out at its exact size: transactions keep
/// their last message for retransmission, so spare capacity would stay allocated for 32 s.
pub fn to_bytes(message: &impl std::fmt::Display) -> Vec<u8> {
    thread_local! {
        static TEXT: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(2048));
    }
    TEXT.with(|text| match text.try_borrow_mut() {
        Ok(mut text) => {
            text.clear();
            let _ = write!(text, "{message}");
            let bytes = text.as_bytes().to_vec();
            // A rare huge message must not pin its buffer for the thread's life.
            if text.capacity() > 16 * 1024 {
                *text = String::with_capacity(2048);
            }
            bytes
        }
        // Only if a Display impl formatted a message itself while this one is formatted.
        Err(_) => message.to_string().into_bytes(),
    })
}

/// Sets the body and a matching Content-Length (rsip does not compute it).
pub fn finish(headers: &mut Headers, body: &[u8]) {
    headers.retain(|h| !matches!(h, Header::ContentLength(_)));
    headers.push(Header::ContentLength((body.len() as u32).into()));
}

/// A header's raw value by name (case-insensitive), searching rsip's typed and untyped headers.
pub fn header_value(headers: &Headers, name: &str) -> Option<String> {
    header_str(headers, name).map(str::to_string)
}

/// The first value of a header, borrowed (trimmed as [`header_value`] trims it). Compares
/// names without formatting any header: this runs several times per request.
pub fn header_str<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    header_strs(headers, name).next()
}

/// All values of a header, in order, borrowed.
pub fn header_strs<'a>(headers: &'a Headers, name: &str) -> impl Iterator<Item = &'a str> {
    headers.iter().filter_map(move |h| {
        let (n, v) = h.name_and_value();
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// All values of a header, in order.
pub fn header_values(headers: &Headers, name: &str) -> Vec<String> {
    header_strs(headers, name).map(str::to_string).collect()
}

/// Outcome of looking for one message at the front of a stream buffer (SIP over TCP).
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// Need more bytes.
    Incomplete,
    /// Only CRLFs before any message: a keepalive of this many bytes (RFC 5626 §3.5.1).
    Keepalive(usize),
    /// A whole message of this many bytes (headers + Content-Length body) is available.
    Message(usize),
}

/// Framing for stream transports: messages are delimited by the blank line and
/// Content-Length (RFC 3261 §18.3), and may arrive in any number of pieces.
pub fn frame(buf: &[u8], limits: ParseLimits) -> Result<Framed, ParseError> {
    let skip = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    if skip > 0 {
        return Ok(Framed::Keepalive(skip));
    }
    let Some((head_len, sep)) = find_header_end(buf) else {
        if buf.len() > limits.max_message_size {
            return Err(ParseError::TooLarge {
                size: buf.len(),
                limit: limits.max_message_size,
            });
        }
        return Ok(Framed::Incomplete);
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| ParseError::NotUtf8)?;
    let mut content_length = None;
    for line in head.split('\n') {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                content_length =
                    Some(
                        value
                            .trim()
                            .parse::<usize>()
                            .map_err(|_| ParseError::InvalidHeader {
                                name: "Content-Length",
                                reason: "not a number",
                            })?,
                    );
            }
        }
    }
    // Over streams Content-Length is mandatory (RFC 3261 §20.14).
    let body = content_length.ok_or(ParseError::InvalidHeader {
        name: "Content-Length",
        reason: "required on stream transports",
    })?;
    // A hostile Content-Length near usize::MAX must not wrap (release) or panic (overflow
    // checks): checked, and saturated into the size error.
    let total = head_len
        .checked_add(sep)
        .and_then(|n| n.checked_add(body))
        .unwrap_or(usize::MAX);
    if total > limits.max_message_size {
        return Err(ParseError::TooLarge {
            size: total,
            limit: limits.max_message_size,
        });
    }
    if buf.len() < total {
        return Ok(Framed::Incomplete);
    }
    Ok(Framed::Message(total))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rsip::prelude::*;

    fn src() -> SocketAddr {
        "192.0.2.10:5070".parse().unwrap()
    }

    fn options(extra: &str) -> String {
        format!(
            "OPTIONS sip:siphon@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK776asdhds;rport\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:siphon@127.0.0.1>\r\n\
             From: <sip:alice@192.0.2.10>;tag=1928301774\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 63104 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    fn reject(text: &str) -> Rejection {
        parse(text.as_bytes(), src(), ParseLimits::default()).unwrap_err()
    }

    fn status_of(text: &str) -> u16 {
        reject(text).response.unwrap().status_code.code()
    }

    /// The lookups compare names without formatting headers; they must find what the
    /// formatted text (`name: value`, split at the first colon) would have found.
    #[test]
    fn header_lookup_agrees_with_the_formatted_headers() {
        let extra = "Require: timer\r\nRequire:  100rel , foo \r\nSupported: replaces\r\n\
                     Authorization: Digest username=\"a\", uri=\"sip:x:5060\"\r\n\
                     X-Thing: a:b\r\nSubscription-State: active\r\nExpires: 60\r\n";
        let msg = parse(options(extra).as_bytes(), src(), ParseLimits::default()).unwrap();
        let rsip::SipMessage::Request(req) = msg else {
            panic!("not a request")
        };
        let by_text = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter_map(|h| {
                    let text = h.to_string();
                    let (n, v) = text.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
                .collect()
        };
        for name in [
            "Require",
            "require",
            "Supported",
            "Authorization",
            "X-Thing",
            "Via",
            "Call-ID",
            "call-id",
            "CSeq",
            "Subscription-State",
            "Expires",
            "To",
            "From",
            "Max-Forwards",
            "Content-Length",
            "Missing",
        ] {
            assert_eq!(header_values(&req.headers, name), by_text(name), "{name}");
            assert_eq!(
                header_value(&req.headers, name),
                by_text(name).into_iter().next(),
                "{name}"
            );
        }
        assert_eq!(
            header_values(&req.headers, "Require"),
            ["timer", "100rel , foo"]
        );
    }

    #[test]
    fn parses_a_valid_request_and_stamps_via() {
        let msg = parse(options("").as_bytes(), src(), ParseLimits::default()).unwrap();
        let rsip::SipMessage::Request(req) = msg else {
            panic!("not a request")
        };
        let via = req.via_header().unwrap().to_string();
        assert!(via.contains("rport=5070"), "{via}");
        assert!(!via.contains("received="), "{via}");
    }

    /// IPv6 references (RFC 3261 §25.1, RFC 5954) in the Request-URI, Via, From/To and
    /// Contact: unpatched rsip 0.4.0 answered this 400 ("invalid digit found in string").
    #[test]
    fn parses_ipv6_references_and_stamps_received() {
        let text = "OPTIONS sip:siphon@[::1]:15062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP [2001:db8::5]:5070;branch=z9hG4bK776asdhds\r\n\
             Max-Forwards: 70\r\n\
             To: <sip:siphon@[::1]:15062>\r\n\
             From: <sip:alice@[2001:db8::5]:5070>;tag=1928301774\r\n\
             Contact: <sip:alice@[2001:db8::5]:5070;transport=udp>\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let source: SocketAddr = "[2001:db8::9]:5071".parse().unwrap();
        let msg = parse(text.as_bytes(), source, ParseLimits::default()).unwrap();
        let rsip::SipMessage::Request(req) = msg else {
            panic!("not a request")
        };
        assert_eq!(req.uri.to_string(), "sip:siphon@[::1]:15062");
        let via = req.via_header().unwrap().typed().unwrap();
        assert_eq!(via.uri.host_with_port.to_string(), "[2001:db8::5]:5070");
        // The packet came from another address: received (unbracketed, as RFC 3261 writes
        // it) names it, and replies go there, to the Via's port (no rport).
        assert_eq!(via.received(), Ok(Some(source.ip())));
        let top = req.via_header().unwrap().value().to_string();
        assert_eq!(
            response_address(&top, source),
            "[2001:db8::9]:5070".parse::<SocketAddr>().unwrap()
        );
        let contact = req.contact_header().unwrap().typed().unwrap();
        assert_eq!(contact.uri.host_with_port.to_string(), "[2001:db8::5]:5070");
    }

    #[test]
    fn received_added_when_host_differs() {
        let v = stamp_via(
            "SIP/2.0/UDP phone.example;branch=z9hG4bK1",
            "198.51.100.1:40000".parse().unwrap(),
        );
        assert_eq!(
            v,
            "SIP/2.0/UDP phone.example;branch=z9hG4bK1;received=198.51.100.1"
        );
    }

    #[test]
    fn response_address_follows_rport_or_sent_by() {
        let s: SocketAddr = "198.51.100.1:40000".parse().unwrap();
        assert_eq!(
            response_address("SIP/2.0/UDP 10.0.0.1:5062;rport=40000;branch=z9hG4bK1", s),
            s
        );
        assert_eq!(
            response_address("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1", s),
            "198.51.100.1:5062".parse().unwrap()
        );
        assert_eq!(
            response_address("SIP/2.0/UDP host;branch=z9hG4bK1", s),
            "198.51.100.1:5060".parse().unwrap()
        );
    }

    #[test]
    fn compact_headers_and_folding_are_understood() {
        let text = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\
                    v: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\n\
                    f: <sip:a@b>;tag=1\r\nt: <sip:x@127.0.0.1>\r\ni: cid\r\nCSeq: 1\r\n OPTIONS\r\nl: 0\r\n\r\n";
        let msg = parse(text.as_bytes(), src(), ParseLimits::default()).unwrap();
        assert_eq!(
            msg.headers()
                .iter()
                .filter(|h| matches!(h, Header::Via(_)))
                .count(),
            2
        );
        let rsip::SipMessage::Request(req) = msg else {
            panic!()
        };
        assert_eq!(req.call_id_header().unwrap().value(), "cid");
        assert_eq!(req.cseq_header().unwrap().value(), "1 OPTIONS");
    }

    #[test]
    fn unknown_version_is_505() {
        assert_eq!(
            status_of(&options("").replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1)),
            505
        );
    }

    #[test]
    fn max_forwards_zero_is_483() {
        assert_eq!(
            status_of(&options("").replace("Max-Forwards: 70", "Max-Forwards: 0")),
            483
        );
    }

    #[test]
    fn unknown_method_is_501_and_known_unsupported_405() {
        let text = options("").replace("OPTIONS", "FROBNICATE");
        let r = reject(&text);
        assert_eq!(r.error, ParseError::UnknownMethod("FROBNICATE".into()));
        assert_eq!(r.response.unwrap().status_code.code(), 501);
        let text = options("").replace("OPTIONS", "SUBSCRIBE");
        let resp = reject(&text).response.unwrap();
        assert_eq!(resp.status_code.code(), 405);
        assert_eq!(header_value(&resp.headers, "Allow").unwrap(), ALLOW);
    }

    #[test]
    fn unknown_scheme_is_416() {
        assert_eq!(
            status_of(&options("").replace("OPTIONS sip:", "OPTIONS http:")),
            416
        );
    }

    #[test]
    fn oversized_is_513() {
        let pad = format!("X-Pad: {}\r\n", "a".repeat(20_000));
        assert_eq!(status_of(&options(&pad)), 513);
    }

    #[test]
    fn missing_header_is_400_naming_it() {
        let text = options("").replace("Call-ID: a84b4c76e66710\r\n", "");
        let resp = reject(&text).response.unwrap();
        assert_eq!(resp.status_code.code(), 400);
        assert!(resp.status_code.to_string().contains("Call-ID"));
    }

    #[test]
    fn cseq_mismatch_is_400() {
        let text = options("").replace("63104 OPTIONS", "63104 INVITE");
        assert_eq!(reject(&text).error, ParseError::CSeqMethodMismatch);
        assert_eq!(status_of(&text), 400);
    }

    #[test]
    fn content_length_beyond_body_is_400_and_extra_body_is_cut() {
        let text = options("").replace("Content-Length: 0", "Content-Length: 50");
        assert_eq!(status_of(&text), 400);
        let text = options("").replace(
            "Content-Length: 0\r\n\r\n",
            "Content-Length: 2\r\n\r\nabcdef",
        );
        let msg = parse(text.as_bytes(), src(), ParseLimits::default()).unwrap();
        assert_eq!(msg.body(), b"ab");
    }

    #[test]
    fn error_response_copies_dialog_headers_and_adds_to_tag() {
        let resp = reject(&options("").replace("Max-Forwards: 70", "Max-Forwards: 0"))
            .response
            .unwrap();
        let text = resp.to_string();
        assert!(text.starts_with("SIP/2.0 483 Too Many Hops\r\n"), "{text}");
        assert!(text.contains("Call-ID: a84b4c76e66710"));
        assert!(text.contains("CSeq: 63104 OPTIONS"));
        assert!(text.contains("tag=siphon-err"));
        assert!(text.contains("rport=5070"));
    }

    #[test]
    fn garbage_never_panics_and_is_not_answered() {
        for g in [
            &b""[..],
            b"\r\n\r\n",
            b"hello",
            b"\xff\xfe\xfd\r\n\r\n",
            b"INVITE\r\n\r\n",
            b"SIP/2.0 999 Nope\r\n\r\n",
            b"INVITE sip:a SIP/2.0\r\nno colon here\r\n\r\n",
            b"\x00\x01\x02\x03",
        ] {
            let r = parse(g, src(), ParseLimits::default()).unwrap_err();
            assert!(r.response.is_none(), "{:?}", r.error);
        }
    }

    #[test]
    fn multibyte_characters_in_the_start_line_do_not_panic() {
        // Regressions from fuzzing: byte 4 inside a multi-byte character.
        for input in [
            "R : SIP\u{327}\n\n",
            "SIP\u{327}/2.0 200 OK\n\n",
            "REG\u{c5}TER sip:a SIP/2.0\r\n\r\n",
        ] {
            assert!(parse(input.as_bytes(), src(), ParseLimits::default()).is_err());
        }
    }

    #[test]
    fn headerless_request_gets_no_response() {
        let r = reject("OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(r.error, ParseError::MissingHeader("Via"));
        assert!(r.response.is_none());
    }

    #[test]
    fn truncated_messages_are_rejected() {
        let full = options("");
        for cut in [10, 40, 100, full.len() - 3] {
            let r = parse(&full.as_bytes()[..cut], src(), ParseLimits::default());
            assert!(r.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn stream_framing_handles_partial_reads_and_keepalives() {
        let msg = options("").replace("Content-Length: 0", "Content-Length: 3") + "abc";
        let bytes = msg.as_bytes();
        let limits = ParseLimits::default();
        assert_eq!(frame(&bytes[..20], limits).unwrap(), Framed::Incomplete);
        assert_eq!(
            frame(&bytes[..bytes.len() - 1], limits).unwrap(),
            Framed::Incomplete
        );
        assert_eq!(frame(bytes, limits).unwrap(), Framed::Message(bytes.len()));
        let mut two = bytes.to_vec();
        two.extend_from_slice(bytes);
        assert_eq!(frame(&two, limits).unwrap(), Framed::Message(bytes.len()));
        assert_eq!(frame(b"\r\n\r\nOPT", limits).unwrap(), Framed::Keepalive(4));
        let no_cl = "OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n";
        assert!(frame(no_cl.as_bytes(), limits).is_err());
        // A Content-Length at the edge of usize: an error, never a wrapped or panicking sum.
        for cl in [usize::MAX, usize::MAX - 3, usize::MAX / 2 + 1] {
            let huge = format!("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {cl}\r\n\r\n");
            assert!(
                matches!(
                    frame(huge.as_bytes(), limits),
                    Err(ParseError::TooLarge { .. })
                ),
                "Content-Length {cl}"
            );
        }
    }

    #[test]
    fn response_to_copies_headers_and_tags_to() {
        let msg = parse(options("").as_bytes(), src(), ParseLimits::default()).unwrap();
        let rsip::SipMessage::Request(req) = msg else {
            panic!()
        };
        let mut resp = response_to(&req, 200, None, Some("abc"));
        finish(&mut resp.headers, b"");
        let text = resp.to_string();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(
            text.contains("To: <sip:siphon@127.0.0.1>;tag=abc"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 0"));
        let trying = response_to(&req, 100, None, Some("abc")).to_string();
        assert!(!trying.contains("tag=abc"));
    }

    #[test]
    fn header_params() {
        assert_eq!(
            header_param("\"A;b\" <sip:a@b;tag=no>;tag=yes;x", "tag"),
            Some("yes")
        );
        assert_eq!(header_param("<sip:a@b;tag=no>", "tag"), None);
        assert_eq!(header_param("sip:a@b;tag=t1", "tag"), Some("t1"));
    }
}

#[cfg(test)]
mod hostile {
    //! Seeded random damage to real messages: parsing must return, never panic.
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SAMPLES: &[&str] = &[
        "INVITE sip:600@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-1-0\r\nFrom: sipp <sip:sipp@127.0.0.1:5070>;tag=1\r\nTo: <sip:600@127.0.0.1:5060>\r\nCall-ID: 1-1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5070\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 129\r\n\r\nv=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP [::1]:5071;branch=z9hG4bKx;rport\r\nFrom: <sip:1001@127.0.0.1>;tag=a\r\nTo: \"Bob, Jr\" <sip:1001@127.0.0.1>\r\nCall-ID: r\r\nCSeq: 2 REGISTER\r\nContact: <sip:1001@[::1]:5071;transport=tcp>;expires=60, *\r\nAuthorization: Digest username=\"1001\", realm=\"siphon\", nonce=\"abc\", uri=\"sip:127.0.0.1\", response=\"0\"\r\nContent-Length: 0\r\n\r\n",
        "SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>;tag=2\r\ni: x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
    ];

    /// xorshift: deterministic without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn damaged_messages_never_panic() {
        let source: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let interesting = b"\r\n:;,<>\"@ \t=\x00\xff0123456789SIP/2.0";
        for sample in SAMPLES {
            let base = sample.as_bytes();
            for cut in 0..base.len() {
                let _ = parse(&base[..cut], source, ParseLimits::default());
                let _ = frame(&base[..cut], ParseLimits::default());
            }
            for _ in 0..4000 {
                let mut m = base.to_vec();
                for _ in 0..(next(&mut state) % 6 + 1) {
                    let pos = (next(&mut state) as usize) % m.len().max(1);
                    let byte = interesting[(next(&mut state) as usize) % interesting.len()];
                    match next(&mut state) % 3 {
                        0 if pos < m.len() => m[pos] = byte,
                        1 => m.insert(pos.min(m.len()), byte),
                        _ if pos < m.len() => {
                            m.remove(pos);
                        }
                        _ => {}
                    }
                }
                if let Err(r) = parse(&m, source, ParseLimits::default())
                    && let Some(resp) = r.response
                {
                    // Whatever we answer must itself be a parseable SIP response.
                    let text = resp.to_string();
                    assert!(
                        rsip::SipMessage::try_from(text.as_str()).is_ok(),
                        "unparseable error response:\n{text}"
                    );
                }
                let _ = frame(&m, ParseLimits::default());
            }
        }
    }

    /// Requests are built from the scanned lines without rsip's message tokenizer
    /// (`Scanned::request`); over valid and damaged requests alike, the result (or the
    /// fact of failing) must be what rsip makes of the normalised text, which is how every
    /// request was parsed before.
    #[test]
    fn direct_request_build_matches_rsip_on_the_normalised_text() {
        let source: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let interesting = b"\r\n:;,<>\"@ \t=[]0123456789SIP/2.0zZ%";
        let (mut compared, mut built) = (0, 0);
        for sample in SAMPLES.iter().filter(|s| !s.starts_with("SIP/")) {
            for round in 0..3000 {
                let mut m = sample.as_bytes().to_vec();
                for _ in 0..(if round == 0 {
                    0
                } else {
                    next(&mut state) % 4 + 1
                }) {
                    let pos = (next(&mut state) as usize) % m.len().max(1);
                    let byte = interesting[(next(&mut state) as usize) % interesting.len()];
                    match next(&mut state) % 3 {
                        0 if pos < m.len() => m[pos] = byte,
                        1 => m.insert(pos.min(m.len()), byte),
                        _ if pos < m.len() => {
                            m.remove(pos);
                        }
                        _ => {}
                    }
                }
                let Ok(scanned) = Scanned::scan(&m) else {
                    continue;
                };
                if !matches!(scanned.start, StartLine::Request { .. })
                    || scanned.validate().is_err()
                {
                    continue;
                }
                compared += 1;
                let direct = scanned.request(source).ok();
                let via_text =
                    match rsip::SipMessage::try_from(scanned.normalised(source).as_bytes()) {
                        Ok(rsip::SipMessage::Request(r)) => Some(r),
                        _ => None,
                    };
                built += usize::from(direct.is_some());
                assert_eq!(
                    direct,
                    via_text,
                    "differs for:\n{}",
                    String::from_utf8_lossy(&m)
                );
            }
        }
        // The corpus must exercise both outcomes, not only failures.
        assert!(
            compared > 1000 && built > 500,
            "compared {compared}, built {built}"
        );
    }
}
