"""The real daemon run by a real `systemd --user` from the unit `service install` wrote.

Only the timers are shortened (a drop-in: a 5 s watchdog, 1 s between restarts) and the
output goes to a file; the sandbox, Type=notify and the restart policy are the unit's.
The daemon listens to a PulseAudio server whose socket is in the runtime dir (where the
desktop's is) and talks to a session bus there; the test drives it like a user: it
speaks a request, kills it, reloads it, hangs it, stops it and breaks its config.
Defined only where a user manager can run (see user_manager.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech2image.config import WakeConfig
from speech2image.listening.wake_models import wake_model_dir
from speech2image.service.unit import UNIT_NAME
from tests.e2e.dbus_session import DbusSession, wait_until
from tests.e2e.pulse import PulseServer, VirtualMic
from tests.e2e.user_manager import CAN_RUN_MANAGER, Home, UserManager, private_base
from tests.support import concat, data_audio, silence

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = """
[audio]
device = "pulse"
[wake]
models = ["hey_mycroft"]
model_dir = "{wake}"
[listen]
silence_timeout = 1.0
[moderation]
backends = ["lexicon"]
[image]
model = "{image}"
width = 64
height = 64
steps = 2
[gallery]
dir = "my pictures"
[notify]
enabled = false
[feedback]
sound = false
"""
STARTUP_S = 120


def audio_server(home: Home) -> PulseServer:
    """A PulseAudio server whose socket is where the unit lets the daemon reach it."""
    workdir = home.runtime / "pa"
    for sub in ("runtime/pulse", "state", "config", "home"):
        (workdir / sub).mkdir(mode=0o700, parents=True)
    (workdir / "client.conf").write_text("autospawn = no\n", encoding="utf-8")
    return PulseServer.start(home.base, workdir=workdir)


def daemon_status(home: Home, bus: DbusSession) -> dict[str, object]:
    """`speech2image status --json` over the session bus: the daemon reached it."""
    done = subprocess.run(
        [sys.executable, "-m", "speech2image.cli", "status", "--json"],
        env={**home.env(), "DBUS_SESSION_BUS_ADDRESS": bus.address},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status: dict[str, object] = json.loads(done.stdout)
    return status


if CAN_RUN_MANAGER:

    @pytest.fixture
    def home() -> Iterator[Home]:
        base = private_base()
        try:
            yield Home(base)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    @pytest.fixture
    def manager(home: Home) -> Iterator[UserManager]:
        running = UserManager(home)
        try:
            yield running
        finally:
            running.stop()

    def test_the_daemon_as_a_unit_draws_restarts_reloads_stops(
        home: Home, manager: UserManager, tiny_sd_model: Path
    ) -> None:
        """READY from the daemon; a spoken request drawn into the gallery through the
        sandbox; the session bus reached; restarted after SIGKILL and after a hang
        (SIGSTOP: no more WATCHDOG=1); reloaded in place; stopped cleanly; and a config
        error (exit 78) not restarted."""
        image = shutil.copytree(tiny_sd_model, home.base / "tiny-sd")  # /tmp is private
        wake = wake_model_dir(WakeConfig())
        home.config.write_text(CONFIG.format(wake=wake, image=image), encoding="utf-8")
        pulse = audio_server(home)
        (home.runtime / "dbus").mkdir()
        bus = DbusSession.start(home.runtime / "dbus")
        mic = VirtualMic(pulse.fifo, server=pulse)
        mic.start()
        try:
            session = {**pulse.env, "DBUS_SESSION_BUS_ADDRESS": bus.address}
            for key, value in session.items():  # as a desktop session exports them
                manager.systemctl("set-environment", f"{key}={value}")
            home.drop_in("WatchdogSec=5\nRestartSec=1\nTimeoutAbortSec=2\n")
            installed = home.cli("install", "--config", str(home.config), "--now")
            assert installed.returncode == 0, installed.stderr
            manager.wait_for("ActiveState", "active", timeout=STARTUP_S)
            assert manager.show("StatusText") == "listening"
            # READY=1 comes once the models are warm, before the microphone is open: what
            # is said before the record stream exists is not heard, by anyone.
            wait_until(lambda: pulse.source_outputs() != [], 30, "the daemon's record stream")
            mic.feed(concat(data_audio("hey_mycroft_test.wav"), data_audio("jfk.flac")))
            mic.feed(silence(2.0))
            deadline = time.monotonic() + 90
            while not list(home.gallery.rglob("*.png")):
                assert time.monotonic() < deadline, manager.explain()
                time.sleep(0.2)
            assert daemon_status(home, bus)["state"] == "listening"
            restart_reload_stop(home, manager)
        finally:
            mic.stop()
            pulse.stop()
            bus.stop()


def restart_reload_stop(home: Home, manager: UserManager) -> None:
    first = manager.show("MainPID")
    os.kill(int(first), signal.SIGKILL)
    manager.wait_for("NRestarts", "1")
    manager.wait_for("ActiveState", "active", timeout=STARTUP_S)

    second = manager.show("MainPID")
    reloaded = manager.systemctl("reload", UNIT_NAME)
    assert reloaded.returncode == 0, manager.explain()
    manager.wait_for("StatusText", "listening")
    assert manager.show("MainPID") == second

    os.kill(int(second), signal.SIGSTOP)  # a hung process sends no WATCHDOG=1
    manager.wait_for("NRestarts", "2", timeout=30)
    manager.wait_for("ActiveState", "active", timeout=STARTUP_S)

    assert manager.systemctl("stop", UNIT_NAME).returncode == 0
    assert (manager.show("Result"), manager.show("ExecMainStatus")) == ("success", "0")

    home.config.write_text("[wake]\nthreshold = 7\n", encoding="utf-8")
    manager.systemctl("reset-failed", UNIT_NAME)
    manager.systemctl("start", UNIT_NAME)
    manager.wait_for("ActiveState", "failed", timeout=STARTUP_S)
    time.sleep(2)  # RestartSec=1: a restart would have happened by now
    assert manager.show("ExecMainStatus") == "78"
    assert (manager.show("ActiveState"), manager.show("NRestarts")) == ("failed", "0")
