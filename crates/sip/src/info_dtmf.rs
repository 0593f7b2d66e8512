//! DTMF carried by SIP INFO bodies, as PBXs and older gateways send it instead of RFC 4733
//! events: `application/dtmf-relay` (Cisco's `Signal=5` / `Duration=160` lines) and
//! `application/dtmf` (the key alone). Pure parsing; the endpoint feeds the result to the
//! call's media exactly like a key press decoded from RTP.

/// A key press from an INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDtmf {
    /// `0`-`9`, `*`, `#`, `A`-`D` (upper case).
    pub digit: char,
    /// How long the key was held, in milliseconds (RFC 4733 events carry it too).
    pub duration_ms: u32,
}

/// Why an INFO body of a DTMF type could not be used; answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoDtmfError {
    #[error("DTMF INFO body is not UTF-8")]
    NotText,
    #[error("DTMF INFO body has no Signal")]
    NoSignal,
    #[error("DTMF INFO names no DTMF key: {0:?}")]
    BadSignal(String),
    #[error("DTMF INFO Duration is not a number of milliseconds: {0:?}")]
    BadDuration(String),
}

/// Duration assumed when a body gives none (the length of a typical key press).
pub const DEFAULT_DURATION_MS: u32 = 100;
/// Longest duration believed: a longer one (hostile or a typo) is clamped to this.
pub const MAX_DURATION_MS: u32 = 5_000;

/// The key press of an INFO request with this `Content-Type` value and body: `Ok(None)` when
/// the content type is not a DTMF one (other INFO uses are answered, not parsed), an error
/// when it is but the body is unusable.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Option<InfoDtmf>, InfoDtmfError> {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let relay = mime.eq_ignore_ascii_case("application/dtmf-relay");
    if !relay && !mime.eq_ignore_ascii_case("application/dtmf") {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| InfoDtmfError::NotText)?;
    if !relay {
        // application/dtmf: the key alone (some send its RFC 4733 event code instead).
        let digit = key(text.trim())?;
        return Ok(Some(InfoDtmf {
            digit,
            duration_ms: DEFAULT_DURATION_MS,
        }));
    }
    let mut digit = None;
    let mut duration_ms = DEFAULT_DURATION_MS;
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            n if n.eq_ignore_ascii_case("Signal") => digit = Some(key(value)?),
            n if n.eq_ignore_ascii_case("Duration") => {
                duration_ms = value
                    .parse::<u32>()
                    .map_err(|_| InfoDtmfError::BadDuration(value.into()))?
                    .min(MAX_DURATION_MS);
            }
            _ => {}
        }
    }
    let digit = digit.ok_or(InfoDtmfError::NoSignal)?;
    Ok(Some(InfoDtmf { digit, duration_ms }))
}

/// A key by its character or its RFC 4733 event code (0-9, 10 = `*`, 11 = `#`, 12-15 =
/// A-D), as gateways write either.
fn key(value: &str) -> Result<char, InfoDtmfError> {
    const BY_EVENT: &[u8; 16] = b"0123456789*#ABCD";
    let bad = || InfoDtmfError::BadSignal(value.chars().take(16).collect());
    if let Ok(code) = value.parse::<usize>() {
        return BY_EVENT.get(code).map(|b| *b as char).ok_or_else(bad);
    }
    let mut chars = value.chars();
    match (chars.next().map(|c| c.to_ascii_uppercase()), chars.next()) {
        (Some(c), None) if BY_EVENT.contains(&(c as u8)) && c.is_ascii() => Ok(c),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dtmf_relay_gives_signal_and_duration() {
        let got = parse("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            got,
            Some(InfoDtmf {
                digit: '5',
                duration_ms: 160
            })
        );
        let got = parse("Application/DTMF-Relay", b"Signal= #\nDuration= 250").unwrap();
        assert_eq!(
            got,
            Some(InfoDtmf {
                digit: '#',
                duration_ms: 250
            })
        );
    }

    #[test]
    fn dtmf_relay_without_duration_takes_the_default_and_clamps_huge_ones() {
        let got = parse("application/dtmf-relay", b"Signal=*")
            .unwrap()
            .unwrap();
        assert_eq!((got.digit, got.duration_ms), ('*', DEFAULT_DURATION_MS));
        let got = parse("application/dtmf-relay", b"Signal=1\r\nDuration=4000000000")
            .unwrap()
            .unwrap();
        assert_eq!(got.duration_ms, MAX_DURATION_MS);
    }

    #[test]
    fn application_dtmf_is_the_key_or_its_event_code() {
        let d = |body: &[u8]| parse("application/dtmf", body).unwrap().unwrap().digit;
        assert_eq!(d(b"7"), '7');
        assert_eq!(d(b"d\r\n"), 'D');
        assert_eq!(d(b"11"), '#');
        assert_eq!(d(b"10"), '*');
    }

    #[test]
    fn other_content_types_are_not_dtmf() {
        assert_eq!(parse("application/media_control+xml", b"<x/>"), Ok(None));
        assert_eq!(parse("", b""), Ok(None));
    }

    #[test]
    fn hostile_bodies_are_typed_errors() {
        let relay = |body: &[u8]| parse("application/dtmf-relay", body);
        assert_eq!(relay(b"Duration=100"), Err(InfoDtmfError::NoSignal));
        assert!(matches!(
            relay(b"Signal=55"),
            Err(InfoDtmfError::BadSignal(_))
        ));
        assert!(matches!(
            relay(b"Signal=x"),
            Err(InfoDtmfError::BadSignal(_))
        ));
        assert!(matches!(
            relay(b"Signal=\xc3\xa9"),
            Err(InfoDtmfError::BadSignal(_))
        ));
        assert!(matches!(
            relay(b"Signal=1\nDuration=-3"),
            Err(InfoDtmfError::BadDuration(_))
        ));
        assert_eq!(relay(b"\xff\xfe"), Err(InfoDtmfError::NotText));
        assert!(matches!(
            parse("application/dtmf", b""),
            Err(InfoDtmfError::BadSignal(_))
        ));
        assert!(matches!(
            parse("application/dtmf", b"16"),
            Err(InfoDtmfError::BadSignal(_))
        ));
    }
}
