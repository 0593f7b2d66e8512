#!/usr/bin/env python3
"""Sends a phone's RTCP multiplexed on RTP: ext_rtcp_inject.py SIPHON_RTP_PORT PHONE_RTP_PORT [N]

Sends N (default 2) RTCP sender reports, one a second after a 2 s wait, from
127.0.0.1:PHONE_RTP_PORT to 127.0.0.1:SIPHON_RTP_PORT, as a phone that negotiated
a=rtcp-mux does (RFC 5761). The phone's SIPp holds its RTP port, so the datagrams are
written with a raw socket (root), like SIPp's own pcap play. Says what it sent in
inject.log. Used by ext_rtcp_mux.xml.
"""
import socket
import struct
import sys
import time


def main(to_port, from_port, count):
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    time.sleep(2)
    for i in range(count):
        now = time.time() + 2208988800
        sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x5EED0001,
                         int(now), int((now % 1) * 2**32), 8000 * i, 50 * i, 8000 * i)
        udp = struct.pack("!HHHH", from_port, to_port, 8 + len(sr), 0) + sr
        raw.sendto(udp, ("127.0.0.1", 0))
        time.sleep(1)
    with open("inject.log", "w", encoding="utf-8") as log:
        print(f"sent {count} SRs from port {from_port} to port {to_port}", file=log)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else 2)
