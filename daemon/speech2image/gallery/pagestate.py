"""Page state: what the page remembers about images (favourites) without touching them.

Image files are write-once, and images copied in by hand may have no sidecar at all,
so a favourite cannot live in the file. It lives in a small SQLite database under the
gallery's hidden ``.state/`` folder, keyed by the image id (its path relative to the
gallery), which is stable across restarts and rebuilds of the in-memory index. A
favourite of an image in the trash is kept, so a restore brings it back.

Page state is a convenience: a database that is not a database any more is moved
aside with a warning and a fresh one started, rather than refusing to serve the
gallery. A gallery that cannot be written at all is a clear :class:`PageStateError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["DB_NAME", "SCHEMA_VERSION", "STATE_DIR", "PageState", "PageStateError"]

log = logging.getLogger(__name__)

STATE_DIR = ".state"
DB_NAME = "gallery.sqlite3"
SCHEMA_VERSION = 1
# Another process (the daemon's page and a standalone ``speech2image gallery``) may
# hold the write lock for a moment; wait for it rather than fail.
BUSY_TIMEOUT_S = 5.0
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS favourites (id TEXT PRIMARY KEY, since REAL NOT NULL)",
)
# What SQLite says of a file that is not (or no longer) a database.
CORRUPT = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
# What it says of a database it may not write.
READ_ONLY = frozenset({"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR"})


class PageStateError(Exception):
    """The page state cannot be kept (the gallery is read-only); the message says the fix."""


class _CorruptError(Exception):
    """The database file is damaged; it is moved aside and a fresh one started."""


class PageState:
    """Favourites of one gallery; one connection shared by the web threads under a lock."""

    def __init__(self, root: Path) -> None:
        self.path = root.expanduser().resolve() / STATE_DIR / DB_NAME
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PageStateError(_unwritable(self.path.parent, exc.strerror or str(exc))) from exc
        try:
            self._db = _open(self.path)
        except _CorruptError as exc:
            try:
                aside = _move_aside(self.path)
            except OSError as move:
                why = f"it is damaged ({exc}) and cannot be moved aside ({move.strerror})"
                raise PageStateError(_unwritable(self.path.parent, why)) from move
            log.warning(
                "the gallery's page state %s was damaged (%s); it was moved to %s and a "
                "fresh one started (favourites are lost)",
                self.path,
                exc,
                aside.name,
            )
            self._db = _open(self.path)

    def favourites(self) -> frozenset[str]:
        """The ids of every favourite, including those of images now in the trash."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM favourites").fetchall()
        return frozenset(row[0] for row in rows)

    def is_favourite(self, id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM favourites WHERE id = ?", (id,)).fetchone()
        return row is not None

    def set_favourite(self, id: str, favourite: bool) -> bool:
        """Mark or unmark ``id``; returns the new value (setting it twice is no error)."""
        with self._writing() as db:
            if favourite:
                db.execute(
                    "INSERT OR IGNORE INTO favourites (id, since) VALUES (?, ?)", (id, time.time())
                )
            else:
                db.execute("DELETE FROM favourites WHERE id = ?", (id,))
        return favourite

    def rename(self, old_id: str, new_id: str) -> None:
        """The state of ``old_id`` now belongs to ``new_id`` (the image moved): whatever
        ``new_id`` had before is replaced, and ``old_id`` has none left."""
        if old_id == new_id:
            return
        with self._writing() as db:
            db.execute("DELETE FROM favourites WHERE id = ?", (new_id,))
            db.execute("UPDATE favourites SET id = ? WHERE id = ?", (new_id, old_id))

    def forget(self, ids: Iterable[str]) -> int:
        """Drop the state of images that are gone for good (the trash was emptied or
        purged), so a later image of the same name does not start as a favourite;
        returns how many favourites went."""
        with self._writing() as db:
            before = db.total_changes
            db.executemany("DELETE FROM favourites WHERE id = ?", ((id,) for id in ids))
            return db.total_changes - before

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; a read-only database is a PageStateError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if _error_name(exc) not in READ_ONLY:
                    raise
                raise PageStateError(_unwritable(self.path.parent, str(exc))) from exc


def _open(path: Path) -> sqlite3.Connection:
    """A connection with the schema in place; _CorruptError when the file is damaged,
    PageStateError when it cannot be written."""
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        _prepare(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        name = _error_name(exc)
        if name in CORRUPT:
            raise _CorruptError(str(exc)) from exc
        if name in READ_ONLY:
            raise PageStateError(_unwritable(path.parent, str(exc))) from exc
        raise
    except _CorruptError:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection) -> None:
    """WAL (readers never wait for a writer), NORMAL sync (a power loss may lose the
    last favourite, never the database), an integrity check, the schema."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    check = db.execute("PRAGMA quick_check").fetchall()
    if check != [("ok",)]:
        raise _CorruptError("; ".join(str(row[0]) for row in check[:3]))
    db.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA:
        db.execute(statement)
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )
    db.execute("COMMIT")
    stored = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if stored is not None and stored[0] != str(SCHEMA_VERSION):
        log.warning(
            "the gallery's page state has schema version %s (this version knows %d); "
            "using what it understands",
            stored[0],
            SCHEMA_VERSION,
        )


def _move_aside(path: Path) -> Path:
    """Rename the damaged database to ``gallery.sqlite3.corrupt-<time>`` (its WAL
    along with it; the shared-memory index is only a cache and is removed), so the
    fresh database never replays another file's journal."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    count = 1
    while aside.exists():
        count += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{count}")
    os.replace(path, aside)
    with contextlib.suppress(FileNotFoundError):
        os.replace(f"{path}-wal", f"{aside}-wal")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}-shm")
    return aside


def _error_name(exc: sqlite3.Error) -> str:
    """The primary result code's name: ``SQLITE_READONLY`` for ``SQLITE_READONLY_DBMOVED``."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    return "_".join(name.split("_")[:2])


def _unwritable(folder: Path, why: str) -> str:
    return (
        f"cannot keep the gallery's page state (favourites) in {folder} ({why}): make the "
        "gallery folder writable, or serve a copy of it"
    )
