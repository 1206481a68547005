"""The daemon: wires the stages, owns the threads and the lifecycle.

Stages never import each other; this module is the only place that knows the
order. Listening runs in its own thread and only hands utterances on, so that
transcription and generation can never stall it. Transcription + moderation run
in one worker thread, generation + storage in another that alone owns the model
(and the GPU); bounded lines per source join them. The main thread waits and stops.
Every request is opened in the :class:`Ledger` where it starts (the microphone, or
:meth:`Daemon.submit`) and ends there in one ``image`` or ``rejected`` event, always.

A microphone daemon can be paused (the microphone closed), told to listen without a
wake word and given a new config (:meth:`Daemon.swap`), from the control and reload threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .config import Config
from .debug_audio import debug_audio_dir, save_utterance
from .desktop.sound import WakeSound
from .events import (
    Error,
    Event,
    EventSink,
    FanOut,
    Listening,
    Rejected,
    Relay,
    Stopped,
    Utterance,
    Wake,
)
from .ledger import Ledger
from .listening.audio import AudioSource, lost_audio
from .listening.listener import Listener
from .livestate import LiveState
from .pcm import Frame
from .request import Request
from .shutdown import Shutdown
from .stages import Stages, build_listener, feedback_of, wake_sound
from .steps import Draw, Heard, ToDraw, Understand, source_key
from .worker import Worker

log = logging.getLogger(__name__)

SPEECH_QUEUE_DEPTH = 4
# Of the 10 s stop deadline: kept back from the workers for the events, the notifier
# and the exit; the notifier in turn leaves this much for the exit.
AFTER_WORKERS_S = 2.0
AFTER_NOTIFIER_S = 1.0
POLL_S = 0.2

SourceOpener = Callable[[Config], AudioSource]


class Daemon:
    """Runs a source through every stage until the input ends or a stop is asked.

    Models load in the constructor, before any device is opened, so a missing model
    fails fast and the microphone is only taken when the daemon can use it.
    ``reopen`` makes it a microphone daemon: a function that opens a fresh source,
    used after a pause and when ``[audio]`` changes.
    """

    def __init__(
        self,
        config: Config,
        sink: EventSink,
        stages: Stages | None = None,
        shutdown: Shutdown | None = None,
        *,
        reopen: SourceOpener | None = None,
        heartbeat: Callable[[], None] = lambda: None,
        paused: bool = False,
    ) -> None:
        self.config = config
        self.shutdown = shutdown or Shutdown()
        self.live = LiveState()
        self._opener = reopen
        self.heartbeat = heartbeat
        self.wake_sound = wake_sound(config, reopen is not None)
        self.listener = build_listener(config, feedback_of(self.wake_sound))
        self.stages = stages or Stages.load(config)
        self._notify = Relay(self.stages.notifier)
        self.ledger = Ledger(FanOut(sink, self._notify, self.live), self.now)
        self.sink: EventSink = self.ledger
        self.source: AudioSource | None = None
        self._lock = threading.Lock()
        self._paused = threading.Event()
        self._resumed = threading.Event()
        self._reopen = threading.Event()  # the source was closed on purpose: open another
        self._next_listener: Listener | None = None
        self._wait_when_busy = False
        self._frames = 0
        self._lost = [0, 0]  # dropped frames, overflows of sources already finished
        self._failure: BaseException | None = None
        self._left_behind = threading.Event()  # a worker was still busy at the deadline
        self._understand, self._draw = self._make_steps()
        self._images: Worker[ToDraw] = Worker(
            "image",
            lambda item: self._draw(item),  # noqa: PLW0108 - a reload swaps _draw
            config.image.queue,
            lambda item, exc: self._failed(item.request, exc),
            source_key,
        )
        self._speech: Worker[Heard] = Worker(
            "speech", self._understand_heard, SPEECH_QUEUE_DEPTH, self._failed_heard, source_key
        )
        self.shutdown.on_request(self._halt)
        if paused and reopen is not None:  # the pause survived a restart
            self._paused.set()
            self.live.paused(True)

    def _make_steps(self) -> tuple[Understand, Draw]:
        stages = self.stages
        draw = Draw(stages.generator, stages.writer, self.ledger, self.now)
        understand = Understand(
            self.config.speech,
            stages.transcriber,
            stages.moderator,
            self.ledger,
            clock=self.now,
            forward=self.to_images,
        )
        return understand, draw

    @property
    def abandoned(self) -> bool:  # a worker was still inside torch, say, at the deadline
        return self._left_behind.is_set()

    def now(self) -> float:
        return self.listener.now

    def close(self) -> None:
        """Release what outlives a run (the notifier's bus connection), within the deadline."""
        if self.wake_sound is not None:
            self.wake_sound.close()
        self.stages.close(self.shutdown.left(AFTER_NOTIFIER_S))

    def stop(self) -> None:
        """Stop as SIGTERM would: within the one stop deadline, unfinished requests ended."""
        self.shutdown.request("stop()")

    def _halt(self) -> None:
        """Stop listening and drop queued work; runs in the signal handler, so it is quick."""
        self.live.stopping()
        for worker in (self._speech, self._images):
            worker.cancel()
        self._resumed.set()
        source = self.source
        if source is not None:
            source.close()

    # ------------------------------------------------------------------ control
    def pause(self) -> None:
        """Close the microphone until :meth:`resume`; what was heard still finishes."""
        if self._opener is None:
            raise RuntimeError("only a microphone can be paused; this daemon reads a file")
        with self._lock:
            if self._paused.is_set():
                return
            self._paused.set()
            self._resumed.clear()
            self._reopen.set()
            if self.source is not None:
                self.source.close()
        self.live.paused(True)
        log.info("paused: the microphone is closed")

    def resume(self) -> None:
        with self._lock:
            if not self._paused.is_set():
                return
            self._paused.clear()
            self._resumed.set()
        self.live.paused(False)
        log.info("resumed: opening the microphone")

    def listen_now(self) -> None:
        """Capture a request as if the wake word had been heard (a keyboard shortcut)."""
        if self._paused.is_set():
            raise RuntimeError("paused: resume first (speech2image resume)")
        self.listener.listen_now()

    def status(self) -> dict[str, str | int | float | bool]:
        source = self.source
        return self.live.status(source.name if source is not None else "")

    def submit(self, request: Request, audio: Frame | None) -> bool:
        """A request from elsewhere than the microphone (the web page): spoken
        (``audio``) or typed (its prompt); False when busy, as the event also says."""
        self.ledger.open(request)
        why = "still transcribing earlier requests"
        return self._hand_on(self._speech, Heard(request, audio), request.id, why)

    def swap(
        self, config: Config, stages: Stages, listener: Listener | None, sound: WakeSound | None
    ) -> None:
        """Put a reloaded config in force: new stages for the next request, the new
        listener from the next frame, and a fresh microphone if ``[audio]`` changed."""
        old_sound, self.wake_sound = self.wake_sound, sound
        if old_sound is not None and old_sound is not sound:
            old_sound.close()  # the old listener's last wakes just go without a sound
        with self._lock:
            reopen = config.audio != self.config.audio and self._opener is not None
            self.config, self.stages = config, stages
            self._understand, self._draw = self._make_steps()
            self._notify.target = stages.notifier
            if listener is not None:
                self._next_listener = listener
            if reopen:
                self._reopen.set()
                if self.source is not None:
                    self.source.close()

    # ---------------------------------------------------------------- lifecycle
    def run(self, source: AudioSource, wait_when_busy: bool = False) -> int:
        """Listen until done; 0 on a clean end (input finished or SIGTERM/SIGINT).

        ``wait_when_busy``: a file can wait for the stages to catch up, a
        microphone cannot (its requests are rejected as busy instead).
        """
        self.source = source
        self._wait_when_busy = wait_when_busy
        if self.shutdown.requested:  # asked to stop before the source was handed over
            source.close()
        with self.shutdown.signals_only_ask():
            self._speech.start()
            self._images.start()
            listening = threading.Thread(target=self._listen_guarded, name="listen", daemon=True)
            listening.start()
            self.live.started()
            while listening.is_alive():
                listening.join(timeout=POLL_S)
            if not self.shutdown.requested:
                self._finish_queued()  # the input ended: every request gets its answer
            if self.shutdown.requested:
                self._wait_for_workers()
        last_writes = min(1.0, self.shutdown.left(AFTER_NOTIFIER_S) or 1.0)
        self.ledger.abandon_open("the daemon stopped before this request was finished", last_writes)
        lost = {"dropped_frames": self._lost[0], "overflows": self._lost[1]}
        self.sink.emit(Stopped(id=None, t=self.now(), frames=self._frames, **lost))
        if self._failure is not None:
            raise self._failure
        return 0

    def _finish_queued(self) -> None:
        """Let each worker finish its queue in turn, unless a stop comes meanwhile."""
        for worker in (self._speech, self._images):
            worker.close()
            while not worker.join(POLL_S):
                if self.shutdown.requested:
                    return

    def _wait_for_workers(self) -> None:
        """Give the items in hand what is left of the stop deadline, then leave them."""
        for worker in (self._speech, self._images):
            if not worker.join(self.shutdown.left(AFTER_WORKERS_S)):
                log.warning("the %s worker is busy at the stop deadline; leaving it", worker.name)
                self._left_behind.set()

    def _failed_heard(self, heard: Heard, exc: Exception) -> None:
        self._failed(heard.request, exc)

    def _failed(self, request: Request, exc: Exception) -> None:
        self.ledger.fail(request.id, "daemon", f"unexpected {type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------- listening
    def _listen_guarded(self) -> None:
        try:
            self._listen()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._failure = exc

    def _listen(self) -> None:
        """Each source until it ends; after a pause or an ``[audio]`` change, a new one."""
        source = self.source
        while source is not None:
            if not self._paused.is_set():
                self.report_listening()
                self._consume(source)
            if self.shutdown.requested or self._opener is None:
                return
            if not (self._paused.is_set() or self._reopen.is_set()):
                return  # the microphone source only ends when closed: a stop
            source = self._next_source(self._opener)

    def _next_source(self, opener: SourceOpener) -> AudioSource | None:
        """Wait while paused (the watchdog still fed), then open a fresh source."""
        while self._paused.is_set() and not self.shutdown.requested:
            self.heartbeat()
            self._resumed.wait(POLL_S)
        if self.shutdown.requested:
            return None
        with self._lock:
            self._reopen.clear()
            self.source = opener(self.config)
            return self.source

    def _consume(self, source: AudioSource) -> None:
        try:
            for event in self._events(source):
                if isinstance(event, Wake) and event.id:
                    self._open(event)
                self.sink.emit(event)
                if isinstance(event, Utterance) and event.id:
                    self._hear(event)
        finally:
            self._lost[0] += source.dropped_frames
            self._lost[1] += source.overflows

    def _open(self, wake: Wake) -> None:
        assert self.source is not None
        assert wake.id is not None
        request = Request.start(self.source.kind, self.source.name, id=wake.id)
        self.ledger.open(request.with_wake(wake.model, wake.score, wake.t))

    def _hear(self, utterance: Utterance) -> None:
        request = self.ledger.get(utterance.id or "")
        if request is None:
            log.error("an utterance for request %s, which is not open", utterance.id)
            return
        request = request.with_utterance(utterance.start_s, utterance.duration_s, utterance.reason)
        request = request.timed("listen", utterance.t - (request.wake.t if request.wake else 0.0))
        self.ledger.record(request)
        heard = Heard(request, utterance.audio)
        self._hand_on(self._speech, heard, request.id, "still transcribing earlier requests")

    def _understand_heard(self, heard: Heard) -> None:
        debug = self.config.debug
        if debug.save_audio and heard.audio is not None:  # off by default: speech is private
            save_utterance(debug_audio_dir(debug), heard.request.id, heard.audio)
        self._understand(heard)

    def to_images(self, request: Request) -> bool:
        """An accepted request into the drawing queue; False when busy (and so ended)."""
        item = ToDraw(request, time.monotonic())
        return self._hand_on(self._images, item, request.id, "still drawing earlier requests")

    def _hand_on(self, worker: Worker[Any], item: Any, request_id: str, why: str) -> bool:
        if worker.submit(item, wait=self._wait_when_busy):
            return True
        if not self.shutdown.requested:  # stopping is not busy: the ledger ends it so
            log.warning("busy: %s; this request is dropped", why)
            self.sink.emit(Rejected(id=request_id, t=self.now(), reason="busy", detail=why))
        return False

    def _events(self, source: AudioSource) -> Iterator[Event]:
        lost = (0, 0)
        for frame in source.frames():
            self._frames += 1
            self.heartbeat()
            if self._next_listener is not None:
                yield from self._switch_listener()
            event = self.listener.process(frame)
            if event is not None:
                yield event
            if (source.dropped_frames, source.overflows) != lost:
                yield self._lost_audio_report(lost, source)
                lost = (source.dropped_frames, source.overflows)
            if self.shutdown.requested:
                return
        final = self.listener.finish()
        if final is not None:
            yield final

    def _switch_listener(self) -> Iterator[Event]:
        """A reloaded listener takes over between two frames; a capture in flight ends."""
        with self._lock:
            new, self._next_listener = self._next_listener, None
        if new is None:
            return
        final = self.listener.finish()
        if final is not None:
            yield final
        new.follow(self.listener)
        self.listener = new

    def _lost_audio_report(self, before: tuple[int, int], source: AudioSource) -> Event:
        what = lost_audio(before, (source.dropped_frames, source.overflows))
        log.warning("%s", what)
        return Error(id=None, t=self.now(), stage="audio", message=what)

    def report_source_error(self, message: str) -> None:
        """The microphone is gone or failing (MicSource's ``on_error``): it is waited for."""
        device = getattr(self.source, "waiting_for", None) or self.config.audio.device
        self.live.waiting(repr(device) if device != "" else "(the default input)")
        self.sink.emit(Error(id=None, t=self.now(), stage="audio", message=message))

    def report_listening(self) -> None:
        """At start, and again when a lost microphone is back."""
        name = self.source.name if self.source is not None else "none"
        self.sink.emit(
            Listening(id=None, t=self.now(), models=self.config.wake.models, source=name)
        )
