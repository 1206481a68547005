"""Page state: favourites in SQLite under the gallery's ``.state/``, keyed by image id;
they survive a restart, a damaged database is replaced, a read-only gallery is a
clear error."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech2image.gallery.pagestate import DB_NAME, STATE_DIR, PageState, PageStateError

FOX = "2026-11-30/201500-a-red-fox-42.png"
OWL = "2026-11-30/201501-an-owl-7.png"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[PageState]:
    opened = PageState(tmp_path)
    yield opened
    opened.close()


def test_set_unset_and_keep_across_a_restart(tmp_path: Path) -> None:
    state = PageState(tmp_path)
    assert state.favourites() == frozenset()
    assert state.set_favourite(FOX, True) is True
    assert state.set_favourite(FOX, True) is True  # twice is no error
    assert state.set_favourite(OWL, True) is True
    assert state.set_favourite(OWL, False) is False
    assert state.set_favourite("copied-by-hand.jpg", True) is True
    state.close()

    again = PageState(tmp_path)
    assert again.favourites() == {FOX, "copied-by-hand.jpg"}
    assert again.is_favourite(FOX)
    assert not again.is_favourite(OWL)
    again.close()
    assert (tmp_path / STATE_DIR / DB_NAME).is_file()


def test_two_openers_share_one_database(tmp_path: Path) -> None:
    """The daemon's page and a standalone ``speech2image gallery`` on the same folder."""
    first, second = PageState(tmp_path), PageState(tmp_path)
    first.set_favourite(FOX, True)
    assert second.is_favourite(FOX)
    second.set_favourite(FOX, False)
    assert not first.is_favourite(FOX)
    first.close()
    second.close()


def test_rename_moves_the_state_with_the_image(state: PageState) -> None:
    state.set_favourite(FOX, True)
    state.rename(FOX, "2026-11-30/201500-a-red-fox-42-2.png")
    assert state.favourites() == {"2026-11-30/201500-a-red-fox-42-2.png"}
    # The new name takes the old one's state, whatever it had before.
    state.set_favourite(OWL, True)
    state.rename("not-a-favourite.png", OWL)
    assert not state.is_favourite(OWL)


def test_forget_drops_images_gone_for_good(state: PageState) -> None:
    state.set_favourite(FOX, True)
    state.set_favourite(OWL, True)
    assert state.forget([FOX, "never-was.png"]) == 1
    assert state.favourites() == {OWL}


def test_a_corrupt_database_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / STATE_DIR / DB_NAME
    path.parent.mkdir()
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)

    with caplog.at_level(logging.WARNING, logger="speech2image.gallery.pagestate"):
        state = PageState(tmp_path)
    assert state.favourites() == frozenset()
    assert state.set_favourite(FOX, True)
    state.close()

    aside = [p for p in path.parent.iterdir() if p.name.startswith(f"{DB_NAME}.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")
    assert str(path) in caplog.text
    assert PageState(tmp_path).favourites() == {FOX}


def test_a_damaged_page_inside_a_real_database_is_noticed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = PageState(tmp_path)
    for n in range(500):
        state.set_favourite(f"2026-11-30/{n:05d}-a-fairly-long-image-name.png", True)
    state.close()
    path = tmp_path / STATE_DIR / DB_NAME
    data = bytearray(path.read_bytes())
    data[3 * 4096 : 3 * 4096 + 512] = b"\xff" * 512  # a b-tree page, not the header
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="speech2image.gallery.pagestate"):
        fresh = PageState(tmp_path)
    assert "damaged" in caplog.text
    assert fresh.favourites() == frozenset()
    fresh.close()


def test_concurrent_writes_from_threads(state: PageState) -> None:
    start = threading.Barrier(8)
    failed: list[BaseException] = []

    def mark(worker: int) -> None:
        start.wait()
        try:
            for n in range(40):
                state.set_favourite(f"{worker}/{n}.png", True)
                if n % 2:
                    state.set_favourite(f"{worker}/{n}.png", False)
                state.is_favourite(f"{worker}/{n}.png")
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=mark, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert state.favourites() == {f"{w}/{n}.png" for w in range(8) for n in range(0, 40, 2)}


def test_no_state_folder_possible_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / STATE_DIR).write_text("a file where the folder should be")
    with pytest.raises(PageStateError, match=str(tmp_path / STATE_DIR)):
        PageState(tmp_path)


@pytest.fixture
def read_only_gallery(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system holding a gallery that had favourites (root only,
    like the gallery fault tests)."""
    where = tmp_path / "ro"
    where.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]

    def mount(*options: str) -> None:
        done = subprocess.run(
            [*sudo, "mount", "-t", "tmpfs", *options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"mounting a tmpfs needs root or passwordless sudo: {done.stderr}")

    mount("-o", "size=1m,mode=1777")
    try:
        state = PageState(where)
        state.set_favourite(FOX, True)
        state.close()
        mount("-o", "remount,ro")
        yield where
    finally:
        subprocess.run([*sudo, "umount", "-l", str(where)], check=False)


def test_a_read_only_gallery_is_a_clear_error(read_only_gallery: Path) -> None:
    with pytest.raises(PageStateError, match="make the gallery folder writable"):
        PageState(read_only_gallery)
    with pytest.raises(PageStateError, match="make the gallery folder writable"):
        PageState(read_only_gallery / "never-made")
