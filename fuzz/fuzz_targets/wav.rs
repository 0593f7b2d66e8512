//! WAV prompt parsing: `siphon_media::wav::Wav::parse` (prompts from disk) and
//! `siphon_fork::protocol::wav::parse` (WAV audio a fork service sends back).
//!
//! Checked: nothing panics; the data slice lies inside the file; the conversions a prompt
//! goes through (`to_pcm`, `to_pcm_8k`, `to_g711`) give the lengths the sample count says.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use siphon_media::g711::G711;
use siphon_media::wav::{Wav, WavEncoding};

fuzz_target!(|data: &[u8]| {
    if let Ok(wav) = Wav::parse(data) {
        let start = wav.data.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + wav.data.len() <= data.len());
        assert!(wav.sample_rate == 8000 || wav.sample_rate == 16000);
        let n = wav.sample_count();
        let _ = wav.duration();
        let pcm = wav.to_pcm();
        assert_eq!(pcm.len(), n);
        let pcm8 = wav.to_pcm_8k();
        if wav.sample_rate == 8000 {
            assert_eq!(pcm8.len(), n);
        } else {
            assert_eq!(pcm8.len(), n.div_ceil(2), "16 kHz is halved");
        }
        for law in [G711::Pcmu, G711::Pcma] {
            let g = wav.to_g711(law);
            if wav.encoding == WavEncoding::G711(law) {
                assert_eq!(g, wav.data);
            } else {
                assert_eq!(g.len(), pcm8.len());
            }
        }
    }
    let _ = siphon_fork::protocol::wav::parse(&Bytes::copy_from_slice(data));
});
