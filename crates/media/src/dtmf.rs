//! RFC 4733 telephone-events (DTMF): receiving key presses and sending them.
//!
//! The payload is 4 bytes: event code, E(nd) bit + reserved bit + 6-bit volume (−dBm0), and a
//! 16-bit duration in timestamp units. All packets of one event carry the RTP timestamp of its
//! start; that timestamp is what identifies the event.
//!
//! **Receiving.** A sender repeats the event every packetisation interval with a growing
//! duration, then sends the end packet three times, and may retransmit any of them. The
//! [`DtmfReceiver`] reports each key press exactly once, **as soon as its first packet
//! arrives** (start, update or end, whichever survives), because an IVR wants the digit now,
//! not 100 ms later. Everything else with the same timestamp is absorbed, and so are stale
//! packets from the last few events. A long press split into segments (§2.5.1.3: a new
//! timestamp at most 0xFFFF units past the previous segment's, same code, no marker,
//! previous segment not ended) continues the current event, which stays known by the
//! timestamp it was reported with.
//!
//! **Sending.** A [`DtmfSender`] yields one payload per 20 ms slot: the first with the
//! marker bit, updates with a growing duration, then three end packets carrying the same
//! final duration. It is fed each slot's timestamp by the pacer and pins the first one as
//! the event timestamp.

use std::time::Duration;

use crate::packet::RtpError;
use crate::{FRAME_DURATION, FRAME_SAMPLES};

/// DTMF event codes 0–15 in order (RFC 4733 §3.2).
const DTMF_DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// How many recent event timestamps are remembered to absorb late retransmissions.
const RECENT: usize = 8;

/// How far past the current segment a new segment of the same press may start: RFC 4733
/// §2.5.1.3 puts it at the previous segment's timestamp plus its duration, which the 16-bit
/// field caps at 0xFFFF. Anything further is not a continuation but a new press whose
/// marker packet was lost.
const MAX_SEGMENT_ADVANCE: u32 = 0x1_0000;

/// The character for an event code, if it is one of the 16 DTMF events.
pub fn code_to_digit(code: u8) -> Option<char> {
    DTMF_DIGITS.get(usize::from(code)).map(|&b| char::from(b))
}

/// The event code for a DTMF character (`0-9 * # A-D`, lowercase accepted).
pub fn digit_to_code(digit: char) -> Option<u8> {
    let upper = digit.to_ascii_uppercase();
    DTMF_DIGITS
        .iter()
        .position(|&b| char::from(b) == upper)
        .map(|i| i as u8)
}

/// One telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–15 are DTMF).
    pub code: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes (further bytes would be more events of RFC 2198 redundancy,
    /// which we don't negotiate).
    pub fn parse(payload: &[u8]) -> Result<Self, RtpError> {
        let &[code, flags, d0, d1, ..] = payload else {
            return Err(RtpError::BadTelephoneEvent(payload.len()));
        };
        Ok(TelephoneEvent {
            code,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        let end = if self.end { 0x80 } else { 0 };
        [self.code, end | (self.volume & 0x3F), d[0], d[1]]
    }
}

/// A key press, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// Event code.
    pub code: u8,
    /// RTP timestamp of the event start (its identity).
    pub timestamp: u32,
    /// Volume in −dBm0 from the first packet seen.
    pub volume: u8,
}

impl DtmfEvent {
    /// The DTMF character, or `None` for non-DTMF events (flash hook, tones, ...).
    pub fn digit(&self) -> Option<char> {
        code_to_digit(self.code)
    }
}

/// The press being received.
#[derive(Debug, Clone, Copy)]
struct Current {
    /// Timestamp of its first segment: the press's identity, what was reported.
    start: u32,
    /// Timestamp of its latest segment (== `start` unless the press is longer than 8 s).
    segment: u32,
    code: u8,
    ended: bool,
}

/// Turns the telephone-event packets of one source into one [`DtmfEvent`] per key press.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    current: Option<Current>,
    recent: [u32; RECENT],
    recent_len: usize,
    recent_next: usize,
}

impl DtmfReceiver {
    /// A receiver with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all history (new SSRC).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn seen(&self, timestamp: u32) -> bool {
        self.recent[..self.recent_len].contains(&timestamp)
    }

    fn remember(&mut self, timestamp: u32) {
        self.recent[self.recent_next] = timestamp;
        self.recent_next = (self.recent_next + 1) % RECENT;
        self.recent_len = (self.recent_len + 1).min(RECENT);
    }

    /// Feeds one telephone-event packet; returns the key press if this packet starts one.
    ///
    /// A press is reported once whatever happens to its packets: the current press is known
    /// by the timestamp it was reported with (`start`), whatever segments followed, and the
    /// presses before it by the ring of recent start timestamps, which holds each at most
    /// once so that repeats cannot push an older press out of it.
    pub fn handle(
        &mut self,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<DtmfEvent>, RtpError> {
        let event = TelephoneEvent::parse(payload)?;
        if let Some(cur) = &mut self.current {
            if timestamp == cur.segment || timestamp == cur.start {
                // Update, end or retransmission of the press in progress.
                if timestamp == cur.segment {
                    cur.ended |= event.end;
                }
                return Ok(None);
            }
            // Older than the current segment and not a start: a late retransmission
            // (wrapping comparison). A marked packet with an unseen timestamp is a new press
            // even if the sender's timestamps went backwards (restart).
            let advance = timestamp.wrapping_sub(cur.segment);
            if !marker && (advance as i32) < 0 {
                return Ok(None);
            }
            if !marker && !cur.ended && cur.code == event.code && advance <= MAX_SEGMENT_ADVANCE {
                // Next segment of a long press (§2.5.1.3): same code, no marker, the
                // previous segment not ended, starting where that one stopped.
                cur.segment = timestamp;
                cur.ended = event.end;
                return Ok(None);
            }
        }
        if self.seen(timestamp) {
            return Ok(None);
        }
        self.current = Some(Current {
            start: timestamp,
            segment: timestamp,
            code: event.code,
            ended: event.end,
        });
        self.remember(timestamp);
        Ok(Some(DtmfEvent {
            code: event.code,
            timestamp,
            volume: event.volume,
        }))
    }
}

/// Why a [`DtmfSender`] could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// Not one of `0-9 * # A-D`.
    #[error("{0:?} is not a DTMF digit")]
    UnknownDigit(char),
    /// Shorter than 20 ms or longer than the 16-bit duration field allows (8.18 s).
    #[error("DTMF duration {0:?} out of range (20 ms to 8.18 s)")]
    BadDuration(Duration),
    /// The session has no telephone-event payload type negotiated.
    #[error("telephone-event was not negotiated for this session")]
    NotNegotiated,
}

/// One packet of an outgoing event, for [`crate::pacer::Pacer::build_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Set on the first packet only.
    pub marker: bool,
    /// The event's start timestamp.
    pub timestamp: u32,
    /// The telephone-event payload.
    pub payload: [u8; 4],
}

/// Generates the packet sequence for one digit (see the module doc).
#[derive(Debug, Clone)]
pub struct DtmfSender {
    code: u8,
    volume: u8,
    /// Event length in 20 ms frames.
    frames: u16,
    /// Non-end packets sent so far.
    sent: u16,
    ends_sent: u8,
    timestamp: Option<u32>,
}

impl DtmfSender {
    /// A digit pressed for `duration` (rounded up to 20 ms) at `volume` −dBm0 (10 is
    /// typical; clamped to 63).
    pub fn new(digit: char, duration: Duration, volume: u8) -> Result<Self, DtmfError> {
        let code = digit_to_code(digit).ok_or(DtmfError::UnknownDigit(digit))?;
        Self::from_code(code, duration, volume)
    }

    /// Any event code (RFC 4733 §3.2), e.g. 16 for flash.
    pub fn from_code(code: u8, duration: Duration, volume: u8) -> Result<Self, DtmfError> {
        let frame = FRAME_DURATION.as_nanos();
        let frames = duration.as_nanos().div_ceil(frame);
        let max_frames = u128::from(u16::MAX) / FRAME_SAMPLES as u128;
        if frames == 0 || frames > max_frames {
            return Err(DtmfError::BadDuration(duration));
        }
        Ok(DtmfSender {
            code,
            volume: volume.min(63),
            frames: frames as u16,
            sent: 0,
            ends_sent: 0,
            timestamp: None,
        })
    }

    /// Total packets this event takes (one per 20 ms slot): `frames − 1` updates and 3 ends.
    pub fn packet_count(&self) -> u32 {
        u32::from(self.frames) - 1 + 3
    }

    /// Whether all packets have been produced.
    pub fn is_finished(&self) -> bool {
        self.ends_sent == 3
    }

    /// The packet for the current slot, whose audio timestamp is `slot_timestamp` (only the
    /// first call's is used). `None` once finished.
    pub fn next_packet(&mut self, slot_timestamp: u32) -> Option<EventPacket> {
        if self.is_finished() {
            return None;
        }
        let timestamp = *self.timestamp.get_or_insert(slot_timestamp);
        let first = self.sent == 0 && self.ends_sent == 0;
        let event = if self.sent + 1 < self.frames {
            self.sent += 1;
            TelephoneEvent {
                code: self.code,
                end: false,
                volume: self.volume,
                duration: self.sent * FRAME_SAMPLES as u16,
            }
        } else {
            self.ends_sent += 1;
            TelephoneEvent {
                code: self.code,
                end: true,
                volume: self.volume,
                duration: self.frames * FRAME_SAMPLES as u16,
            }
        };
        Some(EventPacket {
            marker: first,
            timestamp,
            payload: event.to_bytes(),
        })
    }
}
