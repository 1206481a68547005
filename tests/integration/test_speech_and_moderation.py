"""Transcription and moderation with the real models: whisper tiny.en, the profanity
model and the lexicon, through the same CLI a user runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from speech2image.config import SpeechConfig
from speech2image.speech.guard import judge
from speech2image.speech.transcribe import WhisperTranscriber
from tests.support import (
    ESPEAK_VOICES,
    JFK_SENTENCE,
    SPOKEN_PROMPTS,
    Run,
    breathing,
    concat,
    cough,
    data_audio,
    noise,
    run_cli,
    silence,
    word_error_rate,
    write_wav,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = [sys.executable, "-m", "speech2image.cli"]


def request(tmp_path: Path, *parts: np.ndarray, config: Path | None = None) -> Run:
    wav = write_wav(tmp_path / "request.wav", concat(silence(0.5), *parts, silence(2.0)))
    args = ["run", "--input", str(wav)] + (["--config", str(config)] if config else [])
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    return result


def test_transcribe_command_on_jfk() -> None:
    result = subprocess.run(
        [*CLI, "transcribe", "tests/data/jfk.flac"], capture_output=True, text=True, check=True
    )
    assert word_error_rate(JFK_SENTENCE, result.stdout) <= 0.10


def test_transcribe_json_has_segments() -> None:
    result = subprocess.run(
        [*CLI, "transcribe", "--json", "tests/data/espeak/prompt_3_en-us.wav"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["language"] == "en"
    assert report["hallucination"] is None
    assert report["segments"][0]["end"] > report["segments"][0]["start"]
    assert word_error_rate(SPOKEN_PROMPTS[3], report["text"]) <= 0.25


SPOKEN = [(voice, number) for voice in ESPEAK_VOICES for number in SPOKEN_PROMPTS]


@pytest.fixture(scope="module")
def six_requests(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One file with six spoken requests (two voices, three prompts), 3 s apart."""
    parts = []
    for voice, number in SPOKEN:
        parts += [
            data_audio(f"espeak/hey_jarvis_{voice}_160.wav"),
            silence(0.4),
            data_audio(f"espeak/prompt_{number}_{voice}.wav"),
            silence(3.0),
        ]
    return request(tmp_path_factory.mktemp("six"), *parts)


def test_every_request_in_a_file_is_heard_in_order(six_requests: Run) -> None:
    wakes = six_requests.of("wake")
    assert len(wakes) == 6
    for kind in ("utterance", "transcript", "accepted"):
        assert [e["id"] for e in six_requests.of(kind)] == [w["id"] for w in wakes], kind
    assert six_requests.of("rejected") == []


@pytest.mark.parametrize(("index", "spoken"), list(enumerate(SPOKEN)))
def test_spoken_prompt_after_wake_word(
    six_requests: Run, index: int, spoken: tuple[str, int]
) -> None:
    transcript = six_requests.of("transcript")[index]
    text = transcript["text"]
    assert "jarvis" not in text.lower()
    # Per clip a compound split ("a light house") costs 2 of 7 words; the 25 % goal is
    # over the whole set (next test).
    assert word_error_rate(SPOKEN_PROMPTS[spoken[1]], text) <= 0.3, text
    assert transcript["audio_s"] > 1.0
    assert transcript["seconds"] > 0
    assert six_requests.of("accepted")[index]["text"] == text


def test_word_error_rate_over_all_spoken_prompts(six_requests: Run) -> None:
    references = " ".join(SPOKEN_PROMPTS[number] for _, number in SPOKEN)
    heard = " ".join(e["text"] for e in six_requests.of("transcript"))
    assert word_error_rate(references, heard) <= 0.25


@pytest.mark.parametrize("after", ["silence", "breathing", "cough"])
def test_nothing_said_after_the_wake_word_is_empty(tmp_path: Path, after: str) -> None:
    tail = {"silence": silence(3.0), "breathing": breathing(5.0), "cough": cough()}[after]
    wake = data_audio("espeak/hey_jarvis_en-us_160.wav")
    result = request(tmp_path, wake, silence(0.4), tail, silence(4.5))
    assert len(result.of("wake")) == 1
    (rejected,) = result.of("rejected")
    assert rejected["reason"] == "empty"
    assert result.of("accepted") == []


def test_spoken_toxic_request_is_rejected(tmp_path: Path) -> None:
    result = request(tmp_path, data_audio("espeak/hey_jarvis_toxic_en-us.wav"))
    types = [e["type"] for e in result.events[1:-1]]
    assert types == ["wake", "utterance", "transcript", "rejected"]
    (rejected,) = result.of("rejected")
    assert rejected["reason"] == "toxic"
    assert "threat" in rejected["flagged"]
    assert rejected["scores"]["threat"] == 1.0


def test_benign_and_toxic_requests_in_one_file(tmp_path: Path) -> None:
    result = request(
        tmp_path,
        data_audio("espeak/hey_jarvis_benign_en+f3.wav"),
        silence(3.0),
        data_audio("espeak/hey_jarvis_toxic_en-us.wav"),
    )
    verdicts = [e["type"] for e in result.events if e["type"] in ("accepted", "rejected")]
    assert verdicts == ["accepted", "rejected"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("a red fox sleeping under a cherry tree", 0),
        ("a bloody steak", 0),
        ("a damn beautiful mountain", 0),
        ("a killer whale", 0),
        ("shoot a photo of a sunset", 0),
        ("draw me stabbing my boss", 1),
        ("a picture of me killing my neighbor", 1),
    ],
)
def test_check_prompt_exit_status(text: str, code: int) -> None:
    result = subprocess.run(
        [*CLI, "check-prompt", text], capture_output=True, text=True, check=False
    )
    assert result.returncode == code, result.stdout
    assert result.stdout.startswith("allowed" if code == 0 else "rejected")


def test_check_prompt_json() -> None:
    result = subprocess.run(
        [*CLI, "check-prompt", "--json", "draw me stabbing my boss"],
        capture_output=True,
        text=True,
        check=False,
    )
    verdict = json.loads(result.stdout)
    assert verdict["allowed"] is False
    assert "threat" in verdict["flagged"]
    assert set(verdict["scores"]) >= {"toxicity", "threat", "insult", "sexual_explicit"}


def test_missing_speech_model_names_key_and_fix(
    tmp_path: Path, config_file: Callable[[str], Path]
) -> None:
    config = config_file('[speech]\nmodel = "small.en"\n')
    env_cache = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    wav = write_wav(tmp_path / "in.wav", silence(1.0))
    result = run_cli(["run", "--config", str(config), "--input", str(wav)], env=env_cache)
    assert result.returncode == 78
    assert "speech model 'small.en' ([speech] model in" in result.stderr
    assert str(tmp_path / "hub") in result.stderr
    assert "speech2image models pull" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    """tiny.en with the default [speech] settings."""
    return WhisperTranscriber(SpeechConfig(), "test")


@pytest.mark.parametrize(
    "audio",
    [silence(3.0), noise(3.0, level=0.05), noise(5.0, level=0.3, seed=3), cough()],
    ids=["silence", "noise", "loud noise", "cough"],
)
def test_silence_and_noise_are_empty_with_the_default_thresholds(
    whisper: WhisperTranscriber, audio: np.ndarray
) -> None:
    """faster-whisper itself drops them (no-speech probability ~0.85, log-prob ~-2.5)."""
    result = whisper.transcribe(audio)
    assert result.segments == ()
    verdict = judge(result, whisper.config)
    assert verdict is not None
    assert verdict.reason == "empty"


def test_a_looser_no_speech_threshold_reaches_faster_whisper(
    whisper: WhisperTranscriber,
) -> None:
    """[speech] no_speech_threshold is passed to faster-whisper: loosened, the segment it
    dropped by default comes back (what tiny.en says over silence: "the"), and the guard
    still knows it for nothing said."""
    default = whisper.transcribe(silence(3.0))
    loose = WhisperTranscriber(SpeechConfig(no_speech_threshold=1.0), "test")
    kept = loose.transcribe(silence(3.0))
    assert default.segments == ()
    (segment,) = kept.segments
    assert segment.text.lower().strip(" .") == "the"
    assert segment.no_speech_prob > 0.6  # what faster-whisper's default dropped it for
    assert segment.avg_logprob < -1.0
    verdict = judge(kept, loose.config)
    assert verdict is not None
    assert verdict.reason == "empty"


def test_a_stricter_no_speech_threshold_reaches_faster_whisper(
    whisper: WhisperTranscriber,
) -> None:
    """And the other way: breathing gives a segment at the default (no-speech probability
    ~0.5, under 0.6), which faster-whisper drops once the threshold is below it."""
    default = whisper.transcribe(breathing(5.0))
    (segment,) = default.segments
    assert 0.45 < segment.no_speech_prob < 0.6
    strict = WhisperTranscriber(SpeechConfig(no_speech_threshold=0.45), "test")
    assert strict.transcribe(breathing(5.0)).segments == ()
