"""Stopping: one deadline, signals that raise while loading and only ask once running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from speech2image.shutdown import Deadline, Shutdown, StopRequested


def test_deadline_is_shared_and_never_negative() -> None:
    now = [100.0]
    deadline = Deadline(10.0, clock=lambda: now[0])
    assert deadline.left() == 10.0
    assert deadline.left(reserve=2.0) == 8.0
    now[0] = 109.0
    assert deadline.left(reserve=2.0) == 0.0
    assert deadline.left() == pytest.approx(1.0)


def test_no_deadline_until_a_stop_is_asked() -> None:
    shutdown = Shutdown()
    assert shutdown.left() is None
    called: list[str] = []
    shutdown.on_request(lambda: called.append("stop"))
    shutdown.request("test")
    assert called == ["stop"]
    left = shutdown.left()
    assert left is not None
    assert 9.0 < left <= 10.0
    late: list[str] = []
    shutdown.on_request(lambda: late.append("late"))  # registered after: called at once
    assert late == ["late"]


def test_signal_raises_while_loading_and_only_asks_while_running() -> None:
    shutdown = Shutdown()
    shutdown.install(backstop=False)  # armed, it would end pytest itself 9.5 s later
    try:
        with pytest.raises(StopRequested):
            signal.raise_signal(signal.SIGTERM)  # the handler raises here, in the main thread
        assert shutdown.requested
        assert shutdown.signal_name == "SIGTERM"
        again = Shutdown()
        again.install(backstop=False)
        with again.signals_only_ask():
            signal.raise_signal(signal.SIGINT)
        assert again.requested
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


STUCK = """
import time
from speech2image.shutdown import Shutdown
shutdown = Shutdown(seconds=2.0)
shutdown.install()
with shutdown.signals_only_ask():
    print("ready", flush=True)
    while True:
        time.sleep(0.1)  # stands in for a thread stuck in native code
"""


def test_the_backstop_exits_0_when_something_is_stuck() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=10)
    assert code == 0
    assert time.monotonic() - started >= 1.0  # it waited for the deadline, then left
    assert child.stderr is not None
    assert "exiting now" in child.stderr.read()
