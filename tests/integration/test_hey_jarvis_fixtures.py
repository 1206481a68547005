"""The default wake word, hey_jarvis, on espeak-ng fixtures (tests/data/make_fixtures.sh).

No human recording of "hey jarvis" is available here, so several synthetic voices
and speeds stand in; their measured scores are in tests/data/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speech2image.pcm import SAMPLE_RATE
from tests.support import (
    DATA,
    Run,
    concat,
    data_audio,
    listening_types,
    run_cli,
    silence,
    write_wav,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAKE_FIXTURES = sorted(p.name for p in (DATA / "espeak").glob("hey_jarvis_en*.wav"))


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    """First and last sample above -40 dBFS in a clean synthetic clip, in seconds."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 328)
    return loud[0] / SAMPLE_RATE, loud[-1] / SAMPLE_RATE


def run_default(tmp_path: Path, audio: np.ndarray) -> Run:
    wav = write_wav(tmp_path / "input.wav", audio)
    result = run_cli(["run", "--input", str(wav)])  # default config + the shared test tables
    assert result.returncode == 0, result.stderr
    return result


def test_there_are_enough_voices() -> None:
    assert len(WAKE_FIXTURES) >= 4
    voices = {name.split("_")[2] for name in WAKE_FIXTURES}
    assert len(voices) >= 3


@pytest.mark.parametrize("name", WAKE_FIXTURES)
def test_default_config_wakes_on_hey_jarvis(tmp_path: Path, name: str) -> None:
    audio = concat(silence(1.0), data_audio(f"espeak/{name}"), silence(5.0))
    result = run_default(tmp_path, audio)
    (wake,) = result.of("wake")
    assert wake["model"] == "hey_jarvis"
    assert wake["score"] >= 0.5
    (rejected,) = result.of("rejected")  # nothing was said after it
    assert rejected["reason"] == "empty"


@pytest.mark.parametrize("pause", [0.4, 0.15])
@pytest.mark.parametrize("voice", ["en-us", "en+f3"])
def test_prompt_after_hey_jarvis_excludes_the_wake_phrase(
    tmp_path: Path, voice: str, pause: float
) -> None:
    wake = data_audio(f"espeak/hey_jarvis_{voice}_160.wav")
    prompt = data_audio(f"espeak/prompt_1_{voice}.wav")
    wake_end = 1.0 + speech_bounds(wake)[1]
    prompt_at = 1.0 + len(wake) / SAMPLE_RATE + pause
    start, end = (prompt_at + s for s in speech_bounds(prompt))
    audio = concat(silence(1.0), wake, silence(pause), prompt, silence(2.0))

    result = run_default(tmp_path, audio)

    assert listening_types(result) == ["listening", "wake", "utterance", "stopped"]
    (utterance,) = result.of("utterance")
    assert utterance["start_s"] >= wake_end - 0.04  # "jarvis" is not in the prompt
    assert utterance["start_s"] <= start  # "a red fox" is
    assert utterance["start_s"] + utterance["duration_s"] >= end
    assert utterance["duration_s"] == pytest.approx(end - start, abs=0.5)


@pytest.mark.parametrize("name", ["hey_jarvis_prompt_en-us.wav", "hey_jarvis_prompt_en+f3.wav"])
def test_committed_request_files(tmp_path: Path, name: str) -> None:
    result = run_default(tmp_path, concat(silence(0.5), data_audio(f"espeak/{name}"), silence(2)))
    assert [e["type"] for e in result.events[1:-1]] == [
        "wake",
        "utterance",
        "transcript",
        "accepted",
        "progress",  # step 1 of the test tables' 2
        "progress",
        "image",
    ]
    assert [(e["step"], e["steps"]) for e in result.of("progress")] == [(1, 2), (2, 2)]


def test_ordinary_speech_and_prompts_do_not_wake(tmp_path: Path) -> None:
    parts = [data_audio("espeak/speech_no_wake_en-us.wav")]
    parts += [data_audio(f"espeak/prompt_{i}_en-us.wav") for i in (1, 2, 3)]
    result = run_default(tmp_path, concat(*[concat(p, silence(0.5)) for p in parts]))
    assert result.of("wake") == []
