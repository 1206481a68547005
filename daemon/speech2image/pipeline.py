"""The daemon: wires the stages, owns the threads and the lifecycle.

Stages never import each other; this module is the only place that knows the
order. Listening runs in its own thread and only hands utterances on, so that
transcription and generation can never stall it. Transcription + moderation run
in one worker thread, generation + storage in another that alone owns the model
(and the GPU); bounded queues join them. The main thread waits and handles signals.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .audio import AudioSource
from .config import Config
from .events import Error, Event, EventSink, FanOut, Listening, Rejected, Stopped, Utterance, Wake
from .gallery.writer import GalleryWriter
from .listen import Listener
from .models import resolve_wake_models
from .requests import ImageHandler, ImageRequest, ImageSource, SpeechHandler, verdict_event
from .transcribe import Transcriber
from .vad import SileroVad
from .verdict import Moderator
from .wakeword import OpenWakeWordScorer, WakeGate
from .worker import Worker

log = logging.getLogger(__name__)

SPEECH_QUEUE_DEPTH = 4
STOP_GRACE_SECONDS = 8.0  # systemd waits 10 s after SIGTERM; leave room to exit


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
    moderator: Moderator
    generator: ImageSource
    writer: GalleryWriter
    notifier: EventSink | None

    @classmethod
    def load(cls, config: Config) -> Stages:
        """Load every model from local files (never the network) and warm them up."""
        from .generate import Generator
        from .moderate import build_moderator
        from .notify import DesktopNotifier
        from .transcribe import WhisperTranscriber

        transcriber = WhisperTranscriber(config.speech, config.source)
        transcriber.warm_up()
        moderator = build_moderator(config.moderation, config.source)
        generator = Generator(config.image, config.source)
        generator.warm_up()
        writer = GalleryWriter(Path(config.gallery.dir))
        writer.prepare()
        notifier = DesktopNotifier(config.notify) if config.notify.enabled else None
        return cls(transcriber, moderator, generator, writer, notifier)

    def close(self) -> None:
        closer = getattr(self.notifier, "close", None)
        if closer is not None:
            closer()


class Daemon:
    """Runs one source through every stage until the input ends or a signal arrives.

    Models load in the constructor, before any device is opened, so a missing model
    fails fast and the microphone is only taken when the daemon can use it.
    """

    def __init__(self, config: Config, sink: EventSink, stages: Stages | None = None) -> None:
        self.config = config
        self.listener = build_listener(config)
        self.stages = stages or Stages.load(config)
        notifier = self.stages.notifier
        self.sink: EventSink = sink if notifier is None else FanOut(sink, notifier)
        self.source: AudioSource | None = None
        self._wait_when_busy = False
        self._wakes: dict[str, dict[str, Any]] = {}
        self._images: Worker[ImageRequest] = Worker(
            "image",
            ImageHandler(self.stages.generator, self.stages.writer, self.sink, self.now),
            config.image.queue,
        )
        speech = SpeechHandler(
            config,
            self.stages.transcriber,
            self.stages.moderator,
            self.sink,
            clock=self.now,
            forward=self._to_images,
        )
        self._speech: Worker[Utterance] = Worker(
            "speech", lambda u: speech(u, self._wakes.pop(u.id or "", {})), SPEECH_QUEUE_DEPTH
        )
        self._stop = threading.Event()
        self._frames = 0
        self._failure: BaseException | None = None
        self.abandoned = False  # a worker was still busy when the daemon had to stop

    def now(self) -> float:
        return self.listener.now

    def close(self) -> None:
        """Release what outlives a run (the notifier's bus connection)."""
        self.stages.close()

    def stop(self) -> None:
        self._stop.set()
        if self.source is not None:
            self.source.close()

    def run(self, source: AudioSource, wait_when_busy: bool = False) -> int:
        """Listen until done; 0 on a clean end (input finished or SIGTERM/SIGINT).

        ``wait_when_busy``: a file can wait for the stages to catch up, a
        microphone cannot (its requests are rejected as busy instead).
        """
        self.source = source
        self._wait_when_busy = wait_when_busy
        self._install_signal_handlers()
        self._speech.start()
        self._images.start()
        listening = threading.Thread(target=self._listen_guarded, name="listen", daemon=True)
        listening.start()
        while listening.is_alive():
            listening.join(timeout=0.5)
        finish = not self._stop.is_set()  # input ended: finish every request; signal: abandon
        grace = None if finish else STOP_GRACE_SECONDS / 2
        done = [
            worker.close(drain=finish, timeout=grace) for worker in (self._speech, self._images)
        ]
        self.abandoned = not all(done)
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

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _listen_guarded(self) -> None:
        try:
            self._listen()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._failure = exc

    def _listen(self) -> None:
        assert self.source is not None
        self.report_listening()
        for event in self._events(self.source):
            self.sink.emit(event)
            if isinstance(event, Wake) and event.id:
                self._wakes[event.id] = {"model": event.model, "score": round(event.score, 4)}
            elif isinstance(event, Utterance):
                self._hand_on(self._speech, event, event.id, "still transcribing earlier requests")

    def _to_images(self, request: ImageRequest) -> None:
        self._hand_on(self._images, request, request.id, "still drawing earlier requests")

    def _hand_on(self, worker: Worker[Any], item: Any, id_: str | None, why: str) -> None:
        if not worker.submit(item, wait=self._wait_when_busy):
            log.warning("busy: %s; this request is dropped", why)
            self.sink.emit(Rejected(id=id_, t=self.now(), reason="busy", detail=why))

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
            if self._stop.is_set():
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

    Returns the image path, or None when the prompt was rejected or a stage failed
    (the events say which).
    """
    from .generate import Generator
    from .moderate import build_moderator
    from .notify import DesktopNotifier

    notifier = DesktopNotifier(config.notify) if config.notify.enabled else None
    out: EventSink = sink if notifier is None else FanOut(sink, notifier)
    try:
        verdict = build_moderator(config.moderation, config.source).check(prompt)
        out.emit(verdict_event("cli", 0.0, prompt, verdict))
        if not verdict.allowed:
            return None
        writer = GalleryWriter(Path(config.gallery.dir))
        writer.prepare()
        draw = ImageHandler(Generator(config.image, config.source), writer, out, lambda: 0.0)
        sidecar = {"moderation": {"backend": verdict.backend, "scores": verdict.scores}}
        return draw(ImageRequest("cli", prompt, seed=seed, sidecar=sidecar))
    finally:
        if notifier is not None:
            notifier.close()
