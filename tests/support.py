"""Shared test helpers: fixture audio from tests/data, running the real CLI on it, and
small pictures for the gallery tests."""

from __future__ import annotations

import dataclasses
import io
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
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from speech2image.listening.audio import read_audio
from speech2image.pcm import SAMPLE_RATE
from speech2image.request import ImagePart, Request

DATA = Path(__file__).parent / "data"
Audio = npt.NDArray[np.int16]
# What the recordings in tests/data say (tests/data/README.md).
JFK_SENTENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
SPOKEN_PROMPTS = {  # tests/data/espeak/prompt_<n>_<voice>.wav, in each of ESPEAK_VOICES
    1: "a red fox sleeping under a cherry tree",
    2: "a lighthouse on a cliff at sunset",
    3: "a robot painting a portrait in a studio",
}
ESPEAK_VOICES = ("en-us", "en+f3")


def data_audio(name: str) -> Audio:
    """A fixture from tests/data as 16 kHz mono int16 (through the product's own reader)."""
    return read_audio(DATA / name)


def espeak_prompt(number: int, voice: str) -> str:
    """The tests/data path of spoken prompt ``number`` in ``voice``."""
    return f"espeak/prompt_{number}_{voice}.wav"


def espeak_prompts() -> dict[str, str]:
    """Every spoken-prompt recording (tests/data path) and what it says."""
    return {
        espeak_prompt(number, voice): text
        for number, text in SPOKEN_PROMPTS.items()
        for voice in ESPEAK_VOICES
    }


def silence(seconds: float) -> Audio:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)


def noise(seconds: float, level: float = 0.05, seed: int = 0) -> Audio:
    """Pink-ish noise: white noise through a gentle low-pass, at ``level`` of full scale."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * SAMPLE_RATE))
    pink = np.convolve(white, np.exp(-np.arange(64) / 8.0), mode="same")
    pink *= level / np.sqrt(np.mean(pink**2))
    return (np.clip(pink, -1, 1) * 32767).astype(np.int16)


def breathing(seconds: float) -> np.ndarray:
    """Slow swells of low-passed noise, like breathing into a microphone."""
    base = noise(seconds, level=0.02, seed=9).astype(np.float64)
    t = np.arange(len(base)) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 0.4 * t), 0, None) ** 2
    return (base * envelope).astype(np.int16)


def cough() -> np.ndarray:
    """Two short broadband bursts with a fast attack and decay."""
    burst = noise(0.25, level=0.4, seed=4).astype(np.float64)
    burst *= np.exp(-np.arange(len(burst)) / (0.05 * SAMPLE_RATE))
    return concat(burst.astype(np.int16), silence(0.15), (burst * 0.6).astype(np.int16))


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


def drawn_request(
    prompt: str,
    seed: int,
    size: int,
    *,
    steps: int = 1,
    sampler: str = "EulerDiscreteScheduler",
    model: str = "test",
    negative_prompt: str = "",
    transcript: str | None = None,
) -> Request:
    """A request record as it reaches the gallery: prompt, recipe, no pixels."""
    request = Request.start("command-line", "tests")
    if transcript is not None:
        request = request.with_transcript(transcript, "en", 0.1)
    recipe = ImagePart(
        seed, steps, 0.0, size, size, sampler, model, negative_prompt, "cpu", "float32"
    )
    return dataclasses.replace(request, prompt=prompt).with_image(recipe, 0.1)


def noise_picture(seed: int = 1, size: int = 16) -> Image.Image:
    """Random RGB pixels: a different picture for each seed, which no codec shrinks much."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def png_bytes(parameters: str | None = None, seed: int = 1) -> bytes:
    """A PNG file's bytes, with an AUTOMATIC1111 ``parameters`` text chunk when given."""
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    noise_picture(seed).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()
