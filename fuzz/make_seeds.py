#!/usr/bin/env python3
"""Writes fuzz/corpus-seed/<target>/ from the project's own test messages.

Text seeds (SIP messages, SDP bodies, Digest header values, fork protocol JSON) are
extracted from the string literals of the unit tests and from the SIPp scenarios, so they
follow the tests when those change. Binary seeds (RTP, RTCP, WAV, telephone-event) are built
here the way the media tests build theirs (each function names the test it mirrors).
Targets that take a sequence of operations get them in the encoding documented in
fuzz/src/lib.rs.

Run from anywhere: python3 fuzz/make_seeds.py   (deletes and rewrites corpus-seed/).
"""

import hashlib
import re
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
OUT = FUZZ / "corpus-seed"
MAX_SEED = 4096  # libFuzzer's default -max_len; keeps the committed seeds small


# ---------------------------------------------------------------------------------------
# Rust string literals


def rust_literals(path):
    """Every string literal in a Rust file, unescaped. Format placeholders are left as is."""
    text = path.read_text()
    out = []
    # Raw strings r"..." / r#"..."# first, then normal strings.
    for m in re.finditer(r'r(#*)"(.*?)"\1', text, re.S):
        out.append(m.group(2))
    text = re.sub(r'r(#*)".*?"\1', '""', text, flags=re.S)
    text = re.sub(r"'(\\.|[^\\'])'", "' '", text)  # char literals like '"'
    for m in re.finditer(r'(b?)"((?:[^"\\]|\\.)*)"', text, re.S):
        out.append(unescape(m.group(2)))
    return out


def unescape(s):
    s = re.sub(r"\\\n\s*", "", s)  # line continuation
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n == "x":
            out.append(chr(int(s[i + 2 : i + 4], 16)))
            i += 4
        elif n == "u":
            j = s.index("}", i)
            out.append(chr(int(s[i + 3 : j], 16)))
            i = j + 1
        else:
            out.append({"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(n, n))
            i += 2
    return "".join(out)


def fill_placeholders(s):
    """Format strings from the tests: give `{name}` placeholders plausible values."""
    values = {
        "local": "127.0.0.1:5070",
        "branch": "1",
        "port": "6000",
        "pts": "0 8 101",
        "extra": "",
        "method": "OPTIONS",
        "cseq": "1",
    }
    return re.sub(r"\{(\w*)\}", lambda m: values.get(m.group(1), "x"), s).replace("{{", "{").replace("}}", "}")


SIP_START = re.compile(r"^(?:[A-Z]+ (?:sip|sips|tel):\S+ SIP/2\.0|SIP/2\.0 \d{3} )")


def sip_messages():
    files = [
        ROOT / "crates/sip/src/message.rs",
        ROOT / "crates/sip/src/registrar.rs",
        ROOT / "crates/sip/src/dialog.rs",
        ROOT / "crates/server/tests/common/mod.rs",
        ROOT / "crates/server/tests/sip.rs",
    ]
    msgs = []
    for f in files:
        if not f.exists():
            continue
        for lit in rust_literals(f):
            lit = fill_placeholders(lit)
            if SIP_START.match(lit) and "\n" in lit:
                msgs.append(lit.encode())
    msgs.extend(sipp_messages())
    return msgs


def sipp_messages():
    """The messages of the SIPp scenarios, with SIPp's [keywords] filled in."""
    values = {
        "remote_ip": "127.0.0.1",
        "remote_port": "5060",
        "local_ip": "127.0.0.1",
        "local_port": "5070",
        "transport": "UDP",
        "branch": "z9hG4bK-1-1-0",
        "service": "1001",
        "pid": "4242",
        "call_number": "1",
        "call_id": "1-4242@127.0.0.1",
        "media_ip": "127.0.0.1",
        "media_port": "6000",
        "media_ip_type": "4",
        "authentication": 'Authorization: Digest username="1001", realm="siphon", '
        'nonce="0123456789abcdef0123456789abcdef", uri="sip:127.0.0.1:5060", '
        'response="00000000000000000000000000000000", algorithm=MD5',
        "last_Via:": "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-1-0",
        "last_From:": "From: <sip:1001@127.0.0.1>;tag=4242SIPpTag001",
        "last_To:": "To: <sip:1001@127.0.0.1>;tag=abc",
        "last_Call-ID:": "Call-ID: 1-4242@127.0.0.1",
        "last_CSeq:": "CSeq: 1 INVITE",
        "peer_tag_param": ";tag=abc",
        "cseq": "1",
    }
    out = []
    for xml in sorted((ROOT / "sip-tests/scenarios").glob("*.xml")):
        for block in re.findall(r"<!\[CDATA\[(.*?)\]\]>", xml.read_text(), re.S):
            lines = [l.strip() for l in block.strip("\n").splitlines()]
            while lines and not lines[0]:
                lines.pop(0)
            if not lines:
                continue
            # Headers end at the first blank line; the rest is the body.
            try:
                blank = lines.index("")
                head, body = lines[:blank], lines[blank + 1 :]
            except ValueError:
                head, body = lines, []
            body_text = "".join(l + "\r\n" for l in body if l)
            text = "\r\n".join(head) + "\r\n\r\n" + body_text
            text = re.sub(r"\[([\w:-]+)\]", lambda m: values.get(m.group(1), m.group(0)), text)
            text = text.replace("[len]", str(len(body_text.encode())))
            if SIP_START.match(text):
                out.append(text.encode())
    return out


# ---------------------------------------------------------------------------------------
# Encoding of the operation-based targets (fuzz/src/lib.rs)


def u8(v):
    return struct.pack(">B", v & 0xFF)


def u16(v):
    return struct.pack(">H", v & 0xFFFF)


def u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def blob(b):
    if isinstance(b, str):
        b = b.encode()
    assert len(b) <= 0xFFFF
    return u16(len(b)) + b


# ---------------------------------------------------------------------------------------
# Targets


def seeds_sip_message():
    return sip_messages()


def seeds_sdp():
    bodies = []
    for f in [ROOT / "crates/sip/src/sdp/tests.rs", ROOT / "crates/server/tests/common/mod.rs"]:
        for lit in rust_literals(f):
            lit = fill_placeholders(lit)
            if lit.startswith("v=0"):
                bodies.append(lit.encode())
    for m in sip_messages():
        head, _, body = m.partition(b"\r\n\r\n")
        if body.startswith(b"v=0"):
            bodies.append(body)
    return bodies


def seeds_sip_transactions():
    sips = sip_messages()
    invite = next(m for m in sips if m.startswith(b"INVITE "))
    options = next(m for m in sips if m.startswith(b"OPTIONS "))
    register = next(m for m in sips if m.startswith(b"REGISTER "))

    def raw(m, tcp=False):
        return u8(0) + u8(tcp) + blob(m)

    def tmpl(op, tcp, method, branch, cseq, to_tag, status):
        return u8(op) + u8(tcp) + u8(method) + u8(branch) + u8(cseq) + u8(to_tag) + u16(status)

    def advance(ms):
        return u8(2) + u16(ms)

    def respond(status):  # op 4: status is mapped to 100 + status % 600
        return u8(4) + u16(status - 100)

    def reply_client(which, status, tag):
        return u8(7) + u8(which) + u16(status - 100) + u8(tag)

    INVITE, ACK, BYE, CANCEL, OPTIONS = 0, 1, 2, 3, 4
    return [
        # UAS INVITE: 180, 200, the ACK for the 2xx, time runs out.
        raw(invite) + respond(180) + respond(200) + advance(500) + advance(1000)
        + tmpl(1, 0, ACK, 5, 0, 1, 0) + advance(40000),
        # UAS INVITE rejected, retransmitted, ACKed by branch.
        tmpl(1, 0, INVITE, 1, 0, 0, 0) + respond(486) + tmpl(1, 0, INVITE, 1, 0, 0, 0)
        + advance(500) + tmpl(1, 0, ACK, 1, 0, 1, 0) + advance(6000),
        # CANCEL of a ringing INVITE.
        tmpl(1, 0, INVITE, 2, 0, 0, 0) + respond(180) + tmpl(1, 0, CANCEL, 2, 0, 0, 0)
        + u8(9) + respond(200) + u8(5) + u8(0) + u16(487 - 100) + advance(32000),
        # Non-INVITE UAS over UDP and TCP.
        raw(options) + respond(200) + raw(options) + advance(5000),
        raw(register, True) + respond(401) + advance(100),
        # UAC INVITE: 100, 180, 200 (retransmitted), ACK; and a timeout.
        tmpl(6, 0, INVITE, 3, 0, 0, 0) + advance(500) + reply_client(0, 100, 0)
        + reply_client(0, 180, 1) + reply_client(0, 200, 1) + reply_client(0, 200, 1)
        + u8(8) + advance(33000),
        tmpl(6, 0, INVITE, 4, 0, 0, 0) + advance(40000),
        # UAC non-INVITE: retransmissions (Timer E), a final response, Timer K.
        tmpl(6, 0, OPTIONS, 6, 0, 0, 0) + advance(2000) + reply_client(0, 200, 1) + advance(6000),
        tmpl(6, 1, BYE, 7, 1, 1, 0) + advance(33000),
        # Responses from the network for our client transactions.
        tmpl(6, 0, INVITE, 0, 0, 0, 0) + tmpl(1, 0, INVITE, 0, 0, 2, 183)
        + tmpl(1, 0, INVITE, 0, 0, 2, 100) + tmpl(1, 0, INVITE, 0, 0, 2, 303) + advance(1000),
    ]


def seeds_digest():
    lits = [l for l in rust_literals(ROOT / "crates/sip/src/auth.rs") if l.startswith("Digest ")]
    lits = [fill_placeholders(l) for l in lits]
    header = blob("siphon.example") + u8(2) + u8(8)
    seeds = []
    for l in lits:
        seeds.append(header + u8(0) + u8(1) + blob("REGISTER") + blob(l))
        seeds.append(header + u8(1) + blob(l))
    # A client answering our challenge, with the nonce substituted, then replayed, then
    # after the nonce went stale.
    seeds.append(
        header
        + u8(2) + u8(0) + u8(0) + u32(1) + blob("alice") + blob("secret") + blob("REGISTER")
        + blob("sip:siphon.example") + blob("0a4f113b")
        + u8(0) + u8(1) + blob("REGISTER")
        + blob('Digest username="alice", realm="siphon.example", nonce="$NONCE", '
               'uri="sip:siphon.example", response="6629fae49393a05397450978507c4ef1", '
               'qop=auth, nc=00000002, cnonce="0a4f113b", opaque="$OPAQUE", algorithm=MD5')
        + u8(3) + u16(400) + u8(4)
    )
    return seeds


def rtp(first, second, payload=b"", seq=0x1234, ts=0xDEADBEEF, ssrc=0x01020304):
    """crates/media/tests/rtp.rs `header()` + `with()`."""
    return bytes([first, second]) + u16(seq) + u32(ts) + u32(ssrc) + payload


def rtp_packets():
    return [
        rtp(0x80, 0x80, bytes([7] * 160)),  # parses_a_plain_packet
        rtp(0x80, 0x08, bytes([0x55] * 160)),  # PCMA
        rtp(0x82, 0, bytes([0, 0, 0, 1, 0, 0, 0, 2, 9, 9])),  # CSRCs
        rtp(0xA0, 0, bytes([1, 2, 3, 0, 0, 3])),  # padding
        rtp(0x90, 0, bytes([0xBE, 0xDE, 0, 2, 0x10, 0xAA, 0x21, 1, 2, 0, 0, 0, 7, 7])),  # one-byte ext
        rtp(0x90, 0, bytes([0x10, 0x00, 0, 2, 1, 3, 1, 2, 3, 0, 0, 0, 7])),  # two-byte ext
        rtp(0x90, 0, bytes([0x12, 0x34, 0, 1, 9, 9, 9, 9, 7])),  # other profile
        rtp(0x80, 0xE5, bytes([5, 0x0A, 0, 160])),  # telephone-event, marker
    ]


def rtcp_packets():
    # rtcp.rs ignores_sdes_app_and_unknown_types
    phone = bytes([
        0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
        0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6,
        0x81, 202, 0, 2, 0, 0, 0, 1, 1, 1, ord("x"), 0,
        0x80, 204, 0, 2, 0, 0, 0, 1, ord("n"), ord("a"), ord("m"), ord("e"),
        0xA0, 250, 0, 1, 0, 0, 0, 4,
    ])
    block = lambda ssrc: u32(ssrc) + u32(0x10_00_00_05) + u32(1000) + u32(20) + u32(0x12345678) + u32(65536)
    rr = bytes([0x82, 201]) + u16(13) + u32(7) + block(0x01020304) + block(2)
    sr = bytes([0x81, 200]) + u16(12) + u32(9) + u32(0xE0000000) + u32(0x80000000) + u32(160000) + u32(1000) + u32(160000) + block(0x01020304)
    sdes = bytes([0x81, 202, 0, 5]) + u32(9) + bytes([1, 14]) + b"siphon@example" + bytes([0, 0, 0, 0])
    bye = bytes([0x81, 203, 0, 1]) + u32(9)
    return [phone, rr, sr + sdes, sr + sdes + bye]


def seeds_rtp_rtcp():
    return rtp_packets() + rtcp_packets()


def seeds_jitter_session():
    """A leg receiving a talk spurt with reordering, loss, DTMF and RTCP, while sending."""
    def built(marker, kind, seq_delta, ts_delta, payload=b"", new_ssrc=0):
        return u8(1) + u8(marker) + u8(kind) + u8(seq_delta) + u16(ts_delta) + u8(new_ssrc) + blob(payload)

    def advance(ms):  # the target takes at most 999 ms per step
        out = b""
        while ms > 0:
            out += u8(3) + u16(min(ms, 999))
            ms -= min(ms, 999)
        return out

    head = u8(2) + u16(0xFFF0) + u32(0xFFFFFF00) + u32(0xCAFE)
    spurt = built(1, 0, 1, 160)
    for i in range(30):
        spurt += built(0, 0, 1, 160) + advance(20)
    reorder = built(1, 0, 1, 160) + built(0, 0, 2, 320) + built(0, 0, 0xFF, 0xFF60) + advance(60)
    dtmf = b"".join(built(i == 0, 1, 1, 0, bytes([5, 0x0A if i < 3 else 0x8A]) + u16(160 * (i + 1))) + advance(20) for i in range(6))
    raw = b"".join(u8(0) + blob(p) for p in rtp_packets())
    rtcp = b"".join(u8(2) + blob(p) for p in rtcp_packets())
    return [
        head + spurt + advance(6000),
        head + reorder + u8(5) + u8(1) + advance(200) + u8(4) + u32(5000) + advance(100),
        head + dtmf + u8(6) + u8(ord("5")) + u16(100) + advance(300) + u8(7),
        u8(3) + u16(0x1234) + u32(0xDEADBEEF) + u32(0x01020304) + raw + advance(100) + rtcp + advance(11000),
        head + spurt + built(1, 0, 1, 160, new_ssrc=1) + u8(5) + u8(2) + advance(1000),
    ]


def seeds_dtmf():
    # crates/media/tests/dtmf.rs: a press of '5' as a phone sends it (start, updates, 3 ends)
    sender = u8(5) + u16(100) + u8(10) + u32(48000) + u32(0b1010)
    press = b""
    for i in range(5):
        press += u8(i == 0) + u32(48000) + blob(bytes([5, 0x0A]) + u16(160 * (i + 1)))
    for _ in range(3):
        press += u8(0) + u32(48000) + blob(bytes([5, 0x8A, 0x03, 0x20]))
    second = u8(1) + u32(49600) + blob(bytes([11, 0x0A, 0, 160]))
    long_press = u8(0) + u32(48000 + 65535) + blob(bytes([5, 0x0A, 0, 160]))
    return [sender + press, sender + press + second, sender + press + long_press, u8(16) + u16(20) + u8(63) + u32(0) + u32(0)]


def wav(tag, channels, rate, bits, data, extensible=False):
    """crates/media/tests/wav.rs `fmt()` / `chunk()` / `riff()`."""
    block_align = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block_align, block_align, bits)
        fmt += struct.pack("<HHI", 22, bits, 4) + struct.pack("<H", tag) + bytes(14)

    def chunk(cid, body):
        return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")

    body = chunk(b"LIST", b"INFOjunk") + chunk(b"fmt ", fmt) + chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def seeds_wav():
    pcm = b"".join(struct.pack("<h", (i * 997) % 20000 - 10000) for i in range(320))
    return [
        wav(1, 1, 8000, 16, pcm),
        wav(1, 1, 16000, 16, pcm),
        wav(6, 1, 8000, 8, bytes(range(200))),
        wav(7, 1, 8000, 8, bytes(range(200))),
        wav(1, 1, 16000, 16, pcm[:101], extensible=True),
        wav(1, 2, 8000, 16, pcm),
    ]


def seeds_fork_inbound():
    files = {
        0: ROOT / "crates/fork/src/protocol/native.rs",
        1: ROOT / "crates/fork/src/protocol/twilio.rs",
        2: ROOT / "crates/fork/src/protocol/audio_fork.rs",
    }
    seeds = []
    pcm = bytes(range(160)) * 2
    for mode, f in files.items():
        msgs = [fill_placeholders(l) for l in rust_literals(f) if l.startswith("{") and '"' in l]
        for config in (mode, mode | 0x08 | 0x80, mode | 0x08 | 0x10 | 0x20):
            stream = b"".join(u8(0) + blob(m) for m in msgs[:40])
            seeds.append(u8(config) + stream + u8(1) + blob(pcm) + u8(1) + blob(pcm[:33]))
    # audio_fork playAudio with a WAV file (the test builds one the same way)
    import base64
    w = base64.b64encode(wav(1, 1, 8000, 16, bytes(640))).decode()
    msg = '{"type":"playAudio","data":{"audioContentType":"wav","audioContent":"%s"}}' % w
    seeds.append(u8(2) + u8(0) + blob(msg) + u8(0) + blob('{"type":"mark","data":{"name":"m1"}}')
                 + u8(0) + blob('{"type":"killAudio"}'))
    return seeds


TARGETS = {
    "sip_message": seeds_sip_message,
    "sip_transactions": seeds_sip_transactions,
    "sdp": seeds_sdp,
    "digest": seeds_digest,
    "rtp_rtcp": seeds_rtp_rtcp,
    "jitter_session": seeds_jitter_session,
    "dtmf": seeds_dtmf,
    "fork_inbound": seeds_fork_inbound,
    "wav": seeds_wav,
}


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    total = 0
    for target, make in TARGETS.items():
        d = OUT / target
        d.mkdir(parents=True)
        seen = set()
        for seed in make():
            if len(seed) > MAX_SEED:
                continue
            name = hashlib.sha1(seed).hexdigest()[:16]
            if name in seen:
                continue
            seen.add(name)
            (d / name).write_bytes(seed)
        total += len(seen)
        print(f"{target}: {len(seen)} seeds")
    print(f"{total} seeds in {OUT}")


if __name__ == "__main__":
    main()
