"""What happens to a request once it is heard: understand it, then draw it.

:class:`Understand` runs on the speech worker (transcript, hallucination guard,
moderation verdict), :class:`Draw` on the image worker that alone owns the model
(generate, then store the pair in the gallery). Each takes the request record and
hands on a new one with its part added; each reports through the :class:`Ledger`,
so a failure anywhere is an ``error`` event plus ``rejected: error``, never a lost
request or a dead worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .config import SpeechConfig
from .events import Accepted, ImageWritten, Progress, Rejected, Transcript
from .gallery.writer import GalleryError, GalleryWriter
from .images.generate import GeneratedImage
from .ledger import Ledger
from .moderation.verdict import PromptModerator, Verdict
from .pcm import SAMPLE_RATE, Frame
from .request import ModerationPart, Request
from .speech.guard import judge
from .speech.transcribe import Transcriber

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Heard:
    """An utterance on its way to the speech worker: the record and its audio."""

    request: Request
    audio: Frame | None  # None: typed on the web page, nothing to transcribe


@dataclass(frozen=True)
class ToDraw:
    """An accepted request on its way to the image worker, and since when it waits."""

    request: Request
    queued_at: float  # time.monotonic()


def source_key(item: Heard | ToDraw) -> str:
    """Whose line a request waits in (the microphone, the web page, each Wyoming client
    or satellite), so that one room cannot starve the others."""
    return f"{item.request.source}:{item.request.origin}"


class ImageSource(Protocol):
    def generate(
        self,
        prompt: str,
        seed: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> GeneratedImage: ...


def verdict_event(request: Request, now: float, verdict: Verdict) -> Accepted | Rejected:
    """The moderation verdict as the event the stream carries: accepted, or rejected as
    toxic or as unsupported (a language moderation cannot read)."""
    if verdict.unsupported:
        log.info("request rejected: a language moderation does not cover")
        return Rejected(id=request.id, t=now, reason="unsupported", detail=verdict.unsupported)
    if verdict.allowed:
        log.info("request accepted")
        return Accepted(id=request.id, t=now, text=request.prompt, scores=verdict.scores)
    log.info("request rejected by %s: %s", verdict.backend, ", ".join(verdict.flagged))
    return Rejected(
        id=request.id,
        t=now,
        reason="toxic",
        detail=f"flagged by {verdict.backend}",
        flagged=tuple(verdict.flagged),
        scores=verdict.scores,
    )


def moderate(
    request: Request,
    moderator: PromptModerator,
    ledger: Ledger,
    now: Clock,
    language: str | None = None,
) -> Request | None:
    """The request with its verdict, when accepted; None when it ended here."""
    started = time.perf_counter()
    try:
        verdict = moderator.check(request.prompt, language)
    except Exception as exc:  # this request failed; the next one may work
        ledger.fail(request.id, "moderation", str(exc))
        return None
    part = ModerationPart(verdict.backend, verdict.allowed, verdict.scores, tuple(verdict.flagged))
    request = request.with_moderation(part, time.perf_counter() - started)
    ledger.record(request)
    ledger.emit(verdict_event(request, now(), verdict))
    return request if verdict.allowed else None


class Understand:
    """Transcript, hallucination guard, moderation verdict; accepted requests go on."""

    def __init__(
        self,
        config: SpeechConfig,
        transcriber: Transcriber,
        moderator: PromptModerator,
        ledger: Ledger,
        *,
        clock: Clock,
        forward: Callable[[Request], object],
    ) -> None:
        self._config = config
        self._transcriber = transcriber
        self._moderator = moderator
        self._ledger = ledger
        self._clock = clock
        self._forward = forward

    def __call__(self, heard: Heard) -> None:
        request = heard.request
        if heard.audio is None:
            accepted = moderate(request, self._moderator, self._ledger, self._clock)
            if accepted is not None:
                self._forward(accepted)
            return
        try:
            result = self._transcriber.transcribe(heard.audio)
        except Exception as exc:  # this utterance failed; the next one may work
            self._ledger.fail(request.id, "speech", str(exc))
            return
        log.debug("transcript %s: %r", request.id, result.text)
        request = request.with_transcript(result.text, result.language, result.seconds)
        self._ledger.record(request)
        audio_s = (
            request.utterance.duration_s if request.utterance else len(heard.audio) / SAMPLE_RATE
        )
        self._ledger.emit(
            Transcript(
                id=request.id,
                t=self._clock(),
                text=result.text,
                language=result.language,
                audio_s=audio_s,
                seconds=result.seconds,
            )
        )
        judgement = judge(result, self._config)
        if judgement is not None:
            # unclear: the words go in `detail` (events only, like the transcript), so
            # the user sees what was heard; logs say only why.
            log.info("no usable request (%s: %s)", judgement.reason, judgement.why)
            detail = self._heard(result.text) if judgement.reason == "unclear" else judgement.why
            self._ledger.emit(
                Rejected(id=request.id, t=self._clock(), reason=judgement.reason, detail=detail)
            )
            return
        # Whisper's language is a detection only when [speech] language = "" (auto).
        detected = result.language if not self._config.language else None
        accepted = moderate(request, self._moderator, self._ledger, self._clock, detected)
        if accepted is not None:
            self._forward(accepted)

    def _heard(self, words: str) -> str:
        """The words of an unclear request, to show the user, unless moderation objects:
        a notification must not put on screen what it would have refused to draw."""
        try:
            shown = self._moderator.check(words).allowed
        except Exception:  # unsure: show nothing rather than something refused
            shown = False
        return words if shown else ""


class Draw:
    """Generate, then store the pair atomically; reports the path or why there is none.

    Storing needs the request still open (``Ledger.claim``): a picture finished after
    the daemon ended its request at a stop is not stored, and one being stored when
    the stop comes is waited for.
    """

    def __init__(
        self,
        generator: ImageSource,
        writer: GalleryWriter,
        ledger: Ledger,
        clock: Clock,
    ) -> None:
        self._generator = generator
        self._writer = writer
        self._ledger = ledger
        self._clock = clock

    def __call__(self, item: ToDraw) -> Path | None:
        """The PNG's path, or None when there is none (the events say why)."""
        request = item.request.timed("queue", time.monotonic() - item.queued_at)
        try:
            made = self._generator.generate(
                request.prompt, request.seed, on_step=self._progress(request.id)
            )
        except Exception as exc:  # GenerationError, or anything torch raises
            self._ledger.fail(request.id, "image", str(exc))
            return None
        request = request.with_image(made.recipe, made.seconds)
        self._ledger.record(request)
        if not self._ledger.claim(request.id):
            log.info("a picture finished after its request had ended (stopping); not stored")
            return None
        try:
            return self._store(made, request)
        finally:
            self._ledger.release(request.id)

    def _progress(self, request_id: str) -> Callable[[int, int], None]:
        """Each finished denoising step as a ``progress`` event, while the request is
        open: once a stop has ended it, a late step would follow its terminal event."""

        def on_step(step: int, steps: int) -> None:
            if self._ledger.get(request_id) is not None:
                now = self._clock()
                self._ledger.emit(Progress(id=request_id, t=now, step=step, steps=steps))

        return on_step

    def _store(self, made: GeneratedImage, request: Request) -> Path | None:
        try:
            path = self._writer.write(made.image, request)
        except GalleryError as exc:
            self._ledger.fail(request.id, "gallery", str(exc))
            return None
        self._ledger.emit(
            ImageWritten(
                id=request.id,
                t=self._clock(),
                path=str(path),
                prompt=request.prompt,
                seed=made.recipe.seed,
                model=made.recipe.model,
                seconds=made.seconds,
            )
        )
        return path
