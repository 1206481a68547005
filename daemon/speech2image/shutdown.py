"""Stopping on SIGTERM or SIGINT: exit 0 within 10 s in total, whatever is in flight.

One :class:`Deadline` starts at the first signal and every part of the stop shares
it (the speech worker, the image worker, the notifier, a file read waiting on a
full queue), instead of each taking a grace of its own. The handlers are installed
before any model loads: while models load, a signal raises :class:`StopRequested`
in the main thread, which the CLI turns into a clean exit; once the daemon runs,
a signal only asks it to stop. A backstop thread ends the process at the deadline
if anything is stuck in native code (the gallery is atomic, so nothing is left
half-written), and Ctrl-C never prints a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0  # the promise: systemd's stop timeout is a little above it
BACKSTOP_MARGIN = 0.5  # the backstop exits this long before the promise runs out
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):  # like KeyboardInterrupt, not an error
    """A stop signal arrived while the main thread was busy (loading, generating)."""


class Deadline:
    """A point in time that several waits share."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.end = clock() + seconds

    def left(self, reserve: float = 0.0) -> float:
        """Seconds until the deadline, keeping ``reserve`` for what comes after."""
        return max(0.0, self.end - reserve - self._clock())


class Shutdown:
    """Turns SIGTERM/SIGINT into one stop request with one deadline."""

    def __init__(self, seconds: float = STOP_SECONDS) -> None:
        self.seconds = seconds
        self.deadline: Deadline | None = None
        self.signal_name = ""
        self._requested = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._raising = True  # until the daemon's own loop takes over
        self._backstop = False  # only a process that handles signals may exit on its own

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def install(self, backstop: bool = True) -> None:
        """Handle SIGTERM and SIGINT from now on (main thread only; a no-op elsewhere).

        ``backstop``: exit the process at the deadline if it has not stopped by then;
        only for the process that is the daemon, never inside a test runner.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._backstop = backstop
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def request(self, why: str = "a stop request") -> None:
        """Stop as a signal would (tests, the control interface): start the deadline."""
        if not self.requested:
            self.signal_name = why
            self.deadline = Deadline(self.seconds)
            if self._backstop:
                self._start_backstop(self.deadline)
        self._requested.set()
        for callback in list(self._callbacks):
            callback()

    def on_request(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the signal handler: keep it quick) when a stop is asked."""
        self._callbacks.append(callback)
        if self.requested:
            callback()

    def left(self, reserve: float = 0.0) -> float | None:
        """Seconds left for stopping, or None while no stop was asked (wait as long as needed)."""
        return None if self.deadline is None else self.deadline.left(reserve)

    @contextmanager
    def signals_only_ask(self) -> Iterator[None]:
        """While the daemon runs its own loop, a signal asks it to stop instead of raising."""
        self._raising = False
        try:
            yield
        finally:
            self._raising = True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.info("received %s again; already stopping", name)
            return
        log.info("received %s, stopping", name)
        self.request(name)
        if self._raising:
            raise StopRequested(name)

    def _start_backstop(self, deadline: Deadline) -> None:
        def backstop() -> None:
            time.sleep(deadline.left(BACKSTOP_MARGIN))
            log.warning("still not stopped after %.1f s; exiting now", self.seconds)
            exit_now(0)

        threading.Thread(target=backstop, name="stop-backstop", daemon=True).start()


def exit_now(code: int) -> None:
    """Leave at once, with logs and output flushed.

    Used when a worker thread is still inside torch or CTranslate2: normal
    interpreter shutdown would tear modules down under it and abort. The gallery is
    atomic, so nothing written so far is partial.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
