"""The hallucination guard: Whisper invents text for silence and noise.

"Thank you for watching!" drawn as a picture would be worse than nothing, so
:func:`hallucination` rejects such transcripts before they reach moderation. It is
a pure function of the segments, unit-tested.
"""

from __future__ import annotations

import re

from ..config import SpeechConfig
from .transcribe import Transcription

# What Whisper says over silence, noise and breathing (seen in its training subtitles).
SILENCE_HALLUCINATIONS = frozenset(
    {
        "you",
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


def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces: for comparing phrases."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def hallucination(transcription: Transcription, config: SpeechConfig) -> str | None:
    """Why a transcript is not a real request, or None when it is one."""
    words = normalise(transcription.text)
    if not words:
        return "no words"
    if words in SILENCE_HALLUCINATIONS:
        return "a phrase Whisper makes up for silence"
    segments = transcription.segments
    if segments and all(s.no_speech_prob >= config.no_speech_threshold for s in segments):
        return "no speech detected by the model"
    if segments:
        duration = sum(max(s.end - s.start, 0.01) for s in segments)
        weighted = sum(s.avg_logprob * max(s.end - s.start, 0.01) for s in segments) / duration
        if weighted < config.log_prob_threshold:
            return "too uncertain to be speech"
    return None
