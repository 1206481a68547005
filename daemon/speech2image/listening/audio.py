"""Audio sources: everything after this module is 16 kHz mono int16 in 80 ms frames.

Devices and files come at whatever rate, width and channel count they have; the
source downmixes, resamples with soxr (a real anti-aliasing filter, streaming, so a
long file or an endless microphone never has to be held in memory) and cuts exact
1280-sample frames. Nothing downstream knows about devices.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..config import AudioConfig
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


ErrorReporter = Callable[[str], None]
ResumeReporter = Callable[[], None]


class MicSource:
    """A sounddevice input stream that survives the device going away.

    The PortAudio callback only copies the block into a bounded queue: it never
    blocks, logs or allocates more than that copy. When the queue is full the block
    is dropped and counted (listening fell behind); the count is reported.
    A stream that errors, finishes or stops delivering audio is reopened with
    exponential backoff, and listening resumes when the device is back.
    """

    # No audio for this long means the device is gone (the first block can be ~2 s late).
    STALL_SECONDS = 5.0

    def __init__(
        self, config: AudioConfig, on_error: ErrorReporter, on_resumed: ResumeReporter
    ) -> None:
        self.config = config
        self._on_error = on_error
        self._on_resumed = on_resumed
        self._closed = threading.Event()
        self._dropped = 0
        self._overflows = 0
        self._stream: Any = None
        self._queue: queue.Queue[Block] = queue.Queue(maxsize=1)
        self._failed = threading.Event()
        self.device_index, self.samplerate = resolve_input(config)
        self.name = f"mic:{describe_device(self.device_index)}"
        self.kind: RequestSource = "microphone"

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def overflows(self) -> int:
        return self._overflows

    def frames(self) -> Iterator[Frame]:
        delay, interrupted = 0.5, False
        while not self._closed.is_set():
            try:
                self._open()
            except AudioError as exc:
                self._report(f"cannot open the microphone: {exc}; retrying in {delay:.1f} s")
                self._closed.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_delay)
                _refresh_portaudio()
                continue
            if interrupted:
                self._on_resumed()
            delay, interrupted = 0.5, True
            yield from self._read_until_failure()
            self._abort()
            if not self._closed.is_set():
                self._report("the microphone stopped delivering audio; reopening it")
                _refresh_portaudio()

    def _read_until_failure(self) -> Iterator[Frame]:
        assembler = FrameAssembler(self.samplerate)
        last_audio = time.monotonic()
        while not self._closed.is_set() and not self._failed.is_set():
            try:
                block = self._queue.get(timeout=0.25)
            except queue.Empty:
                if time.monotonic() - last_audio > self.STALL_SECONDS:
                    return
                continue
            last_audio = time.monotonic()
            yield from assembler.push(block)

    def _open(self) -> None:
        import sounddevice as sd

        blocksize = int(self.samplerate * FRAME_SECONDS)
        depth = max(2, int(self.config.queue_seconds / FRAME_SECONDS))
        self._queue = queue.Queue(maxsize=depth)
        self._failed.clear()
        try:
            self.device_index, self.samplerate = resolve_input(self.config)
            stream = sd.InputStream(
                device=self.device_index,
                channels=1,
                samplerate=self.samplerate,
                dtype="float32",
                blocksize=blocksize,
                callback=self._callback,
                finished_callback=self._failed.set,
            )
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(str(exc)) from exc
        self._stream = stream
        log.info("listening on %s at %d Hz", describe_device(self.device_index), self.samplerate)

    def _callback(self, indata: Block, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self._overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self._dropped += max(1, round(frames / (self.samplerate * FRAME_SECONDS)))

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        self._on_error(message)

    def _abort(self) -> None:
        """abort(), not stop(): stop() waits for buffers and can hang on a dead device."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        closer = threading.Thread(target=_abort_and_close, args=(stream,), daemon=True)
        closer.start()
        closer.join(timeout=2.0)

    def close(self) -> None:
        self._closed.set()
        self._abort()


def _abort_and_close(stream: Any) -> None:
    try:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)
    except Exception:  # a dying device may fail in any way; we are done with it
        log.debug("closing the audio stream failed", exc_info=True)


def _refresh_portaudio() -> None:
    """PortAudio lists devices once at initialisation; re-list so a replugged one is seen."""
    import sounddevice as sd

    try:
        sd._terminate()
        sd._initialize()
    except Exception:  # best effort: the next open reports the real error
        log.debug("re-initialising PortAudio failed", exc_info=True)


def input_devices() -> list[dict[str, Any]]:
    import sounddevice as sd

    return [dict(d) for d in sd.query_devices() if d["max_input_channels"] > 0]


def describe_device(index: int) -> str:
    import sounddevice as sd

    info = sd.query_devices(index)
    return f"#{index} {info['name']}"


def resolve_input(config: AudioConfig) -> tuple[int, int]:
    """The configured device (default, index or name substring) and a rate it accepts."""
    import sounddevice as sd

    devices = input_devices()
    if not devices:
        raise AudioError("no audio input devices found (is a microphone or audio server there?)")
    index = _pick_device(config.device, devices, sd.default.device[0])
    return index, _pick_rate(index, config.samplerate)


def _pick_device(wanted: str | int, devices: list[dict[str, Any]], default: int) -> int:
    listing = "; ".join(f"#{d['index']} {d['name']}" for d in devices)
    indexes = [int(d["index"]) for d in devices]
    if wanted == "":
        if default in indexes:
            return default
        return indexes[0]
    if isinstance(wanted, int):
        if wanted in indexes:
            return wanted
        raise AudioError(f"[audio] device = {wanted} is not an input device; inputs: {listing}")
    matches = [int(d["index"]) for d in devices if wanted.lower() in str(d["name"]).lower()]
    if not matches:
        raise AudioError(f"[audio] device = {wanted!r} matches no input device; inputs: {listing}")
    return matches[0]


def _pick_rate(index: int, configured: int) -> int:
    """16 kHz when the device takes it (no resampling); else its own default rate."""
    import sounddevice as sd

    candidates = [configured] if configured else [SAMPLE_RATE]
    for rate in candidates:
        try:
            sd.check_input_settings(device=index, channels=1, samplerate=rate, dtype="float32")
            return rate
        except sd.PortAudioError as exc:
            if configured:
                raise AudioError(f"[audio] samplerate = {rate} is not supported: {exc}") from exc
    return int(sd.query_devices(index)["default_samplerate"])
