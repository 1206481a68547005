"""What happens to one request after the listener: two handlers, one per worker thread.

``SpeechHandler`` turns an utterance into a transcript and a verdict; an accepted
prompt goes on to ``ImageHandler``, which generates the picture and stores it.
Each reports through events only; a failure in either is an ``error`` event plus
``rejected: error``, never a dead worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .config import Config
from .events import Accepted, Error, EventSink, ImageWritten, Rejected, Transcript, Utterance
from .gallery.writer import GalleryError, GalleryWriter, ImageRecord
from .transcribe import Transcriber, hallucination
from .verdict import Moderator, Verdict

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class ImageRequest:
    """An accepted prompt and what the sidecar should remember about how it came."""

    id: str
    prompt: str
    seed: int | None = None  # None: [image] seed decides
    received: float = field(default_factory=time.monotonic)  # when it was handed on
    sidecar: dict[str, Any] = field(default_factory=dict)


class ImageSource(Protocol):
    def generate(self, prompt: str, seed: int | None = None) -> Any: ...


def report_failure(sink: EventSink, now: float, id_: str | None, stage: str, error: str) -> None:
    log.error("%s failed: %s", stage, error)
    sink.emit(Error(id=id_, t=now, stage=stage, message=error))
    sink.emit(Rejected(id=id_, t=now, reason="error", detail=f"{stage}: {error}"))


def verdict_event(id_: str | None, now: float, text: str, verdict: Verdict) -> Accepted | Rejected:
    """The moderation verdict as the event the stream carries: accepted or rejected: toxic."""
    if verdict.allowed:
        log.info("request accepted")
        return Accepted(id=id_, t=now, text=text, scores=verdict.scores)
    log.info("request rejected by %s: %s", verdict.backend, ", ".join(verdict.flagged))
    return Rejected(
        id=id_,
        t=now,
        reason="toxic",
        detail=f"flagged by {verdict.backend}",
        flagged=tuple(verdict.flagged),
        scores=verdict.scores,
    )


class SpeechHandler:
    """Transcript, hallucination guard, moderation verdict; accepted prompts go on."""

    def __init__(
        self,
        config: Config,
        transcriber: Transcriber,
        moderator: Moderator,
        sink: EventSink,
        *,
        clock: Clock,
        forward: Callable[[ImageRequest], None],
    ) -> None:
        self._config = config
        self._transcriber = transcriber
        self._moderator = moderator
        self._sink = sink
        self._clock = clock
        self._forward = forward

    def __call__(self, utterance: Utterance, wake: dict[str, Any]) -> None:
        try:
            heard = self._transcriber.transcribe(utterance.audio)
        except Exception as exc:  # this utterance failed; the next one may work
            report_failure(self._sink, self._clock(), utterance.id, "speech", str(exc))
            return
        log.debug("transcript %s: %r", utterance.id, heard.text)
        self._sink.emit(
            Transcript(
                id=utterance.id,
                t=self._clock(),
                text=heard.text,
                language=heard.language,
                audio_s=utterance.duration_s,
                seconds=heard.seconds,
            )
        )
        why = hallucination(heard, self._config.speech)
        if why is not None:
            log.info("nothing usable was said (%s)", why)
            self._sink.emit(Rejected(id=utterance.id, t=self._clock(), reason="empty", detail=why))
            return
        try:
            verdict = self._moderator.check(heard.text)
        except Exception as exc:
            report_failure(self._sink, self._clock(), utterance.id, "moderation", str(exc))
            return
        self._sink.emit(verdict_event(utterance.id, self._clock(), heard.text, verdict))
        if not verdict.allowed:
            return
        sidecar = {
            "id": utterance.id,
            "transcript": heard.text,
            "wake": wake,
            "utterance": {"start_s": utterance.start_s, "duration_s": utterance.duration_s},
            "moderation": {"backend": verdict.backend, "scores": verdict.scores},
            "timings": {"transcribe_s": round(heard.seconds, 3)},
        }
        self._forward(ImageRequest(utterance.id or "", heard.text, sidecar=sidecar))


class ImageHandler:
    """Generate, then store atomically; reports the path or why there is none."""

    def __init__(
        self, generator: ImageSource, writer: GalleryWriter, sink: EventSink, clock: Clock
    ) -> None:
        self._generator = generator
        self._writer = writer
        self._sink = sink
        self._clock = clock

    def __call__(self, request: ImageRequest) -> Path | None:
        """The PNG's path, or None when there is none (the events say why)."""
        try:
            made = self._generator.generate(request.prompt, request.seed)
        except Exception as exc:  # GenerationError, or anything torch raises
            report_failure(self._sink, self._clock(), request.id, "image", str(exc))
            return None
        timings = {**request.sidecar.get("timings", {}), "generate_s": round(made.seconds, 3)}
        sidecar = {**request.sidecar, "device": made.device, "dtype": made.dtype}
        record = ImageRecord(
            image=made.image,
            prompt=request.prompt,
            seed=made.seed,
            steps=made.steps,
            guidance=made.guidance,
            width=made.width,
            height=made.height,
            sampler=made.sampler,
            model=made.model,
            negative_prompt=made.negative_prompt,
            sidecar={**sidecar, "timings": timings},
        )
        try:
            path = self._writer.write(record)
        except GalleryError as exc:
            report_failure(self._sink, self._clock(), request.id, "gallery", str(exc))
            return None
        log.info("request to image: %.2f s", time.monotonic() - request.received)
        self._sink.emit(
            ImageWritten(
                id=request.id,
                t=self._clock(),
                path=str(path),
                prompt=request.prompt,
                seed=made.seed,
                model=made.model,
                seconds=made.seconds,
            )
        )
        return path
