//! One task per call leg owns that leg's RTP socket and media state. The SIP core talks to
//! it through a small control channel; nothing here is shared with other calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use siphon_sip::dialog::DialogId;
use siphon_sip::sdp::{Codec, Direction};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug};

use crate::config::Action;
use crate::counters::{Counters, inc};
use crate::endpoint::Command;
use crate::rtp_ports::RtpPort;

/// What offer/answer decided for the leg.
#[derive(Debug, Clone)]
pub struct MediaParams {
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
    /// Where the SDP says to send; replaced by the latched source once RTP arrives.
    pub remote: Option<SocketAddr>,
    /// Our direction: `RecvOnly`/`Inactive` mean the peer holds the call.
    pub direction: Direction,
}

#[derive(Debug)]
enum Control {
    Update(MediaParams),
    Answered,
}

/// The SIP core's handle on a call's media task. Dropping it (or `stop`) ends the task
/// and returns the RTP port to the pool.
#[derive(Debug)]
pub struct MediaHandle {
    port: u16,
    control: mpsc::UnboundedSender<Control>,
}

impl MediaHandle {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn update(&self, params: MediaParams) {
        let _ = self.control.send(Control::Update(params));
    }

    /// The 200 OK went out: start sending.
    pub fn answered(&self) {
        let _ = self.control.send(Control::Answered);
    }

    pub fn stop(self) {}
}

#[allow(clippy::too_many_arguments)]
pub fn spawn(
    rtp: RtpPort,
    action: Action,
    params: MediaParams,
    call: DialogId,
    inactivity: Duration,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    span: tracing::Span,
) -> MediaHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let port = rtp.port;
    let leg = Leg {
        rtp,
        action,
        params,
        call,
        inactivity,
        commands,
        counters,
        answered: false,
        latched: None,
    };
    tokio::spawn(leg.run(rx).instrument(span));
    MediaHandle { port, control: tx }
}

struct Leg {
    rtp: RtpPort,
    action: Action,
    params: MediaParams,
    call: DialogId,
    inactivity: Duration,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    answered: bool,
    /// Where the peer's RTP actually comes from (symmetric RTP).
    latched: Option<SocketAddr>,
}

impl Leg {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut buf = vec![0u8; 2048];
        let mut last_rx = Instant::now();
        loop {
            let idle_deadline = last_rx + self.inactivity;
            tokio::select! {
                msg = control.recv() => match msg {
                    Some(Control::Update(p)) => {
                        // Coming off hold restarts the inactivity clock.
                        last_rx = Instant::now();
                        self.params = p;
                    }
                    Some(Control::Answered) => {
                        self.answered = true;
                        last_rx = Instant::now();
                    }
                    None => return,
                },
                r = self.rtp.socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = r else { continue };
                    last_rx = Instant::now();
                    self.on_rtp(&mut buf[..len], from);
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    if self.on_hold() {
                        last_rx = Instant::now();
                        continue;
                    }
                    let reason = format!("no RTP for {} s", self.inactivity.as_secs());
                    let _ = self.commands.send(Command::MediaEnded { call: self.call.clone(), reason }).await;
                    return;
                }
            }
        }
    }

    fn on_hold(&self) -> bool {
        matches!(
            self.params.direction,
            Direction::RecvOnly | Direction::Inactive
        ) || self.params.remote.is_none()
    }

    fn on_rtp(&mut self, packet: &mut [u8], from: SocketAddr) {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            inc(&self.counters.rtp_malformed);
            return;
        }
        inc(&self.counters.rtp_packets_in);
        let pt = packet[1] & 0x7f;
        if self.latched.is_none() && pt == self.params.payload_type {
            debug!(%from, "RTP latched");
            self.latched = Some(from);
        }
        if matches!(self.action, Action::Echo | Action::Fork)
            && self.answered
            && self.latched == Some(from)
        {
            // Interim echo: reflect the packet. The media engine replaces this with the
            // decode/re-encode path and our own paced stream.
            let _ = self.rtp.socket.try_send_to(packet, from);
            inc(&self.counters.rtp_packets_out);
        }
    }
}
