#!/usr/bin/env python3
"""A Twilio Media Streams service that says almost nothing (Python standard library only).

    quiet_twilio_service.py PORT [--talk-after S] [--talk-for S]

Accepts WebSocket connections on 127.0.0.1:PORT, reads what the fork sends (connected,
start, media, stop) and, per connection, stays silent; with --talk-after it sends --talk-for
seconds of audio (a 400 Hz tone as mu-law, 50 media messages a second) that many seconds
after the start message, then is silent again. This is the issue's case: a service that is
silent 2 s, then sends 1 s of audio. Each connection logs `start <streamSid>` and
`talked <n>` (media messages sent) on stdout.
"""
import argparse
import base64
import hashlib
import json
import math
import socket
import struct
import threading
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ulaw(sample):
    """G.711 mu-law of a 16-bit linear sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent = max(0, sample.bit_length() - 8)
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def recv_frame(conn):
    """(opcode, payload) of one client frame (clients always mask)."""
    b0, b1 = recv_exact(conn, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", recv_exact(conn, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", recv_exact(conn, 8))[0]
    mask = recv_exact(conn, 4) if b1 & 0x80 else b"\0\0\0\0"
    data = bytes(c ^ mask[i % 4] for i, c in enumerate(recv_exact(conn, length)))
    return b0 & 0x0F, data


def send_frame(conn, lock, opcode, data):
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        head += bytes([len(data)])
    else:
        head += bytes([126]) + struct.pack("!H", len(data))
    with lock:
        conn.sendall(head + data)


def talk(conn, lock, sid, after, seconds):
    time.sleep(after)
    start, sent = time.monotonic(), 0
    frames = int(seconds * 50)
    for n in range(frames):
        payload = bytes(ulaw(int(8000 * math.sin(2 * math.pi * 400 * (n * 160 + i) / 8000)))
                        for i in range(160))
        msg = {"event": "media", "streamSid": sid,
               "media": {"payload": base64.b64encode(payload).decode()}}
        try:
            send_frame(conn, lock, 0x1, json.dumps(msg).encode())
        except OSError:
            break
        sent += 1
        time.sleep(max(0.0, start + (n + 1) * 0.020 - time.monotonic()))
    print(f"talked {sent}", flush=True)


def serve(conn, args):
    lock = threading.Lock()
    try:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        while True:
            opcode, data = recv_frame(conn)
            if opcode == 0x8:  # close: answer it and end
                send_frame(conn, lock, 0x8, data[:2])
                return
            if opcode == 0x9:  # ping
                send_frame(conn, lock, 0xA, data)
            elif opcode == 0x1:
                msg = json.loads(data)
                if msg.get("event") == "start":
                    sid = msg.get("streamSid", "")
                    print(f"start {sid}", flush=True)
                    if args.talk_after is not None:
                        threading.Thread(target=talk, daemon=True, args=(
                            conn, lock, sid, args.talk_after, args.talk_for)).start()
    except (OSError, ConnectionError, ValueError, StopIteration):
        return
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--talk-after", type=float)
    p.add_argument("--talk-for", type=float, default=1.0)
    args = p.parse_args()
    server = socket.create_server(("127.0.0.1", args.port))
    print("listening", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, args), daemon=True).start()


if __name__ == "__main__":
    main()
