"""What PulseAudio says our microphone stream records from, and when that changes.

PortAudio reaches PulseAudio (or PipeWire's PulseAudio layer) through ALSA's ``pulse``
plugin, which hides the source: when a USB microphone is unplugged while other sources
exist, PulseAudio quietly moves the stream to the new default source, often the
*monitor* of an output, and PortAudio keeps delivering audio (the speakers, or
zeros) with no error. Only the sound server's own client library sees that, so this
module asks it through ``pulsectl``: which source-output is ours (the ALSA plugin
sets ``application.process.id``), which source it records from, and whether that
source is a monitor.

pulsectl's ``Pulse`` is not thread-safe, and connecting can block on a server that
hangs, so every connection lives in a thread of its own and callers wait on it with
a deadline. A follower is event-driven (a subscription to source-output changes), not
polled: a monitor starts delivering ~0.1 s after the move, and the event arrives
within milliseconds, before any of its audio; a poll every second would let up to a
second of the speakers through and costs a round trip forever.

Without pulsectl, libpulse or a reachable server, nothing here is available and the
microphone works as before: every function answers None.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .audio import AudioError

log = logging.getLogger(__name__)

PA_INVALID_INDEX = 0xFFFFFFFF  # monitor_of_sink of a source that monitors nothing
LOCATE_SECONDS = 2.0  # the ALSA plugin connects its stream before start() returns
T = TypeVar("T")


class MonitorOnlyError(AudioError):
    """PulseAudio offers only the monitor of an output: waited out like a missing device."""


class PulseUnavailableError(Exception):
    """No pulsectl, no libpulse, or no server answering: nothing to follow."""


@dataclass(frozen=True)
class PulseInput:
    """A PulseAudio source as our stream sees it."""

    index: int
    name: str
    description: str
    monitor: bool  # the monitor of an output: it hears the speakers, never a voice

    @property
    def label(self) -> str:
        """What people recognise: the description the desktop's sound settings show."""
        return self.description or self.name


def is_monitor(name: str, monitor_of_sink: int) -> bool:
    """PulseAudio marks monitors by the sink they monitor; PipeWire by the name too."""
    return monitor_of_sink != PA_INVALID_INDEX or name.endswith(".monitor")


def mic_name(label: str, where: PulseInput | None) -> str:
    """``mic:#0 pulse (Built-in Microphone)``: the PortAudio device, and the source behind it."""
    return f"mic:{label} ({where.label})" if where is not None else f"mic:{label}"


def monitor_message(lost: str | None, monitor: PulseInput) -> str:
    """Why we do not listen: the same text whether we noticed the move or reopened."""
    offered = (
        f"PulseAudio offered only {monitor.label!r}, the monitor of an output "
        "(it would hear the speakers); waiting for a microphone"
    )
    return f"the microphone {lost!r} is gone and {offered}" if lost else offered


def move_message(before: PulseInput, after: PulseInput) -> str:
    return f"PulseAudio moved the input from {before.label!r} to {after.label!r}"


def ours(outputs: list[Any], pid: int) -> Any | None:
    """Our stream among the source-outputs: the newest one this process opened.

    PortAudio's device probing opens short-lived streams too; the newest is the one
    that is still open after ``start()``.
    """
    mine = [o for o in outputs if o.proplist.get("application.process.id") == str(pid)]
    return max(mine, key=lambda o: int(o.index)) if mine else None


def _pulsectl() -> Any:
    try:
        return importlib.import_module("pulsectl")
    except (ImportError, OSError) as exc:  # OSError: libpulse0 missing
        raise PulseUnavailableError(f"pulsectl cannot be used: {exc}") from exc


def _connect(role: str) -> Any:
    """A connection that never autospawns a server (PULSE_SERVER is honoured by libpulse).

    No timeout here: pulsectl's timed connect always waits the whole timeout. The
    caller waits on this thread with a deadline instead.
    """
    pulsectl = _pulsectl()
    pulse = pulsectl.Pulse(f"speech2image {role}", connect=False)
    try:
        pulse.connect(autospawn=False)
    except pulsectl.PulseError as exc:
        pulse.close()
        raise PulseUnavailableError(f"no PulseAudio server answers ({exc})") from exc
    return pulse


def _input(source: Any) -> PulseInput:
    return PulseInput(
        index=int(source.index),
        name=str(source.name),
        description=str(source.description or ""),
        monitor=is_monitor(str(source.name), int(source.monitor_of_sink)),
    )


def ask(question: Callable[[Any], T], timeout: float) -> T | None:
    """``question(pulse)`` on a fresh connection in its own thread; None if it fails or is late."""
    answer: list[T] = []

    def run() -> None:
        try:
            pulse = _connect("probe")
        except PulseUnavailableError as exc:
            log.debug("%s", exc)
            return
        try:
            answer.append(question(pulse))
        except Exception:  # best effort: the caller does without
            log.debug("asking PulseAudio failed", exc_info=True)
        finally:
            pulse.close()

    thread = threading.Thread(target=run, name="pulse-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else None


def default_input(timeout: float = 1.0) -> PulseInput | None:
    """PulseAudio's default source (what ALSA's ``pulse``/``default`` record from)."""
    return ask(lambda pulse: _input(pulse.source_default_get()), timeout)


class PulseWatch:
    """Follows this process's recording stream in PulseAudio, from a thread of its own.

    Start one right after the PortAudio stream started. :meth:`located` says where the
    stream records (None: no PulseAudio, or the stream is not found there); afterwards
    :meth:`where` says where it records *now*: a move clears "settled" the moment its
    event arrives, so a reader that asks before using a block never uses audio whose
    source is not known yet.
    """

    def __init__(self, pid: int | None = None) -> None:
        self._pid = os.getpid() if pid is None else pid
        self._where: PulseInput | None = None
        self._index: int | None = None  # our source-output
        self._dirty = False
        self._located = threading.Event()
        self._settled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pulse: Any = None
        self.unavailable = ""  # why nothing can be followed, once that is known
        self._thread = threading.Thread(target=self._run, name="pulse-watch", daemon=True)
        self._thread.start()

    def located(self, timeout: float = LOCATE_SECONDS + 1.0) -> PulseInput | None:
        self._located.wait(timeout)
        return self._where

    def where(self, timeout: float) -> tuple[bool, PulseInput | None]:
        """(settled, source): not settled means a move is being looked up right now."""
        settled = self._settled.wait(timeout)
        return settled, self._where

    def stop(self, wait: float = 2.0) -> None:
        """Ends the thread; a server that hangs may keep it (a daemon thread) a while."""
        self._stop.set()
        with self._lock:
            if self._pulse is not None:
                self._pulse.event_listen_stop()
        self._thread.join(timeout=wait)

    def _run(self) -> None:
        try:
            pulse = _connect("watch")
        except PulseUnavailableError as exc:
            self.unavailable = str(exc)
            self._located.set()
            self._settled.set()
            return
        with self._lock:
            self._pulse = pulse
        try:
            self._follow(pulse)
        except Exception as exc:  # the server went away, or any libpulse failure
            log.debug("stopped following the input stream in PulseAudio: %r", exc)
        finally:
            with self._lock:
                self._pulse = None
            pulse.close()
            self._located.set()
            self._settled.set()

    def _follow(self, pulse: Any) -> None:
        pulse.event_mask_set("source_output")  # before locating: no move is missed
        pulse.event_callback_set(self._on_event)
        stream = self._locate(pulse)
        if stream is None:
            self.unavailable = f"no recording stream of process {self._pid} in PulseAudio"
            return
        self._index, self._dirty = int(stream.index), True
        while not self._stop.is_set():
            while self._dirty:  # events run in this thread, inside the lookup's requests
                self._dirty = False
                self._where = self._lookup(pulse)
            self._located.set()
            self._settled.set()
            pulse.event_listen(timeout=0.5)

    def _locate(self, pulse: Any) -> Any | None:
        deadline = time.monotonic() + LOCATE_SECONDS
        while not self._stop.is_set():
            stream = ours(pulse.source_output_list(), self._pid)
            if stream is not None or time.monotonic() > deadline:
                return stream
            time.sleep(0.05)
        return None

    def _lookup(self, pulse: Any) -> PulseInput | None:
        """Where our stream records now; None when PulseAudio removed it."""
        pulsectl = _pulsectl()
        try:
            stream = pulse.source_output_info(self._index)
        except pulsectl.PulseIndexError:
            return None
        return _input(pulse.source_info(stream.source))

    def _on_event(self, event: Any) -> None:
        """Runs inside pulsectl's loop, where no request may be made: mark and return."""
        if self._index is None or int(event.index) == self._index:
            self._dirty = True
            self._settled.clear()
            raise _pulsectl().PulseLoopStop


class Tracker:
    """Where our stream records from, across reopens, and what that means for listening.

    The rules: never a monitor (:class:`MonitorOnlyError`, with the lost microphone
    named); a move to another microphone is reported; no block is used before a move
    has been looked up.
    """

    def __init__(self) -> None:
        self.input: PulseInput | None = None  # None: unknown (no PulseAudio to ask)
        self.last_mic: str | None = None  # the last real source, named when it is gone
        self.on_monitor = False  # the last stream landed on a monitor
        self._watch: PulseWatch | None = None
        self._noted = False

    def refuse_default_monitor(self) -> None:
        """After a monitor, before reopening: do not open it again just to close it."""
        if self.on_monitor:
            self._refuse(default_input())

    def follow(self) -> None:
        """Right after a stream started; on MonitorOnlyError the caller closes it unread."""
        self.stop()
        watch = PulseWatch()
        where = watch.located()
        self.input = None
        if where is None:
            watch.stop(wait=0.5)
            if not self._noted:  # once: it does not change while we run
                why = watch.unavailable or "the stream is not found there"
                log.info("not following the input in PulseAudio: %s", why)
                self._noted = True
            return
        self._watch = watch
        self._refuse(where)
        self.on_monitor = False
        self.input, self.last_mic = where, where.label

    def check(self) -> Literal["use", "hold", "moved"]:
        """Before a block is used: "hold" drops it while a move is being looked up.

        Raises MonitorOnlyError when the stream was moved to a monitor.
        """
        watch, before = self._watch, self.input
        if watch is None or before is None:
            return "use"  # no PulseAudio to ask: what PortAudio delivers is the device
        settled, now = watch.where(timeout=1.0)
        if not settled:
            return "hold"
        if now is None or now.index == before.index:
            return "use"  # None: the stream is gone in PulseAudio; PortAudio will fail
        if now.monitor:
            self.on_monitor = True
            raise MonitorOnlyError(monitor_message(before.label, now))
        log.warning("%s", move_message(before, now))
        self.input, self.last_mic = now, now.label
        return "moved"

    def _refuse(self, where: PulseInput | None) -> None:
        if where is not None and where.monitor:
            self.stop()
            self.on_monitor = True
            raise MonitorOnlyError(monitor_message(self.last_mic, where))

    def stop(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
