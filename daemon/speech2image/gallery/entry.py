"""What the gallery page knows about one image file: the shared record of the index,
the trash and the web API.

An entry's ``id`` is its path relative to the gallery, with ``/`` separators
(``2026-11-30/201500-a-red-fox-42.png``): stable across restarts and index rebuilds,
so page state (favourites) keyed by it survives them, and readable in URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# The gallery's own hidden folders; nothing under a name starting with "." is an image.
HIDDEN_PREFIX = "."


@dataclass(frozen=True)
class ImageEntry:
    """One image as the page shows it; ``sidecar`` is the request record, when there is one."""

    id: str
    time: float  # when it was made: the sidecar's ``created``, else the file's mtime
    mtime_ns: int
    bytes: int
    width: int
    height: int
    format: str  # "PNG", "JPEG", "WEBP"
    prompt: str = ""
    negative: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # A1111 "Steps: 4, Seed: 42, ..."
    parameters: str | None = None  # the raw A1111 text, when the file has it
    sidecar: dict[str, Any] | None = None

    @property
    def day(self) -> str:
        """``YYYY-MM-DD`` in local time, what the page groups by."""
        import time as _time

        return _time.strftime("%Y-%m-%d", _time.localtime(self.time))

    @property
    def sort_key(self) -> tuple[float, str]:
        """Newest first is descending order of this key."""
        return (self.time, self.id)

    def summary(self) -> dict[str, Any]:
        """The list item ``GET /api/images`` returns (no sidecar: lists stay small)."""
        return {
            "id": self.id,
            "name": self.id.rsplit("/", 1)[-1],
            "day": self.day,
            "time": self.time,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "bytes": self.bytes,
        }

    def detail(self) -> dict[str, Any]:
        """Everything ``GET /api/images/{id}`` returns."""
        return {
            **self.summary(),
            "negative": self.negative,
            "settings": dict(self.settings),
            "parameters": self.parameters,
            "sidecar": self.sidecar,
        }
