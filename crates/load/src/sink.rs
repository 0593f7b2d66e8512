//! The fork sink: a WebSocket service speaking Siphon's native fork protocol that timestamps
//! every frame it receives and, with `echo`, sends each inbound frame straight back (so
//! Siphon plays it to the caller at the pace the fork delivers it: real time, both
//! directions loaded).
//!
//! It reads the latency marker from each frame (µ-law, or 16-bit PCM at 8 kHz; channel 0 of
//! stereo), records `receive time − generator stamp` in a histogram, and counts per Call-ID the
//! distinct generator packets that arrived, so the generator can compute the fork's loss. Frames
//! sent back are re-stamped as the sink's, keeping the generator's counter.
//!
//! `ws://HOST:PORT/control` returns the report as one JSON text message (`?reset` clears it).
//! A current-thread runtime: one core, no locks (state is `Rc<RefCell<..>>`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::clock::now_us;
use crate::hist::Histogram;
use crate::marker::{self, Origin, Stamp};
use crate::report::SinkReport;
use crate::seq::{Arrival, SeqTracker};

/// Sink options.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    /// Send each inbound frame back.
    pub echo: bool,
}

#[derive(Default)]
struct Stream {
    call_id: String,
    counters: SeqTracker,
    played: u64,
}

#[derive(Default)]
struct State {
    streams: Vec<Rc<RefCell<Stream>>>,
    /// Call-ID → its stream: a fork that reconnects (`resumed`) continues the same counters.
    by_call: std::collections::HashMap<String, Rc<RefCell<Stream>>>,
    connections: u64,
    frames: u64,
    bytes: u64,
    marker_frames: u64,
    latency: Histogram,
    played: u64,
    errors: Vec<String>,
    encodings: BTreeMap<String, u64>,
    /// Siphon's own counters from the `stop` messages (framesDropped, ...), summed.
    stop_counters: BTreeMap<String, u64>,
    stops: u64,
}

impl State {
    fn report(&self) -> SinkReport {
        let mut r = SinkReport {
            streams: self.streams.len() as u64,
            connections: self.connections,
            frames: self.frames,
            bytes: self.bytes,
            marker_frames: self.marker_frames,
            played: self.played,
            latency_us: self.latency.to_wire(),
            errors: self.errors.iter().take(20).cloned().collect(),
            encodings: self.encodings.clone(),
            stops: self.stops,
            stop_counters: self.stop_counters.clone(),
            ..SinkReport::default()
        };
        for s in &self.streams {
            let s = s.borrow();
            // Counters start at 0 with the call's first packet: a stream whose first frame
            // carries a higher one missed the start of the call.
            if let Some((first, _)) = s.counters.span() {
                let first = first - (1 << 16);
                if first > 0 {
                    r.late_streams += 1;
                    r.frames_before_stream += first;
                }
            }
            r.fresh += s.counters.fresh;
            r.repeats += s.counters.repeats;
            r.late += s.counters.late;
            r.per_call
                .push((s.call_id.clone(), s.counters.fresh, s.played));
        }
        r
    }
}

/// Frame format announced in `start.mediaFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ulaw {
        channels: usize,
    },
    L16 {
        channels: usize,
    },
    /// Anything the marker does not survive (A-law, 16 kHz): frames are counted only.
    Opaque,
}

impl Format {
    /// From a native `start` message.
    pub fn from_start(start: &Value) -> Format {
        let mf = &start["mediaFormat"];
        let channels = mf["channels"].as_u64().unwrap_or(1).clamp(1, 2) as usize;
        let rate = mf["sampleRate"].as_u64().unwrap_or(8000);
        if rate != 8000 {
            return Format::Opaque;
        }
        match mf["encoding"].as_str() {
            Some("pcmu") => Format::Ulaw { channels },
            Some("pcm_s16le") => Format::L16 { channels },
            _ => Format::Opaque,
        }
    }

    /// Reads the marker from a frame.
    pub fn read(self, frame: &[u8]) -> Option<Stamp> {
        match self {
            Format::Ulaw { channels: 1 } => marker::read_ulaw(frame),
            Format::Ulaw { channels } => {
                let ch0: Vec<u8> = frame
                    .iter()
                    .step_by(channels)
                    .take(marker::MARKER_LEN)
                    .copied()
                    .collect();
                marker::read_ulaw(&ch0)
            }
            Format::L16 { channels } => marker::read_l16(frame, channels),
            Format::Opaque => None,
        }
    }

    /// Channel 0 of a frame, mono, in the same encoding, re-stamped as the sink's.
    pub fn playback(self, frame: &[u8], stamp: Option<Stamp>) -> Vec<u8> {
        let restamp = stamp.map(|s| Stamp {
            origin: Origin::Sink,
            counter: s.counter,
            time_us: now_us() as u32,
        });
        match self {
            Format::Ulaw { channels } => {
                let mut out: Vec<u8> = frame.iter().step_by(channels).copied().collect();
                if let Some(s) = restamp {
                    marker::write_ulaw(&mut out, s);
                }
                out
            }
            Format::L16 { channels } => {
                let mut out: Vec<u8> = frame
                    .chunks_exact(2 * channels)
                    .flat_map(|c| [c[0], c[1]])
                    .collect();
                if let Some(s) = restamp {
                    marker::write_l16(&mut out, s);
                }
                out
            }
            Format::Opaque => frame.to_vec(),
        }
    }
}

/// Runs the sink until the process is stopped.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&opts.listen)?;
    eprintln!(
        "siphon-load sink: listening on ws://{}",
        listener.local_addr()?
    );
    serve(listener, opts.echo)
}

/// Serves on an already bound listener, forever, on a runtime of its own (tests run it on a
/// thread).
pub fn serve(listener: std::net::TcpListener, echo: bool) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let state = Rc::new(RefCell::new(State::default()));
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            tokio::task::spawn_local(connection(sock, state.clone(), echo));
        }
    })
}

async fn connection(sock: TcpStream, state: Rc<RefCell<State>>, echo: bool) {
    let mut path = String::new();
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let cb = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string());
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, cb).await else {
        return;
    };
    if path.starts_with("/control") {
        let report = state.borrow().report();
        if path.contains("reset") {
            *state.borrow_mut() = State::default();
        }
        let text = serde_json::to_string(&report).unwrap_or_default();
        let _ = ws.send(Message::Text(text.into())).await;
        let _ = ws.close(None).await;
        return;
    }
    let mut format = Format::Opaque;
    let mut stream: Option<Rc<RefCell<Stream>>> = None;
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(data) => {
                let now = now_us();
                let stamp = format.read(&data);
                {
                    let mut st = state.borrow_mut();
                    st.frames += 1;
                    st.bytes += data.len() as u64;
                    if let (Some(s), Some(stream)) = (stamp, &stream) {
                        st.marker_frames += 1;
                        if s.origin == Origin::Generator
                            && let Arrival::Fresh { .. } =
                                stream.borrow_mut().counters.push(s.counter)
                        {
                            st.latency.record(u64::from(s.age_us(now)));
                        }
                    }
                }
                if echo {
                    let back = format.playback(&data, stamp);
                    if ws.send(Message::Binary(back.into())).await.is_err() {
                        break;
                    }
                    state.borrow_mut().played += 1;
                    if let Some(s) = &stream {
                        s.borrow_mut().played += 1;
                    }
                }
            }
            Message::Text(t) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    state.borrow_mut().errors.push(format!("not JSON: {t}"));
                    continue;
                };
                if v["event"] == "stop" {
                    let mut st = state.borrow_mut();
                    st.stops += 1;
                    if let Some(obj) = v.as_object() {
                        for (k, n) in obj {
                            if let Some(n) = n
                                .as_u64()
                                .filter(|_| k.starts_with("frames") || k == "reconnects")
                            {
                                *st.stop_counters.entry(k.clone()).or_default() += n;
                            }
                        }
                    }
                }
                if v["event"] == "start" && stream.is_none() {
                    format = Format::from_start(&v);
                    let enc = format!(
                        "{}/{}/{}",
                        v["mediaFormat"]["encoding"].as_str().unwrap_or("?"),
                        v["mediaFormat"]["sampleRate"],
                        v["mediaFormat"]["channels"]
                    );
                    let call_id = v["callId"].as_str().unwrap_or_default().to_string();
                    let mut st = state.borrow_mut();
                    st.connections += 1;
                    let s = match st.by_call.get(&call_id) {
                        Some(s) if !call_id.is_empty() => s.clone(),
                        _ => {
                            let s = Rc::new(RefCell::new(Stream {
                                call_id: call_id.clone(),
                                ..Stream::default()
                            }));
                            *st.encodings.entry(enc).or_default() += 1;
                            st.streams.push(s.clone());
                            st.by_call.insert(call_id, s.clone());
                            s
                        }
                    };
                    stream = Some(s);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_from_start() {
        let f = |enc: &str, rate: u32, ch: u32| {
            Format::from_start(
                &json!({"event":"start","mediaFormat":{"encoding":enc,"sampleRate":rate,"channels":ch}}),
            )
        };
        assert_eq!(f("pcmu", 8000, 1), Format::Ulaw { channels: 1 });
        assert_eq!(f("pcm_s16le", 8000, 2), Format::L16 { channels: 2 });
        assert_eq!(f("pcm_s16le", 16000, 1), Format::Opaque);
        assert_eq!(f("pcma", 8000, 1), Format::Opaque);
    }

    #[test]
    fn playback_keeps_counter_and_restamps() {
        let s = Stamp {
            origin: Origin::Generator,
            counter: 77,
            time_us: 5,
        };
        let mut ulaw = vec![0xAAu8; 320]; // stereo µ-law: 160 samples × 2
        let mut mono = vec![0xAAu8; 160];
        marker::write_ulaw(&mut mono, s);
        for (k, b) in mono.iter().enumerate() {
            ulaw[2 * k] = *b;
        }
        let f = Format::Ulaw { channels: 2 };
        assert_eq!(f.read(&ulaw), Some(s));
        let back = f.playback(&ulaw, Some(s));
        assert_eq!(back.len(), 160);
        let r = marker::read_ulaw(&back).unwrap();
        assert_eq!((r.origin, r.counter), (Origin::Sink, 77));
        let l16: Vec<u8> = mono
            .iter()
            .flat_map(|c| siphon_media::g711::ulaw_decode(*c).to_le_bytes())
            .collect();
        let f = Format::L16 { channels: 1 };
        assert_eq!(f.read(&l16), Some(s));
        assert_eq!(f.playback(&l16, Some(s)).len(), 320);
    }
}
