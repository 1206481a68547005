"""Tests of the PulseAudio/virtual-mic fixtures themselves.

They prove that an unmodified ``sounddevice.InputStream`` records exactly the
samples fed into the virtual microphone -- in-process and in a subprocess like
the daemon -- and pin down what PortAudio does when the mic disappears, which
the daemon's reconnect logic relies on.
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from speech2image.listening.microphone import MicSource
from tests.e2e.pulse import PulseServer, VirtualMic

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

pytestmark = pytest.mark.e2e

RATE = 16000


def probe_signal(seed: int = 1234) -> npt.NDArray[np.int16]:
    """0.25 s seeded white noise + 0.25 s linear chirp, int16.

    Noise makes the cross-correlation peak unambiguous; the chirp is a
    human-recognisable marker when debugging a WAV dump.
    """
    rng = np.random.default_rng(seed)
    noise = rng.integers(-12000, 12000, RATE // 4, dtype=np.int16)
    t = np.arange(RATE // 4) / RATE
    chirp = (8000 * np.sin(2 * np.pi * (300 + 6000 * t) * t)).astype(np.int16)
    return np.concatenate([noise, chirp])


def locate(recorded: npt.NDArray[np.int16], ref: npt.NDArray[np.int16]) -> int:
    """Offset of ``ref`` in ``recorded`` by FFT cross-correlation."""
    assert recorded.size >= ref.size, f"recorded only {recorded.size} frames"
    n = int(2 ** np.ceil(np.log2(recorded.size + ref.size)))
    spec = np.fft.rfft(recorded.astype(np.float64), n)
    xc = np.fft.irfft(spec * np.conj(np.fft.rfft(ref.astype(np.float64), n)), n)
    return int(np.argmax(xc[: recorded.size - ref.size + 1]))


def assert_bit_exact(recorded: npt.NDArray[np.int16], ref: npt.NDArray[np.int16]) -> int:
    """Assert ``ref`` appears verbatim in ``recorded``, framed by silence."""
    off = locate(recorded, ref)
    got = recorded[off : off + ref.size]
    mismatches = int(np.count_nonzero(got != ref))
    assert mismatches == 0, f"{mismatches} of {ref.size} samples differ at offset {off}"
    assert not recorded[:off].any(), "expected silence before the fed audio"
    assert not recorded[off + ref.size :].any(), "expected silence after the fed audio"
    return off


class Recorder:
    """In-process callback recorder on device ``pulse`` (what the daemon uses)."""

    def __init__(self, device: str = "pulse") -> None:
        """Open (not start) a 16 kHz mono int16 input stream."""
        import sounddevice as sd

        self.chunks: list[npt.NDArray[np.int16]] = []
        self.first_cb: float | None = None
        self.finished = threading.Event()
        self.statuses: list[str] = []
        self.t_start = 0.0
        self.stream = sd.InputStream(
            device=device,
            samplerate=RATE,
            channels=1,
            dtype="int16",
            blocksize=320,
            callback=self._cb,
            finished_callback=self.finished.set,
        )

    def _cb(self, indata: npt.NDArray[np.int16], _frames: int, _t: Any, status: Any) -> None:
        if self.first_cb is None:
            self.first_cb = time.monotonic() - self.t_start
        if status:
            self.statuses.append(str(status))
        self.chunks.append(indata[:, 0].copy())

    def start(self, timeout: float = MicSource.STALL_SECONDS) -> float:
        """Start and wait for the first callback; return its delay in s.

        The daemon's microphone takes a stream silent for ``STALL_SECONDS`` for gone,
        so a first block later than that fails here.
        """
        self.t_start = time.monotonic()
        self.stream.start()
        deadline = self.t_start + timeout
        while self.first_cb is None:
            assert time.monotonic() < deadline, "no audio callback within timeout"
            time.sleep(0.005)
        return self.first_cb

    def close(self) -> npt.NDArray[np.int16]:
        """``abort()`` (``stop()`` can hang on an empty FIFO), close, return audio."""
        self.stream.abort()
        self.stream.close()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)

    def frames(self) -> int:
        """Frames received so far."""
        return sum(c.size for c in self.chunks)


def play(mic: VirtualMic, ref: npt.NDArray[np.int16]) -> None:
    """Feed ``ref`` in real time, then wait 0.2 s for its tail and some silence."""
    mic.feed(ref)
    mic.wait_done(timeout=5)
    time.sleep(0.2)


def record_while_fed(mic: VirtualMic, ref: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Record ``pulse`` in this process while ``mic`` plays ``ref``.

    PortAudio must not flag any block (overflow, underflow) on the way.
    """
    rec = Recorder("pulse")
    try:
        delay = rec.start()
        print(f"first callback after {delay * 1000:.1f} ms")
        play(mic, ref)
    finally:
        audio = rec.close()
    assert rec.statuses == []
    return audio


def test_device_listing_shows_pulse(pulse_server: PulseServer) -> None:
    """A fresh process with the env sees the ALSA ``pulse`` and ``default`` PCMs."""
    listing = pulse_server.device_listing()
    print(listing)
    assert " pulse, ALSA" in listing
    assert "default, ALSA" in listing


def test_in_process_recording_is_bit_exact(
    pulse_env: dict[str, str],
    virtual_mic: VirtualMic,
) -> None:
    """sounddevice in this process records exactly the fed samples."""
    ref = probe_signal()
    assert_bit_exact(record_while_fed(virtual_mic, ref), ref)


def test_audio_fed_while_nobody_records_never_reaches_the_next_recorder(
    pulse_server: PulseServer,
    pulse_env: dict[str, str],
) -> None:
    """PulseAudio leaves the FIFO unread while nobody records; the feeder empties it.

    Without that, 0.23 s of one test's tone once arrived ahead of the next test's probe.
    """
    if not pulse_server.mic_plugged:
        pulse_server.replug_mic()
    stale = probe_signal(seed=3)
    earlier = VirtualMic(pulse_server.fifo, server=pulse_server)
    earlier.start()
    try:
        earlier.feed(stale)
        earlier.wait_done(timeout=5)
        assert earlier.pending_bytes() >= stale.nbytes, "precondition: the FIFO kept the audio"
    finally:
        earlier.stop()
    assert earlier.pending_bytes() == 0

    ref = probe_signal(seed=4)
    later = VirtualMic(pulse_server.fifo, server=pulse_server)
    later.start()
    try:
        audio = record_while_fed(later, ref)
    finally:
        later.stop()
    assert_bit_exact(audio, ref)


_CHILD = r"""
import sys, time
import numpy as np
import sounddevice as sd  # imported AFTER PULSE_SERVER is in the environment
chunks = []
first = []
t0 = time.monotonic()
def cb(indata, frames, t, status):
    if not first:
        first.append(time.monotonic() - t0)
        print(f"READY {first[0]:.4f}", flush=True)
    chunks.append(indata[:, 0].copy())
s = sd.InputStream(device=sys.argv[2], samplerate=16000, channels=1,
                   dtype="int16", blocksize=320, callback=cb)
s.start()
time.sleep(float(sys.argv[3]))
s.abort(); s.close()
np.save(sys.argv[1], np.concatenate(chunks))
"""


def test_subprocess_default_device_is_bit_exact(
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
    tmp_path: Path,
) -> None:
    """A child process (like ``speech2image run``) records via ``default``."""
    script = tmp_path / "rec.py"
    script.write_text(_CHILD)
    out = tmp_path / "rec.npy"
    ref = probe_signal(seed=99)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "default", "1.2"],
        env=pulse_server.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "child never got an audio callback"
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + (proc.stderr.read() if proc.stderr else "")
        print(f"child first callback after {float(line.split()[1]) * 1000:.1f} ms")
        virtual_mic.feed(ref)
        virtual_mic.wait_done(timeout=5)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert_bit_exact(np.load(out), ref)


def test_hard_unplug_ends_stream_and_replug_works(
    pulse_env: dict[str, str],
    virtual_mic: VirtualMic,
) -> None:
    """No source left: the stream dies; opening fails until replug; then exact.

    This is the contract the daemon's reconnect-with-backoff relies on:
    ``finished_callback`` fires / ``stream.active`` goes False (callback
    mode), a blocking ``read()`` raises ``PortAudioError``, and re-opening
    raises ``PortAudioError`` until the device is back -- no PortAudio
    re-initialisation is needed, ``pulse`` stays in the device list.
    """
    import sounddevice as sd

    rec = Recorder("pulse")
    try:
        rec.start()
        virtual_mic.unplug()
        assert rec.finished.wait(2.0), "stream did not end after unplug"
        # finished_callback may run a moment *before* Pa_IsStreamActive()
        # turns false (seen ~1 in 20 runs), so poll instead of asserting once.
        deadline = time.monotonic() + 5.0  # a wait: it must end, not end quickly
        while rec.stream.active:
            assert time.monotonic() < deadline, "stream still active after unplug"
            time.sleep(0.005)
        assert rec.statuses == []  # no status flag is ever set
    finally:
        rec.close()

    with pytest.raises(sd.PortAudioError):
        sd.InputStream(device="pulse", samplerate=RATE, channels=1, dtype="int16")
    assert any(d["name"] == "pulse" for d in sd.query_devices())

    virtual_mic.replug()
    ref = probe_signal(seed=7)
    assert_bit_exact(record_while_fed(virtual_mic, ref), ref)


def test_soft_unplug_moves_stream_to_monitor_and_back(
    pulse_env: dict[str, str],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
) -> None:
    """Another source left: PulseAudio silently moves the stream (zeros, no error).

    After replug the stream follows the default source back to the mic
    without being reopened.
    """
    rec = Recorder("pulse")
    try:
        rec.start()
        virtual_mic.unplug(fallback_source=True)
        t_unplug = time.monotonic()
        n0 = rec.frames()
        while rec.frames() < n0 + RATE // 4:  # >= 0.25 s from the monitor
            assert time.monotonic() - t_unplug < MicSource.STALL_SECONDS, "no fallback audio"
            time.sleep(0.01)
        print(f"fallback audio flowing {time.monotonic() - t_unplug:.2f} s after unplug")
        assert rec.stream.active
        assert not rec.finished.is_set()
        virtual_mic.replug()
        mic_index = pulse_server.source_index()
        assert mic_index is not None
        deadline = time.monotonic() + 10  # a wait: it must move back, not quickly
        while not all(src == mic_index for _, src in pulse_server.source_outputs()):
            assert time.monotonic() < deadline, "stream did not move back to the mic"
            time.sleep(0.02)
        ref = probe_signal(seed=5)
        play(virtual_mic, ref)
    finally:
        audio = rec.close()
    assert rec.statuses == []
    off = locate(audio, ref)
    np.testing.assert_array_equal(audio[off : off + ref.size], ref)
