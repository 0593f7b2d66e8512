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
//! Siphon as refresher (`refresher=uas`) when Siphon can refresh its dialog (by UPDATE:
//! the caller allows it), else no session timer. On the legs Siphon places (UAC), the
//! callee's 2xx says who refreshes (`from_answer`). Siphon refreshes at half the interval
//! (§7.2) and ends the session when its refresh fails with 408 or 481 (§10).

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
    /// The 2xx carries `Session-Expires: interval;refresher=...` (and `Require: timer`
    /// when `require`: the UAC supports the extension, §9).
    Use {
        interval: u32,
        refresher: Refresher,
        require: bool,
    },
}

/// The decision for an INVITE with these `Session-Expires` and `Min-SE` values, whose UAC
/// does (`uac_supports`: `timer` in its `Supported`) or does not support session timers,
/// given whether Siphon can refresh the dialog itself (`can_refresh`) and the smallest
/// interval Siphon accepts (`our_min_se`; RFC 4028 asks for 90 s at least, tests use less).
pub fn decide(
    session_expires: Option<&str>,
    min_se: Option<&str>,
    uac_supports: bool,
    can_refresh: bool,
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
    let interval = se.delta.min(MAX_INTERVAL.max(our_min_se));
    if !uac_supports || se.refresher == Some(Refresher::Uas) {
        // Siphon has to refresh (a UAC without the extension, §9, or one that asks the UAS
        // to, whose choice the UAS keeps). When it cannot, the 2xx leaves Session-Expires
        // out and the dialog runs without a timer.
        if !can_refresh {
            return Ok(Decision::None);
        }
        return Ok(Decision::Use {
            interval,
            refresher: Refresher::Uas,
            require: uac_supports,
        });
    }
    // The UAC refreshes (its choice, or the UAS's when it named none).
    Ok(Decision::Use {
        interval,
        refresher: Refresher::Uac,
        require: true,
    })
}

/// The session timer a callee's 2xx sets on a dialog Siphon started (UAC): its
/// `Session-Expires` interval and refresher (RFC 4028 §9 has the UAS name one; a 2xx that
/// does not is read as leaving it to the UAC, Siphon). `None` without a usable
/// `Session-Expires` (no timer).
pub fn from_answer(session_expires: Option<&str>) -> Option<(u32, Refresher)> {
    let se = SessionExpires::parse(session_expires?).ok()?;
    if se.delta == 0 {
        return None;
    }
    Some((
        se.delta.min(MAX_INTERVAL),
        se.refresher.unwrap_or(Refresher::Uac),
    ))
}

/// One dialog's running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    interval: u32,
    refreshed_at: Instant,
    /// Siphon sends the refreshes (it is the `refresher` side of the dialog).
    siphon_refreshes: bool,
    /// Siphon's refresh is on its way (no second one until it is answered).
    pending: bool,
}

impl SessionTimer {
    /// The timer of a dialog Siphon answered (UAS): Siphon refreshes when `refresher` is
    /// `Uas`.
    pub fn new(interval: u32, refresher: Refresher, now: Instant) -> Self {
        SessionTimer {
            interval,
            refreshed_at: now,
            siphon_refreshes: refresher == Refresher::Uas,
            pending: false,
        }
    }

    /// The timer of a dialog Siphon started (UAC, a callee leg): Siphon refreshes when
    /// `refresher` is `Uac`.
    pub fn new_uac(interval: u32, refresher: Refresher, now: Instant) -> Self {
        SessionTimer {
            siphon_refreshes: refresher == Refresher::Uac,
            ..SessionTimer::new(interval, refresher, now)
        }
    }

    /// A refresh (a 2xx to a re-INVITE or UPDATE, either way) at `now`, with this
    /// interval.
    pub fn refreshed(&mut self, interval: u32, now: Instant) {
        self.interval = interval;
        self.refreshed_at = now;
        self.pending = false;
    }

    pub fn siphon_refreshes(&self) -> bool {
        self.siphon_refreshes
    }

    /// Whether Siphon, the refresher, is to send a refresh now: half the interval has
    /// passed since the last one (§7.2: the refresher refreshes at half the interval) and
    /// none is on its way.
    pub fn refresh_due(&self, now: Instant) -> bool {
        self.siphon_refreshes
            && !self.pending
            && now >= self.refreshed_at + Duration::from_secs(u64::from(self.interval / 2))
    }

    /// Siphon sent its refresh.
    pub fn refresh_sent(&mut self) {
        self.pending = true;
    }

    /// Siphon's refresh met a glare (491): it may go again at once (the interval is
    /// unchanged, so it is still due).
    pub fn refresh_again(&mut self) {
        self.pending = false;
    }

    /// The `Session-Expires` of Siphon's own refresh request: it sends it, so it is the
    /// transaction's UAC and keeps refreshing.
    pub fn refresh_request_value(&self) -> String {
        format!("{};refresher=uac", self.interval)
    }

    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// The `Session-Expires` value of our 2xx to the peer's INVITE or UPDATE: `refresher`
    /// names the side that refreshes in the roles of that transaction (the peer is its
    /// UAC).
    pub fn header_value(&self) -> String {
        let who = if self.siphon_refreshes {
            Refresher::Uas
        } else {
            Refresher::Uac
        };
        format!("{};refresher={}", self.interval, who.as_str())
    }

    /// When the session ends without a refresh. The side that is not the refresher waits
    /// the interval less a third of it or 32 s, whichever is less (§10), so that the BYE
    /// goes out before the refresher would give up; Siphon as refresher, whose refresh
    /// went at half the interval, gives up when the interval is over (§10: no answer to
    /// its refresh before the session expires).
    pub fn expires_at(&self) -> Instant {
        let interval = u64::from(self.interval);
        let margin = if self.siphon_refreshes {
            0
        } else {
            (interval / 3).min(32)
        };
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
        let d = decide(Some("60"), None, true, false, RFC_MIN_SE).unwrap();
        assert_eq!(d, Decision::TooBrief { min_se: 90 });
        let d = decide(Some("60"), Some("120"), true, false, RFC_MIN_SE).unwrap();
        assert_eq!(d, Decision::TooBrief { min_se: 120 });
        assert!(decide(Some("60"), Some("soon"), true, true, 90).is_err());
    }

    #[test]
    fn a_uac_that_supports_timers_refreshes() {
        for se in ["1800", "1800;refresher=uac"] {
            let d = decide(Some(se), Some("90"), true, true, RFC_MIN_SE).unwrap();
            assert_eq!(
                d,
                Decision::Use {
                    interval: 1800,
                    refresher: Refresher::Uac,
                    require: true,
                },
                "{se}"
            );
        }
    }

    #[test]
    fn no_timer_without_session_expires_or_without_uac_support() {
        assert_eq!(decide(None, None, true, true, 90).unwrap(), Decision::None);
        assert_eq!(
            decide(Some("1800"), None, false, false, 90).unwrap(),
            Decision::None
        );
        let d = decide(Some("4294967295"), None, true, false, 90).unwrap();
        assert_eq!(
            d,
            Decision::Use {
                interval: MAX_INTERVAL,
                refresher: Refresher::Uac,
                require: true,
            }
        );
        // Asked to refresh itself when it cannot (no UPDATE): no timer either.
        let d = decide(Some("1800;refresher=uas"), None, true, false, 90).unwrap();
        assert_eq!(d, Decision::None);
    }

    #[test]
    fn siphon_refreshes_when_asked_or_when_the_uac_lacks_the_extension() {
        let d = decide(Some("1800;refresher=uas"), None, true, true, 90).unwrap();
        assert_eq!(
            d,
            Decision::Use {
                interval: 1800,
                refresher: Refresher::Uas,
                require: true,
            }
        );
        // A UAC without `timer` (a proxy added Session-Expires): no Require in the 2xx.
        let d = decide(Some("600;refresher=uac"), None, false, true, 90).unwrap();
        assert_eq!(
            d,
            Decision::Use {
                interval: 600,
                refresher: Refresher::Uas,
                require: false,
            }
        );
        // No Session-Expires at all: no timer, whoever could refresh.
        assert_eq!(decide(None, None, false, true, 90).unwrap(), Decision::None);
    }

    #[test]
    fn the_refresher_refreshes_at_half_the_interval_once_at_a_time() {
        let t0 = Instant::now();
        let mut t = SessionTimer::new(10, Refresher::Uas, t0);
        assert!(t.siphon_refreshes());
        assert!(!t.refresh_due(t0 + Duration::from_millis(4999)));
        assert!(t.refresh_due(t0 + Duration::from_secs(5)));
        t.refresh_sent();
        assert!(
            !t.refresh_due(t0 + Duration::from_secs(6)),
            "one on its way"
        );
        t.refresh_again();
        assert!(t.refresh_due(t0 + Duration::from_secs(6)), "after a 491");
        t.refresh_sent();
        assert_eq!(t.refresh_request_value(), "10;refresher=uac");
        t.refreshed(10, t0 + Duration::from_secs(6));
        assert!(!t.refresh_due(t0 + Duration::from_millis(10_999)));
        assert!(t.refresh_due(t0 + Duration::from_secs(11)));
        // A refresh that never comes back: the session still expires (§10), when the
        // interval is over.
        t.refresh_sent();
        assert!(!t.expired(t0 + Duration::from_millis(15_999)));
        assert!(t.expired(t0 + Duration::from_secs(6 + 10)));
        // The UAS side of a dialog whose UAC refreshes never refreshes.
        let peer = SessionTimer::new(10, Refresher::Uac, t0);
        assert!(!peer.refresh_due(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn on_a_callee_leg_the_callees_answer_says_who_refreshes() {
        assert_eq!(
            from_answer(Some("90;refresher=uac")),
            Some((90, Refresher::Uac))
        );
        assert_eq!(
            from_answer(Some("90;refresher=uas")),
            Some((90, Refresher::Uas))
        );
        assert_eq!(from_answer(Some("1800")), Some((1800, Refresher::Uac)));
        assert_eq!(from_answer(Some("0")), None);
        assert_eq!(from_answer(Some("soon")), None);
        assert_eq!(from_answer(None), None);
        let t0 = Instant::now();
        assert!(SessionTimer::new_uac(90, Refresher::Uac, t0).siphon_refreshes());
        let carrier_refreshes = SessionTimer::new_uac(90, Refresher::Uas, t0);
        assert!(!carrier_refreshes.siphon_refreshes());
        // Our 2xx to the carrier's refresh: the carrier, UAC of that request, refreshes.
        assert_eq!(carrier_refreshes.header_value(), "90;refresher=uac");
        let siphon = SessionTimer::new_uac(90, Refresher::Uac, t0);
        assert_eq!(siphon.header_value(), "90;refresher=uas");
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
