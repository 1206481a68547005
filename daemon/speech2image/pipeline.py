"""The daemon: wires the stages, owns the threads and the lifecycle.

Stages never import each other; this module is the only place that knows the
order. Listening runs in its own thread and only hands utterances on, so that
transcription (and later generation) can never stall it; each later stage runs
in one worker thread behind a bounded queue. The main thread waits and handles
signals.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from .audio import AudioSource
from .config import Config
from .events import (
    Accepted,
    Error,
    Event,
    EventSink,
    Listening,
    Rejected,
    Stopped,
    Transcript,
    Utterance,
)
from .listen import Listener
from .models import resolve_wake_models
from .moderate import build_moderator
from .transcribe import Transcriber, WhisperTranscriber, hallucination
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


def build_transcriber(config: Config) -> WhisperTranscriber:
    transcriber = WhisperTranscriber(config.speech, config.source)
    transcriber.warm_up()
    return transcriber


class Daemon:
    """Runs one source through every stage until the input ends or a signal arrives.

    Models load in the constructor, before any device is opened, so a missing model
    fails fast and the microphone is only taken when the daemon can use it.
    """

    def __init__(
        self,
        config: Config,
        sink: EventSink,
        transcriber: Transcriber | None = None,
        moderator: Moderator | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.listener = build_listener(config)
        self.transcriber = transcriber or build_transcriber(config)
        self.moderator = moderator or build_moderator(config.moderation, config.source)
        self.source: AudioSource | None = None
        self._speech: Worker[Utterance] = Worker("speech", self._on_utterance, SPEECH_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._frames = 0
        self._failure: BaseException | None = None

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
        listening = threading.Thread(target=self._listen_guarded, name="listen", daemon=True)
        listening.start()
        while listening.is_alive():
            listening.join(timeout=0.5)
        self._speech.close(drain=not self._stop.is_set(), timeout=STOP_GRACE_SECONDS)
        self.sink.emit(
            Stopped(
                id=None,
                t=self.listener.now,
                frames=self._frames,
                dropped_frames=source.dropped_frames,
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
            if isinstance(event, Utterance):
                self._hand_on(event)

    def _hand_on(self, utterance: Utterance) -> None:
        if not self._speech.submit(utterance, wait=self._wait_when_busy):
            log.warning("still transcribing earlier requests; this one is dropped")
            self.sink.emit(
                Rejected(
                    id=utterance.id,
                    t=self.listener.now,
                    reason="busy",
                    detail="still transcribing earlier requests",
                )
            )

    def _events(self, source: AudioSource) -> Iterator[Event]:
        dropped = 0
        for frame in source.frames():
            self._frames += 1
            event = self.listener.process(frame)
            if event is not None:
                yield event
            if source.dropped_frames != dropped:
                yield self._dropped_report(source.dropped_frames - dropped, source.dropped_frames)
                dropped = source.dropped_frames
            if self._stop.is_set():
                return
        final = self.listener.finish()
        if final is not None:
            yield final

    def _on_utterance(self, utterance: Utterance) -> None:
        """Speech worker: transcript, hallucination guard, moderation verdict."""
        try:
            transcription = self.transcriber.transcribe(utterance.audio)
        except Exception as exc:
            self._stage_failed(utterance.id, "speech", exc)
            return
        text = transcription.text
        log.debug("transcript %s: %r", utterance.id, text)
        self.sink.emit(
            Transcript(
                id=utterance.id,
                t=self.listener.now,
                text=text,
                language=transcription.language,
                audio_s=utterance.duration_s,
                seconds=transcription.seconds,
            )
        )
        why = hallucination(transcription, self.config.speech)
        if why is not None:
            log.info("nothing usable was said (%s)", why)
            self.sink.emit(
                Rejected(id=utterance.id, t=self.listener.now, reason="empty", detail=why)
            )
            return
        self._moderate(utterance.id, text)

    def _moderate(self, id_: str | None, text: str) -> None:
        started = time.perf_counter()
        try:
            verdict = self.moderator.check(text)
        except Exception as exc:
            self._stage_failed(id_, "moderation", exc)
            return
        log.debug("moderation took %.1f ms", (time.perf_counter() - started) * 1000)
        if verdict.allowed:
            log.info("request accepted")
            self.sink.emit(Accepted(id=id_, t=self.listener.now, text=text, scores=verdict.scores))
            return
        log.info("request rejected by %s: %s", verdict.backend, ", ".join(verdict.flagged))
        self.sink.emit(
            Rejected(
                id=id_,
                t=self.listener.now,
                reason="toxic",
                detail=f"flagged by {verdict.backend}",
                flagged=tuple(verdict.flagged),
                scores=verdict.scores,
            )
        )

    def _stage_failed(self, id_: str | None, stage: str, exc: Exception) -> None:
        log.error("%s failed: %s", stage, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        self.sink.emit(Error(id=id_, t=self.listener.now, stage=stage, message=str(exc)))
        self.sink.emit(Rejected(id=id_, t=self.listener.now, reason="error", detail=stage))

    def _dropped_report(self, new: int, total: int) -> Event:
        log.warning("listening fell behind: %d audio frames dropped (%d in total)", new, total)
        return Error(
            id=None,
            t=self.listener.now,
            stage="audio",
            message=f"dropped {new} audio frames ({total} in total): listening fell behind",
        )

    def report_source_error(self, message: str) -> None:
        self.sink.emit(Error(id=None, t=self.listener.now, stage="audio", message=message))

    def report_listening(self) -> None:
        """At start, and again when a lost microphone is back."""
        name = self.source.name if self.source is not None else "none"
        self.sink.emit(
            Listening(id=None, t=self.listener.now, models=self.config.wake.models, source=name)
        )
