"""The gallery's images in newest-first order, with their search text: the data
structure under :class:`~speech2image.gallery.index.GalleryIndex`, without threads or I/O.

Entries are kept in one list sorted by ``ImageEntry.sort_key``, so a page of the
newest images is a binary search and a slice, and a search is one pass over lowercase
text computed once per entry (10,000 images: a few milliseconds).
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .entry import ImageEntry


@dataclass(frozen=True)
class Change:
    """One difference the index saw; ``entry`` is None for ``removed``."""

    kind: Literal["added", "removed", "updated"]
    id: str
    entry: ImageEntry | None


class Listing:
    """Every entry by id, and in sort order. Not thread-safe: the index holds a lock."""

    def __init__(self) -> None:
        self._entries: dict[str, ImageEntry] = {}
        self._keys: list[tuple[float, str]] = []  # ascending sort keys
        self._haystacks: list[str] = []  # search text, aligned with _keys
        self._stems: dict[str, set[str]] = {}  # id without suffix -> ids (for sidecars)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, image_id: str) -> ImageEntry | None:
        return self._entries.get(image_id)

    def apply(self, image_id: str, entry: ImageEntry | None) -> Change | None:
        """Put ``entry`` (None: remove) under ``image_id``; the change, if it is one."""
        old = self._entries.get(image_id)
        if old == entry:
            return None
        if old is not None:
            self._remove(old)
        if entry is None:
            return Change("removed", image_id, None)
        self._insert(entry)
        return Change("added" if old is None else "updated", image_id, entry)

    def replace_all(self, entries: dict[str, ImageEntry]) -> list[Change]:
        """Become exactly ``entries`` (a rescan); the differences from before."""
        changes = list(differences(self._entries, entries))
        ordered = sorted(entries.values(), key=lambda entry: entry.sort_key)
        self._entries = dict(entries)
        self._keys = [entry.sort_key for entry in ordered]
        self._haystacks = [haystack(entry) for entry in ordered]
        self._stems = {}
        for image_id in entries:
            self._stems.setdefault(stem(image_id), set()).add(image_id)
        return changes

    def ids_under(self, prefix: str) -> list[str]:
        """The ids inside the folder ``prefix`` ("" is the whole gallery)."""
        return under(self._entries, prefix)

    def with_stem(self, image_stem: str) -> list[str]:
        """The images a sidecar ``<stem>.json`` belongs to."""
        return sorted(self._stems.get(image_stem, ()))

    def page(
        self, words: list[str], cursor: tuple[float, str] | None, limit: int
    ) -> tuple[list[ImageEntry], bool]:
        """Up to ``limit`` entries older than ``cursor``, newest first, whose search text
        holds every word; and whether more follow."""
        end = len(self._keys) if cursor is None else bisect.bisect_left(self._keys, cursor)
        if words:
            positions, more = matching(self._haystacks, end, words, limit)
        else:
            positions, more = list(range(end - 1, max(0, end - limit) - 1, -1)), end > limit
        return [self._entries[self._keys[at][1]] for at in positions], more

    def _insert(self, entry: ImageEntry) -> None:
        at = bisect.bisect_left(self._keys, entry.sort_key)
        self._keys.insert(at, entry.sort_key)
        self._haystacks.insert(at, haystack(entry))
        self._entries[entry.id] = entry
        self._stems.setdefault(stem(entry.id), set()).add(entry.id)

    def _remove(self, entry: ImageEntry) -> None:
        at = bisect.bisect_left(self._keys, entry.sort_key)
        del self._keys[at], self._haystacks[at]
        del self._entries[entry.id]
        same = self._stems.get(stem(entry.id), set())
        same.discard(entry.id)
        if not same:
            self._stems.pop(stem(entry.id), None)


def haystack(entry: ImageEntry) -> str:
    """What a search looks in: the prompt and the file's name, lowercased once."""
    return f"{entry.prompt} {entry.id}".lower()


def make_cursor(entry: ImageEntry) -> str:
    """The opaque ``next`` cursor: the last entry's sort key (``repr`` keeps the float exact)."""
    return f"{entry.time!r}|{entry.id}"


def parse_cursor(text: str) -> tuple[float, str]:
    """The sort key in a cursor :func:`make_cursor` made; ValueError for anything else."""
    stamp, separator, image_id = text.partition("|")
    try:
        when = float(stamp)
    except ValueError:
        when = math.nan
    if not separator or not image_id or not math.isfinite(when):
        raise ValueError(
            f"the cursor {text!r} is not one this gallery gave out; pass the 'next' "
            "value of the previous page, or leave 'before' out to start from the newest"
        )
    return when, image_id


def matching(
    haystacks: list[str], end: int, words: list[str], limit: int
) -> tuple[list[int], bool]:
    """Positions below ``end``, newest first, whose text holds every word; and whether
    there are more than ``limit``. The longest word is tested first: it rules out most."""
    first = max(words, key=len)
    others = [word for word in words if word != first]
    found: list[int] = []
    for at in range(end - 1, -1, -1):
        text = haystacks[at]
        if first in text and all(word in text for word in others):
            if len(found) == limit:
                return found, True
            found.append(at)
    return found, False


def differences(old: dict[str, ImageEntry], new: dict[str, ImageEntry]) -> Iterable[Change]:
    """What turns ``old`` into ``new``, as changes."""
    for image_id in old.keys() - new.keys():
        yield Change("removed", image_id, None)
    for image_id, entry in new.items():
        before = old.get(image_id)
        if before is None:
            yield Change("added", image_id, entry)
        elif before != entry:
            yield Change("updated", image_id, entry)


def under(ids: Iterable[str], prefix: str) -> list[str]:
    """The ids inside the folder ``prefix`` ("" is the whole gallery)."""
    if not prefix:
        return list(ids)
    return [image_id for image_id in ids if image_id.startswith(prefix + "/")]


def stem(image_id: str) -> str:
    """The id without its suffix: what an image and its sidecar share."""
    return os.path.splitext(image_id)[0]
