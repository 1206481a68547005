"""Wake word to picture: the whole daemon on sound files, with the tiny image model.

Every accepted utterance gives exactly one PNG (with AUTOMATIC1111 metadata and a
sidecar) and one `image` event; every rejected one gives none.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from speech2image.gallery.writer import GalleryWriter
from tests.integration.inotify_watch import CreateWatch
from tests.support import Run, concat, data_audio, run_cli, silence, write_wav

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = [sys.executable, "-m", "speech2image.cli"]
ConfigFile = Callable[[str], Path]


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    return tmp_path / "gallery"


def pngs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if ".tmp" not in p.parts)


def run_file(tmp_path: Path, config: Path, *parts: object) -> Run:
    wav = write_wav(tmp_path / "in.wav", concat(silence(0.5), *parts, silence(2.0)))  # type: ignore[arg-type]
    result = run_cli(["run", "--config", str(config), "--input", str(wav)])
    assert result.returncode == 0, result.stderr
    return result


def test_spoken_request_becomes_one_png_with_its_prompt(
    tmp_path: Path, config_file: ConfigFile, gallery: Path
) -> None:
    config = config_file(f'[gallery]\ndir = "{gallery}"\n')
    result = run_file(tmp_path, config, data_audio("espeak/hey_jarvis_benign_en+f3.wav"))

    (transcript,) = result.of("transcript")
    (image,) = result.of("image")
    assert image["id"] == transcript["id"]
    assert result.events[-1]["type"] == "stopped"  # exits only after the image is written
    (png,) = pngs(gallery)
    assert str(png) == image["path"]
    assert png.parent.name.count("-") == 2  # YYYY-MM-DD
    assert png.name.endswith(f"-{image['seed']}.png")
    with Image.open(png) as picture:
        assert picture.size == (64, 64)
        parameters = picture.text["parameters"]
    assert parameters.splitlines()[0] == transcript["text"]
    assert f"Seed: {image['seed']}, Size: 64x64" in parameters
    sidecar = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["transcript"] == transcript["text"]
    assert sidecar["wake"]["model"] == "hey_jarvis"
    assert sidecar["wake"]["score"] >= 0.5
    assert sidecar["moderation"]["scores"]["threat"] < 0.7
    assert sidecar["timings"]["generate_s"] > 0


def test_recorded_wake_phrase_then_prompt(
    tmp_path: Path, config_file: ConfigFile, gallery: Path
) -> None:
    config = config_file(f'[wake]\nmodels = ["hey_mycroft"]\n[gallery]\ndir = "{gallery}"\n')
    result = run_file(
        tmp_path,
        config,
        data_audio("hey_mycroft_test.wav"),
        silence(0.3),
        data_audio("espeak/prompt_3_en-us.wav"),
    )
    (image,) = result.of("image")
    with Image.open(image["path"]) as picture:
        embedded = picture.text["parameters"].splitlines()[0]
    assert embedded == result.of("transcript")[0]["text"]
    assert "robot" in embedded.lower()


def test_toxic_request_gives_no_image(
    tmp_path: Path, config_file: ConfigFile, gallery: Path
) -> None:
    config = config_file(f'[gallery]\ndir = "{gallery}"\n')
    result = run_file(tmp_path, config, data_audio("espeak/hey_jarvis_toxic_en-us.wav"))
    assert [e["reason"] for e in result.of("rejected")] == ["toxic"]
    assert result.of("image") == []
    assert pngs(gallery) == []


def test_every_request_in_a_file_is_drawn_before_exit(
    tmp_path: Path, config_file: ConfigFile, gallery: Path
) -> None:
    """A file waits for a busy pipeline: a queue of one still loses nothing."""
    config = config_file(f'[image]\nqueue = 1\nsteps = 8\n[gallery]\ndir = "{gallery}"\n')
    parts = []
    for voice, number in [("en-us", 1), ("en+f3", 2), ("en-us", 3), ("en+f3", 1)]:
        parts += [
            data_audio(f"espeak/hey_jarvis_{voice}_160.wav"),
            silence(0.4),
            data_audio(f"espeak/prompt_{number}_{voice}.wav"),
            silence(1.5),
        ]
    result = run_file(tmp_path, config, *parts)
    assert result.of("rejected") == []
    assert len(result.of("image")) == 4
    assert len(pngs(gallery)) == 4
    assert {e["id"] for e in result.of("image")} == {e["id"] for e in result.of("wake")}


def test_generate_command(config_file: ConfigFile, gallery: Path) -> None:
    config = config_file(f'[gallery]\ndir = "{gallery}"\n')
    result = subprocess.run(
        [*CLI, "generate", "--config", str(config), "--seed", "7", "a red fox in the snow"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent.parent == gallery.resolve()
    assert path.name.endswith("-a-red-fox-in-the-snow-7.png")
    with Image.open(path) as picture:
        assert picture.text["parameters"].startswith("a red fox in the snow\n")

    rejected = subprocess.run(
        [*CLI, "generate", "--config", str(config), "draw me stabbing my boss"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rejected.returncode == 1
    assert rejected.stdout == ""
    assert pngs(gallery) == [path]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    from tests.integration.test_gallery_faults import mount_tmpfs

    yield from mount_tmpfs(tmp_path / "full", "size=24k")


def test_full_disk_is_an_error_and_the_daemon_keeps_listening(
    tmp_path: Path, config_file: ConfigFile, full_disk: Path
) -> None:
    # 512x512 images of a random model are noise: far bigger than the 24 KB disk.
    config = config_file(
        f'[image]\nwidth = 512\nheight = 512\nsteps = 1\n[gallery]\ndir = "{full_disk}"\n'
    )
    request = data_audio("espeak/hey_jarvis_benign_en+f3.wav")
    result = run_file(tmp_path, config, request, silence(2.0), request)
    errors = [e for e in result.of("error") if e["stage"] == "gallery"]
    assert len(errors) == 2  # the second request was still heard and tried
    assert "is full; nothing was written" in errors[0]["message"]
    assert [e["reason"] for e in result.of("rejected")] == ["error", "error"]
    assert result.of("image") == []
    assert pngs(full_disk) == []


def test_sigterm_during_a_long_generation_exits_cleanly(
    tmp_path: Path, config_file: ConfigFile, gallery: Path
) -> None:
    """systemd's stop: exit 0 well within its 10 s, with no partial PNG left behind."""
    import time

    from tests.e2e.daemon import DaemonProcess

    config = config_file(
        f'[image]\nwidth = 512\nheight = 512\nsteps = 150\n[gallery]\ndir = "{gallery}"\n'
    )
    wav = write_wav(
        tmp_path / "in.wav",
        concat(silence(0.5), data_audio("espeak/hey_jarvis_benign_en+f3.wav"), silence(30.0)),
    )
    daemon = DaemonProcess(["--config", str(config), "--input", str(wav), "--realtime"], {})
    daemon.wait_for("accepted", timeout=120)
    time.sleep(0.5)  # the image worker is now inside the diffusion loop
    daemon.process.send_signal(signal.SIGTERM)
    code = daemon.terminate(timeout=10)  # systemd's stop timeout; raises if it hangs
    assert code == 0, daemon.stderr
    assert daemon.events[-1]["type"] == "stopped"
    # The stop came mid-diffusion. The worker keeps what is left of the 10 s deadline:
    # the request ends exactly once, drawn (kept whole, with its record) if it finished
    # in time, else rejected as shutdown with nothing stored. (A write cut short by
    # SIGKILL is test_sigkill_while_writing_leaves_no_partial_png.)
    (end,) = [e for e in daemon.events if e["type"] in ("image", "rejected")]
    files = sorted(p.relative_to(gallery) for p in gallery.rglob("*") if p.is_file())
    if end["type"] == "rejected":
        assert end["reason"] == "shutdown"
        assert files == []
    else:
        png = Path(end["path"]).relative_to(gallery)
        assert files == [png.with_suffix(".json"), png]
        with Image.open(gallery / png) as picture:
            picture.load()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def temps(created: list[Path]) -> list[Path]:
    return [p for p in created if p.parent.name == ".tmp"]


def pngs_linked(created: list[Path]) -> list[Path]:
    return [p for p in created if p.suffix == ".png" and p.parent.name != ".tmp"]


# When to kill: the writer stores each file through a temp file in .tmp/, the sidecar
# first, then the PNG, the commit marker, linked into place once whole and synced.
KILL_POINTS: dict[str, Callable[[list[Path]], bool]] = {
    "sidecar temp created": lambda created: len(temps(created)) == 1,
    "png temp created": lambda created: len(temps(created)) == 2,
    "png linked into the gallery": lambda created: len(pngs_linked(created)) == 1,
}


@dataclass
class Killed:
    """A `speech2image generate` SIGKILLed at a point of its write (see KILL_POINTS)."""

    pid: int
    returncode: int | None
    created: list[Path]  # what it created in the gallery, in order, up to the kill
    left: dict[str, bytes]  # its files still in .tmp/ once it was dead: name -> content


def kill_while_writing(config: Path, gallery: Path, point: str) -> Killed:
    """SIGKILL `generate` the instant inotify reports the point's file in the gallery."""
    tmp = gallery / ".tmp"
    tmp.mkdir(parents=True)  # to watch it from the start; prepare() accepts it
    with CreateWatch(gallery) as watch:
        process = subprocess.Popen(
            [*CLI, "generate", "--config", str(config), "--seed", "7", "a red fox in the snow"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        created = watch.kill_when(process, KILL_POINTS[point], timeout=120)
        returncode = process.wait(timeout=30)
    mine = sorted(tmp.glob(f"{process.pid}-*"))
    return Killed(process.pid, returncode, created, {p.name: p.read_bytes() for p in mine})


def is_whole_png(png: Path) -> bool:
    try:
        with Image.open(png) as picture:
            picture.verify()  # every chunk's CRC, up to IEND
        with Image.open(png) as picture:
            picture.load()  # every pixel decodes
    except (OSError, SyntaxError):
        return False
    return True


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_while_writing_leaves_no_partial_png(
    tmp_path: Path, config_file: ConfigFile, point: str
) -> None:
    """SIGKILL mid-write: the gallery holds whole files or none, never a PNG without its
    sidecar, and the dead writer's temp file goes at the next writer's start.

    512x512 noise makes a PNG of hundreds of KB: its write and fsync are a wide target.
    """
    size = "[image]\nwidth = 512\nheight = 512\nsteps = 1\n"
    tries = []
    for attempt in range(1, 4):  # a kill can land just after a temp file is removed
        gallery = tmp_path / f"gallery-{attempt}"
        config = config_file(f'{size}[gallery]\ndir = "{gallery}"\n')
        tries.append(killed := kill_while_writing(config, gallery, point))
        if killed.left or point == "png linked into the gallery":
            break

    # The precondition: killed at the point, with the file it was writing (if any) in .tmp/.
    assert killed.returncode == -signal.SIGKILL, tries
    assert KILL_POINTS[point](killed.created), tries
    assert all(p.name.startswith(f"{killed.pid}-") for p in temps(killed.created)), tries
    if point == "sidecar temp created":
        assert list(killed.left) == [temps(killed.created)[0].name], tries
        data = killed.left[temps(killed.created)[0].name]
        assert data[:1] in (b"", b"{"), data[:40]  # JSON text, whole or cut anywhere
    if point == "png temp created":
        assert list(killed.left) == [temps(killed.created)[1].name], tries
        data = killed.left[temps(killed.created)[1].name]
        assert data[:8] == PNG_SIGNATURE[: len(data)], data[:40]  # PNG bytes, or a cut

    # The outcome: outside .tmp/, every file is whole, and no PNG lacks its sidecar.
    stored = sorted(p for p in gallery.rglob("*") if p.is_file() and ".tmp" not in p.parts)
    sidecars = [p for p in stored if p.suffix == ".json"]
    assert stored == sorted([*sidecars, *pngs(gallery)]), stored
    for sidecar in sidecars:
        assert json.loads(sidecar.read_bytes())["prompt"] == "a red fox in the snow"
    if point == "sidecar temp created":
        assert pngs(gallery) == [], stored  # the PNG's turn never came
        assert len(sidecars) <= 1, stored  # linked only if killed before its cleanup
    if point == "png temp created":
        (sidecar,) = sidecars  # stored first
        # The PNG is there only if the kill fell between its link and the cleanup.
        assert pngs(gallery) in ([], [sidecar.with_suffix(".png")]), stored
    if point == "png linked into the gallery":
        (png,) = pngs(gallery)
        assert pngs_linked(killed.created) == [png]
        assert [p.with_suffix(".png") for p in sidecars] == [png], stored
    for png in pngs(gallery):
        assert is_whole_png(png), png

    # The next writer to start removes what the dead one left, and only that.
    GalleryWriter(gallery).prepare()
    assert list((gallery / ".tmp").iterdir()) == []
    assert sorted(p for p in gallery.rglob("*") if p.is_file()) == stored
