//! Re-cutting the 20 ms packets a session sends into the packet duration the peer asked
//! for with `a=ptime` (10, 30 or 40 ms; RFC 4566 §6, RFC 3551 §4.5). Everything inside
//! Siphon (pacer, jitter buffer, forks) keeps 20 ms frames; only the packets on the wire
//! change. G.711 has one byte per sample, so a packet of `ptime` ms carries `8 * ptime`
//! bytes and its timestamp is the one of its first sample.
//!
//! Packets that are not audio of the stream's payload type (RFC 4733 events) go out as
//! they are, after any audio held back; every packet leaving gets the next sequence number
//! of this stream, so the peer sees one continuous sequence. No allocation: the audio held
//! back lives in a fixed buffer.

use crate::packet::{RtpError, RtpPacket};

/// Largest packet duration handled: 40 ms (320 bytes of G.711); two 20 ms inputs' worth is
/// the most ever held back.
const MAX_HELD: usize = 640;

/// Re-cuts one stream's 20 ms G.711 packets into `samples` per packet.
#[derive(Debug)]
pub struct Repacketizer {
    samples: usize,
    audio_pt: u8,
    held: [u8; MAX_HELD],
    held_len: usize,
    /// Timestamp of the first sample held.
    held_ts: u32,
    /// The first packet cut from what is held starts a talk spurt.
    held_marker: bool,
    next_seq: Option<u16>,
}

impl Repacketizer {
    /// For packets of `ptime_ms` (clamped to 10-40 ms, in 10 ms steps) of audio payload
    /// type `audio_pt`; `None` for 20 ms, which needs no re-cutting.
    pub fn new(ptime_ms: u32, audio_pt: u8) -> Option<Self> {
        let ptime = (ptime_ms.clamp(10, 40) / 10) * 10;
        (ptime != 20).then(|| Repacketizer {
            samples: ptime as usize * 8,
            audio_pt,
            held: [0; MAX_HELD],
            held_len: 0,
            held_ts: 0,
            held_marker: false,
            next_seq: None,
        })
    }

    /// Feeds one packet as the session built it; `send` gets each packet to put on the
    /// wire now (none, one or several), built in `out`.
    pub fn push(
        &mut self,
        datagram: &[u8],
        out: &mut [u8],
        send: &mut impl FnMut(&[u8]),
    ) -> Result<(), RtpError> {
        let packet = RtpPacket::parse(datagram)?;
        // The stream's sequence starts where the session's did.
        self.next_seq.get_or_insert(packet.sequence_number);
        if packet.payload_type != self.audio_pt || packet.payload.len() > MAX_HELD / 2 {
            self.flush(packet.ssrc, out, send)?;
            let n = self.emit(
                &packet,
                packet.timestamp,
                packet.payload,
                packet.marker,
                out,
            )?;
            send(&out[..n]);
            return Ok(());
        }
        // Audio that does not follow what is held (a silence gap, a new talk spurt) sends
        // what is held first, short: the peer takes any packet duration.
        let follows = self.held_ts.wrapping_add(self.held_len as u32) == packet.timestamp;
        if self.held_len > 0 && (!follows || packet.marker) {
            self.flush(packet.ssrc, out, send)?;
        }
        if self.held_len == 0 {
            self.held_ts = packet.timestamp;
            self.held_marker = packet.marker;
        }
        self.held[self.held_len..self.held_len + packet.payload.len()]
            .copy_from_slice(packet.payload);
        self.held_len += packet.payload.len();
        while self.held_len >= self.samples {
            let mut chunk = [0u8; MAX_HELD / 2];
            chunk[..self.samples].copy_from_slice(&self.held[..self.samples]);
            let marker = std::mem::take(&mut self.held_marker);
            let n = self.emit(&packet, self.held_ts, &chunk[..self.samples], marker, out)?;
            send(&out[..n]);
            self.held.copy_within(self.samples..self.held_len, 0);
            self.held_len -= self.samples;
            self.held_ts = self.held_ts.wrapping_add(self.samples as u32);
        }
        Ok(())
    }

    /// Sends what is held, as a shorter packet.
    fn flush(
        &mut self,
        ssrc: u32,
        out: &mut [u8],
        send: &mut impl FnMut(&[u8]),
    ) -> Result<(), RtpError> {
        if self.held_len == 0 {
            return Ok(());
        }
        let mut chunk = [0u8; MAX_HELD];
        let len = self.held_len;
        chunk[..len].copy_from_slice(&self.held[..len]);
        self.held_len = 0;
        let marker = std::mem::take(&mut self.held_marker);
        let template = RtpPacket {
            marker,
            payload_type: self.audio_pt,
            sequence_number: 0,
            timestamp: self.held_ts,
            ssrc,
            payload: &[],
        };
        let n = self.emit(&template, self.held_ts, &chunk[..len], marker, out)?;
        send(&out[..n]);
        Ok(())
    }

    fn emit(
        &mut self,
        like: &RtpPacket<'_>,
        timestamp: u32,
        payload: &[u8],
        marker: bool,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let seq = self.next_seq.unwrap_or(like.sequence_number);
        // (Set by `push` before anything is emitted; `like` only for the type's sake.)
        self.next_seq = Some(seq.wrapping_add(1));
        RtpPacket {
            marker,
            payload_type: like.payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: like.ssrc,
            payload,
        }
        .write_to(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The session's 20 ms packet `i` (payload bytes = sample index, mod 256).
    fn frame(i: u32, marker: bool, buf: &mut [u8]) -> usize {
        let payload: Vec<u8> = (0..160).map(|s| ((i * 160 + s) % 256) as u8).collect();
        RtpPacket {
            marker,
            payload_type: 8,
            sequence_number: 1000 + i as u16,
            timestamp: 50_000 + 160 * i,
            ssrc: 7,
            payload: &payload,
        }
        .write_to(buf)
        .unwrap()
    }

    fn run(ptime: u32, frames: u32) -> Vec<(bool, u16, u32, Vec<u8>)> {
        let mut r = Repacketizer::new(ptime, 8).unwrap();
        let (mut inp, mut out) = ([0u8; 1500], [0u8; 1500]);
        let mut got = Vec::new();
        for i in 0..frames {
            let n = frame(i, i == 0, &mut inp);
            r.push(&inp[..n], &mut out, &mut |p| {
                let p = RtpPacket::parse(p).unwrap();
                got.push((p.marker, p.sequence_number, p.timestamp, p.payload.to_vec()));
            })
            .unwrap();
        }
        got
    }

    #[test]
    fn twenty_ms_needs_no_repacketizer() {
        assert!(Repacketizer::new(20, 8).is_none());
        assert!(Repacketizer::new(25, 8).is_none());
    }

    #[test]
    fn thirty_ms_packets_carry_the_same_audio_in_order() {
        let got = run(30, 6); // 120 ms: four 30 ms packets
        assert_eq!(got.len(), 4);
        for (k, (marker, seq, ts, payload)) in got.iter().enumerate() {
            assert_eq!(*marker, k == 0);
            assert_eq!(*seq, 1000 + k as u16);
            assert_eq!(*ts, 50_000 + 240 * k as u32);
            let expected: Vec<u8> = (0..240).map(|s| ((k * 240 + s) % 256) as u8).collect();
            assert_eq!(payload, &expected);
        }
    }

    #[test]
    fn ten_and_forty_ms() {
        let ten = run(10, 2);
        assert_eq!(ten.len(), 4);
        assert!(ten.iter().all(|p| p.3.len() == 80));
        assert_eq!(ten[3].2, 50_000 + 240);
        let forty = run(40, 4);
        assert_eq!(forty.len(), 2);
        assert_eq!(
            (forty[1].1, forty[1].2, forty[1].3.len()),
            (1001, 50_320, 320)
        );
    }

    #[test]
    fn a_gap_sends_what_is_held_short_and_events_pass_through() {
        let mut r = Repacketizer::new(30, 8).unwrap();
        let (mut inp, mut out) = ([0u8; 1500], [0u8; 1500]);
        let mut got = Vec::new();
        let mut collect = |p: &[u8]| {
            let p = RtpPacket::parse(p).unwrap();
            got.push((
                p.payload_type,
                p.sequence_number,
                p.timestamp,
                p.payload.len(),
            ));
        };
        let n = frame(0, true, &mut inp);
        r.push(&inp[..n], &mut out, &mut collect).unwrap(); // held: 160
        let event = RtpPacket {
            marker: true,
            payload_type: 101,
            sequence_number: 1001,
            timestamp: 50_160,
            ssrc: 7,
            payload: &[5, 0x0a, 0, 160],
        };
        let n = event.write_to(&mut inp).unwrap();
        r.push(&inp[..n], &mut out, &mut collect).unwrap();
        let n = frame(5, true, &mut inp); // after a silence gap
        r.push(&inp[..n], &mut out, &mut collect).unwrap();
        let n = frame(6, false, &mut inp);
        r.push(&inp[..n], &mut out, &mut collect).unwrap();
        assert_eq!(
            got,
            [
                (8, 1000, 50_000, 160),
                (101, 1001, 50_160, 4),
                (8, 1002, 50_800, 240)
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = Repacketizer::new(30, 8).unwrap();
        let mut out = [0u8; 1500];
        assert!(r.push(&[0x80, 8], &mut out, &mut |_| {}).is_err());
    }
}
