"""The gallery's trash: delete from the page moves the pair aside, restorable for 30 days.

A deleted image and its sidecar go to ``.trash/<tid>/<id>`` (the relative path kept,
so a restore knows where they came from); ``tid`` is ``<epoch seconds>-<8 hex>``, so
the folder name alone says when it was deleted, and two deletions of the same name
never meet. Nothing is copied or rewritten: moves are renames inside the gallery's
file system, so a trashed file is byte-identical (same inode, same mtime) to what was
deleted, and comes back the same.

The image is the pair's commit marker, as in :mod:`.writer`: a delete moves it first
and a restore puts it back last (see :meth:`Trash.delete` and :meth:`Trash.restore`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .entry import HIDDEN_PREFIX, IMAGE_SUFFIXES
from .writer import link_no_replace

__all__ = [
    "RETENTION_S",
    "TRASH_DIR",
    "NotInTrash",
    "Trash",
    "TrashConflict",
    "TrashError",
    "TrashItem",
    "resolve_id",
]

log = logging.getLogger(__name__)

TRASH_DIR = ".trash"
RETENTION_S = 30 * 24 * 3600
TID = re.compile(r"(?P<deleted>[0-9]{1,12})-[0-9a-f]{8}")
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class TrashItem:
    """One deleted image: where it lies now, and what it was."""

    tid: str  # folder name under .trash/
    id: str  # the image's original id
    deleted: float  # epoch seconds (whole seconds: the tid's first part)
    image: Path  # the image inside .trash/<tid>/
    sidecar: Path | None = None  # its sidecar inside .trash/<tid>/, when it had one


class TrashError(Exception):
    """A trash operation could not be done; the message says what and why."""


class TrashConflict(TrashError):  # noqa: N818 - the name the API is written against
    """The restored image's name is taken again; nothing was changed."""


class NotInTrash(TrashError):  # noqa: N818
    """No such item in the trash (never there, already restored, or emptied)."""


def resolve_id(root: Path, id: str) -> Path:
    """``root / id`` for an image id that names a file inside the gallery; ValueError
    for anything else: an absolute path, ``..``, a hidden component (``.tmp/``,
    ``.trash/``), a name that is not an image, or one that leaves the gallery through
    a symlink. Ids come from URLs, so none of this is trusted."""
    if not id or "\0" in id:
        raise ValueError(f"{id!r} is not an image id")
    path = PurePosixPath(id)
    if path.is_absolute():
        raise ValueError(f"{id!r} is not an image id (ids are relative paths)")
    if any(part in ("", ".", "..") or part.startswith(HIDDEN_PREFIX) for part in id.split("/")):
        raise ValueError(f"{id!r} is not an image id (no '..' or hidden folders)")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{id!r} is not an image id (not a PNG, JPEG or WebP name)")
    root = root.resolve()
    target = root.joinpath(*path.parts)
    if not target.resolve().is_relative_to(root):
        raise ValueError(f"{id!r} is not an image id (it leads outside the gallery)")
    return target


class Trash:
    """The ``.trash/`` folder of one gallery; one lock makes concurrent calls take turns."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.folder = self.root / TRASH_DIR
        self._lock = threading.Lock()

    def delete(self, id: str) -> TrashItem:
        """Move the image ``id`` and its sidecar into a new ``.trash/<tid>/``.

        The image goes first. It is the commit marker every reader goes by (the
        writer links it last; the index and the watchers list images, not sidecars),
        so the gallery goes from "image with its record" straight to "no image": no
        moment shows an image whose record is already gone. Had the sidecar moved
        first, the index could re-read the image as one without metadata and push a
        changed, prompt-less entry to every page. A crash between the two moves
        leaves a sidecar without its image, which readers ignore (an interrupted
        write looks the same), and which a restore of the image picks up again.

        FileNotFoundError when the image is gone; ValueError for a bad id.
        """
        source = resolve_id(self.root, id)
        with self._lock:
            if not source.is_file():
                raise FileNotFoundError(errno.ENOENT, "no such image in the gallery", id)
            deleted = int(time.time())
            try:
                tid = _new_tid(self.folder, deleted)
                image = self.folder / tid / id
                sidecar = _move_pair(source, image, self.folder / tid)
            except FileNotFoundError:
                raise  # deleted by someone else meanwhile
            except OSError as exc:
                raise TrashError(_unwritable(self.root, exc)) from exc
        log.info("moved 1 image to the trash")
        log.debug("trashed %s as %s", id, tid)
        return TrashItem(tid, id, float(deleted), image, sidecar)

    def items(self) -> list[TrashItem]:
        """Everything in the trash, newest deletion first."""
        with self._lock:
            found = [self._item(tid) for tid in self._tids()]
        items = [item for item in found if item is not None]
        return sorted(items, key=lambda item: (item.deleted, item.tid), reverse=True)

    def restore(self, tid: str) -> str:
        """Put the pair of ``tid`` back under its original id, which it returns.

        The sidecar goes back first, then the image, as the writer publishes a pair:
        the sidecar claims the name, and a watcher that sees the image finds its
        record. Each is linked to its old name (a link never replaces a file), then
        unlinked from the trash, so a name taken meanwhile (a new image, or a writer
        between its two links) is a TrashConflict with nothing changed.
        """
        with self._lock:
            item = self._item(tid)
            if item is None:
                raise NotInTrash(f"{tid!r} is not in the trash (already restored or emptied?)")
            target = resolve_id(self.root, item.id)
            try:
                _put_back(item, target)
            except OSError as exc:
                why = exc.strerror or type(exc).__name__
                raise TrashError(f"cannot restore into {self.root} ({why})") from exc
            shutil.rmtree(self.folder / tid, ignore_errors=True)  # only empty folders are left
        log.info("restored 1 image from the trash")
        log.debug("restored %s from %s", item.id, tid)
        return item.id

    def purge(self, older_than_s: float = RETENTION_S, now: float | None = None) -> int:
        """Remove what was deleted at least ``older_than_s`` ago; returns the count."""
        moment = time.time() if now is None else now
        return self._remove_where(lambda deleted: moment - deleted >= older_than_s)

    def empty(self) -> int:
        """Remove everything in the trash (clock skew or not); returns the count."""
        return self._remove_where(lambda deleted: True)

    def file(self, tid: str) -> Path:
        """The trashed image of ``tid`` (what ``/trash-files/<tid>`` serves)."""
        with self._lock:
            item = self._item(tid)
        if item is None:
            raise NotInTrash(f"{tid!r} is not in the trash")
        return item.image

    def _remove_where(self, due: Callable[[float], bool]) -> int:
        removed = 0
        with self._lock:
            for tid in self._tids():
                match = TID.fullmatch(tid)
                assert match is not None
                if due(float(match["deleted"])):
                    shutil.rmtree(self.folder / tid, ignore_errors=True)
                    removed += not (self.folder / tid).exists()
        if removed:
            log.info("removed %d item(s) from the trash for good", removed)
        return removed

    def _tids(self) -> list[str]:
        """The trash folders this module made (other names are left alone)."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        return [
            e.name for e in entries if TID.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        ]

    def _item(self, tid: str) -> TrashItem | None:
        """The item in ``.trash/<tid>``, or None: a bad name (never a path: no
        traversal), no such folder, or one holding no image (a delete that failed)."""
        match = TID.fullmatch(tid)
        folder = self.folder / tid
        if match is None or not folder.is_dir() or folder.is_symlink():
            return None
        image = _find_image(folder)
        if image is None:
            return None
        sidecar = image.with_suffix(SIDECAR_SUFFIX)
        return TrashItem(
            tid,
            image.relative_to(folder).as_posix(),
            float(match["deleted"]),
            image,
            sidecar if sidecar.is_file() else None,
        )


def _find_image(folder: Path) -> Path | None:
    """The one image file under ``folder`` (at any depth: the id's folders); a symlink
    is never one (planted by hand, it could point anywhere)."""
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(HIDDEN_PREFIX))
        for name in sorted(files):
            path = Path(parent) / name
            if name.startswith(HIDDEN_PREFIX) or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.is_symlink():
                return path
    return None


def _move_pair(source: Path, image: Path, folder: Path) -> Path | None:
    """Image first, then its sidecar (see :meth:`Trash.delete`); the sidecar's new
    path, or None without one. A failed image move removes the new trash folder."""
    try:
        image.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, image)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    sidecar = image.with_suffix(SIDECAR_SUFFIX)
    try:
        os.rename(source.with_suffix(SIDECAR_SUFFIX), sidecar)
    except FileNotFoundError:
        return None  # copied in by hand: no sidecar
    except OSError as exc:
        # The image is in the trash already; its record stays behind, ignored by
        # readers, and a restore of the image finds it there again.
        log.warning("an image's record could not follow it to the trash (%s)", exc.strerror)
        return None
    return sidecar


def _put_back(item: TrashItem, target: Path) -> None:
    """The sidecar, then the image, linked to their old names, then unlinked from the
    trash; TrashConflict, with everything as it was, when either name is taken."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sidecar = target.with_suffix(SIDECAR_SUFFIX)
    if item.sidecar is not None and not _link(item.sidecar, sidecar):
        raise TrashConflict(_taken(item.id, "a .json record"))
    if not _link(item.image, target):
        if item.sidecar is not None:
            _take_back(sidecar, item.sidecar)
        raise TrashConflict(_taken(item.id, "an image"))
    item.image.unlink(missing_ok=True)
    if item.sidecar is not None:
        item.sidecar.unlink(missing_ok=True)


def _take_back(placed: Path, original: Path) -> None:
    """Undo a :func:`_link`: drop the new name, or move the file back where it had to
    be moved (file systems without hard links)."""
    if original.exists():
        placed.unlink()
    else:
        os.rename(placed, original)


def _new_tid(folder: Path, deleted: int) -> str:
    """A folder name nobody has: ``<deleted>-<8 hex>``, created here (``mkdir`` is atomic,
    so two processes deleting in the same second never share a folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        tid = f"{deleted}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileExistsError):
            (folder / tid).mkdir()
            return tid


def _link(source: Path, target: Path) -> bool:
    """Give ``source`` the name ``target`` too, unless that exists; False if it does.

    True also when ``target`` already is ``source`` (a restore interrupted between its
    link and its unlink, finished now).
    """
    return link_no_replace(source, target) or os.path.samefile(source, target)


def _unwritable(root: Path, exc: OSError) -> str:
    """Names the gallery, never the file (its name holds words of the prompt)."""
    why = exc.strerror or type(exc).__name__
    return f"cannot move the image to the trash in {root} ({why}); nothing was deleted"


def _taken(id: str, what: str) -> str:
    return (
        f"cannot restore {id}: {what} of that name is in the gallery again; "
        "move or delete that file, then restore again"
    )
