//! Call transfer by REFER (RFC 3515) and its attended form with `Replaces` (RFC 3891):
//! parsing the `Refer-To` and `Replaces` values a phone sends, and building the
//! `message/sipfrag` bodies (RFC 3420) and headers of the NOTIFYs that report progress.
//! Pure: the endpoint decides what to do with a parsed transfer and sends the NOTIFYs.

/// Why a REFER cannot be acted on, with the status RFC 3515 §2.4.2 / RFC 3891 §3 give it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferError {
    /// No `Refer-To` header (RFC 3515 §2.4.1: exactly one is required): 400.
    #[error("REFER has no Refer-To")]
    NoReferTo,
    /// More than one `Refer-To`: 400.
    #[error("REFER has more than one Refer-To")]
    SeveralReferTo,
    /// `Refer-To` is not a SIP URI we can call (tel:, http:, garbage): 400.
    #[error("Refer-To is not a sip: or sips: URI: {0:?}")]
    BadUri(String),
    /// The embedded `Replaces` header is malformed: 400.
    #[error("Replaces is malformed: {0:?}")]
    BadReplaces(String),
}

impl ReferError {
    /// The SIP status a REFER with this problem is answered with.
    pub fn status(&self) -> u16 {
        400
    }
}

/// The dialog a `Replaces` names (RFC 3891 §6.1): the Call-ID and both tags, as seen from
/// the party that holds the dialog being replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
    /// `early-only`: replace only a dialog that is not yet confirmed.
    pub early_only: bool,
}

/// A parsed `Refer-To`: whom to call, and for an attended transfer the dialog to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    /// The target URI without its headers part (`sip:1003@host;transport=udp`).
    pub uri: String,
    /// The user part of the URI (`1003`), empty when the URI has none.
    pub user: String,
    /// The host part (and port) of the URI.
    pub host: String,
    /// `Replaces` from the URI's headers (`?Replaces=...`), for attended transfer.
    pub replaces: Option<Replaces>,
}

/// Parses the values of the REFER's `Refer-To` headers (all of them, so that a REFER with
/// several is refused as RFC 3515 says).
pub fn parse_refer_to_headers<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<ReferTo, ReferError> {
    let mut values = values.into_iter();
    let first = values.next().ok_or(ReferError::NoReferTo)?;
    if values.next().is_some() {
        return Err(ReferError::SeveralReferTo);
    }
    parse_refer_to(first)
}

/// Parses one `Refer-To` value: `<sip:1003@host>`, `"Name" <sip:...?Replaces=...>` or a
/// bare `sip:1003@host` (addr-spec, which may not carry headers or parameters of its own).
pub fn parse_refer_to(value: &str) -> Result<ReferTo, ReferError> {
    let value = value.trim();
    let bad = || ReferError::BadUri(truncated(value));
    let inner = match value.find('<') {
        Some(open) => {
            let rest = &value[open + 1..];
            let close = rest.find('>').ok_or_else(bad)?;
            &rest[..close]
        }
        // addr-spec: header parameters (`;x=y` after the URI) belong to the header, and
        // RFC 3261 §20 forbids `?` there, so everything up to `;` after the host is the URI.
        None => value,
    };
    let inner = inner.trim();
    let (scheme, rest) = inner.split_once(':').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return Err(bad());
    }
    let (uri_part, headers) = match rest.split_once('?') {
        Some((u, h)) => (u, Some(h)),
        None => (rest, None),
    };
    let (userhost, _params) = match uri_part.split_once(';') {
        Some((u, p)) => (u, Some(p)),
        None => (uri_part, None),
    };
    let (user, host) = match userhost.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", userhost),
    };
    // A user part may carry a password (`user:pw`); the number to call is before it.
    let user = user.split(':').next().unwrap_or_default();
    // RFC 3261 URIs are ASCII (anything else is %-escaped); spaces and angle brackets
    // cannot appear unescaped either.
    let bad_char = |c: char| !c.is_ascii_graphic() || c == '<' || c == '>';
    if host.is_empty() || host.chars().any(bad_char) || user.chars().any(bad_char) {
        return Err(bad());
    }
    let mut replaces = None;
    if let Some(headers) = headers {
        for header in headers.split('&') {
            let (name, val) = header.split_once('=').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("replaces") {
                let decoded =
                    percent_decode(val).ok_or_else(|| ReferError::BadReplaces(truncated(val)))?;
                replaces = Some(parse_replaces(&decoded)?);
            }
        }
    }
    Ok(ReferTo {
        uri: format!("{}:{}", scheme.to_ascii_lowercase(), uri_part),
        user: percent_decode(user).unwrap_or_else(|| user.to_string()),
        host: host.to_string(),
        replaces,
    })
}

/// Parses a `Replaces` header value (RFC 3891 §6.1):
/// `callid;to-tag=abc;from-tag=def[;early-only]`. Both tags are required.
pub fn parse_replaces(value: &str) -> Result<Replaces, ReferError> {
    let bad = || ReferError::BadReplaces(truncated(value));
    let mut parts = value.trim().split(';');
    let call_id = parts.next().unwrap_or_default().trim();
    if call_id.is_empty() || call_id.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
    for p in parts {
        let (name, val) = p.split_once('=').unwrap_or((p, ""));
        let name = name.trim();
        let val = val.trim();
        if name.eq_ignore_ascii_case("to-tag") {
            to_tag = Some(val.to_string());
        } else if name.eq_ignore_ascii_case("from-tag") {
            from_tag = Some(val.to_string());
        } else if name.eq_ignore_ascii_case("early-only") {
            early_only = true;
        }
    }
    match (to_tag, from_tag) {
        (Some(t), Some(f)) if !t.is_empty() && !f.is_empty() => Ok(Replaces {
            call_id: call_id.to_string(),
            to_tag: t,
            from_tag: f,
            early_only,
        }),
        _ => Err(bad()),
    }
}

/// `%XX` decoding of a URI header value (RFC 3261 §25.1 escapes `;`, `=`, `@` there).
/// `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Keeps error messages (which may be logged or answered) short whatever a peer sent.
fn truncated(s: &str) -> String {
    s.chars().take(120).collect()
}

/// `Content-Type` of a NOTIFY's body for a refer subscription (RFC 3515 §2.4.5).
pub const SIPFRAG_CONTENT_TYPE: &str = "message/sipfrag;version=2.0";
/// `Event` of those NOTIFYs.
pub const EVENT_REFER: &str = "refer";

/// The sipfrag body reporting the referred call's progress: its status line
/// (`SIP/2.0 100 Trying\r\n`).
pub fn sipfrag(status: u16, reason: &str) -> String {
    format!("SIP/2.0 {status} {reason}\r\n")
}

/// The `Subscription-State` value of a NOTIFY carrying this status: `active` while the
/// referred call is in progress (provisional), `terminated;reason=noresource` once it has
/// a final answer (RFC 3515 §2.4.7: the final NOTIFY terminates the implicit subscription).
pub fn subscription_state(status: u16, expires_s: u32) -> String {
    if status < 200 {
        format!("active;expires={expires_s}")
    } else {
        "terminated;reason=noresource".to_string()
    }
}

/// Whether the referrer wants the implicit subscription, from the REFER's `Refer-Sub`
/// header (RFC 4488 §4): only `false` turns it off; absent, `true` or anything else keeps
/// it (an unknown value is not a reason to leave the referrer uninformed).
pub fn wants_subscription(refer_sub: Option<&str>) -> bool {
    let Some(value) = refer_sub else {
        return true;
    };
    // Header parameters (`false;x=y`) may follow the value.
    let value = value.split(';').next().unwrap_or_default().trim();
    !value.eq_ignore_ascii_case("false")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blind_name_addr() {
        let r = parse_refer_to("<sip:1003@192.0.2.1:5060>").unwrap();
        assert_eq!(r.uri, "sip:1003@192.0.2.1:5060");
        assert_eq!(r.user, "1003");
        assert_eq!(r.host, "192.0.2.1:5060");
        assert!(r.replaces.is_none());
    }

    #[test]
    fn display_name_params_and_addr_spec() {
        let r = parse_refer_to("\"Agent\" <sip:agent@example.com;transport=udp>;x=1").unwrap();
        assert_eq!(r.uri, "sip:agent@example.com;transport=udp");
        assert_eq!(r.user, "agent");
        assert_eq!(r.host, "example.com");
        let r = parse_refer_to("sip:1003@host").unwrap();
        assert_eq!((r.user.as_str(), r.host.as_str()), ("1003", "host"));
        let r = parse_refer_to("SIPS:host.example").unwrap();
        assert_eq!(r.uri, "sips:host.example");
        assert_eq!(r.user, "");
    }

    #[test]
    fn attended_with_escaped_replaces() {
        let r = parse_refer_to(
            "<sip:1002@10.0.0.1?Replaces=abc%40host%3Bto-tag%3D111%3Bfrom-tag%3D222>",
        )
        .unwrap();
        assert_eq!(r.uri, "sip:1002@10.0.0.1");
        assert_eq!(
            r.replaces,
            Some(Replaces {
                call_id: "abc@host".into(),
                to_tag: "111".into(),
                from_tag: "222".into(),
                early_only: false,
            })
        );
    }

    #[test]
    fn replaces_header() {
        let r = parse_replaces("425928@bobster.example.org;to-tag=7743;from-tag=6472;early-only")
            .unwrap();
        assert_eq!(r.call_id, "425928@bobster.example.org");
        assert!(r.early_only);
        assert!(parse_replaces("id;to-tag=1").is_err());
        assert!(parse_replaces(";to-tag=1;from-tag=2").is_err());
        assert!(parse_replaces("id;to-tag=;from-tag=2").is_err());
    }

    #[test]
    fn hostile_values_are_errors_not_panics() {
        for v in [
            "",
            "<",
            "<sip:",
            "<sip:>",
            "<tel:+15551234567>",
            "http://x",
            "nonsense",
            "<sip:a b@host>",
            "<sip:1@h?Replaces=%zz>",
            "<sip:1@h?Replaces=%4",
            "<sip:1@h?Replaces=%ff%fe;to-tag=1;from-tag=2>",
            "<sip:1@h?Replaces=x>",
            "<sip:@>",
            "\u{1F600}<sip:\u{1F600}>",
        ] {
            assert!(parse_refer_to(v).is_err(), "{v:?} accepted");
        }
        assert_eq!(
            parse_refer_to_headers(std::iter::empty()),
            Err(ReferError::NoReferTo)
        );
        assert_eq!(
            parse_refer_to_headers(["<sip:a@b>", "<sip:c@d>"]),
            Err(ReferError::SeveralReferTo)
        );
        assert_eq!(ReferError::NoReferTo.status(), 400);
        let long = format!("<tel:{}>", "9".repeat(10_000));
        match parse_refer_to(&long) {
            Err(ReferError::BadUri(s)) => assert!(s.len() <= 120),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refer_sub() {
        assert!(wants_subscription(None));
        assert!(wants_subscription(Some("true")));
        assert!(!wants_subscription(Some("false")));
        assert!(!wants_subscription(Some(" FALSE ;x=1")));
        assert!(wants_subscription(Some("")));
        assert!(wants_subscription(Some("\u{1F600}")));
    }

    #[test]
    fn notify_bodies_and_states() {
        assert_eq!(sipfrag(100, "Trying"), "SIP/2.0 100 Trying\r\n");
        assert_eq!(sipfrag(486, "Busy Here"), "SIP/2.0 486 Busy Here\r\n");
        assert_eq!(subscription_state(100, 60), "active;expires=60");
        assert_eq!(subscription_state(180, 60), "active;expires=60");
        assert_eq!(subscription_state(200, 60), "terminated;reason=noresource");
        assert_eq!(subscription_state(603, 60), "terminated;reason=noresource");
        assert_eq!(SIPFRAG_CONTENT_TYPE, "message/sipfrag;version=2.0");
    }
}
