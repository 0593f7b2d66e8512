//! Twilio Media Streams (`mode = "twilio"`), as documented in Twilio's "Media Streams -
//! WebSocket Messages". See docs/fork-protocols.md.
//!
//! Siphon → service: `connected`, `start`, then `media` (base64 µ-law 8 kHz, one message per
//! track per 20 ms), `dtmf`, `mark` and a final `stop`. Every message but `connected` carries
//! a string `sequenceNumber` counting from "1" on each connection; `media.chunk` counts from
//! "1" per track over the whole stream; `media.timestamp` is milliseconds since the stream
//! started (frame index × 20, so lost frames leave a gap).
//!
//! Service → Siphon: `media` (base64 µ-law 8 kHz to play), `mark`, `clear`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    Incoming, ProtocolError, ServiceCommand, StreamInfo, WireMsg, check_mark_name, parse_json,
    to_json,
};
use crate::config::{AudioFormat, Encoding, FRAME_MS};

/// Messages Siphon sends, tagged by `event`; field order follows Twilio's examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ToService {
    /// First message of each connection.
    Connected(Connected),
    /// Stream metadata.
    Start(StartMsg),
    /// Audio.
    Media(MediaMsg),
    /// The caller pressed a key.
    Dtmf(DtmfMsg),
    /// Playback reached (or a clear dropped) a mark.
    Mark(MarkMsg),
    /// End of the stream.
    Stop(StopMsg),
}

/// `connected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    /// Always `"Call"`.
    pub protocol: String,
    /// Always `"1.0.0"`.
    pub version: String,
}

/// `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMsg {
    /// Message counter, as a string.
    pub sequence_number: String,
    /// Metadata.
    pub start: StartBody,
    /// Stream id.
    pub stream_sid: String,
}

/// `start.start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartBody {
    /// Account (empty if the call has none).
    pub account_sid: String,
    /// Stream id.
    pub stream_sid: String,
    /// Siphon's SIP Call-ID.
    pub call_sid: String,
    /// `inbound` and/or `outbound`.
    pub tracks: Vec<String>,
    /// From the fork's configuration.
    pub custom_parameters: BTreeMap<String, String>,
    /// Always µ-law 8 kHz mono.
    pub media_format: MediaFormat,
}

/// `start.start.mediaFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw`.
    pub encoding: String,
    /// 8000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u8,
}

/// `media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaMsg {
    /// Message counter.
    pub sequence_number: String,
    /// The audio.
    pub media: MediaBody,
    /// Stream id.
    pub stream_sid: String,
}

/// `media.media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBody {
    /// `inbound` or `outbound`.
    pub track: String,
    /// Per-track counter from "1".
    pub chunk: String,
    /// Milliseconds since the stream started.
    pub timestamp: String,
    /// Base64 µ-law.
    pub payload: String,
}

/// `dtmf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtmfMsg {
    /// Stream id.
    pub stream_sid: String,
    /// Message counter.
    pub sequence_number: String,
    /// The key.
    pub dtmf: DtmfBody,
}

/// `dtmf.dtmf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtmfBody {
    /// Always `inbound_track`.
    pub track: String,
    /// The key.
    pub digit: String,
}

/// `mark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkMsg {
    /// Message counter.
    pub sequence_number: String,
    /// Stream id.
    pub stream_sid: String,
    /// The mark.
    pub mark: MarkBody,
}

/// `mark.mark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkBody {
    /// Name given by the service.
    pub name: String,
}

/// `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopMsg {
    /// Message counter.
    pub sequence_number: String,
    /// Who stopped.
    pub stop: StopBody,
    /// Stream id.
    pub stream_sid: String,
}

/// `stop.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopBody {
    /// As in `start`.
    pub account_sid: String,
    /// As in `start`.
    pub call_sid: String,
}

#[derive(Debug, Deserialize)]
struct FromService<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    media: Option<MediaIn<'a>>,
    #[serde(default, borrow)]
    mark: Option<MarkIn<'a>>,
}

#[derive(Debug, Deserialize)]
struct MediaIn<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
struct MarkIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// µ-law 8 kHz mono: what Twilio streams carry.
pub const FORMAT: AudioFormat = AudioFormat {
    encoding: Encoding::Pcmu,
    sample_rate: 8000,
    channels: 1,
};

/// The Twilio codec. Keeps the counters and a scratch buffer reused across frames.
#[derive(Debug)]
pub struct TwilioCodec {
    info: StreamInfo,
    /// `"MZ…"` with its JSON quotes, written into every media message.
    sid_json: String,
    seq: u64,
    chunks: [u64; 2],
    scratch: Vec<u8>,
}

impl TwilioCodec {
    /// A codec for the stream.
    pub fn new(info: StreamInfo) -> Self {
        let sid_json = to_json(&info.stream_id);
        TwilioCodec {
            info,
            sid_json,
            seq: 0,
            chunks: [0; 2],
            scratch: Vec::new(),
        }
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    fn account_sid(&self) -> String {
        self.info.meta.account_sid.clone().unwrap_or_default()
    }

    /// `connected` then `start`; sequence numbers restart on each connection.
    pub fn on_connect(&mut self, out: &mut Vec<WireMsg>) {
        self.seq = 0;
        out.push(WireMsg::Text(to_json(&ToService::Connected(Connected {
            protocol: "Call".to_string(),
            version: "1.0.0".to_string(),
        }))));
        let start = ToService::Start(StartMsg {
            sequence_number: self.next_seq(),
            start: StartBody {
                account_sid: self.account_sid(),
                stream_sid: self.info.stream_id.clone(),
                call_sid: self.info.meta.call_id.clone(),
                tracks: self
                    .info
                    .track_names()
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
                custom_parameters: self.info.custom_parameters.clone(),
                media_format: MediaFormat {
                    encoding: "audio/x-mulaw".to_string(),
                    sample_rate: 8000,
                    channels: 1,
                },
            },
            stream_sid: self.info.stream_id.clone(),
        });
        out.push(WireMsg::Text(to_json(&start)));
    }

    /// One `media` message per track. A two-channel frame (both tracks) is split into
    /// `inbound` (channel 0) and `outbound` (channel 1).
    pub fn media(&mut self, frame: &Bytes, index: u64, out: &mut Vec<WireMsg>) {
        let timestamp = index * u64::from(FRAME_MS);
        let names = self.info.track_names();
        if names.len() == 2 {
            for (ch, name) in names.iter().enumerate() {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                scratch.extend(frame.iter().skip(ch).step_by(2));
                let msg = self.media_msg(ch, name, timestamp, &scratch);
                self.scratch = scratch;
                out.push(msg);
            }
        } else {
            let msg = self.media_msg(0, names[0], timestamp, frame);
            out.push(msg);
        }
    }

    /// Writes the media JSON directly (it is the per-frame hot path): the same text serde
    /// would produce for [`MediaMsg`], in one allocation of exactly the right size (so that
    /// handing it to the socket as bytes needs no other).
    fn media_msg(&mut self, ch: usize, track: &str, timestamp: u64, payload: &[u8]) -> WireMsg {
        const P1: &str = r#"{"event":"media","sequenceNumber":""#;
        const P2: &str = r#"","media":{"track":""#;
        const P3: &str = r#"","chunk":""#;
        const P4: &str = r#"","timestamp":""#;
        const P5: &str = r#"","payload":""#;
        const P6: &str = r#""},"streamSid":"#;
        const FIXED: usize = P1.len() + P2.len() + P3.len() + P4.len() + P5.len() + P6.len() + 1;
        self.seq += 1;
        self.chunks[ch] += 1;
        let (seq, chunk) = (self.seq, self.chunks[ch]);
        let len = FIXED
            + digits(seq)
            + track.len()
            + digits(chunk)
            + digits(timestamp)
            + payload.len().div_ceil(3) * 4
            + self.sid_json.len();
        let mut s = String::with_capacity(len);
        // Writing to a String cannot fail.
        s.push_str(P1);
        let _ = write!(s, "{seq}");
        s.push_str(P2);
        s.push_str(track);
        s.push_str(P3);
        let _ = write!(s, "{chunk}");
        s.push_str(P4);
        let _ = write!(s, "{timestamp}");
        s.push_str(P5);
        BASE64.encode_string(payload, &mut s);
        s.push_str(P6);
        s.push_str(&self.sid_json);
        s.push('}');
        debug_assert_eq!(s.len(), len);
        WireMsg::Text(s)
    }

    /// `dtmf` (Twilio only reports the inbound track's keys).
    pub fn dtmf(&mut self, digit: char) -> WireMsg {
        let msg = ToService::Dtmf(DtmfMsg {
            stream_sid: self.info.stream_id.clone(),
            sequence_number: self.next_seq(),
            dtmf: DtmfBody {
                track: "inbound_track".to_string(),
                digit: digit.to_string(),
            },
        });
        WireMsg::Text(to_json(&msg))
    }

    /// `mark`: sent when playback reaches a mark, and for every pending mark on `clear`.
    pub fn mark(&mut self, name: &str) -> WireMsg {
        let msg = ToService::Mark(MarkMsg {
            sequence_number: self.next_seq(),
            stream_sid: self.info.stream_id.clone(),
            mark: MarkBody {
                name: name.to_string(),
            },
        });
        WireMsg::Text(to_json(&msg))
    }

    /// `stop`. Twilio's stop carries no reason or counters; Siphon adds none so as to stay
    /// exactly compatible (they are in the fork's stats).
    pub fn stop(&mut self) -> WireMsg {
        let msg = ToService::Stop(StopMsg {
            sequence_number: self.next_seq(),
            stop: StopBody {
                account_sid: self.account_sid(),
                call_sid: self.info.meta.call_id.clone(),
            },
            stream_sid: self.info.stream_id.clone(),
        });
        WireMsg::Text(to_json(&msg))
    }

    /// Interprets a message from the service.
    pub fn decode(&mut self, msg: Incoming<'_>) -> Result<Option<ServiceCommand>, ProtocolError> {
        self.info.check_size(&msg)?;
        let text = match msg {
            Incoming::Text(t) => t,
            Incoming::Binary(_) => return Err(ProtocolError::UnexpectedBinary("twilio")),
        };
        let m: FromService<'_> = parse_json(text)?;
        match m.event.as_ref() {
            "media" => {
                let media = m.media.ok_or(ProtocolError::MissingField("media"))?;
                let data = BASE64
                    .decode(media.payload.as_bytes())
                    .map_err(|_| ProtocolError::InvalidBase64("media.payload"))?;
                if data.is_empty() {
                    return Ok(None);
                }
                Ok(Some(ServiceCommand::Audio {
                    format: FORMAT,
                    data: Bytes::from(data),
                }))
            }
            "mark" => {
                let mark = m.mark.ok_or(ProtocolError::MissingField("mark"))?;
                check_mark_name(&mark.name)?;
                Ok(Some(ServiceCommand::Mark(mark.name.into_owned())))
            }
            "clear" => Ok(Some(ServiceCommand::Clear)),
            other => Err(ProtocolError::UnknownEvent(other.to_string())),
        }
    }
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{CallMeta, ForkConfig, Mode, Tracks};

    fn codec(tracks: Tracks) -> TwilioCodec {
        let mut cfg = ForkConfig::new("ws://x", Mode::Twilio);
        cfg.tracks = tracks;
        cfg.custom_parameters
            .insert("FirstName".into(), "Jane".into());
        let meta = CallMeta {
            call_id: "CA123".into(),
            from: "1001".into(),
            to: "700".into(),
            codec: "PCMU".into(),
            account_sid: Some("AC456".into()),
        };
        TwilioCodec::new(StreamInfo::new("MZ789".into(), &cfg, meta))
    }

    fn text(m: &WireMsg) -> &str {
        match m {
            WireMsg::Text(s) => s,
            WireMsg::Binary(_) => "<binary>",
        }
    }

    #[test]
    fn connected_and_start_are_exact() {
        let mut c = codec(Tracks::Inbound);
        let mut out = Vec::new();
        c.on_connect(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            text(&out[0]),
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
        );
        assert_eq!(
            text(&out[1]),
            r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC456","streamSid":"MZ789","callSid":"CA123","tracks":["inbound"],"customParameters":{"FirstName":"Jane"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ789"}"#
        );
    }

    #[test]
    fn media_counts_chunks_and_sequence_and_matches_serde() {
        let mut c = codec(Tracks::Inbound);
        let mut out = Vec::new();
        c.on_connect(&mut out);
        out.clear();
        let frame = Bytes::from(vec![0xffu8; 160]);
        c.media(&frame, 0, &mut out);
        c.media(&frame, 1, &mut out);
        c.media(&frame, 5, &mut out);
        let payload = BASE64.encode([0xffu8; 160]);
        let expect = |seq: &str, chunk: &str, ts: &str| {
            to_json(&ToService::Media(MediaMsg {
                sequence_number: seq.into(),
                media: MediaBody {
                    track: "inbound".into(),
                    chunk: chunk.into(),
                    timestamp: ts.into(),
                    payload: payload.clone(),
                },
                stream_sid: "MZ789".into(),
            }))
        };
        assert_eq!(text(&out[0]), expect("2", "1", "0"));
        assert_eq!(text(&out[1]), expect("3", "2", "20"));
        assert_eq!(text(&out[2]), expect("4", "3", "100"));
        assert!(text(&out[0]).starts_with(
            r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"////"#
        ));
        assert!(text(&out[0]).ends_with(r#"///w=="},"streamSid":"MZ789"}"#));
    }

    #[test]
    fn media_text_has_exactly_its_capacity() {
        assert_eq!(
            (digits(0), digits(9), digits(10), digits(u64::MAX)),
            (1, 1, 2, 20)
        );
        let mut c = codec(Tracks::Inbound);
        let mut out = Vec::new();
        for (i, n) in [0usize, 1, 2, 3, 159, 160, 161].into_iter().enumerate() {
            c.media(&Bytes::from(vec![7u8; n]), (i as u64) * 999, &mut out);
        }
        for m in &out {
            match m {
                WireMsg::Text(s) => assert_eq!(s.len(), s.capacity()),
                WireMsg::Binary(_) => panic!("binary"),
            }
        }
    }

    #[test]
    fn both_tracks_are_split_into_two_messages() {
        let mut c = codec(Tracks::Both);
        let mut out = Vec::new();
        c.on_connect(&mut out);
        assert!(text(&out[1]).contains(r#""tracks":["inbound","outbound"]"#));
        out.clear();
        // Interleaved: inbound samples 0x11, outbound samples 0x22.
        let frame = Bytes::from([0x11u8, 0x22].repeat(160));
        c.media(&frame, 0, &mut out);
        c.media(&frame, 1, &mut out);
        assert_eq!(out.len(), 4);
        let parsed: Vec<MediaMsg> = out
            .iter()
            .map(|m| match serde_json::from_str::<ToService>(text(m)) {
                Ok(ToService::Media(m)) => m,
                other => panic!("not media: {other:?}"),
            })
            .collect();
        assert_eq!(parsed[0].media.track, "inbound");
        assert_eq!(parsed[1].media.track, "outbound");
        assert_eq!(parsed[2].media.chunk, "2");
        assert_eq!(parsed[3].media.chunk, "2");
        assert_eq!(parsed[3].sequence_number, "5");
        assert_eq!(parsed[3].media.timestamp, "20");
        assert_eq!(
            BASE64.decode(&parsed[0].media.payload).unwrap(),
            vec![0x11u8; 160]
        );
        assert_eq!(
            BASE64.decode(&parsed[1].media.payload).unwrap(),
            vec![0x22u8; 160]
        );
    }

    #[test]
    fn dtmf_mark_stop_are_exact_and_reconnect_restarts_sequence() {
        let mut c = codec(Tracks::Inbound);
        let mut out = Vec::new();
        c.on_connect(&mut out);
        assert_eq!(
            text(&c.dtmf('7')),
            r#"{"event":"dtmf","streamSid":"MZ789","sequenceNumber":"2","dtmf":{"track":"inbound_track","digit":"7"}}"#
        );
        assert_eq!(
            text(&c.mark("my label")),
            r#"{"event":"mark","sequenceNumber":"3","streamSid":"MZ789","mark":{"name":"my label"}}"#
        );
        assert_eq!(
            text(&c.stop()),
            r#"{"event":"stop","sequenceNumber":"4","stop":{"accountSid":"AC456","callSid":"CA123"},"streamSid":"MZ789"}"#
        );
        out.clear();
        c.on_connect(&mut out);
        assert!(text(&out[1]).contains(r#""sequenceNumber":"1""#));
    }

    #[test]
    fn service_messages_parse() {
        let mut c = codec(Tracks::Inbound);
        assert_eq!(
            c.decode(Incoming::Text(
                r#"{"event":"media","streamSid":"MZ789","media":{"payload":"AAEC"}}"#
            )),
            Ok(Some(ServiceCommand::Audio {
                format: FORMAT,
                data: Bytes::from_static(&[0, 1, 2])
            }))
        );
        assert_eq!(
            c.decode(Incoming::Text(
                r#"{"event":"mark","streamSid":"MZ789","mark":{"name":"m"}}"#
            )),
            Ok(Some(ServiceCommand::Mark("m".into())))
        );
        assert_eq!(
            c.decode(Incoming::Text(r#"{"event":"clear","streamSid":"MZ789"}"#)),
            Ok(Some(ServiceCommand::Clear))
        );
    }

    #[test]
    fn bad_service_messages_are_typed_errors() {
        let mut c = codec(Tracks::Inbound);
        let mut d = |s: &str| c.decode(Incoming::Text(s));
        assert!(matches!(d("{"), Err(ProtocolError::InvalidJson(_))));
        assert_eq!(
            d(r#"{"event":"media"}"#),
            Err(ProtocolError::MissingField("media"))
        );
        assert_eq!(
            d(r#"{"event":"media","media":{"payload":"@@@"}}"#),
            Err(ProtocolError::InvalidBase64("media.payload"))
        );
        assert!(matches!(
            d(r#"{"event":"media","media":{}}"#),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert_eq!(
            d(r#"{"event":"mark"}"#),
            Err(ProtocolError::MissingField("mark"))
        );
        assert_eq!(
            d(r#"{"event":"sendDigits"}"#),
            Err(ProtocolError::UnknownEvent("sendDigits".into()))
        );
        let bin = Bytes::from_static(b"x");
        assert_eq!(
            c.decode(Incoming::Binary(&bin)),
            Err(ProtocolError::UnexpectedBinary("twilio"))
        );
    }
}
