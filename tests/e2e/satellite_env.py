"""The real wyoming-satellite for the end-to-end tests: its venv, a process, a fake wake word.

wyoming-satellite 1.0.0 (the release on PyPI) pins ``wyoming==1.4.1`` while
speech2image uses 1.10, so it lives in a virtual environment of its own,
``.venv-satellite`` at the repository root. `make test` builds it (``python3
tests/e2e/satellite_env.py`` does the same by hand); a test that finds it missing
fails and says so rather than installing anything itself.

Its microphone is ``tools/paced_pcm.py``: silence until the test says "speak" (a
file appears), then a WAV in real time, then silence, so nothing is said before the
daemon has connected and the satellite streams to it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-satellite"
PYTHON = VENV / "bin" / "python"
PACKAGE = "wyoming-satellite==1.0.0"
PACED_PCM = REPO / "tools" / "paced_pcm.py"
MISSING = (
    f"wyoming-satellite 1.0.0 is not installed in {VENV}: `make test` builds it "
    f"(python3 -m venv .venv-satellite && .venv-satellite/bin/pip install {PACKAGE})"
)

# A stand-in for a wake-word service, for `--wake-command`: wyoming-satellite 1.0.0
# writes raw 16 kHz mono audio to its stdin and reads one line (the wake word's name)
# per detection. This one "hears" any loud 80 ms after a second of quiet: the test's
# WAV puts a short tone where a wake word would be.
FAKE_WAKE = """
import sys
quiet = 0
while block := sys.stdin.buffer.read(2560):
    peak = max(abs(int.from_bytes(block[i:i + 2], "little", signed=True))
               for i in range(0, len(block) - 1, 2))
    if peak > 4000 and quiet >= 12:
        print("test_tone", flush=True)
    quiet = 0 if peak > 4000 else quiet + 1
"""


def build() -> None:
    """Create the satellite's venv (what `make test` runs)."""
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", PACKAGE], check=True)


def installed() -> bool:
    if not PYTHON.exists():
        return False
    probe = [
        str(PYTHON),
        "-c",
        "import importlib.metadata as m; print(m.version('wyoming-satellite'))",
    ]
    result = subprocess.run(probe, capture_output=True, text=True, check=False)
    return result.returncode == 0 and result.stdout.strip() == "1.0.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SatelliteProcess:
    """``python -m wyoming_satellite`` on a loopback port, fed ``wav`` on request."""

    def __init__(self, wav: Path, scratch: Path, name: str, local_wake: bool = False) -> None:
        self.name = name
        self.port = free_port()
        self.uri = f"tcp://127.0.0.1:{self.port}"
        self.trigger = scratch / f"{name}.speak"
        self.log_path = scratch / f"{name}.log"
        mic = f"{PYTHON} {PACED_PCM} {wav} --after {self.trigger}"
        command = [str(PYTHON), "-m", "wyoming_satellite", "--name", name, "--uri", self.uri]
        command += ["--mic-command", mic, "--no-zeroconf", "--debug"]
        if local_wake:
            wake = scratch / "fake_wake.py"
            wake.write_text(FAKE_WAKE, encoding="utf-8")
            command += ["--wake-command", f"{PYTHON} {wake}"]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until the satellite's server accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"wyoming-satellite exited:\n{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"wyoming-satellite not listening within {timeout} s:\n{self.log}")

    def wait_log(self, text: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.count(text) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} (x{count}) not in the satellite's log:\n{self.log}")

    def speak(self) -> None:
        self.trigger.touch()

    def stop(self) -> None:
        """SIGTERM to its process group: the satellite and its microphone command."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


if __name__ == "__main__":
    build()
