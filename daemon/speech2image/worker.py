"""One thread fed by one bounded queue: how stages run beside the listening loop.

A full queue never blocks a microphone: ``submit(wait=False)`` says no at once and
the caller reports "busy". A file can wait, so file input submits with
``wait=True`` and every utterance in it is processed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()


class Worker(Generic[T]):
    def __init__(self, name: str, handle: Callable[[T], object], depth: int) -> None:
        self.name = name
        self._handle = handle
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: T, wait: bool) -> bool:
        """Queue ``item``; False when the queue is full and ``wait`` is False."""
        try:
            self._queue.put(item, block=wait)
        except queue.Full:
            return False
        return True

    def close(self, drain: bool, timeout: float | None = None) -> bool:
        """Stop after the queued items (``drain``) or after the one in hand.

        False when the item in hand did not finish within ``timeout``: the thread is
        still inside it, and the process must leave without waiting for it.
        """
        if not drain:
            self._abandon.set()
            self._discard_queued()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s worker still busy after %.0f s; abandoning it", self.name, timeout)
            return False
        return True

    def _discard_queued(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._abandon.is_set():
                continue
            try:
                self._handle(item)  # type: ignore[arg-type]
            except Exception:  # the handler reports its own errors; this keeps the thread
                log.exception("%s worker: unhandled error", self.name)
