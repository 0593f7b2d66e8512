//! The WAV files a service may send in audio_fork's `playAudio` (`audioContentType:
//! "wav"`): RIFF/WAVE with 16-bit PCM, 8-bit A-law or 8-bit µ-law, one or two channels.
//! The chunk walk is `siphon_media::wav::chunks` (shared with prompts); the format rules
//! are this protocol's.

use bytes::Bytes;
use siphon_media::wav::{FORMAT_ALAW, FORMAT_MULAW, FORMAT_PCM, WavFormat};

use super::ProtocolError;
use crate::config::{AudioFormat, Encoding};

/// Splits a WAV file into its format and its sample data (a slice of `file`, no copy).
pub fn parse(file: &Bytes) -> Result<(AudioFormat, Bytes), ProtocolError> {
    let found = siphon_media::wav::chunks(file)
        .map_err(|e| ProtocolError::InvalidAudio(format!("WAV: {e}")))?;
    let format = audio_format(found.format)?;
    // Some writers leave the data size at 0 or 0xffffffff when streaming: take what is
    // there.
    let end = if found.data_declared == 0 {
        file.len()
    } else {
        found.data_end(file.len())
    };
    let mut data = file.slice(found.data_start..end);
    let unit = format.encoding.bytes_per_sample() * usize::from(format.channels);
    data.truncate(data.len() - data.len() % unit);
    Ok((format, data))
}

fn audio_format(f: WavFormat) -> Result<AudioFormat, ProtocolError> {
    let WavFormat {
        tag,
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
    } = f;
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 16) => Encoding::L16,
        (FORMAT_ALAW, 8) => Encoding::Pcma,
        (FORMAT_MULAW, 8) => Encoding::Pcmu,
        _ => {
            return Err(ProtocolError::UnsupportedAudio(format!(
                "WAV format {tag} with {bits}-bit samples"
            )));
        }
    };
    if !(1..=2).contains(&channels) {
        return Err(ProtocolError::UnsupportedAudio(format!(
            "WAV with {channels} channels"
        )));
    }
    if !(8000..=48000).contains(&rate) {
        return Err(ProtocolError::UnsupportedAudio(format!("WAV at {rate} Hz")));
    }
    Ok(AudioFormat {
        encoding,
        sample_rate: rate,
        channels: channels as u8,
    })
}

#[cfg(test)]
pub(crate) fn build(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVE");
    v.extend_from_slice(b"fmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_pcm16_and_g711() {
        let file = Bytes::from(build(1, 1, 16000, 16, &[1, 0, 2, 0, 3, 0]));
        let (f, d) = parse(&file).unwrap();
        assert_eq!(
            f,
            AudioFormat {
                encoding: Encoding::L16,
                sample_rate: 16000,
                channels: 1
            }
        );
        assert_eq!(&d[..], &[1, 0, 2, 0, 3, 0]);

        let file = Bytes::from(build(7, 1, 8000, 8, &[0xff; 5]));
        let (f, d) = parse(&file).unwrap();
        assert_eq!(f.encoding, Encoding::Pcmu);
        assert_eq!(d.len(), 5);
        let file = Bytes::from(build(6, 2, 8000, 8, &[0xd5; 5]));
        let (f, d) = parse(&file).unwrap();
        assert_eq!((f.encoding, f.channels), (Encoding::Pcma, 2));
        assert_eq!(d.len(), 4, "trailing half sample frame is cut");
    }

    #[test]
    fn skips_unknown_chunks_and_tolerates_streaming_sizes() {
        let mut v = build(1, 1, 8000, 16, &[9, 0, 8, 0]);
        // Insert a LIST chunk of odd size (padded) before data.
        let at = 36;
        let mut list = b"LIST".to_vec();
        list.extend_from_slice(&3u32.to_le_bytes());
        list.extend_from_slice(&[1, 2, 3, 0]);
        v.splice(at..at, list);
        let data_size_at = v.len() - 4 - 4;
        v[data_size_at..data_size_at + 4].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        let (_, d) = parse(&Bytes::from(v)).unwrap();
        assert_eq!(&d[..], &[9, 0, 8, 0]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for junk in [
            &b""[..],
            b"RIFF",
            b"RIFF\0\0\0\0WAVE",
            b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff",
            b"RIFF\0\0\0\0WAVEdata\0\0\0\0",
            b"RIFX\0\0\0\0WAVE",
        ] {
            assert!(
                matches!(
                    parse(&Bytes::copy_from_slice(junk)),
                    Err(ProtocolError::InvalidAudio(_))
                ),
                "{junk:?}"
            );
        }
        let mp3ish = Bytes::from(build(85, 1, 8000, 0, &[0; 4]));
        assert!(matches!(
            parse(&mp3ish),
            Err(ProtocolError::UnsupportedAudio(_))
        ));
        let six = Bytes::from(build(1, 6, 8000, 16, &[0; 12]));
        assert!(matches!(
            parse(&six),
            Err(ProtocolError::UnsupportedAudio(_))
        ));
    }
}
