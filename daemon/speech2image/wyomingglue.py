"""The daemon behind Wyoming: :class:`wyoming.pipeline.Pipeline` over its one model set.

Home Assistant's ASR service only transcribes; its handle service and the satellites
make requests (source ``wyoming``) in the daemon's one ledger and queues, like the
microphone and the web page, so a full queue is "busy" for all of them. A handled
transcript is moderated right here, in the caller's thread, because Home Assistant
waits for the answer it will speak: "Drawing …", or why not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .config import Config
from .events import Event, Rejected
from .pcm import Frame
from .request import Request, RequestSource
from .stages import build_listener
from .steps import moderate
from .subscribers import Subscribers
from .wyoming.pipeline import Answer, BusyError, Heard, WakeListener

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

REPLIES = {
    "toxic": "I can't draw that.",
    "unsupported": "I can't draw requests in that language.",
    "busy": "I'm busy, try again in a minute.",
    "empty": "I didn't catch what to draw.",
    "error": "Something went wrong; I could not draw that.",
}
SPOKEN_PROMPT_CHARS = 60  # a reply is spoken aloud: a long prompt is cut at a word


class EventTap:
    """An event sink in the daemon's fan-out that Wyoming listeners subscribe to."""

    def __init__(self) -> None:
        self._subscribers: Subscribers[Mapping[str, Any]] = Subscribers("Wyoming event")

    def emit(self, event: Event) -> None:
        if len(self._subscribers):  # no dict for an event nobody hears
            self._subscribers.publish(event.to_dict())

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> Callable[[], None]:
        return self._subscribers.subscribe(listener)


class Ends:
    """Collects the ``rejected`` events of one request id while a call runs."""

    def __init__(self, tap: EventTap, request_id: str) -> None:
        self._id = request_id
        self.reasons: list[str] = []
        self._unsubscribe = tap.subscribe(self._seen)

    def _seen(self, data: Mapping[str, Any]) -> None:
        if data.get("id") == self._id and data.get("type") == Rejected.type:
            self.reasons.append(str(data.get("reason", "error")))

    def close(self) -> None:
        self._unsubscribe()


class DaemonPipeline:
    """The Wyoming side's view of a running daemon."""

    def __init__(self, daemon: Daemon, tap: EventTap) -> None:
        self._daemon = daemon
        self._tap = tap
        config = daemon.config
        self.asr_model = config.speech.model
        self.asr_languages = _languages(config)
        self.image_model = config.image.model

    def transcribe(self, audio: Frame, language: str | None) -> Heard:
        result = self._daemon.stages.transcriber.transcribe(audio)
        return Heard(result.text, result.language or language or "")

    def draw(
        self, prompt: str, language: str | None, origin: str, context: Mapping[str, Any]
    ) -> Answer:
        daemon = self._daemon
        request = Request.start("wyoming", origin, prompt=" ".join(prompt.split()))
        log.info("request %s from Wyoming (%s)", request.id, origin)
        ends = Ends(self._tap, request.id)
        try:
            daemon.ledger.open(request)
            accepted = moderate(
                request, daemon.stages.moderator, daemon.ledger, daemon.now, language or None
            )
            if accepted is not None and daemon.to_images(accepted):
                return Answer(True, f"Drawing {spoken(request.prompt)}.", request.id)
        finally:
            ends.close()
        reason = ends.reasons[0] if ends.reasons else "error"
        return Answer(False, REPLIES.get(reason, REPLIES["error"]), request.id, reason)

    def spoken(self, audio: Frame, origin: str, wake: tuple[str, float] | None) -> str:
        request = Request.start("wyoming", origin)
        if wake is not None:
            request = request.with_wake(wake[0], wake[1], self._daemon.now())
        if not self._daemon.submit(request, audio):
            raise BusyError(request.id)
        return request.id

    def listener(self) -> WakeListener:
        return build_listener(self._daemon.config)

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> Callable[[], None]:
        return self._tap.subscribe(listener)


def spoken(prompt: str, limit: int = SPOKEN_PROMPT_CHARS) -> str:
    """The prompt as a reply says it: without a final full stop, cut at a word."""
    text = prompt.strip().rstrip(".!?")
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "…"


def _languages(config: Config) -> tuple[str, ...]:
    """What ASR and handle advertise: the model's language, or moderation's list."""
    if config.speech.language:
        return (config.speech.language,)
    return tuple(config.moderation.languages)


class IdleSource:
    """No microphone (``speech2image serve``): a source with no frames, until closed."""

    name = "none"
    kind: RequestSource = "wyoming"
    dropped_frames = 0
    overflows = 0

    def __init__(self, heartbeat: Callable[[], None] = lambda: None) -> None:
        self._closed = threading.Event()
        self._heartbeat = heartbeat

    def frames(self) -> Iterator[Frame]:
        while not self._closed.wait(1.0):
            self._heartbeat()
        yield from ()

    def close(self) -> None:
        self._closed.set()


class WyomingSide:
    """``[wyoming]`` (or ``speech2image serve``) around a running daemon: the service
    Home Assistant adds, and the satellites the daemon drives itself.

    Built in two steps like the web page: the daemon needs :attr:`tap` in its event
    fan-out at construction; the servers need the constructed daemon."""

    def __init__(self, config: Config, uri: str | None = None) -> None:
        self._config = config.wyoming
        self.uri = uri if uri is not None else self._config.uri
        self.tap = EventTap()
        self._stops: list[Callable[[], None]] = []

    @property
    def wanted(self) -> bool:
        return bool(self.uri or self._config.satellites)

    def start(self, daemon: Daemon) -> str:
        """Serve and drive; the bound URI ("" without a service). WyomingError if not."""
        from . import __version__
        from .wyoming.satellite import Satellites
        from .wyoming.service import WyomingService

        pipeline = DaemonPipeline(daemon, self.tap)
        bound = ""
        if self.uri:
            service = WyomingService(
                pipeline,
                self.uri,
                zeroconf=self._config.zeroconf,
                allow_network=self._config.allow_network,
                version=__version__,
            )
            bound = service.start()
            self._stops.append(service.stop)
            log.info("wyoming: serving %s", bound)
        if self._config.satellites:
            satellites = Satellites(pipeline, self._config.satellites)
            satellites.start()
            self._stops.append(satellites.stop)
        return bound

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
