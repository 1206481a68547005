"""The gallery writer: a complete PNG appears in the gallery, or nothing does.

The folder is the source of truth: ``DIR/YYYY-MM-DD/HHMMSS-<slug>-<seed>.png`` plus a
``.json`` sidecar with the same stem (the request record, ``request.Request``). Each
file is encoded in memory, written to the gallery's hidden ``.tmp/`` folder (same
file system), fsynced, then hard-linked to its final name: the sidecar first, then
the PNG as the commit marker. A link never replaces an existing file, so a name
collision gets a ``-2`` suffix instead of overwriting, and an interrupted write
(SIGKILL, full disk, power loss) leaves at most a stray temp file in ``.tmp/``,
which the next start removes; a watcher of the gallery sees one new, complete file.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import logging
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from ..request import ImagePart, Request

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
SLUG_MAX = 48
# diffusers scheduler classes under the sampler names AUTOMATIC1111 users know.
A1111_SAMPLERS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}


class GalleryError(Exception):
    """The image could not be stored (full disk, read-only folder, ...); nothing partial is left."""


def slugify(prompt: str, limit: int = SLUG_MAX) -> str:
    """A short, safe ASCII file-name form of the prompt ("Café au lait!" -> "cafe-au-lait")."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).split()
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            break
        slug = candidate
    return slug or (words[0][:limit] if words else "image")


def a1111_parameters(prompt: str, recipe: ImagePart) -> str:
    """The ``parameters`` text AUTOMATIC1111 writes, so its tools and others read ours."""
    sampler = A1111_SAMPLERS.get(recipe.sampler, recipe.sampler)
    settings = (
        f"Steps: {recipe.steps}, Sampler: {sampler}, CFG scale: {recipe.guidance:g}, "
        f"Seed: {recipe.seed}, Size: {recipe.width}x{recipe.height}, Model: {recipe.model}"
    )
    prompt = " ".join(prompt.split())
    negative = " ".join(recipe.negative_prompt.split())
    return f"{prompt}\nNegative prompt: {negative}\n{settings}"


def image_name(when: dt.datetime, prompt: str, seed: int, attempt: int = 1) -> Path:
    suffix = "" if attempt == 1 else f"-{attempt}"
    return Path(when.strftime("%Y-%m-%d")) / f"{when:%H%M%S}-{slugify(prompt)}-{seed}{suffix}.png"


class GalleryWriter:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._tmp = self.root / TMP_DIR

    def prepare(self) -> None:
        """Create the folders and remove temp files an interrupted run left behind."""
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GalleryError(_explain(exc, self.root)) from exc
        for stale in self._tmp.glob("*.part"):
            stale.unlink(missing_ok=True)

    def write(self, image: Any, request: Request, when: dt.datetime | None = None) -> Path:
        """Store the PNG and its sidecar as a pair; the PNG's path, or GalleryError.

        ``image`` is a PIL image; ``request`` the record, with its image part.
        """
        if request.image is None:
            raise ValueError(f"request {request.id} has no image part to store")
        when = when or dt.datetime.now()
        png = _encode_png(image, a1111_parameters(request.prompt, request.image))
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            path = self._publish_pair(png, request, when)
        except OSError as exc:
            raise GalleryError(_explain(exc, self.root)) from exc
        # The file name holds the prompt, which is private: the full path only at DEBUG.
        log.info("image written to %s (%d KB)", path.parent, len(png) // 1024)
        log.debug("image path: %s", path)
        return path

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
        """Temp file, fsync, link into place; False when ``target`` exists and must stay."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if not _link(temp, target):
                return False
            _fsync_dir(target.parent)
            return True
        finally:
            temp.unlink(missing_ok=True)


def _encode_png(image: Any, parameters: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


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


def _link(temp: Path, target: Path) -> bool:
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


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable too, not just the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _explain(exc: OSError, root: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"the disk holding the gallery {root} is full; nothing was written"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"the gallery folder {root} is not writable ({exc.strerror}); nothing was written"
    return f"could not write to the gallery {root}: {exc}"
