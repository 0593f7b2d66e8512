//! Configuration parsing and validation: every mistake is named with its line.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded().unwrap();
    assert_eq!(c.sip.listen, "127.0.0.1:5060".parse().unwrap());
    assert!(c.account("1001").is_some());
    assert_eq!(c.route("600").unwrap().action, Action::Echo);
    assert_eq!(c.route("700").unwrap().action, Action::Fork);
    assert!(c.route("602").unwrap().prompt().unwrap().is_some());
    let r = c.route("1002").unwrap();
    assert_eq!((r.action, r.user_account()), (Action::User, "1002"));
}

#[test]
fn a_trunk_route_may_dial_a_fixed_number_and_a_uri_route_needs_an_ip_uri() {
    let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\
        [[trunks]]\nname = \"up\"\naddress = \"192.0.2.1:5060\"\n\
        [[dialplan]]\nnumber = \"800\"\naction = \"trunk\"\ntrunk = \"up\"\n\
        dial = \"5551234567\"\nprepend = \"+1\"\n\
        [[dialplan]]\nnumber = \"801\"\naction = \"uri\"\nuri = \"sip:pbx@192.0.2.9:5070\"\n";
    let c = Config::parse(text).unwrap();
    // `dial` replaces the dialled number; `prepend` still applies.
    assert_eq!(c.route("800").unwrap().rewrite("800"), "+15551234567");
    let r = c.route("801").unwrap();
    assert_eq!(r.action, Action::Uri);
    assert_eq!(
        sip_uri_addr(r.uri.as_deref().unwrap()).unwrap(),
        "192.0.2.9:5070".parse().unwrap()
    );
    for bad in [
        text.replace("sip:pbx@192.0.2.9:5070", "sip:pbx@pbx.example.com"),
        text.replace("uri = \"sip:pbx@192.0.2.9:5070\"\n", ""),
        text.replace("dial = \"5551234567\"", "dial = \"555;x=y\""),
    ] {
        assert!(Config::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn trunk_routes_rewrite_and_patterns_match() {
    let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\
        [[trunks]]\nname = \"up\"\naddress = \"192.0.2.1:5060\"\n\
        [[dialplan]]\nnumber = \"_9X.\"\naction = \"trunk\"\ntrunk = \"up\"\nstrip = 1\nprepend = \"+44\"\n\
        [[dialplan]]\nnumber = \"900\"\naction = \"echo\"\n";
    let c = Config::parse(text).unwrap();
    // An exact number wins over a pattern listed before it.
    assert_eq!(c.route("900").unwrap().action, Action::Echo);
    let r = c.route("9020").unwrap();
    assert_eq!(r.action, Action::Trunk);
    assert_eq!(r.rewrite("9020"), "+44020");
    assert!(
        c.route("90").is_none(),
        "X. needs at least two digits after 9"
    );
    assert_eq!(c.trunk("up").unwrap().domain(), "192.0.2.1:5060");
    let unknown = text.replace("trunk = \"up\"", "trunk = \"down\"");
    assert!(Config::parse(&unknown).is_err());
    let bad = text.replace("_9X.", "_9.X");
    assert!(Config::parse(&bad).is_err());
    let reject = text.replace("action = \"echo\"", "action = \"reject\"\ncode = 603");
    let c = Config::parse(&reject).unwrap();
    assert_eq!(
        (c.route("900").unwrap().action, c.route("900").unwrap().code),
        (Action::Reject, Some(603))
    );
    assert!(Config::parse(&reject.replace("603", "200")).is_err());
}

#[test]
fn routes_by_caller() {
    let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\
        [[dialplan]]\nnumber = \"_0.\"\naction = \"tone\"\ncallers = [\"1001\"]\n\
        [[dialplan]]\nnumber = \"_0.\"\naction = \"echo\"\n";
    let c = Config::parse(text).unwrap();
    assert_eq!(
        c.route_for("0123", Some("1001")).unwrap().action,
        Action::Tone
    );
    assert_eq!(
        c.route_for("0123", Some("1002")).unwrap().action,
        Action::Echo
    );
    assert_eq!(c.route("0123").unwrap().action, Action::Echo);
    let open = text.replace(
        "callers = [\"1001\"]",
        "callers = [\"1001\"]\nauth = \"none\"",
    );
    assert!(Config::parse(&open).is_err());
}

#[test]
fn user_routes_need_an_existing_account() {
    let base = "[sip]\nlisten = \"127.0.0.1:5060\"\n[[accounts]]\nusername = \"1002\"\npassword = \"p\"\nkind = \"phone\"\n";
    let ok = format!("{base}[[dialplan]]\nnumber = \"22\"\naction = \"user\"\nuser = \"1002\"\n");
    assert_eq!(
        Config::parse(&ok)
            .unwrap()
            .route("22")
            .unwrap()
            .user_account(),
        "1002"
    );
    let missing = format!("{base}[[dialplan]]\nnumber = \"23\"\naction = \"user\"\n");
    let err = Config::parse(&missing).unwrap_err().to_string();
    assert!(
        err.contains("line 8") && err.contains("account 23"),
        "{err}"
    );
    let stray =
        format!("{base}[[dialplan]]\nnumber = \"24\"\naction = \"echo\"\nuser = \"1002\"\n");
    assert!(Config::parse(&stray).is_err());
}

#[test]
fn errors_name_the_line() {
    let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n\n[rtp]\nport_min = \"many\"\n";
    let err = Config::parse(text).unwrap_err().to_string();
    assert!(err.starts_with("line 5"), "{err}");
    let text = "[sip]\nlisten = \"not an address\"\n";
    assert!(
        Config::parse(text)
            .unwrap_err()
            .to_string()
            .starts_with("line 2")
    );
    let text = "[sip]\nlisten = \"127.0.0.1:5060\"\nlisen = 1\n";
    let err = Config::parse(text).unwrap_err().to_string();
    assert!(err.starts_with("line 3"), "{err}");
}

#[test]
fn semantic_errors_are_refused() {
    let base = "[sip]\nlisten = \"127.0.0.1:5060\"\n";
    let dup = format!(
        "{base}[[dialplan]]\nnumber = \"600\"\naction = \"echo\"\n[[dialplan]]\nnumber = \"600\"\naction = \"tone\"\n"
    );
    let err = Config::parse(&dup).unwrap_err().to_string();
    assert!(
        err.contains("line 7") && err.contains("duplicate number"),
        "{err}"
    );
    let odd = format!("{base}[rtp]\nport_min = 20001\n");
    assert!(Config::parse(&odd).is_err());
    let nopw = format!("{base}[[accounts]]\nusername = \"x\"\nkind = \"phone\"\n");
    assert!(Config::parse(&nopw).is_err());
    let action = format!("{base}[[dialplan]]\nnumber = \"1\"\naction = \"dance\"\n");
    let err = Config::parse(&action).unwrap_err().to_string();
    assert!(err.contains("line 5"), "{err}");
    let prompt = format!(
        "{base}[[dialplan]]\nnumber = \"602\"\naction = \"play\"\nfile = \"/nonexistent.wav\"\n"
    );
    let err = Config::parse(&prompt).unwrap_err().to_string();
    assert!(
        err.contains("line 4") && err.contains("cannot read prompt"),
        "{err}"
    );
}

#[test]
fn trunk_by_ip() {
    let text = "[sip]\nlisten = \"127.0.0.1:5060\"\n[[accounts]]\nusername = \"carrier\"\nkind = \"trunk\"\nallowed_ips = [\"192.0.2.0/24\"]\n";
    let c = Config::parse(text).unwrap();
    assert!(c.trunk_for_ip("192.0.2.9".parse().unwrap()).is_some());
    assert!(c.trunk_for_ip("198.51.100.1".parse().unwrap()).is_none());
}

#[test]
fn each_family_gets_its_own_advertised_address() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let parse = |extra: &str| Config::parse(&format!("[sip]\n{extra}")).unwrap();
    // Dual stack: [::] serves both families; configured addresses per family win.
    let dual = parse(
        "listen = \"[::]:5060\"\n[rtp]\nadvertised_address = \"203.0.113.5\"\n\
         advertised_address_v6 = \"2001:db8::5\"\n",
    );
    let a = dual.advertised_addresses();
    assert_eq!(a.for_peer(ip("198.51.100.1")), ip("203.0.113.5"));
    assert_eq!(a.for_peer(ip("::ffff:198.51.100.1")), ip("203.0.113.5"));
    assert_eq!(a.for_peer(ip("2001:db8::77")), ip("2001:db8::5"));
    // IPv4 peers' media binds to 0.0.0.0 on a dual-stack listener, IPv6 peers' to [::].
    assert_eq!(dual.rtp_bind_address(ip("198.51.100.1")), ip("0.0.0.0"));
    assert_eq!(dual.rtp_bind_address(ip("2001:db8::77")), ip("::"));
    // A specific IPv6 listener advertises itself; it has no IPv4 address to offer.
    let v6 = parse("listen = \"[2001:db8::1]:5060\"\n").advertised_addresses();
    assert_eq!(v6.v4, None);
    assert_eq!(v6.for_peer(ip("2001:db8::77")), ip("2001:db8::1"));
    // An IPv4-only listener keeps answering with its IPv4 address.
    let v4 = parse("listen = \"192.0.2.7:5060\"\n").advertised_addresses();
    assert_eq!(v4.for_peer(ip("2001:db8::77")), ip("192.0.2.7"));
    assert_eq!(v4.for_peer(ip("198.51.100.1")), ip("192.0.2.7"));
}
