//! The server's side of one media fork: turns a call leg's 20 ms frames (8 kHz linear, the
//! caller's and what Siphon plays) into the fork's wire format, and the service's audio back
//! into 8 kHz linear for the pacer. The WebSocket itself lives in `siphon_fork`; this owns
//! only the per-fork conversion state (resampler histories, a reusable frame buffer), so the
//! media task converts without locks and without touching other calls.

use bytes::{BufMut, BytesMut};
use siphon_fork::{AudioFormat, Encoding, Fork, ForkConfig, Mix, ServiceCommand, Tracks};
use siphon_media::FRAME_SAMPLES;
use siphon_media::g711::G711;
use siphon_media::resample::{Downsampler, Upsampler};
use tokio::time::Instant;

const WIDE: usize = 2 * FRAME_SAMPLES;

/// What a fork's service asked for during one pacer slot, beyond audio.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Hang up the call.
    Hangup,
    /// A required fork could not connect: end the call.
    Failed(String),
    /// Send these digits to the caller.
    Dtmf(String),
}

pub struct ForkTap {
    pub fork: Fork,
    pub required: bool,
    format: AudioFormat,
    tracks: Tracks,
    mix: Mix,
    up_in: Upsampler,
    up_out: Upsampler,
    down: Downsampler,
    frame: BytesMut,
}

impl ForkTap {
    pub fn new(fork: Fork, config: &ForkConfig) -> ForkTap {
        let format = config.effective_format();
        ForkTap {
            fork,
            required: config.required,
            format,
            tracks: config.tracks,
            mix: config.effective_mix(),
            up_in: Upsampler::new(),
            up_out: Upsampler::new(),
            down: Downsampler::new(),
            frame: BytesMut::with_capacity(format.frame_bytes() * 8),
        }
    }

    /// Sends one slot's audio to the fork. `None` for a track means nothing was heard or
    /// played in this slot; it is sent as silence when the other track has audio, so both
    /// tracks stay aligned slot by slot.
    pub fn push(
        &mut self,
        inbound: Option<&[i16; FRAME_SAMPLES]>,
        outbound: Option<&[i16; FRAME_SAMPLES]>,
        arrival: Instant,
    ) {
        let silence = [0i16; FRAME_SAMPLES];
        let (a, b) = match self.tracks {
            Tracks::Inbound => match inbound {
                Some(i) => (i, None),
                None => return,
            },
            Tracks::Outbound => match outbound {
                Some(o) => (o, None),
                None => return,
            },
            Tracks::Both => {
                if inbound.is_none() && outbound.is_none() {
                    return;
                }
                (
                    inbound.unwrap_or(&silence),
                    Some(outbound.unwrap_or(&silence)),
                )
            }
        };
        encode_frame(
            self.format,
            self.mix,
            a,
            b,
            (&mut self.up_in, &mut self.up_out),
            &mut self.frame,
        );
        // `split` hands the bytes over without copying; the buffer's spare capacity is
        // reused for the next frames until it runs out.
        let bytes = self.frame.split().freeze();
        if self.frame.capacity() < self.format.frame_bytes() {
            self.frame.reserve(self.format.frame_bytes() * 8);
        }
        self.fork.send_audio(bytes, arrival);
    }

    /// Takes this slot's commands from the service, up to one piece of audio, which is
    /// decoded into `out` (returns true then). Marks reached on the way are acknowledged.
    pub fn take_playback(
        &mut self,
        out: &mut [i16; FRAME_SAMPLES],
        requests: &mut Vec<Request>,
    ) -> bool {
        while let Some(cmd) = self.fork.try_recv() {
            match cmd {
                ServiceCommand::Audio { format, data } => {
                    return decode_frame(format, &data, &mut self.down, out);
                }
                ServiceCommand::Mark(name) => self.fork.mark_played(name),
                ServiceCommand::Clear => {}
                ServiceCommand::Hangup => requests.push(Request::Hangup),
                ServiceCommand::Dtmf(digits) => requests.push(Request::Dtmf(digits)),
                ServiceCommand::Failed(reason) => {
                    if self.required {
                        requests.push(Request::Failed(reason));
                    } else {
                        tracing::warn!(%reason, "best-effort fork failed; the call goes on");
                    }
                }
                ServiceCommand::Event { name, data } => {
                    tracing::info!(%name, %data, "fork event");
                }
            }
        }
        false
    }
}

/// Writes one 20 ms frame in `format`: `a` alone (mono), or `a` and `b` as stereo
/// (interleaved, a = left) or mixed to mono, at 8 or 16 kHz, G.711 or 16-bit little-endian.
pub fn encode_frame(
    format: AudioFormat,
    mix: Mix,
    a: &[i16; FRAME_SAMPLES],
    b: Option<&[i16; FRAME_SAMPLES]>,
    upsamplers: (&mut Upsampler, &mut Upsampler),
    out: &mut BytesMut,
) {
    let mut mixed = [0i16; FRAME_SAMPLES];
    let (a, b) = match (b, mix, format.channels) {
        (Some(b), Mix::Mono, _) | (Some(b), _, 1) => {
            for ((m, x), y) in mixed.iter_mut().zip(a).zip(b) {
                *m = x.saturating_add(*y);
            }
            (&mixed, None)
        }
        (b, _, _) => (a, b),
    };
    let mut wide_a = [0i16; WIDE];
    let mut wide_b = [0i16; WIDE];
    let (sa, sb): (&[i16], Option<&[i16]>) = if format.sample_rate == 16000 {
        upsamplers.0.process_frame(a, &mut wide_a);
        let sb = b.map(|b| {
            upsamplers.1.process_frame(b, &mut wide_b);
            &wide_b[..]
        });
        (&wide_a[..], sb)
    } else {
        (&a[..], b.map(|b| &b[..]))
    };
    let law = match format.encoding {
        Encoding::Pcmu => Some(G711::Pcmu),
        Encoding::Pcma => Some(G711::Pcma),
        Encoding::L16 => None,
    };
    let mut put = |s: i16| match law {
        Some(law) => out.put_u8(law.encode_sample(s)),
        None => out.put_i16_le(s),
    };
    match sb {
        Some(sb) => {
            for (x, y) in sa.iter().zip(sb) {
                put(*x);
                put(*y);
            }
        }
        None => sa.iter().for_each(|x| put(*x)),
    }
}

/// Decodes one piece of service audio into 20 ms of 8 kHz linear (first channel when
/// several); a short piece is padded with silence. Returns false for nothing usable.
pub fn decode_frame(
    format: AudioFormat,
    data: &[u8],
    down: &mut Downsampler,
    out: &mut [i16; FRAME_SAMPLES],
) -> bool {
    let channels = usize::from(format.channels.max(1));
    let law = match format.encoding {
        Encoding::Pcmu => Some(G711::Pcmu),
        Encoding::Pcma => Some(G711::Pcma),
        Encoding::L16 => None,
    };
    let width = if law.is_some() { 1 } else { 2 };
    let sample = |i: usize| -> i16 {
        let at = i * channels * width;
        match law {
            Some(law) => data.get(at).map_or(0, |b| law.decode_sample(*b)),
            None => match (data.get(at), data.get(at + 1)) {
                (Some(lo), Some(hi)) => i16::from_le_bytes([*lo, *hi]),
                _ => 0,
            },
        }
    };
    let frames_in = data.len() / (channels * width);
    if frames_in == 0 {
        return false;
    }
    if format.sample_rate == 16000 {
        let mut wide = [0i16; WIDE];
        for (i, w) in wide.iter_mut().enumerate() {
            *w = sample(i);
        }
        down.process_frame(&wide, out);
    } else {
        for (i, o) in out.iter_mut().enumerate() {
            *o = sample(i);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn fmt(encoding: Encoding, sample_rate: u32, channels: u8) -> AudioFormat {
        AudioFormat {
            encoding,
            sample_rate,
            channels,
        }
    }

    fn ramp(start: i16) -> [i16; FRAME_SAMPLES] {
        std::array::from_fn(|i| start + i as i16)
    }

    #[test]
    fn l16_mono_is_little_endian_samples() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let a = ramp(100);
        encode_frame(
            fmt(Encoding::L16, 8000, 1),
            Mix::Mono,
            &a,
            None,
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(out.len(), 320);
        assert_eq!(i16::from_le_bytes([out[0], out[1]]), 100);
        assert_eq!(i16::from_le_bytes([out[318], out[319]]), 259);
    }

    #[test]
    fn stereo_interleaves_caller_left() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let (a, b) = (ramp(0), ramp(1000));
        encode_frame(
            fmt(Encoding::L16, 8000, 2),
            Mix::Stereo,
            &a,
            Some(&b),
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(out.len(), 640);
        let s = |i: usize| i16::from_le_bytes([out[2 * i], out[2 * i + 1]]);
        assert_eq!((s(0), s(1), s(2), s(3)), (0, 1000, 1, 1001));
    }

    #[test]
    fn mono_mix_sums_with_saturation() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let a = [30000i16; FRAME_SAMPLES];
        let b = [10000i16; FRAME_SAMPLES];
        encode_frame(
            fmt(Encoding::L16, 8000, 1),
            Mix::Mono,
            &a,
            Some(&b),
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(i16::from_le_bytes([out[0], out[1]]), i16::MAX);
    }

    #[test]
    fn ulaw_passthrough_is_one_byte_per_sample_and_round_trips() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let mut a = [0i16; FRAME_SAMPLES];
        G711::Pcmu.decode(&[0x12; FRAME_SAMPLES], &mut a);
        encode_frame(
            fmt(Encoding::Pcmu, 8000, 1),
            Mix::Mono,
            &a,
            None,
            (&mut u1, &mut u2),
            &mut out,
        );
        assert_eq!(&out[..], &[0x12; FRAME_SAMPLES][..]);
    }

    #[test]
    fn wideband_doubles_the_samples_and_comes_back() {
        let mut out = BytesMut::new();
        let (mut u1, mut u2) = (Upsampler::new(), Upsampler::new());
        let mut down = Downsampler::new();
        let mut back = [0i16; FRAME_SAMPLES];
        // A 500 Hz tone survives 8 -> 16 -> 8 kHz (after the filters' delay).
        let mut energy = 0f64;
        for n in 0..10 {
            let a: [i16; FRAME_SAMPLES] = std::array::from_fn(|i| {
                let t = (n * FRAME_SAMPLES + i) as f64 / 8000.0;
                (10000.0 * (2.0 * std::f64::consts::PI * 500.0 * t).sin()) as i16
            });
            out.clear();
            encode_frame(
                fmt(Encoding::L16, 16000, 1),
                Mix::Mono,
                &a,
                None,
                (&mut u1, &mut u2),
                &mut out,
            );
            assert_eq!(out.len(), 640);
            assert!(decode_frame(
                fmt(Encoding::L16, 16000, 1),
                &out,
                &mut down,
                &mut back
            ));
            if n >= 5 {
                energy += back.iter().map(|s| (*s as f64).powi(2)).sum::<f64>();
            }
        }
        let rms = (energy / (5.0 * FRAME_SAMPLES as f64)).sqrt();
        assert!((rms - 10000.0 / 2f64.sqrt()).abs() < 300.0, "rms {rms}");
    }

    #[test]
    fn decode_takes_the_first_channel_and_pads_short_pieces() {
        let mut down = Downsampler::new();
        let mut out = [7i16; FRAME_SAMPLES];
        let data: Vec<u8> = [5i16, -5, 6, -6]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert!(decode_frame(
            fmt(Encoding::L16, 8000, 2),
            &data,
            &mut down,
            &mut out
        ));
        assert_eq!(&out[..3], &[5, 6, 0]);
        assert!(!decode_frame(
            fmt(Encoding::L16, 8000, 1),
            &[1],
            &mut down,
            &mut out
        ));
    }
}
