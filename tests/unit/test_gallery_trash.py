"""The trash: delete moves the pair into ``.trash/<tid>/`` keeping its path, restore
brings it back byte for byte or refuses to overwrite, old items are purged, and ids
from URLs never reach outside the gallery."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from speech2image.gallery.trash import (
    RETENTION_S,
    TRASH_DIR,
    NotInTrash,
    Trash,
    TrashConflict,
    TrashItem,
    resolve_id,
)

FOX = "2026-11-30/201500-a-red-fox-42.png"
DAY = 24 * 3600


def pair(root: Path, id: str = FOX, sidecar: bool = True) -> tuple[bytes, bytes]:
    """An image (bytes are enough: the trash never decodes) and its sidecar."""
    image = root / id
    image.parent.mkdir(parents=True, exist_ok=True)
    pixels = b"\x89PNG\r\n\x1a\n" + id.encode() + os.urandom(64)
    record = f'{{"prompt": "a red fox", "image": "{image.name}"}}\n'.encode()
    image.write_bytes(pixels)
    if sidecar:
        image.with_suffix(".json").write_bytes(record)
    return pixels, record


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_delete_moves_both_files_keeping_the_path(tmp_path: Path) -> None:
    pixels, record = pair(tmp_path)
    before = time.time()
    item = Trash(tmp_path).delete(FOX)

    assert item.id == FOX
    assert int(before) <= item.deleted <= time.time()
    assert item.image == tmp_path / TRASH_DIR / item.tid / FOX
    assert item.image.read_bytes() == pixels
    assert item.sidecar == item.image.with_suffix(".json")
    assert item.sidecar.read_bytes() == record
    assert files(tmp_path) == {
        f"{TRASH_DIR}/{item.tid}/{FOX}",
        f"{TRASH_DIR}/{item.tid}/2026-11-30/201500-a-red-fox-42.json",
    }
    assert Trash(tmp_path).items() == [item]


def test_restore_brings_both_back_byte_identical(tmp_path: Path) -> None:
    pixels, record = pair(tmp_path)
    mtime = (tmp_path / FOX).stat().st_mtime_ns
    trash = Trash(tmp_path)
    item = trash.delete(FOX)
    os.rmdir(tmp_path / "2026-11-30")  # the day folder went too, meanwhile

    assert trash.restore(item.tid) == FOX
    assert (tmp_path / FOX).read_bytes() == pixels
    assert (tmp_path / FOX).stat().st_mtime_ns == mtime  # same file: same thumbnail key
    assert (tmp_path / FOX).with_suffix(".json").read_bytes() == record
    assert trash.items() == []
    assert list((tmp_path / TRASH_DIR).iterdir()) == []
    with pytest.raises(NotInTrash):
        trash.restore(item.tid)


def test_an_image_without_a_sidecar(tmp_path: Path) -> None:
    pixels, _ = pair(tmp_path, "copied-by-hand.jpg", sidecar=False)
    trash = Trash(tmp_path)
    item = trash.delete("copied-by-hand.jpg")
    assert item.sidecar is None
    assert trash.restore(item.tid) == "copied-by-hand.jpg"
    assert files(tmp_path) == {"copied-by-hand.jpg"}
    assert (tmp_path / "copied-by-hand.jpg").read_bytes() == pixels


def test_restore_into_a_taken_name_changes_nothing(tmp_path: Path) -> None:
    pair(tmp_path)
    trash = Trash(tmp_path)
    item = trash.delete(FOX)
    newer = pair(tmp_path)  # a new pair of the same name
    before = files(tmp_path)

    with pytest.raises(TrashConflict, match="move or delete that file"):
        trash.restore(item.tid)
    assert files(tmp_path) == before
    assert ((tmp_path / FOX).read_bytes(), (tmp_path / FOX).with_suffix(".json").read_bytes()) == (
        newer
    )


def test_restore_over_an_image_alone_takes_its_record_back(tmp_path: Path) -> None:
    """The sidecar's name was free, the image's was not: the sidecar linked first is
    taken back, so the gallery keeps only what it had."""
    _, record = pair(tmp_path)
    trash = Trash(tmp_path)
    item = trash.delete(FOX)
    (tmp_path / FOX).write_bytes(b"someone else's picture")

    with pytest.raises(TrashConflict):
        trash.restore(item.tid)
    assert files(tmp_path) == {
        FOX,
        f"{TRASH_DIR}/{item.tid}/{FOX}",
        f"{TRASH_DIR}/{item.tid}/2026-11-30/201500-a-red-fox-42.json",
    }
    assert (tmp_path / FOX).read_bytes() == b"someone else's picture"
    assert item.sidecar is not None
    assert item.sidecar.read_bytes() == record


def test_a_sidecar_left_behind_is_picked_up_by_the_restore(tmp_path: Path) -> None:
    """A crash between the two moves of a delete leaves the record in the gallery; a
    restore of the image makes the pair whole again."""
    _, record = pair(tmp_path)
    trash = Trash(tmp_path)
    item = trash.delete(FOX)
    assert item.sidecar is not None
    os.rename(item.sidecar, (tmp_path / FOX).with_suffix(".json"))  # as if it never moved

    assert trash.restore(item.tid) == FOX
    assert (tmp_path / FOX).with_suffix(".json").read_bytes() == record
    assert not (tmp_path / TRASH_DIR / item.tid).exists()


def test_an_interrupted_restore_is_finished(tmp_path: Path) -> None:
    """Killed after linking both files back but before unlinking them from the trash."""
    pair(tmp_path)
    trash = Trash(tmp_path)
    item = trash.delete(FOX)
    assert item.sidecar is not None
    os.link(item.sidecar, (tmp_path / FOX).with_suffix(".json"))
    os.link(item.image, tmp_path / FOX)

    assert trash.restore(item.tid) == FOX
    assert files(tmp_path) == {FOX, "2026-11-30/201500-a-red-fox-42.json"}


def age(trash: Trash, item: TrashItem, days: float) -> TrashItem:
    """``item`` as if deleted ``days`` earlier (the tid says when)."""
    deleted = int(item.deleted - days * DAY)
    older = f"{deleted}-{item.tid.split('-')[1]}"
    os.rename(trash.folder / item.tid, trash.folder / older)
    return TrashItem(older, item.id, float(deleted), trash.folder / older / item.id, None)


def test_purge_by_age(tmp_path: Path) -> None:
    trash = Trash(tmp_path)
    for n in range(3):
        pair(tmp_path, f"2026-11-{n + 1:02d}/x-{n}.png")
    old = age(trash, trash.delete("2026-11-01/x-0.png"), 40)
    month = age(trash, trash.delete("2026-11-02/x-1.png"), 29)
    fresh = trash.delete("2026-11-03/x-2.png")

    assert [i.id for i in trash.items()] == [fresh.id, month.id, old.id]  # newest first
    assert trash.purge() == 1
    assert [i.id for i in trash.items()] == [fresh.id, month.id]
    assert trash.purge(now=time.time() + 2 * DAY) == 1
    assert [i.id for i in trash.items()] == [fresh.id]
    assert trash.purge(RETENTION_S, now=fresh.deleted + RETENTION_S - 1) == 0
    assert trash.purge(RETENTION_S, now=fresh.deleted + RETENTION_S) == 1
    assert trash.items() == []


def test_empty_removes_everything_and_only_the_trash(tmp_path: Path) -> None:
    trash = Trash(tmp_path)
    for n in range(3):
        pair(tmp_path, f"day/{n}.png")
        trash.delete(f"day/{n}.png")
    pair(tmp_path, "day/kept.png")
    foreign = tmp_path / TRASH_DIR / "not-ours"
    foreign.mkdir()

    assert trash.empty() == 3
    assert trash.items() == []
    assert files(tmp_path) == {"day/kept.png", "day/kept.json"}
    assert foreign.is_dir()
    assert trash.empty() == 0


@pytest.mark.parametrize(
    "bad",
    [
        "../x.png",
        "/etc/passwd",
        ".tmp/x.png",
        "a/../../x.png",
        f"{TRASH_DIR}/1-abcdef01/x.png",
        "a/./x.png",
        "a//x.png",
        "x.json",
        "",
        "x\0.png",
    ],
)
def test_ids_that_leave_the_gallery_are_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path.parent / "x.png").write_bytes(b"outside")
    with pytest.raises(ValueError, match="not an image id"):
        Trash(tmp_path).delete(bad)
    assert (tmp_path.parent / "x.png").read_bytes() == b"outside"


def test_symlinks_out_of_the_gallery_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "gallery", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"private")
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "day").symlink_to(outside)
    for id in ("link.png", "day/secret.png"):
        with pytest.raises(ValueError, match="outside the gallery"):
            resolve_id(root, id)
        with pytest.raises(ValueError, match="outside the gallery"):
            Trash(root).delete(id)
    assert (outside / "secret.png").read_bytes() == b"private"


def test_deleting_a_missing_image(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Trash(tmp_path).delete(FOX)
    assert not (tmp_path / TRASH_DIR).exists() or list((tmp_path / TRASH_DIR).iterdir()) == []


@pytest.mark.parametrize("tid", ["../x", "..", "123", "1-zzzzzzzz", "1-abcdef01/..", "1-abcdef01"])
def test_file_of_an_unknown_or_bad_tid(tmp_path: Path, tid: str) -> None:
    pair(tmp_path)
    trash = Trash(tmp_path)
    item = trash.delete(FOX)
    assert trash.file(item.tid) == item.image
    with pytest.raises(NotInTrash):
        trash.file(tid)
    with pytest.raises(NotInTrash):
        trash.restore(tid)


def test_concurrent_deletes(tmp_path: Path) -> None:
    ids = [f"2026-11-30/{n}.png" for n in range(8)]
    for id in ids:
        pair(tmp_path, id)
    trash = Trash(tmp_path)
    start = threading.Barrier(8)
    failed: list[BaseException] = []

    def delete(id: str) -> None:
        start.wait()
        try:
            trash.delete(id)
            trash.items()
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=delete, args=(id,)) for id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    items = trash.items()
    assert sorted(i.id for i in items) == ids
    assert len({i.tid for i in items}) == 8
    assert all(i.sidecar is not None and i.sidecar.is_file() for i in items)


def test_a_symlink_planted_in_the_trash_is_no_item(tmp_path: Path) -> None:
    root = tmp_path / "gallery"
    pair(root)
    trash = Trash(root)
    real = trash.delete(FOX)
    planted = root / ".trash" / "1700000000-deadbeef"
    planted.mkdir()
    (tmp_path / "secret.png").write_bytes(b"\x89PNG not yours")
    (planted / "evil.png").symlink_to(tmp_path / "secret.png")
    assert [item.tid for item in trash.items()] == [real.tid]
    with pytest.raises(NotInTrash):
        trash.file("1700000000-deadbeef")
