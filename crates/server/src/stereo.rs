//! Time alignment of a bridged call's two legs for forks (`tracks = "both"`: left the
//! caller, right the callee). Each leg's audio is placed on the call's own 20 ms clock by its
//! RTP timestamps: the first packet of a stream lands in the slot nearest its arrival, and
//! every later packet lands where its timestamp says, so a lost or late packet leaves
//! silence in its slot instead of shifting the rest of the stream. Slots are handed out a
//! fixed delay after they end, which absorbs network jitter between the legs.
//!
//! Pure (time comes in as arguments) and allocation-free after creation.

use std::time::Duration;

use siphon_media::FRAME_SAMPLES;
use tokio::time::Instant;

/// Slots kept per leg: how far ahead of the output a packet may land (320 ms).
const RING: usize = 16;
/// How long after a slot ends it is handed out: late packets up to this still make it.
pub const DELAY_SLOTS: u64 = 3;
pub const SLOT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Caller = 0,
    Callee = 1,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    timestamp: u32,
    /// The call-clock sample where that timestamp's sample goes.
    sample: u64,
}

pub struct Aligner {
    start: Instant,
    anchors: [Option<Anchor>; 2],
    samples: [[i16; RING * FRAME_SAMPLES]; 2],
    present: [[bool; RING]; 2],
    /// The next slot to hand out.
    next: u64,
}

impl Aligner {
    /// Slot 0 starts at `start` (the answer).
    pub fn new(start: Instant) -> Aligner {
        Aligner {
            start,
            anchors: [None, None],
            samples: [[0; RING * FRAME_SAMPLES]; 2],
            present: [[false; RING]; 2],
            next: 0,
        }
    }

    /// Places one packet's decoded samples (`timestamp` in 8 kHz units).
    pub fn push(&mut self, leg: Leg, ssrc: u32, timestamp: u32, pcm: &[i16], arrival: Instant) {
        let l = leg as usize;
        let first_open = self.next * FRAME_SAMPLES as u64;
        let position = |a: &Anchor| {
            let delta = i64::from(timestamp.wrapping_sub(a.timestamp) as i32);
            a.sample.checked_add_signed(delta)
        };
        let fits = |p: u64| {
            p >= first_open && p + pcm.len() as u64 <= first_open + (RING * FRAME_SAMPLES) as u64
        };
        let window = (RING * FRAME_SAMPLES) as u64;
        let placed = match self.anchors[l]
            .as_ref()
            .filter(|a| a.ssrc == ssrc)
            .map(position)
        {
            Some(Some(p)) if fits(p) => Some(p),
            // Its slot was handed out already: too late to be heard, dropped.
            Some(Some(p)) if p < first_open && first_open - p <= window => return,
            // A jump in the timestamps: re-anchored below like a new stream.
            _ => None,
        };
        let start = match placed {
            Some(p) => p,
            None => {
                // A new stream (or one that jumped): anchor it to the slot boundary nearest
                // its arrival, never before what was already handed out.
                let since = arrival.saturating_duration_since(self.start);
                let slot = (since.as_micros() + SLOT.as_micros() / 2) / SLOT.as_micros();
                let sample = (slot as u64 * FRAME_SAMPLES as u64).max(first_open);
                self.anchors[l] = Some(Anchor {
                    ssrc,
                    timestamp,
                    sample,
                });
                if !fits(sample) {
                    return; // larger than the whole window: not audio we can place
                }
                sample
            }
        };
        for (i, s) in pcm.iter().enumerate() {
            let at = start as usize + i;
            self.samples[l][at % (RING * FRAME_SAMPLES)] = *s;
            self.present[l][(at / FRAME_SAMPLES) % RING] = true;
        }
    }

    /// Hands out every slot that is due at `now`: `emit(caller, callee)`, `None` for a leg
    /// with no audio in that slot. Slots where neither leg had audio are skipped.
    pub fn emit(
        &mut self,
        now: Instant,
        emit: &mut impl FnMut(Option<&[i16; FRAME_SAMPLES]>, Option<&[i16; FRAME_SAMPLES]>),
    ) {
        loop {
            let due =
                self.start + SLOT * u32::try_from(self.next + DELAY_SLOTS + 1).unwrap_or(u32::MAX);
            if now < due {
                return;
            }
            let r = (self.next as usize) % RING;
            let mut frames = [[0i16; FRAME_SAMPLES]; 2];
            for (l, frame) in frames.iter_mut().enumerate() {
                let range = r * FRAME_SAMPLES..(r + 1) * FRAME_SAMPLES;
                frame.copy_from_slice(&self.samples[l][range.clone()]);
                self.samples[l][range].fill(0);
            }
            let caller = self.present[0][r].then_some(&frames[0]);
            let callee = self.present[1][r].then_some(&frames[1]);
            if caller.is_some() || callee.is_some() {
                emit(caller, callee);
            }
            self.present[0][r] = false;
            self.present[1][r] = false;
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> [i16; FRAME_SAMPLES] {
        [v; FRAME_SAMPLES]
    }

    fn drain(a: &mut Aligner, now: Instant) -> Vec<(Option<i16>, Option<i16>)> {
        let mut out = Vec::new();
        a.emit(now, &mut |l, r| {
            out.push((l.map(|f| f[0]), r.map(|f| f[0])))
        });
        out
    }

    #[test]
    fn frames_of_the_same_20_ms_share_a_slot_and_a_loss_is_silence() {
        let t0 = Instant::now();
        let mut a = Aligner::new(t0);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The caller's frames arrive a little early, the callee's a little late, each
        // stream with its own timestamps; the callee's second frame is lost.
        for k in 0..4u32 {
            let at = ms(20 * u64::from(k) + 2);
            a.push(Leg::Caller, 1, 1000 + 160 * k, &frame(k as i16 + 1), at);
            if k != 1 {
                let late = ms(20 * u64::from(k) + 9);
                a.push(
                    Leg::Callee,
                    2,
                    90_000 + 160 * k,
                    &frame(-(k as i16) - 1),
                    late,
                );
            }
        }
        assert!(
            drain(&mut a, ms(70)).is_empty(),
            "slot 0 is due after the delay"
        );
        let got = drain(&mut a, ms(200));
        assert_eq!(
            got,
            vec![
                (Some(1), Some(-1)),
                (Some(2), None),
                (Some(3), Some(-3)),
                (Some(4), Some(-4)),
            ]
        );
    }

    #[test]
    fn a_late_packet_still_lands_in_its_own_slot() {
        let t0 = Instant::now();
        let mut a = Aligner::new(t0);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        a.push(Leg::Caller, 1, 0, &frame(1), ms(0));
        a.push(Leg::Caller, 1, 320, &frame(3), ms(40));
        a.push(Leg::Caller, 1, 160, &frame(2), ms(55)); // 35 ms late
        a.push(Leg::Callee, 7, 5, &frame(9), ms(41));
        let got = drain(&mut a, ms(200));
        assert_eq!(
            got,
            vec![(Some(1), None), (Some(2), None), (Some(3), Some(9))]
        );
        // Too late for its slot (already handed out): dropped, then a new stream of the
        // same leg is anchored at its arrival.
        a.push(Leg::Caller, 1, 480, &frame(4), ms(200));
        a.push(Leg::Caller, 8, 0, &frame(5), ms(201));
        let got = drain(&mut a, ms(400));
        assert_eq!(got, vec![(Some(5), None)]);
    }
}
