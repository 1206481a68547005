"""The hallucination guard: Whisper invents text for silence and noise.

"Thank you for watching!" drawn as a picture would be worse than nothing, so
:func:`judge` stops such transcripts before they reach moderation. It tells two
answers apart: nothing was said (``empty``: no words, a phrase Whisper makes up
for silence, the initial prompt said back, or the model's own "no speech"), and
something was said that the model itself could not make out (``unclear``: words,
decoded with too low a log-probability), which the user may simply say again.
A pure function of the segments, unit-tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..config import SpeechConfig
from .transcribe import Transcription

# What Whisper says over silence, noise and breathing (seen in its training subtitles).
# "the": what tiny.en says over silence, noise, breathing and coughs after our
# initial prompt, every time we let a segment through (log-prob -2.2 to -3.5).
SILENCE_HALLUCINATIONS = frozenset(
    {
        "you",
        "the",
        "thank you",
        "thanks",
        "thank you very much",
        "thank you for watching",
        "thanks for watching",
        "thank you so much for watching",
        "please subscribe",
        "subscribe",
        "like and subscribe",
        "bye",
        "bye bye",
        "goodbye",
        "oh",
        "uh",
        "um",
        "hmm",
        "so",
        "okay",
        "music",
        "applause",
        "silence",
        "the end",
        "subtitles by the amara org community",
    }
)

UNSURE = "words the model itself is unsure of"


@dataclass(frozen=True)
class Judgement:
    """Why a transcript is no request: ``reason`` for the ``rejected`` event, ``why``
    for logs (never the words themselves)."""

    reason: Literal["empty", "unclear"]
    why: str


def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces: for comparing phrases."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def echoes(words: str, prompt: str) -> bool:
    """Only the initial prompt, or the start of it, once or over and over ("a picture
    of a picture of a picture"): what Whisper says back over noise when it hears
    nothing else."""
    echo, said = normalise(prompt).split(), words.split()
    return bool(echo) and all(word == echo[i % len(echo)] for i, word in enumerate(said))


def judge(transcription: Transcription, config: SpeechConfig) -> Judgement | None:
    """Why a transcript is not a real request, or None when it is one."""
    words = normalise(transcription.text)
    if not words:
        return Judgement("empty", "no words")
    if words in SILENCE_HALLUCINATIONS:
        return Judgement("empty", "a phrase Whisper makes up for silence")
    if echoes(words, config.initial_prompt):
        return Judgement("empty", "the initial prompt said back")
    segments = transcription.segments
    if segments and all(s.no_speech_prob >= config.no_speech_threshold for s in segments):
        return Judgement("empty", "no speech detected by the model")
    if segments:
        duration = sum(max(s.end - s.start, 0.01) for s in segments)
        weighted = sum(s.avg_logprob * max(s.end - s.start, 0.01) for s in segments) / duration
        if weighted < config.log_prob_threshold:
            return Judgement("unclear", UNSURE)
    return None


def hallucination(transcription: Transcription, config: SpeechConfig) -> str | None:
    """:func:`judge`'s ``why`` alone (``speech2image transcribe --json`` shows it)."""
    judgement = judge(transcription, config)
    return judgement.why if judgement is not None else None
