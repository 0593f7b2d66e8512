//! Siphon's native protocol (`mode = "native"`). See docs/fork-protocols.md.
//!
//! Siphon → service: a JSON `start` text frame, then one binary frame per 20 ms of audio in
//! the announced format, JSON `dtmf` and `mark` events, and a final JSON `stop` with the
//! reason and counters.
//!
//! Service → Siphon: binary frames of audio to play (same encoding and rate, one channel),
//! and JSON `mark`, `clear`, `hangup` and `dtmf` commands.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Incoming, ProtocolError, ServiceCommand, StopCounters, StreamInfo, WireMsg, check_digits,
    check_mark_name, parse_json, to_json,
};
use crate::config::{AudioFormat, FRAME_MS};

/// Value of `start.protocol`.
pub const PROTOCOL: &str = "siphon";
/// Value of `start.version`.
pub const VERSION: u32 = 1;

/// Messages Siphon sends, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ToService {
    /// First message of every connection.
    Start(Box<Start>),
    /// The caller pressed a key.
    Dtmf(Dtmf),
    /// Playback reached (or a clear dropped) a mark the service sent.
    Mark(MarkEcho),
    /// The call is being transferred (issue 17): where to and how it went.
    Transfer(TransferEvent),
    /// Last message of the stream.
    Stop(Stop),
}

/// The `transfer` event: the call's caller is being handed to `target`; `status` is
/// `trying`, `answered` (the caller talks to the target now; this stream goes on, the
/// target's audio where the service's playback was) or `failed` (with `reason`; the call
/// stays with the service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferEvent {
    /// Where to, as the transfer named it (`user:1002`).
    pub target: String,
    /// `trying`, `answered` or `failed`.
    pub status: String,
    /// Why it failed (`486 busy`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// The `start` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// Always `"siphon"`.
    pub protocol: String,
    /// Protocol version, 1.
    pub version: u32,
    /// Unique id of this fork; the same on every reconnection.
    pub stream_id: String,
    /// False on the first connection, true after a reconnect.
    pub resumed: bool,
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// The call's codec (`PCMU`/`PCMA`), not the fork's encoding.
    pub codec: String,
    /// Account, if the call has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    /// Format of the binary frames.
    pub media_format: MediaFormat,
    /// Tracks in channel order (`inbound`, `outbound`).
    pub tracks: Vec<String>,
    /// `mono`, `stereo` or `mixed`.
    pub mix: String,
    /// Milliseconds of audio per binary frame.
    pub frame_ms: u32,
    /// From the fork's configuration.
    pub custom_parameters: BTreeMap<String, String>,
}

/// Audio format description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `pcmu`, `pcma` or `pcm_s16le`.
    pub encoding: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u8,
}

/// The `dtmf` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dtmf {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: String,
    /// Length of the key press.
    pub duration_ms: u32,
}

/// The `mark` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkEcho {
    /// The name the service gave.
    pub name: String,
    /// `played` or `cleared`.
    pub status: String,
}

/// The `stop` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// Why the fork ended (e.g. `hangup`).
    pub reason: String,
    /// Audio frames delivered.
    pub frames_sent: u64,
    /// Audio frames lost, all causes.
    pub frames_dropped: u64,
    /// Lost because Siphon's fork queue was full.
    pub frames_dropped_queue_full: u64,
    /// Lost while disconnected.
    pub frames_dropped_disconnected: u64,
    /// Lost because the service read too slowly.
    pub frames_dropped_slow: u64,
    /// Reconnections during the stream.
    pub reconnects: u64,
}

/// Commands the service sends (all fields optional at parse time; checked per event).
#[derive(Debug, Deserialize)]
struct FromService<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    digits: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    to: Option<Cow<'a, str>>,
}

/// Longest transfer target accepted from a service.
const MAX_TRANSFER_TARGET: usize = 256;

/// The native codec.
#[derive(Debug)]
pub struct NativeCodec {
    info: StreamInfo,
}

impl NativeCodec {
    /// A codec for the stream.
    pub fn new(info: StreamInfo) -> Self {
        NativeCodec { info }
    }

    /// The `start` message.
    pub fn start(&self, resumed: bool) -> WireMsg {
        let i = &self.info;
        let msg = ToService::Start(Box::new(Start {
            protocol: PROTOCOL.to_string(),
            version: VERSION,
            stream_id: i.stream_id.clone(),
            resumed,
            call_id: i.meta.call_id.clone(),
            from: i.meta.from.clone(),
            to: i.meta.to.clone(),
            codec: i.meta.codec.clone(),
            account_sid: i.meta.account_sid.clone(),
            media_format: MediaFormat {
                encoding: i.format.encoding.native_name().to_string(),
                sample_rate: i.format.sample_rate,
                channels: i.format.channels,
            },
            tracks: i.track_names().iter().map(|t| t.to_string()).collect(),
            mix: i.mix_type().to_string(),
            frame_ms: FRAME_MS,
            custom_parameters: i.custom_parameters.clone(),
        }));
        WireMsg::Text(to_json(&msg))
    }

    /// A `dtmf` event.
    pub fn dtmf(&self, digit: char, duration_ms: u32) -> WireMsg {
        WireMsg::Text(to_json(&ToService::Dtmf(Dtmf {
            digit: digit.to_string(),
            duration_ms,
        })))
    }

    /// A `transfer` event.
    pub fn transfer(&self, target: &str, status: &str, reason: Option<&str>) -> WireMsg {
        WireMsg::Text(to_json(&ToService::Transfer(TransferEvent {
            target: target.to_string(),
            status: status.to_string(),
            reason: reason.map(str::to_string),
        })))
    }

    /// A `mark` event.
    pub fn mark(&self, name: &str, cleared: bool) -> WireMsg {
        WireMsg::Text(to_json(&ToService::Mark(MarkEcho {
            name: name.to_string(),
            status: if cleared { "cleared" } else { "played" }.to_string(),
        })))
    }

    /// The `stop` event.
    pub fn stop(&self, reason: &str, c: &StopCounters) -> WireMsg {
        WireMsg::Text(to_json(&ToService::Stop(Stop {
            reason: reason.to_string(),
            frames_sent: c.frames_sent,
            frames_dropped: c.frames_dropped,
            frames_dropped_queue_full: c.dropped_queue_full,
            frames_dropped_disconnected: c.dropped_disconnected,
            frames_dropped_slow: c.dropped_slow,
            reconnects: c.reconnects,
        })))
    }

    /// Interprets a message from the service.
    pub fn decode(&self, msg: Incoming<'_>) -> Result<Option<ServiceCommand>, ProtocolError> {
        self.info.check_size(&msg)?;
        match msg {
            Incoming::Binary(data) => {
                if data.is_empty() {
                    return Ok(None);
                }
                let format = AudioFormat {
                    channels: 1,
                    ..self.info.format
                };
                if !data
                    .len()
                    .is_multiple_of(format.encoding.bytes_per_sample())
                {
                    return Err(ProtocolError::InvalidAudio(format!(
                        "{} bytes is not a whole number of 16-bit samples",
                        data.len()
                    )));
                }
                Ok(Some(ServiceCommand::Audio {
                    format,
                    data: data.clone(),
                }))
            }
            Incoming::Text(text) => {
                let m: FromService<'_> = parse_json(text)?;
                match m.event.as_ref() {
                    "mark" => {
                        let name = m.name.ok_or(ProtocolError::MissingField("name"))?;
                        check_mark_name(&name)?;
                        Ok(Some(ServiceCommand::Mark(name.into_owned())))
                    }
                    "clear" => Ok(Some(ServiceCommand::Clear)),
                    "hangup" => Ok(Some(ServiceCommand::Hangup)),
                    "dtmf" => {
                        let digits = m.digits.ok_or(ProtocolError::MissingField("digits"))?;
                        check_digits(&digits)?;
                        Ok(Some(ServiceCommand::Dtmf(digits.to_ascii_uppercase())))
                    }
                    "transfer" => {
                        let to = m.to.ok_or(ProtocolError::MissingField("to"))?;
                        let to = to.trim();
                        if to.is_empty()
                            || to.len() > MAX_TRANSFER_TARGET
                            || !to.chars().all(|c| c.is_ascii_graphic())
                        {
                            return Err(ProtocolError::MissingField("to"));
                        }
                        Ok(Some(ServiceCommand::Transfer(to.to_string())))
                    }
                    other => Err(ProtocolError::UnknownEvent(other.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{CallMeta, Encoding, ForkConfig, Mode, Tracks};
    use bytes::Bytes;

    fn codec(tracks: Tracks) -> NativeCodec {
        let mut cfg = ForkConfig::new("ws://x", Mode::Native);
        cfg.encoding = Encoding::L16;
        cfg.sample_rate = 16000;
        cfg.tracks = tracks;
        cfg.custom_parameters.insert("lang".into(), "en-US".into());
        let meta = CallMeta {
            call_id: "abc@host".into(),
            from: "sip:1001@example.com".into(),
            to: "sip:700@example.com".into(),
            codec: "PCMU".into(),
            account_sid: None,
        };
        NativeCodec::new(StreamInfo::new("MZ0123".into(), &cfg, meta))
    }

    fn text(m: WireMsg) -> String {
        match m {
            WireMsg::Text(s) => s,
            WireMsg::Binary(_) => String::from("<binary>"),
        }
    }

    #[test]
    fn start_is_exact() {
        assert_eq!(
            text(codec(Tracks::Both).start(false)),
            r#"{"event":"start","protocol":"siphon","version":1,"streamId":"MZ0123","resumed":false,"callId":"abc@host","from":"sip:1001@example.com","to":"sip:700@example.com","codec":"PCMU","mediaFormat":{"encoding":"pcm_s16le","sampleRate":16000,"channels":2},"tracks":["inbound","outbound"],"mix":"stereo","frameMs":20,"customParameters":{"lang":"en-US"}}"#
        );
        let s = text(codec(Tracks::Inbound).start(true));
        assert!(s.contains(r#""resumed":true"#));
        assert!(s.contains(r#""tracks":["inbound"],"mix":"mono""#));
        assert!(s.contains(r#""channels":1"#));
        // It round-trips through the public type.
        let parsed: ToService = serde_json::from_str(&s).unwrap();
        assert!(
            matches!(parsed, ToService::Start(ref st) if st.resumed && st.account_sid.is_none())
        );
    }

    #[test]
    fn transfer_command_parses() {
        let c = codec(Tracks::Both);
        assert_eq!(
            c.decode(Incoming::Text(r#"{"event":"transfer","to":"user:1003"}"#))
                .unwrap(),
            Some(ServiceCommand::Transfer("user:1003".into()))
        );
        for bad in [
            r#"{"event":"transfer"}"#,
            r#"{"event":"transfer","to":""}"#,
            r#"{"event":"transfer","to":"a b"}"#,
        ] {
            assert!(c.decode(Incoming::Text(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn transfer_events_are_exact() {
        let c = codec(Tracks::Both);
        assert_eq!(
            text(c.transfer("user:1003", "trying", None)),
            r#"{"event":"transfer","target":"user:1003","status":"trying"}"#
        );
        assert_eq!(
            text(c.transfer("user:1003", "failed", Some("486 busy"))),
            r#"{"event":"transfer","target":"user:1003","status":"failed","reason":"486 busy"}"#
        );
    }

    #[test]
    fn events_are_exact() {
        let c = codec(Tracks::Inbound);
        assert_eq!(
            text(c.dtmf('5', 120)),
            r#"{"event":"dtmf","digit":"5","durationMs":120}"#
        );
        assert_eq!(
            text(c.mark("greeting", false)),
            r#"{"event":"mark","name":"greeting","status":"played"}"#
        );
        assert_eq!(
            text(c.mark("greeting", true)),
            r#"{"event":"mark","name":"greeting","status":"cleared"}"#
        );
        let counters = StopCounters {
            frames_sent: 48,
            frames_dropped: 2,
            dropped_queue_full: 1,
            dropped_disconnected: 1,
            dropped_slow: 0,
            reconnects: 1,
        };
        assert_eq!(
            text(c.stop("hangup", &counters)),
            r#"{"event":"stop","reason":"hangup","framesSent":48,"framesDropped":2,"framesDroppedQueueFull":1,"framesDroppedDisconnected":1,"framesDroppedSlow":0,"reconnects":1}"#
        );
    }

    #[test]
    fn commands_parse() {
        let c = codec(Tracks::Inbound);
        let d = |s: &str| c.decode(Incoming::Text(s));
        assert_eq!(
            d(r#"{"event":"mark","name":"m1"}"#),
            Ok(Some(ServiceCommand::Mark("m1".into())))
        );
        assert_eq!(d(r#"{"event":"clear"}"#), Ok(Some(ServiceCommand::Clear)));
        assert_eq!(
            d(r#"{"event":"hangup","reason":"done"}"#),
            Ok(Some(ServiceCommand::Hangup))
        );
        assert_eq!(
            d(r#"{"event":"dtmf","digits":"12#a"}"#),
            Ok(Some(ServiceCommand::Dtmf("12#A".into())))
        );
        let audio = Bytes::from_static(&[1, 0, 2, 0]);
        assert_eq!(
            c.decode(Incoming::Binary(&audio)),
            Ok(Some(ServiceCommand::Audio {
                format: AudioFormat {
                    encoding: Encoding::L16,
                    sample_rate: 16000,
                    channels: 1
                },
                data: audio.clone()
            }))
        );
        assert_eq!(c.decode(Incoming::Binary(&Bytes::new())), Ok(None));
    }

    #[test]
    fn bad_commands_are_typed_errors() {
        let c = codec(Tracks::Inbound);
        let d = |s: &str| c.decode(Incoming::Text(s));
        assert!(matches!(d("not json"), Err(ProtocolError::InvalidJson(_))));
        assert!(matches!(
            d(r#"{"name":"x"}"#),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert!(matches!(d("[1,2]"), Err(ProtocolError::InvalidJson(_))));
        assert_eq!(
            d(r#"{"event":"mark"}"#),
            Err(ProtocolError::MissingField("name"))
        );
        assert_eq!(
            d(r#"{"event":"mark","name":""}"#),
            Err(ProtocolError::MissingField("name"))
        );
        assert_eq!(
            d(r#"{"event":"dtmf","digits":"9x"}"#),
            Err(ProtocolError::MissingField("digits"))
        );
        assert_eq!(
            d(r#"{"event":"teleport"}"#),
            Err(ProtocolError::UnknownEvent("teleport".into()))
        );
        let odd = Bytes::from_static(&[1, 2, 3]);
        assert!(matches!(
            c.decode(Incoming::Binary(&odd)),
            Err(ProtocolError::InvalidAudio(_))
        ));
        let big = "x".repeat((1 << 20) + 1);
        assert!(matches!(
            c.decode(Incoming::Text(&big)),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
