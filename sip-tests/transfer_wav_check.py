#!/usr/bin/env python3
"""What the analytics service heard of a forked call transferred to an agent
(sip-tests/transfer.sh), against what the SIPp caller and agent sent:

    transfer_wav_check.py --capture CAP --caller-mport P1 --agent-mport P2 --wav FILE

The fork has tracks = "both" (stereo, native L16): channel 0 is the caller, channel 1 what
the caller hears (the bot's playback, then, after the transfer, the agent). Both SIPp
phones play A-law (PT 8) from their media ports (captured by tshark).
- channel 0 must hold the caller's whole speech, sample for sample and contiguous: the
  transfer happens in the middle of it, so a lost, repeated or inserted frame at the
  switch fails this;
- channel 1 must hold the agent's speech in order: its first frame found, then at least
  95% of its 20 ms frames, exact and in order, with at most 3 slips (the agent's audio goes
  through Siphon's jitter buffer, so a late packet may be concealed on a loaded machine).
- the agent must be heard after the caller's speech started (the switch falls inside it).
With --second-party (click-to-call: the "caller" is the first party, the "agent" the second
one, both talking from their answers) there is no order between the two, and channel 0 is
held to channel 1's measure (95% in order, at most 3 slips) rather than exact contiguity:
the first party's leg is seconds old when the second joins, and on a loaded machine its
jitter buffer has concealed a frame in that first second (2 runs of 3 on 2026-12-04).
Prints the figures; exits 1 on any failure.
"""

import argparse
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


def sent_samples(capture, mport):
    """The A-law payloads SIPp sent from mport, decoded, as a list of samples."""
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={mport},rtp", "-Y",
           f"rtp && udp.srcport == {mport} && rtp.p_type == 8",
           "-T", "fields", "-e", "rtp.payload"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    payloads = [bytes.fromhex(line.replace(":", "")) for line in run.stdout.split()]
    pcm = b"".join(audioop.alaw2lin(p, 2) for p in payloads)
    return to_samples(pcm)


def received_by(capture, mport):
    """How many RTP packets reached mport (sent by Siphon)."""
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={mport},rtp", "-Y",
           f"rtp && udp.dstport == {mport}", "-T", "fields", "-e", "rtp.seq"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    return len(run.stdout.split())


def to_samples(pcm):
    return [int.from_bytes(pcm[i:i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]


def first_loud_frame(samples):
    """Index of the first 20 ms frame with audible content (speech starts)."""
    for i in range(0, len(samples) - FRAME, FRAME):
        if max(abs(s) for s in samples[i:i + FRAME]) > 500:
            return i
    return None


def find(haystack, needle):
    n = len(needle)
    for i in range(0, len(haystack) - n + 1):
        if haystack[i:i + n] == needle:
            return i
    return None


def in_order(channel, want):
    """How many of want's 20 ms frames channel holds in order, and the slips between them
    (a frame found not right after the previous one found)."""
    places = {}
    for i in range(0, len(channel) - FRAME + 1, FRAME):
        places.setdefault(tuple(channel[i:i + FRAME]), []).append(i)
    found, slips, last, last_k = 0, 0, None, -1
    for k in range(len(want) // FRAME):
        frame = tuple(want[k * FRAME:(k + 1) * FRAME])
        nxt = next((p for p in places.get(frame, []) if last is None or p > last), None)
        if nxt is None:
            continue
        found += 1
        if last is not None and (nxt != last + FRAME or k != last_k + 1):
            slips += 1
        last, last_k = nxt, k
    return found, slips


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", required=True)
    ap.add_argument("--caller-mport", type=int, required=True)
    ap.add_argument("--agent-mport", type=int, required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--second-party", action="store_true",
                    help="click-to-call: no order between the two parties' speech")
    args = ap.parse_args()

    with wave.open(args.wav, "rb") as w:
        params = (w.getnchannels(), w.getsampwidth(), w.getframerate())
        frames = w.readframes(w.getnframes())
    print(f"WAV: {params[0]} channel(s), {params[1] * 8} bit, {params[2]} Hz, "
          f"{len(frames) // (2 * max(params[0], 1))} samples per channel")
    if params != (2, 2, 8000):
        print("FAIL: not 16-bit stereo 8 kHz")
        return 1
    both = to_samples(frames)
    ch0, ch1 = both[0::2], both[1::2]
    ok = True

    caller = sent_samples(args.capture, args.caller_mport)
    agent = sent_samples(args.capture, args.agent_mport)
    print(f"caller sent {len(caller) // FRAME} frames, agent sent {len(agent) // FRAME} frames")
    if not caller or not agent:
        print("FAIL: no A-law RTP from a SIPp phone in the capture")
        return 1

    # Channel 0: the caller's speech, whole and contiguous, across the switch.
    start = first_loud_frame(caller)
    at = None if start is None else find(ch0, caller[start:start + FRAME])
    if at is None:
        print("FAIL: the caller's speech is not in channel 0")
        ok = False
    elif args.second_party:
        found, slips = in_order(ch0[at:], caller[start:])
        total = len(caller[start:]) // FRAME
        print(f"channel 0: {found} of {total} frames of the first party's speech, in order, "
              f"{slips} slip(s) (from sample {at})")
        if found < total * 0.95 or slips > 3:
            print("FAIL: more than 5% of the first party's frames missing, or more than 3 slips")
            ok = False
    else:
        want = caller[start:]
        got = ch0[at:at + len(want)]
        if got == want:
            print(f"channel 0: the caller's {len(want) // FRAME} frames of speech, exact and "
                  f"contiguous (from sample {at})")
        else:
            bad = sum(1 for i in range(0, len(want), FRAME)
                      if got[i:i + FRAME] != want[i:i + FRAME])
            print(f"FAIL: channel 0 differs from the caller's audio in {bad} of "
                  f"{len(want) // FRAME} frames (got {len(got)} samples)")
            ok = False

    # Channel 1: the agent's speech, in order, after the switch.
    astart = first_loud_frame(agent)
    bt = None if astart is None else find(ch1, agent[astart:astart + FRAME])
    if bt is None:
        print("FAIL: the agent's speech is not in channel 1")
        ok = False
    else:
        want = agent[astart:]
        total = len(want) // FRAME
        # Each agent frame's place in channel 1, searched forward from the last one found:
        # in order, and how many frames of channel 1 lie between consecutive ones (1 when
        # contiguous; a concealed or late frame shows as a slip).
        places = {}
        for i in range(0, len(ch1) - FRAME + 1, FRAME):
            places.setdefault(tuple(ch1[i:i + FRAME]), []).append(i)
        found, slips, last, last_k = 0, 0, bt - FRAME, -1
        for k in range(total):
            frame = tuple(want[k * FRAME:(k + 1) * FRAME])
            nxt = next((p for p in places.get(frame, []) if p > last), None)
            if nxt is None:
                continue
            found += 1
            if k > 0 and (nxt != last + FRAME or k != last_k + 1):
                slips += 1
            last, last_k = nxt, k
        print(f"channel 1: {found} of {total} frames of the agent's speech, in order, "
              f"{slips} slip(s) (from sample {bt}, {bt / 8000:.2f} s into the stream)")
        if found < total * 0.95 or slips > 3:
            print("FAIL: more than 5% of the agent's frames missing, or more than 3 slips")
            ok = False
        if at is not None and bt <= at and not args.second_party:
            print("FAIL: the agent is heard before the caller's speech started")
            ok = False

    got_rtp = received_by(args.capture, args.agent_mport)
    print(f"the agent received {got_rtp} RTP packets from Siphon")
    if got_rtp < 100:
        print("FAIL: the agent did not receive the caller's RTP")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
