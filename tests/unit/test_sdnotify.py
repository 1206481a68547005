"""sd_notify on a real datagram socket standing in for systemd, and the watchdog heartbeat."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech2image.service.sdnotify import Heartbeat, SystemdNotifier


class FakeManager:
    """The service manager's end: a bound AF_UNIX datagram socket, read by the test."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.name = "@" + address[1:] if address.startswith("\0") else address

    def receive(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def drain(self) -> list[bytes]:
        """Every datagram waiting now, without blocking."""
        self.sock.setblocking(False)
        found: list[bytes] = []
        try:
            while True:
                found.append(self.sock.recv(4096))
        except BlockingIOError:
            return found

    def collect(self, seconds: float) -> list[bytes]:
        """Every datagram that arrives within ``seconds`` from now."""
        end = time.monotonic() + seconds
        found: list[bytes] = []
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                found.append(self.sock.recv(4096))
            except TimeoutError:
                break
        return found


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[FakeManager]:
    fake = FakeManager(str(tmp_path / "notify"))
    yield fake
    fake.sock.close()


def notifier_for(fake: FakeManager, **extra: str) -> SystemdNotifier:
    return SystemdNotifier.from_environment({"NOTIFY_SOCKET": fake.name, **extra})


def test_without_notify_socket_every_call_is_a_silent_no_op() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    notifier.ready("listening")
    notifier.status("drawing 1/4")
    notifier.watchdog()
    notifier.stopping()
    notifier.reloading()
    assert notifier.watchdog_interval() is None


def test_the_exact_datagrams_reach_a_socket_path(manager: FakeManager) -> None:
    notifier = notifier_for(manager)
    assert notifier.enabled
    notifier.ready()
    assert manager.receive() == b"READY=1"
    notifier.ready("listening")
    assert manager.receive() == b"READY=1\nSTATUS=listening"
    notifier.status("drawing 3/4")
    assert manager.receive() == b"STATUS=drawing 3/4"
    notifier.watchdog()
    assert manager.receive() == b"WATCHDOG=1"
    notifier.stopping("stopping")
    assert manager.receive() == b"STOPPING=1\nSTATUS=stopping"
    notifier.stopping()
    assert manager.receive() == b"STOPPING=1"


def test_an_abstract_socket_name_is_reached() -> None:
    abstract = FakeManager("\0speech2image-test-" + uuid.uuid4().hex)
    try:
        assert abstract.name.startswith("@")
        notifier = notifier_for(abstract)
        notifier.ready("waiting for microphone 'USB Audio'")
        assert abstract.receive() == b"READY=1\nSTATUS=waiting for microphone 'USB Audio'"
    finally:
        abstract.sock.close()


def test_an_unchanged_status_is_not_sent_again(manager: FakeManager) -> None:
    notifier = notifier_for(manager)
    notifier.status("listening")
    notifier.status("listening")
    notifier.status("transcribing")
    notifier.status("transcribing")
    notifier.status("listening")
    time.sleep(0.05)  # datagrams on a local socket are queued at once; this is slack
    assert manager.drain() == [b"STATUS=listening", b"STATUS=transcribing", b"STATUS=listening"]


def test_a_newline_in_a_status_cannot_smuggle_another_key(manager: FakeManager) -> None:
    notifier = notifier_for(manager)
    notifier.status("waiting for microphone 'x'\nREADY=1")
    assert manager.receive() == b"STATUS=waiting for microphone 'x' READY=1"


def test_reloading_carries_the_monotonic_clock(manager: FakeManager) -> None:
    notifier = notifier_for(manager)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    head, stamp = manager.receive().decode().split("\n")
    assert head == "RELOADING=1"
    key, value = stamp.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_watchdog_interval_is_half_the_timeout_and_only_for_the_watched_pid(
    manager: FakeManager,
) -> None:
    assert notifier_for(manager, WATCHDOG_USEC="30000000").watchdog_interval() == 15.0
    mine = notifier_for(manager, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()))
    assert mine.watchdog_interval() == 15.0
    other = notifier_for(manager, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert other.watchdog_interval() is None
    assert notifier_for(manager).watchdog_interval() is None
    assert notifier_for(manager, WATCHDOG_USEC="soon").watchdog_interval() is None
    assert notifier_for(manager, WATCHDOG_USEC="0").watchdog_interval() is None


def test_a_socket_that_goes_away_is_survived_and_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone"
    fake = FakeManager(str(path))
    notifier = notifier_for(fake)
    notifier.ready()
    assert fake.receive() == b"READY=1"
    fake.sock.close()
    path.unlink()
    with caplog.at_level(logging.DEBUG, logger="speech2image.service.sdnotify"):
        for attempt in range(3):
            notifier.watchdog()
            notifier.status(f"still here {attempt}")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    back = FakeManager(str(path))  # the manager is back (a re-executed systemd)
    try:
        notifier.watchdog()
        assert back.receive() == b"WATCHDOG=1"
    finally:
        back.sock.close()


def test_a_manager_that_stops_reading_never_blocks_the_sender(
    manager: FakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    """The audio loop reports its state: a full socket queue must fail the send, not wait."""
    notifier = notifier_for(manager)
    sender = threading.Thread(
        target=lambda: [notifier.status(f"drawing {n}/4000") for n in range(4000)], daemon=True
    )
    with caplog.at_level(logging.WARNING, logger="speech2image.service.sdnotify"):
        sender.start()
        sender.join(timeout=20)
    assert not sender.is_alive(), "a send blocked on the full queue"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # once, then DEBUG
    assert manager.drain()[0] == b"STATUS=drawing 0/4000"


def test_a_socket_value_that_is_no_address_disables_notifying() -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "relative/path"})
    assert not notifier.enabled
    notifier.ready()  # nothing to send to, nothing raised


def test_heartbeat_is_due_only_while_beats_are_recent() -> None:
    now = [1000.0]
    heartbeat = Heartbeat(SystemdNotifier(), 5.0, max_silence=10.0, clock=lambda: now[0])
    assert heartbeat.due(1000.0)
    assert heartbeat.due(1010.0)
    assert not heartbeat.due(1010.5)
    now[0] = 1020.0
    heartbeat.beat()
    assert heartbeat.due(1025.0)
    assert not heartbeat.due(1031.0)


def test_heartbeat_starts_no_thread_when_systemd_does_not_watch(manager: FakeManager) -> None:
    for heartbeat in (
        Heartbeat(SystemdNotifier(), 0.01, max_silence=1.0),  # no NOTIFY_SOCKET
        Heartbeat(notifier_for(manager), None, max_silence=1.0),  # no WatchdogSec
    ):
        heartbeat.start()
        heartbeat.beat()
        time.sleep(0.05)
        heartbeat.stop()
    assert manager.drain() == []


def beat_for(heartbeat: Heartbeat, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        heartbeat.beat()
        time.sleep(0.01)


def test_watchdog_pings_stop_when_the_loop_stops_beating_and_resume_with_it(
    manager: FakeManager,
) -> None:
    notifier = notifier_for(manager, WATCHDOG_USEC="100000")  # WatchdogSec=0.1 s
    interval = notifier.watchdog_interval()
    assert interval == 0.05
    heartbeat = Heartbeat(notifier, interval, max_silence=0.2)
    heartbeat.start()
    try:
        beat_for(heartbeat, 0.4)
        assert manager.drain().count(b"WATCHDOG=1") >= 2  # about eight were due
        time.sleep(0.2 + 0.25)  # past max_silence, with slack for one ping in flight
        manager.drain()
        assert manager.collect(0.4) == []  # a stalled loop: systemd would restart us
        beat_for(heartbeat, 0.3)
        assert b"WATCHDOG=1" in manager.drain()
    finally:
        heartbeat.stop()
    manager.drain()
    assert manager.collect(0.2) == []  # stopped: no thread left pinging
