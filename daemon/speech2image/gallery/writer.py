"""The gallery writer: a complete PNG appears in the gallery, or nothing does.

The folder is the source of truth: ``DIR/YYYY-MM-DD/HHMMSS-<slug>-<seed>.png`` plus a
``.json`` sidecar with the same stem (the request record, ``request.Request``). Each
file is encoded in memory, written to the gallery's hidden ``.tmp/`` folder (same
file system), fsynced, then hard-linked to its final name: the sidecar first, then
the PNG as the commit marker. A link never replaces an existing file, so a name
collision gets a ``-2`` suffix instead of overwriting, and an interrupted write
(SIGKILL, full disk, power loss) leaves at most a stray temp file in ``.tmp/``,
which the next start removes; a watcher of the gallery sees one new, complete file.

Several writers may share one gallery (the daemon and a ``speech2image generate``
in another process). Temp names say whose they are, ``<pid>-<counter>-<random>.part``,
so that :meth:`GalleryWriter.prepare` removes only what a dead writer left, never
another process's write in progress.
"""

from __future__ import annotations

import datetime as dt
import errno
import itertools
import json
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Any

from ..request import Request
from .metadata import a1111_parameters, encode_png, image_name, slugify

__all__ = [
    "GalleryError",
    "GalleryWriter",
    "a1111_parameters",
    "image_name",
    "sidecar_bytes",
    "slugify",
]

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
TEMP_SUFFIX = ".part"
TEMP_NAME = re.compile(r"(?P<pid>[0-9]+)-(?P<count>[0-9]+)-(?P<token>[0-9a-f]+)\.part")
# A temp file lives for milliseconds; one this old is left over, even if its pid
# now belongs to a live process (pids are reused), or named by an older version.
STALE_AFTER_S = 3600.0
# What a file system that cannot sync a folder (some FUSE and network mounts) says.
DIR_FSYNC_REFUSED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


class GalleryError(Exception):
    """The image could not be stored (full disk, read-only folder, ...); nothing partial is left."""


class GalleryWriter:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._tmp = self.root / TMP_DIR

    def prepare(self) -> None:
        """Create the folders and remove temp files that interrupted writers left behind.

        Runs at every start, while other processes may be writing into the same
        gallery: only stale files go (see :func:`is_stale_temp`).
        """
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            entries = list(os.scandir(self._tmp))
        except OSError as exc:
            raise GalleryError(_explain(exc, self.root)) from exc
        now = time.time()
        removed = sum(_remove(entry) for entry in entries if is_stale_temp(entry, now))
        if removed:
            log.info("removed %d temp file(s) left by interrupted writes", removed)

    def write(self, image: Any, request: Request, when: dt.datetime | None = None) -> Path:
        """Store the PNG and its sidecar as a pair; the PNG's path, or GalleryError.

        ``image`` is a PIL image; ``request`` the record, with its image part.
        """
        if request.image is None:
            raise ValueError(f"request {request.id} has no image part to store")
        when = when or dt.datetime.now()
        png = encode_png(image, a1111_parameters(request.prompt, request.image))
        try:
            self._recreate_if_deleted()
            path = self._publish_pair(png, request, when)
        except OSError as exc:
            raise GalleryError(_explain(exc, self.root)) from exc
        # The file name holds the prompt, which is private: the full path only at DEBUG.
        log.info("image written to %s (%d KB)", path.parent, len(png) // 1024)
        log.debug("image path: %s", path)
        return path

    def _recreate_if_deleted(self) -> None:
        """Make the gallery and ``.tmp/`` again if someone removed them while we ran.

        A user clearing out the gallery folder (``rm -rf``) should find the next
        picture there, not a daemon that failed every request since.
        """
        if self._tmp.is_dir():
            return
        if not self.root.is_dir():
            log.info("the gallery folder %s is gone; making it again", self.root)
            _make_folder(self.root)  # its entry synced, like a date folder's
        self._tmp.mkdir(exist_ok=True)  # temp files need no durable folder entry

    def _publish_pair(self, png: bytes, request: Request, when: dt.datetime) -> Path:
        """The sidecar first (it claims the name), then the PNG, the commit marker.

        A watcher that sees a PNG always finds its sidecar; a crash between the two
        leaves at most a sidecar without a PNG, never a PNG without its record.
        """
        assert request.image is not None
        for attempt in range(1, 1000):
            target = self.root / image_name(when, request.prompt, request.image.seed, attempt)
            if target.exists():
                continue
            sidecar = sidecar_bytes(request.filed_as(target.name), when)
            if not self._publish_at(target.with_suffix(".json"), sidecar):
                continue
            try:
                if self._publish_at(target, png):
                    return target
            except BaseException:
                target.with_suffix(".json").unlink(missing_ok=True)
                raise
            target.with_suffix(".json").unlink(missing_ok=True)  # a PNG put there meanwhile
        raise FileExistsError(errno.EEXIST, "no free file name", str(target))

    def _publish_at(self, target: Path, data: bytes) -> bool:
        """Temp file, fsync, link into place; False when ``target`` exists and must stay.

        A link whose folder cannot be synced is taken back: it might not survive a
        power loss, and the caller is told the write failed.
        """
        _make_folder(target.parent)
        temp = self._write_temp(data)
        try:
            if not link_no_replace(temp, target):
                return False
        finally:
            temp.unlink(missing_ok=True)
        try:
            _fsync_dir(target.parent)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return True

    def _write_temp(self, data: bytes) -> Path:
        """``data`` in a new, fsynced file under ``.tmp/``, named for this writer."""
        fd, temp = _create_temp(self._tmp)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp


_temp_counter = itertools.count(1)


def temp_name() -> str:
    """``<pid>-<counter>-<random>.part``: unique per writer, and it says whose it is.

    The pid lets another process's :meth:`GalleryWriter.prepare` tell a live
    writer's file from a dead one's; the counter keeps this process's names apart,
    the random part keeps them apart from an earlier process with the same pid.
    """
    return f"{os.getpid()}-{next(_temp_counter)}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def _create_temp(folder: Path) -> tuple[int, Path]:
    """A new file that nobody else has (O_EXCL), with the permissions the user's umask
    gives any saved file (a gallery is for looking at, unlike mkstemp's 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        path = folder / temp_name()
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(folder))


def is_stale_temp(entry: os.DirEntry[str], now: float) -> bool:
    """Whether ``entry`` in ``.tmp/`` was left by a writer that will never finish it.

    Ours (``<pid>-...part``): its process is gone, or it is over an hour old (the pid
    may have been reused). Anything else (older versions used ``tempfile`` names):
    over an hour old. Folders are never ours.
    """
    try:
        info = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False  # another prepare() got there first
    if stat.S_ISDIR(info.st_mode):
        return False
    if now - info.st_mtime > STALE_AFTER_S:
        return True
    match = TEMP_NAME.fullmatch(entry.name)
    return match is not None and not process_alive(int(match["pid"]))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine, in this pid namespace)."""
    if pid <= 0:
        return False  # never a writer's; os.kill would signal a process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    except (OverflowError, ValueError):
        return False  # beyond any pid
    except OSError:
        return True  # cannot tell: keep its file
    return True


def _remove(entry: os.DirEntry[str]) -> bool:
    """Remove a stale temp file; a failure is logged, not fatal (it is only litter)."""
    try:
        os.unlink(entry.path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove the stale temp file %s: %s", entry.path, exc)
        return False
    log.debug("removed the stale temp file %s", entry.path)
    return True


def sidecar_bytes(request: Request, when: dt.datetime) -> bytes:
    """The request record as JSON; a value JSON cannot hold is a GalleryError, not a crash."""
    data = request.to_sidecar()
    data["written"] = when.astimezone().isoformat(timespec="seconds")
    try:
        text = json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GalleryError(
            f"the record of request {request.id} cannot be stored as JSON ({exc}); "
            "nothing was written"
        ) from exc
    return (text + "\n").encode("utf-8")


def link_no_replace(temp: Path, target: Path) -> bool:
    """Give ``temp`` the name ``target`` unless that exists; False if it does.

    A hard link is atomic and never replaces; file systems without hard links
    (FAT, some network mounts) fall back to check-then-rename.
    """
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if target.exists():
            return False
        os.replace(temp, target)
    return True


def _make_folder(folder: Path) -> None:
    """Create a folder (a date folder, or the gallery itself after it was deleted);
    each new one's entry is synced in its parent.

    Without that, a power loss could lose the new folder, and every image in it,
    although each image and its link were synced. Syncing whenever a folder was
    missing, not only when this process made it, covers two writers racing to it.
    """
    if folder.is_dir():
        return
    missing = [folder, *(p for p in folder.parents if not p.is_dir())]
    folder.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        _fsync_dir(made.parent)


_dir_fsync_refused_on: set[int] = set()  # st_dev of file systems already logged


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable too, not just the file's bytes.

    Some file systems (some FUSE and network mounts) refuse to sync a folder: that is
    their own durability model, not a failed write, so it is noted once at DEBUG.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in DIR_FSYNC_REFUSED:
            raise
        device = os.fstat(fd).st_dev
        if device not in _dir_fsync_refused_on:
            _dir_fsync_refused_on.add(device)
            log.debug("the file system of %s cannot sync folders (%s); going on", folder, exc)
    finally:
        os.close(fd)


def _explain(exc: OSError, root: Path) -> str:
    """What went wrong, naming the gallery folder but never the file: an image's name
    holds a slug of its prompt, which is private, and this message reaches the logs.
    (``str(exc)`` would include the file name, so only ``strerror`` is used.)"""
    if exc.errno == errno.ENOSPC:
        return f"the disk holding the gallery {root} is full; nothing was written"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"the gallery folder {root} is not writable ({exc.strerror}); nothing was written"
    why = exc.strerror or type(exc).__name__
    return f"could not write to the gallery {root} ({why}); nothing was written"
