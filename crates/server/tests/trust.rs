//! The trust boundary (docs/security.md): authentication that survives restarts and forged
//! source addresses, limits that cannot be bypassed, nothing learned by scanners, caller
//! identities that cannot be spoofed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use siphon_server::counters::get;

/// REGISTER, 401, REGISTER with credentials: the final status and the challenge answered.
async fn register_fully(
    phone: &Phone,
    user: &str,
    password: &str,
    call: &str,
) -> (u16, siphon_sip::auth::Challenge) {
    let local = phone.local();
    phone
        .send(&register_request(local, user, call, 1, None))
        .await;
    let challenge = phone.recv().await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let challenge = challenge_of(&challenge);
    let creds = answer_challenge(&challenge, user, password, "REGISTER", "sip:127.0.0.1", 1);
    phone
        .send(&register_request(local, user, call, 2, Some(&creds)))
        .await;
    (status(&phone.recv().await), challenge)
}

/// A phone that re-sends its cached credentials after Siphon restarted: with a nonce key
/// file they are still good (200 at once); without one it gets a fresh 401 with
/// `stale=true` and registers on the next try. Never a 403, never a failure counted.
#[tokio::test]
async fn cached_credentials_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("siphon-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("nonce.key");
    let _ = std::fs::remove_file(&key);
    let with_key = [(
        "nonce_lifetime_s = 300",
        &*format!(
            "nonce_lifetime_s = 300\nnonce_secret_file = \"{}\"",
            key.display()
        ),
    )];

    let s = start_edited("", 35100, &with_key).await;
    let phone = Phone::new(s.addr).await;
    let (code, challenge) = register_fully(&phone, "1001", "secret1001", "restart1").await;
    assert_eq!(code, 200);
    s.stop().await;
    // A phone answers the challenge it cached, with the next nonce-count each time.
    let cached = |nc| {
        answer_challenge(
            &challenge,
            "1001",
            "secret1001",
            "REGISTER",
            "sip:127.0.0.1",
            nc,
        )
    };

    // Restarted with the same key file: the cached credentials are accepted.
    let s = start_edited("", 35200, &with_key).await;
    let phone = Phone {
        sock: phone.sock,
        server: s.addr,
    };
    phone
        .send(&register_request(
            phone.local(),
            "1001",
            "restart1",
            3,
            Some(&cached(2)),
        ))
        .await;
    let r = phone.recv().await;
    assert_eq!(status(&r), 200, "{r}");
    s.stop().await;

    // Restarted without the key (a new random one): stale, then registered.
    let s = start_with("", 35300).await;
    let phone = Phone {
        sock: phone.sock,
        server: s.addr,
    };
    phone
        .send(&register_request(
            phone.local(),
            "1001",
            "restart1",
            4,
            Some(&cached(3)),
        ))
        .await;
    let r = phone.recv().await;
    assert_eq!(status(&r), 401, "{r}");
    assert!(
        challenge_of(&r).stale,
        "a correct digest for an unknown nonce is stale: {r}"
    );
    let creds = answer_challenge(
        &challenge_of(&r),
        "1001",
        "secret1001",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    );
    phone
        .send(&register_request(
            phone.local(),
            "1001",
            "restart1",
            5,
            Some(&creds),
        ))
        .await;
    assert_eq!(status(&phone.recv().await), 200);
    assert_eq!(get(&s.counters.auth_failures), 0);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Someone forging an office's address sends wrong credentials by the hundred. They never
/// see the challenges sent to that address, so their nonces are their own (from another
/// address) or made up: each gets a fresh challenge, nothing is counted, the address is
/// not blocked, and the office's phone registers.
#[tokio::test]
async fn forged_failures_do_not_block_the_real_source() {
    let s = start_with("", 35400).await;
    // The attacker's real address, where it can read challenges...
    let attacker = Phone::from_ip(s.addr, "127.0.0.2").await;
    attacker
        .send(&register_request(
            attacker.local(),
            "1001",
            "forge",
            1,
            None,
        ))
        .await;
    let own = challenge_of(&attacker.recv().await);
    // ...and the office's address it forges (on loopback: a socket on that address).
    let forger = Phone::from_ip(s.addr, "127.0.0.1").await;
    for n in 0..40u32 {
        let mut challenge = own.clone();
        if n % 2 == 1 {
            challenge.nonce = format!("{:064x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15);
        }
        let creds = answer_challenge(
            &challenge,
            "1001",
            &format!("guess{n}"),
            "REGISTER",
            "sip:127.0.0.1",
            1,
        );
        forger
            .send(&register_request(
                forger.local(),
                "1001",
                &format!("forge{n}"),
                2,
                Some(&creds),
            ))
            .await;
        let r = forger.recv().await;
        assert_eq!(status(&r), 401, "forged attempt {n}: {r}");
    }
    assert_eq!(get(&s.counters.auth_failures), 0);
    assert_eq!(get(&s.counters.auth_blocks), 0);
    let office = Phone::from_ip(s.addr, "127.0.0.1").await;
    assert_eq!(
        register_fully(&office, "1001", "secret1001", "office")
            .await
            .0,
        200
    );
    s.stop().await;
}

/// A trunk's address is never blocked, however many failed logins come from it (a carrier
/// shares one address among many customers): its calls keep working.
#[tokio::test]
async fn a_trunk_address_is_never_blocked() {
    let trunk = "\n[[accounts]]\nusername = \"carrier\"\nkind = \"trunk\"\nallowed_ips = [\"127.0.0.3/32\"]\n";
    let s = start_with(trunk, 35500).await;
    let from_trunk = Phone::from_ip(s.addr, "127.0.0.3").await;
    for n in 0..15 {
        let (code, _) =
            register_fully(&from_trunk, "1001", &format!("guess{n}"), &format!("t{n}")).await;
        assert_eq!(code, 403);
    }
    assert_eq!(get(&s.counters.auth_failures), 15);
    assert_eq!(get(&s.counters.auth_blocks), 0);
    // The trunk still gets answers: an OPTIONS ping and a call to a digest route.
    from_trunk
        .send(&options(from_trunk.local(), "trunkping"))
        .await;
    assert_eq!(status(&from_trunk.recv().await), 200);
    s.stop().await;
}

/// A To tag does not make a request "in dialog": REGISTERs carrying one are rate limited
/// like any other (only requests in a dialog Siphon holds are exempt).
#[tokio::test]
async fn a_to_tag_does_not_bypass_the_rate_limits() {
    let edits = [("registers_per_second = 500", "registers_per_second = 2")];
    let s = start_edited("", 35600, &edits).await;
    let phone = Phone::new(s.addr).await;
    let mut refused = 0;
    for n in 0..10 {
        let r = register_request(phone.local(), "1001", &format!("tagged{n}"), 1, None).replace(
            "To: <sip:1001@127.0.0.1>",
            "To: <sip:1001@127.0.0.1>;tag=forged",
        );
        phone.send(&r).await;
        if status(&phone.recv().await) == 503 {
            refused += 1;
        }
    }
    assert!(
        refused >= 5,
        "only {refused} of 10 tagged REGISTERs were limited"
    );
    s.stop().await;
}

/// A scanner sweeping numbers learns nothing: to a caller Siphon does not know, an
/// account's number, a number that does not exist and a route that needs digest all
/// answer the same 407; and REGISTER for an account and for a user that does not exist
/// fail the same way (401, then 403).
#[tokio::test]
async fn a_scanner_sweep_learns_nothing() {
    let s = start_with("", 35700).await;
    let scanner = Phone::from_ip(s.addr, "127.0.0.4").await;
    let local = scanner.local();
    let body = sdp(40000, "0", "");
    let mut shapes = Vec::new();
    for number in ["1000", "1001", "1002", "1003", "999", "5555", "+4420123"] {
        let inv = invite(
            local,
            number,
            &format!("scan{number}"),
            1,
            None,
            &body,
            "application/sdp",
        );
        scanner.send(&inv).await;
        let r = scanner.final_response().await;
        let names: Vec<&str> = r
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split(':').next())
            .collect();
        shapes.push((number, status(&r), names.join(",")));
    }
    for (number, code, names) in &shapes {
        assert_eq!(*code, 407, "{number}: {shapes:?}");
        assert_eq!(
            names, &shapes[0].2,
            "{number} answers differently: {shapes:?}"
        );
    }
    // REGISTER: an account with a wrong password and users that do not exist.
    for user in ["1001", "1003", "4242", "admin"] {
        let attempt = Phone::from_ip(s.addr, "127.0.0.4").await;
        let local = attempt.local();
        attempt
            .send(&register_request(
                local,
                user,
                &format!("scanreg{user}"),
                1,
                None,
            ))
            .await;
        let challenge = attempt.recv().await;
        assert_eq!(status(&challenge), 401, "{user}");
        let creds = answer_challenge(
            &challenge_of(&challenge),
            user,
            "guess",
            "REGISTER",
            "sip:127.0.0.1",
            1,
        );
        attempt
            .send(&register_request(
                local,
                user,
                &format!("scanreg{user}"),
                2,
                Some(&creds),
            ))
            .await;
        let r = attempt.recv().await;
        assert_eq!(status(&r), 403, "{user}: {r}");
    }
    s.stop().await;
}

/// A required fork that cannot connect ends the call, and nothing of its URL (credentials
/// in user info or query) leaves in the BYE: its Reason is a fixed, well-formed text.
#[tokio::test]
async fn a_failed_fork_leaks_nothing_into_the_bye() {
    // A port that refuses connections: bound (so nothing else takes it) but not listening.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let route = format!(
        "\n[[dialplan]]\nnumber = \"704\"\naction = \"fork\"\nauth = \"none\"\n\
         [[dialplan.forks]]\nurl = \"ws://bob:hunter2@127.0.0.1:{port}/x?token=s3cr3t&q=\\\"\"\n\
         mode = \"native\"\nrequired = true\nconnect_timeout_ms = 300\n"
    );
    let s = start_with(&route, 35800).await;
    let call = place_call(s.addr, "704", "leaky", "0").await;
    let bye = loop {
        let msg = call
            .phone
            .recv_within(std::time::Duration::from_secs(10))
            .await
            .expect("a BYE");
        if msg.starts_with("BYE ") {
            break msg;
        }
    };
    assert_eq!(
        header(&bye, "Reason"),
        Some("SIP;cause=200;text=\"Media ended\""),
        "{bye}"
    );
    for secret in ["hunter2", "s3cr3t", "bob"] {
        assert!(!bye.contains(secret), "{secret} leaked: {bye}");
    }
    s.stop().await;
}

/// Someone spraying RTP at a call's port before the phone's first packet takes the stream
/// only until the phone sends from the address its SDP gave: then the phone gets the call's
/// audio and the stranger nothing more.
#[tokio::test]
async fn sprayed_rtp_cannot_hijack_an_answered_call() {
    let s = start_with("", 35900).await;
    let call = place_call(s.addr, "600", "hijack", "0").await;
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let frame = speech_like(siphon_media::g711::G711::Pcmu, 1);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    for i in 0..10u16 {
        tick.tick().await;
        let p = rtp_bytes(0, i == 0, i, 160 * u32::from(i), 0xbad, &frame);
        attacker.send_to(&p, call.remote).await.unwrap();
    }
    // The phone starts talking (from the address in its SDP).
    let talk = async {
        for i in 0..50u16 {
            tick.tick().await;
            let p = rtp_bytes(0, i == 0, i, 160 * u32::from(i), 0x600d, &frame);
            call.rtp.send_to(&p, call.remote).await.unwrap();
        }
    };
    let window = std::time::Duration::from_secs(2);
    let (_, to_phone, _) =
        tokio::join!(talk, collect(&call.rtp, window), collect(&attacker, window));
    assert!(
        to_phone.len() >= 20,
        "the phone got {} packets of its own call",
        to_phone.len()
    );
    // Whatever reached the attacker stopped once the phone took the stream back.
    let late = collect(&attacker, std::time::Duration::from_millis(500)).await;
    assert!(
        late.is_empty(),
        "the attacker still gets {} packets",
        late.len()
    );
    s.stop().await;
}
