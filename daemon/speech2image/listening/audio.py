"""Audio sources: everything after this module is 16 kHz mono int16 in 80 ms frames.

Devices and files come at whatever rate, width and channel count they have; the
source downmixes, resamples with soxr (a real anti-aliasing filter, streaming, so a
long file or an endless microphone never has to be held in memory) and cuts exact
1280-sample frames. Nothing downstream knows about devices. Files are here; the
microphone, which alone needs PortAudio, is in :mod:`.microphone`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..pcm import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, Frame
from ..request import RequestSource

log = logging.getLogger(__name__)

FILE_FORMATS = "WAV, FLAC, OGG/Vorbis, MP3 (anything libsndfile reads)"
Block = npt.NDArray[np.float32]


class AudioError(Exception):
    """An input that cannot be used (missing file, unknown device); the message says which."""


class AudioSource(Protocol):
    """Yields 80 ms frames of 16 kHz mono int16 until the input ends or ``close()``."""

    name: str  # the device or file, as events and the sidecar name it
    kind: RequestSource  # what a request heard from it says it came from

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    @property
    def dropped_frames(self) -> int:
        """Frames lost because listening fell behind (the capture queue was full)."""
        ...

    @property
    def overflows(self) -> int:
        """Times the audio driver reported lost input before we saw it."""
        ...


class FrameAssembler:
    """Turns float blocks at any rate and channel count into exact 16 kHz int16 frames."""

    def __init__(self, in_rate: int) -> None:
        self._resampler: Any = None
        if in_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(in_rate, SAMPLE_RATE, 1, dtype="float32")
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, block: Block, last: bool = False) -> list[Frame]:
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last)
        samples = np.concatenate([self._pending, mono])
        usable = len(samples) - len(samples) % FRAME_SAMPLES
        if last and usable < len(samples):
            samples = np.pad(samples, (0, FRAME_SAMPLES - len(samples) % FRAME_SAMPLES))
            usable = len(samples)
        self._pending = samples[usable:]
        return [to_int16(samples[i : i + FRAME_SAMPLES]) for i in range(0, usable, FRAME_SAMPLES)]


def to_int16(samples: npt.NDArray[np.float32]) -> Frame:
    scaled = np.clip(np.round(samples * 32768.0), -32768, 32767)
    return scaled.astype(np.int16)


def resample(samples: npt.NDArray[np.floating[Any]], in_rate: int) -> npt.NDArray[np.float32]:
    """Whole-array resampling to 16 kHz (same filter as the streaming path)."""
    import soxr

    mono = np.asarray(samples, dtype=np.float32)
    if in_rate == SAMPLE_RATE:
        return mono
    return np.asarray(soxr.resample(mono, in_rate, SAMPLE_RATE), dtype=np.float32)


class FileSource:
    """A sound file as if it were a microphone: fast by default, or paced in real time."""

    BLOCK_SECONDS = 0.5

    def __init__(self, path: str | Path, realtime: bool = False) -> None:
        import soundfile

        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.kind: RequestSource = "file"
        self.realtime = realtime
        self._closed = threading.Event()
        if not self.path.is_file():
            raise AudioError(f"audio file not found: {self.path}")
        try:
            self._file = soundfile.SoundFile(str(self.path))
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise AudioError(
                f"cannot decode {self.path}: {exc}; supported formats: {FILE_FORMATS}"
            ) from exc
        self.samplerate = int(self._file.samplerate)

    @property
    def dropped_frames(self) -> int:
        return 0

    @property
    def overflows(self) -> int:
        return 0

    def frames(self) -> Iterator[Frame]:
        assembler = FrameAssembler(self.samplerate)
        block_len = max(1, int(self.samplerate * self.BLOCK_SECONDS))
        started, sent = time.monotonic(), 0
        with self._file:
            while not self._closed.is_set():
                block = self._file.read(block_len, dtype="float32", always_2d=True)
                last = len(block) < block_len
                for frame in assembler.push(block, last=last):
                    if self.realtime:
                        self._pace(started, sent)
                    if self._closed.is_set():
                        return
                    sent += 1
                    yield frame
                if last:
                    return

    def _pace(self, started: float, sent: int) -> None:
        delay = started + sent * FRAME_SECONDS - time.monotonic()
        if delay > 0:
            self._closed.wait(delay)

    def close(self) -> None:
        self._closed.set()


def read_audio(path: str | Path) -> Frame:
    """A whole file as one 16 kHz mono int16 array (for tests and tools)."""
    frames = list(FileSource(path).frames())
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


def lost_audio(before: tuple[int, int], now: tuple[int, int]) -> str:
    """What a source's (dropped frames, overflows) counters going up means, in words."""
    dropped, overflows = now[0] - before[0], now[1] - before[1]
    if dropped:
        return f"dropped {dropped} audio frames ({now[0]} in total): listening fell behind"
    return f"the audio driver lost input {overflows} time(s) ({now[1]} in total)"
