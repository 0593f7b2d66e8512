#!/usr/bin/env python3
"""Counts the RTP that reaches a UDP port: ext_rtp_sink.py PORT PT COUNT SECONDS

Binds 127.0.0.1:PORT (so that whoever is told to send there finds a socket), then reads
datagrams until COUNT RTP packets of payload type PT have arrived or SECONDS have passed.
Exits 0 when COUNT came, all of them with sequence numbers running on one by one (nothing
lost, repeated or reordered: the stream is continuous), 1 otherwise. Prints what it got
either way: packets per payload type, and for PT the payload sizes seen (160 bytes = 20 ms
of G.711, 240 = 30 ms) and the sequence breaks. Used by extensions.sh as a real media peer
at an address that only an SDP answer names.
"""
import collections
import socket
import sys
import time


def main():
    port, pt, want, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    deadline = time.monotonic() + seconds
    by_pt = collections.Counter()
    sizes = collections.Counter()
    last_seq = None
    breaks = 0
    while by_pt[pt] < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            break
        if len(data) < 12 or data[0] >> 6 != 2:
            by_pt["not RTP"] += 1
            continue
        got = data[1] & 0x7F
        by_pt[got] += 1
        if got == pt:
            sizes[len(data) - 12] += 1
            seq = int.from_bytes(data[2:4], "big")
            if last_seq is not None and seq != (last_seq + 1) & 0xFFFF:
                breaks += 1
            last_seq = seq
    print(f"port {port}: packets by payload type {dict(by_pt)}; PT {pt} payload sizes "
          f"{dict(sizes)}, {breaks} sequence breaks")
    sys.exit(0 if by_pt[pt] >= want and breaks == 0 else 1)


if __name__ == "__main__":
    main()
