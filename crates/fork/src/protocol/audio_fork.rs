//! FreeSWITCH mod_audio_fork as driven by jambonz's `listen` verb (`mode = "audio_fork"`).
//! See docs/fork-protocols.md.
//!
//! Siphon → service (subprotocol `audio.jambonz.org`): one JSON text frame with the call's
//! attributes plus `sampleRate` and `mixType`, then binary frames of 16-bit little-endian
//! PCM. DTMF goes as jambonz's `{"event":"dtmf",...}` text frame, mark echoes as
//! `{"type":"mark",...}`, and the last text frame (mod_audio_fork's optional stop metadata)
//! carries Siphon's `stop` with counters.
//!
//! Service → Siphon: `playAudio` (base64 raw L16 with its `sampleRate`, or a WAV file),
//! `killAudio`, `disconnect`, `mark`, other JSON (`transcription`, `transfer`, `error`,
//! `json`) passed on as events, and binary L16 frames at the fork's sample rate
//! (jambonz's bidirectional streaming).

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    Incoming, ProtocolError, ServiceCommand, StopCounters, StreamInfo, WireMsg, check_mark_name,
    parse_json, to_json, wav,
};
use crate::config::{AudioFormat, Encoding};

/// The WebSocket subprotocol jambonz services accept.
pub const SUBPROTOCOL: &str = "audio.jambonz.org";

/// Keys of the preamble that custom parameters may not replace.
const RESERVED: [&str; 8] = [
    "callSid",
    "callId",
    "from",
    "to",
    "direction",
    "accountSid",
    "sampleRate",
    "mixType",
];

/// The initial text frame: jambonz call attributes, the audio description, and the custom
/// parameters merged in at the top level (jambonz's `metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preamble {
    /// The fork's stream id (unique per fork, stable across reconnects).
    pub call_sid: String,
    /// The SIP Call-ID.
    pub call_id: String,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// Always `inbound` (Siphon answers the calls it forks).
    pub direction: String,
    /// Account, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    /// Samples per second of the binary frames.
    pub sample_rate: u32,
    /// `mono`, `stereo` or `mixed`.
    pub mix_type: String,
    /// Custom parameters.
    #[serde(flatten)]
    pub metadata: BTreeMap<String, String>,
}

/// Text frames Siphon sends after the preamble that carry an `event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// jambonz's DTMF text frame (sent when `passDtmf` is on).
    Dtmf(Dtmf),
    /// Siphon's final frame.
    Stop(Stop),
}

/// `{"event":"dtmf"}`: the digit and FreeSWITCH's duration in 8 kHz sample units, as jambonz
/// forwards them (both strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtmf {
    /// The key.
    pub dtmf: String,
    /// Duration in 8 kHz samples (milliseconds × 8).
    pub duration: String,
}

/// `{"event":"stop"}`: same fields as the native protocol's stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// Why the fork ended.
    pub reason: String,
    /// Frames delivered.
    pub frames_sent: u64,
    /// Frames lost, all causes.
    pub frames_dropped: u64,
    /// Lost to a full fork queue.
    pub frames_dropped_queue_full: u64,
    /// Lost while disconnected.
    pub frames_dropped_disconnected: u64,
    /// Lost to a slow service.
    pub frames_dropped_slow: u64,
    /// Reconnections.
    pub reconnects: u64,
}

/// `{"type":"mark","data":{"name":..,"event":"playout"|"cleared"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkEcho {
    /// Always `mark`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The mark.
    pub data: MarkEchoData,
}

/// Body of a mark echo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkEchoData {
    /// The name the service gave.
    pub name: String,
    /// `playout` when reached, `cleared` when dropped by `killAudio`.
    pub event: String,
}

#[derive(Debug, Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct PlayAudio<'a> {
    #[serde(borrow)]
    data: PlayAudioData<'a>,
}

#[derive(Debug, Deserialize)]
struct PlayAudioData<'a> {
    #[serde(rename = "audioContentType", borrow)]
    content_type: Cow<'a, str>,
    #[serde(rename = "sampleRate", default)]
    sample_rate: Option<u32>,
    #[serde(rename = "audioContent", borrow)]
    content: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct MarkIn<'a> {
    #[serde(borrow)]
    data: MarkInData<'a>,
}

#[derive(Debug, Deserialize)]
struct MarkInData<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct WithData {
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// The audio_fork codec.
#[derive(Debug)]
pub struct AudioForkCodec {
    info: StreamInfo,
}

impl AudioForkCodec {
    /// A codec for the stream.
    pub fn new(info: StreamInfo) -> Self {
        AudioForkCodec { info }
    }

    /// The preamble text frame (sent on every connection).
    pub fn preamble(&self) -> WireMsg {
        let i = &self.info;
        let metadata = i
            .custom_parameters
            .iter()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        WireMsg::Text(to_json(&Preamble {
            call_sid: i.stream_id.clone(),
            call_id: i.meta.call_id.clone(),
            from: i.meta.from.clone(),
            to: i.meta.to.clone(),
            direction: "inbound".to_string(),
            account_sid: i.meta.account_sid.clone(),
            sample_rate: i.format.sample_rate,
            mix_type: i.mix_type().to_string(),
            metadata,
        }))
    }

    /// jambonz's DTMF frame.
    pub fn dtmf(&self, digit: char, duration_ms: u32) -> WireMsg {
        WireMsg::Text(to_json(&Event::Dtmf(Dtmf {
            dtmf: digit.to_string(),
            duration: (u64::from(duration_ms) * 8).to_string(),
        })))
    }

    /// A mark echo.
    pub fn mark(&self, name: &str, cleared: bool) -> WireMsg {
        WireMsg::Text(to_json(&MarkEcho {
            kind: "mark".to_string(),
            data: MarkEchoData {
                name: name.to_string(),
                event: if cleared { "cleared" } else { "playout" }.to_string(),
            },
        }))
    }

    /// The final frame.
    pub fn stop(&self, reason: &str, c: &StopCounters) -> WireMsg {
        WireMsg::Text(to_json(&Event::Stop(Stop {
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
        let text = match msg {
            Incoming::Binary(data) => return self.streamed_audio(data),
            Incoming::Text(t) => t,
        };
        let probe: Probe<'_> = parse_json(text)?;
        match probe.kind.as_ref() {
            "playAudio" => {
                let p: PlayAudio<'_> = parse_json(text)?;
                self.play_audio(&p.data)
            }
            "killAudio" => Ok(Some(ServiceCommand::Clear)),
            "disconnect" => Ok(Some(ServiceCommand::Hangup)),
            "mark" => {
                let m: MarkIn<'_> = parse_json(text)?;
                check_mark_name(&m.data.name)?;
                Ok(Some(ServiceCommand::Mark(m.data.name.into_owned())))
            }
            "transcription" | "transfer" | "error" | "json" => {
                let w: WithData = parse_json(text)?;
                let data = w.data.unwrap_or(serde_json::Value::Null);
                Ok(Some(ServiceCommand::Event {
                    name: probe.kind.into_owned(),
                    data: to_json(&data),
                }))
            }
            other => Err(ProtocolError::UnknownEvent(other.to_string())),
        }
    }

    fn streamed_audio(&self, data: &Bytes) -> Result<Option<ServiceCommand>, ProtocolError> {
        if data.is_empty() {
            return Ok(None);
        }
        if !data.len().is_multiple_of(2) {
            return Err(ProtocolError::InvalidAudio(format!(
                "{} bytes is not a whole number of 16-bit samples",
                data.len()
            )));
        }
        Ok(Some(ServiceCommand::Audio {
            format: AudioFormat {
                encoding: Encoding::L16,
                sample_rate: self.info.format.sample_rate,
                channels: 1,
            },
            data: data.clone(),
        }))
    }

    fn play_audio(&self, p: &PlayAudioData<'_>) -> Result<Option<ServiceCommand>, ProtocolError> {
        let bytes = BASE64
            .decode(p.content.as_bytes())
            .map_err(|_| ProtocolError::InvalidBase64("data.audioContent"))?;
        let (format, data) = match p.content_type.as_ref() {
            "raw" => {
                let rate = p
                    .sample_rate
                    .ok_or(ProtocolError::MissingField("data.sampleRate"))?;
                if !bytes.len().is_multiple_of(2) {
                    return Err(ProtocolError::InvalidAudio(
                        "raw audio must be 16-bit samples".to_string(),
                    ));
                }
                let format = AudioFormat {
                    encoding: Encoding::L16,
                    sample_rate: rate,
                    channels: 1,
                };
                (format, Bytes::from(bytes))
            }
            "wav" | "wave" => wav::parse(&Bytes::from(bytes))?,
            other => {
                return Err(ProtocolError::UnsupportedAudio(format!(
                    "audioContentType {other:?}"
                )));
            }
        };
        if !matches!(format.sample_rate, 8000 | 16000) || format.channels != 1 {
            return Err(ProtocolError::UnsupportedAudio(format!(
                "{} Hz, {} channels (Siphon plays 8000 or 16000 Hz mono)",
                format.sample_rate, format.channels
            )));
        }
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(ServiceCommand::Audio { format, data }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{CallMeta, ForkConfig, Mix, Mode, Tracks};

    fn codec(tracks: Tracks, mix: Mix) -> AudioForkCodec {
        let mut cfg = ForkConfig::new("ws://x", Mode::AudioFork);
        cfg.sample_rate = 16000;
        cfg.tracks = tracks;
        cfg.mix = mix;
        cfg.custom_parameters.insert("lang".into(), "de".into());
        cfg.custom_parameters
            .insert("sampleRate".into(), "1".into());
        let meta = CallMeta {
            call_id: "c1@h".into(),
            from: "1001".into(),
            to: "700".into(),
            codec: "PCMA".into(),
            account_sid: None,
        };
        AudioForkCodec::new(StreamInfo::new("S1".into(), &cfg, meta))
    }

    fn text(m: WireMsg) -> String {
        match m {
            WireMsg::Text(s) => s,
            WireMsg::Binary(_) => String::from("<binary>"),
        }
    }

    #[test]
    fn preamble_is_exact_and_protects_reserved_keys() {
        assert_eq!(
            text(codec(Tracks::Both, Mix::Stereo).preamble()),
            r#"{"callSid":"S1","callId":"c1@h","from":"1001","to":"700","direction":"inbound","sampleRate":16000,"mixType":"stereo","lang":"de"}"#
        );
        assert!(text(codec(Tracks::Both, Mix::Mono).preamble()).contains(r#""mixType":"mixed""#));
        assert!(
            text(codec(Tracks::Inbound, Mix::Stereo).preamble()).contains(r#""mixType":"mono""#)
        );
    }

    #[test]
    fn events_are_exact() {
        let c = codec(Tracks::Inbound, Mix::Stereo);
        assert_eq!(
            text(c.dtmf('#', 100)),
            r##"{"event":"dtmf","dtmf":"#","duration":"800"}"##
        );
        assert_eq!(
            text(c.mark("m1", false)),
            r#"{"type":"mark","data":{"name":"m1","event":"playout"}}"#
        );
        assert_eq!(
            text(c.mark("m1", true)),
            r#"{"type":"mark","data":{"name":"m1","event":"cleared"}}"#
        );
        let counters = StopCounters {
            frames_sent: 50,
            ..StopCounters::default()
        };
        assert_eq!(
            text(c.stop("hangup", &counters)),
            r#"{"event":"stop","reason":"hangup","framesSent":50,"framesDropped":0,"framesDroppedQueueFull":0,"framesDroppedDisconnected":0,"framesDroppedSlow":0,"reconnects":0}"#
        );
    }

    #[test]
    fn service_messages_parse() {
        let c = codec(Tracks::Inbound, Mix::Stereo);
        let d = |s: &str| c.decode(Incoming::Text(s));
        let l16 = |rate| AudioFormat {
            encoding: Encoding::L16,
            sample_rate: rate,
            channels: 1,
        };
        assert_eq!(
            d(
                r#"{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":8000,"audioContent":"AQACAA==","textContent":"hi"}}"#
            ),
            Ok(Some(ServiceCommand::Audio {
                format: l16(8000),
                data: Bytes::from_static(&[1, 0, 2, 0])
            }))
        );
        let wav = BASE64.encode(wav::build(1, 1, 16000, 16, &[5, 0, 6, 0]));
        assert_eq!(
            d(&format!(
                r#"{{"type":"playAudio","data":{{"audioContentType":"wav","audioContent":"{wav}"}}}}"#
            )),
            Ok(Some(ServiceCommand::Audio {
                format: l16(16000),
                data: Bytes::from_static(&[5, 0, 6, 0])
            }))
        );
        assert_eq!(
            d(r#"{"type":"killAudio"}"#),
            Ok(Some(ServiceCommand::Clear))
        );
        assert_eq!(
            d(r#"{"type":"disconnect"}"#),
            Ok(Some(ServiceCommand::Hangup))
        );
        assert_eq!(
            d(r#"{"type":"mark","data":{"name":"m9"}}"#),
            Ok(Some(ServiceCommand::Mark("m9".into())))
        );
        assert_eq!(
            d(r#"{"type":"transcription","data":{"text":"hello"}}"#),
            Ok(Some(ServiceCommand::Event {
                name: "transcription".into(),
                data: r#"{"text":"hello"}"#.into()
            }))
        );
        assert_eq!(
            d(r#"{"type":"error"}"#),
            Ok(Some(ServiceCommand::Event {
                name: "error".into(),
                data: "null".into()
            }))
        );
        let bin = Bytes::from_static(&[1, 2, 3, 4]);
        assert_eq!(
            c.decode(Incoming::Binary(&bin)),
            Ok(Some(ServiceCommand::Audio {
                format: l16(16000),
                data: bin.clone()
            }))
        );
    }

    #[test]
    fn bad_service_messages_are_typed_errors() {
        let c = codec(Tracks::Inbound, Mix::Stereo);
        let d = |s: &str| c.decode(Incoming::Text(s));
        assert!(matches!(d("]"), Err(ProtocolError::InvalidJson(_))));
        assert!(matches!(
            d(r#"{"event":"dtmf"}"#),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert!(matches!(
            d(r#"{"type":"playAudio"}"#),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert_eq!(
            d(r#"{"type":"playAudio","data":{"audioContentType":"raw","audioContent":"AAAA"}}"#),
            Err(ProtocolError::MissingField("data.sampleRate"))
        );
        assert_eq!(
            d(
                r#"{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":8000,"audioContent":"!"}}"#
            ),
            Err(ProtocolError::InvalidBase64("data.audioContent"))
        );
        assert!(matches!(
            d(
                r#"{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":24000,"audioContent":"AAAAAA=="}}"#
            ),
            Err(ProtocolError::UnsupportedAudio(_))
        ));
        assert!(matches!(
            d(r#"{"type":"playAudio","data":{"audioContentType":"mp3","audioContent":"AAAA"}}"#),
            Err(ProtocolError::UnsupportedAudio(_))
        ));
        assert!(matches!(
            d(r#"{"type":"playAudio","data":{"audioContentType":"wav","audioContent":"AAAA"}}"#),
            Err(ProtocolError::InvalidAudio(_))
        ));
        assert_eq!(
            d(r#"{"type":"mark","data":{"name":""}}"#),
            Err(ProtocolError::MissingField("name"))
        );
        assert_eq!(
            d(r#"{"type":"clearMarks"}"#),
            Err(ProtocolError::UnknownEvent("clearMarks".into()))
        );
        let odd = Bytes::from_static(&[1]);
        assert!(matches!(
            c.decode(Incoming::Binary(&odd)),
            Err(ProtocolError::InvalidAudio(_))
        ));
    }
}
