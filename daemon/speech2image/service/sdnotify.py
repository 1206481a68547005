"""Telling systemd how the daemon is doing: ``sd_notify`` without a dependency.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), a few lines of
code, so no library is taken for it. Outside a ``Type=notify`` unit the variable is
unset and every call is a no-op, so the daemon calls these unconditionally.

Sending never raises: the service manager going away must not take the daemon with
it. A failed send is logged at WARNING once per outage, then at DEBUG.

The watchdog is driven by :class:`Heartbeat`: the listening loop beats, and a thread
sends ``WATCHDOG=1`` only while the beats are recent, so a stalled audio thread stops
the pings and systemd restarts the process; pausing and reconnecting beat too, so a
paused daemon is left alone. systemd arms the watchdog only once ``READY=1`` is sent
(``man systemd.service``, WatchdogSec=), so a long CPU warm-up is covered by
``TimeoutStartSec`` rather than by pings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | None:
    """The address ``sendto`` takes for a ``$NOTIFY_SOCKET`` value, or None when unusable.

    ``@name`` is Linux's abstract namespace (a leading NUL byte); an absolute path is a
    socket file. Anything else (e.g. systemd ≥254's ``vsock:``) is not supported here.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def one_line(text: str) -> str:
    """A value safe inside one ``KEY=value`` line: a newline would start another key."""
    return " ".join(text.splitlines()).strip()


def watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (what sd_watchdog_enabled(3) advises), or None.

    None when no watchdog is configured, the value is not a positive integer, or
    ``$WATCHDOG_PID`` names another process (the variables leaked into a child).
    """
    owner = environ.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", "").strip())
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd's ``MONOTONIC_USEC=`` uses."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SystemdNotifier:
    """Sends state to the service manager; a silent no-op when there is none. Thread-safe."""

    def __init__(
        self, address: str | None = None, watchdog_env: Mapping[str, str] | None = None
    ) -> None:
        """``address``: a ``sendto`` address (see :func:`socket_address`); None disables.

        ``watchdog_env``: ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` as systemd set them.
        """
        self._address = address
        self._watchdog_env = dict(watchdog_env or {})
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._last_status: str | None = None
        self._failing = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """The notifier the environment asks for (``os.environ`` unless given)."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        if not value:
            return cls()
        address = socket_address(value)
        if address is None:
            log.warning("NOTIFY_SOCKET=%r is not a socket path or @name; not notifying", value)
        watched = {key: env[key] for key in ("WATCHDOG_USEC", "WATCHDOG_PID") if key in env}
        return cls(address, watched)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str = "") -> None:
        """Start-up is over (models warm): ``Type=notify`` units count as started now.

        Also sent again after a reload, to end the ``RELOADING=1`` state.
        """
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """The live state shown by ``systemctl --user status``; unchanged text is not resent."""
        self._send("", text)

    def watchdog(self) -> None:
        """One watchdog ping; :class:`Heartbeat` decides when one is deserved."""
        self._send("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        """The daemon is stopping on its own accord or on a signal."""
        self._send("STOPPING=1", status)

    def reloading(self) -> None:
        """A config reload has begun; :meth:`ready` ends it.

        ``MONOTONIC_USEC`` is what systemd ≥253 requires for ``Type=notify-reload``;
        older managers ignore the extra key.
        """
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings, half systemd's timeout; None when not watched.

        ``$WATCHDOG_PID`` is compared with the pid at call time, so a forked child that
        inherited the environment is not mistaken for the watched process.
        """
        if self._address is None:
            return None
        return watchdog_seconds(self._watchdog_env, os.getpid())

    def close(self) -> None:
        """Close the socket (at exit); a later send opens a new one."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _send(self, head: str, status: str | None = None) -> None:
        if self._address is None:
            return
        with self._lock:
            lines = [head] if head else []
            if status:
                text = one_line(status)
                if text != self._last_status or head:
                    lines.append(f"STATUS={text}")
                    self._last_status = text
            if lines:
                self._deliver("\n".join(lines).encode("utf-8"))

    def _deliver(self, message: bytes) -> None:
        """One datagram, under the lock; failures are logged, never raised."""
        assert self._address is not None
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # A manager that stopped reading must not stall the audio loop that
                # reports its state: a full queue is a failed send, not a wait.
                self._socket.setblocking(False)
            self._socket.sendto(message, self._address)
        except OSError as error:
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "could not notify the service manager (%s): %s", self._name(), error)
            self._failing = True
            return
        if self._failing:
            log.info("notifying the service manager again (%s)", self._name())
            self._failing = False

    def _name(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address


class Heartbeat:
    """The listening loop beats; a thread sends WATCHDOG=1 only while beats are recent,
    so a stalled audio thread gets the process restarted by systemd.

    ``max_silence`` is how long the loop may go without a beat before the pings stop;
    systemd then restarts the process within its ``WatchdogSec`` of the last ping.
    Pausing and reconnecting must keep calling :meth:`beat` while they wait.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        interval: float | None,
        max_silence: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._interval = interval
        self._max_silence = max_silence
        self._clock = clock
        self._last = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """The loop is alive. One float store: cheap enough for every 80 ms frame."""
        self._last = self._clock()

    def due(self, now: float) -> bool:
        """Whether a ping is deserved at ``now``: the last beat is within ``max_silence``."""
        return now - self._last <= self._max_silence

    def start(self) -> None:
        """Ping from a thread from now on; nothing to do when systemd does not watch."""
        if not self._notifier.enabled or self._interval is None or self._thread is not None:
            return
        self.beat()  # the loop starts now: no stale silence from before
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging (at shutdown, before STOPPING=1); returns once the thread ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        assert self._interval is not None
        withheld = False
        while True:
            if self.due(self._clock()):
                if withheld:
                    log.warning("the listening loop is beating again; watchdog pings resume")
                self._notifier.watchdog()
                withheld = False
            elif not withheld:
                log.warning(
                    "the listening loop has not run for over %.1f s; withholding the "
                    "watchdog ping so that systemd restarts the daemon",
                    self._max_silence,
                )
                withheld = True
            if self._stop.wait(self._interval):
                return
