"""The daemon's side of the D-Bus control: ``io.github.speech2image.Daemon1``.

dbus-fast is asyncio-only and the daemon is threads, so one background thread owns an
asyncio loop and the one bus connection, as the notifier does. Method calls arrive on
that thread and call the daemon's :class:`Controllable` directly (its methods are quick
and thread-safe); ``state_changed()`` only hands the signal to the loop, so a daemon
thread never waits on the bus.

The daemon must run without a bus (a headless box, a bare ``systemd --user``), and the
bus may go away under it (dbus-daemon restarted): one WARNING, then reconnecting in the
background with backoff, the interface exported and the name owned again when the bus
is back. A name owned by another process is another speech2image: control stays off in
this one rather than fight over the name.

No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures
from the annotations at class creation, and a string ``"None"`` return annotation is
not one (the real ``None`` is).
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol

from dbus_fast import DBusError, Message, MessageType, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

from . import BUS_NAME, ERROR_FAILED, INTERFACE, NO_BUS, OBJECT_PATH, session_address

log = logging.getLogger(__name__)

StatusValue = str | int | float | bool
StatusDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
StateSignal = Annotated[tuple[str, str], DBusSignature("ss")]

CONNECT_TIMEOUT_S = 5.0  # for one connect (auth included) and one name request
FIRST_RETRY_S = 1.0  # a restarted dbus-daemon is back within a second or two
MAX_RETRY_S = 60.0  # a bus that stays away costs one attempt a minute
CLOSE_TIMEOUT_S = 2.0

_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


class Controllable(Protocol):
    """What the daemon offers to the bus; every method is quick and thread-safe.

    A method that cannot do what is asked raises (``RuntimeError("paused: resume
    first")``): the caller gets a D-Bus error whose text is the exception's message.
    """

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def listen_now(self) -> None: ...

    def status(self) -> Mapping[str, StatusValue]: ...


def retry_delay(attempt: int) -> float:
    """Seconds before reconnect attempt ``attempt`` (0-based): 1, 2, 4, ... up to 60."""
    return float(min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(attempt, 16)))


def to_variant(value: StatusValue) -> Variant:
    """A status value with its D-Bus type: ``b``, ``x`` (int64), ``d`` or ``s``."""
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("s", str(value))


def status_variants(status: Mapping[str, StatusValue]) -> dict[str, Variant]:
    return {str(key): to_variant(value) for key, value in status.items()}


def _answer(what: str, call: Callable[[], Any]) -> Any:
    """Run a target method; what it raises becomes an error reply carrying its message.

    dbus-fast would answer a plain exception with only its class name, and log it as
    an ERROR with a traceback; a refusal such as "paused" is neither.
    """
    try:
        return call()
    except Exception as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, RuntimeError | ValueError):
            log.info("D-Bus %s refused: %s", what, text)
        else:
            log.warning("D-Bus %s failed", what, exc_info=True)
        raise DBusError(ERROR_FAILED, text) from exc


class _Interface(ServiceInterface):
    """The exported object; method names are the D-Bus names."""

    def __init__(self, target: Controllable) -> None:
        super().__init__(INTERFACE)
        self._target = target

    @dbus_method()
    def Pause(self) -> None:  # noqa: N802 - D-Bus member names are CamelCase
        _answer("Pause", self._target.pause)

    @dbus_method()
    def Resume(self) -> None:  # noqa: N802
        _answer("Resume", self._target.resume)

    @dbus_method()
    def ListenNow(self) -> None:  # noqa: N802
        _answer("ListenNow", self._target.listen_now)

    @dbus_method()
    def Status(self) -> StatusDict:  # noqa: N802
        return status_variants(_answer("Status", self._target.status))

    @dbus_signal()
    def StateChanged(self, state: DBusStr, detail: DBusStr) -> StateSignal:  # noqa: N802
        return (state, detail)


class _NameTakenError(Exception):
    """Another connection owns :data:`BUS_NAME`; the message says which process."""


def _quiet_disconnects(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A write that fails as the bus goes away leaves a future nobody awaits; asyncio
    would log it as an ERROR. The outage has its own WARNING."""
    if isinstance(context.get("exception"), OSError | EOFError):
        log.debug("session bus: %s: %r", context.get("message"), context.get("exception"))
    else:
        loop.default_exception_handler(context)


class ControlService:
    """Exports ``target`` on the session bus at ``address`` (None: the environment's)."""

    def __init__(self, target: Controllable, address: str | None = None) -> None:
        self._interface = _Interface(target)
        self._address = address
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False  # one WARNING per outage, whichever thread notices it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._first = threading.Event()  # the first attempt has an outcome
        self._first_ok = False
        self._close_wait = CLOSE_TIMEOUT_S / 2
        # Loop thread only:
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._bus: MessageBus | None = None

    @property
    def connected(self) -> bool:
        """On the bus and owning the name: ``speech2image status`` would reach us."""
        bus = self._bus
        return bus is not None and bus.connected

    def start(self, timeout: float = 5.0) -> bool:
        """Connect, export, own the name; True once callable, within ``timeout``.

        False, with one WARNING, when there is no bus (control is off), when the name
        belongs to another speech2image, or when the bus does not answer in time; in
        the last case, and when a bus address exists but refuses us, reconnecting goes
        on in the background.
        """
        address = self._address or session_address()
        if address is None:
            log.warning("D-Bus control is off: no session bus (%s)", NO_BUS)
            return False
        with self._lock:
            if self._closed or self._thread is not None:
                return self.connected
            self._loop = loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._run, args=(loop, address), name="control-bus", daemon=True
            )
            self._thread.start()
        if self._first.wait(timeout):
            return self._first_ok
        self._warn(f"the session bus at {address} did not answer within {timeout:.1f} s")
        return False

    def state_changed(self, state: str, detail: str) -> None:
        """Emit ``StateChanged(state, detail)``; never blocks, never raises."""
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
            loop.call_soon_threadsafe(self._emit, state, detail)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Release the name and disconnect, within ``timeout`` whatever the bus does."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._close_wait = timeout / 2
        try:
            loop.call_soon_threadsafe(self._cancel)
        except RuntimeError:  # the loop has ended already
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the D-Bus control thread did not stop within %.1f s", timeout)

    def _warn(self, what: str) -> None:
        with self._lock:
            warned, self._warned = self._warned, True
        if warned:
            log.debug("D-Bus control still off: %s", what)
        else:
            log.warning("D-Bus control is off: %s; reconnecting in the background", what)

    def _run(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_disconnects)
        try:
            self._task = loop.create_task(self._main(address))
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        except Exception:
            log.warning("the D-Bus control thread failed", exc_info=True)
        finally:
            self._first.set()  # never leave start() waiting on a thread that ended
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _cancel(self) -> None:
        """Stop _main(); the flag too, as a cancellation can be lost in a race with a
        result (asyncio.wait_for before Python 3.12, and code we do not own)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    def _report(self, ok: bool) -> None:
        if not self._first.is_set():
            self._first_ok = ok
            self._first.set()

    async def _main(self, address: str) -> None:
        """Connect and serve until the bus drops, then again, with backoff; until
        cancelled by close(), or the name turns out to be another daemon's."""
        attempt = 0
        try:
            while not self._stopping:
                try:
                    self._bus = await self._connect(address)
                except _NameTakenError as exc:
                    log.warning("D-Bus control is off: %s", exc)
                    self._report(False)
                    return
                except Exception as exc:
                    self._report(False)
                    self._warn(f"no session bus at {address} ({exc!r})")
                    if not self._stopping:
                        await asyncio.sleep(retry_delay(attempt))
                    attempt += 1
                    continue
                if self._stopping:
                    return
                attempt = 0
                self._on_connected()
                with contextlib.suppress(Exception):
                    await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
                self._bus = None
                self._warn("lost the session bus connection")
        finally:
            await self._disconnect()

    def _on_connected(self) -> None:
        self._report(True)
        with self._lock:
            back, self._warned = self._warned, False
        if back:
            log.info("D-Bus control is back on: %s on the session bus", BUS_NAME)
        else:
            log.debug("D-Bus control on: %s on the session bus", BUS_NAME)

    async def _connect(self, address: str) -> MessageBus:
        """A connection with the interface exported before the name is owned, so a
        client that sees the name can call at once."""
        bus = MessageBus(bus_address=address, auth_timeout=CONNECT_TIMEOUT_S)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await bus.connect()
            bus.export(OBJECT_PATH, self._interface)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
            if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
                holder = await _owner_of(bus, BUS_NAME)
                raise _NameTakenError(
                    f"another speech2image ({holder}) owns {BUS_NAME} on the session bus; "
                    "`speech2image pause|resume|status|listen` reach that one"
                )
        except BaseException:
            with contextlib.suppress(OSError):  # never connected: nothing to shut down
                bus.disconnect()
            raise
        return bus

    async def _disconnect(self) -> None:
        """Give the name back first (so a successor can own it at once), then hang up;
        both bounded by what close() allows."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        if bus.connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_wait / 2):
                    await bus.release_name(BUS_NAME)
            bus.disconnect()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_wait / 2):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _emit(self, state: str, detail: str) -> None:
        if not self.connected:
            return
        try:
            self._interface.StateChanged(state, detail)
        except Exception:
            log.debug("StateChanged not sent", exc_info=True)


async def _owner_of(bus: MessageBus, name: str) -> str:
    """ "pid N" for the owner of ``name``, or its unique name: who holds it, in words."""
    try:
        owner = await _dbus_call(bus, "GetNameOwner", name)
        pid = await _dbus_call(bus, "GetConnectionUnixProcessID", owner)
    except Exception:
        return "another process"
    return f"pid {pid}"


async def _dbus_call(bus: MessageBus, member: str, name: str) -> Any:
    message = Message(*_DBUS, member, signature="s", body=[name])
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        reply = await bus.call(message)
    if reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name or "unknown error", str(reply.body))
    return reply.body[0]
