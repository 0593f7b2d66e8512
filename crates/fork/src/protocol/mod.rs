//! The three wire protocols, as pure encoders/decoders: no sockets, no clock.
//!
//! Each mode has a codec that turns fork events (connected, audio frame, DTMF, mark echo,
//! stop) into [`WireMsg`]s and turns what the service sends ([`Incoming`]) into
//! [`ServiceCommand`]s or a typed [`ProtocolError`]. [`Codec`] dispatches on the mode; the
//! connection loop (`conn.rs`) only moves its output to and from the socket.

pub mod audio_fork;
pub mod native;
pub mod twilio;
pub mod wav;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::{AudioFormat, CallMeta, ForkConfig, Mix, Mode, Tracks};

/// One WebSocket data message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMsg {
    /// A text frame (JSON in every mode).
    Text(String),
    /// A binary frame (audio in native and audio_fork).
    Binary(Bytes),
}

impl WireMsg {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            WireMsg::Text(s) => s.len(),
            WireMsg::Binary(b) => b.len(),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One WebSocket data message received from the service.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame.
    Binary(&'a Bytes),
}

impl Incoming<'_> {
    fn len(&self) -> usize {
        match self {
            Incoming::Text(s) => s.len(),
            Incoming::Binary(b) => b.len(),
        }
    }
}

/// What the service asked for, in the order it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCommand {
    /// Audio to play to the caller, in the given format (the server converts it). Audio is
    /// delivered in 20 ms pieces (a shorter piece only before a non-audio command or a change
    /// of format), so the pacer can take one per tick.
    Audio {
        /// Format of `data`.
        format: AudioFormat,
        /// Samples, interleaved if more than one channel.
        data: Bytes,
    },
    /// Playback has reached this point once all audio before it was taken: call
    /// [`crate::Fork::mark_played`] with the name.
    Mark(String),
    /// Barge-in: the fork already dropped its queued audio; drop anything the server holds.
    Clear,
    /// The service asks Siphon to hang up the call.
    Hangup,
    /// Send these DTMF digits to the caller.
    Dtmf(String),
    /// Transfer the call's caller to this target (`user:1002`, `trunk:provider/+1555...`,
    /// `sip:agent@10.0.0.5`): the native mode's `transfer` command.
    Transfer(String),
    /// Any other JSON the service sent that Siphon does not act on (audio_fork's
    /// `transcription`, `transfer`, `error`, `json`): the name and the `data` JSON text.
    Event {
        /// Message type.
        name: String,
        /// JSON text of the message's data (`null` if none).
        data: String,
    },
    /// A required fork could not connect: the server should end the call.
    Failed(String),
}

/// Why a message from the service was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Bigger than `max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Message size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A required field is absent or of the wrong type.
    #[error("missing or invalid field `{0}`")]
    MissingField(&'static str),
    /// A base64 payload that does not decode.
    #[error("invalid base64 in `{0}`")]
    InvalidBase64(&'static str),
    /// Audio that cannot be right (odd length for 16-bit PCM, broken WAV).
    #[error("invalid audio: {0}")]
    InvalidAudio(String),
    /// A WebSocket-level protocol violation (bad framing, masked server frames, ...).
    #[error("WebSocket protocol violation: {0}")]
    WebSocket(String),
    /// A binary frame where the protocol allows none.
    #[error("binary frames are not part of the {0} protocol")]
    UnexpectedBinary(&'static str),
    /// A well-formed message of a type this mode does not know. Ignored and counted.
    #[error("unknown message type {0:?}")]
    UnknownEvent(String),
    /// Well-formed audio that Siphon cannot play (e.g. 24 kHz). Dropped and counted.
    #[error("unsupported audio: {0}")]
    UnsupportedAudio(String),
}

impl ProtocolError {
    /// Whether the fork must close over this error. Unknown message types and unsupported
    /// audio are tolerated (forward compatibility); broken messages are not.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ProtocolError::UnknownEvent(_) | ProtocolError::UnsupportedAudio(_)
        )
    }

    /// The WebSocket close code to send when closing over this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::TooLarge { .. } => 1009,
            ProtocolError::UnexpectedBinary(_) => 1003,
            ProtocolError::WebSocket(_) => 1002,
            _ => 1007,
        }
    }

    /// The close reason: the error text cut to fit a control frame (123 bytes).
    pub fn close_reason(&self) -> String {
        truncate_utf8(&self.to_string(), 123).to_string()
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Everything the codecs need to know about the stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Unique id of this fork (Twilio `streamSid`, native `streamId`, jambonz `callSid`).
    pub stream_id: String,
    /// The call.
    pub meta: CallMeta,
    /// Format of the frames handed to the codec.
    pub format: AudioFormat,
    /// Which tracks are forked.
    pub tracks: Tracks,
    /// Layout of two tracks.
    pub mix: Mix,
    /// Passed to the service.
    pub custom_parameters: BTreeMap<String, String>,
    /// Largest accepted incoming message.
    pub max_message_bytes: usize,
}

impl StreamInfo {
    /// Stream information for a fork of `config` on the call `meta`.
    pub fn new(stream_id: String, config: &ForkConfig, meta: CallMeta) -> Self {
        StreamInfo {
            stream_id,
            meta,
            format: config.effective_format(),
            tracks: config.tracks,
            mix: config.effective_mix(),
            custom_parameters: config.custom_parameters.clone(),
            max_message_bytes: config.max_message_bytes,
        }
    }

    /// Track names in the stream, in channel order.
    pub fn track_names(&self) -> &'static [&'static str] {
        match self.tracks {
            Tracks::Inbound => &["inbound"],
            Tracks::Outbound => &["outbound"],
            Tracks::Both => &["inbound", "outbound"],
        }
    }

    /// `mono` (one track), `stereo` (two channels) or `mixed` (two tracks summed): the
    /// vocabulary of mod_audio_fork's mix-type.
    pub fn mix_type(&self) -> &'static str {
        match (self.tracks, self.mix) {
            (Tracks::Both, Mix::Stereo) => "stereo",
            (Tracks::Both, Mix::Mono) => "mixed",
            _ => "mono",
        }
    }

    fn check_size(&self, msg: &Incoming<'_>) -> Result<(), ProtocolError> {
        let size = msg.len();
        if size > self.max_message_bytes {
            return Err(ProtocolError::TooLarge {
                size,
                max: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

/// Counters reported in the `stop` message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopCounters {
    /// Frames written to the service.
    pub frames_sent: u64,
    /// Frames lost, all causes.
    pub frames_dropped: u64,
    /// Lost because the fork task's input queue was full.
    pub dropped_queue_full: u64,
    /// Lost while the service was unreachable.
    pub dropped_disconnected: u64,
    /// Lost because the service read too slowly.
    pub dropped_slow: u64,
    /// Successful reconnections.
    pub reconnects: u64,
}

/// A protocol adapter for one stream, in one of the three modes.
#[derive(Debug)]
pub enum Codec {
    /// Siphon's own protocol.
    Native(native::NativeCodec),
    /// Twilio Media Streams.
    Twilio(twilio::TwilioCodec),
    /// mod_audio_fork / jambonz `listen`.
    AudioFork(audio_fork::AudioForkCodec),
}

impl Codec {
    /// A codec for `mode`.
    pub fn new(mode: Mode, info: StreamInfo) -> Self {
        match mode {
            Mode::Native => Codec::Native(native::NativeCodec::new(info)),
            Mode::Twilio => Codec::Twilio(twilio::TwilioCodec::new(info)),
            Mode::AudioFork => Codec::AudioFork(audio_fork::AudioForkCodec::new(info)),
        }
    }

    /// The WebSocket subprotocol to offer, if the mode has one.
    pub fn subprotocol(&self) -> Option<&'static str> {
        match self {
            Codec::AudioFork(_) => Some(audio_fork::SUBPROTOCOL),
            _ => None,
        }
    }

    /// Messages that open each connection (`resumed` after a reconnect).
    pub fn on_connect(&mut self, resumed: bool, out: &mut Vec<WireMsg>) {
        match self {
            Codec::Native(c) => out.push(c.start(resumed)),
            Codec::Twilio(c) => c.on_connect(out),
            Codec::AudioFork(c) => out.push(c.preamble()),
        }
    }

    /// One frame of audio; `index` counts frames pushed since the fork started.
    pub fn audio(&mut self, frame: &Bytes, index: u64, out: &mut Vec<WireMsg>) {
        match self {
            Codec::Native(_) | Codec::AudioFork(_) => out.push(WireMsg::Binary(frame.clone())),
            Codec::Twilio(c) => c.media(frame, index, out),
        }
    }

    /// A DTMF digit the caller pressed.
    pub fn dtmf(&mut self, digit: char, duration_ms: u32) -> WireMsg {
        match self {
            Codec::Native(c) => c.dtmf(digit, duration_ms),
            Codec::Twilio(c) => c.dtmf(digit),
            Codec::AudioFork(c) => c.dtmf(digit, duration_ms),
        }
    }

    /// A transfer's progress: only the native mode has a message for it (Twilio Media
    /// Streams and mod_audio_fork document none), `None` for the others.
    pub fn transfer(
        &mut self,
        target: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Option<WireMsg> {
        match self {
            Codec::Native(c) => Some(c.transfer(target, status, reason)),
            Codec::Twilio(_) | Codec::AudioFork(_) => None,
        }
    }

    /// Playback reached the mark `name` (or, with `cleared`, it was dropped by a clear).
    pub fn mark(&mut self, name: &str, cleared: bool) -> WireMsg {
        match self {
            Codec::Native(c) => c.mark(name, cleared),
            Codec::Twilio(c) => c.mark(name),
            Codec::AudioFork(c) => c.mark(name, cleared),
        }
    }

    /// The last message of the stream.
    pub fn stop(&mut self, reason: &str, counters: &StopCounters) -> WireMsg {
        match self {
            Codec::Native(c) => c.stop(reason, counters),
            Codec::Twilio(c) => c.stop(),
            Codec::AudioFork(c) => c.stop(reason, counters),
        }
    }

    /// Interprets one message from the service. `Ok(None)` means "valid, nothing to do".
    pub fn decode(&mut self, msg: Incoming<'_>) -> Result<Option<ServiceCommand>, ProtocolError> {
        match self {
            Codec::Native(c) => c.decode(msg),
            Codec::Twilio(c) => c.decode(msg),
            Codec::AudioFork(c) => c.decode(msg),
        }
    }
}

/// Parses JSON text into `T`, mapping errors to [`ProtocolError::InvalidJson`].
fn parse_json<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, ProtocolError> {
    serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))
}

/// Serialises a message struct. Serialising these plain structs cannot fail; should it ever,
/// an empty JSON object goes out rather than a panic.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

/// Valid DTMF digits (RFC 4733 events 0–15).
pub fn is_dtmf_digit(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// Validates a digit string from the service (non-empty, at most 64 digits, all valid).
fn check_digits(digits: &str) -> Result<(), ProtocolError> {
    if digits.is_empty()
        || digits.len() > 64
        || !digits
            .chars()
            .all(|c| is_dtmf_digit(c.to_ascii_uppercase()))
    {
        return Err(ProtocolError::MissingField("digits"));
    }
    Ok(())
}

/// Validates a mark name (non-empty, at most 256 bytes).
fn check_mark_name(name: &str) -> Result<(), ProtocolError> {
    if name.is_empty() || name.len() > 256 {
        return Err(ProtocolError::MissingField("name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fatal_classification_and_close_codes() {
        assert!(ProtocolError::InvalidJson("x".into()).is_fatal());
        assert!(!ProtocolError::UnknownEvent("x".into()).is_fatal());
        assert!(!ProtocolError::UnsupportedAudio("x".into()).is_fatal());
        assert_eq!(
            ProtocolError::TooLarge { size: 2, max: 1 }.close_code(),
            1009
        );
        assert_eq!(ProtocolError::UnexpectedBinary("twilio").close_code(), 1003);
        assert_eq!(ProtocolError::MissingField("x").close_code(), 1007);
    }

    #[test]
    fn close_reason_fits_a_control_frame() {
        let e = ProtocolError::InvalidJson("é".repeat(200));
        let r = e.close_reason();
        assert!(r.len() <= 123);
        assert!(r.starts_with("invalid JSON"));
    }

    #[test]
    fn digits_are_validated() {
        assert!(check_digits("0123456789*#ABCDabcd").is_ok());
        assert!(check_digits("").is_err());
        assert!(check_digits("12x").is_err());
        assert!(check_digits(&"1".repeat(65)).is_err());
    }
}
