//! RTCP (RFC 3550 §6): compound packet parsing, SR/RR/SDES/BYE building, the report
//! scheduler and NTP time.
//!
//! Written by hand rather than with a crate: `rtp` has no RTCP at all, and the `rtcp` crate
//! from the same family is not among our dependencies and parses into boxed trait objects
//! (`Vec<Box<dyn Packet>>`), i.e. several allocations per compound packet for the handful of
//! fields we read. SR and RR are two fixed layouts; the parser below borrows from the datagram
//! and allocates nothing.
//!
//! Parsing is two-pass: [`RtcpCompound::parse`] first validates every header in the compound
//! packet (version, length, report count, padding) and rejects the whole datagram on the first
//! lie, so a half-applied compound packet can't happen; iteration afterwards is infallible.
//! Packet types other than SR and RR (SDES, BYE, APP, RTPFB, ...) are surfaced as
//! [`RtcpPacket::Other`] and otherwise ignored.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// RTCP packet type: sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type: receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type: source description.
pub const PT_SDES: u8 = 202;
/// RTCP packet type: goodbye.
pub const PT_BYE: u8 = 203;
/// RTCP packet type: application-defined.
pub const PT_APP: u8 = 204;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;

/// Why an RTCP datagram was rejected, or a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer than 4 bytes left where a packet header should be.
    #[error("RTCP packet at offset {offset}: {len} bytes left, a header needs 4")]
    TooShort {
        /// Offset of the packet in the compound datagram.
        offset: usize,
        /// Bytes left.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// The length field runs past the end of the datagram.
    #[error("RTCP packet at offset {offset} declares {declared} bytes, {available} left")]
    LengthOverrun {
        /// Offset of the packet.
        offset: usize,
        /// Bytes the length field declares (header included).
        declared: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// An SR/RR whose report count needs more bytes than its length gives it.
    #[error("RTCP report with {count} blocks needs {needed} bytes, has {len}")]
    ReportOverrun {
        /// The RC field.
        count: u8,
        /// Bytes needed.
        needed: usize,
        /// Bytes the packet has.
        len: usize,
    },
    /// Padding on a packet other than the last one, or a padding count that doesn't fit.
    #[error("bad RTCP padding")]
    BadPadding,
    /// The datagram holds no RTCP packet at all.
    #[error("empty RTCP datagram")]
    Empty,
    /// More than 31 report blocks, or an SDES item longer than 255 bytes.
    #[error("value too large for its RTCP field")]
    FieldOverflow,
    /// The output buffer cannot hold what is being built.
    #[error("output buffer too small for the RTCP packet")]
    BufferTooSmall,
}

/// One reception report block (RFC 3550 §6.4.1), either ours about the peer or the peer's
/// about us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> Self {
        let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0x00FF_FFFF;
        out[4..8].copy_from_slice(&(u32::from(self.fraction_lost) << 24 | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }

    /// Round-trip time from a block the peer sent about us (RFC 3550 §6.4.1), given the NTP
    /// time at which it arrived. `None` if the peer has not seen an SR from us yet or the
    /// result would be negative (clock trouble or a bogus block).
    pub fn round_trip_time(&self, arrival_ntp: u64) -> Option<Duration> {
        if self.last_sr == 0 {
            return None;
        }
        let a = (arrival_ntp >> 16) as u32;
        let rtt = a
            .wrapping_sub(self.last_sr)
            .wrapping_sub(self.delay_since_last_sr);
        if rtt > u32::MAX / 2 {
            return None;
        }
        Some(Duration::from_nanos(
            u64::from(rtt) * 1_000_000_000 / 65_536,
        ))
    }
}

/// The sender-info part of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 in the top 32 bits, fraction below).
    pub ntp: u64,
    /// RTP timestamp corresponding to the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// Iterator over the report blocks of an SR or RR, decoding on the fly.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    bytes: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        if self.bytes.len() < REPORT_BLOCK_LEN {
            return None;
        }
        let (block, rest) = self.bytes.split_at(REPORT_BLOCK_LEN);
        self.bytes = rest;
        Some(ReportBlock::parse(block))
    }
}

/// One packet of a validated compound datagram.
#[derive(Debug, Clone)]
pub enum RtcpPacket<'a> {
    /// SR (PT 200).
    SenderReport {
        /// The sender's SSRC.
        ssrc: u32,
        /// What it sent.
        info: SenderInfo,
        /// What it received.
        reports: ReportBlocks<'a>,
    },
    /// RR (PT 201).
    ReceiverReport {
        /// The reporter's SSRC.
        ssrc: u32,
        /// What it received.
        reports: ReportBlocks<'a>,
    },
    /// Anything else (SDES, BYE, APP, feedback, unknown types): skipped.
    Other {
        /// The packet type.
        packet_type: u8,
    },
}

/// A validated compound RTCP datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtcpCompound<'a> {
    bytes: &'a [u8],
}

impl<'a> RtcpCompound<'a> {
    /// Validates every packet header in the datagram (see the module doc).
    ///
    /// RFC 3550 A.2 also asks that the first packet be an SR or RR; we don't insist, since
    /// RFC 5506 reduced-size RTCP is legal and there is nothing to gain from refusing it.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtcpError> {
        if buf.is_empty() {
            return Err(RtcpError::Empty);
        }
        let mut offset = 0;
        while offset < buf.len() {
            let rest = &buf[offset..];
            if rest.len() < HEADER_LEN {
                return Err(RtcpError::TooShort {
                    offset,
                    len: rest.len(),
                });
            }
            let version = rest[0] >> 6;
            if version != 2 {
                return Err(RtcpError::BadVersion(version));
            }
            let declared = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            if declared > rest.len() {
                return Err(RtcpError::LengthOverrun {
                    offset,
                    declared,
                    available: rest.len(),
                });
            }
            let mut body_end = declared;
            if rest[0] & 0x20 != 0 {
                // Only the last packet of a compound may be padded (RFC 3550 §6.4.1).
                let count = usize::from(rest[declared - 1]);
                if declared != rest.len() || count == 0 || count > declared - HEADER_LEN {
                    return Err(RtcpError::BadPadding);
                }
                body_end = declared - count;
            }
            let count = rest[0] & 0x1F;
            let fixed = match rest[1] {
                PT_SR => HEADER_LEN + 4 + SENDER_INFO_LEN,
                PT_RR => HEADER_LEN + 4,
                _ => 0,
            };
            if fixed > 0 {
                let needed = fixed + REPORT_BLOCK_LEN * usize::from(count);
                if needed > body_end {
                    return Err(RtcpError::ReportOverrun {
                        count,
                        needed,
                        len: body_end,
                    });
                }
            }
            offset += declared;
        }
        Ok(RtcpCompound { bytes: buf })
    }

    /// The packets, in order.
    pub fn packets(&self) -> RtcpPackets<'a> {
        RtcpPackets { rest: self.bytes }
    }
}

/// Iterator over the packets of an [`RtcpCompound`].
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = RtcpPacket<'a>;

    fn next(&mut self) -> Option<RtcpPacket<'a>> {
        // Lengths were validated by `RtcpCompound::parse`; the `get`s keep this panic-free
        // even so.
        let b = self.rest;
        if b.len() < HEADER_LEN {
            return None;
        }
        let declared = (usize::from(u16::from_be_bytes([b[2], b[3]])) + 1) * 4;
        let packet = b.get(..declared)?;
        self.rest = &b[declared..];
        let count = usize::from(packet[0] & 0x1F);
        Some(match packet[1] {
            PT_SR => {
                let start = HEADER_LEN + 4 + SENDER_INFO_LEN;
                RtcpPacket::SenderReport {
                    ssrc: be32(packet, 4),
                    info: SenderInfo {
                        ntp: u64::from(be32(packet, 8)) << 32 | u64::from(be32(packet, 12)),
                        rtp_timestamp: be32(packet, 16),
                        packet_count: be32(packet, 20),
                        octet_count: be32(packet, 24),
                    },
                    reports: ReportBlocks {
                        bytes: packet.get(start..start + count * REPORT_BLOCK_LEN)?,
                    },
                }
            }
            PT_RR => {
                let start = HEADER_LEN + 4;
                RtcpPacket::ReceiverReport {
                    ssrc: be32(packet, 4),
                    reports: ReportBlocks {
                        bytes: packet.get(start..start + count * REPORT_BLOCK_LEN)?,
                    },
                }
            }
            packet_type => RtcpPacket::Other { packet_type },
        })
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Builds a compound RTCP packet into a caller-provided buffer.
///
/// RFC 3550 §6.1: a compound packet starts with an SR or RR and carries an SDES with our
/// CNAME; [`RtcpWriter::report`] followed by [`RtcpWriter::sdes_cname`] is the usual pair.
#[derive(Debug)]
pub struct RtcpWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> RtcpWriter<'a> {
    /// Starts an empty compound packet in `out`.
    pub fn new(out: &'a mut [u8]) -> Self {
        RtcpWriter { out, len: 0 }
    }

    fn space(&mut self, n: usize) -> Result<&mut [u8], RtcpError> {
        let start = self.len;
        let slot = self
            .out
            .get_mut(start..start + n)
            .ok_or(RtcpError::BufferTooSmall)?;
        self.len += n;
        Ok(slot)
    }

    fn header(b: &mut [u8], count: u8, packet_type: u8, total_len: usize) {
        b[0] = 0x80 | (count & 0x1F);
        b[1] = packet_type;
        let words = (total_len / 4 - 1) as u16;
        b[2..4].copy_from_slice(&words.to_be_bytes());
    }

    /// Appends an SR if `info` is given (we sent media), otherwise an RR.
    pub fn report(
        &mut self,
        ssrc: u32,
        info: Option<&SenderInfo>,
        blocks: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        if blocks.len() > 31 {
            return Err(RtcpError::FieldOverflow);
        }
        let fixed = HEADER_LEN + 4 + if info.is_some() { SENDER_INFO_LEN } else { 0 };
        let total = fixed + REPORT_BLOCK_LEN * blocks.len();
        let b = self.space(total)?;
        let pt = if info.is_some() { PT_SR } else { PT_RR };
        Self::header(b, blocks.len() as u8, pt, total);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        if let Some(info) = info {
            b[8..16].copy_from_slice(&info.ntp.to_be_bytes());
            b[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
            b[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
            b[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
        }
        for (i, block) in blocks.iter().enumerate() {
            let at = fixed + i * REPORT_BLOCK_LEN;
            block.write(&mut b[at..at + REPORT_BLOCK_LEN]);
        }
        Ok(())
    }

    /// Appends an SDES packet with one chunk carrying our CNAME.
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &str) -> Result<(), RtcpError> {
        let name = cname.as_bytes();
        if name.len() > 255 {
            return Err(RtcpError::FieldOverflow);
        }
        // SSRC, CNAME item (type, length, text), then at least one null octet ending the item
        // list, padded to a 32-bit boundary.
        let chunk = 4 + 2 + name.len();
        let chunk_padded = (chunk + 1).div_ceil(4) * 4;
        let total = HEADER_LEN + chunk_padded;
        let b = self.space(total)?;
        Self::header(b, 1, PT_SDES, total);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        b[8] = 1; // CNAME
        b[9] = name.len() as u8;
        b[10..10 + name.len()].copy_from_slice(name);
        b[10 + name.len()..].fill(0);
        Ok(())
    }

    /// Appends a BYE for `ssrc` (no reason text).
    pub fn bye(&mut self, ssrc: u32) -> Result<(), RtcpError> {
        let b = self.space(8)?;
        Self::header(b, 1, PT_BYE, 8);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Seconds between the NTP era (1900) and the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Maps the monotonic clock to NTP time for SRs and RTT, from one wall-clock reading the
/// caller takes when the session starts. Keeping the mapping monotonic afterwards means a
/// wall-clock step mid-call can't produce a negative RTT.
#[derive(Debug, Clone, Copy)]
pub struct NtpClock {
    anchor: Instant,
    anchor_ntp: u64,
}

impl NtpClock {
    /// `now` and `wallclock` should be read at (nearly) the same moment.
    pub fn new(now: Instant, wallclock: SystemTime) -> Self {
        NtpClock {
            anchor: now,
            anchor_ntp: system_time_to_ntp(wallclock),
        }
    }

    /// NTP time at `now`.
    pub fn ntp_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.anchor);
        self.anchor_ntp.wrapping_add(duration_to_ntp(since))
    }
}

/// Converts a wall-clock time to 64-bit NTP format.
pub fn system_time_to_ntp(t: SystemTime) -> u64 {
    let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    duration_to_ntp(since_unix).wrapping_add(NTP_UNIX_OFFSET << 32)
}

fn duration_to_ntp(d: Duration) -> u64 {
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (d.as_secs() << 32).wrapping_add(frac)
}

/// When to send the next RTCP report: every `interval` (5 s by default) randomised to
/// 0.5–1.5 × interval (RFC 3550 §6.3.1), with the first report after half a randomised
/// interval (§6.2 "initial"), so that calls started together don't report in lockstep.
///
/// We leave out §6.3.1's division by e − 3/2 and the timer reconsideration: they matter for
/// large multicast sessions, not for two-party calls.
#[derive(Debug, Clone)]
pub struct RtcpScheduler {
    interval: Duration,
    next: Instant,
    rng: SmallRng,
}

impl RtcpScheduler {
    /// The usual fixed interval for two-party calls.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

    /// Schedules the first report. `seed` feeds the jitter of the interval; pass a random
    /// value in production and a constant in tests.
    pub fn new(now: Instant, interval: Duration, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let first = Self::randomise(&mut rng, interval / 2);
        RtcpScheduler {
            interval,
            next: now + first,
            rng,
        }
    }

    fn randomise(rng: &mut SmallRng, interval: Duration) -> Duration {
        interval.mul_f64(rng.random_range(0.5..1.5))
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Returns true when a report is due at `now` and schedules the following one.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + Self::randomise(&mut self.rng, self.interval);
        true
    }
}
