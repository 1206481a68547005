"""Thumbnails: a small upright WebP of any image the gallery holds, made once, cached
under ``.thumbs/`` by id and file identity, written so no reader sees half a file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from speech2image.gallery.entry import ImageEntry
from speech2image.gallery.thumbs import THUMB_DIR, ThumbnailError, Thumbnails, thumb_name

HOUR = 3600


def entry_for(root: Path, id: str) -> ImageEntry:
    """The index's record of ``root/id``, as far as thumbnails care."""
    path = root / id
    info = path.stat()
    with Image.open(path) as image:
        width, height, fmt = image.width, image.height, image.format or ""
    return ImageEntry(id, info.st_mtime, info.st_mtime_ns, info.st_size, width, height, fmt)


def noise(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def save(root: Path, id: str, image: Image.Image, **options: Any) -> ImageEntry:
    path = root / id
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return entry_for(root, id)


def palette(width: int, height: int, transparent: bool) -> Image.Image:
    image = Image.fromarray(noise(width, height)).convert("P", palette=Image.Palette.ADAPTIVE)
    if transparent:
        image.info["transparency"] = 0
    return image


SOURCES: dict[str, tuple[Callable[[], Image.Image], str, tuple[int, int], str]] = {
    "png-rgb": (lambda: Image.fromarray(noise(1024, 512)), "a.png", (320, 160), "RGB"),
    "jpeg": (lambda: Image.fromarray(noise(600, 900)), "b.jpg", (213, 320), "RGB"),
    "webp-rgba": (lambda: Image.fromarray(noise(400, 300, 4)), "c.webp", (320, 240), "RGBA"),
    "palette": (lambda: palette(500, 500, False), "d.png", (320, 320), "RGB"),
    "palette-transparent": (lambda: palette(500, 250, True), "e.png", (320, 160), "RGBA"),
    "grey-alpha": (lambda: Image.fromarray(noise(640, 64, 2), "LA"), "f.png", (320, 32), "RGBA"),
    "cmyk-jpeg": (lambda: Image.fromarray(noise(330, 660, 4), "CMYK"), "g.jpg", (160, 320), "RGB"),
    "small": (lambda: Image.fromarray(noise(100, 50)), "h.png", (100, 50), "RGB"),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_any_image_gives_a_webp_of_the_right_size(tmp_path: Path, kind: str) -> None:
    make, id, size, mode = SOURCES[kind]
    entry = save(tmp_path, f"2026-11-30/{id}", make())
    thumb = Thumbnails(tmp_path).path_for(entry)
    assert thumb.parent == tmp_path / THUMB_DIR
    with Image.open(thumb) as image:
        assert image.format == "WEBP"
        assert image.size == size
        assert image.mode == mode


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    """Pillow's own conversion clips 16-bit values to 255: a mid-grey would come out white."""
    ramp = np.tile(np.linspace(0, 65535, 640).astype(np.uint16), (320, 1))
    entry = save(tmp_path, "deep.png", Image.fromarray(ramp))
    with Image.open(Thumbnails(tmp_path).path_for(entry)) as image:
        assert image.size == (320, 160)
        row = np.asarray(image.convert("L"))[80]
    assert row[0] < 10
    assert 110 < row[160] < 145  # the middle of the ramp is mid-grey
    assert row[-1] > 245


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stored sideways with "rotate 90°" in its EXIF shows upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    entry = save(tmp_path, "phone.jpg", Image.fromarray(noise(800, 400)), exif=exif)
    with Image.open(Thumbnails(tmp_path).path_for(entry)) as image:
        assert image.size == (160, 320)


def test_made_once_then_served_from_the_cache(tmp_path: Path) -> None:
    entry = save(tmp_path, "once.png", Image.fromarray(noise(640, 480)))
    thumbs = Thumbnails(tmp_path)
    first = thumbs.path_for(entry)
    before = first.stat()
    again = Thumbnails(tmp_path).path_for(entry)  # a new process: the same cache
    after = again.stat()
    assert again == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in (tmp_path / THUMB_DIR).iterdir()) == [first.name]


def test_a_replaced_file_gets_a_new_thumbnail(tmp_path: Path) -> None:
    red = np.zeros((200, 200, 3), np.uint8)
    red[..., 0] = 255
    old = save(tmp_path, "same-name.png", Image.fromarray(red))
    thumbs = Thumbnails(tmp_path)
    old_thumb = thumbs.path_for(old)

    blue = np.zeros((200, 200, 3), np.uint8)
    blue[..., 2] = 255
    Image.fromarray(blue).save(tmp_path / "same-name.png")
    os.utime(tmp_path / "same-name.png", ns=(old.mtime_ns + 10**9, old.mtime_ns + 10**9))
    new = entry_for(tmp_path, "same-name.png")
    new_thumb = thumbs.path_for(new)

    assert new_thumb != old_thumb
    with Image.open(new_thumb) as image:
        pixel = np.asarray(image.convert("RGB"))[10, 10]
    assert pixel[2] > 200
    assert pixel[0] < 50


def test_another_size_is_another_thumbnail(tmp_path: Path) -> None:
    entry = save(tmp_path, "x.png", Image.fromarray(noise(640, 640)))
    small = Thumbnails(tmp_path, size=64).path_for(entry)
    large = Thumbnails(tmp_path).path_for(entry)
    assert small != large
    with Image.open(small) as image:
        assert image.size == (64, 64)


@pytest.mark.parametrize("damage", ["not-an-image", "truncated"])
def test_an_undecodable_file_is_a_thumbnail_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "2026-11-30" / "broken.png"
    path.parent.mkdir()
    Image.fromarray(noise(300, 300)).save(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2] if damage == "truncated" else b"no image here")
    info = path.stat()
    entry = ImageEntry("2026-11-30/broken.png", 0, info.st_mtime_ns, info.st_size, 300, 300, "PNG")

    with pytest.raises(ThumbnailError, match=r"2026-11-30/broken\.png") as caught:
        Thumbnails(tmp_path).path_for(entry)
    assert "broken" not in caught.value.why  # the loggable part names no file
    assert not (tmp_path / THUMB_DIR).exists() or list((tmp_path / THUMB_DIR).iterdir()) == []


def test_a_missing_image_is_file_not_found(tmp_path: Path) -> None:
    entry = ImageEntry("gone.png", 0, 1, 1, 1, 1, "PNG")
    with pytest.raises(FileNotFoundError):
        Thumbnails(tmp_path).path_for(entry)


def test_an_unwritable_cache_is_a_thumbnail_error(tmp_path: Path) -> None:
    entry = save(tmp_path, "x.png", Image.fromarray(noise(64, 64)))
    (tmp_path / THUMB_DIR).write_bytes(b"a file where the cache folder should be")
    with pytest.raises(ThumbnailError, match="not writable"):
        Thumbnails(tmp_path).path_for(entry)


def test_concurrent_requests_all_get_a_complete_file(tmp_path: Path) -> None:
    entries = [save(tmp_path, f"{n}.png", Image.fromarray(noise(900, 600, seed=n))) for n in (1, 2)]
    thumbs = Thumbnails(tmp_path)
    start = threading.Barrier(8)
    got: list[Path] = []
    failed: list[BaseException] = []

    def ask(entry: ImageEntry) -> None:
        start.wait()
        try:
            path = thumbs.path_for(entry)
            with Image.open(path) as image:
                image.load()
                assert image.size == (320, 213)
            got.append(path)
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=ask, args=(entries[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert len(got) == 8
    assert {p.name for p in got} == {thumb_name(e) for e in entries}
    assert sorted(p.name for p in (tmp_path / THUMB_DIR).iterdir()) == sorted(
        thumb_name(e) for e in entries
    )  # no temp file left behind


def test_prune_removes_what_no_image_needs(tmp_path: Path) -> None:
    thumbs = Thumbnails(tmp_path)
    kept = save(tmp_path, "kept.png", Image.fromarray(noise(64, 64)))
    gone = save(tmp_path, "gone.png", Image.fromarray(noise(64, 64)))
    old_version = thumbs.path_for(kept)
    gone_thumb = thumbs.path_for(gone)
    then = time.time() - 60
    os.utime(old_version, (then, then))
    newer = ImageEntry("kept.png", 0, kept.mtime_ns + 1, kept.bytes, 64, 64, "PNG")
    current = thumbs.path_for(newer)
    folder = tmp_path / THUMB_DIR
    stale_temp = folder / ".x.123-abcd.part"
    fresh_temp = folder / ".y.123-abcd.part"
    foreign = folder / "README"
    for path in (stale_temp, fresh_temp, foreign):
        path.write_bytes(b"")
    os.utime(stale_temp, (time.time() - 2 * HOUR,) * 2)

    assert thumbs.prune(["kept.png"]) == 3
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [current.name, fresh_temp.name, foreign.name]
    )
    assert not gone_thumb.exists()
    assert thumbs.prune(["kept.png"]) == 0
