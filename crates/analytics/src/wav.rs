//! A streaming 16-bit PCM WAV writer that can be reopened to append (a stream that
//! reconnects keeps one file).

use std::io::SeekFrom;
use std::path::Path;

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

const HEADER: u64 = 44;

/// An open WAV file.
#[derive(Debug)]
pub struct WavSink {
    file: BufWriter<File>,
    data_len: u64,
}

impl WavSink {
    /// Opens `path` for appending, or creates it with a header for `channels` × `rate` Hz.
    pub async fn open(path: &Path, channels: u16, rate: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .await?;
        let len = file.metadata().await?.len();
        let mut file = BufWriter::with_capacity(64 * 1024, file);
        let data_len = if len >= HEADER {
            file.seek(SeekFrom::End(0)).await?;
            len - HEADER
        } else {
            file.get_mut().set_len(0).await?;
            file.write_all(&header(channels, rate, 0)).await?;
            0
        };
        Ok(WavSink { file, data_len })
    }

    /// Appends samples.
    pub async fn write(&mut self, samples: &[i16]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        self.file.write_all(&bytes).await?;
        self.data_len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the sizes into the header and flushes; writing may continue afterwards.
    pub async fn finalize(&mut self) -> std::io::Result<()> {
        let data = u32::try_from(self.data_len).unwrap_or(u32::MAX);
        self.file.seek(SeekFrom::Start(4)).await?;
        self.file
            .write_all(&data.saturating_add(36).to_le_bytes())
            .await?;
        self.file.seek(SeekFrom::Start(40)).await?;
        self.file.write_all(&data.to_le_bytes()).await?;
        self.file.seek(SeekFrom::End(0)).await?;
        self.file.flush().await
    }
}

fn header(channels: u16, rate: u32, data_len: u32) -> [u8; 44] {
    let block = channels * 2;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn writes_reopens_and_appends() {
        let dir = std::env::temp_dir().join(format!("siphon-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        let _ = std::fs::remove_file(&path);
        let mut w = WavSink::open(&path, 1, 8000).await.unwrap();
        w.write(&[1, 2, 3]).await.unwrap();
        w.finalize().await.unwrap();
        drop(w);
        let mut w = WavSink::open(&path, 1, 8000).await.unwrap();
        w.write(&[4]).await.unwrap();
        w.finalize().await.unwrap();
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
