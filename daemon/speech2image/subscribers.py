"""Subscribers: callbacks told of each change, from whichever thread publishes it.

The gallery index tells the page of every file change from the observer's thread;
the daemon's events reach Wyoming clients from its workers. Either way one
subscriber's bug must not reach the publisher, nor stop the others hearing of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Subscribers(Generic[T]):
    """A thread-safe list of callbacks; ``what`` names them in the log."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._callbacks: list[Callable[[T], None]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._callbacks)

    def subscribe(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Call ``callback`` with everything published from now on; the returned
        function unsubscribes (twice is harmless)."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def publish(self, value: T) -> None:
        """Call every subscriber, outside the lock (a subscriber may unsubscribe); one
        that raises is logged and skipped."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(value)
            except Exception:
                log.exception("a %s subscriber failed", self._what)
