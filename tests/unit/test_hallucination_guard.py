"""The hallucination guard: what Whisper says over silence never becomes a prompt."""

from __future__ import annotations

import pytest

from speech2image.config import SpeechConfig
from speech2image.speech.guard import hallucination, normalise
from speech2image.speech.transcribe import Segment, Transcription

CONFIG = SpeechConfig()


def said(text: str, no_speech: float = 0.1, logprob: float = -0.3) -> Transcription:
    segments = (Segment(text, 0.0, 2.0, no_speech, logprob),) if text else ()
    return Transcription(text, "en", segments, 0.1)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "...", "?!", " Thank you for watching!", "Thanks for watching.", "you", "You.",
     "Bye.", "[Music]", "(applause)", "Please subscribe!"],
)  # fmt: skip
def test_silence_phrases_and_punctuation_are_empty(text: str) -> None:
    assert hallucination(said(text), CONFIG) is not None


@pytest.mark.parametrize(
    "text",
    ["a red fox sleeping under a cherry tree", "Thank you notes on a desk", "you and me on a boat"],
)
def test_real_prompts_pass(text: str) -> None:
    assert hallucination(said(text), CONFIG) is None


def test_high_no_speech_probability_is_empty() -> None:
    assert hallucination(said("a castle", no_speech=0.8), CONFIG) == (
        "no speech detected by the model"
    )
    assert hallucination(said("a castle", no_speech=0.5), CONFIG) is None


def test_very_uncertain_decoding_is_empty() -> None:
    assert hallucination(said("a castle", logprob=-1.6), CONFIG) == "too uncertain to be speech"
    assert hallucination(said("a castle", logprob=-0.9), CONFIG) is None


def test_thresholds_come_from_config() -> None:
    lenient = SpeechConfig(no_speech_threshold=0.95, log_prob_threshold=-2.0)
    assert hallucination(said("a castle", no_speech=0.8, logprob=-1.6), lenient) is None


def test_normalise() -> None:
    assert normalise("  Thank you, for WATCHING!! ") == "thank you for watching"
