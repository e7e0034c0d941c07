#!/bin/sh
# Render a fallback line to an 8 kHz 16-bit mono WAV that the gateway plays when Gemini is unreachable.
# Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox). The default asset
# gateway/assets/fallback.wav was made with:
#   scripts/fallback_wav.sh gateway/assets/fallback.wav
# A per-dialplan line goes next to the plan as <plan file stem>.fallback.wav, e.g.
#   scripts/fallback_wav.sh dialplans/support.fallback.wav "Sorry, support is unavailable. Please hold for an agent."
set -eu
out=${1:?usage: fallback_wav.sh OUT.wav [TEXT]}
text=${2:-"Sorry, our assistant is not available right now. Please call again later."}
tmp=$(mktemp --suffix=.wav)
trap 'rm -f "$tmp"' EXIT
espeak-ng -v en-us -s 155 -w "$tmp" "$text"
sox "$tmp" -r 8000 -c 1 -b 16 "$out" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse highpass 200 lowpass 3400 norm -3 pad 0.1 0.2
