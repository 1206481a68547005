"""A garbled transcript of a harmless request must not read as toxic.

The spoken fixtures, mixed with pink noise until whisper tiny.en mishears them, go
through the real transcriber, the hallucination guard and the default moderation:
every mishearing is either set aside by the guard (empty or unclear: "say it
again") or allowed, never refused as toxic.
"""

from __future__ import annotations

import numpy as np
import pytest

from speech2image.config import ModerationConfig, SpeechConfig
from speech2image.moderation.combined import build_moderator
from speech2image.speech.guard import judge
from speech2image.speech.transcribe import WhisperTranscriber
from tests.support import concat, data_audio, espeak_prompts, noise, silence, word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPOKEN = espeak_prompts()
NOISE_LEVELS = (0.02, 0.05, 0.1, 0.2)  # RMS of full scale; the prompts peak at -3 dBFS


def noisy(name: str, level: float, seed: int) -> np.ndarray:
    speech = concat(silence(0.3), data_audio(name), silence(0.5))
    hiss = noise(len(speech) / 16000, level=level, seed=seed)[: len(speech)]
    return np.clip(speech.astype(np.int32) + hiss, -32768, 32767).astype(np.int16)


def test_mishearings_of_the_spoken_fixtures_are_never_refused_as_toxic() -> None:
    config = SpeechConfig()
    transcriber = WhisperTranscriber(config, "test")
    moderator = build_moderator(ModerationConfig(), "test")
    misheard, refused = 0, []
    for name, said in SPOKEN.items():
        for seed, level in enumerate(NOISE_LEVELS):
            result = transcriber.transcribe(noisy(name, level, seed))
            if word_error_rate(said, result.text) == 0:
                continue
            misheard += 1
            if judge(result, config) is not None:
                continue  # empty or unclear: the user is asked again
            verdict = moderator.check(result.text)
            if not verdict.allowed:
                refused.append((name, level, result.text, verdict.flagged))
    assert misheard >= 5  # the noise really made Whisper mishear: the check is not empty
    assert refused == []
