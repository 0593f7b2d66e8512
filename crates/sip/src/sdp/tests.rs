#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

const OUR_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

fn local() -> LocalMedia {
    LocalMedia::new(OUR_IP, 40000)
}

fn session() -> LocalSession {
    LocalSession::new(1_000, OUR_IP)
}

fn parse(text: &str) -> SessionDescription {
    match SessionDescription::parse(text) {
        Ok(sd) => sd,
        Err(e) => panic!("parse failed: {e}\n{text}"),
    }
}

fn answer(text: &str) -> Negotiated {
    session().answer(&parse(text), &local()).unwrap()
}

fn answer_err(text: &str) -> SdpError {
    session().answer(&parse(text), &local()).unwrap_err()
}

fn malformed_line(text: &str) -> usize {
    match SessionDescription::parse(text) {
        Err(SdpError::Malformed { line, .. }) => line,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// Asserts the serialised form is CRLF-only and parses back to the same value.
fn assert_round_trips(sd: &SessionDescription) {
    let text = sd.to_string();
    assert!(text.ends_with("\r\n"), "{text:?}");
    assert!(
        !text.replace("\r\n", "").contains(['\r', '\n']),
        "bare CR/LF in {text:?}"
    );
    assert_eq!(&parse(&text), sd, "round trip of\n{text}");
}

/// SIPp's built-in `uac` scenario body, with its keywords substituted.
const SIPP_UAC: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A Linphone/baresip-style offer: opus first, then G722, PCMU, PCMA, DTMF.
const LINPHONE: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 192.168.1.20\r\n\
s=Talk\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
m=audio 7078 RTP/AVP 96 9 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=rtcp-fb:* trr-int 1000\r\n\
a=rtcp-fb:* ccm tmmbr\r\n";

fn audio_offer(formats: &str, attrs: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
         m=audio 5004 RTP/AVP {formats}\r\n{attrs}"
    )
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_sipp_uac_offer() {
    let sd = parse(SIPP_UAC);
    assert_eq!(
        sd.origin,
        Origin {
            username: "user1".into(),
            session_id: 53655765,
            session_version: 2353687637,
            address: "127.0.0.1".into(),
        }
    );
    assert_eq!(sd.session_name, "-");
    assert_eq!(sd.connection, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(sd.media.len(), 1);
    let m = &sd.media[0];
    assert_eq!(
        (m.kind.as_str(), m.port, m.protocol.as_str()),
        ("audio", 6000, "RTP/AVP")
    );
    assert_eq!(m.formats, vec!["0"]);
    assert_eq!(
        m.rtpmaps,
        vec![RtpMap {
            payload_type: 0,
            encoding: "PCMU".into(),
            clock_rate: 8000,
            channels: None
        }]
    );
    assert_eq!(m.codec_for(0), Some(Codec::Pcmu));
    assert_round_trips(&sd);
}

#[test]
fn parses_linphone_offer_keeping_unknown_attributes() {
    let sd = parse(LINPHONE);
    assert_eq!(sd.attributes.len(), 1);
    assert_eq!(sd.attributes[0].name, "rtcp-xr");
    let m = &sd.media[0];
    assert_eq!(
        m.payload_types().collect::<Vec<_>>(),
        vec![96, 9, 0, 8, 101]
    );
    assert_eq!(m.rtpmap(96).unwrap().channels, Some(2));
    assert_eq!(m.format_parameters(101), Some("0-16"));
    assert_eq!(m.format_parameters(96), Some("useinbandfec=1"));
    assert_eq!(m.ptime, Some(20));
    assert_eq!(
        m.attributes,
        vec![
            Attribute {
                name: "rtcp-fb".into(),
                value: Some("* trr-int 1000".into())
            },
            Attribute {
                name: "rtcp-fb".into(),
                value: Some("* ccm tmmbr".into())
            },
        ]
    );
    assert_eq!(m.codec_for(96), None);
    assert_eq!(m.codec_for(8), Some(Codec::Pcma));
    assert_round_trips(&sd);
}

#[test]
fn accepts_lf_only_line_endings_blank_lines_and_bom() {
    let lf = format!("\u{feff}{}\n\n", SIPP_UAC.replace("\r\n", "\n"));
    assert_eq!(parse(&lf), parse(SIPP_UAC));
}

#[test]
fn tolerates_missing_s_and_t_and_odd_whitespace() {
    let sd = parse(
        "v=0\no=-   7  9 IN IP4 10.0.0.1\nc=IN IP4 10.0.0.1 \nm=audio  5000  RTP/AVP  0  8\n",
    );
    assert_eq!(sd.session_name, "");
    assert_eq!(sd.origin.session_id, 7);
    assert_eq!(sd.media[0].formats, vec!["0", "8"]);
    assert!(sd.to_string().contains("\r\nt=0 0\r\n"));
    assert_round_trips(&sd);
}

#[test]
fn skips_unknown_lines_and_misplaced_lines() {
    let sd = parse(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nx=unknown type\r\nv=0\r\nc=IN IP4 10.0.0.1\r\n\
         b=AS:64\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\ns=misplaced\r\nt=1 2\r\nb=TIAS:64000\r\n\
         a=silenceSupp:off - - - -\r\na=\r\n",
    );
    assert_eq!(sd.session_name, "x");
    assert_eq!(
        sd.other_lines,
        vec![
            RawLine {
                kind: 'b',
                value: "AS:64".into()
            },
            RawLine {
                kind: 't',
                value: "0 0".into()
            },
        ]
    );
    let m = &sd.media[0];
    assert_eq!(
        m.other_lines,
        vec![RawLine {
            kind: 'b',
            value: "TIAS:64000".into()
        }]
    );
    assert_eq!(m.attributes[0].name, "silenceSupp");
    assert!(!sd.to_string().contains("x=unknown"));
    assert_round_trips(&sd);
}

#[test]
fn unreadable_known_attributes_are_kept_not_fatal() {
    let sd = parse(&audio_offer(
        "0",
        "a=rtpmap:0 PCMU\r\na=rtpmap:300 X/8000\r\na=fmtp:abc x\r\na=ptime:twenty\r\n",
    ));
    let m = &sd.media[0];
    assert!(m.rtpmaps.is_empty());
    assert!(m.fmtp.is_empty());
    assert_eq!(m.ptime, None);
    assert_eq!(m.attributes.len(), 4);
    assert_round_trips(&sd);
}

#[test]
fn parses_port_count_ipv6_and_multicast_suffixes() {
    let sd = parse(
        "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nt=0 0\r\n\
         m=audio 5000/2 RTP/AVP 0\r\nc=IN IP6 2001:db8::2\r\n\
         m=video 0 RTP/AVP 31\r\nc=IN IP4 224.2.1.1/127/3\r\n",
    );
    assert_eq!(sd.media[0].port, 5000);
    assert_eq!(sd.media[0].port_count, Some(2));
    assert_eq!(sd.media[0].connection, Some("2001:db8::2".parse().unwrap()));
    assert_eq!(sd.media[1].connection, Some("224.2.1.1".parse().unwrap()));
    let text = sd.to_string();
    assert!(text.contains("o=- 1 1 IN IP6 2001:db8::1\r\n"));
    assert!(text.contains("m=audio 5000/2 RTP/AVP 0\r\nc=IN IP6 2001:db8::2\r\n"));
    assert_round_trips(&sd);
}

#[test]
fn media_level_connection_and_direction_win() {
    let sd = parse(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\n\
         m=audio 5000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\na=inactive\r\nm=audio 5002 RTP/AVP 0\r\n",
    );
    assert_eq!(sd.direction, Some(Direction::SendOnly));
    assert_eq!(
        sd.connection_for(&sd.media[0]),
        Some("10.0.0.2".parse().unwrap())
    );
    assert_eq!(sd.direction_for(&sd.media[0]), Direction::Inactive);
    assert_eq!(
        sd.connection_for(&sd.media[1]),
        Some("10.0.0.1".parse().unwrap())
    );
    assert_eq!(sd.direction_for(&sd.media[1]), Direction::SendOnly);
    assert_round_trips(&sd);
}

#[test]
fn oversized_origin_numbers_wrap_instead_of_failing() {
    let sd = parse(
        "v=0\r\no=- 123456789012345678901234 18446744073709551616 IN IP4 x.example\r\n\
         s=-\r\nt=0 0\r\n",
    );
    assert_eq!(sd.origin.session_version, 0); // 2^64 mod 2^64
    assert_eq!(sd.origin.address, "x.example");
    assert_round_trips(&sd);
}

#[test]
fn parse_bytes_replaces_invalid_utf8() {
    let mut body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=caf".to_vec();
    body.extend_from_slice(&[0xE9, 0xFF]);
    body.extend_from_slice(b"\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n");
    let sd = SessionDescription::parse_bytes(&body).unwrap();
    assert!(sd.session_name.starts_with("caf"));
    assert_eq!(sd.media.len(), 1);
}

// ---------------------------------------------------------------- malformed input

#[test]
fn empty_and_blank_bodies_are_malformed() {
    assert_eq!(malformed_line(""), 0);
    assert_eq!(malformed_line("\r\n\r\n  \n"), 0);
}

#[test]
fn body_must_start_with_v0() {
    assert_eq!(malformed_line("o=- 1 1 IN IP4 10.0.0.1\r\nv=0\r\n"), 1);
    assert_eq!(malformed_line("v=1\r\no=- 1 1 IN IP4 10.0.0.1\r\n"), 1);
    assert_eq!(malformed_line("INVITE sip:x SIP/2.0\r\n"), 1);
}

#[test]
fn missing_or_broken_origin_is_malformed() {
    assert_eq!(malformed_line("v=0\r\ns=-\r\nt=0 0\r\n"), 0);
    assert_eq!(malformed_line("v=0\r\no=- 1 1 IN IP4\r\n"), 2);
    assert_eq!(malformed_line("v=0\r\no=- one 1 IN IP4 10.0.0.1\r\n"), 2);
    assert_eq!(malformed_line("v=0\r\no=- 1 -1 IN IP4 10.0.0.1\r\n"), 2);
}

#[test]
fn garbage_is_malformed() {
    let bytes: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    let text = String::from_utf8_lossy(&bytes);
    assert!(matches!(
        SessionDescription::parse(&text),
        Err(SdpError::Malformed { .. })
    ));
    assert!(matches!(
        SessionDescription::parse_bytes(&bytes),
        Err(SdpError::Malformed { .. })
    ));
    // Non-ASCII type letters must be an error, not a char-boundary panic.
    assert_eq!(malformed_line("v=0\r\né=x\r\n"), 2);
    assert_eq!(
        malformed_line("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nno equals sign\r\n"),
        3
    );
    assert_eq!(malformed_line("v=0\r\nab=c\r\n"), 2);
    assert_eq!(malformed_line("v=0\r\ns=a\0b\r\n"), 2);
    assert_eq!(malformed_line("v=0\r\ns=a\rb\r\n"), 2);
}

#[test]
fn bad_media_lines_are_malformed() {
    let base = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n";
    for m in [
        "m=audio abc RTP/AVP 0",
        "m=audio 70000 RTP/AVP 0",
        "m=audio -1 RTP/AVP 0",
        "m=audio 5000/x RTP/AVP 0",
        "m=audio 5000 RTP/AVP",
        "m=audio",
    ] {
        assert_eq!(malformed_line(&format!("{base}{m}\r\n")), 6, "{m}");
    }
}

#[test]
fn bad_connection_lines_are_malformed() {
    let base = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n";
    assert_eq!(
        malformed_line(&format!("{base}c=IN IP4 pbx.example.com\r\n")),
        4
    );
    assert_eq!(malformed_line(&format!("{base}c=IN IP4\r\n")), 4);
    assert_eq!(malformed_line(&format!("{base}c=IN IP4 300.1.1.1\r\n")), 4);
}

#[test]
fn audio_without_any_connection_is_malformed() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 31\r\n\
                m=audio 5000 RTP/AVP 0\r\n";
    assert_eq!(malformed_line(text), 6);
    // A disabled audio stream needs no address.
    parse(&text.replace("audio 5000", "audio 0"));
}

#[test]
fn oversized_input_is_malformed() {
    let huge = format!("{SIPP_UAC}{}", "a=x\r\n".repeat(20_000));
    assert_eq!(malformed_line(&huge), 0);

    let long_line = format!("{SIPP_UAC}a=x:{}\r\n", "y".repeat(MAX_LINE_BYTES));
    assert_eq!(malformed_line(&long_line), 8);

    let many_lines = format!("{SIPP_UAC}{}", "a=x\r\n".repeat(MAX_LINES));
    assert_eq!(malformed_line(&many_lines), MAX_LINES + 1);

    let many_media = format!("{SIPP_UAC}{}", "m=video 0 RTP/AVP 31\r\n".repeat(MAX_MEDIA));
    assert_eq!(malformed_line(&many_media), 8 + MAX_MEDIA - 1);
}

#[test]
fn hostile_mutations_never_panic() {
    // Every truncation point (on char boundaries) of realistic bodies.
    for body in [SIPP_UAC, LINPHONE] {
        for (i, _) in body.char_indices() {
            let _ = SessionDescription::parse(&body[..i]);
        }
    }
    // Deterministic pseudo-random byte mutations, then parse and answer whatever parses.
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let specials = b"=:/ \r\n0123456789mcaov-\xff";
    let odd = "v=0\no=- 1 1 IN IP6 ::1\ns= \nb=AS:1\nt=0 0\nr=7d 1h 0 25h\na=sendonly\n\
               m=video 0/2 RTP/AVP 31\ni=x\nm=audio 1 RTP/SAVP 0\nc=IN IP4 0.0.0.0/1\n\
               a=crypto:1 x\na=fmtp:0\nm=audio 2 udp x y\nc=IN IP6 [::2]\n";
    for i in 0..6000 {
        let body = [SIPP_UAC, LINPHONE, odd][i % 3];
        let mut bytes = body.as_bytes().to_vec();
        for _ in 0..(next() % 8 + 1) {
            let pos = next() % bytes.len();
            match next() % 3 {
                0 => bytes[pos] = specials[next() % specials.len()],
                1 => {
                    bytes.remove(pos);
                }
                _ => bytes.insert(pos, specials[next() % specials.len()]),
            }
        }
        if let Ok(sd) = SessionDescription::parse_bytes(&bytes) {
            let _ = session().answer(&sd, &local());
            // Whatever we accept, we can re-emit and read back identically.
            assert_round_trips(&sd);
        }
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn status_codes() {
    let malformed = SdpError::Malformed {
        line: 3,
        reason: "x".into(),
    };
    assert_eq!(malformed.status_code(), 400);
    assert_eq!(malformed.to_string(), "malformed SDP (line 3): x");
    assert_eq!(SdpError::NotAcceptable("no".into()).status_code(), 488);
}

// ---------------------------------------------------------------- answering

#[test]
fn answers_sipp_uac_with_pcmu() {
    let n = answer(SIPP_UAC);
    assert_eq!(n.codec, Codec::Pcmu);
    assert_eq!(n.payload_type, 0);
    assert_eq!(n.telephone_event_pt, None);
    assert_eq!(n.remote_rtp, Some("127.0.0.1:6000".parse().unwrap()));
    assert_eq!(n.direction, Direction::SendRecv);
    assert_eq!(n.media_index, 0);
    assert_eq!(
        n.answer.to_string(),
        "v=0\r\n\
         o=- 1000 1000 IN IP4 203.0.113.10\r\n\
         s=-\r\n\
         c=IN IP4 203.0.113.10\r\n\
         t=0 0\r\n\
         m=audio 40000 RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=ptime:20\r\n\
         a=rtcp:40001\r\n\
         a=sendrecv\r\n"
    );
    assert!(!n.rtcp_mux);
    assert_eq!(n.remote_rtcp, None);
    assert_round_trips(&n.answer);
}

#[test]
fn answers_linphone_with_offerers_first_g711_and_dtmf() {
    let n = answer(LINPHONE);
    assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
    assert_eq!(n.telephone_event_pt, Some(101));
    assert_eq!(n.remote_ptime, Some(20));
    let text = n.answer.to_string();
    assert!(text.contains(
        "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=rtcp:40001\r\na=sendrecv\r\n"
    ));
    assert!(!text.contains("opus") && !text.contains("rtcp-") && !text.contains("xr"));
    assert_round_trips(&n.answer);
}

#[test]
fn offerer_preference_wins_over_ours() {
    // We prefer PCMU, the offerer lists PCMA first: PCMA it is (documented choice).
    let n = answer(&audio_offer("8 0", ""));
    assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
}

#[test]
fn pcma_only_offer_gets_pcma() {
    let n = answer(&audio_offer("8", "a=rtpmap:8 PCMA/8000\r\n"));
    assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
    assert!(
        n.answer
            .to_string()
            .contains("m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
    );
}

#[test]
fn codecs_we_dont_have_locally_are_skipped() {
    let mut only_pcma = local();
    only_pcma.codecs = vec![Codec::Pcma];
    let n = session()
        .answer(&parse(&audio_offer("0 8", "")), &only_pcma)
        .unwrap();
    assert_eq!(n.codec, Codec::Pcma);
}

#[test]
fn g729_only_is_not_acceptable() {
    let err = answer_err(&audio_offer(
        "18",
        "a=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n",
    ));
    assert_eq!(err.status_code(), 488);
    assert_eq!(
        err,
        SdpError::NotAcceptable("no common codec (we support PCMU, PCMA)".into())
    );
}

#[test]
fn no_audio_at_all_is_not_acceptable() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=video 5000 RTP/AVP 31\r\n";
    assert_eq!(
        answer_err(text),
        SdpError::NotAcceptable("no audio stream offered".into())
    );
    let disabled_audio = text.replace("video 5000 RTP/AVP 31", "audio 0 RTP/AVP 0");
    assert_eq!(answer_err(&disabled_audio).status_code(), 488);
    let no_media = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n";
    assert_eq!(answer_err(no_media).status_code(), 488);
}

#[test]
fn video_is_rejected_with_port_zero_keeping_formats() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=video 5002 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\na=rtpmap:97 VP8/90000\r\n\
                m=audio 5000 RTP/AVP 0 8\r\n";
    let n = answer(text);
    assert_eq!(n.media_index, 1);
    assert_eq!(n.remote_rtp, Some("10.0.0.1:5000".parse().unwrap()));
    let media = &n.answer.media;
    assert_eq!(media.len(), 2);
    assert_eq!(
        (
            media[0].kind.as_str(),
            media[0].port,
            media[0].formats.clone()
        ),
        ("video", 0, vec!["96".to_string(), "97".to_string()])
    );
    assert!(media[0].rtpmaps.is_empty() && media[0].direction.is_none());
    assert_eq!((media[1].kind.as_str(), media[1].port), ("audio", 40000));
    assert!(
        n.answer
            .to_string()
            .contains("m=video 0 RTP/AVP 96 97\r\nm=audio 40000")
    );
    assert_round_trips(&n.answer);
}

#[test]
fn first_usable_audio_stream_wins_and_others_are_rejected() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=audio 5000 RTP/AVP 18\r\nm=audio 5002 RTP/AVP 8\r\nm=audio 5004 RTP/AVP 0\r\n";
    let n = answer(text);
    assert_eq!((n.media_index, n.codec), (1, Codec::Pcma));
    let ports: Vec<u16> = n.answer.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, vec![0, 40000, 0]);
}

#[test]
fn non_rtp_audio_formats_are_kept_on_rejection() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=application 9 TCP/MRCPv2 speechsynth\r\nm=audio 5000 RTP/AVP 0\r\n";
    let n = answer(text);
    assert_eq!(n.answer.media[0].formats, vec!["speechsynth"]);
    assert!(
        n.answer
            .to_string()
            .contains("m=application 0 TCP/MRCPv2 speechsynth\r\n")
    );
}

#[test]
fn sendonly_hold_is_answered_recvonly() {
    let n = answer(&audio_offer("0", "a=sendonly\r\n"));
    assert_eq!(n.direction, Direction::RecvOnly);
    assert_eq!(n.remote_rtp, Some("198.51.100.7:5004".parse().unwrap()));
    assert!(n.answer.to_string().contains("a=recvonly\r\n"));
}

#[test]
fn recvonly_is_answered_sendonly() {
    assert_eq!(
        answer(&audio_offer("0", "a=recvonly\r\n")).direction,
        Direction::SendOnly
    );
}

#[test]
fn inactive_is_answered_inactive() {
    let n = answer(&audio_offer("0", "a=inactive\r\n"));
    assert_eq!(n.direction, Direction::Inactive);
    assert!(n.answer.to_string().contains("a=inactive\r\n"));
}

#[test]
fn session_level_direction_applies_unless_media_overrides() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\n\
                m=audio 5000 RTP/AVP 0\r\n";
    assert_eq!(answer(text).direction, Direction::RecvOnly);
    let overridden = format!("{text}a=sendrecv\r\n");
    assert_eq!(answer(&overridden).direction, Direction::SendRecv);
}

#[test]
fn rfc2543_hold_with_zero_address() {
    let held = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                m=audio 5000 RTP/AVP 0\r\n";
    let n = answer(held);
    assert_eq!(n.direction, Direction::RecvOnly);
    assert_eq!(n.remote_rtp, None);
    // Our answer still advertises our real address.
    assert_eq!(n.answer.connection, Some(OUR_IP));

    assert_eq!(
        answer(&format!("{held}a=inactive\r\n")).direction,
        Direction::Inactive
    );
    assert_eq!(
        answer(&format!("{held}a=recvonly\r\n")).direction,
        Direction::Inactive
    );
    // Media-level 0.0.0.0 overrides a real session address.
    let media_level = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                       m=audio 5000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n";
    assert_eq!(answer(media_level).remote_rtp, None);
}

#[test]
fn ipv6_offer() {
    let text = "v=0\r\no=- 1 1 IN IP6 2001:db8::7\r\ns=-\r\nc=IN IP6 2001:db8::7\r\nt=0 0\r\n\
                m=audio 5000 RTP/AVP 0\r\n";
    let n = answer(text);
    let addr: Ipv6Addr = "2001:db8::7".parse().unwrap();
    assert_eq!(n.remote_rtp, Some(SocketAddr::new(IpAddr::V6(addr), 5000)));

    let mut v6_local = local();
    v6_local.address = "2001:db8::10".parse().unwrap();
    let n = session().answer(&parse(text), &v6_local).unwrap();
    assert!(n.answer.to_string().contains("c=IN IP6 2001:db8::10\r\n"));
    assert_round_trips(&n.answer);
}

#[test]
fn dynamic_payload_type_mapped_to_pcmu() {
    let n = answer(&audio_offer(
        "98 100",
        "a=rtpmap:98 iLBC/8000\r\na=rtpmap:100 pcmu/8000\r\n",
    ));
    assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 100));
    assert!(
        n.answer
            .to_string()
            .contains("m=audio 40000 RTP/AVP 100\r\na=rtpmap:100 PCMU/8000\r\n")
    );
}

#[test]
fn static_payload_types_need_no_rtpmap_but_rtpmap_wins() {
    assert_eq!(answer(&audio_offer("8", "")).codec, Codec::Pcma);
    // PCMU at 16 kHz or in stereo isn't G.711 as we know it.
    let err = answer_err(&audio_offer(
        "96 97",
        "a=rtpmap:96 PCMU/16000\r\na=rtpmap:97 PCMA/8000/2\r\n",
    ));
    assert_eq!(err.status_code(), 488);
}

#[test]
fn telephone_event_needs_local_support_and_8khz() {
    let mut no_dtmf = local();
    no_dtmf.telephone_event = false;
    let n = session().answer(&parse(LINPHONE), &no_dtmf).unwrap();
    assert_eq!(n.telephone_event_pt, None);
    assert!(!n.answer.to_string().contains("telephone-event"));

    let n = answer(&audio_offer(
        "0 100 101",
        "a=rtpmap:100 telephone-event/48000\r\na=rtpmap:101 telephone-event/8000\r\n",
    ));
    // No fmtp offered → none answered (RFC 4733 default 0-15 applies).
    assert_eq!(n.telephone_event_pt, Some(101));
    assert!(!n.answer.to_string().contains("fmtp"));

    let n = answer(&audio_offer(
        "0 96",
        "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n",
    ));
    assert_eq!(n.telephone_event_pt, Some(96));
    assert!(n.answer.to_string().contains("a=fmtp:96 0-15\r\n"));
}

#[test]
fn srtp_is_rejected() {
    let savp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\n";
    let err = answer_err(savp);
    assert_eq!(
        err,
        SdpError::NotAcceptable("SRTP (RTP/SAVP) not supported".into())
    );
    assert_eq!(err.status_code(), 488);

    // Offered alongside plain RTP (the "best effort SRTP" pattern): SAVP stream gets port 0.
    let both = format!("{savp}m=audio 5002 RTP/AVP 0\r\n");
    let n = answer(&both);
    assert_eq!(n.media_index, 1);
    assert_eq!(n.answer.media[0].port, 0);
    assert_eq!(n.answer.media[0].protocol, "RTP/SAVP");
    assert!(n.answer.media[0].attributes.is_empty());
}

#[test]
fn avpf_is_accepted_and_echoed() {
    let text = SIPP_UAC.replace("RTP/AVP", "RTP/AVPF");
    let n = answer(&text);
    assert_eq!(n.answer.media[0].protocol, "RTP/AVPF");
    assert_eq!(n.answer.media[0].port, 40000);
}

#[test]
fn unknown_transport_is_not_acceptable() {
    let err = answer_err(&SIPP_UAC.replace("RTP/AVP", "UDP/BFCP"));
    assert_eq!(err.status_code(), 488);
}

// ---------------------------------------------------------------- versions

#[test]
fn session_version_moves_only_when_answer_changes() {
    let mut s = LocalSession::new(4242, OUR_IP);
    let l = local();
    let first = s.answer(&parse(SIPP_UAC), &l).unwrap().answer;
    assert_eq!(
        (first.origin.session_id, first.origin.session_version),
        (4242, 4242)
    );

    // A re-INVITE with the same offer (e.g. a session refresh): same answer, same version.
    let again = s.answer(&parse(SIPP_UAC), &l).unwrap().answer;
    assert_eq!(again, first);

    // Hold: our answer changes to recvonly → version + 1.
    let hold = s
        .answer(&parse(&format!("{SIPP_UAC}a=sendonly\r\n")), &l)
        .unwrap()
        .answer;
    assert_eq!(hold.origin.session_id, 4242);
    assert_eq!(hold.origin.session_version, 4243);

    // Resume: changes back → + 1 again (never back to an old number).
    let resume = s.answer(&parse(SIPP_UAC), &l).unwrap().answer;
    assert_eq!(resume.origin.session_version, 4244);
    assert_eq!(s.version(), 4244);

    // A failed negotiation leaves the state alone.
    assert!(s.answer(&parse(&audio_offer("18", "")), &l).is_err());
    let same = s.answer(&parse(SIPP_UAC), &l).unwrap().answer;
    assert_eq!(same.origin.session_version, 4244);

    // Our own media changing (new port) also counts.
    let mut moved = l.clone();
    moved.port = 40002;
    let moved = s.answer(&parse(SIPP_UAC), &moved).unwrap().answer;
    assert_eq!(moved.origin.session_version, 4245);
}

#[test]
fn version_wraps_instead_of_overflowing() {
    let mut s = LocalSession::new(u64::MAX, OUR_IP);
    s.answer(&parse(SIPP_UAC), &local()).unwrap();
    let n = s
        .answer(&parse(&format!("{SIPP_UAC}a=sendonly\r\n")), &local())
        .unwrap();
    assert_eq!(n.answer.origin.session_version, 0);
}

// ---------------------------------------------------------------- offering

#[test]
fn builds_initial_offer() {
    let mut s = session();
    let offer = s.offer(&local(), Direction::SendRecv);
    assert_eq!(
        offer.to_string(),
        "v=0\r\n\
         o=- 1000 1000 IN IP4 203.0.113.10\r\n\
         s=-\r\n\
         c=IN IP4 203.0.113.10\r\n\
         t=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=ptime:20\r\n\
         a=rtcp:40001\r\n\
         a=rtcp-mux\r\n\
         a=sendrecv\r\n"
    );
    assert_round_trips(&offer);

    // Our offer is answerable by our own answerer (loopback sanity check).
    let n = LocalSession::new(7, OUR_IP)
        .answer(&offer, &local())
        .unwrap();
    assert_eq!((n.codec, n.telephone_event_pt), (Codec::Pcmu, Some(101)));

    // Re-offer for hold bumps the version; duplicates in the codec list are ignored.
    let mut l = local();
    l.codecs = vec![Codec::Pcma, Codec::Pcma];
    l.telephone_event = false;
    let hold = s.offer(&l, Direction::SendOnly);
    assert_eq!(hold.origin.session_version, 1001);
    assert!(hold.to_string().contains("m=audio 40000 RTP/AVP 8\r\n"));
    assert!(hold.to_string().contains("a=sendonly\r\n"));
}

/// An answer listing several codecs (RFC 3264 §6.1: its answerer may send any of them):
/// the first is the one to send, every other one of ours is also to be received, each under
/// its own PT (a dynamic PT mapped to PCMU included); codecs we lack are left out.
#[test]
fn every_codec_of_ours_the_stream_lists_is_also_received() {
    let n = answer(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 8 9 0 96 101\r\na=rtpmap:96 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n",
    );
    assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
    assert_eq!(n.also_receive, [(Codec::Pcmu, 0), (Codec::Pcmu, 96)]);
    assert!(answer(SIPP_UAC).also_receive.is_empty());
}

// ---------------------------------------------------------------- RTCP attributes

#[test]
fn rtcp_mux_offered_is_accepted_with_rtcp_on_the_rtp_port() {
    let n = answer(&audio_offer("0", "a=rtcp-mux\r\na=rtcp:6001\r\n"));
    assert!(n.rtcp_mux);
    assert_eq!(n.remote_rtcp, Some("198.51.100.7:6001".parse().unwrap()));
    let text = n.answer.to_string();
    assert!(text.contains("a=rtcp:40000\r\na=rtcp-mux\r\n"), "{text}");
    assert_round_trips(&n.answer);
}

#[test]
fn an_answer_with_rtcp_mux_is_read_as_multiplexed() {
    let mut s = session();
    let offer = s.offer(&local(), Direction::SendRecv);
    assert!(has_rtcp_mux(&offer.media[0]));
    let n = s
        .answer(&parse(&audio_offer("0", "a=rtcp-mux\r\n")), &local())
        .unwrap();
    assert!(n.rtcp_mux);
    let n = s.answer(&parse(&audio_offer("0", "")), &local()).unwrap();
    assert!(!n.rtcp_mux);
    assert!(!n.answer.to_string().contains("rtcp-mux"));
}

#[test]
fn peers_rtcp_port_and_address_are_honoured_and_bad_ones_ignored() {
    let n = answer(&audio_offer("0", "a=rtcp:53020 IN IP4 192.0.2.9\r\n"));
    assert_eq!(n.remote_rtcp, Some("192.0.2.9:53020".parse().unwrap()));
    for bad in [
        "a=rtcp:0\r\n",
        "a=rtcp:70000\r\n",
        "a=rtcp:x\r\n",
        "a=rtcp\r\n",
        "a=rtcp:\r\n",
        "a=rtcp:5 IN IP4 nowhere\r\n",
    ] {
        let n = answer(&audio_offer("0", bad));
        assert_eq!(n.remote_rtcp, None, "{bad:?}");
        assert_eq!(n.remote_rtp, Some("198.51.100.7:5004".parse().unwrap()));
    }
}

#[test]
fn hold_with_rtcp_attribute_has_no_rtcp_destination() {
    let text =
        audio_offer("0", "a=rtcp:6001\r\n").replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0");
    let n = answer(&text);
    assert_eq!((n.remote_rtp, n.remote_rtcp), (None, None));
}
