//! What a SIP message trace (`[sip] trace_messages`, `PUT /api/sip-trace`) shows: the
//! message as it came or went, with the credentials taken out.
//!
//! A digest `response` (with the nonce, cnonce and nc next to it) lets whoever reads the
//! log try passwords offline, and traces end up in log shippers, tickets and chat. So in
//! `Authorization` and `Proxy-Authorization` only the scheme and the parameters that say
//! who and where (`username`, `realm`, `uri`, `algorithm`) are kept, and the rest becomes
//! [`REDACTED`]; `Authentication-Info` and `Proxy-Authentication-Info` (whose `rspauth` is
//! derived from the password as well) are replaced whole. Every other line is unchanged.
//!
//! The input is whatever arrived on a socket, so nothing here trusts it: any bytes give a
//! string, never a panic, and a header that cannot be read is redacted whole.
//!
//! A leaf: imports nothing from the crate.

/// What stands where credentials were.
pub(crate) const REDACTED: &str = "<redacted>";

/// Headers whose value is (or is derived from) a password.
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "proxy-authorization"];
/// Headers replaced whole (no scheme to keep; `rspauth` is password-derived).
const SECRET_HEADERS: [&str; 2] = ["authentication-info", "proxy-authentication-info"];
/// Digest parameters shown in a trace: they name the account and the request, and prove
/// nothing.
const KEPT_PARAMS: [&str; 4] = ["username", "realm", "uri", "algorithm"];

/// The message as trace text, credentials redacted (see the module documentation).
///
/// Every line is looked at, the body's too: a `message/sipfrag` body can quote a request
/// with its `Authorization`.
pub(crate) fn redact(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    // A header folded over several lines (RFC 3261 §7.3.1: a continuation line starts with
    // a space or a tab) is redacted on every line it spans.
    let mut in_secret = false;
    for line in text.split_inclusive('\n') {
        let (content, ending) = split_ending(line);
        if in_secret && content.starts_with([' ', '\t']) {
            out.push('\t');
            out.push_str(REDACTED);
            out.push_str(ending);
            continue;
        }
        in_secret = false;
        let Some((name, value)) = header(content) else {
            out.push_str(line);
            continue;
        };
        let lower = name.to_ascii_lowercase();
        let redacted = if CREDENTIAL_HEADERS.contains(&lower.as_str()) {
            credentials(value)
        } else if SECRET_HEADERS.contains(&lower.as_str()) {
            REDACTED.to_string()
        } else {
            out.push_str(line);
            continue;
        };
        in_secret = true;
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&redacted);
        out.push_str(ending);
    }
    out
}

/// A line's text and its line ending (`\r\n`, `\n` or none).
fn split_ending(line: &str) -> (&str, &str) {
    if let Some(c) = line.strip_suffix("\r\n") {
        (c, "\r\n")
    } else if let Some(c) = line.strip_suffix('\n') {
        (c, "\n")
    } else {
        (line, "")
    }
}

/// A header line's name (as written, without the blanks SIP allows before the colon) and
/// value. None for anything else (start line, continuation, blank line, body text).
fn header(line: &str) -> Option<(&str, &str)> {
    if line.starts_with([' ', '\t']) {
        return None;
    }
    let (name, value) = line.split_once(':')?;
    let name = name.trim_end_matches([' ', '\t']);
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    is_token.then_some((name, value))
}

/// `Digest username="1001", realm="siphon", uri="sip:x", algorithm=MD5, <redacted>`: the
/// scheme and the kept parameters; `Bearer <redacted>` for any other scheme.
fn credentials(value: &str) -> String {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, params) = value
        .split_once([' ', '\t'])
        .map_or((value, ""), |(s, p)| (s, p));
    let scheme_ok = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric());
    if !scheme_ok {
        return REDACTED.to_string();
    }
    let mut out = String::from(scheme);
    if scheme.eq_ignore_ascii_case("digest") {
        for (name, value) in digest_params(params) {
            if KEPT_PARAMS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                out.push_str(if out.len() == scheme.len() { " " } else { ", " });
                out.push_str(name);
                out.push('=');
                out.push_str(value);
            }
        }
    }
    out.push_str(if out.len() == scheme.len() { " " } else { ", " });
    out.push_str(REDACTED);
    out
}

/// The `name=value` parameters of a digest header that are well formed: a value is a
/// complete quoted string or a token. A piece that is not (an unterminated quote swallows
/// the rest of the header) is left out, so a kept parameter can never carry another one.
fn digest_params(params: &str) -> Vec<(&str, &str)> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in params.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pieces.push(&params[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !quoted {
        pieces.push(&params[start..]);
    }
    pieces
        .into_iter()
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            let (name, value) = (name.trim(), value.trim());
            let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric());
            (name_ok && well_formed(value)).then_some((name, value))
        })
        .collect()
}

/// A complete quoted string (no unescaped quote inside) or a token.
fn well_formed(value: &str) -> bool {
    if let Some(inner) = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|_| value.len() >= 2)
    {
        let mut escaped = false;
        for c in inner.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return false,
                _ => {}
            }
        }
        return !escaped;
    }
    !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != ',')
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = "6629fae49393a05397450978507c4ef1";
    const CNONCE: &str = "0a4f113b";
    const NONCE: &str = "dcd98b7102dd2f0e8b11d0f600bfb0c093";

    fn register(auth_header: &str) -> String {
        format!(
            "REGISTER sip:siphon.example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK776\r\n\
             From: <sip:1001@siphon.example.com>;tag=a73kszlfl\r\n\
             To: <sip:1001@siphon.example.com>\r\n\
             Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\n\
             CSeq: 2 REGISTER\r\n\
             {auth_header}\
             Content-Length: 0\r\n\r\n"
        )
    }

    fn digest() -> String {
        format!(
            "Digest username=\"1001\", realm=\"siphon\", nonce=\"{NONCE}\", \
             uri=\"sip:siphon.example.com\", response=\"{RESPONSE}\", algorithm=MD5, \
             cnonce=\"{CNONCE}\", qop=auth, nc=00000001"
        )
    }

    fn assert_no_secret(traced: &str) {
        for secret in [RESPONSE, CNONCE, NONCE, "00000001"] {
            assert!(!traced.contains(secret), "{secret} in\n{traced}");
        }
    }

    #[test]
    fn a_register_keeps_who_and_loses_the_digest() {
        let msg = register(&format!("Authorization: {}\r\n", digest()));
        let traced = redact(msg.as_bytes());
        assert_no_secret(&traced);
        assert!(
            traced.contains(
                "\r\nAuthorization: Digest username=\"1001\", realm=\"siphon\", \
                 uri=\"sip:siphon.example.com\", algorithm=MD5, <redacted>\r\n"
            ),
            "{traced}"
        );
        // The rest of the message is untouched, byte for byte.
        let without = |m: &str| -> String {
            m.lines()
                .filter(|l| !l.starts_with("Authorization"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(without(&traced), without(&msg));
    }

    #[test]
    fn every_credential_header_in_any_spelling() {
        for header in [
            format!("Proxy-Authorization: {}\r\n", digest()),
            format!("authorization:{}\r\n", digest()),
            format!("AUTHORIZATION  :  {}\r\n", digest()),
            format!(
                "Authentication-Info: nextnonce=\"{NONCE}\", rspauth=\"{RESPONSE}\", cnonce=\"{CNONCE}\", nc=00000001\r\n"
            ),
            format!("Proxy-Authentication-Info: rspauth=\"{RESPONSE}\"\r\n"),
            // Folded over lines: the continuation lines are redacted too.
            format!(
                "Authorization: Digest username=\"1001\",\r\n response=\"{RESPONSE}\",\r\n\tcnonce=\"{CNONCE}\", nc=00000001\r\n"
            ),
            // Bare LF line endings.
            format!("Authorization: {}\n", digest()),
        ] {
            let traced = redact(register(&header).as_bytes());
            assert_no_secret(&traced);
            assert!(traced.contains(REDACTED), "{traced}");
            assert!(traced.contains("Content-Length: 0\r\n\r\n"), "{traced}");
        }
    }

    #[test]
    fn other_schemes_keep_only_the_scheme() {
        let traced = redact(register("Authorization: Bearer eyJhbGciOi.secret.sig\r\n").as_bytes());
        assert!(
            traced.contains("Authorization: Bearer <redacted>\r\n"),
            "{traced}"
        );
        assert!(!traced.contains("eyJ"), "{traced}");
        let traced = redact(register("Authorization: Basic MTAwMTpzZWNyZXQ=\r\n").as_bytes());
        assert!(!traced.contains("MTAwMTpzZWNyZXQ="), "{traced}");
    }

    #[test]
    fn hostile_values_cannot_smuggle_a_secret_through_a_kept_parameter() {
        for value in [
            // An unterminated quote: the rest of the header is one malformed piece.
            format!("Digest username=\"1001, response=\"{RESPONSE}\""),
            format!("Digest username=\"1001\\\", response={RESPONSE}"),
            format!("Digest username={RESPONSE}\"x, uri=\"a\""),
            format!("Digest realm = \"x\" response=\"{RESPONSE}\""),
            format!("Digest username=\"a\" \"{RESPONSE}\""),
            // No scheme, a scheme that is not a token, nothing at all.
            format!("response=\"{RESPONSE}\""),
            format!("\"Digest\" response=\"{RESPONSE}\""),
            String::new(),
        ] {
            let traced = redact(register(&format!("Authorization: {value}\r\n")).as_bytes());
            assert!(!traced.contains(RESPONSE), "{value}:\n{traced}");
            assert!(traced.contains("Authorization: "), "{traced}");
        }
    }

    #[test]
    fn the_body_is_redacted_too_and_anything_else_passes() {
        let frag = format!(
            "NOTIFY sip:a@b SIP/2.0\r\nContent-Type: message/sipfrag\r\n\r\n\
             INVITE sip:b@c SIP/2.0\r\nProxy-Authorization: {}\r\n",
            digest()
        );
        assert_no_secret(&redact(frag.as_bytes()));
        let plain = "OPTIONS sip:a@b SIP/2.0\r\nX-Note: authorization: none\r\n\r\nv=0\r\n";
        assert_eq!(redact(plain.as_bytes()), plain);
    }

    #[test]
    fn any_bytes_give_a_string() {
        let mut junk: Vec<u8> = (0..=255u8).collect();
        junk.extend_from_slice(b"\r\nAuthorization: Digest \xff\xfe response=\"x\xc3\"\r\n");
        junk.extend_from_slice(b"Authorization:\r\n\r\n\n\r\r\n:");
        let traced = redact(&junk);
        assert!(!traced.contains("response"), "{traced}");
        for cut in 0..junk.len() {
            let _ = redact(&junk[..cut]);
        }
        assert_eq!(redact(b""), "");
    }
}
