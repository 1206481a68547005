"""What the daemon is doing right now, in one line: for systemd's STATUS=, the D-Bus
``StateChanged`` signal and ``speech2image status``.

The state is derived from the events every request already emits, so it cannot
drift from what the stages really did; the few things that are not events (paused,
stopping, a microphone being waited for) are told to the tracker directly. Prompts
never appear here: STATUS= is shown by ``systemctl status`` to anyone on the machine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from .events import (
    Accepted,
    Error,
    Event,
    ImageWritten,
    Listening,
    Progress,
    Utterance,
    Wake,
    is_terminal,
)

log = logging.getLogger(__name__)

# The states, most important first: a paused daemon is "paused" even while it still
# finishes a picture, and a drawing outranks a capture (it is what takes long).
STATES = (
    "stopping",
    "starting",
    "paused",
    "waiting for microphone",
    "drawing",
    "transcribing",
    "capturing",
    "listening",
)


@dataclass(frozen=True)
class Snapshot:
    """Everything the one-line state is computed from."""

    starting: bool = True
    stopping: bool = False
    paused: bool = False
    waiting_for: str | None = None  # the microphone being waited for
    microphone: str = ""
    capturing: frozenset[str] = frozenset()
    transcribing: frozenset[str] = frozenset()
    queued: frozenset[str] = frozenset()  # accepted, not drawing yet
    drawing: tuple[str, int, int] | None = None  # id, step, steps
    last_image: str = ""


def describe(snap: Snapshot) -> tuple[str, str]:
    """(state, detail): the state name and the line systemd shows, e.g. "drawing 3/4".

    The first state in :data:`STATES` order that applies wins."""
    waiting = len(snap.queued) - (0 if snap.drawing else 1)  # the next one is as good as drawn
    queued = f", {waiting} queued" if waiting > 0 else ""
    step = f" {snap.drawing[1]}/{snap.drawing[2]}" if snap.drawing else ""
    rules = (
        (snap.stopping, "stopping", "stopping"),
        (snap.starting, "starting", "loading models"),
        (snap.paused, "paused", "paused (microphone closed)"),
        (
            snap.waiting_for is not None,
            "waiting for microphone",
            f"waiting for microphone {snap.waiting_for}",
        ),
        (bool(snap.drawing or snap.queued), "drawing", f"drawing{step}{queued}"),
        (bool(snap.transcribing), "transcribing", "transcribing"),
        (bool(snap.capturing), "capturing", "listening to a request"),
    )
    for applies, state, detail in rules:
        if applies:
            return state, detail
    return "listening", "listening"


def advance(snap: Snapshot, event: Event) -> Snapshot:
    """The snapshot after ``event``: pure, so every transition is easy to test."""
    if isinstance(event, Listening):
        return replace(snap, waiting_for=None, microphone=event.source)
    rid = event.id
    if rid is None:
        return snap
    if is_terminal(event):
        return _ended(snap, rid, event)
    step = _STEPS.get(type(event))
    return snap if step is None else step(snap, rid, event)


def _woke(snap: Snapshot, rid: str, _event: Event) -> Snapshot:
    return replace(snap, capturing=snap.capturing | {rid})


def _captured(snap: Snapshot, rid: str, _event: Event) -> Snapshot:
    return replace(snap, capturing=snap.capturing - {rid}, transcribing=snap.transcribing | {rid})


def _accepted(snap: Snapshot, rid: str, _event: Event) -> Snapshot:
    return replace(snap, transcribing=snap.transcribing - {rid}, queued=snap.queued | {rid})


def _drawing(snap: Snapshot, rid: str, event: Event) -> Snapshot:
    assert isinstance(event, Progress)
    return replace(snap, queued=snap.queued - {rid}, drawing=(rid, event.step, event.steps))


_STEPS: dict[type[Event], Callable[[Snapshot, str, Event], Snapshot]] = {
    Wake: _woke,
    Utterance: _captured,
    Accepted: _accepted,
    Progress: _drawing,
}


def _ended(snap: Snapshot, rid: str, event: Event) -> Snapshot:
    drawing = None if snap.drawing and snap.drawing[0] == rid else snap.drawing
    return replace(
        snap,
        capturing=snap.capturing - {rid},
        transcribing=snap.transcribing - {rid},
        queued=snap.queued - {rid},
        drawing=drawing,
        last_image=event.path if isinstance(event, ImageWritten) else snap.last_image,
    )


Listener = Callable[[str, str], None]


class LiveState:
    """An event sink that keeps the snapshot and tells listeners when the line changes.

    Listeners (sd_notify's STATUS=, the D-Bus signal) are called outside the lock, in
    the thread that caused the change; they must be quick and must not raise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self._shown = describe(self._snap)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    @property
    def current(self) -> tuple[str, str]:
        return self._shown

    def status(self, source: str) -> dict[str, str | int | float | bool]:
        """What ``speech2image status`` and the D-Bus ``Status()`` show."""
        snap = self._snap
        state, detail = self._shown
        return {
            "state": state,
            "detail": detail,
            "paused": snap.paused,
            "queue": len(snap.queued) + len(snap.transcribing),
            "last_image": snap.last_image,
            "microphone": snap.microphone or source,
        }

    def emit(self, event: Event) -> None:
        if isinstance(event, Error) and event.stage == "audio":
            return  # a waiting microphone is told directly (waiting()), with its name
        self._update(lambda snap: advance(snap, event))

    def started(self) -> None:
        self._update(lambda snap: replace(snap, starting=False))

    def stopping(self) -> None:
        self._update(lambda snap: replace(snap, stopping=True))

    def paused(self, paused: bool) -> None:
        self._update(lambda snap: replace(snap, paused=paused))

    def waiting(self, device: str | None) -> None:
        """The microphone is gone (``device`` names it), or back (None)."""
        self._update(lambda snap: replace(snap, waiting_for=device))

    def _update(self, change: Callable[[Snapshot], Snapshot]) -> None:
        with self._lock:
            self._snap = change(self._snap)
            shown = describe(self._snap)
            if shown == self._shown:
                return
            self._shown = shown
        for listener in self._listeners:
            try:
                listener(*shown)
            except Exception:  # a status display must never break a request
                log.exception("reporting the state %r failed", shown[0])
