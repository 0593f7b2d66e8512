//! One call leg's media (`siphon_media::session::MediaSession`) driven as the server drives
//! it, with arbitrary datagrams and time steps: `handle_rtp`, `handle_rtcp`,
//! `handle_timeout` + `pop_audio` + one of `send_audio` / `send_payload` / `send_silence`
//! per due slot, `poll_rtcp`, `send_dtmf`, `build_bye`, `poll_event`.
//!
//! RTP comes either raw or built from fuzzed header deltas (sequence / timestamp jumps,
//! SSRC changes, payload type, marker, payload), so the jitter buffer sees realistic but
//! hostile streams: reordering, duplicates, gaps, wraps, huge packets, restarts.
//!
//! Input (encoding in `siphon_fuzz::Reader`): flags: u8 (bit 0: PCMA rather than PCMU,
//! bit 1: telephone-event negotiated as PT 101), the peer's first seq: u16, ts: u32,
//! ssrc: u32, then operations, an opcode byte (mod 8) and its arguments:
//!
//! | op | arguments |
//! |---|---|
//! | 0 raw RTP | bytes |
//! | 1 built RTP | marker: bool, kind: u8 (0 codec, 1 telephone-event, 2 CN, else PT), seq_delta: u8 (signed), ts_delta: u16 (signed), new_ssrc: bool, payload: bytes (empty: 160 bytes of audio) |
//! | 2 raw RTCP | bytes |
//! | 3 advance | ms: u16 (mod 1000) |
//! | 4 stall | ms: u32 |
//! | 5 fill mode | u8 (0 audio, 1 payload, 2 silence) |
//! | 6 send DTMF | digit: u8, ms: u16 |
//! | 7 build BYE | |
//!
//! Checked: nothing panics; every datagram we are asked to send parses as RTP (or RTCP)
//! with our SSRC; after servicing `now` the next deadline is strictly after `now` (no busy
//! loop); the event queue stays bounded.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use siphon_fuzz::Reader;
use siphon_media::FRAME_SAMPLES;
use siphon_media::g711::G711;
use siphon_media::pacer::Pacer;
use siphon_media::packet::RtpPacket;
use siphon_media::rtcp::RtcpCompound;
use siphon_media::session::{MediaSession, SessionConfig};

const OUR_SSRC: u32 = 0x0102_0304;
const EVENT_PT: u8 = 101;

#[derive(Debug)]
enum Op<'a> {
    RawRtp(&'a [u8]),
    Rtp {
        marker: bool,
        /// 0: the session codec, 1: telephone-event, 2: comfort noise, else this PT.
        kind: u8,
        seq_delta: i8,
        ts_delta: i16,
        new_ssrc: bool,
        /// 160 bytes of audio when empty.
        payload: &'a [u8],
    },
    RawRtcp(&'a [u8]),
    Advance {
        ms: u16,
    },
    Stall {
        ms: u32,
    },
    /// Slots are filled with: 0 audio, 1 payload, 2 silence.
    FillMode(u8),
    Dtmf {
        digit: u8,
        ms: u16,
    },
    Bye,
}

struct Leg {
    session: MediaSession,
    now: Instant,
    fill: u8,
    tone: i16,
}

impl Leg {
    fn check_sent(&self, datagram: &[u8]) {
        let p = RtpPacket::parse(datagram).expect("we send parseable RTP");
        assert_eq!(p.ssrc, OUR_SSRC);
    }

    /// What the server's media task does when it wakes at `now`.
    fn service(&mut self) {
        let (mut pcm_in, mut pcm_out) = ([0i16; FRAME_SAMPLES], [0i16; FRAME_SAMPLES]);
        let mut tx = [0u8; 1500];
        let due = self.session.handle_timeout(self.now);
        assert!(
            due <= 4,
            "{due} slots due at once: stalls must be skipped, not burst"
        );
        for _ in 0..due {
            let _ = self.session.pop_audio(&mut pcm_in);
            self.tone = self.tone.wrapping_add(997);
            pcm_out.fill(self.tone);
            match self.fill % 3 {
                0 => {
                    let n = self
                        .session
                        .send_audio(&pcm_out, &mut tx)
                        .expect("1500 bytes is enough");
                    self.check_sent(&tx[..n]);
                }
                1 => {
                    let payload = [0xd5u8; FRAME_SAMPLES];
                    let n = self.session.send_payload(&payload, &mut tx).expect("room");
                    self.check_sent(&tx[..n]);
                }
                _ => {
                    if let Some(n) = self.session.send_silence(&mut tx).expect("room") {
                        self.check_sent(&tx[..n]);
                    }
                }
            }
        }
        if let Some(n) = self
            .session
            .poll_rtcp(self.now, &mut tx)
            .expect("room for RTCP")
        {
            RtcpCompound::parse(&tx[..n]).expect("we send parseable RTCP");
        }
        let mut events = 0;
        while self.session.poll_event().is_some() {
            events += 1;
        }
        assert!(
            events <= 64,
            "{events} queued events: the queue is bounded at 64"
        );
        let next = self.session.poll_timeout();
        assert!(
            next > self.now,
            "poll_timeout() = now{:+?} after servicing now: the driver would spin",
            next.saturating_duration_since(self.now)
        );
        let _ = (
            self.session.stats(),
            self.session.playout_delay(),
            self.session.receiver_stats(),
        );
    }

    fn advance_to(&mut self, target: Instant) {
        let mut wakeups = 0u32;
        loop {
            let next = self.session.poll_timeout();
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            self.service();
            wakeups += 1;
            assert!(wakeups < 100_000, "deadlines do not move forward");
        }
        self.now = self.now.max(target);
        self.service();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let (mut seq, mut ts, mut ssrc) = (r.u16(), r.u32(), r.u32());
    let start = Instant::now();
    let codec = if flags & 1 != 0 {
        G711::Pcma
    } else {
        G711::Pcmu
    };
    let mut config = SessionConfig::new(codec, "fuzz@siphon");
    if flags & 2 != 0 {
        config.telephone_event = Some(EVENT_PT);
    }
    let pacer = Pacer::new(start, OUR_SSRC, 0xfff0, 0xffff_ff00);
    let wallclock = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut leg = Leg {
        session: MediaSession::with_pacer(config, pacer, start, wallclock, 7),
        now: start,
        fill: 0,
        tone: 0,
    };
    let mut buf = vec![0u8; 2048];

    let mut steps = 0;
    while !r.is_empty() && steps < 512 {
        steps += 1;
        let op = match r.u8() % 8 {
            0 => Op::RawRtp(r.bytes()),
            1 => Op::Rtp {
                marker: r.bool(),
                kind: r.u8(),
                seq_delta: r.u8() as i8,
                ts_delta: r.u16() as i16,
                new_ssrc: r.bool(),
                payload: r.bytes(),
            },
            2 => Op::RawRtcp(r.bytes()),
            // At most a second of slot-by-slot servicing per step keeps an input fast; long
            // gaps are what Stall is for.
            3 => Op::Advance { ms: r.u16() % 1000 },
            4 => Op::Stall { ms: r.u32() },
            5 => Op::FillMode(r.u8()),
            6 => Op::Dtmf {
                digit: r.u8(),
                ms: r.u16(),
            },
            _ => Op::Bye,
        };
        match op {
            Op::RawRtp(d) => {
                let _ = leg.session.handle_rtp(leg.now, d);
            }
            Op::Rtp {
                marker,
                kind,
                seq_delta,
                ts_delta,
                new_ssrc,
                payload,
            } => {
                if new_ssrc {
                    ssrc = ssrc.wrapping_mul(2_654_435_761).wrapping_add(1);
                }
                seq = seq.wrapping_add(seq_delta as u16);
                ts = ts.wrapping_add(ts_delta as i32 as u32);
                let payload_type = match kind {
                    0 => codec.payload_type(),
                    1 => EVENT_PT,
                    2 => 13,
                    pt => pt & 0x7f,
                };
                let audio = [0x55u8; FRAME_SAMPLES];
                let payload = if payload.is_empty() {
                    &audio[..]
                } else {
                    payload
                };
                let packet = RtpPacket {
                    marker,
                    payload_type,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    payload,
                };
                if let Ok(n) = packet.write_to(&mut buf) {
                    let _ = leg.session.handle_rtp(leg.now, &buf[..n]);
                }
            }
            Op::RawRtcp(d) => {
                let _ = leg.session.handle_rtcp(leg.now, d);
            }
            Op::Advance { ms } => {
                let target = leg.now + Duration::from_millis(u64::from(ms));
                leg.advance_to(target);
            }
            Op::Stall { ms } => {
                // The task overslept: one wake-up, long after the deadline.
                leg.now += Duration::from_millis(u64::from(ms % 3_600_000));
                leg.service();
            }
            Op::FillMode(m) => leg.fill = m,
            Op::Dtmf { digit, ms } => {
                let _ = leg
                    .session
                    .send_dtmf(char::from(digit), Duration::from_millis(u64::from(ms)));
            }
            Op::Bye => {
                let mut out = [0u8; 1500];
                let n = leg
                    .session
                    .build_bye(leg.now, &mut out)
                    .expect("room for BYE");
                RtcpCompound::parse(&out[..n]).expect("our BYE parses");
            }
        }
    }
    let _ = (leg.session.ssrc(), leg.session.remote_ssrc());
});
