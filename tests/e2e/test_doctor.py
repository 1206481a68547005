"""`speech2image doctor` as a user runs it: the real CLI in a subprocess, against a real
PulseAudio server with a virtual microphone, a real session bus, real file systems.

Each run gets its own HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR, and no audio server
or session bus unless the test gives it one. The model caches (XDG_CACHE_HOME) are the
ones `make test` filled, so the models the tests use are found where the daemon looks.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from tests.e2e.dbus_session import NotificationServer
from tests.e2e.pulse import PulseServer, VirtualMic
from tests.support import data_audio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What the doctor run must not inherit from the test's own environment.
PRIVATE = ("PULSE_", "DBUS_", "XDG_", "SPEECH2IMAGE_")


@dataclass
class Report:
    returncode: int
    checks: dict[str, dict[str, Any]]
    stderr: str

    def status(self, name: str) -> str:
        return str(self.checks[name]["status"])


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A private HOME and runtime dir; the model cache is the one `make test` filled."""
    cache = platformdirs.user_cache_path("speech2image").parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE)}
    for name in ("home", "config", "run"):
        (tmp_path / name).mkdir(mode=0o700)
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        XDG_CACHE_HOME=str(cache),
        HF_HOME=os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
    )
    return env


def doctor(config: Path, env: Mapping[str, str], *args: str) -> Report:
    result = subprocess.run(
        [sys.executable, "-m", "speech2image.cli", "doctor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=60,
        check=False,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] == (result.returncode == 0), result.stdout
    return Report(result.returncode, checks, result.stderr)


def with_pulse(env: Mapping[str, str], server: PulseServer) -> dict[str, str]:
    return {**env, **server.env}


PULSE_MIC = '[audio]\ndevice = "pulse"\n'


def test_a_ready_machine_passes_with_a_level_and_the_notification_server(
    config_file: Callable[[str], Path],
    home: dict[str, str],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
    session_bus: str,
    notification_server: NotificationServer,
) -> None:
    """Speech on the microphone, every model the tests use, a desktop: nothing fails."""
    config = config_file(PULSE_MIC + "[notify]\nenabled = true\n")
    virtual_mic.feed(data_audio("jfk.flac"))  # 11 s: the meter's 2 s fall inside it
    env = {**with_pulse(home, pulse_server), "DBUS_SESSION_BUS_ADDRESS": session_bus}
    report = doctor(config, env, "--json")

    assert report.returncode == 0, report.checks
    microphone = report.checks["microphone"]
    assert microphone["status"] == "ok", microphone
    peak = float(microphone["summary"].split("peak ")[1].split(" dBFS")[0])
    assert -30 < peak <= 0, microphone
    for name in ("config", "portaudio", "wake", "speech", "moderation", "image", "gallery"):
        assert report.status(name) == "ok", report.checks[name]
    assert "speech2image-tests" in report.checks["notifications"]["summary"]  # the vendor
    assert report.status("notifications") == "ok"
    assert report.status("gpu") in ("ok", "warn")  # CPU only warns
    assert report.status("service") in ("ok", "info")


def test_a_silent_microphone_is_a_warning(
    config_file: Callable[[str], Path],
    home: dict[str, str],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
) -> None:
    """The virtual mic plays zeros until fed: a muted microphone looks like this."""
    report = doctor(
        config_file(PULSE_MIC), with_pulse(home, pulse_server), "--json", "--only", "microphone"
    )
    assert report.status("microphone") == "warn", report.checks
    assert "is the microphone muted?" in report.checks["microphone"]["summary"]
    assert report.returncode == 0


def test_a_microphone_that_delivers_nothing_fails(
    config_file: Callable[[str], Path], home: dict[str, str], pulse_server: PulseServer
) -> None:
    """No feeder: the pipe source opens but never produces a block, like a wedged device."""
    config = config_file(PULSE_MIC)
    env = with_pulse(home, pulse_server)
    report = doctor(config, env, "--json", "--only", "microphone", "--seconds", "1")
    assert report.returncode == 1
    assert report.status("microphone") == "fail"
    assert "delivered no audio in 1.0 s" in report.checks["microphone"]["summary"]


def test_no_audio_server_fails_the_microphone_with_the_fix(
    tmp_path: Path, config_file: Callable[[str], Path], home: dict[str, str]
) -> None:
    client = tmp_path / "client.conf"
    client.write_text("autospawn = no\n")
    env = {
        **home,
        "PULSE_SERVER": f"unix:{tmp_path}/nothing.sock",
        "PULSE_CLIENTCONFIG": str(client),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "speech2image.cli",
            "doctor",
            "--config",
            str(config_file("")),
            "--only",
            "microphone",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.split()[:2] == ["FAIL", "microphone"])
    assert "no audio input devices" in lines[failed]
    assert "fix: plug a microphone in or start the audio server" in lines[failed + 1]
    assert "`speech2image devices`" in lines[failed + 1]
    assert "[audio] device" in lines[failed + 1]


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system: as root (the tests' user) permissions stop no write."""
    where = tmp_path / "ro"
    where.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    mounted = subprocess.run(
        [*sudo, "mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root or passwordless sudo: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run([*sudo, "umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("inside", ["", "gallery"], ids=["existing", "to-be-created"])
def test_a_read_only_gallery_fails_naming_the_path(
    config_file: Callable[[str], Path], home: dict[str, str], read_only_disk: Path, inside: str
) -> None:
    gallery = read_only_disk / inside if inside else read_only_disk
    config = config_file(f'[gallery]\ndir = "{gallery}"\n')
    report = doctor(config, home, "--json", "--only", "gallery")
    assert report.returncode == 1
    check = report.checks["gallery"]
    assert check["status"] == "fail"
    assert str(gallery) in check["summary"]
    assert "[gallery] dir" in check["fix"]
    assert not gallery.exists() or not any(gallery.iterdir())


def test_a_writable_gallery_is_not_created_by_the_check(
    tmp_path: Path, config_file: Callable[[str], Path], home: dict[str, str]
) -> None:
    gallery = tmp_path / "not-yet" / "gallery"
    report = doctor(
        config_file(f'[gallery]\ndir = "{gallery}"\n'), home, "--json", "--only", "gallery"
    )
    assert report.status("gallery") == "ok"
    assert "created at the first start" in report.checks["gallery"]["summary"]
    assert list(tmp_path.glob("**/.speech2image-doctor-*")) == []
    assert not (tmp_path / "not-yet").exists()


@pytest.mark.parametrize(
    "wake",
    ['model_dir = "{empty}"', 'models = ["/nonexistent.onnx"]'],
    ids=["empty-cache", "custom-path"],
)
def test_a_missing_wake_model_fails_with_the_pull_command(
    tmp_path: Path, config_file: Callable[[str], Path], home: dict[str, str], wake: str
) -> None:
    (tmp_path / "empty").mkdir()
    config = config_file("[wake]\n" + wake.format(empty=tmp_path / "empty") + "\n")
    report = doctor(config, home, "--json", "--only", "models")
    assert report.returncode == 1
    assert report.status("wake") == "fail"
    assert "speech2image models pull wake" in report.checks["wake"]["fix"]
    for name in ("speech", "moderation", "image"):  # the others are still checked
        assert report.status(name) == "ok", report.checks[name]


@pytest.mark.parametrize("bus", ["none", "no-server"])
def test_a_missing_desktop_is_only_a_warning(
    config_file: Callable[[str], Path], home: dict[str, str], session_bus: str, bus: str
) -> None:
    env = dict(home)
    if bus == "no-server":  # a bus, but nothing owns org.freedesktop.Notifications
        env["DBUS_SESSION_BUS_ADDRESS"] = session_bus
    config = config_file("[notify]\nenabled = true\n")
    report = doctor(config, env, "--json", "--only", "notifications")
    assert report.returncode == 0
    check = report.checks["notifications"]
    assert check["status"] == "warn"
    expected = "no session bus" if bus == "none" else "no notification server"
    assert expected in check["summary"]
    assert check["fix"]


def test_the_meter_is_redrawn_in_place_on_a_terminal(
    config_file: Callable[[str], Path],
    home: dict[str, str],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
) -> None:
    """On a terminal the level bar is rewritten with \\r while it listens; its final
    line replaces it."""
    virtual_mic.feed(data_audio("jfk.flac"))
    args = [
        "doctor",
        "--config",
        str(config_file(PULSE_MIC)),
        "--only",
        "microphone",
        "--seconds",
        "1",
    ]
    output = run_on_terminal(args, with_pulse(home, pulse_server))
    redraws = [part for part in output.split("\r") if "say something [" in part]
    assert len(redraws) >= 3, output
    assert any("=" in part.split("[")[1] for part in redraws), output  # a level was shown
    lines = output.replace("\x1b[K", "").replace("\r\n", "\n").split("\n")
    final = [line.split("\r")[-1] for line in lines if "peak" in line]
    assert final, output
    assert final[-1].split()[:2] == ["ok", "microphone"], output


def run_on_terminal(args: list[str], env: Mapping[str, str], timeout: float = 60) -> str:
    """What the command writes to a pseudo-terminal: stdout is a TTY, as for a user."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "speech2image.cli", *args],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=dict(env),
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        process.wait(timeout=10)
    return b"".join(chunks).decode("utf-8", errors="replace")
