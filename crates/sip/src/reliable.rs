//! Reliable provisional responses (RFC 3262, option tag `100rel`), both sides, pure.
//!
//! As UAC (a bridged call's callee leg): a 18x carrying `Require: 100rel` and `RSeq` must
//! be acknowledged with a PRACK whose `RAck` names it; only the first reliable response of
//! each early dialog and then each one numbered one higher are taken (§4), the others are
//! retransmissions (whose PRACK the PRACK's own client transaction already retransmits) or
//! out of order, and are dropped. `UacRseq` keeps that count.
//!
//! As UAS (the caller's INVITE, when the caller lists `100rel` in `Supported` or
//! `Require`): Siphon numbers its 18x with `RSeq` and sends each again at T1, 2·T1, 4·T1...
//! until a PRACK with the matching `RAck` comes, giving up after 64·T1 (§3).
//! `UasReliable` holds the one outstanding response of a transaction and says when to
//! send it again; the endpoint owns the sockets and the clock.

use std::time::{Duration, Instant};

/// The option tag.
pub const TAG: &str = "100rel";

/// Whether a list of option-tag header values (`Supported`, `Require`) names `100rel`.
pub fn names_100rel<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(TAG))
}

/// The `RSeq` of a response whose `Require` names `100rel`: it must be PRACKed. `None`
/// for an unreliable provisional, and for one without a usable `RSeq` (1 to 2^32-1, §7.1):
/// that is treated as unreliable rather than refused (a 18x cannot be answered).
pub fn reliable_rseq<'a>(
    status: u16,
    require: impl IntoIterator<Item = &'a str>,
    rseq: Option<&str>,
) -> Option<u32> {
    if !(101..=199).contains(&status) || !names_100rel(require) {
        return None;
    }
    rseq?.trim().parse::<u32>().ok().filter(|n| *n > 0)
}

/// The `RAck` value for a PRACK (§7.2): the response's `RSeq`, then the CSeq number and
/// method of the request it answered.
pub fn rack_value(rseq: u32, cseq: u32, method: &str) -> String {
    format!("{rseq} {cseq} {method}")
}

/// A parsed `RAck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    pub rseq: u32,
    pub cseq: u32,
    pub method: String,
}

impl RAck {
    /// `response-num LWS CSeq-num LWS Method`; `None` when malformed.
    pub fn parse(value: &str) -> Option<RAck> {
        let mut parts = value.split_whitespace();
        let rseq = parts.next()?.parse().ok()?;
        let cseq = parts.next()?.parse().ok()?;
        let method = parts.next()?.to_ascii_uppercase();
        if parts.next().is_some() {
            return None;
        }
        Some(RAck { rseq, cseq, method })
    }
}

/// The UAC's count of reliable provisional responses, per early dialog (To tag): a proxy
/// may fork the INVITE, and each branch numbers its own.
#[derive(Debug, Default, Clone)]
pub struct UacRseq {
    last: Vec<(String, u32)>,
}

/// The most early dialogs one INVITE tracks (a forking proxy's branches): more are not
/// PRACKed, so a hostile peer cannot grow the table.
const MAX_EARLY_DIALOGS: usize = 16;

impl UacRseq {
    /// Whether the reliable response numbered `rseq` in the early dialog `to_tag` is new and
    /// in order (then it is recorded and must be PRACKed and processed); `false` for a
    /// retransmission or a gap (§4: neither is PRACKed nor processed).
    pub fn accept(&mut self, to_tag: &str, rseq: u32) -> bool {
        let full = self.last.len() >= MAX_EARLY_DIALOGS;
        match self.last.iter_mut().find(|(t, _)| t == to_tag) {
            Some((_, last)) if last.checked_add(1) == Some(rseq) => {
                *last = rseq;
                true
            }
            Some(_) => false,
            None if !full => {
                self.last.push((to_tag.to_string(), rseq));
                true
            }
            None => false,
        }
    }
}

/// What to do with an outstanding reliable provisional response at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmit {
    /// Nothing yet; look again at `UasReliable::deadline`.
    Wait,
    /// Send the response again now.
    Send,
    /// 64·T1 passed without a PRACK: the INVITE is to be refused (§3: 5xx).
    GiveUp,
}

/// The UAS side of one INVITE: Siphon's `RSeq` numbering and its one reliable response
/// waiting for PRACK (a UAS sends the next reliable one only after the previous is PRACKed,
/// §3; later 18x meanwhile are not sent reliably and may be dropped by the endpoint).
#[derive(Debug, Clone)]
pub struct UasReliable {
    next_rseq: u32,
    pending: Option<Pending>,
    t1: Duration,
}

#[derive(Debug, Clone)]
struct Pending {
    rseq: u32,
    cseq: u32,
    next: Instant,
    interval: Duration,
    give_up: Instant,
    /// The response carries SDP: the 2xx must wait for its PRACK (§3).
    with_sdp: bool,
}

impl UasReliable {
    /// `first_rseq` is the first number to use (RFC 3262 §3: random, below 2^31); 0 is
    /// taken as 1.
    pub fn new(first_rseq: u32, t1: Duration) -> UasReliable {
        UasReliable {
            next_rseq: (first_rseq & 0x7fff_ffff).max(1),
            pending: None,
            t1,
        }
    }

    /// Whether a reliable response is waiting for its PRACK.
    pub fn outstanding(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a 2xx must wait: the outstanding response carried a session description.
    pub fn holds_2xx(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.with_sdp)
    }

    /// Numbers a reliable response to the INVITE with CSeq `cseq` sent at `now`, and
    /// returns its `RSeq`; `None` while the previous one is not PRACKed (then send this one
    /// unreliably, or not at all).
    pub fn send(&mut self, now: Instant, cseq: u32, with_sdp: bool) -> Option<u32> {
        if self.pending.is_some() {
            return None;
        }
        let rseq = self.next_rseq;
        self.next_rseq = self.next_rseq.wrapping_add(1).max(1);
        self.pending = Some(Pending {
            rseq,
            cseq,
            next: now + self.t1,
            interval: self.t1,
            give_up: now + self.t1 * 64,
            with_sdp,
        });
        Some(rseq)
    }

    /// When to look again (`poll`), if a response is outstanding.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.next.min(p.give_up))
    }

    /// At `now`: send the outstanding response again (the interval doubles), give up, or
    /// wait.
    pub fn poll(&mut self, now: Instant) -> Retransmit {
        let Some(p) = self.pending.as_mut() else {
            return Retransmit::Wait;
        };
        if now >= p.give_up {
            self.pending = None;
            return Retransmit::GiveUp;
        }
        if now < p.next {
            return Retransmit::Wait;
        }
        p.interval *= 2;
        p.next = now + p.interval;
        Retransmit::Send
    }

    /// A PRACK with this `RAck` came: `true` if it acknowledges the outstanding response
    /// (which is then done with). A PRACK that matches nothing is answered 481 (§3).
    pub fn prack(&mut self, rack: &RAck) -> bool {
        let matches = self
            .pending
            .as_ref()
            .is_some_and(|p| p.rseq == rack.rseq && p.cseq == rack.cseq && rack.method == "INVITE");
        if matches {
            self.pending = None;
        }
        matches
    }

    /// The final response went out: nothing is retransmitted any more (§3: a UAS stops
    /// with the final response, whatever PRACKs are missing).
    pub fn finish(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_a_18x_requiring_100rel_with_an_rseq_is_reliable() {
        assert_eq!(reliable_rseq(183, ["100rel"], Some("7")), Some(7));
        assert_eq!(reliable_rseq(180, ["timer, 100REL"], Some(" 1 ")), Some(1));
        assert_eq!(reliable_rseq(183, ["timer"], Some("7")), None);
        assert_eq!(reliable_rseq(183, ["100rel"], None), None);
        assert_eq!(reliable_rseq(183, ["100rel"], Some("0")), None);
        assert_eq!(reliable_rseq(183, ["100rel"], Some("x")), None);
        assert_eq!(reliable_rseq(183, ["100rel"], Some("99999999999")), None);
        assert_eq!(reliable_rseq(100, ["100rel"], Some("1")), None);
        assert_eq!(reliable_rseq(200, ["100rel"], Some("1")), None);
    }

    #[test]
    fn supported_or_require_lists_are_read_case_insensitively() {
        assert!(names_100rel(["timer", "replaces, 100Rel"]));
        assert!(!names_100rel(["timer", "100relx"]));
        assert!(!names_100rel([]));
    }

    #[test]
    fn rack_round_trips() {
        let v = rack_value(5, 1, "INVITE");
        assert_eq!(v, "5 1 INVITE");
        assert_eq!(
            RAck::parse(&v),
            Some(RAck {
                rseq: 5,
                cseq: 1,
                method: "INVITE".into()
            })
        );
        assert_eq!(
            RAck::parse("5  1\tinvite").map(|r| r.method),
            Some("INVITE".into())
        );
        assert_eq!(RAck::parse("5 1"), None);
        assert_eq!(RAck::parse("x 1 INVITE"), None);
        assert_eq!(RAck::parse("5 1 INVITE extra"), None);
        assert_eq!(RAck::parse(""), None);
    }

    #[test]
    fn uac_takes_the_first_then_each_one_higher_per_early_dialog() {
        let mut r = UacRseq::default();
        assert!(r.accept("a", 10));
        assert!(!r.accept("a", 10), "retransmission");
        assert!(!r.accept("a", 12), "gap");
        assert!(r.accept("a", 11));
        assert!(r.accept("b", 500), "another branch counts on its own");
        assert!(!r.accept("a", 9));
        assert!(!r.accept("a", u32::MAX), "a jump is a gap");
    }

    #[test]
    fn uac_tracks_a_bounded_number_of_early_dialogs() {
        let mut r = UacRseq::default();
        for i in 0..MAX_EARLY_DIALOGS {
            assert!(r.accept(&i.to_string(), 1));
        }
        assert!(!r.accept("one-too-many", 1));
    }

    #[test]
    fn uas_retransmits_at_t1_doubling_until_prack() {
        let t0 = Instant::now();
        let t1 = Duration::from_millis(500);
        let mut u = UasReliable::new(41, t1);
        let rseq = u.send(t0, 1, true).unwrap();
        assert_eq!(rseq, 41);
        assert!(u.holds_2xx());
        assert_eq!(u.deadline(), Some(t0 + t1));
        assert_eq!(u.poll(t0 + Duration::from_millis(499)), Retransmit::Wait);
        assert_eq!(u.poll(t0 + t1), Retransmit::Send);
        // Next after 2·T1, then 4·T1.
        assert_eq!(u.deadline(), Some(t0 + t1 + t1 * 2));
        assert_eq!(u.poll(t0 + t1 * 2), Retransmit::Wait);
        assert_eq!(u.poll(t0 + t1 * 3), Retransmit::Send);
        assert_eq!(u.deadline(), Some(t0 + t1 * 7));
        // A second reliable response waits for the first's PRACK.
        assert_eq!(u.send(t0 + t1 * 3, 1, false), None);
        let wrong = RAck {
            rseq: 40,
            cseq: 1,
            method: "INVITE".into(),
        };
        assert!(!u.prack(&wrong));
        let wrong_cseq = RAck {
            rseq: 41,
            cseq: 2,
            method: "INVITE".into(),
        };
        assert!(!u.prack(&wrong_cseq));
        let right = RAck {
            rseq: 41,
            cseq: 1,
            method: "INVITE".into(),
        };
        assert!(u.prack(&right));
        assert!(!u.outstanding());
        assert!(!u.holds_2xx());
        assert!(!u.prack(&right), "a second PRACK matches nothing");
        assert_eq!(u.poll(t0 + t1 * 7), Retransmit::Wait);
        assert_eq!(u.deadline(), None);
        // The next reliable response is numbered one higher.
        assert_eq!(u.send(t0 + t1 * 8, 1, false), Some(42));
        assert!(!u.holds_2xx());
    }

    #[test]
    fn uas_gives_up_after_64_t1() {
        let t0 = Instant::now();
        let t1 = Duration::from_millis(500);
        let mut u = UasReliable::new(1, t1);
        u.send(t0, 3, false).unwrap();
        let mut sends = 0;
        let mut now;
        loop {
            now = u.deadline().unwrap();
            match u.poll(now) {
                Retransmit::Send => sends += 1,
                Retransmit::GiveUp => break,
                Retransmit::Wait => panic!("a deadline that is not due"),
            }
        }
        assert_eq!(now, t0 + t1 * 64);
        // At 1, 3, 7, 15, 31 and 63 T1; the next (127) is past 64·T1's give-up.
        assert_eq!(sends, 6);
        assert!(!u.outstanding());
    }

    #[test]
    fn uas_rseq_stays_below_2_pow_31_and_never_zero() {
        let t0 = Instant::now();
        let mut u = UasReliable::new(0, Duration::from_millis(500));
        assert_eq!(u.send(t0, 1, false), Some(1));
        let mut u = UasReliable::new(u32::MAX, Duration::from_millis(500));
        assert_eq!(u.send(t0, 1, false), Some(0x7fff_ffff));
        u.finish();
        assert!(!u.outstanding());
    }
}
