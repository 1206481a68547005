"""A real daemon in a thread of the test process, listening to a paced file of silence
(a microphone that never wakes), so the only requests are those a test makes
through the web page or Wyoming; and a recorder of its events."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from speech2image.config import Config
from speech2image.daemon import Daemon
from speech2image.events import Event, EventSink, FanOut
from speech2image.listening.audio import FileSource


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event.to_dict())

    def ended(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            for event in self.events:
                if event["id"] == request_id and event["type"] in ("image", "rejected"):
                    return event
        return None

    def wait_end(self, request_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            end = self.ended(request_id)
            if end is not None:
                return end
            time.sleep(0.1)
        raise AssertionError(f"request {request_id} never ended: {self.events}")


class DaemonThread:
    """``Daemon(config, FanOut(recorder, *sinks))``; :meth:`run` starts listening."""

    def __init__(self, config: Config, silence_wav: Path, *sinks: EventSink) -> None:
        self.recorder = Recorder()
        self.daemon = Daemon(config, FanOut(self.recorder, *sinks))
        self._source = FileSource(silence_wav, realtime=True)
        self._thread = threading.Thread(target=self.daemon.run, args=(self._source,), daemon=True)

    def run(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.daemon.stop()
        self._thread.join(15)
        self.daemon.close()
