"""The soak test's audio: a deterministic mix of requests, non-requests and background.

Hundreds of "hey jarvis" phrases an hour (espeak-ng voices that trigger it), most
followed by a prompt from tests/data/moderation/dev.tsv (harmless or toxic) over a
noise bed 20-35 dB down, some by nothing or only noise; digital silence; background
without the wake word: speech, music-like audio and noise from `bench/corpus.py`. The
first segments are one of each kind, so even a few minutes cover every path.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import corpus
from bench.corpus import SAMPLE_RATE, Float, Int16

PROMPTS = corpus.TEST_DATA / "moderation" / "dev.tsv"
PROMPT_VOICES = (("en-us", 160), ("en+f3", 160), ("en-gb-x-rp", 150), ("en+m3", 150))
POOL_SIZE = 48  # background speech: a small pool, recombined (synthesized in seconds)
# Kinds of segment and how often each comes; a mix opens with one of each, in this order.
KINDS = {
    "benign": 0.40,
    "toxic": 0.15,
    "wake-only": 0.05,  # a wake word, then nothing: rejected as empty
    "wake-noise": 0.05,  # a wake word, then only a noise
    "silence": 0.05,
    "background": 0.30,  # no wake word: speech, music-like audio or noise
}
WAKE_KINDS = ("benign", "toxic", "wake-only", "wake-noise")


@dataclass(frozen=True)
class Mix:
    audio: Int16
    planned: Counter[str]  # segments of each kind

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def wake_phrases(self) -> int:
        return sum(self.planned[kind] for kind in WAKE_KINDS)


def load_prompts() -> dict[str, list[str]]:
    with PROMPTS.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {
        label: [row["text"] for row in rows if row["label"] == label]
        for label in ("benign", "toxic")
    }


def _quiet(seconds: float) -> Float:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


class _Segments:
    """Makes each kind of segment; espeak-ng renderings come from corpus's disk cache."""

    def __init__(self, rng: np.random.Generator, cache_dir: Path | None) -> None:
        self.rng = rng
        self.cache = cache_dir
        self.pool = corpus.speech_pool(cache_dir, size=POOL_SIZE)
        self.prompts = load_prompts()

    def make(self, kind: str) -> Float:
        if kind in ("benign", "toxic"):
            prompt = str(self.rng.choice(self.prompts[kind]))
            voice, speed = PROMPT_VOICES[int(self.rng.integers(len(PROMPT_VOICES)))]
            said = corpus.synthesize(prompt, voice, speed, 50, self.cache)
            return self._in_room([self._wake(), _quiet(self.rng.uniform(0.3, 0.5)), said])
        if kind == "wake-only":
            return self._in_room([self._wake(), _quiet(5.0)])
        if kind == "wake-noise":
            hiss = corpus.noise(self.rng, 3 * SAMPLE_RATE, self._noise_kind(), self.pool)
            return self._in_room([self._wake(), _quiet(0.4), hiss * np.float32(0.3)])
        if kind == "silence":
            return _quiet(self.rng.uniform(3.0, 10.0))
        return np.concatenate([self._background(), _quiet(1.0)])

    def _wake(self) -> Float:
        variants = corpus.JARVIS_VARIANTS
        voice, speed = variants[int(self.rng.integers(len(variants)))]
        pitch = int(self.rng.choice((35, 50, 65)))
        return corpus.synthesize("hey jarvis", voice, speed, pitch, self.cache)

    def _noise_kind(self) -> str:
        return str(self.rng.choice(corpus.NOISE_KINDS))

    def _in_room(self, parts: Sequence[Float]) -> Float:
        """Speech at one level over a noise bed 20-35 dB below it, quiet around it."""
        level = self.rng.uniform(-28, -16)
        scaled = [corpus.set_level(p, level) if np.any(p) else p for p in parts]
        speech = np.concatenate([_quiet(0.5), *scaled, _quiet(self.rng.uniform(2.0, 3.0))])
        bed = corpus.noise(self.rng, len(speech), self._noise_kind(), self.pool)
        return speech + corpus.set_level(bed, level - self.rng.uniform(20, 35))

    def _background(self) -> Float:
        """4-20 s without the wake word: speech, music-like audio or noise."""
        n = int(self.rng.uniform(4, 20) * SAMPLE_RATE)
        roll = self.rng.random()
        if roll < 0.5:
            audio, _ = corpus._speech_segment(self.rng, n, self.pool, [""] * len(self.pool))
            return corpus.set_level(audio, self.rng.uniform(-34, -14))
        if roll < 0.75:
            return corpus.set_level(corpus.music(self.rng, n), self.rng.uniform(-36, -14))
        noise = corpus.noise(self.rng, n, self._noise_kind(), self.pool)
        return corpus.set_level(noise, self.rng.uniform(-50, -20))


def build_mix(seconds: float, seed: int = 0, cache_dir: Path | None = None) -> Mix:
    """About ``seconds`` of the soak mix, the same for the same seed (and espeak-ng)."""
    rng = np.random.default_rng(seed)
    segments = _Segments(rng, cache_dir)
    kinds, weights = list(KINDS), np.array(list(KINDS.values()))
    parts: list[Int16] = [np.zeros(SAMPLE_RATE, np.int16)]
    planned: Counter[str] = Counter()
    total = 0
    while total < seconds * SAMPLE_RATE:
        made = sum(planned.values())
        kind = kinds[made] if made < len(kinds) else str(rng.choice(kinds, p=weights))
        audio = corpus.to_int16(corpus.fade(segments.make(kind)))
        planned[kind] += 1
        parts.append(audio)
        total += len(audio)
    parts.append(np.zeros(3 * SAMPLE_RATE, np.int16))  # the last request ends in the file
    return Mix(np.concatenate(parts), planned)
