"""One thread fed by one bounded queue: how stages run beside the listening loop.

A full queue never blocks a microphone: ``submit(wait=False)`` says no at once and
the caller reports "busy". A file can wait, so file input submits with
``wait=True`` and every utterance in it is processed; a stop ends that wait too.
A handler that raises never kills the thread: ``on_error`` hears about it, so the
request it was working on still ends (as ``rejected: error``).
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_SECONDS = 0.1  # how often a waiting submit looks for a stop


class Worker(Generic[T]):
    def __init__(
        self,
        name: str,
        handle: Callable[[T], object],
        depth: int,
        on_error: Callable[[T, Exception], None],
    ) -> None:
        self.name = name
        self._handle = handle
        self._on_error = on_error
        self._queue: queue.Queue[T] = queue.Queue(maxsize=depth)
        self._cancelled = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: T, wait: bool) -> bool:
        """Queue ``item``; False when the queue is full and ``wait`` is False, or on cancel."""
        if not wait:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                return False
            return True
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
            except queue.Full:
                continue
            return not self._cancelled.is_set()  # a cancelled worker handles nothing new
        return False

    def close(self) -> None:
        """No more items are coming: end once the queued ones are done."""
        self._closing.set()

    def cancel(self) -> None:
        """Stop taking items and drop the queued ones; the item in hand runs on.

        Safe from a signal handler: it only sets flags and empties the queue.
        """
        self._cancelled.set()
        self._closing.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread to end; False when it is still busy after ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._cancelled.is_set():
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if self._cancelled.is_set():
                return
            try:
                self._handle(item)
            except Exception as exc:  # the request still ends; the thread lives on
                _log_unhandled(f"{self.name} worker: unhandled", exc)
                try:
                    self._on_error(item, exc)
                except Exception as again:
                    _log_unhandled(f"{self.name} worker: reporting the error failed:", again)


def _log_unhandled(what: str, exc: BaseException) -> None:
    """The type and the stack at ERROR; the message only at DEBUG: it may quote the
    prompt or transcript, which are private speech."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s %s\n%s", what, type(exc).__name__, frames.rstrip())
    log.debug("%s", what, exc_info=exc)
