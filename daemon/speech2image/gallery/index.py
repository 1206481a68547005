"""The live in-memory index of the gallery folder: what the page lists and searches.

The folder stays the source of truth. :meth:`GalleryIndex.start` scans it once, then a
``watchdog`` observer (inotify) keeps the index current as images are written by the
daemon, copied in by hand, moved or deleted, and tells subscribers (the page's
server-sent events) what changed (the ordered listing itself: ``listing.py``).

A file that exists but does not read yet (a copy in progress) is kept in a pending set
and read again on its next event and by one retry timer, for at most a minute. The
gallery folder itself removed or renamed empties the index until a folder is back at
its path; a rename has no inotify event watchdog passes on, so a small thread checks
the folder's identity every :data:`ROOT_CHECK_S` s.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog import events
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ..subscribers import Subscribers
from .entry import IMAGE_SUFFIXES, ImageEntry
from .listing import Change, Listing, make_cursor, parse_cursor, stem, under
from .reading import entry_id, read_entry, read_tree

__all__ = ["Change", "GalleryIndex", "Listener"]

log = logging.getLogger(__name__)

Listener = Callable[[Change], None]
# A file still unreadable this long after it appeared is left as it is (not listed).
RETRY_FOR_S = 60.0
STOP_WITHIN_S = 2.0
ROOT_CHECK_S = 0.5  # a stat() this often: a renamed gallery leaves the page within ~1 s
SIDECAR_SUFFIX = ".json"
# What the index acts on; opening and reading files (its own reads too) is not news.
# A changed time stamp (``touch``) is: without a sidecar it is the image's time.
WATCHED_EVENTS: list[type[events.FileSystemEvent]] = [
    events.FileCreatedEvent,
    events.FileModifiedEvent,
    events.FileAttribEvent,
    events.FileClosedEvent,
    events.FileMovedEvent,
    events.FileDeletedEvent,
    events.DirCreatedEvent,
    events.DirDeletedEvent,
    events.DirMovedEvent,
]


class GalleryIndex:
    """Every image in the gallery, newest first, kept current by a file-system observer.

    Thread-safe: the observer thread and the retry timer write, web threads read.
    Writers take ``_update`` (one at a time, so changes are published in the order
    they happened); the listing itself is guarded by ``_lock``, held only briefly, so
    a reader never waits for a file being read.
    """

    def __init__(self, root: Path, *, settle_s: float = 0.25) -> None:
        self.root = root.expanduser().resolve()
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._update = threading.RLock()
        self._listing = Listing()
        self._subscribers: Subscribers[Change] = Subscribers("gallery index")
        self._pending: dict[str, float] = {}  # id -> monotonic time to give up
        self._timer: threading.Timer | None = None
        self._observer: BaseObserver | None = None
        self._root_lost = False
        self._root_identity: tuple[int, int] | None = None  # (st_dev, st_ino) watched
        self._stopping = threading.Event()
        self._checker: threading.Thread | None = None

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._listing)

    def get(self, id: str) -> ImageEntry | None:
        with self._lock:
            return self._listing.get(id)

    def page(
        self, query: str = "", before: str | None = None, limit: int = 60
    ) -> tuple[list[ImageEntry], str | None]:
        """Up to ``limit`` entries, newest first, whose prompt or name holds every word
        of ``query`` (case-insensitive), older than the cursor ``before``; and the
        cursor of the next page (None on the last). A cursor not made by this method
        is a ValueError."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        cursor = parse_cursor(before) if before is not None else None
        with self._lock:
            found, more = self._listing.page(query.lower().split(), cursor, limit)
        return found, (make_cursor(found[-1]) if more and found else None)

    # -- watching ------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every change (from the observer's thread); the
        returned function unsubscribes. A listener that raises is logged and skipped."""
        return self._subscribers.subscribe(listener)

    def start(self) -> None:
        """Watch the folder (made if missing, as the writer would) and scan it.

        The observer starts first, so nothing written during the scan is missed; its
        events wait for the scan and then re-read files that are already current.
        """
        with self._update:
            if self._observer is not None:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            # watchdog warns when it adds a new folder's watch twice (folders made in
            # quick succession); it resolves that itself, so the warning is only noise.
            warnings.filterwarnings("ignore", "Callback with id .* already exists", RuntimeWarning)
            self._observer = self._watch()
            self.scan()
            self._stopping.clear()
            self._checker = threading.Thread(
                target=self._check_root, name="gallery-root", daemon=True
            )
            self._checker.start()

    def stop(self) -> None:
        """Stop the observer, the retry timer and the folder check; returns within about
        two seconds."""
        self._stopping.set()
        with self._update:
            observer, self._observer = self._observer, None
            timer, self._timer = self._timer, None
            checker, self._checker = self._checker, None
        if timer is not None:
            timer.cancel()
        if observer is not None:
            observer.stop()
            observer.join(STOP_WITHIN_S)
        if checker is not None:
            checker.join(STOP_WITHIN_S)

    def scan(self) -> int:
        """Rebuild the index from disk and publish what differs; the number of images."""
        with self._update:
            found, unreadable = read_tree(self.root, self.root)
            with self._lock:
                changes = self._listing.replace_all(slim_all(found))
            for image_id in unreadable:
                self._pend(image_id)
            self._publish(changes)
            return len(found)

    def refresh(self, id: str) -> None:
        """Read one image again now (after a restore from the trash, say)."""
        path = self.root.joinpath(*id.split("/"))
        if entry_id(self.root, path) != id or path.suffix.lower() not in IMAGE_SUFFIXES:
            return
        with self._update:
            self._refresh(path, id)

    # -- applying changes ----------------------------------------------------

    def _refresh(self, path: Path, image_id: str) -> None:
        """Read ``path`` and apply the result; a file that exists but does not read
        yet keeps its old entry (if any) and is tried again later."""
        entry = read_entry(self.root, path)
        if entry is None and path.is_file():
            self._pend(image_id)
            return
        self._pending.pop(image_id, None)
        self._publish(self._apply(image_id, slim(entry) if entry else None))

    def _apply(self, image_id: str, entry: ImageEntry | None) -> list[Change]:
        with self._lock:
            change = self._listing.apply(image_id, entry)
        return [] if change is None else [change]

    def _publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self._subscribers.publish(change)

    # -- events from the observer --------------------------------------------

    def _watch(self) -> BaseObserver:
        """An inotify observer on the whole gallery, for the events that matter here."""
        observer = Observer()
        try:
            observer.schedule(
                _Handler(self._on_event),
                str(self.root),
                recursive=True,
                event_filter=WATCHED_EVENTS,
            )
        except OSError as exc:
            raise OSError(exc.errno, _watch_failure(self.root, exc)) from exc
        observer.daemon = True
        observer.start()
        self._root_identity = _identity(self.root)
        return observer

    def _check_root(self) -> None:
        """Notice the gallery folder renamed (or replaced) under the observer.

        inotify follows a watched folder to its new name and watchdog drops the
        IN_MOVE_SELF that says so, so the index would go on listing a folder that is no
        longer the gallery and miss the one the writer makes at its path.
        """
        while not self._stopping.wait(ROOT_CHECK_S):
            try:
                with self._update:
                    watching = self._observer is not None and not self._root_lost
                    if watching and _identity(self.root) != self._root_identity:
                        self._drop_folder(self.root)
            except Exception:
                log.exception("the gallery index could not check its folder")

    def _on_event(self, event: events.FileSystemEvent) -> None:
        """One file-system event; never raises (that would end the observer thread)."""
        try:
            with self._update:
                self._dispatch(event)
        except Exception:
            log.exception("the gallery index could not apply a %s event", event.event_type)

    def _dispatch(self, event: events.FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.event_type == "moved" else ""
        if not event.is_directory:
            for path in filter(None, (src, dest)):
                self._file_touched(Path(path))
        elif event.event_type == "created":
            self._sync_folder(Path(src))
        elif event.event_type in ("deleted", "moved"):
            self._drop_folder(Path(src))
            if dest:
                self._sync_folder(Path(dest))

    def _file_touched(self, path: Path) -> None:
        """An image is read again; a sidecar makes its image be read again."""
        image_id = entry_id(self.root, path)
        if image_id is None:
            return
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            self._refresh(path, image_id)
        elif suffix == SIDECAR_SUFFIX:
            with self._lock:
                images = self._listing.with_stem(stem(image_id))
            for image in images:
                self._refresh(self.root.joinpath(*image.split("/")), image)

    def _sync_folder(self, folder: Path) -> None:
        """A folder appeared (made, or moved in whole): read everything under it."""
        prefix = "" if folder == self.root else entry_id(self.root, folder)
        if prefix is None:
            return
        found, unreadable = read_tree(self.root, folder)
        found = slim_all(found)
        with self._lock:
            gone = [i for i in self._listing.ids_under(prefix) if i not in found]
        changes: list[Change] = []
        for image_id in gone:
            if image_id not in unreadable:
                changes += self._apply(image_id, None)
        for image_id, entry in found.items():
            self._pending.pop(image_id, None)
            changes += self._apply(image_id, entry)
        for image_id in unreadable:
            self._pend(image_id)
        self._publish(changes)

    def _drop_folder(self, folder: Path) -> None:
        """A folder was deleted or moved away: forget everything under it."""
        if folder == self.root:
            if self._root_lost:
                return  # noticed already (the folder check and the observer both tell)
            log.warning("the gallery folder %s was removed or renamed; waiting for it", folder)
            self._root_lost = True
            prefix = ""
        else:
            found = entry_id(self.root, folder)
            if found is None:
                return
            prefix = found
        for image_id in under(self._pending, prefix):
            del self._pending[image_id]
        with self._lock:
            gone = self._listing.ids_under(prefix)
        self._publish([c for image_id in gone for c in self._apply(image_id, None)])
        self._arm()

    # -- retrying ------------------------------------------------------------

    def _pend(self, image_id: str) -> None:
        self._pending.setdefault(image_id, time.monotonic() + RETRY_FOR_S)
        self._arm()

    def _arm(self) -> None:
        """One timer for every pending file (and a lost gallery folder), while watching."""
        if self._observer is None or self._timer is not None:
            return
        if not self._pending and not self._root_lost:
            return
        self._timer = threading.Timer(self.settle_s, self._retry)
        self._timer.daemon = True
        self._timer.start()

    def _retry(self) -> None:
        try:
            with self._update:
                self._timer = None
                if self._observer is None:
                    return
                if self._root_lost:
                    self._rewatch()
                now = time.monotonic()
                for image_id, give_up in list(self._pending.items()):
                    self._refresh(self.root.joinpath(*image_id.split("/")), image_id)
                    if image_id in self._pending and now >= give_up:
                        log.debug("%s still does not read as an image; left out", image_id)
                        del self._pending[image_id]
                        self._publish(self._apply(image_id, None))
                self._arm()
        except Exception:
            log.exception("the gallery index could not retry unreadable files")

    def _rewatch(self) -> None:
        """The gallery folder is back (the writer makes it again): watch it and scan."""
        if not self.root.is_dir() or self._observer is None:
            return
        old, self._observer = self._observer, None
        old.stop()  # not joined: its thread may be waiting for the lock held here
        self._observer = self._watch()  # an OSError leaves the index unwatched, logged
        self._root_lost = False
        log.info("watching the gallery folder %s again", self.root)
        self.scan()


class _Handler(events.FileSystemEventHandler):
    """Hands every event to the index (watchdog calls handlers by their class)."""

    def __init__(self, handle: Callable[[events.FileSystemEvent], None]) -> None:
        self._handle = handle

    def on_any_event(self, event: events.FileSystemEvent) -> None:
        self._handle(event)


def slim(entry: ImageEntry) -> ImageEntry:
    """What the list and search need: the whole sidecar and the raw A1111 text stay on
    disk (read again for the detail view), or 10,000 images would keep ~40 MB of JSON."""
    return dataclasses.replace(entry, sidecar=None, parameters=None)


def slim_all(found: dict[str, ImageEntry]) -> dict[str, ImageEntry]:
    return {image_id: slim(entry) for image_id, entry in found.items()}


def _identity(folder: Path) -> tuple[int, int] | None:
    """What tells one folder from another made at the same path since."""
    try:
        status = folder.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _watch_failure(root: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EMFILE):
        return (
            f"cannot watch the gallery {root}: the system's inotify limit is reached "
            f"({exc.strerror}); raise fs.inotify.max_user_watches / max_user_instances"
        )
    return f"cannot watch the gallery {root} ({exc.strerror or exc})"
