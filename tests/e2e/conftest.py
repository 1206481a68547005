"""Fixtures for end-to-end tests that need a real audio stack.

``pulse_server`` (session) starts a private PulseAudio server with a virtual
microphone; ``virtual_mic`` (per test) feeds it; ``pulse_env`` (per test)
points the *current* process's sounddevice at it.  Subprocesses such as
``speech2image run`` get the server via ``env=pulse_server.child_env()``.
See ``pulse.py`` for why things are done the way they are.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.browser import CALL_REPORT, chromium, fake_mic_wav
from tests.e2e.dbus_session import DEFAULT_CAPS, DbusError, DbusSession, NotificationServer, OwnBus
from tests.e2e.dunst import Dunst, DunstError, Xvfb, missing
from tests.e2e.pulse import PulseError, PulseServer, VirtualMic, reinit_portaudio

if TYPE_CHECKING:
    from collections.abc import Iterator


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``e2e`` marker (also declared in pyproject)."""
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test using a private PulseAudio server and real subprocesses",
    )


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """Start one private PulseAudio server for the whole session.

    Fails when PulseAudio is not installed (`make test` installs it), and (with the
    server log) when it does not come up within ~10 s.  Always killed on teardown.
    """
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.fail("pulseaudio/pactl not installed; `make test` installs them (apt)")
    try:
        server = PulseServer.start(tmp_path_factory.mktemp("pulse"))
    except PulseError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def virtual_mic(pulse_server: PulseServer) -> Iterator[VirtualMic]:
    """A running feeder for the virtual mic; silence until ``feed()`` is called.

    Teardown stops the feeder and re-plugs the mic if the test unplugged it,
    so every test starts with ``virtmic`` present and the default source.
    """
    if not pulse_server.mic_plugged:
        pulse_server.replug_mic()
    mic = VirtualMic(pulse_server.fifo, server=pulse_server)
    mic.start()
    try:
        yield mic
    finally:
        mic.stop()
        if not pulse_server.mic_plugged:
            pulse_server.replug_mic()


@pytest.fixture
def pulse_env(pulse_server: PulseServer) -> Iterator[dict[str, str]]:
    """Point this process's sounddevice/PortAudio at the private server.

    Sets ``PULSE_SERVER``/``PULSE_CLIENTCONFIG`` in ``os.environ`` and
    re-initialises PortAudio (it enumerates devices only at init); restores
    both afterwards.  Not needed for subprocesses -- pass
    ``pulse_server.child_env()`` to them instead.
    """
    with reinit_portaudio(pulse_server.env):
        yield pulse_server.env


@pytest.fixture(scope="session")
def session_bus() -> Iterator[str]:
    """A private ``dbus-daemon`` session bus for the whole session; yields its address.

    Fails when dbus-daemon is not installed (`make test` installs it); always killed
    on teardown.
    """
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon not installed; `make test` installs it (apt)")
    try:
        bus = DbusSession.start()
    except DbusError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield bus.address
    finally:
        bus.stop()
        shutil.rmtree(bus.workdir, ignore_errors=True)


@pytest.fixture
def private_bus() -> Iterator[DbusSession]:
    """A bus of this test's own, to restart or kill without disturbing the others."""
    bus = DbusSession.start()
    yield bus
    bus.stop()
    shutil.rmtree(bus.workdir, ignore_errors=True)


@pytest.fixture
def own_bus(private_bus: DbusSession, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnBus]:
    """``private_bus`` as this process's session bus, with recording servers started on
    it by ``own_bus.server()``; teardown stops them, then the bus goes."""
    own = OwnBus(private_bus)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", private_bus.address)
    try:
        yield own
    finally:
        own.close()


@pytest.fixture
def notification_server(
    session_bus: str, request: pytest.FixtureRequest
) -> Iterator[NotificationServer]:
    """A fresh recording notification server on ``session_bus``.

    Capabilities default to ``DEFAULT_CAPS``; override per test with
    ``@pytest.mark.parametrize("notification_server", [("body",)], indirect=True)``.
    Teardown releases the name and disconnects, so the next test starts clean.
    """
    capabilities = getattr(request, "param", DEFAULT_CAPS)
    server = NotificationServer(session_bus, tuple(capabilities)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def _daemon_config(daemon_config_env: Path) -> Path:
    """Every daemon these tests start uses the tiny image model and a private gallery."""
    return daemon_config_env


# The real-browser fixtures (gallery page), re-exported for the tests: Chromium through
# Selenium, see browser.py.
__all__ = ["chromium", "fake_mic_wav"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep the call phase's report on the item, so fixtures know at teardown whether
    the test passed (a browser screenshots either way, but checks its console only then)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[CALL_REPORT] = report


# A real notification daemon: dunst on a virtual X display, see dunst.py.
@pytest.fixture(scope="session")
def xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Xvfb]:
    """One virtual X display for the session (dunst draws on it); always killed."""
    absent = missing()
    if absent:
        pytest.fail(f"{', '.join(absent)} not installed; `make test` installs them (apt)")
    try:
        display = Xvfb.start(tmp_path_factory.mktemp("xvfb"))
    except DunstError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield display
    finally:
        display.stop()


@pytest.fixture
def dunst(
    session_bus: str, xvfb: Xvfb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dunst]:
    """dunst owning org.freedesktop.Notifications on ``session_bus`` for one test.

    Teardown stops it (whatever the test did to it), which frees the name for the next
    test's server."""
    try:
        daemon = Dunst.start(session_bus, xvfb.display, tmp_path_factory.mktemp("dunst"))
    except DunstError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()
