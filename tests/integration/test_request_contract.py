"""Every request ends in exactly one `image` or `rejected`, and the gallery holds exactly
the pictures the `image` events name, through the whole daemon with real models.

One long file mixes accepted, toxic, silent and noisy requests while the generator
fails once; a `--realtime` run overfills the drawing queue.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from speech2image.config import load_config
from speech2image.daemon import Daemon
from speech2image.events import Event
from speech2image.gallery.writer import GalleryWriter
from speech2image.images.generate import GeneratedImage
from speech2image.listening.audio import FileSource
from speech2image.request import Request
from speech2image.stages import Stages
from speech2image.steps import ImageSource
from tests.support import Run, breathing, concat, data_audio, run_cli, silence, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # diffusers' schedulers call np.array() on tensors; numpy 2 deprecates how torch answers
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
ConfigFile = Callable[[str], Path]


class FailsOnce:
    """The real generator, except that its second call raises, as a CUDA error would."""

    def __init__(self, real: ImageSource) -> None:
        self._real = real
        self.calls = 0

    def generate(
        self,
        prompt: str,
        seed: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> GeneratedImage:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self._real.generate(prompt, seed, on_step)


class BreaksOnce:
    """The real gallery writer, except that its second write hits a bug (not a GalleryError)."""

    def __init__(self, real: GalleryWriter) -> None:
        self._real = real
        self.calls = 0

    def write(self, image: Any, request: Request) -> Path:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("a bug after 'accepted'")
        return self._real.write(image, request)


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        self.events.append(event.to_dict())


def pngs(root: Path) -> set[Path]:
    return {p for p in root.rglob("*.png") if ".tmp" not in p.parts}


def assert_contract(events: list[dict[str, Any]], gallery: Path) -> Counter[str]:
    """Exactly one terminal event per request, and the gallery equals the image events."""
    started = {e["id"] for e in events if e["type"] == "wake"}
    terminal = [e for e in events if e["type"] in ("image", "rejected")]
    ends = Counter(e["id"] for e in terminal)
    assert set(ends) == started, "a request without an end, or an end without a request"
    assert all(count == 1 for count in ends.values()), ends
    images = {Path(e["path"]) for e in events if e["type"] == "image"}
    assert pngs(gallery) == images
    for png in images:  # each picture has its record, for the request that made it
        sidecar = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        assert sidecar["image"] == png.name
        assert any(e["id"] == sidecar["id"] for e in terminal if e["type"] == "image")
    assert events[-1]["type"] == "stopped"
    return Counter(e["reason"] if e["type"] == "rejected" else "image" for e in terminal)


def test_mixed_file_with_a_failing_generator(tmp_path: Path, config_file: ConfigFile) -> None:
    gallery = tmp_path / "gallery"
    config = load_config(str(config_file(f'[gallery]\ndir = "{gallery}"\n')))
    stages = Stages.load(config)
    generator = FailsOnce(stages.generator)
    wake = data_audio("espeak/hey_jarvis_en-us_160.wav")
    benign = data_audio("espeak/hey_jarvis_benign_en+f3.wav")
    toxic = data_audio("espeak/hey_jarvis_toxic_en-us.wav")
    audio = concat(
        silence(0.5),
        *(benign, silence(2.0)),  # drawn
        *(benign, silence(2.0)),  # the generator fails: rejected: error
        *(toxic, silence(2.0)),  # rejected: toxic
        *(wake, silence(5.0)),  # nothing said: rejected: empty
        *(wake, silence(0.4), breathing(5.0), silence(4.5)),  # noise only: empty
        *(benign, silence(2.0)),  # drawn: the failure did not stop the worker
        *(benign, silence(2.0)),  # a bug in the writer: still rejected: error
        *(benign, silence(2.0)),  # drawn: neither did the bug
    )
    recorder = Recorder()
    writer = BreaksOnce(stages.writer)
    broken = dataclasses.replace(stages, generator=generator, writer=writer)
    daemon = Daemon(config, recorder, broken)  # type: ignore[arg-type]
    assert daemon.run(FileSource(write_wav(tmp_path / "mixed.wav", audio)), True) == 0

    outcomes = assert_contract(recorder.events, gallery)
    assert outcomes == {"image": 3, "error": 2, "toxic": 1, "empty": 2}
    errors = [e for e in recorder.events if e["type"] == "error"]
    failed = [e for e in recorder.events if e["type"] == "rejected" and e["reason"] == "error"]
    assert [e["id"] for e in errors] == [e["id"] for e in failed]
    assert [e["stage"] for e in errors] == ["image", "daemon"]
    assert "illegal memory access" in failed[0]["detail"]
    assert "KeyError" in failed[1]["detail"]


def test_realtime_run_with_a_full_queue(tmp_path: Path, config_file: ConfigFile) -> None:
    """A microphone-paced file: requests that find the drawing queue full are `busy`."""
    gallery = tmp_path / "gallery"
    # A picture takes ~12 s here, requests come ~4 s apart: the third finds the first
    # still drawing and the second waiting in the queue of one.
    config = config_file(
        "[image]\nqueue = 1\nwidth = 768\nheight = 768\nsteps = 100\n"
        f'[gallery]\ndir = "{gallery}"\n'
    )
    request = data_audio("espeak/hey_jarvis_benign_en+f3.wav")
    audio = concat(silence(0.5), *[concat(request, silence(0.6)) for _ in range(4)], silence(1.0))
    wav = write_wav(tmp_path / "rt.wav", audio)
    result: Run = run_cli(
        ["run", "--config", str(config), "--input", str(wav), "--realtime"], timeout=280
    )
    assert result.returncode == 0, result.stderr
    outcomes = assert_contract(result.events, gallery)
    assert outcomes["busy"] >= 1, outcomes
    assert outcomes["image"] >= 2, outcomes  # the one drawing and the one queued
    busy = [e for e in result.events if e["type"] == "rejected" and e["reason"] == "busy"]
    accepted = {e["id"] for e in result.events if e["type"] == "accepted"}
    assert all(e["id"] in accepted for e in busy)  # refused after moderation, at the queue
