"""One microphone daemon per user: a real flock, held by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech2image.service.lock import (
    EX_ALREADY_RUNNING,
    AlreadyRunningError,
    InstanceLock,
    default_lock_path,
)

HOLDER = """
import sys, time
from pathlib import Path
from speech2image.service.lock import InstanceLock
lock = InstanceLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""

SECOND = """
import sys
from pathlib import Path
from speech2image.service.lock import EX_ALREADY_RUNNING, AlreadyRunningError, InstanceLock
try:
    InstanceLock(Path(sys.argv[1])).acquire()
except AlreadyRunningError as error:
    print(error.pid)
    print(error)
    sys.exit(EX_ALREADY_RUNNING)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process that has taken the lock and keeps it until it is killed."""
    path = tmp_path / "run" / "speech2image.lock"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        yield process, path
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_second_process_is_told_which_pid_holds_the_lock(
    holder: tuple[subprocess.Popen[str], Path],
) -> None:
    first, path = holder
    second = subprocess.run(
        [sys.executable, "-c", SECOND, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == EX_ALREADY_RUNNING
    pid, message = second.stdout.splitlines()
    assert int(pid) == first.pid
    assert message == (
        f"another speech2image daemon (pid {first.pid}) is already listening on the "
        f"microphone; stop it first (`systemctl --user stop speech2image` or kill "
        f"{first.pid}), lock file {path}"
    )


def test_the_lock_dies_with_a_sigkilled_holder(
    holder: tuple[subprocess.Popen[str], Path],
) -> None:
    first, path = holder
    lock = InstanceLock(path)
    with pytest.raises(AlreadyRunningError) as raised:
        lock.acquire()
    assert raised.value.pid == first.pid
    assert raised.value.path == path
    assert not lock.held
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert path.exists()  # the file stays behind; the lock does not
    with lock:
        assert lock.held
        assert path.read_text() == f"{os.getpid()}\n"
    assert not lock.held


def test_release_lets_the_next_one_in_and_leaves_no_pid(tmp_path: Path) -> None:
    path = tmp_path / "speech2image.lock"
    first = InstanceLock(path)
    first.acquire()
    first.acquire()  # taking a lock it holds is a no-op, not a conflict with itself
    with pytest.raises(AlreadyRunningError):
        InstanceLock(path).acquire()  # flock is per open file: a second one conflicts
    first.release()
    first.release()
    assert path.read_text() == ""
    with InstanceLock(path):
        pass


def test_a_garbled_lock_file_names_no_pid(tmp_path: Path) -> None:
    path = tmp_path / "speech2image.lock"
    with InstanceLock(path):
        path.write_text("not a pid\n")
        with pytest.raises(AlreadyRunningError) as raised:
            InstanceLock(path).acquire()
    assert raised.value.pid is None
    assert "(pid" not in str(raised.value)
    assert "kill" not in str(raised.value)
    assert str(path) in str(raised.value)


def test_the_lock_is_not_inherited_by_a_child_process(tmp_path: Path) -> None:
    """A helper the daemon spawns must not keep the microphone locked after it died."""
    path = tmp_path / "speech2image.lock"
    lock = InstanceLock(path)
    lock.acquire()
    child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        lock.release()
        with InstanceLock(path):
            pass
    finally:
        child.kill()
        child.wait(timeout=10)


def test_default_lock_path_is_in_the_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    assert default_lock_path() == Path("/run/user/4242/speech2image.lock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    fallback = default_lock_path()
    assert fallback.name == "speech2image.lock"
    assert fallback.parent in (
        Path(f"/run/user/{os.getuid()}"),
        Path(f"/tmp/speech2image-{os.getuid()}"),
    )


def test_a_missing_private_dir_is_created_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / f"speech2image-{os.getuid()}" / "speech2image.lock"
    with InstanceLock(path):
        assert (path.parent.stat().st_mode & 0o777) == 0o700
        assert (path.stat().st_mode & 0o777) == 0o600
