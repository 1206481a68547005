"""The user unit as systemd reads it: installed by the real CLI, verified, scored, run.

`systemd-analyze` checks what `speech2image service install` writes. Where a real
`systemd --user` can run (see user_manager.py), install, status and uninstall talk to
it, and the installed unit is started with a stand-in payload in place of the daemon
(a drop-in swaps ExecStart): the sandbox's promises (what is writable, what is
reachable) and the restart policy are the unit's, the payload only reports them. The
real daemon under the real manager is test_systemd_daemon.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech2image.service.lock import EX_ALREADY_RUNNING
from speech2image.service.unit import (
    UNIT_NAME,
    quote,
    render_unit,
    systemd_path,
    template_spec,
)
from tests.e2e.dbus_session import wait_until
from tests.e2e.user_manager import (
    CAN_RUN_MANAGER,
    Home,
    UserManager,
    private_base,
    tool,
)

pytestmark = [pytest.mark.e2e]

MAX_EXPOSURE = 4.5


@pytest.fixture
def home() -> Iterator[Home]:
    base = private_base()
    try:
        yield Home(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_installed_unit_verifies_without_a_word(home: Home) -> None:
    """`systemd-analyze --user verify` prints nothing for the unit install writes, with a
    home and a config path that contain spaces; and install says how to start it."""
    analyze = tool("systemd-analyze")
    installed = home.cli("install", "--config", str(home.config))
    assert installed.returncode == 0, installed.stderr
    assert f"created {home.unit}" in installed.stdout
    assert "loginctl enable-linger" in installed.stdout  # no manager runs for this user
    text = home.unit.read_text(encoding="utf-8")
    assert f'--config "%h/{home.config.name}"' in text
    assert 'ReadWritePaths="-%h/my pictures"' in text
    verify = subprocess.run(
        [analyze, "--user", "verify", str(home.unit)],
        env=home.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


def test_a_reinstall_keeps_a_changed_unit_as_bak(home: Home) -> None:
    assert home.cli("install").returncode == 0
    home.unit.write_text(home.unit.read_text(encoding="utf-8") + "# mine\n", encoding="utf-8")
    again = home.cli("install", "--config", str(home.config))
    assert again.returncode == 0, again.stderr
    assert f"replaced {home.unit}" in again.stdout
    backup = home.unit.with_name(UNIT_NAME + ".bak")
    assert backup.read_text(encoding="utf-8").endswith("# mine\n")
    assert "unchanged" in home.cli("install", "--config", str(home.config)).stdout
    removed = home.cli("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not home.unit.exists()
    assert not backup.exists()


def exposure(unit: Path, env: dict[str, str]) -> float:
    done = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--user", "--no-pager", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_exposure_is_at_most_4_5(home: Home) -> None:
    """The installed unit, and the unit with the network open (the web page or Wyoming
    configured). The figures are printed for the record (`pytest -s`)."""
    assert home.cli("install").returncode == 0
    networked = home.base / "networked" / UNIT_NAME
    networked.parent.mkdir()
    spec = dataclasses.replace(template_spec(home.home), network=True)
    networked.write_text(render_unit(spec), encoding="utf-8")
    levels = {
        name: exposure(unit, home.env())
        for name, unit in (("network off", home.unit), ("network on", networked))
    }
    print(f"systemd-analyze security --offline exposure: {levels}")
    assert max(levels.values()) <= MAX_EXPOSURE


# The stand-in daemon: READY=1 and WATCHDOG=1 as the daemon sends them, a report of what
# the sandbox lets it do, and an exit with a chosen code when asked to.
PAYLOAD = r"""
import errno, json, os, socket, sys, time
state, gallery, marker = sys.argv[1:]
def notify(text):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(text.encode(), os.environ["NOTIFY_SOCKET"])
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
def write(path):
    return lambda: open(path, "w").close()
def connect(address):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(address)
if os.path.exists(os.path.join(state, "exit-code")):
    sys.exit(int(open(os.path.join(state, "exit-code")).read()))
report = {
    "gallery": attempt(write(gallery + "/picture.png")),
    "home": attempt(write(os.path.expanduser("~/stray"))),
    "etc": attempt(write("/etc/speech2image-stray")),
    "audio_socket": attempt(lambda: connect(os.environ["XDG_RUNTIME_DIR"] + "/pulse/native")),
    "inet": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
    "tmp_marker": os.path.exists(marker),
}
with open(os.path.join(state, "report.json"), "w") as f:
    json.dump(report, f)
notify("READY=1\nSTATUS=listening")
while True:
    notify("WATCHDOG=1")
    time.sleep(0.3)
"""


def test_this_machine_runs_the_user_manager_tests() -> None:
    """Without root, systemd and unshare the manager's tests here and in
    test_systemd_daemon.py are not defined at all: say so as a failure, not silence."""
    assert CAN_RUN_MANAGER, "needs root, systemd (/lib/systemd/systemd) and unshare"


if CAN_RUN_MANAGER:

    @pytest.fixture
    def manager(home: Home) -> Iterator[UserManager]:
        running = UserManager(home)
        try:
            yield running
        finally:
            running.stop()

    @pytest.mark.slow
    def test_install_status_uninstall_with_a_running_manager(
        home: Home, manager: UserManager
    ) -> None:
        installed = home.cli("install", "--config", str(home.config), "--enable")
        assert installed.returncode == 0, installed.stderr
        assert "enabled" in installed.stdout
        assert manager.show("LoadState") == "loaded"  # install ran daemon-reload
        assert manager.show("FragmentPath") == str(home.unit)
        assert manager.systemctl("is-enabled", UNIT_NAME).stdout.strip() == "enabled"
        # systemd's own reading of the quoted paths: spaces intact, %h expanded.
        assert f"run --config {home.config} ;" in manager.show("ExecStart")
        cache = home.home / ".cache"
        writable = [home.gallery, cache / "speech2image", cache / "huggingface", home.state]
        # A checkout under /tmp keeps the shared /tmp (a private one would hide it).
        shared_tmp = [] if "PrivateTmp=yes" in home.unit.read_text() else ["-/tmp", "-/var/tmp"]
        assert shlex.split(manager.show("ReadWritePaths")) == [
            *(f"-{path}" for path in writable),
            str(home.runtime),
            *shared_tmp,
        ]
        status = home.cli("status")
        assert status.returncode == 3, status.stderr  # installed, not started
        assert UNIT_NAME in status.stdout
        removed = home.cli("uninstall")
        assert removed.returncode == 0, removed.stderr
        assert manager.show("LoadState") == "not-found"
        assert not list(home.unit.parent.rglob(UNIT_NAME))

    @pytest.mark.slow
    def test_the_sandbox_and_the_restart_policy(home: Home, manager: UserManager) -> None:
        """Writable: the gallery only (ExecStartPre made it); reachable: unix sockets in
        the runtime dir, not the network, not the host's /tmp. Exit 78 and 75 are final,
        exit 1 is restarted."""
        assert home.cli("install", "--config", str(home.config)).returncode == 0
        # A program and an argument that systemd would split or expand if unquoted.
        python = home.home / "bin dir" / "python 3"
        python.parent.mkdir()
        python.symlink_to(Path(sys.executable).resolve())
        payload = home.home / "pay'load $HOME %h.py"
        payload.write_text(PAYLOAD, encoding="utf-8")
        audio = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the audio server's
        (home.runtime / "pulse").mkdir()
        audio.bind(str(home.runtime / "pulse" / "native"))
        audio.listen(8)
        with tempfile.NamedTemporaryFile(dir="/tmp") as marker, audio:
            argv = [python, payload, home.state, home.gallery, marker.name]
            command = " ".join(quote(systemd_path(str(w), home.home), dollar=True) for w in argv)
            # PrivateTmp= as for any installation outside /tmp (this checkout may be in it)
            home.drop_in(f"ExecStart=\nExecStart={command}\nRestartSec=1\nPrivateTmp=yes\n")
            assert manager.systemctl("daemon-reload").returncode == 0
            started = manager.systemctl("start", UNIT_NAME)
            assert started.returncode == 0, manager.explain()
            assert manager.show("StatusText") == "listening"
            report = json.loads((home.state / "report.json").read_text(encoding="utf-8"))
            assert report == {
                "gallery": "ok",
                "home": "EROFS",
                "etc": "EROFS",
                "audio_socket": "ok",
                "inet": "EAFNOSUPPORT",
                "tmp_marker": False,
            }
        for code, restarted in ((78, False), (EX_ALREADY_RUNNING, False), (1, True)):
            manager.systemctl("stop", UNIT_NAME)
            manager.systemctl("reset-failed", UNIT_NAME)  # also resets the start limit
            (home.state / "exit-code").write_text(str(code), encoding="utf-8")
            manager.systemctl("start", UNIT_NAME)
            if restarted:
                wait_until(lambda: int(manager.show("NRestarts")) > 0, 30, f"exit {code}")
                continue
            manager.wait_for("ActiveState", "failed", timeout=30)
            time.sleep(2)  # RestartSec=1: a restart would have happened by now
            assert manager.show("NRestarts") == "0", f"exit {code} was restarted"
