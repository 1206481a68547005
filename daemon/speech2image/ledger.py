"""Every request ends in exactly one terminal event: enforced here, and only here.

The :class:`Ledger` sits between the stages and the event sink. A request is opened
when it starts (a wake word, a typed prompt) and closed by its first terminal event,
``image`` or ``rejected``. A second terminal event for the same id is a bug: it is
logged and dropped, so a client never sees a request end twice. What cannot end
itself is ended here: a handler that raises ends as ``rejected: error``
(:meth:`Ledger.fail`), and what is still open when the daemon stops ends as
``rejected: shutdown`` (:meth:`Ledger.abandon_open`), before ``stopped``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable

from .events import Error, Event, EventSink, Rejected, is_terminal
from .gallery.metadata import slugify
from .request import Request

log = logging.getLogger(__name__)

REMEMBERED_CLOSED = 1024  # ended ids kept to tell "ended twice" from "never opened"


class Ledger:
    """An :class:`EventSink` that keeps the one-terminal-event contract."""

    def __init__(self, sink: EventSink, clock: Callable[[], float]) -> None:
        self._sink = sink
        self._clock = clock
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._open: dict[str, Request] = {}
        self._finishing: set[str] = set()  # claimed by a stage about to end them
        self._closed: OrderedDict[str, str] = OrderedDict()  # id -> how it ended

    def open(self, request: Request) -> None:
        with self._lock:
            if request.id in self._open or request.id in self._closed:
                raise ValueError(f"request id {request.id} is already in use")
            self._open[request.id] = request

    def record(self, request: Request) -> None:
        """Keep the newest record of an open request (what ``abandon_open`` reports on)."""
        with self._lock:
            if request.id in self._open:
                self._open[request.id] = request

    def get(self, request_id: str) -> Request | None:
        with self._lock:
            return self._open.get(request_id)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._open)

    def claim(self, request_id: str) -> bool:
        """Reserve an open request for the stage about to end it (say, by writing its
        picture): ``abandon_open`` then waits for that stage instead of ending the
        request under it. False when the request has already ended."""
        with self._lock:
            if request_id not in self._open:
                return False
            self._finishing.add(request_id)
            return True

    def release(self, request_id: str) -> None:
        """The claimed stage is done, whether or not it ended the request."""
        with self._lock:
            self._finishing.discard(request_id)
            self._ended.notify_all()

    def emit(self, event: Event) -> None:
        if is_terminal(event) and not self._close(event):
            return
        self._sink.emit(event)

    def _close(self, event: Event) -> bool:
        """True when ``event`` may end its request (it is the first terminal one)."""
        request_id = event.id or ""
        with self._lock:
            if request_id in self._open:
                del self._open[request_id]
                self._finishing.discard(request_id)
                self._ended.notify_all()
                self._closed[request_id] = event.type
                while len(self._closed) > REMEMBERED_CLOSED:
                    self._closed.popitem(last=False)
                return True
            earlier = self._closed.get(request_id)
        if earlier is None:
            log.error("a %s event for request %r, which was never opened", event.type, event.id)
        else:
            log.error(
                "request %s already ended with %s; a second %s event was dropped",
                request_id,
                earlier,
                event.type,
            )
        return False

    def fail(self, request_id: str, stage: str, message: str) -> None:
        """End an open request as ``rejected: error`` (after an ``error`` event saying why).

        The events carry ``message`` as it is; the log only without the request's
        prompt, transcript and gallery file name (see :func:`without_private`).
        """
        request = self.get(request_id)
        if request is None:
            # No record to take the private words out with: the message at DEBUG only.
            log.error("%s failed after request %s had ended", stage, request_id)
            log.debug("%s failed after request %s had ended: %s", stage, request_id, message)
            return
        shown = without_private(message, request)
        log.error("%s failed (request %s): %s", stage, request_id, shown)
        if shown != message:
            log.debug("%s failed (request %s), unredacted: %s", stage, request_id, message)
        now = self._clock()
        self.emit(Error(id=request_id, t=now, stage=stage, message=message))
        self.emit(Rejected(id=request_id, t=now, reason="error", detail=f"{stage}: {message}"))

    def abandon_open(self, detail: str, wait: float = 1.0) -> int:
        """End every open request as ``rejected: shutdown``; how many there were.

        A request a stage has claimed gets up to ``wait`` seconds to be ended by it
        (a picture being written is kept, not left on disk without its event).
        """
        with self._lock:
            self._ended.wait_for(lambda: not self._finishing, timeout=wait)
        ids = self.pending()
        for request_id in ids:
            self.emit(Rejected(id=request_id, t=self._clock(), reason="shutdown", detail=detail))
        if ids:
            log.info("%d unfinished request(s) ended by the shutdown", len(ids))
        return len(ids)


HIDDEN = "<private>"
MIN_PRIVATE = 3


def without_private(message: str, request: Request) -> str:
    """``message`` with the request's prompt, transcript and prompt slug (what its
    gallery file name holds) replaced by ``<private>``, ignoring case.

    Error messages often repeat their input (``KeyError('a red fox')``, a path),
    and logs at INFO and above must never hold what was said.
    """
    said = [request.prompt, request.transcript.text if request.transcript else ""]
    private = {text.strip() for text in said if text.strip()}
    private |= {slugify(text) for text in private} - {"image"}  # "image": no words
    for text in sorted(private, key=len, reverse=True):
        if len(text) >= MIN_PRIVATE:  # "a" is not worth blanking every "a" for
            whole = rf"(?<![^\W_]){re.escape(text)}(?![^\W_])"  # not inside a word
            message = re.sub(whole, HIDDEN, message, flags=re.IGNORECASE)
    return message
