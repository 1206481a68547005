"""The gallery writer: names, AUTOMATIC1111 metadata, sidecars, no overwrite, no partials,
temp files that say whose they are, and folders that survive a power loss."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speech2image.gallery import writer as writer_module
from speech2image.gallery.writer import (
    TEMP_NAME,
    GalleryError,
    GalleryWriter,
    a1111_parameters,
    image_name,
    process_alive,
    slugify,
    temp_name,
)
from speech2image.request import ModerationPart, Request
from tests.support import drawn_request, noise_picture

WHEN = dt.datetime(2026, 11, 25, 14, 3, 9)
HOUR_AND_A_BIT = 3700


def record(prompt: str = "a red fox sleeping under a cherry tree", seed: int = 42) -> Request:
    return drawn_request(
        prompt,
        seed,
        16,
        steps=4,
        sampler="EulerAncestralDiscreteScheduler",
        model="stabilityai/sd-turbo",
        negative_prompt="blurry",
        transcript="A red fox sleeping under a cherry tree.",
    )


def parameters(request: Request) -> str:
    assert request.image is not None
    return a1111_parameters(request.prompt, request.image)


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A red fox, sleeping under a cherry tree!", "a-red-fox-sleeping-under-a-cherry-tree"),
        ("Café au lait ☕ on a table", "cafe-au-lait-on-a-table"),
        ("../../etc/passwd", "etc-passwd"),
        ("   ", "image"),
        ("水彩画", "image"),
        ("word " * 30, "-".join(["word"] * 9)),
        ("x" * 80, "x" * 48),
    ],
)
def test_slugify(prompt: str, slug: str) -> None:
    assert slugify(prompt) == slug
    assert len(slugify(prompt)) <= 48


def test_name_layout() -> None:
    assert image_name(WHEN, "A red fox", 7) == Path("2026-11-25/140309-a-red-fox-7.png")
    assert image_name(WHEN, "A red fox", 7, attempt=2) == Path(
        "2026-11-25/140309-a-red-fox-7-2.png"
    )


def test_a1111_parameters_text() -> None:
    assert parameters(record()) == (
        "a red fox sleeping under a cherry tree\n"
        "Negative prompt: blurry\n"
        "Steps: 4, Sampler: Euler a, CFG scale: 0, Seed: 42, Size: 16x16, "
        "Model: stabilityai/sd-turbo"
    )


def test_write_png_with_metadata_and_sidecar(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path / "outputs")
    writer.prepare()
    path = writer.write(noise_picture(42), record(), WHEN)

    assert (
        path == tmp_path / "outputs/2026-11-25/140309-a-red-fox-sleeping-under-a-cherry-tree-42.png"
    )
    with Image.open(path) as image:
        assert image.size == (16, 16)
        assert image.text["parameters"] == parameters(record())
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["prompt"] == "a red fox sleeping under a cherry tree"
    assert sidecar["transcript"] == "A red fox sleeping under a cherry tree."
    assert sidecar["seed"] == 42
    assert sidecar["image"] == path.name
    assert sidecar["speech2image"]
    assert list((tmp_path / "outputs/.tmp").iterdir()) == []


def test_never_overwrites(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path)
    first = writer.write(noise_picture(5), record(seed=5), WHEN)
    before = first.read_bytes()
    second = writer.write(noise_picture(5), record(seed=5), WHEN)
    third = writer.write(noise_picture(5), record(seed=5), WHEN)
    assert second.name.endswith("-5-2.png")
    assert third.name.endswith("-5-3.png")
    assert first.read_bytes() == before
    assert json.loads(second.with_suffix(".json").read_text())["image"] == second.name


def leftover(root: Path, name: str, age_s: float = 0.0) -> Path:
    """A temp file in ``root/.tmp`` as a writer leaves it, ``age_s`` seconds old."""
    path = root / ".tmp" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG half")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of another process that is running (a writer in the middle of its write)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_prepare_removes_leftovers_of_an_interrupted_write(tmp_path: Path) -> None:
    """What a killed writer left (its pid is gone), and an hour-old one from an older version."""
    stale = leftover(tmp_path, f"{dead_pid()}-3-0a1b2c3d.part")
    legacy = leftover(tmp_path, "tmpabc.part", age_s=HOUR_AND_A_BIT)
    GalleryWriter(tmp_path).prepare()
    assert not stale.exists()
    assert not legacy.exists()


def test_prepare_keeps_what_live_writers_are_writing(tmp_path: Path, live_pid: int) -> None:
    """Another process's write in progress survives this one's start; only stale files go."""
    live = leftover(tmp_path, f"{live_pid}-1-0a1b2c3d.part")
    dead = leftover(tmp_path, f"{dead_pid()}-1-0a1b2c3d.part")
    reused = leftover(tmp_path, f"{live_pid}-2-0a1b2c3d.part", age_s=HOUR_AND_A_BIT)
    old_legacy = leftover(tmp_path, "tmpabc123.part", age_s=HOUR_AND_A_BIT)
    new_legacy = leftover(tmp_path, "tmpdef456.part")
    old_folder = tmp_path / ".tmp" / "somebody-elses"
    old_folder.mkdir()
    os.utime(old_folder, (time.time() - HOUR_AND_A_BIT,) * 2)

    GalleryWriter(tmp_path).prepare()

    assert live.read_bytes() == b"\x89PNG half"  # a live pid: a write in progress
    assert not dead.exists()  # its writer is gone
    assert not reused.exists()  # over an hour old: the pid was reused
    assert not old_legacy.exists()  # an older version's name, over an hour old
    assert new_legacy.exists()  # an older version may be writing it right now
    assert old_folder.is_dir()  # folders are never a writer's temp file


def test_another_users_writer_counts_as_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.kill(pid, 0) says EPERM for another user's live process: keep its file."""

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    theirs = leftover(tmp_path, "4242-1-0a1b2c3d.part")
    monkeypatch.setattr(os, "kill", refuse)
    assert process_alive(4242)
    GalleryWriter(tmp_path).prepare()
    assert theirs.exists()


@pytest.mark.parametrize("pid", [0, -1, 2**70])
def test_impossible_pids_are_not_alive(pid: int) -> None:
    """Never a writer; os.kill(0, 0) would even signal our own process group."""
    assert not process_alive(pid)


NAMES_IN_A_CHILD = """
from speech2image.gallery.writer import temp_name
print("\\n".join(temp_name() for _ in range(200)))
"""


def test_temp_names_of_two_processes_never_collide() -> None:
    child = subprocess.run(
        [sys.executable, "-c", NAMES_IN_A_CHILD], capture_output=True, text=True, check=True
    )
    theirs = child.stdout.split()
    ours = [temp_name() for _ in range(200)]
    assert len(set(ours)) == len(ours) == len(set(theirs)) == 200
    assert not set(ours) & set(theirs)
    matches = [TEMP_NAME.fullmatch(name) for name in ours + theirs]
    assert all(matches)
    pids = {int(match["pid"]) for match in matches if match}
    assert os.getpid() in pids
    assert len(pids) == 2  # each name says which process writes it


def test_a_write_leaves_no_temp_files_and_uses_writer_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temps: list[str] = []
    link = writer_module.link_no_replace

    def spy(temp: Path, target: Path) -> bool:
        temps.append(temp.name)
        assert temp.parent == tmp_path / ".tmp"
        return link(temp, target)

    monkeypatch.setattr(writer_module, "link_no_replace", spy)
    GalleryWriter(tmp_path).write(noise_picture(1), record(), WHEN)
    assert len(temps) == 2  # the sidecar, then the PNG
    for name in temps:
        match = TEMP_NAME.fullmatch(name)
        assert match is not None
        assert int(match["pid"]) == os.getpid()
    assert list((tmp_path / ".tmp").iterdir()) == []


def everything_in(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*"))


@pytest.mark.parametrize(
    ("score", "why"),
    [(float("nan"), "Out of range float values"), (np.float32(0.1), "float32")],
    ids=["nan", "numpy-float32"],
)
def test_a_record_json_cannot_hold_is_an_error_and_nothing_is_left(
    tmp_path: Path, score: float, why: str
) -> None:
    request = record().with_moderation(ModerationPart("test", True, {"toxicity": score}), 0.1)
    writer = GalleryWriter(tmp_path)
    writer.prepare()
    with pytest.raises(GalleryError, match=f"request {request.id} .*{why}.*nothing was written"):
        writer.write(noise_picture(2), request, WHEN)
    assert everything_in(tmp_path) == [Path(".tmp")]  # no PNG, no JSON, no temp, no folder


Fsync = Callable[[int], None]


def refusing_folders(error: int, refused: list[int] | None = None) -> Fsync:
    """os.fsync as a file system that cannot sync folders: files sync, folders say ``error``.

    The folders' fds are noted in ``refused``.
    """
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if refused is not None:
                refused.append(fd)
            raise OSError(error, os.strerror(error))
        real(fd)

    return fsync


@pytest.mark.parametrize("error", [errno.EINVAL, errno.EOPNOTSUPP])
def test_a_folder_fsync_refused_is_tolerated_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: int
) -> None:
    """Injected (os.fsync fails for folder fds only): none of the file systems the tests
    can mount refuses. A loopback FUSE mount answering FSYNCDIR with EINVAL gives the
    same OSError for real; the old writer failed every write on it, this one writes."""
    refused: list[int] = []
    monkeypatch.setattr(os, "fsync", refusing_folders(error, refused))
    monkeypatch.setattr(writer_module, "_dir_fsync_refused_on", set())
    writer = GalleryWriter(tmp_path)
    writer.prepare()
    with caplog.at_level(logging.DEBUG, logger=writer_module.__name__):
        first = writer.write(noise_picture(3), record(seed=3), WHEN)
        second = writer.write(noise_picture(4), record(seed=4), WHEN + dt.timedelta(days=1))
    # New date folders: the gallery root, then the date folder after each link.
    assert len(refused) == 2 * 3
    for path in (first, second):
        assert path.is_file()
        assert json.loads(path.with_suffix(".json").read_text())["image"] == path.name
    refusals = [r for r in caplog.records if "cannot sync folders" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.DEBUG


def test_other_folder_fsync_errors_fail_the_write_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO is a real failure, not a file system's way: the pair is taken back."""
    writer = GalleryWriter(tmp_path)
    writer.write(noise_picture(5), record(seed=5), WHEN)  # the date folder exists: links, then EIO
    before = everything_in(tmp_path)
    monkeypatch.setattr(os, "fsync", refusing_folders(errno.EIO))
    with pytest.raises(GalleryError, match="could not write"):
        writer.write(noise_picture(6), record(seed=6), WHEN)
    assert everything_in(tmp_path) == before


def test_a_new_date_folder_is_synced_in_the_gallery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power loss must not take the new folder (and the pair in it) away."""
    synced: list[Path] = []
    fsync_dir = writer_module._fsync_dir

    def spy(folder: Path) -> None:
        synced.append(folder)
        fsync_dir(folder)

    monkeypatch.setattr(writer_module, "_fsync_dir", spy)
    writer = GalleryWriter(tmp_path)
    path = writer.write(noise_picture(7), record(seed=7), WHEN)
    assert synced == [tmp_path, path.parent, path.parent]  # new folder, sidecar, PNG
    synced.clear()
    writer.write(noise_picture(8), record(seed=8), WHEN)
    assert synced == [path.parent, path.parent]  # the folder was there: no gallery sync
