//! The SIP a UAC needs to place and end calls over UDP: building INVITE / ACK / BYE and the
//! 200 to a BYE from the far end, a small SDP offer, and a scanner for what comes back.
//!
//! Not a general SIP stack: it reads only the headers a call needs (Call-ID, CSeq, To tag,
//! Contact, Proxy-/WWW-Authenticate, Content-Length) and answers only what Siphon sends a
//! caller. Pure functions over strings and bytes, so every message is unit-tested.

use std::net::SocketAddr;

/// The generator's side of one call: everything that stays the same for its messages.
#[derive(Debug, Clone)]
pub struct Leg {
    /// Where Siphon listens.
    pub server: SocketAddr,
    /// Our SIP address (Via, Contact).
    pub local: SocketAddr,
    /// Request-URI user (the dialled number).
    pub number: String,
    /// From user (the account when authenticating).
    pub user: String,
    pub call_id: String,
    pub from_tag: String,
}

impl Leg {
    /// `sip:NUMBER@SERVER`.
    pub fn request_uri(&self) -> String {
        format!("sip:{}@{}", self.number, self.server)
    }

    fn common(
        &self,
        method: &str,
        uri: &str,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{local}>;tag={from_tag}\r\n\
             To: <sip:{number}@{server}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n",
            local = self.local,
            user = self.user,
            from_tag = self.from_tag,
            number = self.number,
            server = self.server,
            call_id = self.call_id,
        )
    }

    /// An INVITE with an SDP offer; `auth` is a `Proxy-Authorization` value (or, with
    /// `www = true`, an `Authorization` value).
    pub fn invite(&self, branch: &str, cseq: u32, sdp: &str, auth: Option<(&str, bool)>) -> String {
        let uri = self.request_uri();
        let mut m = self.common("INVITE", &uri, branch, cseq, None);
        m.push_str(&format!(
            "Contact: <sip:{}@{}>\r\nUser-Agent: siphon-load\r\n",
            self.user, self.local
        ));
        if let Some((value, www)) = auth {
            let name = if www {
                "Authorization"
            } else {
                "Proxy-Authorization"
            };
            m.push_str(&format!("{name}: {value}\r\n"));
        }
        m.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ));
        m
    }

    /// ACK. For a 2xx: a new branch, sent to the Contact of the 200 (`uri`). For a non-2xx
    /// final response: the INVITE's branch and Request-URI (RFC 3261 §17.1.1.3).
    pub fn ack(&self, uri: &str, branch: &str, cseq: u32, to_tag: Option<&str>) -> String {
        let mut m = self.common("ACK", uri, branch, cseq, to_tag);
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }

    /// BYE inside the dialog.
    pub fn bye(&self, uri: &str, branch: &str, cseq: u32, to_tag: &str) -> String {
        let mut m = self.common("BYE", uri, branch, cseq, Some(to_tag));
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }
}

/// The SDP offer: PCMU and telephone-event, audio at `rtp`.
pub fn sdp_offer(rtp: SocketAddr, session_id: u64) -> String {
    let ip = rtp.ip();
    format!(
        "v=0\r\n\
         o=siphon-load {session_id} {session_id} IN IP4 {ip}\r\n\
         s=siphon-load\r\n\
         c=IN IP4 {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        port = rtp.port()
    )
}

/// Where an SDP body says to send audio (session or media `c=` and the audio `m=` port).
pub fn sdp_audio_addr(sdp: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.split('/').next().and_then(|a| a.trim().parse().ok());
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(std::net::IpAddr::V4(ip?), port?))
}

/// First line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine<'a> {
    Response(u16),
    Request(&'a str),
}

/// What the generator needs from a received message. Borrowed from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    pub call_id: &'a str,
    pub cseq: u32,
    pub cseq_method: &'a str,
    /// `tag` parameter of To.
    pub to_tag: Option<&'a str>,
    /// URI inside Contact's `<...>` (or the bare value).
    pub contact: Option<&'a str>,
    /// Every Proxy-Authenticate and WWW-Authenticate value, in order (`true` = WWW).
    pub challenges: Vec<(&'a str, bool)>,
    /// Every header line, for echoing Via/From/To/Call-ID/CSeq in a response.
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a str,
}

fn canonical(name: &str) -> &str {
    // Compact forms (RFC 3261 §7.3.3) of the headers read here.
    match name {
        "i" | "I" => "call-id",
        "t" | "T" => "to",
        "f" | "F" => "from",
        "v" | "V" => "via",
        "m" | "M" => "contact",
        "l" | "L" => "content-length",
        _ => name,
    }
}

/// Scans a datagram. `None` if it is not a SIP message with the headers a dialog needs.
pub fn parse(datagram: &[u8]) -> Option<Message<'_>> {
    let text = std::str::from_utf8(datagram).ok()?;
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => (text, ""),
    };
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        StartLine::Response(rest.get(..3)?.parse().ok()?)
    } else {
        let (method, rest) = first.split_once(' ')?;
        if !rest.ends_with("SIP/2.0") {
            return None;
        }
        StartLine::Request(method)
    };
    let mut msg = Message {
        start,
        call_id: "",
        cseq: 0,
        cseq_method: "",
        to_tag: None,
        contact: None,
        challenges: Vec::new(),
        headers: Vec::new(),
        body: "",
    };
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        msg.headers.push((name, value));
        let lower = canonical(name).to_ascii_lowercase();
        match lower.as_str() {
            "call-id" => msg.call_id = value,
            "cseq" => {
                let (n, m) = value.split_once(char::is_whitespace)?;
                msg.cseq = n.parse().ok()?;
                msg.cseq_method = m.trim();
            }
            "to" => msg.to_tag = tag_param(value),
            "contact" if msg.contact.is_none() => {
                msg.contact = Some(match (value.find('<'), value.find('>')) {
                    (Some(a), Some(b)) if a < b => &value[a + 1..b],
                    _ => value.split(';').next().unwrap_or(value),
                })
            }
            "proxy-authenticate" => msg.challenges.push((value, false)),
            "www-authenticate" => msg.challenges.push((value, true)),
            "content-length" => content_length = value.parse::<usize>().ok(),
            _ => {}
        }
    }
    if msg.call_id.is_empty() || msg.cseq_method.is_empty() {
        return None;
    }
    let len = content_length.unwrap_or(body.len()).min(body.len());
    msg.body = &body[..len];
    Some(msg)
}

fn tag_param(value: &str) -> Option<&str> {
    // Parameters after the URI (after '>' if there is one).
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("tag").then_some(v.trim())
    })
}

/// A 200 OK (no body) answering `request` (e.g. a BYE from Siphon).
pub fn ok_response(request: &Message<'_>) -> String {
    let mut m = String::from("SIP/2.0 200 OK\r\n");
    for (name, value) in &request.headers {
        let lower = canonical(name).to_ascii_lowercase();
        if matches!(lower.as_str(), "via" | "from" | "to" | "call-id" | "cseq") {
            m.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

/// The 200 a callee sends to an INVITE (bridge mode: the generator answering as the
/// registered phone): the request's Via/From/To/Call-ID/CSeq with our To tag, a Contact and
/// the SDP answer.
pub fn answer_invite(request: &Message<'_>, to_tag: &str, contact: &str, sdp: &str) -> String {
    let mut m = String::from("SIP/2.0 200 OK\r\n");
    for (name, value) in &request.headers {
        let lower = canonical(name).to_ascii_lowercase();
        match lower.as_str() {
            "to" if tag_param(value).is_none() => {
                m.push_str(&format!("{name}: {value};tag={to_tag}\r\n"))
            }
            "via" | "from" | "to" | "call-id" | "cseq" => {
                m.push_str(&format!("{name}: {value}\r\n"))
            }
            _ => {}
        }
    }
    m.push_str(&format!(
        "Contact: <{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ));
    m
}

/// The user part of the From URI (`sip:USER@host`), e.g. to tell which call an INVITE
/// from the server belongs to.
pub fn from_user<'a>(request: &Message<'a>) -> Option<&'a str> {
    let (_, value) = request
        .headers
        .iter()
        .find(|(n, _)| canonical(n).eq_ignore_ascii_case("from"))?;
    let uri = value.split_once("sip:")?.1;
    let (user, _) = uri.split_once('@')?;
    Some(user)
}

/// REGISTER of `user` with its Contact at `local` (`auth`: an `Authorization` value).
#[allow(clippy::too_many_arguments)]
pub fn register(
    server: SocketAddr,
    local: SocketAddr,
    user: &str,
    call_id: &str,
    from_tag: &str,
    branch: &str,
    cseq: u32,
    expires: u32,
    auth: Option<&str>,
) -> String {
    let mut m = format!(
        "REGISTER sip:{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{server}>;tag={from_tag}\r\n\
         To: <sip:{user}@{server}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{local}>\r\n\
         Expires: {expires}\r\n\
         User-Agent: siphon-load\r\n"
    );
    if let Some(value) = auth {
        m.push_str(&format!("Authorization: {value}\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

/// A branch with the RFC 3261 magic cookie.
pub fn branch(call: u32, n: u32, run: u32) -> String {
    format!("z9hG4bK-{run:x}-{call:x}-{n:x}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn leg() -> Leg {
        Leg {
            server: "127.0.0.1:5060".parse().unwrap(),
            local: "127.0.0.1:5070".parse().unwrap(),
            number: "600".into(),
            user: "load".into(),
            call_id: "7-abc@load".into(),
            from_tag: "ft7".into(),
        }
    }

    #[test]
    fn invite_is_well_formed_and_parses_back() {
        let sdp = sdp_offer("127.0.0.1:40000".parse().unwrap(), 42);
        let m = leg().invite("z9hG4bK-1", 1, &sdp, Some(("Digest x", false)));
        assert!(m.starts_with("INVITE sip:600@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(m.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"));
        assert!(m.contains("Proxy-Authorization: Digest x\r\n"));
        assert!(m.contains(&format!("Content-Length: {}\r\n\r\nv=0", sdp.len())));
        let p = parse(m.as_bytes()).unwrap();
        assert_eq!(p.start, StartLine::Request("INVITE"));
        assert_eq!(
            (p.call_id, p.cseq, p.cseq_method),
            ("7-abc@load", 1, "INVITE")
        );
        assert_eq!(p.to_tag, None);
        assert_eq!(p.body, sdp);
        assert_eq!(
            sdp_audio_addr(p.body),
            Some("127.0.0.1:40000".parse().unwrap())
        );
        // Siphon's own parser accepts it.
        assert!(
            siphon_sip::message::parse(
                m.as_bytes(),
                "127.0.0.1:5070".parse().unwrap(),
                Default::default()
            )
            .is_ok()
        );
        let www = leg().invite("z9hG4bK-2", 2, &sdp, Some(("Digest y", true)));
        assert!(www.contains("\r\nAuthorization: Digest y\r\n"));
    }

    #[test]
    fn ack_and_bye() {
        let l = leg();
        let ack = l.ack("sip:600@127.0.0.1:5060", "z9hG4bK-9", 2, Some("tt"));
        assert!(ack.starts_with("ACK sip:600@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(ack.contains("To: <sip:600@127.0.0.1:5060>;tag=tt\r\n"));
        assert!(ack.contains("CSeq: 2 ACK\r\n"));
        let bye = l.bye("sip:siphon@127.0.0.1:5060", "z9hG4bK-10", 3, "tt");
        assert!(bye.starts_with("BYE sip:siphon@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(bye.contains("CSeq: 3 BYE\r\n"));
        for m in [ack, bye] {
            assert!(
                siphon_sip::message::parse(
                    m.as_bytes(),
                    "127.0.0.1:5070".parse().unwrap(),
                    Default::default()
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn parses_a_200_with_compact_headers_and_contact() {
        let body = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/AVP 0\r\n";
        let m = format!(
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
             f: <sip:load@127.0.0.1:5070>;tag=ft7\r\nt: <sip:600@127.0.0.1:5060>;tag=abc\r\n\
             i: 7-abc@load\r\nCSeq: 1 INVITE\r\nm: <sip:siphon@127.0.0.1:5060;transport=udp>\r\n\
             l: {}\r\n\r\n{body}",
            body.len()
        );
        let p = parse(m.as_bytes()).unwrap();
        assert_eq!(p.start, StartLine::Response(200));
        assert_eq!(p.to_tag, Some("abc"));
        assert_eq!(p.contact, Some("sip:siphon@127.0.0.1:5060;transport=udp"));
        assert_eq!(
            sdp_audio_addr(p.body),
            Some("127.0.0.1:20000".parse().unwrap())
        );
    }

    #[test]
    fn parses_challenges_and_answers_a_bye() {
        let m = "SIP/2.0 407 Proxy Authentication Required\r\nVia: SIP/2.0/UDP x;branch=b\r\n\
                 From: <sip:a@b>;tag=1\r\nTo: <sip:600@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                 Proxy-Authenticate: Digest realm=\"siphon\", nonce=\"n\", algorithm=MD5\r\n\
                 Proxy-Authenticate: Digest realm=\"siphon\", nonce=\"n\", algorithm=SHA-256\r\n\
                 Content-Length: 0\r\n\r\n";
        let p = parse(m.as_bytes()).unwrap();
        assert_eq!(p.start, StartLine::Response(407));
        assert_eq!(p.challenges.len(), 2);
        let bye = "BYE sip:load@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-s\r\n\
                   From: <sip:600@x>;tag=2\r\nTo: <sip:load@y>;tag=1\r\nCall-ID: c\r\nCSeq: 5 BYE\r\n\
                   Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let p = parse(bye.as_bytes()).unwrap();
        assert_eq!(p.start, StartLine::Request("BYE"));
        let ok = ok_response(&p);
        assert!(
            ok.starts_with(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-s\r\n"
            )
        );
        assert!(ok.contains("CSeq: 5 BYE\r\n"));
        assert!(!ok.contains("Max-Forwards"));
    }

    #[test]
    fn answers_an_invite_as_the_callee() {
        let sdp = sdp_offer("127.0.0.1:41000".parse().unwrap(), 9);
        let invite = "INVITE sip:1002@127.0.0.1:5070 SIP/2.0\r\n\
                      Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-s1\r\n\
                      From: <sip:b17@127.0.0.1:5071>;tag=st\r\nTo: <sip:1002@127.0.0.1:5060>\r\n\
                      Call-ID: xyz@siphon\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let p = parse(invite.as_bytes()).unwrap();
        assert_eq!(from_user(&p), Some("b17"));
        let ok = answer_invite(&p, "cb17", "sip:1002@127.0.0.1:5070", &sdp);
        assert!(
            ok.contains("To: <sip:1002@127.0.0.1:5060>;tag=cb17\r\n"),
            "{ok}"
        );
        assert!(ok.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-s1\r\n"));
        let back = parse(ok.as_bytes()).unwrap();
        assert_eq!(back.start, StartLine::Response(200));
        assert_eq!(back.to_tag, Some("cb17"));
        assert_eq!(
            sdp_audio_addr(back.body),
            Some("127.0.0.1:41000".parse().unwrap())
        );
        assert!(
            siphon_sip::message::parse(
                ok.as_bytes(),
                "127.0.0.1:5070".parse().unwrap(),
                Default::default()
            )
            .is_ok()
        );
        // A To that already has a tag keeps it (a retransmitted INVITE inside the dialog).
        let tagged = invite.replace("To: <sip:1002@127.0.0.1:5060>", "To: <sip:1002@x>;tag=old");
        let p = parse(tagged.as_bytes()).unwrap();
        assert!(answer_invite(&p, "new", "sip:x", "").contains("To: <sip:1002@x>;tag=old\r\n"));
    }

    #[test]
    fn register_parses_in_siphon() {
        let m = register(
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.1:5070".parse().unwrap(),
            "1002",
            "reg@load",
            "rt",
            "z9hG4bK-r1",
            2,
            300,
            Some("Digest username=\"1002\""),
        );
        assert!(m.starts_with("REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(m.contains("Contact: <sip:1002@127.0.0.1:5070>\r\n"));
        assert!(m.contains("\r\nAuthorization: Digest username=\"1002\"\r\n"));
        let p = parse(m.as_bytes()).unwrap();
        assert_eq!((p.cseq, p.cseq_method), (2, "REGISTER"));
        assert!(
            siphon_sip::message::parse(
                m.as_bytes(),
                "127.0.0.1:5070".parse().unwrap(),
                Default::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"hello").is_none());
        assert!(parse(b"SIP/2.0 2\r\n\r\n").is_none());
        assert!(
            parse(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n").is_none(),
            "no CSeq"
        );
        assert!(parse(&[0xFF, 0xFE]).is_none());
    }
}
