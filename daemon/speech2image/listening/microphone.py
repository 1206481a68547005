"""The microphone: a PortAudio input stream that survives the device coming and going.

Only this module needs PortAudio (Debian's libportaudio2), through
:func:`import_sounddevice`, so a sound file never does. Where PulseAudio (or PipeWire's
PulseAudio layer) carries the stream, :mod:`.pulse_watch` says which source it really
records from, so a stream PulseAudio moved is named, and one moved to the monitor of
an output (the speakers) is closed instead of heard.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..config import AudioConfig
from ..pcm import FRAME_SECONDS, SAMPLE_RATE, Frame
from ..request import RequestSource
from .audio import AudioError, Block, FrameAssembler
from .pulse_watch import MonitorOnlyError, Tracker, default_input, mic_name

log = logging.getLogger(__name__)

PORTAUDIO_MISSING = (
    "PortAudio is not installed, so no microphone can be opened: install libportaudio2 "
    "(sudo apt-get install libportaudio2, or run make run); sound files work without it "
    "(--input FILE)"
)


class PortAudioMissingError(AudioError):
    """No libportaudio2: no microphone ever, so a setup error; sound files still work."""


def import_sounddevice() -> Any:
    """sounddevice, for microphones only (a sound file never needs PortAudio).

    Without libportaudio2 its import raises a bare OSError that says nothing about the fix.
    """
    try:
        import sounddevice
    except OSError as exc:
        log.debug("importing sounddevice failed: %s", exc)
        raise PortAudioMissingError(PORTAUDIO_MISSING) from exc
    return sounddevice


ErrorReporter = Callable[[str], None]
ResumeReporter = Callable[[], None]


class MicSource:
    """A sounddevice input stream that survives the device going away.

    The PortAudio callback only copies the block into a bounded queue: it never
    blocks, logs or allocates more than that copy. When the queue is full the block
    is dropped and counted (listening fell behind); the count is reported.
    A stream that errors, finishes or stops delivering audio is reopened with
    exponential backoff, and listening resumes when the device is back. The first
    open goes through the same loop: a USB microphone that is not plugged in yet is
    waited for (reported once as an error listing the inputs), not a start-up failure.

    Through PulseAudio, a :class:`Tracker` follows the stream: a move to another
    microphone is reported (a new ``listening``), a move to a monitor closes the
    stream and waits for a microphone as if the device were gone. No block is used
    before the watch has settled where it came from, so the speakers are never heard.
    """

    # No audio for this long means the device is gone (the first block can be ~2 s late).
    STALL_SECONDS = 5.0

    def __init__(
        self,
        config: AudioConfig,
        on_error: ErrorReporter,
        on_resumed: ResumeReporter,
        on_wait: ResumeReporter | None = None,
    ) -> None:
        """``on_wait`` is called at least every second while no audio comes (waiting for
        the device, or a stream stalling): a watchdog sees the loop alive."""
        self.config = config
        self._on_error = on_error
        self._on_wait = on_wait or (lambda: None)
        self._on_resumed = on_resumed
        self._closed = threading.Event()
        self._dropped = 0
        self._overflows = 0
        self._stream: Any = None
        self._queue: queue.Queue[Block] = queue.Queue(maxsize=1)
        self._failed = threading.Event()
        self.device_index, self.samplerate = -1, 0  # set when the device is opened
        self._pulse = Tracker()  # where PulseAudio records the open stream from
        self._failure = ""  # why the last stream was given up, when we know
        self._label = ""  # the PortAudio device, "#0 pulse"
        self._waiting: str | None = None
        self.name = self._first_name()
        self.kind: RequestSource = "microphone"

    def _first_name(self) -> str:
        """The start-up `listening` event names the device, or the one still awaited.

        ALSA's ``pulse`` and ``default`` record from PulseAudio's default source, so
        that is named too: the `listening` after the open then says the same.
        """
        try:
            index = _pick_input(self.config)
            label = describe_device(index)
        except PortAudioMissingError:
            raise
        except Exception:  # not there (yet): frames() reports why, and waits for it
            self._waiting = self._awaited()
            return f"mic:{_wanted(self.config.device)} (waiting)"
        predicted = default_input() if label.split(" ", 1)[1] in ("pulse", "default") else None
        return mic_name(label, predicted if predicted and not predicted.monitor else None)

    @property
    def source_description(self) -> str:
        """What PulseAudio says we listen on ("" when unknown: no PulseAudio)."""
        return self._pulse.input.label if self._pulse.input is not None else ""

    @property
    def waiting_for(self) -> str | None:
        """The microphone being waited for; None while listening.

        The lost microphone's name when PulseAudio offers only a monitor, else the
        configured device ("" for the default input).
        """
        return self._waiting

    @property
    def dropped_frames(self) -> int:
        return self._dropped

    @property
    def overflows(self) -> int:
        return self._overflows

    def frames(self) -> Iterator[Frame]:
        delay, announced, lost, last_error = 0.5, self.name, False, ""
        while not self._closed.is_set():
            try:
                self._open()
            except AudioError as exc:
                message = str(exc)
                if not isinstance(exc, MonitorOnlyError):
                    message = f"cannot open the microphone: {exc}; retrying until it works"
                self._waiting = self._awaited()  # before the report: status shows it
                if message != last_error:  # once, not per retry: it may stay away for hours
                    self._report(message)
                last_error = message
                log.info("retrying the microphone in %.1f s", delay)
                self._pause(delay)
                delay = min(delay * 2, self.config.reconnect_max_delay)
                lost = True
                _refresh_portaudio()
                continue
            self._waiting = None
            if lost or self.name != announced:
                self._on_resumed()
            delay, announced, lost = 0.5, self.name, True
            yield from self._read_until_failure()
            self._abort()
            if not self._closed.is_set():
                last_error = (
                    self._failure or "the microphone stopped delivering audio; reopening it"
                )
                self._waiting = self._awaited()
                self._report(last_error)
                _refresh_portaudio()

    def _awaited(self) -> str:
        """The lost microphone's name when PulseAudio offered a monitor, else the device."""
        if self._pulse.on_monitor and self._pulse.last_mic:
            return self._pulse.last_mic
        device = self.config.device
        return f"#{device}" if isinstance(device, int) else device

    def _pause(self, seconds: float) -> None:
        """Waits between reopens in slices, so the watchdog hears from us meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._closed.is_set():
            self._on_wait()
            self._closed.wait(min(left, 1.0))

    def _read_until_failure(self) -> Iterator[Frame]:
        assembler = FrameAssembler(self.samplerate)
        last_audio = time.monotonic()
        self._failure = ""
        while not self._closed.is_set() and not self._failed.is_set():
            block: Block | None = None
            try:
                block = self._queue.get(timeout=0.25)
                last_audio = time.monotonic()
            except queue.Empty:
                self._on_wait()
                if time.monotonic() - last_audio > self.STALL_SECONDS:
                    return
            try:  # also between blocks: a move comes with a gap in the audio
                verdict = self._pulse.check()
            except MonitorOnlyError as exc:  # never heard: it would be the speakers
                self._failure = str(exc)
                return
            if verdict == "moved":  # reported from the listening thread, as always
                self.name = mic_name(self._label, self._pulse.input)
                self._on_resumed()
            if block is not None and verdict != "hold":  # hold: a move is being looked up
                yield from assembler.push(block)

    def _open(self) -> None:
        sd = import_sounddevice()
        depth = max(2, int(self.config.queue_seconds / FRAME_SECONDS))
        self._pulse.refuse_default_monitor()
        self._queue = queue.Queue(maxsize=depth)
        self._failed.clear()
        label = _wanted(self.config.device)
        try:
            index, rate = resolve_input(self.config)
            label = describe_device(index)
            self.device_index, self.samplerate = index, rate  # before the first callback
            stream = sd.InputStream(
                device=index,
                channels=1,
                samplerate=rate,
                dtype="float32",
                blocksize=int(rate * FRAME_SECONDS),
                callback=self._callback,
                finished_callback=self._failed.set,
            )
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioError(f"{label}: {exc}") from exc
        self._stream, self._label = stream, label
        try:
            self._pulse.follow()
        except MonitorOnlyError:
            self._abort()  # closed unread
            raise
        self.name = mic_name(label, self._pulse.input)
        log.info("listening on %s at %d Hz", self.name.removeprefix("mic:"), rate)

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
        self._pulse.stop()
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
    sd = import_sounddevice()
    try:
        sd._terminate()
        sd._initialize()
    except Exception:  # best effort: the next open reports the real error
        log.debug("re-initialising PortAudio failed", exc_info=True)


def input_devices() -> list[dict[str, Any]]:
    sd = import_sounddevice()
    return [dict(d) for d in sd.query_devices() if d["max_input_channels"] > 0]


def describe_device(index: int) -> str:
    sd = import_sounddevice()
    info = sd.query_devices(index)
    return f"#{index} {info['name']}"


def resolve_input(config: AudioConfig) -> tuple[int, int]:
    """The configured device (default, index or name substring) and a rate it accepts."""
    index = _pick_input(config)
    return index, _pick_rate(index, config.samplerate)


def _pick_input(config: AudioConfig) -> int:
    sd = import_sounddevice()
    devices = input_devices()
    if not devices:
        raise AudioError(
            f"no audio input devices found, so {_wanted(config.device)} is not there "
            "(is a microphone plugged in, or an audio server running?)"
        )
    return _pick_device(config.device, devices, sd.default.device[0])


def _wanted(device: str | int) -> str:
    """The configured device as messages and the waiting source name show it."""
    if device == "":
        return "default"
    return f"#{device}" if isinstance(device, int) else repr(device)


def _pick_device(wanted: str | int, devices: list[dict[str, Any]], default: int) -> int:
    listing = "; ".join(f"#{d['index']} {d['name']}" for d in devices)
    indexes = [int(d["index"]) for d in devices]
    if wanted == "":
        if default in indexes:
            return default
        return indexes[0]
    if isinstance(wanted, int):
        matches = [wanted] if wanted in indexes else []
    else:
        matches = [int(d["index"]) for d in devices if wanted.lower() in str(d["name"]).lower()]
    if not matches:
        raise AudioError(
            f"[audio] device = {wanted!r} matches no input device (not plugged in?); "
            f"inputs: {listing}"
        )
    return matches[0]


def _pick_rate(index: int, configured: int) -> int:
    """16 kHz when the device takes it (no resampling); else its own default rate."""
    sd = import_sounddevice()
    rate = configured or SAMPLE_RATE
    try:
        sd.check_input_settings(device=index, channels=1, samplerate=rate, dtype="float32")
        return rate
    except sd.PortAudioError as exc:
        if configured:
            raise AudioError(f"[audio] samplerate = {rate} is not supported: {exc}") from exc
    return int(sd.query_devices(index)["default_samplerate"])
