"""Collect Whisper's real mishearings of harmless spoken prompts (moderation/misheard.tsv).

A garbled transcript of a harmless request must not read as toxic ("a kid crying"
heard as "a kid dying"). The only honest source of such transcripts is Whisper
itself: this speaks benign prompts from the development sets (dev.tsv and
dev_harms.tsv, never a test set) with espeak-ng in several voices, adds pink noise
at several levels, transcribes each with the daemon's own WhisperTranscriber
(tiny.en, greedy), and keeps every transcript that differs from what was said.

    .venv/bin/python tools/collect_mishearings.py         # dev prompts -> misheard.tsv
    .venv/bin/python tools/collect_mishearings.py train   # train prompts -> misheard_train.tsv

It needs espeak-ng (make test installs it). misheard.tsv, from the development
sets, is for evaluation only; misheard_train.tsv, from the training sets, teaches
the semantic head that garbled words are not a threat (tools/train_semantic_head.py).

The output is deterministic for the same espeak-ng, faster-whisper and model.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speech2image.config import SpeechConfig  # noqa: E402
from speech2image.listening.audio import read_audio  # noqa: E402
from speech2image.speech.transcribe import WhisperTranscriber  # noqa: E402
from tests.support import noise  # noqa: E402

DATA = ROOT / "tests" / "data" / "moderation"
VOICES = ("en-us", "en+f3", "en-gb-x-rp", "en+m3")
NOISE_LEVELS = (0.0, 0.03, 0.08)  # RMS of the added pink noise, of full scale
PROMPTS_PER_SET = 40


SOURCES = {
    "dev": (("dev.tsv", "dev_harms.tsv"), "misheard.tsv"),
    "train": (("train.tsv", "train_harms.tsv"), "misheard_train.tsv"),
}


def benign_prompts(sets: tuple[str, ...]) -> list[str]:
    chosen: list[str] = []
    for name in sets:
        with (DATA / name).open(encoding="utf-8") as handle:
            rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            benign = [r["text"] for r in rows if r["label"] == "benign"]
        chosen += benign[:PROMPTS_PER_SET]
    return chosen


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def speak(text: str, voice: str, folder: Path) -> np.ndarray:
    wav = folder / "said.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "165", "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    return read_audio(wav)


def main() -> int:
    sets, output = SOURCES[sys.argv[1] if len(sys.argv) > 1 else "dev"]
    transcriber = WhisperTranscriber(SpeechConfig(), "collect_mishearings")
    heard: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prompt in benign_prompts(sets):
            for voice in VOICES:
                clean = speak(prompt, voice, Path(tmp))
                for index, level in enumerate(NOISE_LEVELS):
                    audio = clean
                    if level:
                        hiss = noise(len(clean) / 16000, level=level, seed=index)
                        mixed = clean.astype(np.int32) + hiss[: len(clean)]
                        audio = np.clip(mixed, -32768, 32767).astype(np.int16)
                    text = words(transcriber.transcribe(audio).text)
                    if text and text != words(prompt) and text not in heard:
                        heard[text] = prompt
    out = DATA / output
    with out.open("w", encoding="utf-8") as handle:
        handle.write("label\tcategory\ttext\n")
        for text in sorted(heard):
            handle.write(f"benign\tmisheard\t{text}\n")
    print(f"{len(heard)} mishearings written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
