"""The D-Bus control (``io.github.speech2image.Daemon1``) against a real dbus-daemon.

The thing under test is the bus layer: the service exporting a target, the client and
the ``pause|resume|status|listen`` commands. So the target is a small real object with
a lock and a state dict (daemon-level behaviour is tested with the daemon). Commands
run as a user runs them, in a subprocess, finding the bus through the environment.
No blind sleeps: tests poll with deadlines the code promises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from speech2image.control import BUS_NAME, INTERFACE, OBJECT_PATH
from speech2image.control.bus import ControlService, StatusValue, retry_delay, status_variants
from speech2image.control.client import NO_DAEMON, ControlError, call, format_status
from tests.e2e.dbus_session import DbusSession, wait_until

pytestmark = pytest.mark.e2e

PAUSED = "paused: resume first"


class Target:
    """A minimal daemon stand-in: thread-safe, quick, refuses ListenNow while paused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.listens = 0
        self.state: dict[str, StatusValue] = {
            "state": "listening",
            "detail": "listening",
            "paused": False,
            "queue": 2,
            "last_image": "/home/u/Pictures/speech2image/2f1c0e9ab3d4.png",
            "microphone": "USB Audio",
            "uptime": 12.5,
        }

    def pause(self) -> None:
        with self._lock:
            self.state.update(state="paused", detail="paused", paused=True)

    def resume(self) -> None:
        with self._lock:
            self.state.update(state="listening", detail="listening", paused=False)

    def listen_now(self) -> None:
        with self._lock:
            if self.state["paused"]:
                raise RuntimeError(PAUSED)
            self.listens += 1
            self.state.update(state="capturing", detail="capturing")

    def status(self) -> Mapping[str, StatusValue]:
        with self._lock:
            return dict(self.state)


@pytest.fixture
def target() -> Target:
    return Target()


@pytest.fixture
def service(session_bus: str, target: Target) -> Iterator[ControlService]:
    control = ControlService(target, session_bus)
    assert control.start()
    yield control
    control.close()


def cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speech2image.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(env),
        check=False,
    )


def bus_env(address: str) -> dict[str, str]:
    return {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("service")
def test_commands_round_trip_through_the_cli(session_bus: str, target: Target) -> None:
    env = bus_env(session_bus)
    paused = cli("pause", env=env)
    assert (paused.returncode, paused.stderr) == (0, "")
    assert "paused" in paused.stdout
    assert target.status()["paused"] is True

    status = cli("status", env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[:3] == ["state       paused", "detail      paused", "paused      yes"]
    assert "microphone  USB Audio" in lines

    assert cli("resume", env=env).returncode == 0
    assert target.status()["paused"] is False
    listen = cli("listen", env=env)
    assert (listen.returncode, target.listens) == (0, 1)

    as_json = cli("status", "--json", env=env)
    assert json.loads(as_json.stdout) == target.status()


@pytest.mark.usefixtures("service")
def test_status_keeps_each_value_type(session_bus: str, target: Target) -> None:
    status = call("Status", session_bus)
    assert status == target.status()
    assert [type(status[k]) for k in ("paused", "queue", "uptime", "state")] == [
        bool,
        int,
        float,
        str,
    ]


@pytest.mark.usefixtures("service")
def test_listen_while_paused_says_why_and_exits_1(session_bus: str, target: Target) -> None:
    target.pause()
    result = cli("listen", env=bus_env(session_bus))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"speech2image: {PAUSED}\n"
    assert target.listens == 0


def test_a_failing_target_is_an_error_reply_not_a_dead_service(
    session_bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Target):
        def status(self) -> Mapping[str, StatusValue]:
            raise KeyError("microphone")

    caplog.set_level(logging.WARNING)
    control = ControlService(Broken(), session_bus)
    try:
        assert control.start()
        with pytest.raises(ControlError, match="'microphone'"):
            call("Status", session_bus)
        call("Pause", session_bus)  # still answering
    finally:
        control.close()
    assert warnings(caplog) == ["D-Bus Status failed"]


@pytest.mark.usefixtures("service")
def test_the_readme_shortcut_commands_work(session_bus: str, target: Target) -> None:
    """What the README tells people to bind to a key, run as written."""
    env = bus_env(session_bus)
    gdbus = subprocess.run(
        ["gdbus", "call", "--session", "--dest", BUS_NAME, "--object-path", OBJECT_PATH,
         "--method", f"{INTERFACE}.ListenNow"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert (gdbus.returncode, gdbus.stdout.strip()) == (0, "()"), gdbus.stderr
    busctl = subprocess.run(
        ["busctl", "--user", "call", BUS_NAME, OBJECT_PATH, INTERFACE, "ListenNow"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert busctl.returncode == 0, busctl.stderr
    dbus_send = subprocess.run(
        ["dbus-send", "--session", "--print-reply", f"--dest={BUS_NAME}", OBJECT_PATH,
         f"{INTERFACE}.Status"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert dbus_send.returncode == 0, dbus_send.stderr
    assert 'string "capturing"' in dbus_send.stdout
    assert target.listens == 2


def test_state_changed_reaches_a_subscriber(session_bus: str, service: ControlService) -> None:
    async def subscribe_and_wait() -> list[list[str]]:
        bus = await MessageBus(bus_address=session_bus).connect()
        received: list[list[str]] = []
        got_two = asyncio.Event()

        def on_message(message: Message) -> None:
            if message.message_type == MessageType.SIGNAL and message.member == "StateChanged":
                assert (message.interface, message.path) == (INTERFACE, OBJECT_PATH)
                received.append(list(message.body))
                if len(received) == 2:
                    got_two.set()

        bus.add_message_handler(on_message)
        rule = f"type='signal',interface='{INTERFACE}',member='StateChanged'"
        match = Message(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "AddMatch", signature="s", body=[rule],
        )  # fmt: skip
        assert (await bus.call(match)).message_type == MessageType.METHOD_RETURN
        service.state_changed("drawing", "drawing 2/4")  # from this (non-bus) thread
        service.state_changed("listening", "")
        try:
            await asyncio.wait_for(got_two.wait(), 5.0)
        finally:
            bus.disconnect()
        return received

    assert asyncio.run(subscribe_and_wait()) == [["drawing", "drawing 2/4"], ["listening", ""]]


def test_no_daemon_says_how_to_start_one(session_bus: str) -> None:
    result = cli("status", env=bus_env(session_bus))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"speech2image: {NO_DAEMON}\n"


def test_no_session_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # no "bus" socket in it
    result = cli("pause", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("speech2image: no D-Bus session bus ($DBUS_SESSION_BUS_")

    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    caplog.set_level(logging.WARNING)
    control = ControlService(Target())
    assert control.start() is False
    control.close()
    (warning,) = warnings(caplog)
    assert warning.startswith("D-Bus control is off: no session bus")


def test_a_second_service_leaves_the_name_to_the_first(
    session_bus: str, service: ControlService, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    second = ControlService(Target(), session_bus)
    try:
        assert second.start() is False
        assert not second.connected
    finally:
        second.close()
    (warning,) = warnings(caplog)
    assert f"another speech2image (pid {os.getpid()}) owns {BUS_NAME}" in warning
    call("ListenNow", session_bus)
    assert target.listens == 1  # the first one still answers


def test_back_after_the_bus_restarts(
    private_bus: DbusSession, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    control = ControlService(target, private_bus.address)
    try:
        assert control.start()
        private_bus.restart()

        def answers() -> bool:
            try:
                call("ListenNow", private_bus.address, timeout=1.0)
            except ControlError:
                return False
            return True

        wait_until(answers, timeout=10.0, what="the control to be back after the restart")
        assert target.listens == 1
    finally:
        control.close()
    assert warnings(caplog) == [
        "D-Bus control is off: lost the session bus connection; reconnecting in the background"
    ]
    assert any(r.getMessage().startswith("D-Bus control is back on") for r in caplog.records)


def test_a_bus_that_comes_later_is_used(
    private_bus: DbusSession, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """start() says False at once, but keeps trying: the daemon need not wait for a bus."""
    private_bus.stop()
    caplog.set_level(logging.WARNING)
    control = ControlService(target, private_bus.address)
    try:
        assert control.start() is False
        private_bus.restart()
        wait_until(lambda: control.connected, timeout=10.0, what="the service to connect")
        call("ListenNow", private_bus.address)
        assert target.listens == 1
    finally:
        control.close()
    (warning,) = warnings(caplog)
    assert warning.startswith(f"D-Bus control is off: no session bus at {private_bus.address}")


def test_close_keeps_its_deadline_when_the_bus_is_gone(
    private_bus: DbusSession, target: Target
) -> None:
    control = ControlService(target, private_bus.address)
    assert control.start()
    private_bus.stop()
    wait_until(lambda: not control.connected, what="the service to notice the bus is gone")
    _assert_closes_within(control, 2.0)


def test_a_frozen_bus_neither_hangs_start_nor_close(
    private_bus: DbusSession, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """A dbus-daemon that accepts the connection but never answers (stopped)."""
    process = private_bus._process
    assert process is not None
    caplog.set_level(logging.WARNING)
    process.send_signal(signal.SIGSTOP)
    try:
        control = ControlService(target, private_bus.address)
        assert control.start(timeout=0.5) is False
        (warning,) = warnings(caplog)
        assert "did not answer within 0.5 s" in warning
        _assert_closes_within(control, 1.0)
        with pytest.raises(ControlError, match="no answer to Status within 1 s"):
            call("Status", private_bus.address, timeout=1.0)
    finally:
        process.send_signal(signal.SIGCONT)


def _assert_closes_within(control: ControlService, timeout: float) -> None:
    started = time.monotonic()
    control.close(timeout)
    assert time.monotonic() - started < timeout + 0.5  # close()'s own promise
    assert not [t for t in threading.enumerate() if t.name == "control-bus"]


def test_retry_delay_backs_off_to_a_minute() -> None:
    assert [retry_delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(10_000) == 60


def test_status_values_carry_their_dbus_types() -> None:
    variants = status_variants({"paused": True, "queue": 3, "load": 0.5, "state": "drawing"})
    assert {k: v.signature for k, v in variants.items()} == {
        "paused": "b",
        "queue": "x",
        "load": "d",
        "state": "s",
    }


def test_status_is_printed_readably() -> None:
    text = format_status({"zeta": 1, "last_image": "", "paused": False, "state": "listening"})
    assert text.splitlines() == [
        "state       listening",
        "paused      no",
        "last image  none",
        "zeta        1",
    ]
