"""The hallucination guard: what Whisper says over silence never becomes a prompt, and
words Whisper is unsure of are told apart from nothing said."""

from __future__ import annotations

import pytest

from speech2image.config import SpeechConfig
from speech2image.speech.guard import UNSURE, Judgement, echoes, hallucination, judge, normalise
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


def test_words_the_model_is_unsure_of_are_unclear_not_empty() -> None:
    assert judge(said("a red fox", logprob=-1.6), CONFIG) == Judgement("unclear", UNSURE)
    assert hallucination(said("a red fox", logprob=-1.6), CONFIG) == UNSURE
    assert judge(said("a red fox", logprob=-0.9), CONFIG) is None


def test_no_speech_wins_over_unsure_words() -> None:
    """Whisper's own silence: likely no speech, and an unsure decode of it."""
    verdict = judge(said("a red fox", no_speech=0.9, logprob=-2.5), CONFIG)
    assert verdict == Judgement("empty", "no speech detected by the model")


@pytest.mark.parametrize("logprob", [-0.1, -2.5])
@pytest.mark.parametrize(
    "text",
    ["A picture of.", "a picture of", "A picture", "a", "A picture of a picture of a picture of a",
     "The", "the."],
)  # fmt: skip
def test_initial_prompt_echo_and_a_lone_the_are_empty(text: str, logprob: float) -> None:
    """What tiny.en says over noise after "A picture of", however sure it is of it."""
    verdict = judge(said(text, logprob=logprob), CONFIG)
    assert verdict is not None
    assert verdict.reason == "empty"


def test_echo_follows_the_configured_prompt() -> None:
    assert echoes("a picture of a picture of", "A picture of")
    assert not echoes("a picture of a cat", "A picture of")
    assert not echoes("a picture of", "")  # no prompt, nothing to echo
    assert judge(said("a picture of"), SpeechConfig(initial_prompt="")) is None


def test_real_prompts_starting_like_the_initial_prompt_pass() -> None:
    assert judge(said("A picture of a red fox in the snow."), CONFIG) is None
    assert judge(said("the moon over a lake"), CONFIG) is None


def test_normalise() -> None:
    assert normalise("  Thank you, for WATCHING!! ") == "thank you for watching"
