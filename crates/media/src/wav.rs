//! WAV (RIFF) reading: the chunk walk every WAV reader in Siphon uses ([`chunks`]), and the
//! prompt reader on top of it ([`Wav`]): PCM 16-bit mono at 8 or 16 kHz, and G.711 A-law
//! (format 6) or µ-law (format 7) 8-bit mono at 8 kHz, plain or as
//! `WAVE_FORMAT_EXTENSIBLE`. The fork crate reads the WAV audio a service sends with
//! [`chunks`] and its own format rules.
//!
//! Pure: it parses bytes the caller read from disk, borrowing the sample data. Prompts are
//! loaded once, not per packet, so the conversions ([`Wav::to_pcm`], [`Wav::to_g711`]) return
//! fresh `Vec`s.
//!
//! Anything else (stereo, 8/24/32-bit PCM, float, 44.1 kHz, ADPCM, ...) is a typed
//! [`WavError`], so a bad prompt is caught when the server loads its configuration, not in a
//! call. One leniency: a `data` chunk whose declared size runs past the end of the file (what
//! streaming writers leave behind) is read up to the end of the file.
//!
//! Why not `hound` (which writes the WAV files of `siphon-analytics`): its reader refuses
//! format tags 6 and 7 (`Error::Unsupported`), so it cannot read G.711 prompts or the
//! A-law/µ-law WAVs audio_fork services send; it does not skip the pad byte after an
//! odd-sized chunk (a `LIST` chunk of odd size makes it misread the rest); and it copies
//! samples out through `io::Read` where these readers hand out a slice of the file.

use std::time::Duration;

use crate::SAMPLE_RATE;
use crate::g711::G711;
use crate::resample::Downsampler;

/// `wFormatTag` of linear PCM.
pub const FORMAT_PCM: u16 = 1;
/// `wFormatTag` of G.711 A-law.
pub const FORMAT_ALAW: u16 = 6;
/// `wFormatTag` of G.711 µ-law.
pub const FORMAT_MULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Why a WAV file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Doesn't start with `RIFF`.
    #[error("not a RIFF file")]
    NotRiff,
    /// RIFF, but not `WAVE`.
    #[error("RIFF file is not WAVE")]
    NotWave,
    /// A chunk header or the `fmt ` chunk is cut short.
    #[error("WAV file truncated")]
    Truncated,
    /// No `fmt ` chunk before the `data` chunk.
    #[error("WAV file has no fmt chunk before its data")]
    MissingFormat,
    /// No `data` chunk.
    #[error("WAV file has no data chunk")]
    MissingData,
    /// A format tag other than PCM, A-law, µ-law (or those inside EXTENSIBLE).
    #[error("unsupported WAV format tag {0:#06x}")]
    UnsupportedFormat(u16),
    /// Not mono.
    #[error("unsupported channel count {0}, prompts must be mono")]
    UnsupportedChannels(u16),
    /// Not 8 kHz (or 16 kHz for PCM).
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedSampleRate(u32),
    /// PCM that isn't 16-bit, or G.711 that isn't 8-bit.
    #[error("unsupported {bits}-bit samples for format {format}")]
    UnsupportedBitsPerSample {
        /// Format tag.
        format: u16,
        /// Bits per sample.
        bits: u16,
    },
}

/// How the samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    /// Signed 16-bit little-endian linear PCM.
    Pcm16,
    /// G.711, one byte per sample.
    G711(G711),
}

/// A parsed WAV file, borrowing its sample data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wav<'a> {
    /// 8000 or 16000 (16000 only for PCM).
    pub sample_rate: u32,
    /// Sample format.
    pub encoding: WavEncoding,
    /// The raw sample bytes (a trailing odd byte of 16-bit PCM is dropped).
    pub data: &'a [u8],
}

/// The `fmt ` chunk's fields; `tag` is the sub-format's for `WAVE_FORMAT_EXTENSIBLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// `wFormatTag`: 1 PCM, 6 A-law, 7 µ-law, ...
    pub tag: u16,
    /// `nChannels`.
    pub channels: u16,
    /// `nSamplesPerSec`.
    pub sample_rate: u32,
    /// `wBitsPerSample`.
    pub bits_per_sample: u16,
}

/// Where a WAV file's samples are, as [`chunks`] found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavChunks {
    /// The last `fmt ` chunk before the data.
    pub format: WavFormat,
    /// Offset of the first byte of the `data` chunk's body.
    pub data_start: usize,
    /// The size the `data` chunk declares: 0 or more than the file holds when a streaming
    /// writer never came back to fill it in.
    pub data_declared: u32,
}

impl WavChunks {
    /// The data chunk's bytes as declared, cut at the end of the file.
    pub fn data_end(&self, file_len: usize) -> usize {
        self.data_start
            .saturating_add(self.data_declared as usize)
            .min(file_len)
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walks a RIFF/WAVE file's chunks up to the `data` chunk, skipping any others (padded to
/// even sizes). Only the structure is checked here; which formats are acceptable is the
/// caller's decision.
pub fn chunks(bytes: &[u8]) -> Result<WavChunks, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut format = None;
    let mut at = 12;
    while at < bytes.len() {
        if bytes.len() - at < 8 {
            return Err(WavError::Truncated);
        }
        let id = &bytes[at..at + 4];
        let size = le32(bytes, at + 4);
        let body_start = at + 8;
        let available = bytes.len() - body_start;
        match id {
            b"fmt " => {
                let size = size as usize;
                if size < 16 || size > available {
                    return Err(WavError::Truncated);
                }
                format = Some(parse_fmt(&bytes[body_start..body_start + size])?);
            }
            b"data" => {
                let Some(format) = format else {
                    return Err(WavError::MissingFormat);
                };
                return Ok(WavChunks {
                    format,
                    data_start: body_start,
                    data_declared: size,
                });
            }
            _ => {}
        }
        let size = size as usize;
        at = body_start.saturating_add(size).saturating_add(size & 1);
    }
    Err(WavError::MissingData)
}

fn parse_fmt(f: &[u8]) -> Result<WavFormat, WavError> {
    let mut tag = le16(f, 0);
    if tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the SubFormat GUID, whose first two
        // bytes are the classic format tag.
        if f.len() < 40 {
            return Err(WavError::Truncated);
        }
        tag = le16(f, 24);
    }
    Ok(WavFormat {
        tag,
        channels: le16(f, 2),
        sample_rate: le32(f, 4),
        bits_per_sample: le16(f, 14),
    })
}

impl<'a> Wav<'a> {
    /// Parses a whole file's bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WavError> {
        let found = chunks(bytes)?;
        let (sample_rate, encoding) = prompt_format(found.format)?;
        let start = found.data_start;
        let mut len = found.data_end(bytes.len()) - start;
        if encoding == WavEncoding::Pcm16 {
            len &= !1;
        }
        Ok(Wav {
            sample_rate,
            encoding,
            data: &bytes[start..start + len],
        })
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        match self.encoding {
            WavEncoding::Pcm16 => self.data.len() / 2,
            WavEncoding::G711(_) => self.data.len(),
        }
    }

    /// Playing time.
    pub fn duration(&self) -> Duration {
        let n = self.sample_count() as u64;
        Duration::from_nanos(n * 1_000_000_000 / u64::from(self.sample_rate))
    }

    /// The samples as linear PCM at the file's own rate.
    pub fn to_pcm(&self) -> Vec<i16> {
        match self.encoding {
            WavEncoding::Pcm16 => self
                .data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
            WavEncoding::G711(law) => {
                let mut out = vec![0; self.data.len()];
                law.decode(self.data, &mut out);
                out
            }
        }
    }

    /// The samples as linear PCM at 8 kHz (16 kHz files go through the half-band
    /// down-sampler).
    pub fn to_pcm_8k(&self) -> Vec<i16> {
        let pcm = self.to_pcm();
        if self.sample_rate == SAMPLE_RATE {
            return pcm;
        }
        let mut down = Downsampler::new();
        let mut out = vec![0; down.output_len(pcm.len())];
        let n = down.process(&pcm, &mut out);
        out.truncate(n);
        out
    }

    /// The prompt as a G.711 payload stream at 8 kHz, ready to be cut into 160-byte frames.
    /// A file already in `law` is copied byte for byte (no decode/encode round trip).
    pub fn to_g711(&self, law: G711) -> Vec<u8> {
        if self.encoding == WavEncoding::G711(law) {
            return self.data.to_vec();
        }
        let pcm = self.to_pcm_8k();
        let mut out = vec![0; pcm.len()];
        law.encode(&pcm, &mut out);
        out
    }
}

/// What a prompt may be.
fn prompt_format(f: WavFormat) -> Result<(u32, WavEncoding), WavError> {
    let WavFormat {
        tag,
        channels,
        sample_rate,
        bits_per_sample: bits,
    } = f;
    if channels != 1 {
        return Err(WavError::UnsupportedChannels(channels));
    }
    let encoding = match tag {
        FORMAT_PCM => {
            if bits != 16 {
                return Err(WavError::UnsupportedBitsPerSample { format: tag, bits });
            }
            if sample_rate != 8000 && sample_rate != 16000 {
                return Err(WavError::UnsupportedSampleRate(sample_rate));
            }
            WavEncoding::Pcm16
        }
        FORMAT_ALAW | FORMAT_MULAW => {
            if bits != 8 {
                return Err(WavError::UnsupportedBitsPerSample { format: tag, bits });
            }
            if sample_rate != 8000 {
                return Err(WavError::UnsupportedSampleRate(sample_rate));
            }
            WavEncoding::G711(if tag == FORMAT_ALAW {
                G711::Pcma
            } else {
                G711::Pcmu
            })
        }
        other => return Err(WavError::UnsupportedFormat(other)),
    };
    Ok((sample_rate, encoding))
}
