"""Live updates for every open page: one hub, fed from any thread, read by each
``GET /api/events`` stream.

The watchdog observer, the daemon's workers and its live state all run in their own
threads; the web server runs an asyncio loop. :meth:`EventHub.publish` hands each
event to the loop with ``call_soon_threadsafe`` and the loop copies it into every
subscriber's bounded queue. A page too slow to keep up (a phone asleep with the tab
open) is dropped rather than allowed to grow memory: its ``EventSource`` reconnects
and the page reloads the list, which is what a missed event would need anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..events import Event, ImageWritten

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 512
KEEPALIVE_S = 15.0  # a comment line, so proxies and the browser keep the stream open
_OVERFLOWED: tuple[str, dict[str, Any]] = ("", {})  # the marker that ends a subscriber's stream


class EventHub:
    """Fan-out of named events (``added``, ``state``, ``daemon``, ...) to async streams."""

    def __init__(self, queue_size: int = SUBSCRIBER_QUEUE) -> None:
        self._queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's loop, once it runs (until then events have no reader)."""
        with self._lock:
            self._loop = loop

    def unbind(self) -> None:
        with self._lock:
            self._loop = None

    def publish(self, name: str, data: dict[str, Any]) -> None:
        """From any thread; returns at once."""
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, name, data)
        except RuntimeError:  # the loop closed between the check and the call
            return

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _deliver(self, name: str, data: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait((name, data))
            except asyncio.QueueFull:
                log.warning("a page fell %d events behind; its stream is restarted", queue.qsize())
                self._subscribers.discard(queue)
                _drop_oldest_then_put(queue, _OVERFLOWED)

    async def stream(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events from now on, until the subscriber falls behind or the caller stops."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is _OVERFLOWED:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)


def _drop_oldest_then_put(queue: asyncio.Queue[Any], item: Any) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(item)


def sse_message(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event: ``event:`` and one ``data:`` line of compact JSON."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {text}\n\n".encode()


async def sse_stream(
    hub: EventHub, hello: dict[str, Any], keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[bytes]:
    """The bytes of one ``/api/events`` response: ``hello`` (the state now), then events."""
    yield b"retry: 2000\n\n" + sse_message("state", hello)
    events = hub.stream().__aiter__()
    pending: asyncio.Task[tuple[str, dict[str, Any]]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=keepalive_s)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                name, data = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield sse_message(name, data)
    finally:
        if pending is not None and not pending.done():
            # The hub's stream is inside an await (aclose would raise "already
            # running"); the cancellation runs its finally, which unsubscribes.
            pending.cancel()
        else:
            await events.aclose()  # type: ignore[attr-defined]


class DaemonEvents:
    """The daemon's events as the page sees them (an ``EventSink``).

    Audio never goes to the page; an image names its gallery id (so the page can open
    it) when it lies in the served gallery.
    """

    def __init__(self, hub: EventHub, root: Path) -> None:
        self._hub = hub
        self._root = root

    def emit(self, event: Event) -> None:
        data = event.to_dict()  # never the audio: Utterance leaves it out of JSON
        data["event"] = event.type  # the name the page's API documents
        if isinstance(event, ImageWritten):
            data["image_id"] = gallery_id(self._root, Path(event.path))
        self._hub.publish("daemon", data)

    def state(self, state: str, detail: str) -> None:
        """A :class:`LiveState` listener: the one-line state, as ``state`` events."""
        self._hub.publish("state", {"state": state, "detail": detail})


def gallery_id(root: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


StateSource = Callable[[], tuple[str, str]]
