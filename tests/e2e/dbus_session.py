"""A private D-Bus session bus and a recording ``org.freedesktop.Notifications`` server.

Why this exists
---------------
The notifier must be tested against a *real* bus daemon and a real D-Bus peer
(marshalling, name ownership, broadcast signals and match rules are where bugs
hide), without touching a desktop's session bus.  So:

* :class:`DbusSession` runs ``dbus-daemon --nofork`` with its own config file that
  listens on a unix socket in a temp dir (short path: unix socket paths are
  limited to 108 bytes).  Its address has no ``guid=`` so the same address still
  works after :meth:`DbusSession.restart` (used to test reconnecting).  Readiness
  is the daemon printing its address (``--print-address``): it does so only once
  the socket is listening.  Always killed on :meth:`stop`.
* :class:`NotificationServer` is a dbus-fast :class:`ServiceInterface` on its own
  connection, in its own thread with its own asyncio loop (dbus-fast is
  asyncio-only, and the code under test runs its own loop in another thread).
  It records every ``Notify`` call, hints converted from ``Variant`` to plain
  values, and every ``CloseNotification``, in lists guarded by a
  :class:`threading.Condition`, so tests wait on conditions instead of sleeping.
  Like most servers it honours ``replaces_id`` (the reply is the replaced id while
  that notification is open); ``honour_replaces=False`` makes it one of the servers
  that answer every ``Notify`` with a new id, ``strict_replaces=True`` one that
  refuses to replace a notification it does not know.

dbus-fast pitfalls met here: ``@dbus_method`` wraps the function so that calling
it from Python returns ``None``; signals are emitted by *calling* the
``@dbus_signal`` method, which must happen on the bus's loop thread
(``call_soon_threadsafe``); string annotations are resolved in the module's
globals, so ``Annotated``/``DBusSignature`` must be imported at runtime, not
under ``TYPE_CHECKING``, and a method that returns nothing must have *no* return
annotation: ``-> None`` is read as the string "None" and rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import DBusError, ErrorType, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from speech2image.desktop.bus import quiet_disconnects

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
DEFAULT_CAPS = ("actions", "body", "body-markup")
HOLD_LIMIT_S = 4.0  # below the notifier's 5 s call timeout

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class DbusError(RuntimeError):
    """dbus-daemon is missing or did not come up."""


class DbusSession:
    """A private ``dbus-daemon`` for one test session; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "bus"
        self.config = workdir / "session.conf"
        self.log = workdir / "dbus-daemon.log"
        self.config.write_text(_CONFIG.format(socket=self.socket))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    @classmethod
    def start(cls, workdir: Path | None = None) -> DbusSession:
        if shutil.which("dbus-daemon") is None:
            raise DbusError("dbus-daemon is not installed")
        session = cls(workdir or Path(tempfile.mkdtemp(prefix="s2i-dbus-")))
        session._spawn()
        return session

    def _spawn(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a killed daemon may leave it behind
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                ["dbus-daemon", f"--config-file={self.config}", "--nofork", "--print-address"],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if ready else b""
        if not line.startswith(b"unix:"):
            self.stop()
            raise DbusError(f"dbus-daemon did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill the daemon (SIGTERM, then SIGKILL) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> None:
        """A new daemon on the same socket: every client loses its connection."""
        self.stop()
        self._spawn()

    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.address}


@dataclass(frozen=True)
class NotifyCall:
    """One recorded ``Notify`` call, with plain Python values."""

    id: int
    app_name: str
    replaces_id: int
    app_icon: str
    summary: str
    body: str
    actions: list[str]
    hints: dict[str, Any]
    timeout: int


StrList = Annotated[list[str], DBusSignature("as")]
Hints = Annotated[dict[str, Variant], DBusSignature("a{sv}")]


class _Interface(ServiceInterface):
    def __init__(self, server: NotificationServer) -> None:
        super().__init__(NAME)
        self._server = server

    @dbus_method()
    def Notify(  # noqa: N802 - the D-Bus method's name and arguments
        self,
        app_name: DBusStr,
        replaces_id: DBusUInt32,
        app_icon: DBusStr,
        summary: DBusStr,
        body: DBusStr,
        actions: StrList,
        hints: Hints,
        expire_timeout: DBusInt32,
    ) -> DBusUInt32:
        plain = {key: value.value for key, value in hints.items()}
        args = (app_name, replaces_id, app_icon, summary, body, list(actions), plain)
        return self._server._record(*args, expire_timeout)

    @dbus_method()
    def GetCapabilities(self) -> StrList:  # noqa: N802
        return list(self._server.capabilities)

    @dbus_method()
    def GetServerInformation(  # noqa: N802
        self,
    ) -> Annotated[tuple[str, str, str, str], DBusSignature("ssss")]:
        return ("recorder", "speech2image-tests", "1.0", "1.2")

    @dbus_method()
    def CloseNotification(self, id: DBusUInt32):  # type: ignore[no-untyped-def]  # noqa: N802
        # No "-> None": under PEP 563 dbus-fast reads the string "None" as a
        # signature and fails with "expected str, got NoneType".
        self._server._record_close(id)
        self.NotificationClosed(id, 3)

    @dbus_signal()
    def ActionInvoked(  # noqa: N802
        self,
        id: int,
        action_key: str,
    ) -> Annotated[tuple[int, str], DBusSignature("us")]:
        return (id, action_key)

    @dbus_signal()
    def NotificationClosed(  # noqa: N802
        self,
        id: int,
        reason: int,
    ) -> Annotated[tuple[int, int], DBusSignature("uu")]:
        return (id, reason)


class NotificationServer:
    """A recording notification server on ``address``; start() it, stop() it."""

    def __init__(
        self,
        address: str,
        capabilities: tuple[str, ...] = DEFAULT_CAPS,
        honour_replaces: bool = True,
        strict_replaces: bool = False,
    ) -> None:
        self.address = address
        self.capabilities = capabilities
        self.honour_replaces = honour_replaces
        self.strict_replaces = strict_replaces
        self._calls: list[NotifyCall] = []
        self._closed: list[int] = []
        self._open: set[int] = set()  # ids shown and not closed (by CloseNotification)
        self._last_id = 0
        # Set to an unset Event to make the server hang after recording a Notify (as a
        # slow server would) until the Event is set, for at most HOLD_LIMIT_S.
        self.hold: threading.Event | None = None
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        # A reply sent after its bus went away (a test restarts it) is no test failure.
        self._loop.set_exception_handler(quiet_disconnects)
        self._thread = threading.Thread(target=self._loop.run_forever, name="notif-server")
        self._bus: MessageBus | None = None
        self._interface = _Interface(self)

    def start(self, timeout: float = 5.0) -> NotificationServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(timeout)
        return self

    async def _connect(self) -> None:
        self._bus = await MessageBus(bus_address=self.address).connect()
        self._bus.export(PATH, self._interface)
        reply = await self._bus.request_name(NAME)
        if reply != RequestNameReply.PRIMARY_OWNER:
            raise DbusError(f"could not own {NAME}: {reply}")

    async def _disconnect(self) -> None:
        if self._bus is None:
            return
        if self._bus.connected:
            with contextlib.suppress(Exception):
                await self._bus.release_name(NAME)
            self._bus.disconnect()
        # Always await it: after a dropped connection it holds an EOFError that
        # asyncio would otherwise log as "Future exception was never retrieved".
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._bus.wait_for_disconnect(), 2.0)

    def stop(self) -> None:
        """Release the name, disconnect, stop the loop; safe to call twice."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    def _record(self, *args: Any) -> int:
        replaces_id = args[1]
        with self._changed:
            if self.strict_replaces and replaces_id and replaces_id not in self._open:
                raise DBusError(ErrorType.FAILED, f"no notification {replaces_id}")
            if self.honour_replaces and replaces_id in self._open:
                nid = replaces_id
            else:
                self._last_id += 1
                nid = self._last_id
            call = NotifyCall(nid, *args)
            self._calls.append(call)
            self._open.add(nid)
            self._changed.notify_all()
        if self.hold is not None:
            self.hold.wait(HOLD_LIMIT_S)
        return call.id

    def _record_close(self, notification_id: int) -> None:
        with self._changed:
            self._closed.append(notification_id)
            self._open.discard(notification_id)
            self._changed.notify_all()

    @property
    def closed(self) -> list[int]:
        """The ids ``CloseNotification`` was called with, in order."""
        with self._changed:
            return list(self._closed)

    @property
    def calls(self) -> list[NotifyCall]:
        with self._changed:
            return list(self._calls)

    def wait_for_calls(self, count: int, timeout: float = 5.0) -> list[NotifyCall]:
        """At least ``count`` calls, waiting up to ``timeout``; AssertionError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._calls) >= count, timeout):
                raise AssertionError(f"expected {count} Notify calls, got {self._calls}")
            return list(self._calls)

    def invoke_action(self, notification_id: int, key: str = "default") -> None:
        """Emit ``ActionInvoked`` as if the user clicked, from the server's loop."""
        self._run_in_loop(lambda: self._interface.ActionInvoked(notification_id, key))

    def close_notification(self, notification_id: int, reason: int = 2) -> None:
        """Emit ``NotificationClosed`` as if it expired (1) or the user dismissed it (2)."""
        with self._changed:
            self._open.discard(notification_id)
        self._run_in_loop(lambda: self._interface.NotificationClosed(notification_id, reason))

    def _run_in_loop(self, fn: Callable[[], object]) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)


class OwnBus:
    """A private bus for one test that restarts it, and the recording servers started
    on it; :meth:`close` stops the servers (the bus is the caller's to stop)."""

    def __init__(self, session: DbusSession) -> None:
        self.session = session
        self.servers: list[NotificationServer] = []

    def server(self) -> NotificationServer:
        """A new recording server on this bus (the name free: the last one stopped)."""
        self.servers.append(NotificationServer(self.session.address).start())
        return self.servers[-1]

    def close(self) -> None:
        for server in self.servers:
            server.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` (every 10 ms) until true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)
