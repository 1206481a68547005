"""One microphone daemon per user: an ``flock`` on a file in the user's runtime dir.

Two daemons on one microphone would both hear the wake word and draw every picture
twice, so ``run`` takes this lock before it opens a microphone (file runs and
``generate`` do not). ``flock`` belongs to the open file, and the kernel drops it when
the process dies however it dies, so a SIGKILLed daemon never leaves a stale lock and
nothing has to guess whether an old pid is still alive. The pid written into the file
is only there to tell the second daemon whom to stop.

The file is never unlinked: deleting a lock file that another process has already
opened lets a third process lock a fresh file beside it, and both would run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

EX_ALREADY_RUNNING = 75  # EX_TEMPFAIL; the systemd unit lists it in RestartPreventExitStatus
LOCK_NAME = "speech2image.lock"


class AlreadyRunningError(Exception):
    """Another daemon of this user holds the lock; ``pid`` is None when it is unknown."""

    def __init__(self, pid: int | None, path: Path) -> None:
        self.pid = pid
        self.path = path
        super().__init__(already_running_message(pid, path))


def already_running_message(pid: int | None, path: Path) -> str:
    """What the second daemon prints: who holds the microphone and how to stop it."""
    who = f" (pid {pid})" if pid is not None else ""
    kill = f" or kill {pid}" if pid is not None else ""
    return (
        f"another speech2image daemon{who} is already listening on the microphone; "
        f"stop it first (`systemctl --user stop speech2image`{kill}), lock file {path}"
    )


def default_lock_path() -> Path:
    """``$XDG_RUNTIME_DIR/speech2image.lock``, the per-user, per-boot place for locks.

    Without ``XDG_RUNTIME_DIR`` (a bare ``su`` or ssh session, a container), logind's
    ``/run/user/<uid>`` is used when it exists and is ours; otherwise a private
    ``/tmp/speech2image-<uid>/`` (created 0700 when the lock is taken, and refused if
    another user owns it), since ``/tmp`` is shared and nobody else may take or fake our
    lock. (platformdirs' own fallback warns on every call and may raise, so it is not used.)
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return Path(runtime) / LOCK_NAME
    logind = Path("/run/user") / str(os.getuid())
    with contextlib.suppress(OSError):
        if logind.is_dir() and logind.stat().st_uid == os.getuid():
            return logind / LOCK_NAME
    return Path("/tmp") / f"speech2image-{os.getuid()}" / LOCK_NAME


def parse_pid(text: str) -> int | None:
    """The pid in a lock file's text, or None when it is empty or garbled."""
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


class InstanceLock:
    """The per-user daemon lock. ``acquire`` raises :class:`AlreadyRunningError` when held.

    An ``OSError`` from ``acquire`` means the lock file could not be opened at all
    (unwritable runtime dir, a private dir owned by someone else).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_lock_path()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write our pid into the file."""
        if self._fd is not None:
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = parse_pid(_read(fd))
            os.close(fd)
            raise AlreadyRunningError(holder, self.path) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        log.debug("holding the instance lock %s", self.path)

    def release(self) -> None:
        """Give the lock up (closing the file does it); the file stays for the next one."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid left behind that reads as a live holder
        os.close(fd)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def _open(self) -> int:
        """The lock file, opened close-on-exec so that no child process inherits the lock."""
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if parent.name == f"speech2image-{os.getuid()}" and parent.stat().st_uid != os.getuid():
            raise PermissionError(f"{parent} belongs to another user; not using it for the lock")
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 64, 0).decode("ascii", "replace")
    return ""
