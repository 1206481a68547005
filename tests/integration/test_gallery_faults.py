"""The gallery under faults: a full disk, a read-only folder, SIGKILL mid-write.

Real file systems: small tmpfs mounts (needs root, as on the CI machines) and a
real child process killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speech2image.gallery.writer import GalleryError, GalleryWriter
from speech2image.request import Request
from tests.support import concat, data_audio, drawn_request, silence, write_wav

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


def test_a_deleted_gallery_is_made_again_by_the_next_write(tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    writer = GalleryWriter(gallery)
    writer.prepare()
    writer.write(*noise_record(16))
    shutil.rmtree(gallery)
    again = writer.write(*noise_record(16, seed=2))
    assert pngs(gallery) == [again]
    assert json.loads(again.with_suffix(".json").read_text("utf-8"))["image"] == again.name
    assert list((gallery / ".tmp").iterdir()) == []


WRITER_LOOP = """
import sys, numpy as np
from PIL import Image
from speech2image.gallery.writer import GalleryWriter
from tests.support import concat, data_audio, drawn_request, silence, write_wav
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


# ------------------------------------------------------------- through the running daemon

CLI = [sys.executable, "-m", "speech2image.cli"]
GAP_S = 10.0  # between the two requests: time to act on the gallery after the first


class LiveRun:
    """The real CLI on a file paced like a microphone; its events read as they come."""

    def __init__(self, config: Path, wav: Path, folder: Path) -> None:
        self.events_path = folder / "events.jsonl"
        self.log = folder / "daemon.log"
        command = [*CLI, "run", "--config", str(config), "--input", str(wav), "--realtime"]
        with self.log.open("w", encoding="utf-8") as stderr:
            self.process = subprocess.Popen(
                [*command, "--events", str(self.events_path)], stderr=stderr
            )

    def events(self) -> list[dict[str, object]]:
        try:
            text = self.events_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        whole = text[: text.rfind("\n") + 1]  # a line being written is read next time
        return [json.loads(line) for line in whole.splitlines() if line]

    def wait_for(self, kind: str, timeout: float = 90.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if any(e["type"] == kind for e in events):
                return events
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"no {kind} event; log:\n{self.log.read_text(encoding='utf-8')}")
            time.sleep(0.05)

    def finish(self) -> tuple[list[dict[str, object]], str]:
        self.process.wait(timeout=90)
        log = self.log.read_text(encoding="utf-8")
        assert self.process.returncode == 0, log
        return self.events(), log


def two_requests_apart(folder: Path) -> Path:
    benign = data_audio("espeak/hey_jarvis_benign_en+f3.wav")
    audio = concat(silence(0.5), benign, silence(GAP_S), benign, silence(2.0))
    return write_wav(folder / "two.wav", audio)


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_gallery_deleted_while_running_is_made_again(
    tmp_path: Path, config_file: Callable[[str], Path]
) -> None:
    gallery = tmp_path / "gallery"
    config = config_file(f'[gallery]\ndir = "{gallery}"\n')
    run = LiveRun(config, two_requests_apart(tmp_path), tmp_path)
    first = run.wait_for("image")
    shutil.rmtree(gallery)  # what `rm -rf` does
    assert [e["type"] for e in first].count("image") == 1, "too late: both were drawn"
    assert not gallery.exists()
    events, log = run.finish()

    deleted, drawn = (Path(str(e["path"])) for e in events if e["type"] == "image")
    assert not deleted.exists()
    assert not [e for e in events if e["type"] in ("error", "rejected")]
    assert pngs(gallery) == [drawn]  # the second picture landed in the new gallery
    with Image.open(drawn) as image:
        image.load()
    sidecar = json.loads(drawn.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["image"] == drawn.name
    assert (gallery / ".tmp").is_dir()
    assert list((gallery / ".tmp").iterdir()) == []
    assert f"the gallery folder {gallery} is gone; making it again" in log


def remount(where: Path, mode: str) -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "mount", "-o", f"remount,{mode}", str(where)], check=True)


@pytest.fixture
def roomy_disk(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "roomy", "size=1m")


@pytest.mark.slow
def test_gallery_turning_read_only_while_running_is_an_error_and_nothing_partial(
    tmp_path: Path, config_file: Callable[[str], Path], roomy_disk: Path
) -> None:
    gallery = roomy_disk / "gallery"
    config = config_file(f'[gallery]\ndir = "{gallery}"\n')
    run = LiveRun(config, two_requests_apart(tmp_path), tmp_path)
    run.wait_for("listening")  # the gallery is prepared: now it turns read-only
    remount(roomy_disk, "ro")
    try:
        run.wait_for("rejected")
        assert files_in(gallery) == []  # no PNG, no sidecar, no temp file
    finally:
        remount(roomy_disk, "rw")
    events, _ = run.finish()

    (error,) = [e for e in events if e["type"] == "error"]
    (rejected,) = [e for e in events if e["type"] == "rejected"]
    assert (error["stage"], rejected["reason"], error["id"]) == ("gallery", "error", rejected["id"])
    assert "not writable" in str(error["message"])
    (image,) = [e for e in events if e["type"] == "image"]  # the next request works again
    assert image["id"] != rejected["id"]
    assert pngs(gallery) == [Path(str(image["path"]))]
