//! Session timers (RFC 4028) as Siphon's UAS side runs them: what the `Session-Expires` and
//! `Min-SE` of an INVITE ask for, the answer to give (422, or the interval and who
//! refreshes), and when a session whose refreshes stopped must end. Pure: the endpoint
//! feeds headers and `Instant`s and acts on the result.
//!
//! Without refreshes a call whose BYE was lost (a phone that lost power, a NAT that
//! closed) stays up for ever on both sides; carriers arm session timers for that and tear
//! down calls whose peer does not take part. Siphon lets the caller refresh when it
//! supports the extension (`refresher=uac`) and ends the call with BYE when no refresh
//! came in time (§10). A caller that does not support it, or asks Siphon to refresh, gets
//! no session timer: Siphon as refresher (`refresher=uas`) is not implemented yet.

use std::time::{Duration, Instant};

/// The smallest interval RFC 4028 allows (§4, §5): 90 s.
pub const RFC_MIN_SE: u32 = 90;

/// The longest interval Siphon grants (a day): a UAS may lower the one asked for (§9),
/// and a hostile or careless one of decades would keep a dead call for as long.
pub const MAX_INTERVAL: u32 = 86_400;

/// Who sends the refreshes (the `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: `delta-seconds *(;param)`, with an optional `refresher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: u32,
    pub refresher: Option<Refresher>,
}

/// Why a session-timer header could not be used (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionTimerError {
    #[error("malformed Session-Expires: {0:?}")]
    SessionExpires(String),
    #[error("malformed Min-SE: {0:?}")]
    MinSe(String),
}

impl SessionExpires {
    pub fn parse(value: &str) -> Result<Self, SessionTimerError> {
        let bad = || SessionTimerError::SessionExpires(value.chars().take(40).collect());
        let mut parts = value.split(';');
        let delta = parts
            .next()
            .and_then(|d| d.trim().parse::<u32>().ok())
            .ok_or_else(bad)?;
        let mut refresher = None;
        for param in parts {
            let (name, v) = param.split_once('=').unwrap_or((param, ""));
            if name.trim().eq_ignore_ascii_case("refresher") {
                refresher = match v.trim() {
                    v if v.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
                    v if v.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
                    _ => return Err(bad()),
                };
            }
        }
        Ok(SessionExpires { delta, refresher })
    }
}

fn parse_min_se(value: &str) -> Result<u32, SessionTimerError> {
    value
        .split(';')
        .next()
        .and_then(|d| d.trim().parse::<u32>().ok())
        .ok_or_else(|| SessionTimerError::MinSe(value.chars().take(40).collect()))
}

/// What to answer an INVITE (initial or re-INVITE) about session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 422 Session Interval Too Small, with `Min-SE: min_se` (§9).
    TooBrief { min_se: u32 },
    /// No session timer in this dialog (the 2xx carries no `Session-Expires`).
    None,
    /// The 2xx carries `Session-Expires: interval;refresher=...` (and `Require: timer`).
    Use { interval: u32, refresher: Refresher },
}

/// The decision for an INVITE with these `Session-Expires` and `Min-SE` values, whose UAC
/// does (`uac_supports`: `timer` in its `Supported`) or does not support session timers,
/// given the smallest interval Siphon accepts (`our_min_se`; RFC 4028 asks for 90 s at
/// least, tests use less).
pub fn decide(
    session_expires: Option<&str>,
    min_se: Option<&str>,
    uac_supports: bool,
    our_min_se: u32,
) -> Result<Decision, SessionTimerError> {
    let Some(se) = session_expires else {
        return Ok(Decision::None);
    };
    let se = SessionExpires::parse(se)?;
    let their_min = min_se.map(parse_min_se).transpose()?.unwrap_or(0);
    if se.delta < our_min_se {
        return Ok(Decision::TooBrief {
            min_se: our_min_se.max(their_min),
        });
    }
    if !uac_supports || se.refresher == Some(Refresher::Uas) {
        // Siphon would have to refresh (a UAC without the extension, §9, or one that asks
        // the UAS to, whose choice the UAS keeps), which it does not do yet: no timer, the
        // 2xx leaves Session-Expires out and the dialog runs without one.
        return Ok(Decision::None);
    }
    // The UAC refreshes (its choice, or the UAS's when it named none).
    Ok(Decision::Use {
        interval: se.delta.min(MAX_INTERVAL.max(our_min_se)),
        refresher: Refresher::Uac,
    })
}

/// One dialog's running session timer (Siphon is never the refresher: see the module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    interval: u32,
    refresher: Refresher,
    refreshed_at: Instant,
}

impl SessionTimer {
    pub fn new(interval: u32, refresher: Refresher, now: Instant) -> Self {
        SessionTimer {
            interval,
            refresher,
            refreshed_at: now,
        }
    }

    /// A refresh (a 2xx to a re-INVITE or UPDATE) went out at `now`, with this interval.
    pub fn refreshed(&mut self, interval: u32, now: Instant) {
        self.interval = interval;
        self.refreshed_at = now;
    }

    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// The `Session-Expires` value of our 2xx.
    pub fn header_value(&self) -> String {
        format!("{};refresher={}", self.interval, self.refresher.as_str())
    }

    /// When the side that is not the refresher ends the session without a refresh: the
    /// interval less a third of it or 32 s, whichever is less (§10), so that the BYE goes
    /// out before the refresher would give up.
    pub fn expires_at(&self) -> Instant {
        let interval = u64::from(self.interval);
        let margin = (interval / 3).min(32);
        self.refreshed_at + Duration::from_secs(interval - margin)
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.expires_at()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn session_expires_parses_delta_and_refresher() {
        let se = SessionExpires::parse("1800;refresher=uac").unwrap();
        assert_eq!((se.delta, se.refresher), (1800, Some(Refresher::Uac)));
        let se = SessionExpires::parse(" 90 ; x=y ;Refresher=UAS").unwrap();
        assert_eq!((se.delta, se.refresher), (90, Some(Refresher::Uas)));
        assert_eq!(SessionExpires::parse("600").unwrap().refresher, None);
        for bad in ["", "x", "-5", "99999999999", "90;refresher=me"] {
            assert!(SessionExpires::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_brief_interval_gets_422_with_the_larger_minimum() {
        let d = decide(Some("60"), None, true, RFC_MIN_SE).unwrap();
        assert_eq!(d, Decision::TooBrief { min_se: 90 });
        let d = decide(Some("60"), Some("120"), true, RFC_MIN_SE).unwrap();
        assert_eq!(d, Decision::TooBrief { min_se: 120 });
        assert!(decide(Some("60"), Some("soon"), true, 90).is_err());
    }

    #[test]
    fn a_uac_that_supports_timers_refreshes() {
        for se in ["1800", "1800;refresher=uac"] {
            let d = decide(Some(se), Some("90"), true, RFC_MIN_SE).unwrap();
            assert_eq!(
                d,
                Decision::Use {
                    interval: 1800,
                    refresher: Refresher::Uac
                },
                "{se}"
            );
        }
    }

    #[test]
    fn no_timer_without_session_expires_or_without_uac_support() {
        assert_eq!(decide(None, None, true, 90).unwrap(), Decision::None);
        assert_eq!(
            decide(Some("1800"), None, false, 90).unwrap(),
            Decision::None
        );
        let d = decide(Some("4294967295"), None, true, 90).unwrap();
        assert_eq!(
            d,
            Decision::Use {
                interval: MAX_INTERVAL,
                refresher: Refresher::Uac
            }
        );
        // Asked to refresh itself, which it does not do: no timer either.
        let d = decide(Some("1800;refresher=uas"), None, true, 90).unwrap();
        assert_eq!(d, Decision::None);
    }

    #[test]
    fn expiry_leaves_a_third_or_32_s_before_the_interval_ends() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(90, Refresher::Uac, t0);
        assert_eq!(t.expires_at(), t0 + Duration::from_secs(60));
        assert!(!t.expired(t0 + Duration::from_secs(59)));
        assert!(t.expired(t0 + Duration::from_secs(60)));
        t.refreshed(1800, t0 + Duration::from_secs(50));
        assert_eq!(t.expires_at(), t0 + Duration::from_secs(50 + 1800 - 32));
        assert_eq!(t.header_value(), "1800;refresher=uac");
    }
}
