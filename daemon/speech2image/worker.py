"""One thread fed by a bounded queue per source, served in turn: how stages run beside
the listening loop, and why one room cannot starve the others.

Requests come from many sources (the microphone, the web page, each Wyoming
satellite or client) and share one speech and one image worker. Each source waits in
its own line; the worker takes one item from each line in turn (round robin, in the
order the sources first queued; first in, first out within a source), so a room that
keeps talking delays another room's request by at most one of its own per turn.

A full worker never blocks a microphone: ``submit(wait=False)`` says no at once and
the caller reports "busy". A file can wait, so file input submits with ``wait=True``
and every utterance in it is processed; a stop ends that wait too. A handler that
raises never kills the thread: ``on_error`` hears about it, so the request it was
working on still ends (as ``rejected: error``).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_SECONDS = 0.1  # how often a waiting submit, and an idle worker, look for a stop


def admits(depth: int, waiting: int, mine: int) -> bool:
    """May a source with ``mine`` items waiting queue one more, while ``waiting`` items
    (all sources together) wait for a worker with ``depth`` places?

    Never past ``depth``: memory stays bounded and a full worker answers "busy". And
    the last free place is kept for a source with nothing waiting: a chatty room may
    fill every place but the last, so a room that has nothing queued still gets its
    request in (to be served in turn) instead of hearing "busy" for as long as the
    other room keeps talking. Evicting accepted work to make room would be worse: an
    accepted request is a promise. With a single place there is nothing to keep
    back, so whoever comes first takes it; a lone source can therefore queue
    ``max(1, depth - 1)`` items.
    """
    free = depth - waiting
    if free <= 0:
        return False
    return mine == 0 or free > 1


def _one_source(_item: object) -> str:
    """Every item from the same source: one line, plain first in, first out."""
    return ""


class Worker(Generic[T]):
    def __init__(
        self,
        name: str,
        handle: Callable[[T], object],
        depth: int,
        on_error: Callable[[T, Exception], None],
        source_of: Callable[[T], str] = _one_source,
    ) -> None:
        self.name = name
        self._handle = handle
        self._on_error = on_error
        self._source_of = source_of
        self._depth = depth
        # One plain (not re-entrant) lock: cancel() from a signal handler that
        # interrupted its holder fails to take it rather than corrupting the lines.
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._lines: dict[str, deque[T]] = {}  # only sources with items waiting
        self._turns: deque[str] = deque()  # those sources, next to be served first
        self._waiting = 0
        self._cancelled = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Items queued, all sources together (not the one in hand)."""
        return self._waiting

    def submit(self, item: T, wait: bool) -> bool:
        """Queue ``item`` in its source's line; False when there is no place for it
        (see :func:`admits`) and ``wait`` is False, or on cancel."""
        source = self._source_of(item)  # the caller's code: never under the lock
        with self._lock:
            while not self._cancelled.is_set():
                if admits(self._depth, self._waiting, len(self._lines.get(source, ()))):
                    self._append(source, item)
                    # A signal handler may have cancelled meanwhile: nothing new runs.
                    return not self._cancelled.is_set()
                if not wait:
                    log.debug(
                        "%s worker: no place for %r (%d waiting)", self.name, source, self._waiting
                    )
                    return False
                self._has_room.wait(POLL_SECONDS)
        return False

    def close(self) -> None:
        """No more items are coming: end once the queued ones are done."""
        self._closing.set()
        if self._lock.acquire(blocking=False):
            try:
                self._has_items.notify_all()
            finally:
                self._lock.release()

    def cancel(self) -> None:
        """Stop taking items and drop the queued ones; the item in hand runs on.

        Safe from a signal handler: it sets flags and only tries the lock. When the
        lock is held (perhaps by the very code the signal interrupted), the lines
        are left to the worker thread, which drops them as it ends, and the waiting
        submits see the flag within ``POLL_SECONDS``.
        """
        self._cancelled.set()
        self._closing.set()
        if self._lock.acquire(blocking=False):
            try:
                self._drop_all()
            finally:
                self._lock.release()

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread to end; False when it is still busy after ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------- under the lock
    def _append(self, source: str, item: T) -> None:
        line = self._lines.get(source)
        if line is None:  # a source with nothing waiting joins at the back
            line = self._lines[source] = deque()
            self._turns.append(source)
        line.append(item)
        self._waiting += 1
        self._has_items.notify()

    def _pop_in_turn(self) -> T:
        """The oldest item of the source whose turn it is; that source, if it still
        has items, goes to the back of the turns."""
        source = self._turns.popleft()
        line = self._lines[source]
        item = line.popleft()
        if line:
            self._turns.append(source)
        else:
            del self._lines[source]  # memory stays bounded by depth, not by sources seen
        self._waiting -= 1
        self._has_room.notify_all()  # submits wait for different rules: wake them all
        return item

    def _drop_all(self) -> None:
        self._lines.clear()
        self._turns.clear()
        self._waiting = 0
        self._has_items.notify_all()
        self._has_room.notify_all()

    # ------------------------------------------------------- the worker thread
    def _next(self) -> tuple[T] | None:
        """The next item in turn (in a 1-tuple: an item may itself be None); None
        when the worker should end: cancelled, or closed with nothing left."""
        with self._lock:
            while not self._cancelled.is_set():
                if self._turns:
                    return (self._pop_in_turn(),)
                if self._closing.is_set():
                    return None
                self._has_items.wait(POLL_SECONDS)
            self._drop_all()  # cancel() may have found the lock taken
            return None

    def _run(self) -> None:
        while (taken := self._next()) is not None:
            if self._cancelled.is_set():
                break  # cancelled as it was taken: it runs no more than the rest
            item = taken[0]
            try:
                self._handle(item)
            except Exception as exc:  # the request still ends; the thread lives on
                _log_unhandled(f"{self.name} worker: unhandled", exc)
                try:
                    self._on_error(item, exc)
                except Exception as again:
                    _log_unhandled(f"{self.name} worker: reporting the error failed:", again)
        if self._cancelled.is_set():
            with self._lock:
                self._drop_all()


def _log_unhandled(what: str, exc: BaseException) -> None:
    """The type and the stack at ERROR; the message only at DEBUG: it may quote the
    prompt or transcript, which are private speech."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s %s\n%s", what, type(exc).__name__, frames.rstrip())
    log.debug("%s", what, exc_info=exc)
