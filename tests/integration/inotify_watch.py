"""Raw Linux inotify through ctypes: see a file appear in a folder tree, and act at once.

Tests use it to SIGKILL a writer at a chosen point of its write (the moment it creates
a temp file, or links a picture into place), with no hook in the product. Events are
read in the calling thread (no observer thread, no queue), so the kill follows the
``creat`` or ``link`` by well under a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

IN_CREATE = 0x00000100
IN_ISDIR = 0x40000000
IN_CLOEXEC = 0o2000000
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def _checked(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


class CreateWatch:
    """Files and folders created under ``root`` (inotify ``IN_CREATE``), in order.

    Folders that exist at the start, and folders created later, are watched too.
    """

    def __init__(self, root: Path) -> None:
        self.fd = _checked(_libc.inotify_init1(IN_CLOEXEC))
        self._folders: dict[int, Path] = {}
        try:
            for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
                self._add(folder)
        except BaseException:
            os.close(self.fd)
            raise

    def _add(self, folder: Path) -> None:
        wd = _checked(_libc.inotify_add_watch(self.fd, os.fsencode(folder), IN_CREATE))
        self._folders[wd] = folder

    def __enter__(self) -> CreateWatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self.fd)

    def created(self, wait: float) -> list[Path]:
        """What was created since the last call; waits up to ``wait`` s for the first."""
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return []
        buffer = os.read(self.fd, 64 * 1024)
        paths, offset = [], 0
        while offset < len(buffer):
            wd, mask, _cookie, length = EVENT.unpack_from(buffer, offset)
            offset += EVENT.size
            name = os.fsdecode(buffer[offset : offset + length].rstrip(b"\0"))
            offset += length
            path = self._folders[wd] / name
            paths.append(path)
            if mask & IN_ISDIR:
                self._add(path)  # whatever it gets from now on is seen
        return paths

    def kill_when(
        self,
        process: subprocess.Popen[bytes],
        now: Callable[[list[Path]], bool],
        timeout: float,
    ) -> list[Path]:
        """SIGKILL ``process`` as soon as ``now(created so far)``; what was created until then.

        When the process ends first (or ``timeout`` passes, after which it is killed
        anyway), ``now`` was never true of the list returned.
        """
        seen: list[Path] = []
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            for path in self.created(0.05):
                seen.append(path)
                if now(seen):
                    process.send_signal(signal.SIGKILL)
                    return seen
        process.kill()
        return seen
