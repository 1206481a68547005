"""The daemon: wires the stages, owns the threads and the lifecycle.

Stages never import each other; this module is the only place that knows the
order. Listening runs in its own thread so that later stages (transcription,
generation) can never stall it; the main thread only waits and handles signals.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from .audio import AudioSource
from .config import Config
from .events import Error, Event, EventSink, Listening, Stopped
from .listen import Listener
from .models import resolve_wake_models
from .vad import SileroVad
from .wakeword import OpenWakeWordScorer, WakeGate

log = logging.getLogger(__name__)


def build_listener(config: Config) -> Listener:
    """Load the wake-word and VAD models (local files only) into a Listener."""
    files = resolve_wake_models(config.wake, config.source)
    scorer = OpenWakeWordScorer(files.models, files.melspectrogram, files.embedding)
    gate = WakeGate.from_config(config.wake, scorer.names)
    return Listener(scorer, gate, SileroVad(), config.listen)


class Daemon:
    """Runs one source through the listener until the input ends or a signal arrives.

    Models load in the constructor, before any device is opened, so a missing model
    fails fast and the microphone is only taken when the daemon can use it.
    """

    def __init__(self, config: Config, sink: EventSink) -> None:
        self.config = config
        self.sink = sink
        self.listener = build_listener(config)
        self.source: AudioSource | None = None
        self._stop = threading.Event()
        self._frames = 0
        self._failure: BaseException | None = None

    def stop(self) -> None:
        self._stop.set()
        if self.source is not None:
            self.source.close()

    def run(self, source: AudioSource) -> int:
        """Listen until done; 0 on a clean end (input finished or SIGTERM/SIGINT)."""
        self.source = source
        self._install_signal_handlers()
        listening = threading.Thread(target=self._listen_guarded, name="listen", daemon=True)
        listening.start()
        while listening.is_alive():
            listening.join(timeout=0.5)
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
