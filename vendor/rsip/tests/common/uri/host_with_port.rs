use rsip::common::uri::{host_with_port::Tokenizer, Host, HostWithPort};
use std::convert::TryInto;

mod display {
    use super::*;

    #[test]
    fn display1() {
        assert_eq!(
            HostWithPort {
                host: Host::Domain("server2.com".into()),
                port: None
            }
            .to_string(),
            String::from("server2.com")
        );
    }

    #[test]
    fn display2() {
        assert_eq!(
            HostWithPort {
                host: Host::Domain("server2.com".into()),
                port: Some(5060.into())
            }
            .to_string(),
            String::from("server2.com:5060")
        );
    }
}

mod parser {
    use super::*;

    #[test]
    fn parser1() {
        assert_eq!(
            Tokenizer::from(("server2.com".as_bytes(), None)).try_into(),
            Ok(HostWithPort {
                host: Host::Domain("server2.com".into()),
                port: None
            })
        );
    }

    #[test]
    fn parser2() {
        assert_eq!(
            Tokenizer::from(("server2.com".as_bytes(), Some("5060".as_bytes()))).try_into(),
            Ok(HostWithPort {
                host: Host::Domain("server2.com".into()),
                port: Some(5060.into())
            })
        );
    }
}

mod tokenizer {
    use super::*;

    #[test]
    fn tokenizer1_u8() {
        assert_eq!(
            Tokenizer::tokenize("server2.com something".as_bytes()),
            Ok((
                " something".as_bytes(),
                ("server2.com".as_bytes(), None).into()
            )),
        );
    }

    #[test]
    fn tokenizer1_str() {
        assert_eq!(
            Tokenizer::tokenize("server2.com something"),
            Ok((" something", ("server2.com", None).into())),
        );
    }

    #[test]
    fn tokenizer2_u8() {
        assert_eq!(
            Tokenizer::tokenize("server2.com:5060 something".as_bytes()),
            Ok((
                " something".as_bytes(),
                ("server2.com".as_bytes(), Some("5060".as_bytes())).into()
            )),
        );
    }

    #[test]
    fn errors1() {
        assert_eq!(
            Tokenizer::tokenize(";".as_bytes()),
            Err(nom::Err::Error(rsip::TokenizerError::from(
                "failed to tokenize host with port: ;"
            ))),
        );
    }
}

// IPv6 references (RFC 3261 §25.1, RFC 5954): added by Siphon's patch (PATCHES.md).
mod ipv6 {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};

    fn v6(s: &str) -> Host {
        Host::IpAddr(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()))
    }

    #[test]
    fn tokenizes_reference_with_port() {
        assert_eq!(
            Tokenizer::tokenize("[2001:db8::1]:5062;transport=udp".as_bytes()),
            Ok((
                ";transport=udp".as_bytes(),
                ("2001:db8::1".as_bytes(), Some("5062".as_bytes())).into()
            )),
        );
    }

    #[test]
    fn tokenizes_reference_without_port() {
        assert_eq!(
            Tokenizer::tokenize("[::1] rest".as_bytes()),
            Ok((" rest".as_bytes(), ("::1".as_bytes(), None).into())),
        );
    }

    #[test]
    fn rejects_garbage_after_the_bracket() {
        assert!(Tokenizer::tokenize("[::1]x5060".as_bytes()).is_err());
    }

    #[test]
    fn parses_and_displays_with_brackets() {
        let parsed: HostWithPort = "[::1]:15062".try_into().unwrap();
        assert_eq!(parsed, HostWithPort { host: v6("::1"), port: Some(15062.into()) });
        assert_eq!(parsed.to_string(), "[::1]:15062");
        let no_port: HostWithPort = "[2001:db8::7]".try_into().unwrap();
        assert_eq!(no_port, HostWithPort { host: v6("2001:db8::7"), port: None });
        assert_eq!(no_port.to_string(), "[2001:db8::7]");
        assert!(TryInto::<HostWithPort>::try_into("[::1").is_err());
    }

    #[test]
    fn sip_uri_round_trips() {
        let uri: rsip::Uri = "sip:1001@[2001:db8::1]:5060;lr".try_into().unwrap();
        assert_eq!(uri.host_with_port.host, v6("2001:db8::1"));
        assert_eq!(uri.host_with_port.port, Some(5060.into()));
        assert_eq!(uri.to_string(), "sip:1001@[2001:db8::1]:5060;lr");
        let bare: rsip::Uri = "sip:[::1]".try_into().unwrap();
        assert_eq!(bare.to_string(), "sip:[::1]");
    }

    #[test]
    fn via_with_ipv6_sent_by_and_received() {
        use rsip::headers::{typed::Via, ToTypedHeader, UntypedHeader};
        let via: Via = rsip::headers::Via::new(
            "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK1;received=[2001:db8::99];rport=5071",
        )
        .typed()
        .unwrap();
        assert_eq!(via.uri.host_with_port.host, v6("2001:db8::9"));
        assert_eq!(via.uri.host_with_port.port, Some(5070.into()));
        assert_eq!(via.received(), Ok(Some("2001:db8::99".parse().unwrap())));
        assert!(via.to_string().contains("[2001:db8::9]:5070"));
    }
}

mod ipv6_params {
    use rsip::headers::{typed::Via, ToTypedHeader, UntypedHeader};

    #[test]
    fn unbracketed_received_is_one_value() {
        // RFC 3261: via-received = IPv4address / IPv6address (no brackets).
        let via: Via = rsip::headers::Via::new("SIP/2.0/UDP [::1]:5070;received=::1;rport=5071;branch=z9hG4bK2")
            .typed()
            .unwrap();
        assert_eq!(via.received(), Ok(Some("::1".parse().unwrap())));
        assert_eq!(via.branch().map(|b| b.to_string()), Some("z9hG4bK2".to_string()));
    }
}
