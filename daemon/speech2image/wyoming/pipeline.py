"""What the Wyoming side may ask of the running daemon, and nothing more.

The Wyoming server and the satellite driver never see the daemon itself: they speak
to a :class:`Pipeline`, which ``wyomingglue.py`` implements over the daemon's one
model set, ledger and queues (and which tests can implement over real models alone).
Every call here blocks (models run, files are written), so the asyncio side calls
them in an executor, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..pcm import Frame


@dataclass(frozen=True)
class Heard:
    """What Whisper made of a clip: the ASR service's answer."""

    text: str
    language: str


@dataclass(frozen=True)
class Answer:
    """The handle service's answer: ``handled`` (queued for drawing) or not, and the
    short sentence a voice assistant speaks back."""

    handled: bool
    reply: str
    request_id: str | None = None
    reason: str = ""  # when not handled: "toxic", "busy", "empty", "unsupported", "error"


class WakeListener(Protocol):
    """The daemon's wake word + end-pointer for one audio stream (a satellite)."""

    def process(self, frame: Frame) -> Any:
        """An ``events.Wake`` or ``events.Utterance`` (with its audio) or None."""
        ...

    def finish(self) -> Any: ...


class Pipeline(Protocol):
    """The daemon, as Wyoming clients and satellites use it."""

    asr_model: str  # e.g. "tiny.en", what `info` advertises
    asr_languages: tuple[str, ...]
    image_model: str

    def transcribe(self, audio: Frame, language: str | None) -> Heard:
        """Transcribe only (the ASR service): no request, no picture."""
        ...

    def draw(
        self, prompt: str, language: str | None, origin: str, context: Mapping[str, Any]
    ) -> Answer:
        """A request from a transcript (the handle service): moderated now, queued for
        drawing, answered at once."""
        ...

    def spoken(self, audio: Frame, origin: str, wake: tuple[str, float] | None) -> str:
        """A whole spoken request (a satellite's utterance after its wake word): its
        request id; it then runs like a microphone's. ``BusyError`` when full."""
        ...

    def listener(self) -> WakeListener:
        """A fresh wake word + end-pointer with the daemon's settings."""
        ...

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> Callable[[], None]:
        """The daemon's events as dicts (``type``, ``id``, ...); returns unsubscribe."""
        ...


class BusyError(Exception):
    """The daemon's queue is full: the request was refused as ``busy``."""
