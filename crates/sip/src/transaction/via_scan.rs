//! The top Via's sent-by and branch, scanned from its text: all a transaction key needs.
//! rsip's typed Via parse built a URI, a transport and a parameter list (with a `String`
//! each) for every message to read two of them (4.5 % of the registrar benchmark's
//! samples, docs/benchmarks.md). This scan allocates nothing and fails with a typed
//! error, never a panic, on text that is not `SIP/2.0/<transport> <host>[:<port>]`
//! followed by `;` parameters (RFC 3261 §20.42, with its optional whitespace around `/`,
//! `:` and `;`).

use super::TransactionError;

/// What identifies a transaction in the top Via.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ViaKey<'a> {
    /// The host as written (compare it case-insensitively).
    pub host: &'a str,
    /// The port's digits as written, if any: a retransmission repeats the Via verbatim.
    pub port: Option<&'a str>,
    pub branch: Option<&'a str>,
}

impl ViaKey<'_> {
    /// `host[:port]`, host lower-cased (host names are case-insensitive).
    pub fn sent_by(&self) -> String {
        let mut s = String::with_capacity(self.host.len() + 6);
        s.push_str(self.host);
        s.make_ascii_lowercase();
        if let Some(port) = self.port {
            s.push(':');
            s.push_str(port);
        }
        s
    }
}

/// Scans the first Via value of `raw` (a header may hold several, comma-separated).
pub(super) fn scan(raw: &str) -> Result<ViaKey<'_>, TransactionError> {
    let mut c = Scan {
        s: raw.as_bytes(),
        pos: 0,
    };
    c.ws();
    if !c.token().eq_ignore_ascii_case(b"SIP") {
        return Err(malformed("sent-protocol is not SIP"));
    }
    c.slash()?;
    if c.token() != b"2.0" {
        return Err(malformed("SIP version is not 2.0"));
    }
    c.slash()?;
    if c.token().is_empty() {
        return Err(malformed("no transport"));
    }
    if c.ws() == 0 {
        return Err(malformed("no space before sent-by"));
    }
    let host = c.host()?;
    c.ws();
    let mut port = None;
    if c.peek() == Some(b':') {
        c.pos += 1;
        c.ws();
        let digits = c.take(|b| b.is_ascii_digit());
        let valid = !digits.is_empty()
            && digits.len() <= 5
            && digits
                .iter()
                .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                <= 65535;
        if !valid {
            return Err(malformed("bad port"));
        }
        port = Some(c.text(digits));
        c.ws();
    }
    let mut branch = None;
    loop {
        match c.peek() {
            None | Some(b',') => break,
            Some(b';') => c.pos += 1,
            Some(_) => return Err(malformed("unexpected character after sent-by")),
        }
        c.ws();
        let name = c.token();
        if name.is_empty() {
            return Err(malformed("empty parameter name"));
        }
        c.ws();
        let mut value: &[u8] = b"";
        if c.peek() == Some(b'=') {
            c.pos += 1;
            c.ws();
            value = c.param_value()?;
            c.ws();
        }
        if name.eq_ignore_ascii_case(b"branch") && branch.is_none() {
            branch = Some(c.text(value));
        }
    }
    Ok(ViaKey {
        host: c.text(host),
        port,
        branch,
    })
}

fn malformed(why: &str) -> TransactionError {
    TransactionError::MalformedHeader {
        header: "Via",
        source: rsip::Error::ParseError(format!("Via: {why}")),
    }
}

struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips whitespace (folded lines included); returns how much.
    fn ws(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn take(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// RFC 3261 token.
    fn token(&mut self) -> &'a [u8] {
        self.take(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    }

    fn slash(&mut self) -> Result<(), TransactionError> {
        self.ws();
        if self.peek() != Some(b'/') {
            return Err(malformed("sent-protocol without '/'"));
        }
        self.pos += 1;
        self.ws();
        Ok(())
    }

    /// A host name, IPv4 address, or bracketed IPv6 reference.
    fn host(&mut self) -> Result<&'a [u8], TransactionError> {
        let start = self.pos;
        if self.peek() == Some(b'[') {
            self.pos += 1;
            let inner = self.take(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if inner.is_empty() || self.peek() != Some(b']') {
                return Err(malformed("bad IPv6 reference"));
            }
            self.pos += 1;
        } else if self
            .take(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            .is_empty()
        {
            return Err(malformed("no host"));
        }
        Ok(self.s.get(start..self.pos).unwrap_or_default())
    }

    /// A parameter value: a quoted string (kept with its quotes) or any run of visible
    /// characters other than the separators.
    fn param_value(&mut self) -> Result<&'a [u8], TransactionError> {
        if self.peek() == Some(b'"') {
            let start = self.pos;
            self.pos += 1;
            loop {
                match self.peek() {
                    None => return Err(malformed("unterminated quoted parameter")),
                    Some(b'\\') => self.pos += 2,
                    Some(b'"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(_) => self.pos += 1,
                }
            }
            return Ok(self.s.get(start..self.pos).unwrap_or_default());
        }
        Ok(self.take(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"')))
    }

    /// The text of a slice of the input. Every slice taken here starts and ends at ASCII
    /// bytes, so it is valid UTF-8 whenever the input is.
    fn text(&self, bytes: &'a [u8]) -> &'a str {
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_sent_by_and_branch() {
        let v = scan(
            "SIP/2.0/UDP PC33.Atlanta.com:5066;rport;branch=z9hG4bK776asdhds;received=1.2.3.4",
        )
        .unwrap();
        assert_eq!(v.sent_by(), "pc33.atlanta.com:5066");
        assert_eq!(v.branch, Some("z9hG4bK776asdhds"));
        let v = scan(" SIP / 2.0 / TCP  [2001:DB8::1] : 5060 ; BRANCH = z9hG4bKx , SIP/2.0/UDP b;branch=other")
            .unwrap();
        assert_eq!(v.sent_by(), "[2001:db8::1]:5060");
        assert_eq!(
            v.branch,
            Some("z9hG4bKx"),
            "the first value's branch, not the second's"
        );
        let v = scan("SIP/2.0/UDP 10.0.0.1;maddr=\"a;b,c\";ttl=1").unwrap();
        assert_eq!((v.sent_by().as_str(), v.branch), ("10.0.0.1", None));
    }

    #[test]
    fn agrees_with_rsips_typed_via_on_valid_text() {
        for raw in [
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1-0;rport",
            "SIP/2.0/TLS Host.Example.COM;branch=z9hG4bKabc",
            "SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKsr2",
            "SIP/2.0/UDP [::1]:5070;branch=z9hG4bK.x",
        ] {
            let typed = rsip::typed::Via::try_from(rsip::headers::Via::from(raw)).unwrap();
            let ours = scan(raw).unwrap();
            assert_eq!(
                ours.sent_by(),
                typed.uri.host_with_port.to_string().to_ascii_lowercase(),
                "{raw}"
            );
            assert_eq!(ours.branch, typed.branch().map(|b| b.value()), "{raw}");
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for raw in [
            "",
            "   ",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP host",
            "HTTP/2.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:5060x",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP []",
            "SIP/2.0/UDP host;=x",
            "SIP/2.0/UDP host;branch=\"open",
            "SIP/2.0/UDP host;branch=\"esc\\",
            "SIP/2.0/UDP hôst;branch=z9hG4bK",
            "SIP/2.0/UDP host junk",
        ] {
            assert!(
                matches!(
                    scan(raw),
                    Err(TransactionError::MalformedHeader { header: "Via", .. })
                ),
                "{raw:?} was accepted"
            );
        }
    }

    #[test]
    fn never_panics_on_any_prefix_or_byte_flip() {
        let good = "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK\"q\\\"x\";rport, SIP/2.0/UDP b";
        for end in 0..=good.len() {
            if let Some(prefix) = good.get(..end) {
                let _ = scan(prefix);
            }
        }
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            for b in [
                b' ', b';', b',', b'"', b'\\', b'[', b']', b':', b'=', b'/', 0, 0x7f,
            ] {
                let mut v = bytes.to_vec();
                v[i] = b;
                if let Ok(s) = std::str::from_utf8(&v) {
                    let _ = scan(s);
                }
            }
        }
    }
}
