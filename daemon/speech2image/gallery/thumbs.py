"""Thumbnails for the gallery page: made once per image file, cached under ``.thumbs/``.

A grid of 60 full-size pictures would move tens of megabytes per page; a WebP of at
most :data:`THUMB_SIZE` pixels is a few kilobytes. The cache name holds the image's
id (hashed: ids hold prompt words, and any character) *and* the file's identity
(``mtime_ns``, size), so a file replaced under the same name gets a new thumbnail
instead of the old picture, and no cache entry is ever rewritten in place.

Thumbnails are written to a temp file in ``.thumbs/`` and renamed into place, so a
reader (another web thread, another process serving the same gallery) sees either
no thumbnail or a complete one. Image files themselves are only ever read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .entry import ImageEntry

__all__ = ["THUMB_DIR", "THUMB_SIZE", "ThumbnailError", "Thumbnails", "thumb_name", "to_prune"]

log = logging.getLogger(__name__)

THUMB_DIR = ".thumbs"
THUMB_SIZE = 320  # longest side, px
QUALITY = 80
TEMP_SUFFIX = ".part"
THUMB_NAME = re.compile(r"(?P<key>[0-9a-f]{20})-[0-9]+-[0-9]+-[0-9]+\.webp")
# A temp file lives for milliseconds; one this old was left by a killed process.
STALE_TEMP_S = 3600.0
# Modes a WebP holds as they are; everything else is converted first.
WEBP_MODES = frozenset({"RGB", "RGBA"})
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What Pillow raises for a file it cannot read as an image (truncated, not an image,
# too many pixels, a broken header); FileNotFoundError is handled before these.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ThumbnailError(Exception):
    """No thumbnail can be made of this file (not decodable) or kept (cache not writable).

    ``id`` names the image; ``why`` says what went wrong without it, for logs above
    DEBUG (an image's name holds words of its prompt, which is private).
    """

    def __init__(self, id: str, why: str) -> None:
        super().__init__(f"cannot make a thumbnail of {id}: {why}")
        self.id = id
        self.why = why


def id_key(id: str) -> str:
    """The hashed id every cache name of this image starts with."""
    return hashlib.sha1(id.encode("utf-8"), usedforsecurity=False).hexdigest()[:20]


def thumb_name(entry: ImageEntry, size: int = THUMB_SIZE) -> str:
    """``<sha1(id)[:20]>-<mtime_ns>-<bytes>-<size>.webp``: a new file, or a new size, is
    a new name, so a cached thumbnail is never stale and never rewritten."""
    return f"{id_key(entry.id)}-{entry.mtime_ns}-{entry.bytes}-{size}.webp"


class Thumbnails:
    """The thumbnail cache of one gallery; safe to call from many threads at once."""

    def __init__(self, root: Path, size: int = THUMB_SIZE) -> None:
        self.root = root.expanduser().resolve()
        self.folder = self.root / THUMB_DIR
        self.size = size
        self._making = _KeyedLocks()

    def path_for(self, entry: ImageEntry) -> Path:
        """The cached thumbnail of ``entry``, made first if it is missing.

        FileNotFoundError when the image is gone; ThumbnailError when it cannot be
        decoded or the thumbnail cannot be stored. Two threads asking for the same
        thumbnail decode it once; two processes may both make it (same content, the
        last rename wins, a reader never sees a partial file).
        """
        target = self.folder / thumb_name(entry, self.size)
        if target.is_file():
            return target
        with self._making.hold(target.name):
            if not target.is_file():
                data = self._encode(entry)
                self._store(entry.id, target, data)
        return target

    def prune(self, live_ids: Iterable[str]) -> int:
        """Remove thumbnails of images no longer in the gallery, thumbnails of an older
        version of a file, and temp files a killed process left; returns the count.

        Housekeeping only: a thumbnail removed by mistake is made again on demand.
        """
        try:
            found = [(e.name, e.stat().st_mtime) for e in os.scandir(self.folder) if e.is_file()]
        except FileNotFoundError:
            return 0
        live = {id_key(id) for id in live_ids}
        removed = 0
        for name in to_prune(found, live, time.time()):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
                removed += 1
        if removed:
            log.info("removed %d old thumbnail(s)", removed)
        return removed

    def _encode(self, entry: ImageEntry) -> bytes:
        """The WebP bytes of the thumbnail; decoding is the slow part, done outside any
        shared lock so that different thumbnails are made in parallel."""
        source = self.root / entry.id
        try:
            with Image.open(source) as image:
                return encode_thumbnail(image, self.size)
        except FileNotFoundError:
            raise
        except DECODE_ERRORS as exc:
            raise ThumbnailError(
                entry.id, f"not a readable image ({_reason(exc, source)})"
            ) from exc

    def _store(self, id: str, target: Path, data: bytes) -> None:
        """Write ``data`` under a temp name in ``.thumbs/`` and rename it to ``target``.

        The data is synced before the rename: a power loss must not leave an empty
        file under the final name, which would be served as a broken thumbnail forever.
        """
        temp = self.folder / f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(temp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise ThumbnailError(
                id, f"the cache folder {self.folder} is not writable ({_reason(exc)})"
            ) from exc


def encode_thumbnail(image: Image.Image, size: int, quality: int = QUALITY) -> bytes:
    """``image`` upright (EXIF orientation), at most ``size`` px on its longest side,
    aspect kept, as WebP bytes. Never enlarges a small image."""
    if image.format == "JPEG":
        image.draft("RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale: much faster
    upright = ImageOps.exif_transpose(image)
    small = webp_ready(upright)
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = BytesIO()
    small.save(out, "WEBP", quality=quality, method=4)
    return out.getvalue()


def webp_ready(image: Image.Image) -> Image.Image:
    """``image`` in a mode WebP holds: RGBA when it has any transparency, else RGB.

    16-bit grey (``I;16``, and ``I`` with values above 255) is scaled to 8 bits:
    Pillow's own conversion clips it, which turns most of such an image white.
    """
    if image.mode in WEBP_MODES:
        return image
    if image.mode in SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        if image.mode != "I" or values.max(initial=0) > 255:
            values = values >> 8
        return Image.fromarray(values.clip(0, 255).astype(np.uint8)).convert("RGB")
    transparent = image.mode in ("RGBa", "LA", "La", "PA") or image.has_transparency_data
    return image.convert("RGBA" if transparent else "RGB")


def to_prune(found: Iterable[tuple[str, float]], live: set[str], now: float) -> list[str]:
    """Which of the cache's files (name, mtime) to remove.

    A thumbnail whose id is not ``live``; of several thumbnails of one id (the file was
    replaced, or the size changed), all but the newest; a temp file over an hour old.
    Names that are neither thumbnails nor temp files are not ours and stay.
    """
    doomed: list[str] = []
    newest: dict[str, tuple[float, str]] = {}
    for name, mtime in found:
        if name.endswith(TEMP_SUFFIX):
            if name.startswith(".") and now - mtime > STALE_TEMP_S:
                doomed.append(name)
            continue
        match = THUMB_NAME.fullmatch(name)
        if match is None:
            continue
        key = match["key"]
        if key not in live:
            doomed.append(name)
            continue
        kept = newest.get(key)
        if kept is None or (mtime, name) > kept:
            if kept is not None:
                doomed.append(kept[1])
            newest[key] = (mtime, name)
        else:
            doomed.append(name)
    return doomed


def _reason(exc: BaseException, path: Path | None = None) -> str:
    """What went wrong, without the file name ``str(OSError)`` and Pillow's messages
    would include (it holds words of the prompt)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    if path is not None:
        text = text.replace(repr(str(path)), "the file").replace(str(path), "the file")
    return text


class _KeyedLocks:
    """One lock per key, held only while someone needs it: threads asking for the same
    thumbnail wait for the first one's result instead of decoding the image again."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)
