#!/usr/bin/env python3
"""After a blind REFER (sip-tests/refer.sh), the phone that stayed hears the transfer
target: refer_rtp_check.py CAPTURE TARGET_MPORT STAYER_MPORT [--wav FILE --channel N]

Both SIPp phones play A-law (PT 8, the same speech) from their media ports. Every 20 ms
payload the target sent (udp.srcport TARGET_MPORT) is looked for, in order, among the
payloads Siphon sent to the phone that stayed (udp.dstport STAYER_MPORT) after the
target's first packet: at least 95% of the target's frames must arrive, byte for byte (both
legs negotiated PCMA, so Siphon relays them unchanged), in order. With --wav, the call's
fork (native L16 stereo, tracks = "both") must also hold the target's speech in channel N
(the referrer's leg's channel, which the target took over): at least 95% of the target's
loud 20 ms frames, decoded, sample for sample, in order. Exits 1 otherwise.
"""
import subprocess
import sys
import warnings
import wave

warnings.filterwarnings("ignore", category=DeprecationWarning)
try:
    import audioop
except ImportError:
    sys.exit("FAIL: this Python has no audioop (use Python <= 3.12 or install audioop-lts)")

FRAME = 160


def packets(capture, port, direction):
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={port},rtp", "-Y",
           f"rtp && udp.{direction}port == {port} && rtp.p_type == 8",
           "-T", "fields", "-e", "frame.time_epoch", "-e", "rtp.payload"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    out = []
    for line in run.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1]:
            out.append((float(parts[0]), bytes.fromhex(parts[1].replace(":", ""))))
    return out


def fork_check(sent, path, channel):
    """Whether the fork's WAV channel holds the target's loud frames in order."""
    with wave.open(path, "rb") as w:
        channels, width = w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    if channels != 2 or width != 2:
        print(f"FAIL: the fork's WAV is {channels} channel(s) of {width * 8} bit, not stereo L16")
        return False
    pcm = audioop.tomono(data, 2, 1, 0) if channel == 0 else audioop.tomono(data, 2, 0, 1)
    step = FRAME * 2
    heard = [pcm[i:i + step] for i in range(0, len(pcm) - step + 1, step)]
    want = [audioop.alaw2lin(p, 2) for _, p in sent if len(p) == FRAME]
    want = [f for f in want if audioop.max(f, 2) > 500]
    if not want:
        print("FAIL: the target sent no speech")
        return False
    found, at = 0, 0
    for frame in want:
        try:
            at = heard.index(frame, at) + 1
            found += 1
        except ValueError:
            continue
    share = found / len(want)
    print(f"the fork's channel {channel}: {found} of the target's {len(want)} loud frames, "
          f"exact and in order ({share:.1%})")
    return share >= 0.95


def main():
    args = sys.argv[1:]
    wav, channel = None, 0
    if "--wav" in args:
        i = args.index("--wav")
        wav = args[i + 1]
        del args[i:i + 2]
    if "--channel" in args:
        i = args.index("--channel")
        channel = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    capture, target, stayer = args[0], int(args[1]), int(args[2])
    sent = packets(capture, target, "src")
    if not sent:
        sys.exit(f"FAIL: the target (media port {target}) sent no PCMA RTP")
    start = sent[0][0]
    heard = [p for t, p in packets(capture, stayer, "dst") if t >= start]
    # In order: each frame of the target's is looked for after the last one found.
    found, at = 0, 0
    for _, payload in sent:
        try:
            at = heard.index(payload, at) + 1
            found += 1
        except ValueError:
            continue
    share = found / len(sent)
    print(f"the target sent {len(sent)} frames; the phone that stayed received "
          f"{len(heard)} packets after the target's first, {found} of the target's frames "
          f"in order ({share:.1%})")
    if share < 0.95:
        sys.exit("FAIL: the phone that stayed does not hear the transfer target")
    if wav is not None and not fork_check(sent, wav, channel):
        sys.exit("FAIL: the fork does not hear the transfer target on the referrer's channel")


if __name__ == "__main__":
    main()
