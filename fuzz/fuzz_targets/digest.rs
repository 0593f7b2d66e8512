//! Digest authentication (`siphon_sip::auth`): `Authenticator::verify` on arbitrary
//! `Authorization` values and `Challenge::parse` on arbitrary `WWW-Authenticate` values.
//!
//! So that the fuzzer gets past the nonce check, `$NONCE` and `$OPAQUE` in a fuzzed header
//! are replaced by the last nonce and the opaque value this authenticator issued.
//!
//! Input (encoding in `siphon_fuzz::Reader`): realm: bytes, flags: u8 (bit 0: MD5 only,
//! bit 1: allow RFC 2069 no-qop), max_nonces: u8, then operations, an opcode byte (mod 5)
//! and its arguments:
//!
//! | op | arguments |
//! |---|---|
//! | 0 verify | known_user: bool, method: bytes, header: bytes |
//! | 1 parse a challenge | header: bytes |
//! | 2 round trip | algorithm: u8, stale: bool, nc: u32, user, password, method, uri, cnonce: bytes |
//! | 3 advance | seconds: u16 |
//! | 4 purge | |
//!
//! Checked: nothing panics; every challenge we issue parses with `Challenge::parse` and
//! says what we put in it; credentials built by `Challenge::authorization` from that
//! challenge verify (when the inputs are representable: no control characters, nothing
//! empty, nc > 0), and a second use of the same nc is a replay; the same credentials from
//! another source address never verify and never count as a failed login (nonces are bound
//! to the address they were sent to). Own credentials may be refused as stale only once
//! the cap on remembered nonces was reached (a forgotten use cannot be told from none).
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use siphon_fuzz::Reader;
use siphon_sip::auth::{
    AuthError, Authenticator, Challenge, DigestAlgorithm, DigestConfig, MAX_HEADER_LEN,
};

#[derive(Debug)]
enum Op {
    /// Verify a fuzzed credentials value for `method`.
    Verify {
        method: String,
        header: String,
        known_user: bool,
    },
    /// Parse a fuzzed challenge.
    ParseChallenge(String),
    /// Issue a challenge, answer it as a client would, verify that.
    RoundTrip {
        user: String,
        password: String,
        method: String,
        uri: String,
        nc: u32,
        cnonce: String,
        algorithm: u8,
        stale: bool,
    },
    Advance {
        seconds: u16,
    },
    Purge,
}

/// What survives a quoted-string round trip: no control characters except the whitespace
/// the parser allows, and short enough for the header limit.
fn representable(s: &str) -> bool {
    s.len() < 512
        && !s
            .chars()
            .any(|c| c.is_control() && !matches!(c, ' ' | '\t'))
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let realm = r.str().into_owned();
    let flags = r.u8();
    let max_nonces = r.u8();
    let mut config = DigestConfig::new(realm.clone());
    if flags & 1 != 0 {
        config.algorithms = vec![DigestAlgorithm::Md5];
    }
    config.allow_no_qop = flags & 2 != 0;
    config.max_nonces = 2 + usize::from(max_nonces);
    let cap = config.max_nonces;
    let auth = Authenticator::new(config);
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let source = IpAddr::from([192, 0, 2, 1]);
    let elsewhere = IpAddr::from([198, 51, 100, 1]);
    // Last (nonce, opaque) we issued, for substitution.
    let mut issued: Option<(String, Option<String>)> = None;

    let mut steps = 0;
    while !r.is_empty() && steps < 64 {
        steps += 1;
        let op = match r.u8() % 5 {
            0 => Op::Verify {
                known_user: r.bool(),
                method: r.str().into_owned(),
                header: r.str().into_owned(),
            },
            1 => Op::ParseChallenge(r.str().into_owned()),
            2 => Op::RoundTrip {
                algorithm: r.u8(),
                stale: r.bool(),
                nc: r.u32(),
                user: r.str().into_owned(),
                password: r.str().into_owned(),
                method: r.str().into_owned(),
                uri: r.str().into_owned(),
                cnonce: r.str().into_owned(),
            },
            3 => Op::Advance { seconds: r.u16() },
            _ => Op::Purge,
        };
        match op {
            Op::Verify {
                method,
                header,
                known_user,
            } => {
                let mut header = header;
                if let Some((nonce, opaque)) = &issued {
                    header = header.replace("$NONCE", nonce);
                    if let Some(o) = opaque {
                        header = header.replace("$OPAQUE", o);
                    }
                }
                let lookup = |u: &str| (known_user || u == "alice").then(|| "secret".to_string());
                match auth.verify(now, source, &method, &header, &lookup) {
                    Ok(v) => assert!(!v.username.is_empty() && !v.uri.is_empty()),
                    Err(e) => {
                        let _ = (e.is_stale(), e.to_string());
                    }
                }
            }
            Op::ParseChallenge(value) => {
                if let Ok(c) = Challenge::parse(&value) {
                    let _ = c.authorization("alice", "secret", "REGISTER", "sip:x", 1, "c");
                }
            }
            Op::RoundTrip {
                user,
                password,
                method,
                uri,
                nc,
                cnonce,
                algorithm,
                stale,
            } => {
                let values = auth.challenge(now, source, stale);
                if values.is_empty() {
                    continue;
                }
                let value = &values[usize::from(algorithm) % values.len()];
                let challenge = match Challenge::parse(value) {
                    Ok(c) => c,
                    Err(e) => {
                        // Only a realm we cannot carry in a quoted-string may fail.
                        assert!(
                            !representable(&realm) || value.len() > MAX_HEADER_LEN,
                            "our own challenge does not parse ({e}): {value}"
                        );
                        continue;
                    }
                };
                assert_eq!(challenge.realm, realm);
                assert!(challenge.qop_auth);
                assert_eq!(challenge.stale, stale);
                issued = Some((challenge.nonce.clone(), challenge.opaque.clone()));
                let creds = challenge.authorization(&user, &password, &method, &uri, nc, &cnonce);
                let lookup = |u: &str| (u == user).then(|| password.clone());
                let from_elsewhere = auth.verify(now, elsewhere, &method, &creds, &lookup);
                assert!(
                    from_elsewhere
                        .as_ref()
                        .is_err_and(|e| !e.counts_as_failure()),
                    "credentials from another source: {from_elsewhere:?}"
                );
                let result = auth.verify(now, source, &method, &creds, &lookup);
                let expect_ok = !user.is_empty()
                    && !uri.is_empty()
                    && !cnonce.is_empty()
                    && nc > 0
                    && representable(&user)
                    && representable(&uri)
                    && representable(&cnonce)
                    && creds.len() <= MAX_HEADER_LEN;
                if expect_ok {
                    match &result {
                        Ok(v) => {
                            assert_eq!(v.username, user);
                            assert_eq!(v.uri, uri);
                            assert_eq!(v.algorithm, challenge.algorithm);
                        }
                        Err(AuthError::StaleNonce) if auth.outstanding_nonces() >= cap => continue,
                        Err(e) => panic!("own credentials refused ({e:?}): {creds}"),
                    }
                    let replay = auth.verify(now, source, &method, &creds, &lookup);
                    assert_eq!(replay.err(), Some(AuthError::NonceCountReplay));
                }
            }
            Op::Advance { seconds } => now += Duration::from_secs(u64::from(seconds)),
            Op::Purge => {
                auth.purge(now);
                let _ = auth.outstanding_nonces();
            }
        }
    }
});
