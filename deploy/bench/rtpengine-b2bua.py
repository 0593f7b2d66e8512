#!/usr/bin/env python3
"""The SIP side of the benchmark's rtpengine comparison (scripts/bench.sh, MODES=rtpengine).

rtpengine relays media but speaks no SIP: something must turn the generator's calls into
`offer` / `answer` / `delete` commands on its `ng` control protocol (bencode over UDP), the
way Kamailio's or OpenSIPS's rtpengine module does. This is that something, as small as it
can be, in Siphon's place on the SIP port, so the same `siphon-load run --answer-as` drives
both (two generator legs per call, RTP relayed both ways):

  REGISTER (any)             → 200, the Contact's source address is the callee
  INVITE (caller, SDP)       → ng offer → INVITE with rtpengine's SDP to the callee
  200 (callee, SDP)          → ng answer → ACK to the callee, 200 with rtpengine's SDP to
                               the caller
  BYE (caller)               → 200, BYE to the callee, ng delete
  OPTIONS, anything else     → 200 (requests) / ignored (responses, ACK)

Signalling only, no retransmission timers (loopback; the generator retransmits its own
requests and this answers them from its state). Its own CPU is not what the benchmark
measures: rtpengine's process is. Runs on the generator's core.

  rtpengine-b2bua.py --listen 127.0.0.1:5090 --ng 127.0.0.1:2223
  rtpengine-b2bua.py --self-test      # bencode and SIP helpers
"""

import argparse
import os
import random
import socket
import sys


# ---- bencode (the ng protocol's encoding) ----

def bencode(v):
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, (bytes, bytearray)):
        return b"%d:%s" % (len(v), bytes(v))
    if isinstance(v, (list, tuple)):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError("cannot bencode %r" % type(v))


def bdecode(data):
    """Decodes one value; strings come back as bytes. Raises ValueError on bad input."""
    v, i = _bdecode(data, 0)
    if i != len(data):
        raise ValueError("trailing data")
    return v


def _bdecode(d, i):
    if i >= len(d):
        raise ValueError("truncated")
    c = d[i:i + 1]
    if c == b"i":
        j = d.index(b"e", i)
        return int(d[i + 1:j]), j + 1
    if c == b"l":
        i, out = i + 1, []
        while d[i:i + 1] != b"e":
            v, i = _bdecode(d, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while d[i:i + 1] != b"e":
            k, i = _bdecode(d, i)
            v, i = _bdecode(d, i)
            out[k.decode() if isinstance(k, bytes) else k] = v
        return out, i + 1
    if c.isdigit():
        j = d.index(b":", i)
        n = int(d[i:j])
        if j + 1 + n > len(d):
            raise ValueError("truncated string")
        return d[j + 1:j + 1 + n], j + 1 + n
    raise ValueError("bad bencode at %d" % i)


class Ng:
    """A blocking ng client: cookie, space, bencoded dictionary; the reply echoes the cookie."""

    def __init__(self, addr):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self.n = 0

    def call(self, cmd):
        self.n += 1
        cookie = b"%x_%d" % (os.getpid(), self.n)
        msg = cookie + b" " + bencode(cmd)
        for _ in range(3):
            self.sock.sendto(msg, self.addr)
            try:
                while True:
                    data, _ = self.sock.recvfrom(65536)
                    c, _, body = data.partition(b" ")
                    if c == cookie:
                        reply = bdecode(body)
                        if reply.get("result") != b"ok":
                            raise RuntimeError("ng %s: %r" % (cmd.get("command"), reply))
                        return reply
            except socket.timeout:
                continue
        raise RuntimeError("ng: no reply from %s:%d" % self.addr)


# ---- SIP (just what a B2BUA of these two legs needs) ----

def parse(data):
    """(start line, [(name, value)], body) or None."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return lines[0], headers, body


COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length"}


def header(headers, name, all_values=False):
    name = name.lower()
    vals = [v for n, v in headers if COMPACT.get(n.lower(), n.lower()) == name]
    return vals if all_values else (vals[0] if vals else None)


def tag(value):
    for p in (value or "").split(">")[-1].split(";"):
        k, _, v = p.partition("=")
        if k.strip().lower() == "tag":
            return v.strip()
    return None


def uri(value):
    """The URI inside <...> (or the bare value without parameters)."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1:value.index(">")]
    return value.split(";")[0].strip()


def response(code, reason, headers, to_tag=None, extra=(), body=""):
    out = ["SIP/2.0 %d %s" % (code, reason)]
    for n, v in headers:
        ln = COMPACT.get(n.lower(), n.lower())
        if ln == "to" and to_tag and tag(v) is None:
            v = "%s;tag=%s" % (v, to_tag)
        if ln in ("via", "from", "to", "call-id", "cseq"):
            out.append("%s: %s" % (n, v))
    out.extend(extra)
    if body:
        out.append("Content-Type: application/sdp")
    out.append("Content-Length: %d" % len(body.encode()))
    return ("\r\n".join(out) + "\r\n\r\n" + body).encode()


class Call:
    __slots__ = ("cid", "ftag", "invite", "answer", "b_cid", "b_tag", "b_to", "b_uri",
                 "b_invite", "b_ack", "peer")


class B2bua:
    def __init__(self, listen, ng, flags):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(listen)
        self.local = "%s:%d" % self.sock.getsockname()
        self.ng = Ng(ng)
        self.flags = flags
        self.callee = None  # (contact URI, address)
        self.calls = {}  # caller Call-ID -> Call
        self.by_b = {}  # callee Call-ID -> Call
        self.n = 0

    def send(self, data, addr):
        try:
            self.sock.sendto(data, addr)
        except OSError:
            pass  # lost like any datagram; the generator retransmits

    def serve(self):
        while True:
            data, addr = self.sock.recvfrom(65536)
            msg = parse(data)
            if msg is None:
                continue
            try:
                self.handle(msg, addr)
            except Exception as e:  # noqa: BLE001 - one bad datagram must not end the run
                print("rtpengine-b2bua: %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)

    def handle(self, msg, addr):
        start, headers, body = msg
        cid = header(headers, "call-id")
        cseq = header(headers, "cseq") or ""
        if start.startswith("SIP/2.0 "):
            code = int(start.split()[1])
            call = self.by_b.get(cid)
            if call is not None and cseq.endswith("INVITE") and code >= 200:
                self.callee_answered(call, code, headers, body)
            return
        method = start.split()[0]
        if method == "ACK":
            return
        if method == "REGISTER":
            contact = uri(header(headers, "contact"))
            self.callee = (contact, addr)
            self.send(response(200, "OK", headers, to_tag="reg",
                               extra=["Contact: <%s>;expires=3600" % contact]), addr)
        elif method == "INVITE" and tag(header(headers, "to")) is None:
            self.invite(cid, headers, body, addr)
        elif method == "BYE" and cid in self.calls:
            self.send(response(200, "OK", headers), addr)
            self.bye(self.calls.pop(cid))
        else:
            self.send(response(200, "OK", headers), addr)

    def invite(self, cid, headers, body, addr):
        call = self.calls.get(cid)
        if call is not None:
            if call.answer:  # a retransmission after our 200 was lost
                self.send(call.answer, call.peer)
            return
        if self.callee is None:
            self.send(response(480, "Temporarily Unavailable", headers, to_tag="x"), addr)
            return
        self.n += 1
        call = Call()
        call.cid, call.ftag, call.invite, call.peer = cid, tag(header(headers, "from")), headers, addr
        call.answer = None
        self.send(response(100, "Trying", headers), addr)
        reply = self.ng.call({"command": "offer", "call-id": call.cid, "from-tag": call.ftag,
                              "sdp": body, **self.flags})
        sdp = reply["sdp"].decode()
        call.b_cid = "b%d-%x@rtpengine-b2bua" % (self.n, random.getrandbits(32))
        call.b_tag = "bt%d" % self.n
        contact, callee_addr = self.callee
        call.b_uri = contact
        call.b_to = None
        # The caller's From (its user names the call for the generator), our tag.
        frm = header(headers, "from").split(";tag=")[0]
        call.b_invite = ("\r\n".join([
            "INVITE %s SIP/2.0" % contact,
            "Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-1;rport" % (self.local, call.b_tag),
            "Max-Forwards: 70",
            "From: %s;tag=%s" % (frm, call.b_tag),
            "To: <%s>" % contact,
            "Call-ID: %s" % call.b_cid,
            "CSeq: 1 INVITE",
            "Contact: <sip:b2bua@%s>" % self.local,
            "Content-Type: application/sdp",
            "Content-Length: %d" % len(sdp.encode()),
        ]) + "\r\n\r\n" + sdp).encode()
        call.b_ack = None
        self.calls[cid] = call
        self.by_b[call.b_cid] = call
        self.send(call.b_invite, callee_addr)

    def callee_answered(self, call, code, headers, body):
        callee_addr = self.callee[1]
        if call.b_ack is not None:  # a retransmitted 200: our ACK was lost
            self.send(call.b_ack, callee_addr)
            return
        b_tag = tag(header(headers, "to"))
        call.b_to = header(headers, "to")
        contact = header(headers, "contact")
        if contact:
            call.b_uri = uri(contact)
        call.b_ack = ("\r\n".join([
            "ACK %s SIP/2.0" % call.b_uri,
            "Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-ack;rport" % (self.local, call.b_tag),
            "Max-Forwards: 70",
            "From: %s" % header(headers, "from"),
            "To: %s" % call.b_to,
            "Call-ID: %s" % call.b_cid,
            "CSeq: 1 ACK",
            "Content-Length: 0",
        ]) + "\r\n\r\n").encode()
        self.send(call.b_ack, callee_addr)
        if code >= 300:
            self.send(response(code, "Callee Failed", call.invite, to_tag="x"), call.peer)
            self.calls.pop(call.cid, None)
            self.by_b.pop(call.b_cid, None)
            self.ng.call({"command": "delete", "call-id": call.cid, "from-tag": call.ftag})
            return
        reply = self.ng.call({"command": "answer", "call-id": call.cid, "from-tag": call.ftag,
                              "to-tag": b_tag, "sdp": body, **self.flags})
        sdp = reply["sdp"].decode()
        call.answer = response(200, "OK", call.invite, to_tag="a%s" % call.b_tag,
                               extra=["Contact: <sip:b2bua@%s>" % self.local], body=sdp)
        self.send(call.answer, call.peer)

    def bye(self, call):
        self.by_b.pop(call.b_cid, None)
        if call.b_to is not None:
            self.send(("\r\n".join([
                "BYE %s SIP/2.0" % call.b_uri,
                "Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-bye;rport" % (self.local, call.b_tag),
                "Max-Forwards: 70",
                "From: %s;tag=%s" % (header(call.invite, "from").split(";tag=")[0], call.b_tag),
                "To: %s" % call.b_to,
                "Call-ID: %s" % call.b_cid,
                "CSeq: 2 BYE",
                "Content-Length: 0",
            ]) + "\r\n\r\n").encode(), self.callee[1])
        self.ng.call({"command": "delete", "call-id": call.cid, "from-tag": call.ftag})


def self_test():
    cases = [0, -7, b"", b"spam", "x", [1, b"a", [2]], {"b": 1, "a": [b"x"], "sdp": b"v=0\r\n"}]
    for v in cases:
        enc = bencode(v)
        dec = bdecode(enc)
        want = v.encode() if isinstance(v, str) else v
        assert dec == want, (v, enc, dec)
    # Keys sorted, as bencode requires; the ng offer as rtpengine expects it.
    assert bencode({"sdp": "v=0", "command": "offer"}) == b"d7:command5:offer3:sdp3:v=0e"
    assert bdecode(b"d6:result2:ok3:sdp3:v=0e") == {"result": b"ok", "sdp": b"v=0"}
    for bad in [b"", b"i12", b"5:abc", b"l", b"d1:a", b"x", b"i1ei2e"]:
        try:
            bdecode(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % bad)
    m = parse(b"INVITE sip:1002@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
              b"f: <sip:b3@a>;tag=ft\r\nTo: <sip:1002@h>\r\ni: c1\r\nCSeq: 1 INVITE\r\n\r\nv=0")
    start, headers, body = m
    assert (header(headers, "call-id"), tag(header(headers, "from")), body) == ("c1", "ft", "v=0")
    assert tag(header(headers, "to")) is None
    ok = response(200, "OK", headers, to_tag="tt", body="v=0\r\n").decode()
    assert "To: <sip:1002@h>;tag=tt\r\n" in ok and ok.endswith("Content-Length: 5\r\n\r\nv=0\r\n"), ok
    assert uri("<sip:1002@127.0.0.1:5070>;expires=3600") == "sip:1002@127.0.0.1:5070"
    print("rtpengine-b2bua self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:5090")
    ap.add_argument("--ng", default="127.0.0.1:2223")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        self_test()
        return
    host, port = a.listen.rsplit(":", 1)
    ng_host, ng_port = a.ng.rsplit(":", 1)
    # What Kamailio's rtpengine_manage() typically asks for on a plain RTP/AVP call.
    flags = {"replace": ["origin", "session-connection"], "ICE": "remove"}
    B2bua((host, int(port)), (ng_host, int(ng_port)), flags).serve()


if __name__ == "__main__":
    main()
