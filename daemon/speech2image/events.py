"""Typed events: what every stage reports, one JSON object per line on ``--events``.

Every event carries ``id`` (one per request, set where it starts: the wake word or a
typed prompt; ``None`` for daemon-wide events) and ``t``: seconds of input audio
since the source started, a monotonic clock that is also the position in the file
for file input (0 for requests without audio). Audio never goes into JSON: fields
marked ``json=False`` stay in-process.

Every request ends in exactly one terminal event, ``image`` or ``rejected``
(:func:`is_terminal`; the ``ledger`` module enforces it), and a rejection says why
with one of :data:`REJECT_REASONS`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    id: str | None
    t: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            if f.metadata.get("json", True):
                out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class Listening(Event):
    """The source is open and the wake-word models are loaded."""

    type: ClassVar[str] = "listening"
    models: tuple[str, ...]
    source: str


@dataclass(frozen=True, kw_only=True)
class Wake(Event):
    type: ClassVar[str] = "wake"
    model: str
    score: float


@dataclass(frozen=True, kw_only=True)
class Utterance(Event):
    """The speech after a wake word, cut out; ``audio`` is 16 kHz mono int16."""

    type: ClassVar[str] = "utterance"
    start_s: float
    duration_s: float
    reason: Literal["silence", "max_length"]
    audio: npt.NDArray[np.int16] = field(repr=False, compare=False, metadata={"json": False})


@dataclass(frozen=True, kw_only=True)
class ImageWritten(Event):
    """A PNG is in the gallery, complete (written to a temp file, then renamed)."""

    type: ClassVar[str] = "image"
    path: str
    prompt: str
    seed: int
    model: str
    seconds: float  # inside the diffusion call


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """A picture is being drawn: denoising step ``step`` of ``steps`` has finished."""

    type: ClassVar[str] = "progress"
    step: int
    steps: int


RejectReason = Literal["empty", "unclear", "toxic", "unsupported", "busy", "error", "shutdown"]
# Why a request got no picture: the one list, in the README's words. New reasons go here.
REJECT_REASONS: dict[str, str] = {
    "empty": "nothing was said after the wake word, or Whisper made words up for silence",
    "unclear": "something was said, but Whisper was unsure of the words (`detail` has them)",
    "toxic": "moderation refused the prompt (`flagged` names the labels)",
    "unsupported": "the prompt is in a language moderation does not cover (`detail` names it)",
    "busy": "earlier requests were still queued for transcription or drawing",
    "error": "a stage failed; an `error` event before it says which and why",
    "shutdown": "the daemon was stopped (SIGTERM, SIGINT) before the request finished",
}


@dataclass(frozen=True, kw_only=True)
class Transcript(Event):
    """What was said: private speech, so it goes to events and DEBUG logs only."""

    type: ClassVar[str] = "transcript"
    text: str
    language: str
    audio_s: float
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Accepted(Event):
    type: ClassVar[str] = "accepted"
    text: str
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Rejected(Event):
    """No image for this request, and why: ``flagged`` names the labels for ``toxic``."""

    type: ClassVar[str] = "rejected"
    reason: RejectReason
    detail: str = ""
    flagged: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """Something went wrong in a stage; the daemon keeps running."""

    type: ClassVar[str] = "error"
    stage: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    type: ClassVar[str] = "stopped"
    frames: int
    dropped_frames: int
    overflows: int = 0


def is_terminal(event: Event) -> bool:
    """An event that ends its request: a request has exactly one."""
    return isinstance(event, ImageWritten | Rejected) and event.id is not None


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class JsonLinesSink:
    """Writes each event as one JSON line and flushes, so a reader sees it at once."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = event.to_json()
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class FanOut:
    """Sends every event to several sinks (JSON lines, logs, later the web gallery)."""

    def __init__(self, *sinks: EventSink) -> None:
        self._sinks = sinks

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            sink.emit(event)


class Relay:
    """A sink whose target is replaced while events flow (the notifier, at a reload)."""

    def __init__(self, target: EventSink | None) -> None:
        self.target = target

    def emit(self, event: Event) -> None:
        target = self.target
        if target is not None:
            target.emit(event)


class LogSink:
    """Events to the debug log: they may hold private speech, so never above DEBUG."""

    def __init__(self) -> None:
        self._log = logging.getLogger("speech2image.events")

    def emit(self, event: Event) -> None:
        self._log.debug("%s", event.to_json())
