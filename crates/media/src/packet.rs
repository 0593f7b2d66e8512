//! RTP packets (RFC 3550 §5.1): a validating, borrowing parser and a builder.
//!
//! Field extraction and header serialisation use the `rtp` crate's [`Header`] with
//! `webrtc-util`'s `Marshal`/`Unmarshal` traits, but every datagram goes through [`validate`]
//! first. The crate (0.17) was probed with crafted bytes (see `tests/rtp_crate_findings.rs`):
//!
//! * it accepts RTP versions 0, 1 and 3;
//! * it accepts a padding count of 0, which RFC 3550 forbids (the count includes itself);
//! * an RFC 8285 one-byte extension element whose length runs past the end of the datagram
//!   **panics** (`Buf::copy_to_bytes` out of bounds), and one whose length runs past the
//!   extension block but not the datagram is accepted with the payload boundary misplaced;
//! * a two-byte extension element header cut at the end of the datagram also **panics**.
//!
//! A panic on a packet from the network is not acceptable, so [`validate`] checks the
//! version, the CSRC count, the extension length and every RFC 8285 element, and the padding
//! count before the bytes reach `rtp`. After that `rtp` cannot panic: it only ever sees the
//! header bytes whose structure was just checked.
//!
//! We also don't use `rtp::packet::Packet::unmarshal`: given a `&[u8]` it copies the payload
//! into a fresh `Bytes` for every packet. [`RtpPacket`] borrows the payload from the datagram
//! instead, so parsing a G.711 packet (no CSRCs, no extensions) allocates nothing.

use ::rtp::header::Header;
use webrtc_util::marshal::{Marshal, MarshalSize, Unmarshal};

/// The only RTP version there is.
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed RTP header (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

const ONE_BYTE_PROFILE: u16 = 0xBEDE;
const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Why an RTP datagram was rejected (or a packet could not be built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the fixed 12-byte header.
    #[error("RTP packet of {len} bytes is shorter than the 12-byte header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC count says there are more CSRCs than the datagram holds.
    #[error("{count} CSRCs need {needed} header bytes but the packet has {len}")]
    CsrcOverrun {
        /// The CC field.
        count: u8,
        /// Header bytes needed for them.
        needed: usize,
        /// Datagram length.
        len: usize,
    },
    /// The X bit is set but the extension header or its declared length runs past the end.
    #[error("header extension needs {needed} bytes but the packet has {len}")]
    ExtensionOverrun {
        /// Bytes needed up to the end of the extension block.
        needed: usize,
        /// Datagram length.
        len: usize,
    },
    /// An RFC 8285 element inside the extension block claims more bytes than the block has.
    #[error("an RFC 8285 header extension element overruns its extension block")]
    ExtensionElementOverrun,
    /// The P bit is set but the last byte is 0 or larger than the body after the header.
    #[error("padding count {count} is invalid for {available} bytes after the header")]
    BadPadding {
        /// The padding count (last byte).
        count: u8,
        /// Bytes after the header, padding included.
        available: usize,
    },
    /// The `rtp` crate refused a header that [`validate`] accepted (should not happen).
    #[error("the rtp crate rejected the header")]
    Rejected,
    /// A payload type this session did not negotiate.
    #[error("unexpected payload type {0}")]
    UnexpectedPayloadType(u8),
    /// A telephone-event payload shorter than its 4 bytes.
    #[error("telephone-event payload of {0} bytes, need 4")]
    BadTelephoneEvent(usize),
    /// The output buffer cannot hold the packet being built.
    #[error("output buffer of {have} bytes is too small, {need} needed")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Where the parts of a validated datagram are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpLayout {
    /// Bytes of header: fixed part, CSRCs and extension block.
    pub header_len: usize,
    /// End of the payload (start of the padding, or the datagram length).
    pub payload_end: usize,
}

/// Checks everything about an RTP datagram's structure that a lying sender could get wrong,
/// without allocating. See the module doc for why this runs before the `rtp` crate.
pub fn validate(buf: &[u8]) -> Result<RtpLayout, RtpError> {
    let len = buf.len();
    if len < RTP_HEADER_LEN {
        return Err(RtpError::TooShort { len });
    }
    let b0 = buf[0];
    let version = b0 >> 6;
    if version != RTP_VERSION {
        return Err(RtpError::BadVersion(version));
    }
    let count = b0 & 0x0F;
    let mut header_len = RTP_HEADER_LEN + 4 * usize::from(count);
    if len < header_len {
        return Err(RtpError::CsrcOverrun {
            count,
            needed: header_len,
            len,
        });
    }
    if b0 & 0x10 != 0 {
        if len < header_len + 4 {
            return Err(RtpError::ExtensionOverrun {
                needed: header_len + 4,
                len,
            });
        }
        let profile = u16::from_be_bytes([buf[header_len], buf[header_len + 1]]);
        let words = u16::from_be_bytes([buf[header_len + 2], buf[header_len + 3]]);
        let start = header_len + 4;
        let end = start + 4 * usize::from(words);
        if len < end {
            return Err(RtpError::ExtensionOverrun { needed: end, len });
        }
        check_extension_elements(profile, &buf[start..end])?;
        header_len = end;
    }
    let mut payload_end = len;
    if b0 & 0x20 != 0 {
        // RFC 3550 §5.1: the last octet counts the padding octets, itself included, so it
        // is at least 1 and at most everything after the header.
        let available = len - header_len;
        let count = if available == 0 { 0 } else { buf[len - 1] };
        if count == 0 || usize::from(count) > available {
            return Err(RtpError::BadPadding { count, available });
        }
        payload_end = len - usize::from(count);
    }
    Ok(RtpLayout {
        header_len,
        payload_end,
    })
}

/// Walks RFC 8285 elements the same way `rtp::header::Header::unmarshal` does and fails
/// where it would read past the block. Other profiles are opaque RFC 3550 blobs, which `rtp`
/// copies whole after checking the length itself.
fn check_extension_elements(profile: u16, block: &[u8]) -> Result<(), RtpError> {
    let n = block.len();
    let mut i = 0;
    match profile {
        ONE_BYTE_PROFILE => {
            while i < n {
                let b = block[i];
                i += 1;
                if b == 0 {
                    continue; // padding byte
                }
                if b >> 4 == 0x0F {
                    break; // id 15: "stop parsing" (RFC 8285 §4.2)
                }
                let elem_len = usize::from(b & 0x0F) + 1;
                if i + elem_len > n {
                    return Err(RtpError::ExtensionElementOverrun);
                }
                i += elem_len;
            }
        }
        TWO_BYTE_PROFILE => {
            while i < n {
                let b = block[i];
                i += 1;
                if b == 0 {
                    continue;
                }
                let Some(&elem_len) = block.get(i) else {
                    return Err(RtpError::ExtensionElementOverrun);
                };
                i += 1;
                if i + usize::from(elem_len) > n {
                    return Err(RtpError::ExtensionElementOverrun);
                }
                i += usize::from(elem_len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// One RTP packet, borrowing its payload from the datagram (or from the caller, when
/// building). CSRCs and header extensions are validated and skipped on parse and never
/// written: nothing Siphon talks to needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The M bit: first packet of a talk spurt (audio) or of an event (RFC 4733).
    pub marker: bool,
    /// 7-bit payload type.
    pub payload_type: u8,
    /// 16-bit sequence number.
    pub sequence_number: u16,
    /// 32-bit media timestamp (8 kHz units for G.711 and telephone-event).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload, padding removed.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram. Never panics; every structural problem is a typed [`RtpError`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let layout = validate(buf)?;
        // Only the header bytes go to `rtp`, so it cannot misplace the payload boundary and
        // cannot copy the payload.
        let header =
            Header::unmarshal(&mut &buf[..layout.header_len]).map_err(|_| RtpError::Rejected)?;
        Ok(RtpPacket {
            marker: header.marker,
            payload_type: header.payload_type,
            sequence_number: header.sequence_number,
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            payload: &buf[layout.header_len..layout.payload_end],
        })
    }

    /// Size of the serialised packet.
    pub fn len(&self) -> usize {
        RTP_HEADER_LEN + self.payload.len()
    }

    /// Whether the payload is empty (the header is always there).
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Serialises into `out` and returns the number of bytes written. Allocates nothing:
    /// the `rtp` header's CSRC and extension vectors stay empty.
    pub fn write_to(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        let header = Header {
            version: RTP_VERSION,
            marker: self.marker,
            // `rtp` ORs the marker into the same byte, so an out-of-range type would corrupt it.
            payload_type: self.payload_type & 0x7F,
            sequence_number: self.sequence_number,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            ..Header::default()
        };
        let need = header.marshal_size() + self.payload.len();
        if out.len() < need {
            return Err(RtpError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        let n = header
            .marshal_to(&mut out[..])
            .map_err(|_| RtpError::BufferTooSmall {
                need,
                have: out.len(),
            })?;
        out[n..n + self.payload.len()].copy_from_slice(self.payload);
        Ok(n + self.payload.len())
    }
}
