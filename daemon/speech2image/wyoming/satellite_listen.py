"""The satellite driver's threads: its event loop's, and one per satellite's listener.

The wake-word model and the VAD take milliseconds per 80 ms frame, far too long for
the event loop that also answers pings and serves every other satellite, so each
satellite gets a thread of its own. Between the two sits a bounded queue: a CPU
that cannot keep up drops audio (with a warning) instead of growing memory.
Commands travel in the same queue as the audio, so they act between the right
two chunks, and they are never dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioChunkConverter

from ..events import Rejected, Utterance, Wake
from ..pcm import FRAME_SAMPLES, SAMPLE_RATE
from .pipeline import WakeListener

log = logging.getLogger(__name__)

MAX_QUEUED_S = 8.0  # audio waiting for the listener; a burst (a VAD satellite's pre-roll) fits
FRAME_BYTES = FRAME_SAMPLES * 2
SATELLITE_WAKE = "satellite"  # the wake ``model`` when the satellite's own word started it


@dataclass(frozen=True)
class Chunk:
    """Raw audio as the satellite sent it."""

    rate: int
    width: int
    channels: int
    audio: bytes

    @property
    def seconds(self) -> float:
        return len(self.audio) / (self.rate * self.width * self.channels)


class Command(enum.Enum):
    LISTEN = "listen"  # the satellite heard its wake word: reset, capture from now
    FINISH = "finish"  # the stream stopped: close an open capture as if silence followed
    DROP = "drop"  # the connection is gone: forget the capture and any partial frame


@dataclass(frozen=True)
class Listen:
    """:attr:`Command.LISTEN` with the satellite's name for its wake word."""

    wake_word: str


Item = Chunk | Command | Listen
Deliver = Callable[[object, tuple[str, float] | None], None]


class ListenerThread:
    """Feeds a :class:`WakeListener` from a queue; hands its events to ``deliver``.

    ``deliver(event, wake)`` gets each ``Wake``, ``Utterance`` or ``Rejected`` the
    listener returns, on this thread, with the wake (model, score) that began the
    capture it belongs to.
    """

    def __init__(
        self,
        listener: WakeListener,
        name: str,
        deliver: Deliver,
        max_queued_s: float = MAX_QUEUED_S,
    ) -> None:
        self._listener = listener
        self._name = name
        self._deliver = deliver
        self._max_queued_s = max_queued_s
        self._items: deque[Item] = deque()
        self._queued_s = 0.0
        self._ready = threading.Condition()
        self._stopping = False
        self._dropped = 0.0  # seconds of audio dropped in the current overload
        self._thread = threading.Thread(target=self._run, name=f"listen {name}", daemon=True)
        self._converter: tuple[tuple[int, int, int], AudioChunkConverter] | None = None
        self._pending = bytearray()
        self._asked: str | None = None  # the satellite's wake word, until the capture starts
        self._wake: tuple[str, float] | None = None
        self._failed = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self.request_stop()
        self.join(timeout)

    def request_stop(self) -> None:
        """Stop after the frame in hand; what is still queued is dropped."""
        with self._ready:
            self._stopping = True
            self._ready.notify()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(max(timeout, 0.0))

    def audio(self, chunk: Chunk) -> bool:
        """Queue a chunk; False when the queue is full and it was dropped."""
        seconds = chunk.seconds
        with self._ready:
            if self._queued_s + seconds > self._max_queued_s:
                if not self._dropped:
                    log.warning(
                        "satellite %s: listening falls behind the audio; dropping audio",
                        self._name,
                    )
                self._dropped += seconds
                return False
            if self._dropped and self._queued_s < self._max_queued_s / 2:
                log.info(
                    "satellite %s: listening caught up; %.1f s of audio dropped",
                    self._name,
                    self._dropped,
                )
                self._dropped = 0.0
            self._items.append(chunk)
            self._queued_s += seconds
            self._ready.notify()
            return True

    def command(self, command: Command | Listen) -> None:
        with self._ready:
            self._items.append(command)
            self._ready.notify()

    def _next(self) -> Item | None:
        with self._ready:
            while not self._items and not self._stopping:
                self._ready.wait()
            if self._stopping:
                return None
            item = self._items.popleft()
            if isinstance(item, Chunk):
                self._queued_s = max(0.0, self._queued_s - item.seconds)
            return item

    def _run(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._handle(item)
            except Exception:  # a listener bug must not end listening for this room
                if not self._failed:
                    log.exception("satellite %s: the listener failed", self._name)
                self._failed = True

    def _handle(self, item: Item) -> None:
        if isinstance(item, Chunk):
            self._pending += self._convert(item)
            while len(self._pending) >= FRAME_BYTES:
                frame = np.frombuffer(bytes(self._pending[:FRAME_BYTES]), dtype="<i2")
                del self._pending[:FRAME_BYTES]
                self._emit(self._listener.process(frame.astype(np.int16)))
        elif isinstance(item, Listen):
            self._listener.finish()  # the satellite starts over: so do we
            self._asked = item.wake_word
            listen_now = getattr(self._listener, "listen_now", None)
            if listen_now is None:
                log.warning("satellite %s: this listener cannot start on request", self._name)
            else:
                listen_now()
        elif item is Command.FINISH:
            self._emit(self._listener.finish())
        elif item is Command.DROP:
            self._listener.finish()
            self._pending.clear()
            self._converter = None
            self._asked = None

    def _emit(self, event: object) -> None:
        if event is None:
            return
        if isinstance(event, Wake):
            model, score = event.model, event.score
            if self._asked is not None:  # listen_now's wake: the satellite's word began it
                model, score = f"{SATELLITE_WAKE} {self._asked}".strip(), 1.0
            self._asked = None
            self._wake = (model, score)
        wake = self._wake
        if isinstance(event, Utterance | Rejected):
            self._wake = None
        self._deliver(event, wake)

    def _convert(self, chunk: Chunk) -> bytes:
        """16 kHz mono 16-bit, whatever the satellite sends (its own format, usually)."""
        key = (chunk.rate, chunk.width, chunk.channels)
        if key == (SAMPLE_RATE, 2, 1):
            return chunk.audio
        if self._converter is None or self._converter[0] != key:
            self._converter = (key, AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1))
        wyoming_chunk = AudioChunk(
            rate=chunk.rate, width=chunk.width, channels=chunk.channels, audio=chunk.audio
        )
        return self._converter[1].convert(wyoming_chunk).audio


class LoopThread:
    """An asyncio loop running in a thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float) -> None:
        """Run ``coroutine`` on the loop and wait for it, at most ``timeout`` seconds."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            future.result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            log.warning("Wyoming satellites: not all connections closed in %.1f s", timeout)

    def stop(self, timeout: float = 0.3) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
