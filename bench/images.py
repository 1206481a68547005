"""Image-stage benchmarks on this machine (CPU, the tiny random pipeline):

* pipeline overhead: from the `utterance` event to the PNG on disk, minus the time
  inside faster-whisper and inside the diffusers call: queue hand-offs, moderation,
  PNG encoding, fsync and rename;
* audio frames dropped while a long generation runs, through a real PulseAudio
  virtual microphone and the daemon's own capture path.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.corpus import TEST_DATA
from speech2image.config import parse_config
from speech2image.daemon import Daemon
from speech2image.events import Event, ImageWritten, Transcript
from speech2image.listening.audio import FileSource, read_audio
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pulse import PulseServer, VirtualMic
from tests.support import silence, write_wav


def tiny_model(folder: Path) -> Path:
    from tests.tinysd import build_tiny_pipeline

    return build_tiny_pipeline(folder / "tiny-sd")


class Clock:
    """An event sink that notes when each event of each request arrived."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[float, Event]] = {}

    def emit(self, event: Event) -> None:
        self.seen[(event.type, event.id or "")] = (time.perf_counter(), event)


@dataclass(frozen=True)
class OverheadRow:
    requests: int
    median_ms: float
    worst_ms: float


def request_audio(repeats: int) -> np.ndarray:
    """Wake phrase + prompt, then 4 s of silence so each finishes before the next."""
    request = read_audio(TEST_DATA / "espeak" / "hey_jarvis_benign_en+f3.wav")
    return np.concatenate([np.concatenate([request, silence(4.0)]) for _ in range(repeats)])


def pipeline_overhead(repeats: int = 6) -> OverheadRow:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = parse_config(
            {
                "image": {"model": str(tiny_model(root)), "width": 64, "height": 64, "steps": 2},
                "gallery": {"dir": str(root / "gallery")},
                "notify": {"enabled": False},
            },
            "bench",
        )
        wav = write_wav(root / "requests.wav", request_audio(repeats))
        clock = Clock()
        daemon = Daemon(config, clock)
        daemon.run(FileSource(wav, realtime=True))
        overheads = []
        for (kind, id_), (when, _) in clock.seen.items():
            if kind != "utterance":
                continue
            done, image = clock.seen[("image", id_)]
            _, transcript = clock.seen[("transcript", id_)]
            assert isinstance(image, ImageWritten)
            assert isinstance(transcript, Transcript)
            overheads.append((done - when - transcript.seconds - image.seconds) * 1000)
        daemon.close()
    return OverheadRow(len(overheads), statistics.median(overheads), max(overheads))


@dataclass(frozen=True)
class DropRow:
    generation_s: float
    images: int
    frames: int
    dropped: int


def dropped_frames_during_generation(steps: int = 40, size: int = 512) -> DropRow:
    """The daemon on a PulseAudio virtual mic while images take seconds each."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "bench.toml"
        config.write_text(
            f'[audio]\ndevice = "pulse"\n[image]\nmodel = "{tiny_model(root)}"\n'
            f"width = {size}\nheight = {size}\nsteps = {steps}\nqueue = 4\n"
            f'[gallery]\ndir = "{root / "gallery"}"\n[notify]\nenabled = false\n',
            encoding="utf-8",
        )
        server = PulseServer.start(root / "pulse")
        mic = VirtualMic(server.fifo, server=server)
        try:
            mic.start()
            return _record_with_mic(server, mic, config)
        finally:
            mic.stop()
            server.stop()


def _record_with_mic(server: PulseServer, mic: VirtualMic, config: Path) -> DropRow:
    daemon = DaemonProcess(["--config", str(config)], server.child_env())
    try:
        daemon.wait_for("listening", timeout=120)
        mic.feed(request_audio(3))
        for _ in range(3):
            daemon.wait_for("image", timeout=600)
    finally:
        daemon.terminate()
    stopped = daemon.events[-1]
    seconds = [e["seconds"] for e in daemon.of("image")]
    return DropRow(
        statistics.median(seconds), len(seconds), stopped["frames"], stopped["dropped_frames"]
    )
