#!/usr/bin/env bash
# Regenerate the synthetic speech fixtures in tests/data/espeak/.
#
# Uses only espeak-ng and sox. Output is 16 kHz, mono, 16-bit PCM WAV.
# Deterministic: sox runs in repeatable mode (-R) with dithering off (-D), and
# espeak-ng has no randomness, so with the same espeak-ng/sox versions (see
# README.md) every run produces byte-identical files. Idempotent: the output
# directory's WAVs are removed and rebuilt on every run.
#
# Usage: tests/data/make_fixtures.sh   (from anywhere)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/espeak"

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$out"
rm -f "$out"/*.wav

# say VOICE SPEED TEXT OUTFILE
# Synthesize TEXT, convert to 16 kHz mono 16-bit, peak-normalise to -3 dBFS
# (espeak-ng output is close to full scale and clips after resampling).
say() {
    local voice="$1" speed="$2" text="$3" dest="$4"
    espeak-ng -v "$voice" -s "$speed" -w "$tmp/raw.wav" "$text"
    sox -R -D -V1 "$tmp/raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$dest" gain -n -3
}

# Wake phrase "hey jarvis": voice/speed pairs that hey_jarvis_v0.1 detects
# (peak scores are listed in README.md). Slow speech (120 wpm) is where
# detection fails for several voices, so speeds stay within 140-180.
jarvis_variants=(
    "en-us 160"
    "en-us 180"
    "en-gb-x-rp 140"
    "en-gb-scotland 180"
    "en+f3 160"
    "en+m3 140"
    "en-us+klatt 160"
)
for v in "${jarvis_variants[@]}"; do
    read -r voice speed <<<"$v"
    say "$voice" "$speed" "hey jarvis" "$out/hey_jarvis_${voice}_${speed}.wav"
done

# Spoken image prompts, for transcription tests.
prompts=(
    "a red fox sleeping under a cherry tree"
    "a lighthouse on a cliff at sunset"
    "a robot painting a portrait in a studio"
)
prompt_voices=(en-us en+f3)
for voice in "${prompt_voices[@]}"; do
    for i in "${!prompts[@]}"; do
        say "$voice" 160 "${prompts[$i]}" "$out/prompt_$((i + 1))_${voice}.wav"
    done
done

# Wake phrase, 0.4 s pause, then prompt 1, as a single utterance.
for voice in "${prompt_voices[@]}"; do
    say "$voice" 160 "hey jarvis" "$tmp/wake.wav"
    say "$voice" 160 "${prompts[0]}" "$tmp/prompt.wav"
    sox -R -D -V1 -n -r 16000 -c 1 -b 16 -e signed-integer "$tmp/gap.wav" trim 0 0.4
    sox -R -D -V1 "$tmp/wake.wav" "$tmp/gap.wav" "$tmp/prompt.wav" \
        "$out/hey_jarvis_prompt_${voice}.wav"
done

# About 10 s of ordinary speech without the wake word.
say en-us 175 "The weather was mild this morning, so we walked along the river \
to the old market. A man was selling apples, bread and fresh cheese, and the \
children watched a street musician play the violin." "$out/speech_no_wake_en-us.wav"



# Whole requests for the moderation tests: wake phrase, pause, prompt.
say en-us 160 "hey jarvis" "$tmp/wake.wav"
sox -R -D -V1 -n -r 16000 -c 1 -b 16 -e signed-integer "$tmp/gap.wav" trim 0 0.4
say en-us 160 "show my neighbor getting killed" "$tmp/prompt.wav"
sox -R -D -V1 "$tmp/wake.wav" "$tmp/gap.wav" "$tmp/prompt.wav" "$out/hey_jarvis_toxic_en-us.wav"
say en+f3 160 "a lighthouse on a cliff at sunset" "$tmp/prompt.wav"
say en+f3 160 "hey jarvis" "$tmp/wake.wav"
sox -R -D -V1 "$tmp/wake.wav" "$tmp/gap.wav" "$tmp/prompt.wav" "$out/hey_jarvis_benign_en+f3.wav"
ls -l "$out"
