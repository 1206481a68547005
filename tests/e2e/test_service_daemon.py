"""The microphone daemon as a service: systemd's notifications on a test NOTIFY_SOCKET,
control over the real test session bus, a pause that closes the microphone and
survives a restart, one daemon per user, and a config reload on SIGHUP.

Everything here is the real daemon (`speech2image run`) on the private PulseAudio
server, talked to by the real CLI commands.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.daemon import DaemonProcess
from tests.e2e.dbus_session import wait_until
from tests.e2e.pulse import PulseServer, VirtualMic
from tests.support import concat, data_audio, silence

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = """
[audio]
device = "pulse"
[wake]
models = ["hey_mycroft"]
[listen]
silence_timeout = 1.0
"""
STARTUP_S = 60.0


def request_audio() -> np.ndarray:
    return concat(
        silence(1.0), data_audio("hey_mycroft_test.wav"), data_audio("jfk.flac"), silence(2.0)
    )


class NotifySocket:
    """What systemd would receive: every datagram sent to $NOTIFY_SOCKET, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

    def count(self, line: str) -> int:
        return self.lines().count(line)

    def wait_for(self, line: str, timeout: float = STARTUP_S, after: int = 0) -> None:
        wait_until(lambda: line in self.lines()[after:], timeout, f"{line!r} on NOTIFY_SOCKET")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speech2image.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def our_capture_streams(pulse: PulseServer, pid: int) -> list[int]:
    """PulseAudio's record streams of process ``pid``: what lights a microphone indicator."""
    out = pulse.pactl("list", "source-outputs")
    streams, current = [], None
    ours = f'application.process.id = "{pid}"'
    for line in (raw.strip() for raw in out.splitlines()):
        if line.startswith("Source Output #"):
            current = int(line.split("#")[1])
        elif line == ours and current is not None:
            streams.append(current)
    return streams


def start(config: Path, env: dict[str, str]) -> DaemonProcess:
    return DaemonProcess(["--config", str(config)], env)


def test_systemd_sees_ready_status_watchdog_and_stopping_and_pause_survives_a_restart(
    config_file: Callable[[str], Path],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
    session_bus: str,
    notify_socket: NotifySocket,
) -> None:
    config = config_file(CONFIG)
    env = pulse_server.child_env(
        {
            "DBUS_SESSION_BUS_ADDRESS": session_bus,
            "NOTIFY_SOCKET": str(notify_socket.path),
            "WATCHDOG_USEC": "1000000",  # pings every 0.5 s, so the test sees several
        }
    )
    daemon = start(config, env)
    try:
        daemon.wait_for("listening", timeout=STARTUP_S)
        notify_socket.wait_for("READY=1")
        notify_socket.wait_for("STATUS=listening")
        wait_until(lambda: our_capture_streams(pulse_server, daemon.process.pid) != [], 15)
        wait_until(lambda: notify_socket.count("WATCHDOG=1") >= 3, 15, "watchdog pings")

        paused = cli(["pause"], env)
        assert paused.returncode == 0, paused.stderr
        notify_socket.wait_for("STATUS=paused (microphone closed)", timeout=10)
        # The microphone is closed: no record stream of ours is left in the sound server.
        wait_until(lambda: our_capture_streams(pulse_server, daemon.process.pid) == [], 10)
        status = cli(["status", "--json"], env)
        assert status.returncode == 0, status.stderr
        assert '"paused": true' in status.stdout
        # A paused daemon is alive: the watchdog keeps being fed.
        pings = notify_socket.count("WATCHDOG=1")
        wait_until(lambda: notify_socket.count("WATCHDOG=1") >= pings + 2, 10, "pings, paused")
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.stderr
    assert "STOPPING=1" in notify_socket.lines()

    # Restarted, it is still paused: READY=1 all the same, the microphone never opened.
    before = len(notify_socket.lines())
    again = start(config, env)
    try:
        notify_socket.wait_for("READY=1", after=before)
        assert "STATUS=paused (microphone closed)" in notify_socket.lines()[before:]
        time.sleep(1.0)  # what an opening stream would need to show up
        assert our_capture_streams(pulse_server, again.process.pid) == []
        resumed = cli(["resume"], env)
        assert resumed.returncode == 0, resumed.stderr
        again.wait_for("listening", timeout=30)
        wait_until(lambda: our_capture_streams(pulse_server, again.process.pid) != [], 15)
        virtual_mic.feed(request_audio())
        again.wait_for("wake", timeout=30, model="hey_mycroft")
        again.wait_for("image", timeout=60)
    finally:
        assert again.terminate() == 0, again.stderr


def test_one_microphone_daemon_per_user_and_listen_without_the_wake_word(
    config_file: Callable[[str], Path],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
    session_bus: str,
) -> None:
    config = config_file(CONFIG)
    env = pulse_server.child_env({"DBUS_SESSION_BUS_ADDRESS": session_bus})
    daemon = start(config, env)
    try:
        daemon.wait_for("listening", timeout=STARTUP_S)
        second = cli(["run", "--config", str(config)], env)
        assert second.returncode == 75, second.stderr
        assert f"pid {daemon.process.pid}" in second.stderr
        listen = cli(["listen"], env)
        assert listen.returncode == 0, listen.stderr
        wake = daemon.wait_for("wake", timeout=10)
        assert wake["model"] == "listen-now"
        virtual_mic.feed(concat(data_audio("jfk.flac"), silence(2.0)))
        utterance = daemon.wait_for("utterance", timeout=30)
        assert utterance["id"] == wake["id"]
        daemon.wait_for("transcript", timeout=30, id=wake["id"])
    finally:
        assert daemon.terminate() == 0, daemon.stderr


def test_sighup_reloads_only_what_changed_and_keeps_a_bad_config_out(
    tmp_path: Path,
    config_file: Callable[[str], Path],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
) -> None:
    first_gallery, second_gallery = tmp_path / "first", tmp_path / "second"
    config = config_file(CONFIG + f'[gallery]\ndir = "{first_gallery}"\n')
    text = config.read_text(encoding="utf-8")
    daemon = start(config, pulse_server.child_env())
    try:
        daemon.wait_for("listening", timeout=STARTUP_S)
        wait_until(lambda: our_capture_streams(pulse_server, daemon.process.pid) != [], 15)
        streams = our_capture_streams(pulse_server, daemon.process.pid)

        config.write_text(text.replace("[wake]", "[wake]\nbogus_key = 1"), encoding="utf-8")
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "bogus_key" in daemon.stderr, 20, "the bad key named in the log")
        assert "stays in force" in daemon.stderr

        config.write_text(text.replace(str(first_gallery), str(second_gallery)), encoding="utf-8")
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded from" in daemon.stderr, 30, "the reload")
        assert "rebuilding writer" in daemon.stderr  # the gallery only: no model reloaded
        # [audio] did not change, so the microphone stayed open: the same record stream.
        assert our_capture_streams(pulse_server, daemon.process.pid) == streams

        virtual_mic.feed(request_audio())
        image = daemon.wait_for("image", timeout=90)
        assert Path(image["path"]).is_relative_to(second_gallery)
    finally:
        assert daemon.terminate() == 0, daemon.stderr
    assert not first_gallery.exists() or not any(first_gallery.rglob("*.png"))
    assert os.path.exists(image["path"])
