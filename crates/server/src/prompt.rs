//! Prompts that `play` routes loop: decoded once when the configuration loads, shared
//! read-only by every call playing them. A leaf: imports nothing from the crate.

use siphon_media::g711::G711;
use siphon_media::{FRAME_SAMPLES, wav};

/// The prompt `602` plays when its route names no file: made for this project with
/// espeak-ng (see scripts/make-prompt.sh), 8 kHz 16-bit mono.
pub const BUILTIN_PROMPT: &[u8] = include_bytes!("../../../configs/prompts/welcome.wav");

/// A prompt decoded once at start and encoded for both laws, shared by every call playing
/// it (read-only, so sharing takes no lock).
#[derive(Debug)]
pub struct Prompt {
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
}

impl Prompt {
    /// Parses a WAV (PCM16 8/16 kHz or G.711) and pads it to whole 20 ms frames.
    pub fn from_wav(bytes: &[u8]) -> Result<Prompt, wav::WavError> {
        let wav = wav::Wav::parse(bytes)?;
        let pad = |mut v: Vec<u8>, silence: u8| {
            let rem = v.len() % FRAME_SAMPLES;
            if rem != 0 || v.is_empty() {
                v.resize(v.len() + FRAME_SAMPLES - rem, silence);
            }
            v
        };
        Ok(Prompt {
            pcmu: pad(wav.to_g711(G711::Pcmu), G711::Pcmu.silence()),
            pcma: pad(wav.to_g711(G711::Pcma), G711::Pcma.silence()),
        })
    }

    pub fn frames(&self, codec: G711) -> &[u8] {
        match codec {
            G711::Pcmu => &self.pcmu,
            G711::Pcma => &self.pcma,
        }
    }
}
