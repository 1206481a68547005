"""The gallery under faults: a full disk, a read-only folder, SIGKILL mid-write.

Real file systems: small tmpfs mounts (needs root, as on the CI machines) and a
real child process killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speech2image.gallery.writer import GalleryError, GalleryWriter
from speech2image.request import Request
from tests.support import drawn_request

pytestmark = [pytest.mark.integration]


def noise_record(size: int, seed: int = 1) -> tuple[Image.Image, Request]:
    """Random pixels do not compress: the PNG is about size*size*3 bytes."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels), drawn_request("static on an old television", seed, size)


def mount_tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A real small or read-only file system; mounting needs root (or sudo without a password)."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        [*sudo, "mount", "-t", "tmpfs", "-o", f"{options},mode=1777", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root or passwordless sudo: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run([*sudo, "umount", "-l", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "small", "size=96k")


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "ro", "ro,size=1m")


def pngs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.png") if ".tmp" not in p.parts]


def test_full_disk_leaves_nothing_partial(small_disk: Path) -> None:
    writer = GalleryWriter(small_disk)
    writer.prepare()
    small = writer.write(*noise_record(32))  # ~3 KB: fits
    with pytest.raises(GalleryError, match="is full; nothing was written"):
        writer.write(*noise_record(256, seed=2))  # ~200 KB: does not
    assert pngs(small_disk) == [small]
    assert list((small_disk / ".tmp").iterdir()) == []
    with Image.open(small) as image:
        image.load()
    # Space is back once the big image is gone: the writer works again.
    writer.write(*noise_record(32, seed=3))
    assert len(pngs(small_disk)) == 2


def test_read_only_folder_is_a_clear_error(read_only_disk: Path) -> None:
    writer = GalleryWriter(read_only_disk / "outputs")
    with pytest.raises(GalleryError, match="not writable"):
        writer.prepare()
    with pytest.raises(GalleryError, match="not writable"):
        writer.write(*noise_record(16))
    assert pngs(read_only_disk) == []


WRITER_LOOP = """
import sys, numpy as np
from PIL import Image
from speech2image.gallery.writer import GalleryWriter
from tests.support import drawn_request
writer = GalleryWriter(__import__("pathlib").Path(sys.argv[1]))
writer.prepare()
rng = np.random.default_rng(0)
seed = 0
while True:
    seed += 1
    pixels = rng.integers(0, 255, (384, 384, 3), dtype=np.uint8)
    writer.write(Image.fromarray(pixels), drawn_request("noise", seed, 384))
    print(seed, flush=True)
"""


class PairWatcher(threading.Thread):
    """Looks at the gallery as a viewer would, over and over: every PNG it sees must
    already have its sidecar (the sidecar is linked first, the PNG commits the pair)."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: set[Path] = set()
        self.without_sidecar: list[Path] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                found = pngs(self.root)
            except FileNotFoundError:  # a temp file went away while it was listed
                continue
            for png in found:
                if not png.with_suffix(".json").exists():
                    self.without_sidecar.append(png)
            self.seen.update(found)
            time.sleep(0.001)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)


def test_sigkill_mid_write_never_leaves_a_partial_png(tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    watcher = PairWatcher(gallery)
    watcher.start()
    try:
        for delay in (0.3, 0.55, 0.8):
            child = subprocess.Popen(
                [sys.executable, "-c", WRITER_LOOP, str(gallery)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            child.stdout.readline()  # at least one image is complete; more are being written
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    finally:
        watcher.stop()
    images = pngs(gallery)
    assert len(images) >= 3
    for path in images:
        with Image.open(path) as image:
            image.load()  # every PNG in the gallery is complete and decodes
        assert image.size == (384, 384)
    assert watcher.seen  # the watcher did look while images were written
    assert watcher.without_sidecar == []  # a PNG it saw always had its sidecar already
    for path in images:  # and still has it, naming this PNG
        assert json.loads(path.with_suffix(".json").read_text("utf-8"))["image"] == path.name
    # Every sidecar is whole JSON; one without a PNG (killed between the two) may remain.
    sidecars = [p for p in gallery.rglob("*.json") if ".tmp" not in p.parts]
    assert len(sidecars) >= len(images)
    for sidecar in sidecars:
        assert json.loads(sidecar.read_text("utf-8"))["prompt"] == "noise"
    GalleryWriter(gallery).prepare()
    assert list((gallery / ".tmp").glob("*.part")) == []
