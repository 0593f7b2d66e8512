//! What an analytics service sends back over the fork's WebSocket, in each protocol mode
//! (`siphon_fork::protocol::Codec::decode` for native, twilio and audio_fork), text and
//! binary frames, and what the connection does with the result: audio and commands go into
//! the `PlaybackQueue`, which the call's pacer drains.
//!
//! Input (encoding in `siphon_fuzz::Reader`): config: u8 (bits 0-1 mode: native, twilio,
//! audio_fork; bits 2-3 tracks: inbound, outbound, both; bit 4 mono mix; bits 5-6 encoding:
//! L16, PCMU, PCMA; bit 7: 8 kHz rather than 16 kHz), then messages until the input ends,
//! each binary: bool, payload: bytes (text frames are the payload as lossy UTF-8).
//!
//! Checked: nothing panics; only recoverable errors are non-fatal (`UnknownEvent`,
//! `UnsupportedAudio`); a close reason fits a control frame; decoded audio is a whole number
//! of samples in a format Siphon plays (8/16 kHz mono); the playback queue hands out audio
//! pieces of at most 20 ms.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use siphon_fork::ServiceCommand;
use siphon_fork::config::{CallMeta, Encoding, ForkConfig, Mix, Mode, Tracks};
use siphon_fork::playback::PlaybackQueue;
use siphon_fork::protocol::{Codec, Incoming, ProtocolError, StreamInfo};
use siphon_fuzz::Reader;

fn codec(selector: u8) -> Codec {
    let mode = match selector & 3 {
        0 | 3 => Mode::Native,
        1 => Mode::Twilio,
        _ => Mode::AudioFork,
    };
    let mut config = ForkConfig::new("ws://127.0.0.1:9/fork", mode);
    config.tracks = match selector >> 2 & 3 {
        0 | 3 => Tracks::Inbound,
        1 => Tracks::Outbound,
        _ => Tracks::Both,
    };
    config.mix = if selector & 0x10 != 0 {
        Mix::Mono
    } else {
        Mix::Stereo
    };
    config.encoding = match selector >> 5 & 3 {
        1 => Encoding::Pcmu,
        2 => Encoding::Pcma,
        _ => Encoding::L16,
    };
    config.sample_rate = if selector & 0x80 != 0 { 8000 } else { 16000 };
    config.max_message_bytes = 64 * 1024;
    config
        .validate()
        .expect("the fuzz configurations are valid ones");
    let meta = CallMeta {
        call_id: "a84b4c76e66710@pc33.atlanta.example.com".into(),
        from: "sip:alice@atlanta.example.com".into(),
        to: "sip:bob@biloxi.example.com".into(),
        codec: "PCMU".into(),
        account_sid: Some("AC0123".into()),
    };
    Codec::new(mode, StreamInfo::new("MZfuzz".into(), &config, meta))
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut codec = codec(r.u8());
    let mut out = Vec::new();
    codec.on_connect(false, &mut out);
    let mut queue = PlaybackQueue::new(2_000_000);
    let mut messages = 0;
    while !r.is_empty() && messages < 64 {
        messages += 1;
        let binary = r.bool();
        let payload = r.bytes();
        let result = if binary {
            codec.decode(Incoming::Binary(&Bytes::copy_from_slice(payload)))
        } else {
            codec.decode(Incoming::Text(&String::from_utf8_lossy(payload)))
        };
        match result {
            Ok(Some(cmd)) => {
                if let ServiceCommand::Audio { format, data } = &cmd {
                    assert_eq!(format.channels, 1, "service audio is mono");
                    assert!(
                        matches!(format.sample_rate, 8000 | 16000),
                        "{} Hz reached playback",
                        format.sample_rate
                    );
                    assert_eq!(data.len() % format.encoding.bytes_per_sample(), 0);
                    assert!(!data.is_empty());
                }
                match cmd {
                    ServiceCommand::Audio { format, data } => {
                        let _ = queue.push_audio(format, data);
                    }
                    ServiceCommand::Clear => {
                        let _ = queue.clear();
                    }
                    other => {
                        let _ = queue.push_command(other);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                if !e.is_fatal() {
                    assert!(matches!(
                        e,
                        ProtocolError::UnknownEvent(_) | ProtocolError::UnsupportedAudio(_)
                    ));
                }
                let _ = e.close_code();
                assert!(e.close_reason().len() <= 123);
            }
        }
        // The pacer takes one piece per 20 ms tick.
        if messages % 2 == 0
            && let Some(ServiceCommand::Audio { format, data }) = queue.pop()
        {
            assert!(
                data.len() <= format.frame_bytes(),
                "piece longer than 20 ms"
            );
        }
    }
    while let Some(cmd) = queue.pop() {
        if let ServiceCommand::Audio { format, data } = cmd {
            assert!(
                data.len() <= format.frame_bytes(),
                "piece longer than 20 ms"
            );
        }
    }
    assert!(queue.is_empty());
    let _ = codec.mark("m", false);
    let _ = codec.stop("fuzz", &Default::default());
});
