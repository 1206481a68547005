"""The live gallery index on a real folder with real inotify: what the daemon writes,
what people copy in, move, delete or half-write shows up (or goes) within one second,
and the gallery's own hidden folders and non-image files never do.

"Nothing else happened" is checked with a barrier rather than a pause: inotify reports
events in order, so once a marker file written afterwards has been seen, every event
before it has been handled.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from speech2image.gallery import index as index_module
from speech2image.gallery import reading
from speech2image.gallery.index import ROOT_CHECK_S, STOP_WITHIN_S, Change, GalleryIndex
from speech2image.gallery.reading import EXIF_IFD, USER_COMMENT, parse_a1111
from speech2image.gallery.writer import GalleryWriter
from tests.support import drawn_request, noise_picture, png_bytes

pytestmark = [pytest.mark.integration]

DEADLINE_S = 1.0  # the promise: on every open page within one second
WHEN = dt.datetime(2026, 11, 25, 14, 3, 9)
A1111_TEXT = (
    "a lighthouse at dusk, oil painting\nNegative prompt: blurry\n"
    'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 7, Size: 16x16, Lora hashes: "a: 1, b: 2"'
)


def jpeg_with_a1111_exif(text: str) -> bytes:
    """A JPEG as AUTOMATIC1111 saves one: the parameters in EXIF UserComment (piexif)."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + text.encode("utf-16-be")
    buffer = io.BytesIO()
    noise_picture().save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


class Recorder:
    """Every change the index publishes, and a way to wait for one."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._seen = threading.Condition()
        self._markers = itertools.count()

    def __call__(self, change: Change) -> None:
        with self._seen:
            self.changes.append(change)
            self._seen.notify_all()

    def wait_for(
        self, check: Callable[[list[Change]], bool], what: str, timeout: float = DEADLINE_S
    ) -> None:
        with self._seen:
            if not self._seen.wait_for(lambda: check(self.changes), timeout):
                pytest.fail(f"{what} not seen within {timeout} s; changes: {self.about()}")

    def wait_kind(self, kind: str, image_id: str) -> Change:
        self.wait_for(lambda cs: any((c.kind, c.id) == (kind, image_id) for c in cs), kind)
        return next(c for c in self.changes if (c.kind, c.id) == (kind, image_id))

    def of(self, image_id: str) -> list[Change]:
        with self._seen:
            return [c for c in self.changes if c.id == image_id]

    def about(self) -> list[tuple[str, str]]:
        return [(c.kind, c.id) for c in self.changes]

    def barrier(self, root: Path) -> None:
        """Write a marker image and wait until the index has added it."""
        marker = f"zz-marker-{next(self._markers)}.png"
        (root / marker).write_bytes(png_bytes())
        self.wait_kind("added", marker)

    def without_markers(self) -> list[tuple[str, str]]:
        return [(k, i) for k, i in self.about() if not i.startswith("zz-marker-")]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "gallery"


@pytest.fixture
def recorder(root: Path) -> Iterator[Recorder]:
    index = GalleryIndex(root)
    seen = Recorder()
    index.subscribe(seen)
    index.start()
    yield seen
    index.stop()


def test_an_image_the_writer_stores_is_added_once_and_whole(root: Path, recorder: Recorder) -> None:
    request = drawn_request("a red fox in the snow", 42, 64, steps=4, negative_prompt="blurry")
    path = GalleryWriter(root).write(noise_picture(), request, WHEN)
    image_id = path.relative_to(root).as_posix()
    added = recorder.wait_kind("added", image_id)
    recorder.barrier(root)
    assert recorder.without_markers() == [("added", image_id)]
    assert added.entry is not None
    assert added.entry.prompt == "a red fox in the snow"
    assert added.entry.negative == "blurry"
    assert added.entry.bytes == path.stat().st_size
    assert added.entry.settings["Seed"] == "42"
    assert added.entry.sidecar is None  # kept on disk; the detail view reads it


def test_copies_made_by_hand_appear_complete(
    root: Path, recorder: Recorder, tmp_path: Path
) -> None:
    source = tmp_path / "a1111.png"
    source.write_bytes(png_bytes(A1111_TEXT))
    shutil.copy(source, root / "copied.png")
    added = recorder.wait_kind("added", "copied.png")
    assert added.entry is not None
    assert added.entry.prompt == "a lighthouse at dusk, oil painting"
    assert added.entry.settings["Lora hashes"] == "a: 1, b: 2"

    jpeg = jpeg_with_a1111_exif(A1111_TEXT)
    (tmp_path / "a1111.jpg").write_bytes(jpeg)
    shutil.copy(tmp_path / "a1111.jpg", root / "photo.JPG")
    added = recorder.wait_kind("added", "photo.JPG")
    assert added.entry is not None
    assert (added.entry.format, added.entry.bytes) == ("JPEG", len(jpeg))
    assert added.entry.prompt == parse_a1111(A1111_TEXT).prompt


def test_a_slow_copy_is_listed_only_once_it_is_whole(root: Path, recorder: Recorder) -> None:
    data = png_bytes(A1111_TEXT, seed=3)
    with open(root / "slow.png", "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(0.3)
        handle.write(data[len(data) // 2 :])
    added = recorder.wait_kind("added", "slow.png")
    recorder.barrier(root)
    assert [c.kind for c in recorder.of("slow.png")] == ["added"]
    assert added.entry is not None
    assert added.entry.bytes == len(data)
    assert added.entry.prompt == "a lighthouse at dusk, oil painting"


def test_a_file_stuck_half_written_is_listed_when_it_is_finished(
    root: Path, recorder: Recorder
) -> None:
    """No event comes when a copy merely pauses; the retry timer reads it again."""
    data = png_bytes(A1111_TEXT, seed=4)
    with open(root / "stuck.png", "wb") as handle:
        handle.write(data[:-12])  # all but the end chunk
        handle.flush()
        recorder.barrier(root)
        assert recorder.of("stuck.png") == []
        handle.write(data[-12:])
    added = recorder.wait_kind("added", "stuck.png")
    assert added.entry is not None
    assert added.entry.bytes == len(data)


def test_a_jpeg_that_only_time_completes_is_listed_by_the_retry_timer(
    root: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JPEG with a camera's trailer after its end marker counts once it has rested;
    no event says so, the retry timer finds out."""
    monkeypatch.setattr(reading, "JPEG_QUIET_S", 0.6)
    data = jpeg_with_a1111_exif(A1111_TEXT) + bytes(range(256)) * 16
    (root / "camera.jpg").write_bytes(data)
    recorder.barrier(root)
    assert recorder.of("camera.jpg") == []
    recorder.wait_for(
        lambda cs: any(c.id == "camera.jpg" for c in cs), "the rested JPEG", 0.6 + DEADLINE_S
    )
    assert [(c.kind, c.entry and c.entry.bytes) for c in recorder.of("camera.jpg")] == [
        ("added", len(data))
    ]


def test_an_image_broken_in_place_is_dropped_after_the_retry_period(
    root: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "RETRY_FOR_S", 0.5)
    data = png_bytes(A1111_TEXT)
    (root / "a.png").write_bytes(data)
    recorder.wait_kind("added", "a.png")
    (root / "a.png").write_bytes(data[: len(data) // 2])
    recorder.barrier(root)
    assert [c.kind for c in recorder.of("a.png")] == ["added"]  # kept while it may heal
    recorder.wait_for(
        lambda cs: ("removed", "a.png") in [(c.kind, c.id) for c in cs], "removal", 0.5 + DEADLINE_S
    )


def test_touching_an_image_without_a_sidecar_moves_it_in_time(
    root: Path, recorder: Recorder
) -> None:
    (root / "old.png").write_bytes(png_bytes())
    recorder.wait_kind("added", "old.png")
    os.utime(root / "old.png", (1_000_000_000, 1_000_000_000))
    updated = recorder.wait_kind("updated", "old.png")
    assert updated.entry is not None
    assert updated.entry.time == 1_000_000_000


def test_deleted_and_moved_images_come_and_go(
    root: Path, recorder: Recorder, tmp_path: Path
) -> None:
    (root / "day").mkdir()
    (root / "day" / "a.png").write_bytes(png_bytes())
    (root / "day" / "b.png").write_bytes(png_bytes())
    recorder.wait_kind("added", "day/b.png")
    (root / "day" / "a.png").unlink()
    assert recorder.wait_kind("removed", "day/a.png").entry is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "day" / "b.png").rename(elsewhere / "b.png")
    recorder.wait_kind("removed", "day/b.png")
    (elsewhere / "b.png").rename(root / "back.png")
    recorder.wait_kind("added", "back.png")
    (root / "back.png").rename(root / "day" / "renamed.png")
    recorder.wait_kind("removed", "back.png")
    recorder.wait_kind("added", "day/renamed.png")


def test_a_whole_day_folder_moved_in_and_out(
    root: Path, recorder: Recorder, tmp_path: Path
) -> None:
    day = tmp_path / "2026-11-20"
    (day / "nested").mkdir(parents=True)
    for name in ("a.png", "b.png", "nested/c.png"):
        (day / name).write_bytes(png_bytes(A1111_TEXT))
    (day / "a.json").write_text(json.dumps({"prompt": "from the sidecar"}))
    day.rename(root / "2026-11-20")
    ids = ["2026-11-20/a.png", "2026-11-20/b.png", "2026-11-20/nested/c.png"]
    for image_id in ids:
        recorder.wait_kind("added", image_id)
    first = recorder.of(ids[0])[0].entry
    assert first is not None
    assert first.prompt == "from the sidecar"
    (root / "2026-11-20").rename(tmp_path / "gone")
    for image_id in ids:
        recorder.wait_kind("removed", image_id)


def test_a_sidecar_that_lands_later_updates_the_prompt(root: Path, recorder: Recorder) -> None:
    (root / "plain.png").write_bytes(png_bytes())
    added = recorder.wait_kind("added", "plain.png")
    assert added.entry is not None
    assert added.entry.prompt == ""
    (root / "plain.json").write_text(
        json.dumps({"prompt": "a blue whale", "created": "2026-11-25T14:03:09+01:00"})
    )
    updated = recorder.wait_kind("updated", "plain.png")
    assert updated.entry is not None
    assert updated.entry.prompt == "a blue whale"
    assert updated.entry.time == dt.datetime.fromisoformat("2026-11-25T14:03:09+01:00").timestamp()


def test_hidden_folders_and_other_files_never_appear(root: Path, recorder: Recorder) -> None:
    for hidden in (".tmp", ".thumbs/2026-11-25", ".trash/1", ".state"):
        (root / hidden).mkdir(parents=True)
        (root / hidden / "image.png").write_bytes(png_bytes())
    (root / "notes.txt").write_text("not a picture")
    (root / "orphan.json").write_text('{"prompt": "no image"}')
    (root / "fake.png").write_text("a text file named like an image")
    (root / "day").mkdir()
    (root / ".trash" / "1" / "image.png").rename(root / "day" / ".hidden.png")
    shutil.copytree(root / ".thumbs", root / "day" / ".thumbs")
    recorder.barrier(root)
    assert recorder.without_markers() == []


def test_a_gallery_folder_removed_and_made_again_is_watched_again(
    root: Path, recorder: Recorder
) -> None:
    (root / "first.png").write_bytes(png_bytes())
    recorder.wait_kind("added", "first.png")
    shutil.rmtree(root)
    recorder.wait_kind("removed", "first.png")
    request = drawn_request("a phoenix rising", 9, 64)
    path = GalleryWriter(root).write(noise_picture(), request, WHEN)  # the writer makes it again
    added = recorder.wait_kind("added", path.relative_to(root).as_posix())
    assert added.entry is not None
    assert added.entry.prompt == "a phoenix rising"


def test_a_gallery_folder_renamed_leaves_the_page_and_its_path_is_watched_again(
    root: Path, recorder: Recorder
) -> None:
    """inotify follows a renamed folder and watchdog does not say it moved: the index
    must not keep listing the old folder under its new name, nor miss the new one."""
    (root / "first.png").write_bytes(png_bytes())
    recorder.wait_kind("added", "first.png")
    root.rename(root.with_name("gallery-2025"))
    recorder.wait_for(  # noticed by the index's folder check, every ROOT_CHECK_S
        lambda cs: ("removed", "first.png") in [(c.kind, c.id) for c in cs],
        "removal",
        ROOT_CHECK_S + DEADLINE_S,
    )
    path = GalleryWriter(root).write(noise_picture(), drawn_request("a heron", 3, 64), WHEN)
    added = recorder.wait_kind("added", path.relative_to(root).as_posix())
    assert added.entry is not None
    assert added.entry.prompt == "a heron"
    (root.with_name("gallery-2025") / "later.png").write_bytes(png_bytes())  # not the gallery
    recorder.barrier(root)
    assert "later.png" not in [image_id for _kind, image_id in recorder.about()]


def test_start_scans_and_stop_ends_the_watch(root: Path) -> None:
    (root / "day").mkdir(parents=True)
    (root / "day" / "before.png").write_bytes(png_bytes())
    before = set(threading.enumerate())
    index = GalleryIndex(root)
    index.start()
    index.start()  # idempotent
    assert [entry.id for entry in index.page()[0]] == ["day/before.png"]
    started = time.monotonic()
    index.stop()
    assert time.monotonic() - started < STOP_WITHIN_S + 1.0  # stop() bounds its join
    deadline = time.monotonic() + 3.0
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(threading.enumerate()) - before == set()
    index.stop()  # stopping twice is harmless
