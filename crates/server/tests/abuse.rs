//! Abuse and overload: brute-forced passwords get the source blocked while honest phones
//! elsewhere keep registering; past the configured limits new calls get 503 with
//! Retry-After while established calls keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use siphon_server::counters::get;

/// One full attempt: REGISTER, 401, REGISTER with credentials; the final status (0 = none
/// within `wait` for a message: [`WAIT`] where an answer must come, a short while where
/// silence is expected).
async fn attempt(phone: &Phone, user: &str, password: &str, n: u32, wait: Duration) -> u16 {
    let local = phone.local();
    let call = format!("bf{n}-{}", local.port());
    phone
        .send(&register_request(local, user, &call, 1, None))
        .await;
    let Some(challenge) = phone.recv_within(wait).await else {
        return 0;
    };
    if status(&challenge) != 401 {
        return status(&challenge);
    }
    let auth = answer_challenge(
        &challenge_of(&challenge),
        user,
        password,
        "REGISTER",
        "sip:127.0.0.1",
        1,
    );
    phone
        .send(&register_request(local, user, &call, 2, Some(&auth)))
        .await;
    phone.recv_within(wait).await.map_or(0, |r| status(&r))
}

#[tokio::test]
async fn brute_force_blocks_the_source_but_not_an_honest_phone_elsewhere() {
    let s = start_with("", 34000).await;
    let attacker = Phone::from_ip(s.addr, "127.0.0.1").await;
    // The default threshold is 10 failures a minute.
    for n in 0..10 {
        assert_eq!(
            attempt(&attacker, "1001", &format!("guess{n}"), n, WAIT).await,
            403
        );
    }
    assert_eq!(get(&s.counters.auth_blocks), 1);
    // Blocked: even the right password from this source gets no answer now.
    let silence = Duration::from_millis(500);
    assert_eq!(
        attempt(&attacker, "1001", "secret1001", 99, silence).await,
        0
    );
    assert!(get(&s.counters.blocked_drops) >= 1);
    // The account's owner on another address registers normally.
    let owner = Phone::from_ip(s.addr, "127.0.0.2").await;
    assert_eq!(attempt(&owner, "1001", "secret1001", 100, WAIT).await, 200);
    s.stop().await;
}

#[tokio::test]
async fn new_calls_past_the_limits_get_503_and_established_calls_go_on() {
    let edits = [("max_calls = 2000", "max_calls = 2")];
    let s = start_edited("", 34100, &edits).await;
    let a = place_call(s.addr, "600", "lim1", "0").await;
    let _b = place_call(s.addr, "600", "lim2", "0").await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    phone
        .send(&invite(
            local,
            "600",
            "lim3",
            1,
            None,
            &sdp(40000, "0", ""),
            "application/sdp",
        ))
        .await;
    let r = phone.final_response().await;
    assert_eq!(status(&r), 503, "{r}");
    assert_eq!(header(&r, "Retry-After"), Some("5"));
    assert_eq!(get(&s.counters.overload_rejections), 1);
    // The established call still works: in-dialog requests are never refused.
    let la = a.phone.local();
    a.phone
        .send(&in_dialog("BYE", la, "600", "lim1", 2, &a.tag, "byelim1"))
        .await;
    assert_eq!(status(&a.phone.recv().await), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_call_rate_past_the_limit_gets_503() {
    let edits = [("calls_per_second = 100", "calls_per_second = 3")];
    let s = start_edited("", 34200, &edits).await;
    let phone = Phone::new(s.addr).await;
    let local = phone.local();
    // A burst of 20 INVITEs, all sent before any answer is read.
    const BURST: usize = 20;
    let started = tokio::time::Instant::now();
    for n in 0..BURST {
        let call = format!("rate{n}");
        phone
            .send(&invite(
                local,
                "610",
                &call,
                1,
                None,
                &sdp(40000, "0", ""),
                "application/sdp",
            ))
            .await;
    }
    // 610 rings: 180 is the answer for accepted calls, 503 for refused ones.
    let mut codes = std::collections::HashMap::new();
    while codes.len() < BURST {
        let r = phone.recv().await;
        let code = status(&r);
        if code != 100 {
            codes.insert(header(&r, "Call-ID").unwrap().to_string(), code);
        }
    }
    let elapsed = started.elapsed();
    // The bucket starts full (3) and refills at 3 a second: the first 3 pass, then at most
    // what refilled while Siphon took the burst (however slow the machine), and the rest is
    // refused.
    let accepted = codes.values().filter(|c| **c == 180).count();
    let refused = codes.values().filter(|c| **c == 503).count();
    let refill = (elapsed.as_secs_f64() * 3.0).floor() as usize;
    assert!(
        (3..=3 + refill).contains(&accepted),
        "{accepted} accepted in {elapsed:?}: {codes:?}"
    );
    assert!(refused >= 1, "nothing refused in {elapsed:?}: {codes:?}");
    assert_eq!(accepted + refused, BURST, "{codes:?}");
    s.stop().await;
}
