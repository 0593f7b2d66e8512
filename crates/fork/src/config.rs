//! Per-fork settings, the audio format the server must deliver, and the call's metadata.
//!
//! [`ForkConfig`] deserialises from the server's TOML dialplan (`[[dialplan.forks]]`); every
//! field has a default, so a fork needs only `url` (and usually `mode`). Durations are written
//! in milliseconds with a `_ms` suffix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Which wire protocol the fork speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Siphon's own protocol: JSON events plus binary audio frames.
    #[default]
    Native,
    /// Twilio Media Streams: JSON only, base64 µ-law 8 kHz.
    Twilio,
    /// FreeSWITCH mod_audio_fork as used by jambonz's `listen` verb: one JSON preamble, then
    /// binary 16-bit little-endian PCM.
    #[serde(alias = "audio-fork", alias = "jambonz")]
    AudioFork,
}

impl Mode {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Twilio => "twilio",
            Mode::AudioFork => "audio_fork",
        }
    }
}

/// Sample encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// G.711 µ-law, one byte per sample.
    Pcmu,
    /// G.711 A-law, one byte per sample.
    Pcma,
    /// Signed 16-bit linear PCM, **little-endian** (not RTP's big-endian L16), two bytes per
    /// sample.
    #[default]
    #[serde(alias = "pcm_s16le", alias = "linear16")]
    L16,
}

impl Encoding {
    /// Bytes per sample per channel.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::Pcmu | Encoding::Pcma => 1,
            Encoding::L16 => 2,
        }
    }

    /// The name Siphon's native protocol uses for this encoding.
    pub fn native_name(self) -> &'static str {
        match self {
            Encoding::Pcmu => "pcmu",
            Encoding::Pcma => "pcma",
            Encoding::L16 => "pcm_s16le",
        }
    }
}

/// Which of the call's audio is forked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracks {
    /// The caller's audio (what Siphon receives).
    #[default]
    Inbound,
    /// What Siphon plays to the caller.
    Outbound,
    /// Both, laid out according to [`Mix`].
    Both,
}

/// How two tracks share the stream when [`Tracks::Both`] is forked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// One channel: both tracks summed.
    #[serde(alias = "mixed")]
    Mono,
    /// Two interleaved channels: channel 0 inbound, channel 1 outbound.
    #[default]
    Stereo,
}

/// Which root certificates `wss://` connections trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsRoots {
    /// Mozilla's roots bundled into the binary (webpki-roots).
    #[default]
    Webpki,
    /// The operating system's certificate store.
    Native,
}

/// The exact audio the server hands to [`crate::Fork::send_audio`] (and the format of audio
/// returned in [`crate::ServiceCommand::Audio`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Sample encoding.
    pub encoding: Encoding,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u8,
}

impl AudioFormat {
    /// Bytes in `ms` milliseconds of this audio (all channels).
    pub fn bytes_for_ms(&self, ms: u32) -> usize {
        let samples = self.sample_rate as usize * ms as usize / 1000;
        samples * usize::from(self.channels.max(1)) * self.encoding.bytes_per_sample()
    }

    /// Bytes in one 20 ms frame.
    pub fn frame_bytes(&self) -> usize {
        self.bytes_for_ms(FRAME_MS)
    }

    /// Playing time of `bytes` of this audio, in microseconds.
    pub fn duration_us(&self, bytes: usize) -> u64 {
        let per_second = self.sample_rate as u64
            * u64::from(self.channels.max(1))
            * self.encoding.bytes_per_sample() as u64;
        if per_second == 0 {
            return 0;
        }
        bytes as u64 * 1_000_000 / per_second
    }
}

/// Every audio frame on a fork covers this many milliseconds.
pub const FRAME_MS: u32 = 20;

/// Metadata about the call, sent to the service in the protocol's start message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMeta {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The caller (From URI or user part).
    pub from: String,
    /// The callee (To URI or user part).
    pub to: String,
    /// The call's negotiated codec: `"PCMU"` or `"PCMA"`.
    pub codec: String,
    /// Account identifier, sent as Twilio's `accountSid` / jambonz's `accountSid`.
    pub account_sid: Option<String>,
}

/// Settings of one fork.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForkConfig {
    /// `ws://` or `wss://` URL of the service.
    pub url: String,
    /// Wire protocol.
    pub mode: Mode,
    /// Encoding (native only: Twilio forces µ-law, audio_fork forces L16).
    pub encoding: Encoding,
    /// 8000 or 16000 (Twilio forces 8000).
    pub sample_rate: u32,
    /// Which audio to fork.
    pub tracks: Tracks,
    /// Layout of two tracks (Twilio always sends them as separate `media` messages).
    pub mix: Mix,
    /// Passed to the service: Twilio's `customParameters`, native's `customParameters`,
    /// merged into audio_fork's preamble like jambonz's `metadata`.
    pub custom_parameters: BTreeMap<String, String>,
    /// Extra HTTP headers on the WebSocket upgrade (e.g. `Authorization: Bearer ...`). In TOML
    /// either a table (`headers = { Authorization = "Bearer x" }`) or a list of pairs.
    #[serde(deserialize_with = "de_headers")]
    pub headers: Vec<(String, String)>,
    /// Bound on each connection attempt; for a `required` fork, also the bound on getting the
    /// first connection up before the call is failed.
    #[serde(rename = "connect_timeout_ms", deserialize_with = "de_ms")]
    pub connect_timeout: Duration,
    /// If the fork cannot connect within `connect_timeout`, the call ends
    /// ([`crate::ServiceCommand::Failed`]). Otherwise the fork is best-effort.
    pub required: bool,
    /// Audio kept while the service is unreachable or slow; the oldest is dropped past it.
    #[serde(rename = "buffer_ms", deserialize_with = "de_ms")]
    pub buffer: Duration,
    /// Largest message accepted from the service; a larger one closes the fork.
    pub max_message_bytes: usize,
    /// Audio from the service waiting for the pacer; past it the oldest is dropped.
    #[serde(rename = "playback_buffer_ms", deserialize_with = "de_ms")]
    pub playback_buffer: Duration,
    /// WebSocket ping period; a connection silent for two periods is considered dead.
    /// Zero disables keepalive.
    #[serde(rename = "ping_interval_ms", deserialize_with = "de_ms")]
    pub ping_interval: Duration,
    /// First reconnect delay (doubles per failure, with jitter).
    #[serde(rename = "reconnect_min_ms", deserialize_with = "de_ms")]
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    #[serde(rename = "reconnect_max_ms", deserialize_with = "de_ms")]
    pub reconnect_max: Duration,
    /// How long [`crate::Fork::stop`] may spend flushing, sending `stop` and closing.
    #[serde(rename = "stop_timeout_ms", deserialize_with = "de_ms")]
    pub stop_timeout: Duration,
    /// Root certificates for `wss://`.
    pub tls_roots: TlsRoots,
    /// A PEM file of further root certificates to trust for `wss://` (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// Frames that may wait between the media task and the fork task before new ones are
    /// dropped (counted as `frames_dropped_queue_full`). Forks started with
    /// [`crate::start_inline`] have no such queue (the backlog, [`ForkConfig::buffer`], bounds
    /// them).
    pub queue_frames: usize,
}

impl Default for ForkConfig {
    fn default() -> Self {
        ForkConfig {
            url: String::new(),
            mode: Mode::Native,
            encoding: Encoding::L16,
            sample_rate: 8000,
            tracks: Tracks::Inbound,
            mix: Mix::Stereo,
            custom_parameters: BTreeMap::new(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            required: false,
            buffer: Duration::from_secs(2),
            max_message_bytes: 1 << 20,
            playback_buffer: Duration::from_secs(20),
            ping_interval: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(2),
            tls_roots: TlsRoots::Webpki,
            tls_ca_file: None,
            queue_frames: 50,
        }
    }
}

// Header values carry bearer tokens: Debug shows names only.
impl fmt::Debug for ForkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ForkConfig")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .field("encoding", &self.encoding)
            .field("sample_rate", &self.sample_rate)
            .field("tracks", &self.tracks)
            .field("mix", &self.mix)
            .field("custom_parameters", &self.custom_parameters)
            .field("headers", &header_names)
            .field("connect_timeout", &self.connect_timeout)
            .field("required", &self.required)
            .field("buffer", &self.buffer)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("playback_buffer", &self.playback_buffer)
            .field("ping_interval", &self.ping_interval)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("stop_timeout", &self.stop_timeout)
            .field("tls_roots", &self.tls_roots)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("queue_frames", &self.queue_frames)
            .finish()
    }
}

/// Why a [`ForkConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL is not `ws://host...` or `wss://host...`.
    #[error("fork url must start with ws:// or wss:// and name a host: {0:?}")]
    Url(String),
    /// Only 8000 and 16000 Hz are supported.
    #[error("fork sample_rate must be 8000 or 16000, not {0}")]
    SampleRate(u32),
    /// A header name or value is not valid HTTP.
    #[error("fork header {0:?} is not a valid HTTP header")]
    Header(String),
    /// A size or duration is zero or absurd.
    #[error("fork setting {0} is out of range")]
    Range(&'static str),
}

impl ForkConfig {
    /// A configuration with defaults for everything but the URL and mode.
    pub fn new(url: impl Into<String>, mode: Mode) -> Self {
        ForkConfig {
            url: url.into(),
            mode,
            ..ForkConfig::default()
        }
    }

    /// What the server must deliver to [`crate::Fork::send_audio`]: one 20 ms frame of this
    /// format per call, channels interleaved (inbound first) when two.
    ///
    /// - Twilio: µ-law 8 kHz; two channels only when both tracks are forked (the fork splits
    ///   them into `inbound` and `outbound` media messages).
    /// - audio_fork: L16 at the configured rate.
    /// - native: the configured encoding and rate.
    ///
    /// Two channels when both tracks are forked as stereo, otherwise one.
    pub fn effective_format(&self) -> AudioFormat {
        let stereo = self.tracks == Tracks::Both && self.mix == Mix::Stereo;
        match self.mode {
            Mode::Twilio => AudioFormat {
                encoding: Encoding::Pcmu,
                sample_rate: 8000,
                channels: if self.tracks == Tracks::Both { 2 } else { 1 },
            },
            Mode::AudioFork => AudioFormat {
                encoding: Encoding::L16,
                sample_rate: self.sample_rate,
                channels: if stereo { 2 } else { 1 },
            },
            Mode::Native => AudioFormat {
                encoding: self.encoding,
                sample_rate: self.sample_rate,
                channels: if stereo { 2 } else { 1 },
            },
        }
    }

    /// The layout actually used for two tracks (Twilio always separates them).
    pub fn effective_mix(&self) -> Mix {
        if self.mode == Mode::Twilio {
            Mix::Stereo
        } else {
            self.mix
        }
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rest = self
            .url
            .strip_prefix("ws://")
            .or_else(|| self.url.strip_prefix("wss://"))
            .ok_or_else(|| ConfigError::Url(crate::redact_url(&self.url)))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(ConfigError::Url(crate::redact_url(&self.url)));
        }
        if self.mode != Mode::Twilio && !matches!(self.sample_rate, 8000 | 16000) {
            return Err(ConfigError::SampleRate(self.sample_rate));
        }
        for (name, value) in &self.headers {
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let value_ok = value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
            if !name_ok || !value_ok {
                return Err(ConfigError::Header(name.clone()));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Range("max_message_bytes"));
        }
        if self.queue_frames == 0 || self.queue_frames > 100_000 {
            return Err(ConfigError::Range("queue_frames"));
        }
        // Durations stay below an hour so that deadline arithmetic cannot overflow.
        const HOUR: Duration = Duration::from_secs(3600);
        if self.connect_timeout.is_zero() || self.connect_timeout > HOUR {
            return Err(ConfigError::Range("connect_timeout_ms"));
        }
        if self.reconnect_min.is_zero()
            || self.reconnect_max < self.reconnect_min
            || self.reconnect_max > HOUR
        {
            return Err(ConfigError::Range("reconnect_min_ms/reconnect_max_ms"));
        }
        if self.ping_interval > HOUR {
            return Err(ConfigError::Range("ping_interval_ms"));
        }
        if self.stop_timeout > HOUR {
            return Err(ConfigError::Range("stop_timeout_ms"));
        }
        if self.buffer > Duration::from_secs(600) || self.playback_buffer > Duration::from_secs(600)
        {
            return Err(ConfigError::Range("buffer_ms/playback_buffer_ms"));
        }
        Ok(())
    }

    /// Frames kept while disconnected or slow (`buffer` / 20 ms, at least one).
    pub fn buffer_frames(&self) -> usize {
        let frames = self.buffer.as_millis() / u128::from(FRAME_MS);
        usize::try_from(frames).unwrap_or(usize::MAX).max(1)
    }
}

fn de_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeadersRepr {
    Map(BTreeMap<String, String>),
    List(Vec<(String, String)>),
}

fn de_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    Ok(match HeadersRepr::deserialize(d)? {
        HeadersRepr::Map(m) => m.into_iter().collect(),
        HeadersRepr::List(l) => l,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn effective_format_per_mode() {
        let mut c = ForkConfig::new("ws://x", Mode::Twilio);
        c.sample_rate = 16000;
        c.encoding = Encoding::L16;
        assert_eq!(
            c.effective_format(),
            AudioFormat {
                encoding: Encoding::Pcmu,
                sample_rate: 8000,
                channels: 1
            }
        );
        c.tracks = Tracks::Both;
        c.mix = Mix::Mono;
        assert_eq!(c.effective_format().channels, 2);
        assert_eq!(c.effective_mix(), Mix::Stereo);

        let mut c = ForkConfig::new("ws://x", Mode::AudioFork);
        c.encoding = Encoding::Pcma;
        c.sample_rate = 16000;
        c.tracks = Tracks::Both;
        c.mix = Mix::Mono;
        let f = c.effective_format();
        assert_eq!(
            (f.encoding, f.sample_rate, f.channels),
            (Encoding::L16, 16000, 1)
        );
        assert_eq!(f.frame_bytes(), 640);

        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.encoding = Encoding::Pcma;
        c.tracks = Tracks::Both;
        let f = c.effective_format();
        assert_eq!(
            (f.encoding, f.sample_rate, f.channels),
            (Encoding::Pcma, 8000, 2)
        );
        assert_eq!(f.frame_bytes(), 320);
        assert_eq!(f.duration_us(320), 20_000);
    }

    #[test]
    fn validate_rejects_bad_settings() {
        assert!(
            ForkConfig::new("ws://127.0.0.1:9/x", Mode::Native)
                .validate()
                .is_ok()
        );
        assert!(
            ForkConfig::new("wss://example.com", Mode::Native)
                .validate()
                .is_ok()
        );
        for bad in ["http://x", "ws://", "wss:///path", "x"] {
            assert!(matches!(
                ForkConfig::new(bad, Mode::Native).validate(),
                Err(ConfigError::Url(_))
            ));
        }
        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.sample_rate = 44100;
        assert_eq!(c.validate(), Err(ConfigError::SampleRate(44100)));
        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.headers.push(("Bad Name".into(), "v".into()));
        assert!(matches!(c.validate(), Err(ConfigError::Header(_))));
        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.headers.push(("X-Ok".into(), "line\nbreak".into()));
        assert!(matches!(c.validate(), Err(ConfigError::Header(_))));
        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.ping_interval = Duration::from_millis(u64::MAX);
        assert!(matches!(c.validate(), Err(ConfigError::Range(_))));
        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.reconnect_max = Duration::from_millis(1);
        assert!(matches!(c.validate(), Err(ConfigError::Range(_))));
    }

    #[test]
    fn debug_hides_header_values() {
        let mut c = ForkConfig::new("ws://x", Mode::Native);
        c.headers
            .push(("Authorization".into(), "Bearer s3cret".into()));
        let s = format!("{c:?}");
        assert!(s.contains("Authorization"));
        assert!(!s.contains("s3cret"));
    }

    #[test]
    fn buffer_frames_rounds_down_but_keeps_one() {
        let mut c = ForkConfig::default();
        assert_eq!(c.buffer_frames(), 100);
        c.buffer = Duration::from_millis(5);
        assert_eq!(c.buffer_frames(), 1);
    }
}
