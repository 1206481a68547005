"""One gallery, several writers: the daemon and `speech2image generate` in another process.

Every start runs ``GalleryWriter.prepare()``, which clears what interrupted writes
left in ``.tmp/``. With another process writing into the same gallery, it must
remove only a dead writer's files, never a live one's write in progress. Each test
here fails with the old ``prepare()`` that removed every ``*.part``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from speech2image.gallery import writer as writer_module
from speech2image.gallery.writer import GalleryWriter
from tests.e2e.daemon import DaemonProcess
from tests.support import concat, data_audio, drawn_request, noise_picture, silence, write_wav

pytestmark = [pytest.mark.integration]
CLI = [sys.executable, "-m", "speech2image.cli"]
ConfigFile = Callable[[str], Path]
WHEN = dt.datetime(2026, 11, 25, 14, 3, 9)


def pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if ".tmp" not in p.parts)


def sidecar(png: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    return data


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def prepare_elsewhere(root: Path) -> None:
    """``GalleryWriter(root).prepare()`` in another process, as a second writer starts."""
    code = "import sys, pathlib\nfrom speech2image.gallery.writer import GalleryWriter\n"
    code += "GalleryWriter(pathlib.Path(sys.argv[1])).prepare()\n"
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, timeout=60)


def test_prepare_in_another_process_spares_a_write_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: a second writer starts between this one's temp write and its link."""
    link = writer_module.link_no_replace
    spared: list[Path] = []

    def another_writer_starts_first(temp: Path, target: Path) -> bool:
        prepare_elsewhere(tmp_path)
        if temp.exists():
            spared.append(temp)
        return link(temp, target)

    writer = GalleryWriter(tmp_path)
    writer.prepare()
    monkeypatch.setattr(writer_module, "link_no_replace", another_writer_starts_first)
    path = writer.write(noise_picture(1, 32), drawn_request("a lighthouse at dusk", 1, 32), WHEN)

    assert len(spared) == 2  # the sidecar's temp file, then the PNG's
    assert pngs(tmp_path) == [path]
    assert sidecar(path)["image"] == path.name
    assert list((tmp_path / ".tmp").iterdir()) == []


WRITE_MANY = """
import sys, datetime as dt, pathlib, numpy as np
from PIL import Image
from speech2image.gallery.writer import GalleryWriter
from tests.support import drawn_request
root, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
when = dt.datetime(2026, 11, 25, 14, 3, 9)
rng = np.random.default_rng()
sys.stdin.readline()  # both processes start together
for _ in range(count):
    writer = GalleryWriter(root)
    writer.prepare()  # a new writer starting while the other process writes
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    print(writer.write(Image.fromarray(pixels), drawn_request("a lighthouse", 7, 32), when))
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    """Same prompt, seed and second: every pair is kept, under its own name."""
    count = 25
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITE_MANY, str(tmp_path), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # both have imported PIL and numpy
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    printed: list[Path] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        printed += [Path(line) for line in out.split()]

    assert len(printed) == len(set(printed)) == 2 * count
    assert pngs(tmp_path) == sorted(printed)
    assert {sidecar(png)["image"] for png in printed} == {png.name for png in printed}
    assert list((tmp_path / ".tmp").iterdir()) == []


def plant(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\x89PNG half")
    return path


@pytest.mark.slow
def test_generate_while_the_daemon_draws_loses_neither_image(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    """The real CLI twice on one gallery: the daemon mid-request, `generate` starting.

    The daemon is frozen (SIGSTOP) right after it accepts its request, so that the
    second process's ``prepare()`` provably runs while the daemon is mid-request;
    a temp file named for the daemon's pid stands for its write in progress (a
    moment too short to hit from outside) and must survive. Then both draw and
    store at once.
    """
    gallery = tmp_path / "gallery"
    config = config_file(f'[image]\nsteps = 150\n[gallery]\ndir = "{gallery}"\n')
    audio = concat(silence(0.5), data_audio("espeak/hey_jarvis_benign_en+f3.wav"), silence(3.0))
    wav = write_wav(tmp_path / "in.wav", audio)
    daemon = DaemonProcess(["--config", str(config), "--input", str(wav), "--realtime"], {})
    pid = daemon.process.pid
    generate: subprocess.Popen[str] | None = None
    try:
        accepted = daemon.wait_for("accepted", timeout=180)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert pngs(gallery) == []  # mid-request: drawing, nothing stored yet
            in_flight = plant(gallery / ".tmp", f"{pid}-999999-0123abcd.part")
            stale = plant(gallery / ".tmp", f"{dead_pid()}-1-0123abcd.part")
            generate = subprocess.Popen(
                [*CLI, "generate", "--config", str(config), "a lighthouse at dusk"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while stale.exists() and generate.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not stale.exists()  # generate's prepare() has run: a dead writer's file
            assert in_flight.exists()  # the live daemon's write in progress is untouched
        finally:
            os.kill(pid, signal.SIGCONT)
        out, err = generate.communicate(timeout=180)
        assert generate.returncode == 0, err
        image = daemon.wait_for("image", timeout=180, id=accepted["id"])
        daemon.wait_for("stopped", timeout=60)
        assert daemon.terminate() == 0, daemon.stderr
    finally:
        for process in (daemon.process, generate):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    drawn, typed = Path(image["path"]), Path(out.strip())
    assert pngs(gallery) == sorted([drawn, typed])
    assert sidecar(drawn)["id"] == accepted["id"]
    assert sidecar(drawn)["prompt"] == accepted["text"]
    assert sidecar(typed)["prompt"] == "a lighthouse at dusk"
    for png in (drawn, typed):
        assert sidecar(png)["image"] == png.name
    in_flight.unlink()  # the stand-in; the real writers left nothing behind
    assert list((gallery / ".tmp").iterdir()) == []
