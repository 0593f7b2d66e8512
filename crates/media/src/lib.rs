//! Siphon's media layer: RTP/RTCP, G.711, jitter buffer, 20 ms pacer, RFC 4733 DTMF,
//! 8 ↔ 16 kHz resampling, tones and WAV prompts.
//!
//! # Pure
//!
//! Nothing here touches a socket, a runtime or a clock. Datagrams and the current
//! [`Instant`](std::time::Instant) go in; datagrams to send, decoded audio, events and the
//! next deadline come out. Every timer is therefore testable in virtual time (the test suite
//! runs an hour of pacing and minutes of jittery network in milliseconds). The only reads of
//! the outside world are the random SSRC/sequence/timestamp/RTCP seed drawn by
//! [`session::MediaSession::new`] and [`pacer::Pacer::random`]; both have deterministic
//! twins for tests.
//!
//! # Hot path
//!
//! Per packet and per 20 ms frame nothing is allocated and nothing is locked: RTP is parsed
//! into a borrowing [`packet::RtpPacket`], decoded into a scratch buffer the session owns,
//! stored in the jitter buffer's preallocated ring, played into a caller-provided
//! `[i16; 160]`, encoded into a session-owned array and built into the caller's datagram
//! buffer. Allocation happens when a session (or a prompt) is created.
//!
//! # Modules
//!
//! | module | concept |
//! |---|---|
//! | [`packet`] | RTP parse (pre-validated, borrowing) and build, via the `rtp` crate |
//! | [`rtcp`] | RTCP compound parse, SR/RR/SDES/BYE build, [`rtcp::RtcpScheduler`], NTP time |
//! | [`rtcp_mux`] | RTP/RTCP demultiplexing (RFC 5761) and where a leg's RTCP goes |
//! | [`stats`] | RFC 3550 receiver statistics: extended seq, loss, fraction lost, jitter |
//! | [`g711`] | µ-law / A-law tables and encoders, bit-exact |
//! | [`jitter`] | adaptive jitter buffer (20–200 ms), loss concealment |
//! | [`pacer`] | absolute 20 ms send clock and RTP header state of one outgoing stream |
//! | [`dtmf`] | RFC 4733 telephone-event receiver (one event per press) and sender |
//! | [`resample`] | streaming half-band 8 ↔ 16 kHz converters |
//! | [`tone`] | phase-continuous sine at a level in dBm0 |
//! | [`wav`] | WAV prompt reader (PCM16 8/16 kHz, G.711) |
//! | [`session`] | [`session::MediaSession`]: all of the above for one call leg |
//!
//! # Driving a call leg
//!
//! The server owns one [`session::MediaSession`] per call leg inside the task that owns the
//! leg's RTP and RTCP sockets. The session never waits; the task sleeps until
//! [`poll_timeout`](session::MediaSession::poll_timeout) or until a datagram arrives:
//!
//! ```text
//! let mut session = MediaSession::new(config, Instant::now(), SystemTime::now());
//! let (mut pcm_in, mut pcm_out) = ([0i16; 160], [0i16; 160]);
//! let (mut rx, mut tx, mut rtcp_tx) = ([0u8; 1500], [0u8; 1500], [0u8; 1500]);
//! loop {
//!     tokio::select! {
//!         Ok((n, from)) = rtp_socket.recv_from(&mut rx) => {
//!             // Symmetric RTP / latching on `from` is the server's business.
//!             if let Err(e) = session.handle_rtp(Instant::now(), &rx[..n]) {
//!                 tracing::debug!(%e, "RTP dropped");   // counted in session.stats()
//!             }
//!         }
//!         Ok((n, _)) = rtcp_socket.recv_from(&mut rx) => {
//!             let _ = session.handle_rtcp(Instant::now(), &rx[..n]);
//!         }
//!         // tokio::time::Instant::from_std(session.poll_timeout())
//!         _ = sleep_until(session.poll_timeout().into()) => {
//!             let now = Instant::now();
//!             // One iteration per due 20 ms slot (usually 1; a few after a hiccup; a stall
//!             // longer than 60 ms is skipped by the pacer, not burst).
//!             for _ in 0..session.handle_timeout(now) {
//!                 // Received audio for this slot, if you want it (fork, echo, recording).
//!                 // Call at most once per slot, before filling the slot.
//!                 let frame = session.pop_audio(&mut pcm_in);   // None = nothing yet: silence
//!                 // ... fork: Upsampler::process_frame(&pcm_in, &mut wide) -> websocket
//!                 // Fill the slot with exactly one of:
//!                 //   send_audio(&pcm_out, ..)    linear audio (echo, tone, injected fork audio)
//!                 //   send_payload(&g711, ..)     pre-encoded 160 bytes (a WAV prompt)
//!                 //   send_silence(..)            nothing to send (next audio gets the marker)
//!                 // A queued DTMF (session.send_dtmf) takes over the slot in all three.
//!                 let n = session.send_audio(&pcm_out, &mut tx)?;
//!                 rtp_socket.send_to(&tx[..n], peer).await?;
//!             }
//!             if let Some(n) = session.poll_rtcp(now, &mut rtcp_tx)? {
//!                 rtcp_socket.send_to(&rtcp_tx[..n], peer_rtcp).await?;
//!             }
//!         }
//!     }
//!     while let Some(event) = session.poll_event() {
//!         // MediaEvent::Dtmf / NewSource / RemoteReport
//!     }
//! }
//! // On hang-up: session.build_bye(Instant::now(), &mut rtcp_tx) and send it.
//! ```
//!
//! The received stream is played out on the send clock: `pop_audio` uses the nominal time of
//! the slot being filled, so both directions run on one 20 ms grid and a late wake-up does not
//! look like network delay to the jitter buffer.
//!
//! The building blocks are public too, for the cases the session doesn't cover (a leg that
//! only listens, a different playout clock): each module documents its own API.

use std::time::Duration;

pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod pacer;
pub mod relay_rtcp;

pub mod packet;
pub mod repacketize;
pub mod resample;
pub mod rtcp;
pub mod rtcp_mux;
pub mod session;
pub mod stats;
pub mod tone;
pub mod wav;

/// Narrowband sample rate (G.711, telephone-event).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms narrowband frame.
pub const FRAME_SAMPLES: usize = 160;
/// Samples in one 20 ms wideband (16 kHz) frame.
pub const WIDEBAND_FRAME_SAMPLES: usize = 320;
/// The packetisation interval for everything Siphon sends and plays out.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
