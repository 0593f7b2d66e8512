//! One 16-bit PCM WAV file per stream, written by `hound`; a stream that reconnects
//! reopens its file and appends (it keeps one file).
//!
//! The writes are plain blocking ones into a 64 KiB buffer: a frame is a few hundred bytes,
//! so the disk sees a write every few seconds of audio, which costs less than `tokio::fs`
//! handing every call to its blocking pool.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use hound::{SampleFormat, WavSpec, WavWriter};

/// Size of a canonical 16-bit PCM header, what `hound` writes for one or two channels.
const HEADER: u64 = 44;

/// An open WAV file.
pub struct WavSink {
    writer: WavWriter<BufWriter<File>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("spec", &self.writer.spec())
            .field("samples", &self.writer.len())
            .finish()
    }
}

impl WavSink {
    /// Opens `path` for appending, or creates it with a header for `channels` × `rate` Hz.
    pub fn open(path: &Path, channels: u16, rate: u32) -> io::Result<Self> {
        let existing = std::fs::metadata(path).is_ok_and(|m| m.len() >= HEADER);
        let writer = if existing {
            let writer = WavWriter::append(path).map_err(io_error)?;
            let spec = writer.spec();
            // Samples are written as i16; hound would panic on a file of another kind.
            if spec.sample_format != SampleFormat::Int || spec.bits_per_sample != 16 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not 16-bit PCM, cannot append to it", path.display()),
                ));
            }
            writer
        } else {
            let spec = WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: SampleFormat::Int,
            };
            let file = BufWriter::with_capacity(64 * 1024, File::create(path)?);
            WavWriter::new(file, spec).map_err(io_error)?
        };
        Ok(WavSink { writer })
    }

    /// Appends samples.
    pub fn write(&mut self, samples: &[i16]) -> io::Result<()> {
        let n = u32::try_from(samples.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many samples"))?;
        let mut w = self.writer.get_i16_writer(n);
        for s in samples {
            w.write_sample(*s);
        }
        w.flush().map_err(io_error)
    }

    /// Writes the sizes into the header and flushes; writing may continue afterwards.
    pub fn finalize(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(io_error)
    }
}

fn io_error(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn writes_reopens_and_appends() {
        let dir = std::env::temp_dir().join(format!("siphon-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        let _ = std::fs::remove_file(&path);
        let mut w = WavSink::open(&path, 1, 8000).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        w.finalize().unwrap();
        drop(w);
        let mut w = WavSink::open(&path, 1, 8000).unwrap();
        w.write(&[4]).unwrap();
        w.finalize().unwrap();
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 44 + 8);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 36 + 8);
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 8);
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 8000);
        assert_eq!(&bytes[44..], &[1, 0, 2, 0, 3, 0, 4, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
