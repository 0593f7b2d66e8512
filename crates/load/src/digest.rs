//! Client-side HTTP digest for SIP (RFC 3261 §22, RFC 7616 / RFC 8760): parsing a
//! `Proxy-Authenticate` / `WWW-Authenticate` challenge and computing the credentials.
//!
//! Written independently of `siphon-sip`'s server side on purpose: the generator then checks
//! Siphon rather than agreeing with it by construction (the tests verify one against the other).

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// Algorithms the generator can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn from_name(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// A parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `qop` offered and includes `auth`.
    pub qop_auth: bool,
}

/// Splits `k=v, k="v, w"` parameters (after the scheme).
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                v.push(b[i] as char);
                i += 1;
            }
            i += 1;
            v
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            s[vs..i].trim().to_string()
        };
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    out
}

impl Challenge {
    /// Parses one challenge value (`Digest realm="..", nonce="..", ...`). `None` if it is not
    /// a digest challenge this client can answer.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let ps = params(rest);
        let get = |k: &str| ps.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a)?,
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if !q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")) {
                    return None;
                }
                true
            }
        };
        Some(Challenge {
            realm: get("realm")?,
            nonce: get("nonce")?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
        })
    }

    /// The first challenge among `values` with algorithm `prefer`, else the first usable one
    /// (RFC 8760: clients take the first they support).
    pub fn choose<'a>(
        values: impl IntoIterator<Item = &'a str>,
        prefer: Option<Algorithm>,
    ) -> Option<Challenge> {
        let all: Vec<Challenge> = values.into_iter().filter_map(Challenge::parse).collect();
        prefer
            .and_then(|p| all.iter().find(|c| c.algorithm == p).cloned())
            .or_else(|| all.into_iter().next())
    }

    /// The `response` value.
    pub fn response(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.hex(&format!("{user}:{}:{password}", self.realm));
        let ha2 = alg.hex(&format!("{method}:{uri}"));
        if self.qop_auth {
            alg.hex(&format!(
                "{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}",
                self.nonce
            ))
        } else {
            alg.hex(&format!("{ha1}:{}:{ha2}", self.nonce))
        }
    }

    /// The `Proxy-Authorization` / `Authorization` header value.
    pub fn authorization(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let response = self.response(user, password, method, uri, nc, cnonce);
        let mut v = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.name()
        );
        if self.qop_auth {
            v.push_str(&format!(", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5 (HTTP, but the computation is the same).
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop_auth);
        assert_eq!(
            c.response(
                "Mufasa",
                "Circle Of Life",
                "GET",
                "/dir/index.html",
                1,
                "0a4f113b"
            ),
            "6629fae49393a05397450978507c4ef1"
        );
        let h = c.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(h.contains("nc=00000001"));
        assert!(h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn choose_prefers_and_skips_unknown() {
        let md5 = "Digest realm=\"siphon\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"";
        let sha = "Digest realm=\"siphon\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\"";
        let odd = "Digest realm=\"siphon\", nonce=\"n3\", algorithm=SHA-512-256";
        assert_eq!(
            Challenge::choose([odd, md5, sha], None).unwrap().nonce,
            "n1"
        );
        assert_eq!(
            Challenge::choose([md5, sha], Some(Algorithm::Sha256))
                .unwrap()
                .nonce,
            "n2"
        );
        assert!(Challenge::choose([odd], None).is_none());
        assert!(Challenge::parse("Basic realm=\"x\"").is_none());
        assert!(
            Challenge::parse("Digest nonce=\"x\"").is_none(),
            "realm required"
        );
        assert!(Challenge::parse("Digest realm=\"a\", nonce=\"b\", qop=\"auth-int\"").is_none());
    }

    /// Siphon's own verifier accepts what this client computes, for both algorithms.
    #[test]
    fn siphon_accepts_our_credentials() {
        use siphon_sip::auth::{Authenticator, DigestAlgorithm, DigestConfig};
        use std::time::SystemTime;
        let src = std::net::IpAddr::from([127, 0, 0, 1]);
        let auth = Authenticator::new(DigestConfig {
            algorithms: vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
            ..DigestConfig::new("siphon")
        });
        let now = SystemTime::now();
        let challenges = auth.challenge(now, src, false);
        assert_eq!(challenges.len(), 2);
        for prefer in [Algorithm::Md5, Algorithm::Sha256] {
            let c = Challenge::choose(challenges.iter().map(String::as_str), Some(prefer)).unwrap();
            assert_eq!(c.algorithm, prefer);
            let uri = "sip:650@127.0.0.1:5060";
            let header = c.authorization("1001", "secret1001", "INVITE", uri, 1, "abc123");
            let pw = |u: &str| (u == "1001").then(|| "secret1001".to_string());
            auth.verify(now, src, "INVITE", &header, &pw)
                .unwrap_or_else(|e| panic!("{prefer:?}: {e}"));
            let wrong = c.authorization("1001", "nope", "INVITE", uri, 2, "abc124");
            assert!(auth.verify(now, src, "INVITE", &wrong, &pw).is_err());
        }
    }
}
