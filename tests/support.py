"""Shared test helpers: fixture audio from tests/data, and running the real CLI on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile

from speech2image.audio import SAMPLE_RATE, read_audio

DATA = Path(__file__).parent / "data"
Audio = npt.NDArray[np.int16]


def data_audio(name: str) -> Audio:
    """A fixture from tests/data as 16 kHz mono int16 (through the product's own reader)."""
    return read_audio(DATA / name)


def silence(seconds: float) -> Audio:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)


def noise(seconds: float, level: float = 0.05, seed: int = 0) -> Audio:
    """Pink-ish noise: white noise through a gentle low-pass, at ``level`` of full scale."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * SAMPLE_RATE))
    pink = np.convolve(white, np.exp(-np.arange(64) / 8.0), mode="same")
    pink *= level / np.sqrt(np.mean(pink**2))
    return (np.clip(pink, -1, 1) * 32767).astype(np.int16)


def concat(*parts: Audio) -> Audio:
    return np.concatenate(parts)


def write_wav(path: Path, audio: Audio) -> Path:
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


@dataclass
class Run:
    events: list[dict[str, Any]]
    stderr: str
    returncode: int

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]


def run_cli(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """`speech2image ARGS --events -` in a subprocess, as a user would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "speech2image.cli", *args, "--events", "-"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return Run(events, result.stderr, result.returncode)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length, ignoring case and punctuation."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            previous, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word)),
            )
    return row[-1] / max(1, len(ref))


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


LISTENING_EVENTS = ("listening", "wake", "utterance", "stopped")


def listening_types(run: Run) -> list[str]:
    """The event types the listening stage emits, in order (later stages filtered out)."""
    return [e["type"] for e in run.events if e["type"] in LISTENING_EVENTS]
