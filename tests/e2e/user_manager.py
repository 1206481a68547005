"""A user's home and a real `systemd --user` for it, for the tests of the user unit.

The home (with a space in its name, to test quoting) and the runtime dir lie outside
/tmp and /var/tmp: the unit's PrivateTmp would hide anything there from the service.

On these machines PID 1 is not systemd, and `systemd --user` refuses to start unless
the machine "was booted with systemd" (/run/systemd/system exists). As root, a private
mount namespace gives the manager that directory without touching the host's /run, and
the manager then runs units for real: namespaces, seccomp, Type=notify, the watchdog.
Elsewhere (not root, no unshare, no systemd) :data:`CAN_RUN_MANAGER` is False and the
tests that need a manager are not defined at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from speech2image.service.unit import UNIT_NAME, quote

SYSTEMD = next(
    (p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd") if Path(p).exists()), None
)
CAN_RUN_MANAGER = os.geteuid() == 0 and SYSTEMD is not None and shutil.which("unshare") is not None
UNSHARE = ("unshare", "--mount", "--propagation", "private")
# A fake "booted with systemd" in the private mount namespace. A manager running as root
# also takes its "inaccessible" nodes (ProtectKernelLogs= and the like mount them over
# what they hide) from /run/systemd, where PID 1 would have made them: point that at the
# ones this manager makes in its runtime dir.
BOOTED = (
    "mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system"
    ' && ln -s "$XDG_RUNTIME_DIR/systemd/inaccessible" /run/systemd/inaccessible && exec "$@"'
)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed; `make test` installs systemd (apt)")
    return path


def private_base() -> Path:
    """A fresh folder outside /tmp and /var/tmp, under the real home if possible."""
    parent = Path.home() / ".cache"
    if parent.resolve().is_relative_to("/tmp") or parent.resolve().is_relative_to("/var/tmp"):
        parent = Path("/var/lib")
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="speech2image-unit-", dir=parent))


class Home:
    """A user: home, runtime dir, a config file, and where the unit and gallery go."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "my home"
        self.runtime = base / "run"
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        self.config = self.home / "my config.toml"
        self.config.write_text('[gallery]\ndir = "my pictures"\n', encoding="utf-8")
        self.unit = self.home / ".config" / "systemd" / "user" / UNIT_NAME
        self.gallery = self.home / "my pictures"
        self.state = self.home / ".local" / "state" / "speech2image"
        self.service_log = base / "service.log"

    def env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "TERM")
        env = {key: os.environ[key] for key in keep if key in os.environ}
        return env | {"HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.runtime)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`speech2image service ARGS`, the real CLI, as this user would run it."""
        return subprocess.run(
            [sys.executable, "-m", "speech2image.cli", "service", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def drop_in(self, settings: str) -> None:
        """A drop-in for the test's changes (the installed unit stays as written), with
        the service's output in a file: there is no journald here."""
        folder = self.unit.with_name(UNIT_NAME + ".d")
        folder.mkdir(parents=True, exist_ok=True)
        log = quote(f"append:{self.service_log}")
        (folder / "test.conf").write_text(
            f"[Service]\n{settings}StandardOutput={log}\nStandardError={log}\n",
            encoding="utf-8",
        )


class UserManager:
    """`systemd --user` for ``home``'s user, and `systemctl --user` talking to it."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.log = (home.base / "manager.log").open("wb")
        self.process = subprocess.Popen(
            [*UNSHARE, "sh", "-c", BOOTED, "sh", str(SYSTEMD), "--user"],
            env=home.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while self.systemctl("show-environment").returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"systemd --user did not come up (exit {self.process.returncode})")
            time.sleep(0.1)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", "--user", *args],
            env=self.home.env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def show(self, prop: str) -> str:
        return self.systemctl("show", "--value", "-p", prop, UNIT_NAME).stdout.strip()

    def wait_for(self, prop: str, value: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.show(prop)) != value:
            if time.monotonic() > deadline:
                pytest.fail(f"{prop}={now!r}, not {value!r} after {timeout} s\n{self.explain()}")
            time.sleep(0.1)

    def explain(self) -> str:
        """The unit's status and the service's output, for a failure message."""
        status = self.systemctl("status", "--no-pager", UNIT_NAME)
        log = self.home.service_log
        output = log.read_text(encoding="utf-8") if log.exists() else ""
        return f"{status.stdout}{status.stderr}\nservice output:\n{output}"

    def stop(self) -> None:
        """`systemctl --user exit` stops every unit first, then the manager."""
        self.systemctl("exit")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
