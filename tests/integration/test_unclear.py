"""Said but unclear is not nothing said: a mumbled request is ``rejected: unclear`` with
the words Whisper made out, through the same CLI a user runs.

The mumble is made here, from a fixture: an espeak-ng prompt drowned in pink noise at
0 dB SNR. tiny.en still hears words in it, and is unsure of them (average log-prob
about -1.8, no-speech probability about 0.06).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from speech2image.config import SpeechConfig
from tests.support import Audio, concat, data_audio, noise, run_cli, silence, write_wav

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def drowned(speech: Audio, snr_db: float, seed: int) -> Audio:
    """``speech`` with pink noise at ``snr_db`` against its voiced part."""
    voiced = speech.astype(np.float64)
    hiss = noise(len(speech) / 16000, seed=seed).astype(np.float64)[: len(speech)]
    power = np.mean(voiced[np.abs(voiced) > 300] ** 2)
    hiss *= np.sqrt(power / np.mean(hiss**2) / 10 ** (snr_db / 10))
    return np.clip(voiced + hiss, -32768, 32767).astype(np.int16)


def mumbled_request(tmp_path: Path) -> Path:
    """Hey jarvis, then "a robot painting a portrait in a studio" drowned in noise (tiny.en
    heard "the film can be important to the studio")."""
    mumble = drowned(data_audio("espeak/prompt_3_en-us.wav"), snr_db=0.0, seed=2)
    wake = data_audio("espeak/hey_jarvis_en-us_160.wav")
    audio = concat(silence(0.5), wake, silence(0.4), mumble, silence(2.0))
    return write_wav(tmp_path / "mumble.wav", audio)


def test_mumbled_request_is_unclear_with_the_words_heard(tmp_path: Path) -> None:
    result = run_cli(["run", "--input", str(mumbled_request(tmp_path))])
    assert result.returncode == 0, result.stderr

    types = [e["type"] for e in result.events[1:-1]]
    assert types == ["wake", "utterance", "transcript", "rejected"]
    (transcript,) = result.of("transcript")
    (rejected,) = result.of("rejected")
    assert rejected["id"] == transcript["id"]
    assert rejected["reason"] == "unclear"
    heard = transcript["text"]
    assert rejected["detail"] == heard
    assert len(heard.split()) >= 3, heard  # words, not a silence phrase
    assert heard.lower().strip(" .") not in {"the", "a picture of"}
    assert heard not in result.stderr  # private: events only, never the INFO log


def test_the_same_audio_is_a_request_with_a_looser_log_prob_threshold(
    tmp_path: Path, config_file: Callable[[str], Path]
) -> None:
    """The threshold that makes it unclear is [speech] log_prob_threshold (default -1)."""
    assert SpeechConfig().log_prob_threshold == -1.0
    config = config_file("[speech]\nlog_prob_threshold = -3.0\n")
    wav = mumbled_request(tmp_path)
    result = run_cli(["run", "--config", str(config), "--input", str(wav)])
    assert result.returncode == 0, result.stderr
    assert result.of("rejected") == []
    (accepted,) = result.of("accepted")
    assert accepted["text"] == result.of("transcript")[0]["text"]
