"""The daemon: wires the stages, owns the threads and the lifecycle.

Stages never import each other; this module is the only place that knows the
order. Listening runs in its own thread and only hands utterances on, so that
transcription and generation can never stall it. Transcription + moderation run
in one worker thread, generation + storage in another that alone owns the model
(and the GPU); bounded queues join them. The main thread waits and stops.

Every request is opened in the :class:`Ledger` where it starts and ends there in
exactly one ``image`` or ``rejected`` event, including at shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .events import Error, Event, EventSink, FanOut, Listening, Rejected, Stopped, Utterance, Wake
from .gallery.writer import GalleryWriter
from .ledger import Ledger
from .listening.audio import AudioSource
from .listening.listener import Listener
from .listening.vad import SileroVad
from .listening.wake_models import resolve_wake_models
from .listening.wakeword import OpenWakeWordScorer, WakeGate
from .moderation.verdict import PromptModerator
from .request import Request
from .shutdown import Shutdown
from .speech.transcribe import Transcriber
from .steps import Draw, Heard, ImageSource, ToDraw, Understand
from .worker import Worker

log = logging.getLogger(__name__)

SPEECH_QUEUE_DEPTH = 4
# Of the 10 s stop deadline: kept back from the workers for the events, the notifier
# and the exit; the notifier in turn leaves this much for the exit.
AFTER_WORKERS_S = 2.0
AFTER_NOTIFIER_S = 1.0
POLL_S = 0.2


def build_listener(config: Config) -> Listener:
    """Load the wake-word and VAD models (local files only) into a Listener."""
    files = resolve_wake_models(config.wake, config.source)
    scorer = OpenWakeWordScorer(files.models, files.melspectrogram, files.embedding)
    gate = WakeGate.from_config(config.wake, scorer.names)
    return Listener(scorer, gate, SileroVad(), config.listen)


@dataclass(frozen=True)
class Stages:
    """Everything after the listener, loaded and warm. Tests and benchmarks pass their own."""

    transcriber: Transcriber
    moderator: PromptModerator
    generator: ImageSource
    writer: GalleryWriter
    notifier: Any  # a DesktopNotifier (an EventSink with close(timeout)), or None

    @classmethod
    def load(cls, config: Config) -> Stages:
        """Load every model from local files (never the network) and warm them up."""
        from .images.generate import Generator
        from .moderation.combined import build_moderator
        from .speech.transcribe import WhisperTranscriber

        transcriber = WhisperTranscriber(config.speech, config.source)
        transcriber.warm_up()
        moderator = build_moderator(config.moderation, config.source)
        generator = Generator(config.image, config.source)
        generator.warm_up()
        writer = GalleryWriter(Path(config.gallery.dir))
        writer.prepare()
        return cls(transcriber, moderator, generator, writer, desktop_notifier(config))

    def close(self, timeout: float | None = None) -> None:
        if self.notifier is not None:
            self.notifier.close() if timeout is None else self.notifier.close(timeout)


def desktop_notifier(config: Config) -> Any:
    if not config.notify.enabled:
        return None
    from .desktop.notify import DesktopNotifier

    return DesktopNotifier(config.notify)


class Daemon:
    """Runs one source through every stage until the input ends or a stop is asked.

    Models load in the constructor, before any device is opened, so a missing model
    fails fast and the microphone is only taken when the daemon can use it.
    """

    def __init__(
        self,
        config: Config,
        sink: EventSink,
        stages: Stages | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.config = config
        self.shutdown = shutdown or Shutdown()
        self.listener = build_listener(config)
        self.stages = stages or Stages.load(config)
        notifier = self.stages.notifier
        self.ledger = Ledger(sink if notifier is None else FanOut(sink, notifier), self.now)
        self.sink: EventSink = self.ledger
        self.source: AudioSource | None = None
        self._wait_when_busy = False
        self._frames = 0
        self._failure: BaseException | None = None
        self._left_behind = threading.Event()  # a worker was still busy at the deadline
        draw = Draw(self.stages.generator, self.stages.writer, self.ledger, self.now)
        self._images: Worker[ToDraw] = Worker(
            "image", draw, config.image.queue, lambda item, exc: self._failed(item.request, exc)
        )
        understand = Understand(
            config.speech,
            self.stages.transcriber,
            self.stages.moderator,
            self.ledger,
            clock=self.now,
            forward=self._to_images,
        )
        self._speech: Worker[Heard] = Worker(
            "speech", understand, SPEECH_QUEUE_DEPTH, lambda h, exc: self._failed(h.request, exc)
        )
        self.shutdown.on_request(self._halt)

    @property
    def abandoned(self) -> bool:
        """A worker was still busy (inside torch, say) when the daemon had to stop."""
        return self._left_behind.is_set()

    def now(self) -> float:
        return self.listener.now

    def close(self) -> None:
        """Release what outlives a run (the notifier's bus connection), within the deadline."""
        self.stages.close(self.shutdown.left(AFTER_NOTIFIER_S))

    def stop(self) -> None:
        """Stop as SIGTERM would: within the one stop deadline, unfinished requests ended."""
        self.shutdown.request("stop()")

    def _halt(self) -> None:
        """Stop listening and drop queued work; runs in the signal handler, so it is quick."""
        for worker in (self._speech, self._images):
            worker.cancel()
        if self.source is not None:
            self.source.close()

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
            while listening.is_alive():
                listening.join(timeout=POLL_S)
            if not self.shutdown.requested:
                self._finish_queued()  # the input ended: every request gets its answer
            if self.shutdown.requested:
                self._wait_for_workers()
        last_writes = min(1.0, self.shutdown.left(AFTER_NOTIFIER_S) or 1.0)
        self.ledger.abandon_open("the daemon stopped before this request was finished", last_writes)
        self.sink.emit(
            Stopped(
                id=None,
                t=self.now(),
                frames=self._frames,
                dropped_frames=source.dropped_frames,
                overflows=source.overflows,
            )
        )
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

    def _failed(self, request: Request, exc: Exception) -> None:
        self.ledger.fail(request.id, "daemon", f"unexpected {type(exc).__name__}: {exc}")

    def _listen_guarded(self) -> None:
        try:
            self._listen()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._failure = exc

    def _listen(self) -> None:
        assert self.source is not None
        self.report_listening()
        for event in self._events(self.source):
            if isinstance(event, Wake) and event.id:
                self._open(event)
            self.sink.emit(event)
            if isinstance(event, Utterance) and event.id:
                self._hear(event)

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

    def _to_images(self, request: Request) -> None:
        item = ToDraw(request, time.monotonic())
        self._hand_on(self._images, item, request.id, "still drawing earlier requests")

    def _hand_on(self, worker: Worker[Any], item: Any, request_id: str, why: str) -> None:
        if worker.submit(item, wait=self._wait_when_busy):
            return
        if self.shutdown.requested:
            return  # not busy: stopping; the ledger ends it as a shutdown
        log.warning("busy: %s; this request is dropped", why)
        self.sink.emit(Rejected(id=request_id, t=self.now(), reason="busy", detail=why))

    def _events(self, source: AudioSource) -> Iterator[Event]:
        lost = (0, 0)
        for frame in source.frames():
            self._frames += 1
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

    def _lost_audio_report(self, before: tuple[int, int], source: AudioSource) -> Event:
        dropped, overflows = source.dropped_frames - before[0], source.overflows - before[1]
        if dropped:
            total = source.dropped_frames
            what = f"dropped {dropped} audio frames ({total} in total): listening fell behind"
        else:
            what = f"the audio driver lost input {overflows} time(s) ({source.overflows} in total)"
        log.warning("%s", what)
        return Error(id=None, t=self.now(), stage="audio", message=what)

    def report_source_error(self, message: str) -> None:
        self.sink.emit(Error(id=None, t=self.now(), stage="audio", message=message))

    def report_listening(self) -> None:
        """At start, and again when a lost microphone is back."""
        name = self.source.name if self.source is not None else "none"
        self.sink.emit(
            Listening(id=None, t=self.now(), models=self.config.wake.models, source=name)
        )


def generate_once(
    config: Config, prompt: str, sink: EventSink, seed: int | None = None
) -> Path | None:
    """`speech2image generate`: moderation, generation, gallery, notification; no audio.

    The typed prompt is a request like a spoken one (source ``command-line``) and ends
    like one: ``image``, or ``rejected`` (toxic, error, shutdown). Returns the image
    path, or None when there is no image (the events say why).
    """
    from .images.generate import Generator
    from .moderation.combined import build_moderator
    from .shutdown import StopRequested
    from .steps import moderate

    notifier = desktop_notifier(config)
    ledger = Ledger(sink if notifier is None else FanOut(sink, notifier), lambda: 0.0)
    request = Request.start("command-line", "speech2image generate", prompt=prompt, seed=seed)
    ledger.open(request)
    try:
        accepted = moderate(
            request, build_moderator(config.moderation, config.source), ledger, lambda: 0.0
        )
        if accepted is None:
            return None
        writer = GalleryWriter(Path(config.gallery.dir))
        writer.prepare()
        draw = Draw(Generator(config.image, config.source), writer, ledger, lambda: 0.0)
        return draw(ToDraw(accepted, time.monotonic()))
    except StopRequested:
        ledger.abandon_open("stopped before the picture was finished")
        raise
    except Exception as exc:  # a model or gallery that cannot be used: say so, then exit
        ledger.fail(request.id, "setup", str(exc))
        raise
    finally:
        if notifier is not None:
            notifier.close()
