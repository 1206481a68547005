"""The daemon as a subprocess whose JSON event stream the test can wait on."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

Event = dict[str, Any]


class DaemonProcess:
    """`speech2image run ... --events -`, with events collected by a reader thread."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        """``env`` is added to this process's environment (empty: inherit it as is)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "speech2image.cli", "run", *args, "--events", "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self.events: list[Event] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._stderr: list[str] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.strip():
                self._queue.put(json.loads(line))
        self._queue.put(None)

    def _drain(self, stream: IO[str]) -> None:
        self._stderr.extend(stream)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_for(self, kind: str, timeout: float, **fields: Any) -> Event:
        """The next event of ``kind`` (matching ``fields``); earlier ones are kept in events."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"daemon exited before a {kind!r} event:\n{self.stderr}")
            self.events.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        raise AssertionError(f"no {kind!r} event within {timeout} s; got {self.events}")

    def of(self, kind: str) -> list[Event]:
        return [event for event in self.events if event["type"] == kind]

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, as systemd stops it; collects the remaining events."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        while (event := self._queue.get(timeout=5)) is not None:
            self.events.append(event)
        return code
