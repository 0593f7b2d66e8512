#!/usr/bin/env python3
"""Judge the Pipecat interop call (run.sh's `pipecat` section) from what the Pipecat service
wrote and what tshark captured:

    pipecat_check.py --result RESULT.json --call N --capture CAP --mport PORT
                     --config pipecat.toml --number 702 --siphon-log LOG [--dtmf DIGITS]

With --capture (the speech call, SIPp's echo_rtp.xml), checks that the service, going
through Pipecat's parse_telephony_websocket and TwilioFrameSerializer:
- detected the transport as "twilio", with the stream_id and call_id of the fork Siphon
  logged ("fork connected", whose span names both), and the route's custom_parameters
  from the configuration (read with tomllib);
- got one InputAudioRawFrame per RTP packet SIPp sent (from the capture), 320 bytes each
  (20 ms of 16-bit PCM at 8 kHz), all at 8000 Hz, and echoed every one;
- got exactly the caller's audio, in order: SIPp's A-law decoded, carried as mu-law (Siphon's
  twilio mode), decoded by Pipecat, compared sample for sample;
- was heard by the caller: every frame of the service's echo (that PCM, mu-law again on its
  way back, played by Siphon as A-law) comes back to SIPp in order, and nothing else does
  (a forked call hears only its services: a slot with no service audio is silence, not
  the caller's own voice; since issue 20 it is a packet of A-law silence, which is not
  counted as something else reaching the caller).
- saw connected, start, media per frame, stop, and a 1000 close, with no error.
Without --capture (the DTMF call), only the connection checks and, with --dtmf, the
digits Pipecat turned into InputDTMFFrames.

Runs in the Pipecat venv: it uses audioop (the standard library's before Python 3.13,
audioop-lts after, which pipecat-ai installs there), the G.711 code Pipecat itself uses.
Prints the figures; exits 1 on any failure.
"""
import argparse
import json
import re
import subprocess
import sys
import tomllib
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)  # audioop, deprecated in 3.11 and 3.12
try:
    import audioop
except ImportError:  # Python >= 3.13 without audioop-lts: not the Pipecat venv
    sys.exit("FAIL: no audioop; run this with the Pipecat venv's python")

FRAME_BYTES = 160  # 20 ms of 8 kHz G.711
PCM_FRAME_BYTES = 2 * FRAME_BYTES  # the same 20 ms as 16-bit PCM
ALAW_SILENCE = bytes([0xD5]) * FRAME_BYTES  # what a slot without service audio carries


def rtp_payloads(capture, mport):
    """(sent, back): RTP payloads SIPp sent from mport and those that came back to it."""
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={mport},rtp", "-Y", "rtp",
           "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "rtp.p_type",
           "-e", "rtp.payload"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    sent, back = [], []
    for line in run.stdout.splitlines():
        sport, dport, pt, payload = (line.split("\t") + ["", "", "", ""])[:4]
        if pt != "8":  # PCMA only (telephone-event would be 101)
            continue
        data = bytes.fromhex(payload.replace(":", ""))
        if int(sport) == mport:
            sent.append(data)
        elif int(dport) == mport:
            back.append(data)
    return sent, back


def route_parameters(config, number):
    with open(config, "rb") as f:
        conf = tomllib.load(f)
    for route in conf.get("dialplan", []):
        if route.get("number") == number:
            forks = route.get("forks", [])
            if forks:
                return forks[0].get("url"), forks[0].get("custom_parameters", {})
    sys.exit(f"FAIL: {config} has no route {number} with a fork")


def logged_forks(log):
    """(stream, call) of every fork Siphon logged as connected (ANSI colours stripped)."""
    with open(log, errors="replace") as f:
        text = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
    return set(re.findall(r'fork\{stream=(\S+) call=(\S+) mode="twilio"\}[^\n]*fork connected',
                          text))


def in_order(back, want):
    """How many of `want` appear in `back` in order (longest common subsequence), and the
    indices of the packets of `back` outside it. Ties (runs of identical silence frames) are
    resolved towards matching the latest packets, so an extra packet within a run of
    identical frames is reported at the run's start."""
    n, m = len(back), len(want)
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev = dp[i], dp[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if back[i - 1] == want[j - 1] else max(prev[j], row[j - 1])
    other, i, j = [], n, m
    while i > 0:
        if j > 0 and back[i - 1] == want[j - 1] and dp[i][j] == dp[i - 1][j - 1] + 1:
            i, j = i - 1, j - 1
        elif j > 0 and dp[i][j - 1] > dp[i - 1][j]:
            j -= 1
        else:
            other.append(i - 1)
            i -= 1
    return dp[n][m], sorted(other)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--call", type=int, required=True)
    p.add_argument("--capture")
    p.add_argument("--mport", type=int)
    p.add_argument("--config", required=True)
    p.add_argument("--number", required=True)
    p.add_argument("--siphon-log", required=True)
    p.add_argument("--dtmf")
    a = p.parse_args()
    failures = []

    with open(a.result) as f:
        calls = json.load(f)["calls"]
    if len(calls) <= a.call:
        print(f"FAIL: the service saw {len(calls)} connection(s); call {a.call} never came")
        return 1
    r = calls[a.call]
    print(f"service: transport {r['transport_type']!r}, stream_id {r['stream_id']}, "
          f"call_id {r['call_id']}, customParameters {json.dumps(r['custom_parameters'])}")
    print(f"  events {json.dumps(r['events'])}, close {r['close_code']}, error {r['error']}, "
          f"{r['duration_s']} s")
    if r["error"]:
        failures.append(f"the service failed: {r['error']}")
    if r["transport_type"] != "twilio":
        failures.append(f"parse_telephony_websocket detected {r['transport_type']!r}, not 'twilio'")
    forks = logged_forks(a.siphon_log)
    if (r["stream_id"], r["call_id"]) not in forks:
        failures.append(f"stream_id/call_id ({r['stream_id']}, {r['call_id']}) are not a fork "
                        f"Siphon logged: {sorted(forks)}")
    url, params = route_parameters(a.config, a.number)
    if r["custom_parameters"] != params:
        failures.append(f"customParameters {r['custom_parameters']}, configured {params}")
    ev = r["events"]
    if ev.get("connected") != 1 or ev.get("start") != 1 or ev.get("stop") != 1:
        failures.append("expected one connected, one start and one stop")
    if not r["stop_received"] or r["close_code"] != 1000:
        failures.append(f"stop seen {r['stop_received']}, close {r['close_code']} (want 1000)")
    if r["binary_messages"]:
        failures.append(f"{r['binary_messages']} binary messages (Twilio sends text only)")

    if a.dtmf is not None:
        print(f"  DTMF (InputDTMFFrame): {r['dtmf']!r}")
        if r["dtmf"] != a.dtmf:
            failures.append(f"DTMF {r['dtmf']!r}, expected {a.dtmf!r}")

    if a.capture:
        sent, back = rtp_payloads(a.capture, a.mport)
        frames = len(sent)
        want_bytes = frames * PCM_FRAME_BYTES
        print(f"SIPp sent {frames} PCMA packets; Pipecat gave {r['frames']} InputAudioRawFrames, "
              f"{r['audio_bytes']} bytes (want {frames} x {PCM_FRAME_BYTES} = {want_bytes}), "
              f"rates {r['sample_rates']}; echoed {r['frames_echoed']} "
              f"({r['echo_bytes']} bytes of JSON)")
        if frames == 0:
            failures.append("SIPp sent nothing (pcap play needs root or CAP_NET_RAW)")
        if r["frames"] != frames or r["audio_bytes"] != want_bytes:
            failures.append(f"{r['frames']} frames / {r['audio_bytes']} bytes, "
                            f"want {frames} / {want_bytes}")
        if ev.get("media") != frames:
            failures.append(f"{ev.get('media')} media messages for {frames} packets")
        if r["sample_rates"] != [8000]:
            failures.append(f"sample rates {r['sample_rates']}, want [8000]")
        if r["frames_echoed"] != r["frames"]:
            failures.append(f"echoed {r['frames_echoed']} of {r['frames']} frames")

        # What Pipecat should have delivered: the caller's A-law, as mu-law, as PCM.
        want_pcm = [audioop.ulaw2lin(audioop.lin2ulaw(audioop.alaw2lin(s, 2), 2), 2)
                    for s in sent]
        with open(r["pcm_file"], "rb") as f:
            got = f.read()
        got_pcm = [got[i:i + PCM_FRAME_BYTES] for i in range(0, len(got), PCM_FRAME_BYTES)]
        same = sum(1 for g, w in zip(got_pcm, want_pcm) if g == w)
        print(f"  PCM: {same} of {frames} frames sample-exact against SIPp's audio, in order")
        if same != frames or len(got_pcm) != frames:
            first = next((i for i, (g, w) in enumerate(zip(got_pcm, want_pcm)) if g != w), None)
            failures.append(f"PCM differs from the caller's audio ({same}/{frames} frames "
                            f"equal, first difference at frame {first})")

        # What the caller should hear: the service's echo, A-law again.
        want_back = [audioop.lin2alaw(audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2), 2)
                     for pcm in got_pcm]
        distinct = sum(1 for w, s in zip(want_back, sent) if w != s)
        matched, other = in_order(back, want_back)
        other = [i for i in other if back[i] != ALAW_SILENCE]
        print(f"  returned: {len(back)} packets; {matched} of {len(want_back)} are the service's "
              f"echo, in order ({distinct} of them differ from the caller's own packet after "
              f"the mu-law round trip, so a self-echo would not match); {len(other)} other "
              f"packet(s){' at ' + str(other[:10]) if other else ''}")
        if matched != len(want_back):
            failures.append(f"only {matched} of {len(want_back)} service frames reached the caller")
        if other:
            failures.append(f"{len(other)} packet(s) the service did not send reached the caller")
        if distinct < frames // 2:
            failures.append(f"only {distinct} frames tell the service's echo from a self-echo")

    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print("OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
