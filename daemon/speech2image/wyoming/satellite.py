"""Driving wyoming-satellites without Home Assistant: the daemon as their controller.

A wyoming-satellite runs a server and waits for one controlling client; Home
Assistant is the usual one. For ``[wyoming] satellites = [...]`` the daemon plays
that part, the way Home Assistant's ``wyoming`` integration does: connect,
``describe``, ``run-satellite``, ping where the satellite answers pings, and connect
again with backoff whenever the connection ends. The satellite then streams its
microphone and the daemon runs the whole pipeline for it: our wake word for a
satellite that always streams, or the satellite's own (a ``detection`` or a
``run-pipeline`` that starts at speech-to-text); our end-pointer in both cases,
since satellites never say where speech ends. ``transcript`` and ``error`` go
back, so the satellite re-arms.

All satellites share one asyncio loop (in :class:`Satellites`); each has a thread
for its listener (``satellite_listen``) and asks the daemon through the blocking
:class:`Pipeline` in an executor, so nothing slow ever runs on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from functools import partial
from typing import Any

from wyoming.error import Error
from wyoming.wake import Detection

from ..events import Rejected, Utterance, Wake
from ..pcm import Frame
from .pipeline import BusyError, Pipeline
from .satellite_link import Link, LinkHandler, LinkLostError, connect
from .satellite_listen import Command, ListenerThread, LoopThread
from .satellite_peer import (
    MalformedEventError,
    Refused,
    Requests,
    Timing,
    Transcribed,
    error_for,
    next_backoff,
    parse_uri,
)

log = logging.getLogger(__name__)

STOP_WITHIN_S = 1.2  # what stop() gives the connections (pause-satellite, close)
THREADS_WITHIN_S = 0.4  # then the listener threads: each is between two frames at once
WATCHED = frozenset({"transcript", "rejected", "image"})  # the daemon's events a satellite hears of


class SatelliteDriver(LinkHandler):
    """One satellite, connected to and kept connected until :meth:`stop`."""

    def __init__(
        self,
        pipeline: Pipeline,
        uri: str,
        *,
        reconnect_max_s: float = 30.0,
        timing: Timing | None = None,
    ) -> None:
        self.uri = uri
        self._endpoint = parse_uri(uri)  # ValueError now, not at every reconnect
        self._pipeline = pipeline
        self._reconnect_max_s = reconnect_max_s
        self._timing = timing or Timing()
        self._origin = f"satellite {uri}"
        self._own: LoopThread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listen: ListenerThread | None = None
        self._unsubscribe: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, f"satellite {uri}")
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link: Link | None = None
        self._good = False
        self._outage_since: float | None = None
        self.stopping = False
        self._requests = Requests()

    # -- lifecycle (any thread) ------------------------------------------------------

    def start(self) -> None:
        """Connect in the background, on a loop thread of this driver's own."""
        own = LoopThread(f"satellite {self.uri}")
        own.start()
        self._own = own
        self.attach(own)

    def stop(self) -> None:
        """Pause the satellite, close the connection and the threads, within ~2 s."""
        loop_thread = self._own
        if self._loop is None or loop_thread is None:
            return
        loop_thread.run(self.close(), STOP_WITHIN_S)
        self.release()
        self.join(time.monotonic() + THREADS_WITHIN_S)
        loop_thread.stop()
        self._own = None

    def attach(self, loop_thread: LoopThread) -> None:
        """Start on ``loop_thread``: the listener (models load here), then the link."""
        listener = self._pipeline.listener()
        self._listen = ListenerThread(listener, self.uri, self._from_listener)
        self._listen.start()
        self._loop = loop_thread.loop
        self._unsubscribe = self._pipeline.subscribe(self._from_daemon)
        self._loop.call_soon_threadsafe(self._begin)

    def release(self) -> None:
        """After :meth:`close`: let go of the daemon, and tell the listener to stop."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._listen is not None:
            self._listen.request_stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def join(self, deadline: float) -> None:
        """Wait for the listener thread, until ``deadline`` (``time.monotonic()``)."""
        if self._listen is not None:
            self._listen.join(deadline - time.monotonic())

    def _begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """On the loop: end the connection (with ``pause-satellite``) and all tasks.

        ``stopping`` is checked too, not only the cancellation: a library call that
        swallows a cancellation (3.11's ``wait_for`` does) must not keep it running."""
        self.stopping = True
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- connecting and reconnecting -------------------------------------------------

    async def _run(self) -> None:
        delay: float | None = None
        while not self.stopping:
            self._good = False
            try:
                await self._session()
                problem = "closed the connection"
            except LinkLostError as exc:
                problem = str(exc)
            except MalformedEventError as exc:
                problem = f"sent a malformed event ({exc}), so the connection was dropped"
            except (OSError, TimeoutError) as exc:
                problem = f"cannot be reached ({exc or type(exc).__name__})"
            except Exception:
                log.exception("satellite %s: the connection failed", self.uri)
                problem = "failed"
            if self._listen is not None:
                self._listen.command(Command.DROP)  # a capture in flight is lost with it
            if self.stopping:
                return
            delay = next_backoff(
                None if self._good else delay, self._timing.first_backoff_s, self._reconnect_max_s
            )
            self._report_outage(problem, delay)
            await asyncio.sleep(delay)

    def _report_outage(self, problem: str, delay: float) -> None:
        """One WARNING per outage: the first failure says it, the recovery ends it."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "satellite %s: %s; connecting again in %g s, then with backoff up to %g s",
                self.uri,
                problem,
                delay,
                self._reconnect_max_s,
            )
        else:
            log.debug("satellite %s: %s; next try in %.1f s", self.uri, problem, delay)

    def connected_well(self) -> None:
        """The satellite answered after run-satellite: the backoff starts over."""
        if self._good:
            return
        self._good = True
        if self._outage_since is not None:
            log.info(
                "satellite %s: connected again after %.0f s",
                self.uri,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    async def _session(self) -> None:
        reader, writer, peer = await connect(self._endpoint, self._timing)
        link = Link(reader, writer, peer, self, self._timing)
        try:
            if self.stopping:
                return
            await link.start()
            self._link = link
            level = logging.DEBUG if self._outage_since is not None else logging.INFO
            log.log(level, "satellite %s (%s): connected", self.uri, peer.name or "unnamed")
            await link.serve()
        finally:
            self._link = None
            await link.close(pause=self.stopping)

    # -- what the listener heard (its thread -> the loop) ----------------------------

    def _from_listener(self, event: object, wake: tuple[str, float] | None) -> None:
        loop = self._loop
        with contextlib.suppress(RuntimeError):  # the loop has stopped
            if loop is not None:
                loop.call_soon_threadsafe(self._heard, event, wake)

    def _heard(self, event: object, wake: tuple[str, float] | None) -> None:
        link = self._link
        if isinstance(event, Wake):
            if link is not None and not link.local:  # our wake word: tell the satellite
                self._spawn(link.send(Detection(name=event.model).event()))
            return
        if link is not None:
            link.capture_ended()
        if isinstance(event, Utterance):
            self._spawn(self._submit(event.audio, wake))
        elif isinstance(event, Rejected):
            self._spawn(self._refuse(event.reason, transcribed=False))

    async def _submit(self, audio: Frame, wake: tuple[str, float] | None) -> None:
        loop = asyncio.get_running_loop()
        spoken = partial(self._pipeline.spoken, audio, origin=self._origin, wake=wake)
        try:
            request_id = await loop.run_in_executor(self._executor, spoken)
        except BusyError:
            log.info("satellite %s: busy, request refused", self.uri)
            await self._refuse("busy", transcribed=False)
            return
        except Exception as exc:
            log.warning("satellite %s: the request failed: %s", self.uri, exc)
            await self._refuse("error", transcribed=False)
            return
        for outcome in self._requests.track(request_id):
            self._answer(outcome)

    async def _refuse(self, reason: str, transcribed: bool) -> None:
        link = self._link
        if link is None:
            return
        text, code = error_for(reason)
        await link.send(Error(text=text, code=code).event())
        if not transcribed:
            await link.rearm()

    # -- what the daemon did with a request (any thread -> the loop) -----------------

    def _from_daemon(self, data: Mapping[str, Any]) -> None:
        loop = self._loop
        if data.get("type") not in WATCHED or not data.get("id") or loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._ended, dict(data))

    def _ended(self, data: dict[str, Any]) -> None:
        self._answer(self._requests.outcome(data))

    def _answer(self, outcome: Transcribed | Refused | None) -> None:
        if isinstance(outcome, Transcribed):
            log.debug("satellite %s: transcript %r", self.uri, outcome.text)
            if self._link is not None:
                self._spawn(self._link.send_transcript(outcome.text))
        elif isinstance(outcome, Refused):
            self._spawn(self._refuse(outcome.reason, outcome.transcribed))

    # -- for the link ----------------------------------------------------------------

    def audio(self, chunk: Any) -> None:
        if self._listen is not None:
            self._listen.audio(chunk)

    def command(self, command: Any) -> None:
        if self._listen is not None:
            self._listen.command(command)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self.stopping:  # closed: nothing may outlive close() on the loop
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class Satellites:
    """Every satellite of ``[wyoming] satellites``, on one loop thread."""

    def __init__(
        self,
        pipeline: Pipeline,
        uris: Sequence[str],
        *,
        reconnect_max_s: float = 30.0,
        timing: Timing | None = None,
    ) -> None:
        self._drivers = [
            SatelliteDriver(pipeline, uri, reconnect_max_s=reconnect_max_s, timing=timing)
            for uri in dict.fromkeys(uris)
        ]
        self._loop: LoopThread | None = None

    def start(self) -> None:
        """Build every listener (a failure stops those already started), then connect."""
        loop = LoopThread("wyoming satellites")
        loop.start()
        self._loop = loop
        try:
            for driver in self._drivers:
                driver.attach(loop)
        except BaseException:
            self.stop()  # a driver never attached has nothing to close
            raise

    def stop(self) -> None:
        """Every satellite paused and disconnected, together, within ~2 s."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.run(_close_all(self._drivers), STOP_WITHIN_S)
        for driver in self._drivers:
            driver.release()
        deadline = time.monotonic() + THREADS_WITHIN_S
        for driver in self._drivers:
            driver.join(deadline)
        loop.stop()


async def _close_all(drivers: Sequence[SatelliteDriver]) -> None:
    await asyncio.gather(*(driver.close() for driver in drivers))
