"""Reading what an image file in the gallery says about itself, without decoding pixels.

The gallery holds our own PNGs (an AUTOMATIC1111 ``parameters`` chunk plus a JSON
sidecar) and whatever people copy in by hand: AUTOMATIC1111, Fooocus or ComfyUI images
with the same ``parameters`` text (PNG chunk, or EXIF UserComment in JPEG and WebP),
photos without any metadata, and files still being copied. :func:`read_entry` turns one
file into an :class:`ImageEntry`, or None for anything that is not (yet) a complete
image inside the gallery; the live index retries the "not yet" ones.

Only headers are read (``Image.open`` stops before the pixel data) plus a few bytes at
the end of the file, so that a scan of 10,000 images takes seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .entry import HIDDEN_PREFIX, IMAGE_SUFFIXES, ImageEntry

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# AUTOMATIC1111's own pattern for one "Key: value" of the settings line
# (modules/infotext_utils.py, re_param_code): a quoted value may hold commas.
_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# A1111 takes the last line as settings when it holds at least this many pairs.
_MIN_SETTINGS = 3
NEGATIVE_PREFIX = "Negative prompt:"

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_UNICODE = b"UNICODE\0"
_ASCII = b"ASCII\0\0\0"
_JIS = b"JIS\0\0\0\0\0"
_UNDEFINED = b"\0" * 8

FORMATS = ("PNG", "JPEG", "WEBP")
# The PNG end chunk with its (constant) CRC: a PNG still being written lacks it.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_TAIL_BYTES = 1024
# Some cameras append kilobytes after a JPEG's end marker; a JPEG left unchanged this
# long is taken as finished even when no end marker is near its end.
JPEG_QUIET_S = 5.0
SIDECAR_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class A1111Parameters:
    """The AUTOMATIC1111 ``parameters`` text, split the way A1111 itself splits it."""

    prompt: str
    negative: str
    settings: dict[str, str] = field(default_factory=dict)


def parse_a1111(text: str) -> A1111Parameters:
    """Prompt lines, an optional ``Negative prompt:`` (which may continue over more
    lines), and a last line of ``Key: value, ...`` settings when it holds at least
    three pairs: A1111's ``parse_generation_parameters``, so that images from A1111,
    Fooocus and ComfyUI read here as they read there."""
    *lines, last = text.strip().split("\n")
    pairs = _SETTING.findall(last)
    if len(pairs) < _MIN_SETTINGS:
        lines.append(last)
        pairs = []
    prompt = negative = ""
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        # A1111 joins with a newline only once the part is non-empty; so do we.
        if in_negative:
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line
    settings = {key.strip(): _unquote(value.strip()) for key, value in pairs}
    return A1111Parameters(prompt, negative, settings)


def _unquote(value: str) -> str:
    """A1111 writes a value holding ``,``, ``:`` or a newline as a JSON string."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        loaded = json.loads(value)
    except ValueError:
        return value
    return loaded if isinstance(loaded, str) else value


def embedded_parameters(image: Image.Image) -> str | None:
    """The A1111 ``parameters`` text inside an opened image, or None.

    PNG: the ``parameters`` text chunk (from the header: ``image.text`` would decode
    the pixels). JPEG and WebP: EXIF UserComment, as A1111 writes it with piexif.
    """
    value = image.info.get("parameters")
    if isinstance(value, str):
        return value
    if image.format == "PNG":
        return None
    try:
        comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # malformed EXIF from an untrusted file
        log.debug("unreadable EXIF", exc_info=True)
        return None
    if isinstance(comment, str):
        return comment.rstrip("\0") or None
    if isinstance(comment, bytes):
        return decode_user_comment(comment) or None
    return None


def decode_user_comment(data: bytes) -> str:
    """EXIF UserComment bytes as text: an 8-byte character-code prefix, then the text.

    piexif's ``UserComment.dump(text, encoding="unicode")`` (what A1111 uses) writes
    UTF-16 big-endian; other writers use little-endian or a byte-order mark.
    """
    prefix, body = data[:8], data[8:]
    if prefix == _UNICODE:
        text = _decode_utf16(body)
    elif prefix == _ASCII:
        text = body.decode("ascii", errors="replace")
    elif prefix == _JIS:
        text = body.decode("shift_jis", errors="replace")
    elif prefix == _UNDEFINED:
        text = body.decode("utf-8", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def _decode_utf16(body: bytes) -> str:
    if body[:2] == b"\xff\xfe":
        return body[2:].decode("utf-16-le", errors="replace")
    if body[:2] == b"\xfe\xff":
        return body[2:].decode("utf-16-be", errors="replace")
    # No mark: mostly-ASCII text has its zero bytes first in big-endian order.
    sample = body[:512]
    little = sample[1::2].count(0) > sample[0::2].count(0)
    return body.decode("utf-16-le" if little else "utf-16-be", errors="replace")


def sidecar_path(image: Path) -> Path:
    """The request record next to an image: same stem, ``.json``."""
    return image.with_suffix(".json")


def entry_id(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators, compared as written (no
    resolving); None when it is not below ``root`` or any part is hidden (``.tmp``,
    ``.thumbs``, ``.trash``, ``..``)."""
    base = os.fspath(root).rstrip(os.sep)
    text = os.fspath(path)
    if not text.startswith(base + os.sep):
        return None
    parts = text[len(base) + 1 :].split(os.sep)
    if any(not part or part.startswith(HIDDEN_PREFIX) for part in parts):
        return None
    return "/".join(parts)


def read_entry(root: Path, path: Path) -> ImageEntry | None:
    """The entry for the image file ``path`` (absolute, below ``root``), or None.

    None for: a non-image suffix, a hidden part, anything whose real location is
    outside the real ``root`` (a symlink pointing out), a missing file, and a file
    Pillow cannot identify or that has no end yet (a copy in progress: the caller
    tries again later).
    """
    image_id = entry_id(root, path)
    if image_id is None or os.path.splitext(image_id)[1].lower() not in IMAGE_SUFFIXES:
        return None
    info = _stat_inside(root, path, image_id)
    if info is None:
        return None
    header = _read_header(path, info)
    if header is None:
        return None
    width, height, image_format, parameters = header
    sidecar = read_sidecar(sidecar_path(path))
    return _entry(image_id, info, (width, height, image_format), parameters, sidecar)


def _stat_inside(root: Path, path: Path, image_id: str) -> os.stat_result | None:
    """The regular file's status, when its real location is inside the real gallery.

    A symlink anywhere below ``root`` is resolved and must land inside it; without
    one the lexical path is the real one (ids have no ``..``), which costs one
    ``lstat`` per folder level instead of resolving every path from ``/``.
    """
    base = os.fspath(root).rstrip(os.sep)
    parts = image_id.split("/")
    try:
        info = os.lstat(path)
        linked = stat.S_ISLNK(info.st_mode)
        for depth in range(1, len(parts)):
            if linked:
                break
            folder = base + os.sep + os.sep.join(parts[:depth])
            linked = stat.S_ISLNK(os.lstat(folder).st_mode)
        if linked:
            real_root = os.path.realpath(root).rstrip(os.sep)
            if not os.path.realpath(path).startswith(real_root + os.sep):
                return None
            info = os.stat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


_Header = tuple[int, int, str, str | None]


def _read_header(path: Path, info: os.stat_result) -> _Header | None:
    """Size, format and embedded parameters, if the file is a complete image."""
    from PIL import Image

    try:
        with open(path, "rb") as handle:
            with Image.open(handle, formats=FORMATS) as image:
                width, height = image.size
                image_format = "JPEG" if image.format == "MPO" else str(image.format)
                parameters = embedded_parameters(image)
            if not _has_end(handle, image_format, info):
                log.debug("%s has no end yet", path)
                return None
    except Exception as exc:  # any failure of Pillow on an untrusted file: not an image
        log.debug("%s is not a readable image (%s)", path, type(exc).__name__)
        return None
    return width, height, image_format, parameters


def _has_end(handle: IO[bytes], image_format: str, info: os.stat_result) -> bool:
    """Whether the file looks written to its end (a copy in progress does not):
    PNG's end chunk, the size a WebP's RIFF header announces, JPEG's end marker."""
    size = info.st_size
    if image_format == "WEBP":
        handle.seek(4)
        return size >= int.from_bytes(handle.read(4), "little") + 8
    handle.seek(max(0, size - _TAIL_BYTES))
    tail = handle.read(_TAIL_BYTES)
    if image_format == "PNG":
        return _PNG_END in tail
    if image_format == "JPEG":
        return _JPEG_END in tail or time.time() - info.st_mtime >= JPEG_QUIET_S
    return True


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when absent, unreadable, too big or not an object."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(SIDECAR_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("sidecar %s unreadable: %s", path, exc)
        return None
    if len(data) > SIDECAR_MAX_BYTES:
        log.debug("sidecar %s is over %d bytes; ignored", path, SIDECAR_MAX_BYTES)
        return None
    try:
        loaded = json.loads(data)
    except ValueError as exc:
        log.debug("sidecar %s is not JSON: %s", path, exc)
        return None
    return loaded if isinstance(loaded, dict) else None


def _entry(
    image_id: str,
    info: os.stat_result,
    shape: tuple[int, int, str],
    parameters: str | None,
    sidecar: dict[str, Any] | None,
) -> ImageEntry:
    """Combine file, embedded text and sidecar: the sidecar's prompt and time win."""
    parsed = parse_a1111(parameters) if parameters is not None else A1111Parameters("", "")
    record = sidecar or {}
    prompt = record.get("prompt")
    negative = parsed.negative
    if not negative and isinstance(record.get("negative_prompt"), str):
        negative = record["negative_prompt"]
    width, height, image_format = shape
    return ImageEntry(
        id=image_id,
        time=made_at(record, info.st_mtime),
        mtime_ns=info.st_mtime_ns,
        bytes=info.st_size,
        width=width,
        height=height,
        format=image_format,
        prompt=prompt if isinstance(prompt, str) and prompt else parsed.prompt,
        negative=negative,
        settings=parsed.settings,
        parameters=parameters,
        sidecar=sidecar,
    )


def made_at(sidecar: dict[str, Any], mtime: float) -> float:
    """When the image was made: the sidecar's ``created`` (ISO 8601; without an offset
    it is local time), else ``written``, else the file's modification time."""
    for key in ("created", "written"):
        value = sidecar.get(key)
        if not isinstance(value, str) or not value:
            continue
        try:
            when = dt.datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError, OSError):
            continue
        if math.isfinite(when):
            return when
    return mtime


def read_tree(root: Path, folder: Path) -> tuple[dict[str, ImageEntry], set[str]]:
    """Every image below ``folder`` by id (hidden folders skipped, symlinked folders
    not followed); and the ids of image files that exist but do not read yet."""
    found: dict[str, ImageEntry] = {}
    unreadable: set[str] = set()
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(HIDDEN_PREFIX)]
        for name in names:
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(parent, name)
            image_id = entry_id(root, path)
            if image_id is None:
                continue
            entry = read_entry(root, path)
            if entry is not None:
                found[image_id] = entry
            elif path.is_file():
                unreadable.add(image_id)
    return found, unreadable
