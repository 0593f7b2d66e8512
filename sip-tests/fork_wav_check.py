#!/usr/bin/env python3
"""What the analytics service received, against what SIPp sent:

    fork_wav_check.py --capture CAP --mport PORT --wav FILE --mode native|twilio|audio_fork

SIPp plays A-law (PT 8) from PORT (captured by tshark); the fork delivers it to the
reference analytics service, which writes each stream's audio to a 16-bit PCM WAV file.
The WAV must hold exactly the caller's audio, every frame, in order, nothing missing or
duplicated, sample for sample:
- native (L16) and audio_fork (L16): the G.711 A-law decode of SIPp's payloads;
- twilio (audio/x-mulaw): the same samples carried as mu-law, i.e. A-law decode, mu-law
  encode, mu-law decode (G.711 is the only codec Twilio's format allows).
Uses audioop (the standard library's G.711 before Python 3.13). Prints the figures; exits 1
on any failure.
"""
import argparse
import subprocess
import sys
import warnings
import wave

warnings.filterwarnings("ignore", category=DeprecationWarning)  # audioop, deprecated in 3.11
try:
    import audioop
except ImportError:
    sys.exit("FAIL: this Python has no audioop (use Python <= 3.12 or install audioop-lts)")


def sent_payloads(capture, mport):
    """The A-law payloads SIPp sent from mport, in capture order."""
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={mport},rtp", "-Y",
           f"rtp && udp.srcport == {mport} && rtp.p_type == 8",
           "-T", "fields", "-e", "rtp.payload"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    return [bytes.fromhex(line.replace(":", "")) for line in run.stdout.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", required=True)
    ap.add_argument("--mport", type=int, required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--mode", choices=["native", "twilio", "audio_fork"], required=True)
    args = ap.parse_args()

    sent = sent_payloads(args.capture, args.mport)
    if not sent:
        print("FAIL: no A-law RTP from SIPp in the capture")
        return 1
    want = b"".join(audioop.alaw2lin(p, 2) for p in sent)
    if args.mode == "twilio":
        want = audioop.ulaw2lin(audioop.lin2ulaw(want, 2), 2)
    with wave.open(args.wav, "rb") as w:
        params = (w.getnchannels(), w.getsampwidth(), w.getframerate())
        got = w.readframes(w.getnframes())
    print(f"SIPp sent {len(sent)} packets ({len(want) // 2} samples); the service wrote "
          f"{len(got) // 2} samples, {params[0]} channel(s), {params[1] * 8} bit, {params[2]} Hz")
    failures = []
    if params != (1, 2, 8000):
        failures.append(f"WAV is {params}, expected mono 16-bit 8000 Hz")
    if got != want:
        frames = len(want) // 320
        first = next((i for i in range(frames) if got[i * 320:(i + 1) * 320]
                      != want[i * 320:(i + 1) * 320]), None)
        failures.append(f"the audio differs from SIPp's ({len(got)} bytes against "
                        f"{len(want)}; first differing 20 ms frame: {first})")
    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print(f"OK: {args.mode}: every frame, in order, sample-exact")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
