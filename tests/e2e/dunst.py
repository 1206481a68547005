"""A real notification daemon for the tests: ``dunst`` on a virtual X display (``Xvfb``).

Why this exists
---------------
The recording server in ``dbus_session.py`` sees exact D-Bus arguments, but it is
written for the tests. dunst is a server people run: it parses the hints, loads the
image, keeps ``replaces_id`` semantics of its own, and emits ``ActionInvoked`` when an
action is invoked. It needs an X display, so:

* :class:`Xvfb` runs ``Xvfb -displayfd`` (it picks a free display number and writes it
  to the pipe only once it accepts clients: that is the readiness signal, no polling,
  no ``xdpyinfo``).
* :class:`Dunst` runs ``dunst -config <minimal dunstrc>`` with ``DISPLAY`` and the
  private bus in ``DBUS_SESSION_BUS_ADDRESS``, and is ready once it owns
  ``org.freedesktop.Notifications`` and answers dunst's own control interface
  (``dunstctl debug``: GetServerInformation says "dunst", and ``Ping``). ``-print``
  makes it write every notification it handles (id, text, icon, actions as it parsed
  them) to ``dunst-print.log`` as it gets it (:meth:`Dunst.printed`).
  :meth:`Dunst.ctl` runs ``dunstctl`` against it; ``dunstctl history`` is JSON from
  ``busctl --user``, which sd-bus points at ``DBUS_SESSION_BUS_ADDRESS`` too.

What dunst 1.9 reports (Debian 12): ``count displayed`` is the notifications on screen
(a replaced one is updated in place, not counted twice); ``history`` lists only the
notifications that have left the screen (closed, expired), newest first, each field
as ``{"type": ..., "data": ...}``; ``action N`` invokes the default action of the N-th
notification on screen (or opens the context menu when it has other actions only);
its ``ActionInvoked`` goes to the sender of the notification only (unicast), not as a
broadcast.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

# No follow-the-mouse/keyboard, no idle detection (an idle Xvfb would stop timeouts),
# history kept, nothing that needs a compositor or a real screen size.
DUNSTRC = """[global]
    monitor = 0
    follow = none
    width = 300
    height = 300
    origin = top-right
    offset = 10x10
    idle_threshold = 0
    history_length = 50
    sticky_history = yes
    show_indicators = no
    max_icon_size = 32
    font = Monospace 8
"""


class DunstError(RuntimeError):
    """Xvfb or dunst is missing or did not come up."""


def missing() -> list[str]:
    """The programs these fixtures need that are not on PATH."""
    tools = ("Xvfb", "dunst", "dunstctl", "dbus-send", "busctl")
    return [tool for tool in tools if shutil.which(tool) is None]


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _read_line(fd: int, timeout: float) -> str:
    """One line from ``fd`` within ``timeout`` ("" if not). Xvfb writes the number and
    the newline separately: closing the pipe before the newline kills it (EPIPE)."""
    data, deadline = b"", time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            return ""
        data += chunk
    return data.decode().strip()


class Xvfb:
    """A virtual X server on a free display; ``stop()`` kills it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "xvfb.log"
        self.display = ""
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, workdir: Path, timeout: float = 15.0) -> Xvfb:
        xvfb = cls(workdir)
        read_end, write_end = os.pipe()
        try:
            with xvfb.log.open("ab") as log:
                xvfb._process = subprocess.Popen(
                    ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp"],
                    pass_fds=(write_end,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            os.close(write_end)
            write_end = -1
            number = _read_line(read_end, timeout)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if not number.isdigit():
            xvfb.stop()
            raise DunstError(f"Xvfb did not start: {xvfb.log.read_text()[-2000:]}")
        xvfb.display = f":{number}"
        return xvfb

    def stop(self) -> None:
        process, self._process = self._process, None
        _stop(process)


class Dunst:
    """dunst on ``display`` and the bus at ``bus_address``; see the module docstring."""

    def __init__(self, bus_address: str, display: str, workdir: Path) -> None:
        self.bus_address = bus_address
        self.display = display
        self.workdir = workdir
        self.config = workdir / "dunstrc"
        self.log = workdir / "dunst.log"
        self.printed_log = workdir / "dunst-print.log"  # -print: every notification received
        self.config.write_text(DUNSTRC)
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, bus_address: str, display: str, workdir: Path) -> Dunst:
        dunst = cls(bus_address, display, workdir)
        dunst.spawn()
        return dunst

    def env(self) -> dict[str, str]:
        # XDG_CONFIG_HOME: a dunstrc.d of the machine's user must not apply.
        return {
            **os.environ,
            "DISPLAY": self.display,
            "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
            "XDG_CONFIG_HOME": str(self.workdir),
        }

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(self, timeout: float = 15.0) -> None:
        """Start dunst and wait until it serves the bus (DunstError with its log if not)."""
        with self.log.open("ab") as log, self.printed_log.open("ab") as printed:
            self._process = subprocess.Popen(
                ["dunst", "-print", "-config", str(self.config)],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=printed,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while not self._serving():
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise DunstError(f"dunst did not come up: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _serving(self) -> bool:
        done = subprocess.run(
            ["dunstctl", "debug"], env=self.env(), capture_output=True, timeout=10, check=False
        )
        return done.returncode == 0

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) and wait: its bus name is gone once it has exited."""
        process, self._process = self._process, None
        _stop(process)

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye on the bus, the name just goes."""
        process, self._process = self._process, None
        _stop(process, signal.SIGKILL)

    def ctl(self, *args: str) -> str:
        """``dunstctl args`` against this dunst; its stdout (CalledProcessError if it fails)."""
        done = subprocess.run(
            ["dunstctl", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout

    def count(self, which: str) -> int:
        """``dunstctl count displayed|history|waiting``."""
        return int(self.ctl("count", which).strip())

    def history(self) -> list[dict[str, Any]]:
        """``dunstctl history``, newest first, each field's ``data`` only."""
        (entries,) = json.loads(self.ctl("history"))["data"]
        return [{key: field["data"] for key, field in entry.items()} for entry in entries]

    def printed(self) -> list[dict[str, Any]]:
        """Every notification this dunst (and any before it on this workdir) received,
        oldest first, as ``-print`` wrote it: see :func:`parse_printed`."""
        return parse_printed(self.printed_log.read_text(errors="replace"))

    def close_all(self) -> None:
        """Close every notification on screen (into the history), as a user would."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ctl("close-all")


def parse_printed(text: str) -> list[dict[str, Any]]:
    """The complete blocks ``dunst -print`` wrote, one per ``Notify`` it handled.

    Each ``\tkey: value`` line gives a key (quotes around the value removed; only the
    first line of a multi-line value such as ``formatted``); ``actions`` is a dict of
    action key to label. A block still being written (no closing ``}``) is left out.
    """
    notices: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if line == "{":
            current = {"actions": {}}
        elif current is None:
            continue
        elif line == "}":
            notices.append(current)
            current = None
        elif line.startswith("\t\t") and '": "' in line:
            key, label = line.strip().split('": "', 1)
            current["actions"][key.strip('"')] = label.rstrip('"')
        elif line.startswith("\t") and not line.startswith("\t\t") and ": " in line:
            key, value = line[1:].split(": ", 1)
            if key != "actions":
                quoted = len(value) >= 2 and value[0] == value[-1] == "'"
                current[key] = value[1:-1] if quoted else value
    return notices
