//! The floor: the least a program can do for one forked call, driven by the same generator
//! and sink as Siphon (docs/benchmarks.md, "The floor").
//!
//! It answers the generator's INVITE with a minimal 200 (one RTP socket per call, bound in
//! the same port range Siphon uses), opens one WebSocket per call to the sink and sends the
//! native protocol's `start`, then per 20 ms: one RTP datagram in → one WebSocket frame out
//! (µ-law decoded to L16, or passed as µ-law), and per frame the sink plays back: one
//! WebSocket frame in → one RTP datagram out. BYE sends `stop` and closes. Nothing else: no
//! jitter buffer, no RTCP, no dialog state beyond a map of Call-IDs, no logging.
//!
//! It runs on the same runtime family as Siphon (tokio, current thread, one task per call,
//! tokio-tungstenite), so Siphon ÷ floor measures the work Siphon does above the I/O itself,
//! not a difference of runtimes. Buffers are reused; the one allocation per frame out is the
//! owned payload tungstenite's `Message::Binary` takes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_util::{SinkExt as _, StreamExt as _};
use siphon_media::g711::{ulaw_decode, ulaw_encode};
use siphon_server::udp_batch::{RTP_DATAGRAM, RecvBatch, try_recv_batch};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::sip::{self, StartLine};

/// What the floor sends the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 16-bit little-endian PCM at 8 kHz (decoded from the caller's µ-law).
    L16,
    /// The caller's µ-law as it came.
    Pcmu,
}

/// Floor options.
#[derive(Debug, Clone)]
pub struct Options {
    /// SIP address to answer on.
    pub listen: SocketAddr,
    /// The sink's fork URL (ws://HOST:PORT/native).
    pub sink: String,
    pub encoding: Encoding,
    /// RTP ports to bind, MIN-MAX (even ports used).
    pub rtp_ports: (u16, u16),
}

struct CallEntry {
    /// The 200 sent, for a retransmitted INVITE.
    answer: String,
    stop: Option<oneshot::Sender<()>>,
}

/// Runs the floor until the process is stopped.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(opts))
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(opts.listen).await?;
    eprintln!("siphon-load floor: SIP on {}", opts.listen);
    let calls: Rc<RefCell<HashMap<String, CallEntry>>> = Rc::default();
    let (min, max) = opts.rtp_ports;
    let mut next_port = min & !1;
    let mut n = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = sock.recv_from(&mut buf).await?;
        let Some(msg) = sip::parse(&buf[..len]) else {
            continue;
        };
        let StartLine::Request(method) = msg.start else {
            continue;
        };
        match method {
            "OPTIONS" => {
                let _ = sock.send_to(sip::ok_response(&msg).as_bytes(), from).await;
            }
            "INVITE" => {
                let again = calls.borrow().get(msg.call_id).map(|c| c.answer.clone());
                if let Some(again) = again {
                    let _ = sock.send_to(again.as_bytes(), from).await;
                    continue;
                }
                let Some(remote) = sip::sdp_audio_addr(msg.body) else {
                    continue;
                };
                // The next free even port in the range.
                let mut rtp = None;
                for _ in 0..=(max.saturating_sub(min) / 2) {
                    let port = next_port;
                    next_port = if next_port + 2 > max {
                        min & !1
                    } else {
                        next_port + 2
                    };
                    if let Ok(s) = UdpSocket::bind((opts.listen.ip(), port)).await {
                        rtp = Some(s);
                        break;
                    }
                }
                let Some(rtp) = rtp else {
                    continue;
                };
                let Ok(local) = rtp.local_addr() else {
                    continue;
                };
                n += 1;
                let answer = answer(&msg, opts.listen, local, n);
                let _ = sock.send_to(answer.as_bytes(), from).await;
                let (tx, rx) = oneshot::channel();
                calls.borrow_mut().insert(
                    msg.call_id.to_string(),
                    CallEntry {
                        answer,
                        stop: Some(tx),
                    },
                );
                let call_id = msg.call_id.to_string();
                let (sink, encoding) = (opts.sink.clone(), opts.encoding);
                let calls = calls.clone();
                tokio::task::spawn_local(async move {
                    call(rtp, remote, &sink, encoding, &call_id, rx).await;
                    // Forget the call once it is over (a late retransmission is ignored).
                    calls.borrow_mut().remove(&call_id);
                });
            }
            "BYE" => {
                let _ = sock.send_to(sip::ok_response(&msg).as_bytes(), from).await;
                if let Some(c) = calls.borrow_mut().get_mut(msg.call_id)
                    && let Some(stop) = c.stop.take()
                {
                    let _ = stop.send(());
                }
            }
            _ => {}
        }
    }
}

/// The 200 to an INVITE: the request's Via/From/Call-ID/CSeq, To with a tag, Contact and SDP.
fn answer(req: &sip::Message<'_>, contact: SocketAddr, rtp: SocketAddr, n: u64) -> String {
    let ip = rtp.ip();
    let sdp = format!(
        "v=0\r\no=floor {n} {n} IN IP4 {ip}\r\ns=floor\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        rtp.port()
    );
    let mut m = String::from("SIP/2.0 200 OK\r\n");
    for (name, value) in &req.headers {
        match name.to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                m.push_str(&format!("{name}: {value}\r\n"));
            }
            "to" | "t" => {
                if req.to_tag.is_some() {
                    m.push_str(&format!("{name}: {value}\r\n"));
                } else {
                    m.push_str(&format!("{name}: {value};tag=floor{n}\r\n"));
                }
            }
            _ => {}
        }
    }
    m.push_str(&format!(
        "Contact: <sip:floor@{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ));
    m
}

/// One call: RTP in → frame out, frame in → RTP out, until BYE (or the sink goes away).
async fn call(
    rtp: UdpSocket,
    remote: SocketAddr,
    sink: &str,
    encoding: Encoding,
    call_id: &str,
    mut stop: oneshot::Receiver<()>,
) {
    // The same 4 KiB read buffer as Siphon's fork connections (tungstenite's default is
    // 128 KiB, zero-filled on each read).
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async_with_config(sink, Some(config), true).await
    else {
        return;
    };
    let (enc, bytes_per_sample) = match encoding {
        Encoding::L16 => ("pcm_s16le", 2),
        Encoding::Pcmu => ("pcmu", 1),
    };
    let start = serde_json::json!({
        "event": "start",
        "callId": call_id,
        "mediaFormat": {"encoding": enc, "sampleRate": 8000, "channels": 1},
    });
    if ws
        .send(Message::Text(start.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    // RTP is read as Siphon reads it (`udp_batch`: one `recvmmsg`, no empty read after it),
    // so the floor has no syscall Siphon spares.
    let mut batch = RecvBatch::new(RTP_DATAGRAM);
    let mut out = [0u8; 12 + 1024];
    // RTP header out: version 2, PCMU, our own sequence, timestamp and SSRC.
    let ssrc: u32 = rand::random();
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    loop {
        tokio::select! {
            r = rtp.readable() => {
                if r.is_err() || try_recv_batch(&rtp, &mut batch).is_err() {
                    break;
                }
                for (packet, _) in batch.packets() {
                    // 12-byte header, no CSRC/extension from the generator; skip anything else.
                    if packet.len() <= 12
                        || packet[0] >> 6 != 2
                        || packet[0] & 0x1F != 0
                        || packet[1] & 0x7F != 0
                    {
                        continue;
                    }
                    let payload = &packet[12..];
                    let mut frame = Vec::with_capacity(payload.len() * bytes_per_sample);
                    match encoding {
                        Encoding::L16 => {
                            for c in payload {
                                frame.extend_from_slice(&ulaw_decode(*c).to_le_bytes());
                            }
                        }
                        Encoding::Pcmu => frame.extend_from_slice(payload),
                    }
                    if ws.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                }
            }
            m = ws.next() => {
                let data = match m {
                    Some(Ok(Message::Binary(d))) => d,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                let samples = (data.len() / bytes_per_sample).min(out.len() - 12);
                out[0] = 0x80;
                out[1] = 0;
                out[2..4].copy_from_slice(&seq.to_be_bytes());
                out[4..8].copy_from_slice(&ts.to_be_bytes());
                out[8..12].copy_from_slice(&ssrc.to_be_bytes());
                match encoding {
                    Encoding::L16 => {
                        for (o, s) in out[12..12 + samples].iter_mut().zip(data.chunks_exact(2)) {
                            *o = ulaw_encode(i16::from_le_bytes([s[0], s[1]]));
                        }
                    }
                    Encoding::Pcmu => out[12..12 + samples].copy_from_slice(&data[..samples]),
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(samples as u32);
                let _ = rtp.send_to(&out[..12 + samples], remote).await;
            }
            _ = &mut stop => {
                let stop = serde_json::json!({"event": "stop", "callId": call_id});
                let _ = ws.send(Message::Text(stop.to_string().into())).await;
                let _ = ws.close(None).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answer_echoes_the_dialog_headers_and_tags_to() {
        let invite = "INVITE sip:700@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-1\r\n\
                      From: <sip:a@x>;tag=a1\r\nTo: <sip:700@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
                      Content-Length: 0\r\n\r\n";
        let msg = sip::parse(invite.as_bytes()).unwrap();
        let a = answer(
            &msg,
            "127.0.0.1:5090".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
            7,
        );
        let parsed = sip::parse(a.as_bytes()).unwrap();
        assert_eq!(parsed.start, StartLine::Response(200));
        assert_eq!(parsed.to_tag, Some("floor7"));
        assert_eq!(parsed.call_id, "c1");
        assert_eq!(
            sip::sdp_audio_addr(parsed.body),
            Some("127.0.0.1:40000".parse().unwrap())
        );
    }
}
