#!/usr/bin/env bash
# Regenerates configs/prompts/welcome.wav, the prompt test number 602 plays:
#   scripts/make-prompt.sh ["other words"]   (needs espeak-ng and sox: apt-get install espeak-ng sox)
# The WAV is committed so nobody needs these tools to build or test; run this only to
# change the wording. Output is what the media engine reads without resampling: 8 kHz,
# 16-bit signed PCM, mono. espeak-ng speaks at 22.05 kHz; sox converts, and pads a little
# silence so the greeting neither starts nor ends abruptly. No dither (-D): the same
# text and tool versions give the same bytes, so a re-run shows no spurious diff.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
text="${1:-Welcome to Siphon}"
out="$root/configs/prompts/welcome.wav"
tmp="$(mktemp --suffix .wav)"
trap 'rm -f "$tmp"' EXIT

espeak-ng -v en -s 150 -w "$tmp" "$text"
sox -D "$tmp" -r 8000 -c 1 -b 16 -e signed-integer "$out" pad 0.2 0.3
# The prompt must stay 1.5-3 s; say so now rather than when a test hears it.
dur="$(soxi -D "$out")"
awk -v d="$dur" 'BEGIN { exit !(d >= 1.5 && d <= 3) }' || { echo "welcome.wav is $dur s, want 1.5-3 s" >&2; exit 1; }
echo "wrote $out ($dur s)"
