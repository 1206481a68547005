"""The microphone's faults against a real PulseAudio server: the real ``MicSource``,
PortAudio and ALSA's pulse plugin, with the fixture's virtual microphone.

* unplugged while other sources exist, PulseAudio moves the stream to the monitor of
  an output (the speakers): reported, and not one frame of the monitor is used;
* moved to another microphone: reported with the new source's name, and heard;
* the audio server not running at start, or killed and started again.

``MicSource`` is driven directly (no models to load), so every frame it yields can be
looked at. Deadlines only, no timing assertions.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from speech2image.config import AudioConfig
from speech2image.listening.microphone import MicSource
from speech2image.listening.pulse_watch import PA_INVALID_INDEX, is_monitor, ours
from speech2image.pcm import FRAME_SAMPLES, SAMPLE_RATE
from tests.e2e.pulse import (
    MIC_DESCRIPTION,
    TONE_DESCRIPTION,
    TONE_HZ,
    TONE_SOURCE,
    PulseServer,
    VirtualMic,
    reinit_portaudio,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

Frame = npt.NDArray[np.int16]
MONITOR = "Monitor of Null Output"  # PulseAudio's description of nullsink.monitor


def tone(seconds: float, hz: float = 1000.0) -> Frame:
    """A steady tone: while the microphone hears it, no frame of ours is all zeros."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def pitch(frame: Frame) -> float:
    """The strongest frequency in a frame, in Hz."""
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64)))
    return float(np.argmax(spectrum[1:]) + 1) * SAMPLE_RATE / FRAME_SAMPLES


class Recorder:
    """``MicSource.frames()`` in a thread; frames and reports in one ordered log.

    Entries are ``("frame", samples)``, ``("error", message)`` and
    ``("listening", source name)``, in the order the microphone produced them.
    """

    def __init__(self, config: AudioConfig) -> None:
        self.log: list[tuple[str, Any]] = []
        self._changed = threading.Condition()
        self.source = MicSource(
            config,
            on_error=lambda message: self._add("error", message),
            on_resumed=lambda: self._add("listening", self.source.name),
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for frame in self.source.frames():
            self._add("frame", frame)

    def _add(self, kind: str, value: Any) -> None:
        with self._changed:
            self.log.append((kind, value))
            self._changed.notify_all()

    def wait_for(
        self,
        kind: str,
        timeout: float,
        after: int = 0,
        match: Callable[[Any], bool] = lambda _: True,
    ) -> int:
        """Position of the first ``kind`` entry at or after ``after`` that matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i in range(after, len(self.log)):
                    if self.log[i][0] == kind and match(self.log[i][1]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    kinds = [k for k, _ in self.log[after:]]
                    raise AssertionError(f"no {kind!r} within {timeout} s after {after}: {kinds}")
                self._changed.wait(min(left, 0.1))

    def now(self) -> int:
        with self._changed:
            return len(self.log)

    def of(self, kind: str, start: int = 0, end: int | None = None) -> list[Any]:
        with self._changed:
            return [v for k, v in self.log[start:end] if k == kind]

    def close(self) -> None:
        self.source.close()
        self._thread.join(10)
        assert not self._thread.is_alive(), "frames() did not end after close()"


def heard(frame: Frame) -> bool:
    return bool(np.abs(frame.astype(np.int32)).max() > 1000)


def test_a_microphone_replaced_by_a_monitor_is_never_heard(
    pulse_server: PulseServer, virtual_mic: VirtualMic, pulse_env: dict[str, str]
) -> None:
    """PulseAudio moves the stream to nullsink.monitor, which PortAudio cannot tell."""
    recorder = Recorder(AudioConfig(device="pulse", reconnect_max_delay=1.0))
    try:
        assert re.fullmatch(rf"mic:#\d+ pulse \({MIC_DESCRIPTION}\)", recorder.source.name)
        recorder.wait_for("frame", timeout=15)  # open: what is fed now is recorded
        virtual_mic.feed(tone(60.0))
        recorder.wait_for("frame", timeout=15, match=heard)
        assert recorder.source.source_description == MIC_DESCRIPTION
        assert recorder.source.waiting_for is None

        unplugged = recorder.now()
        virtual_mic.unplug(fallback_source=True)
        gone = recorder.wait_for("error", timeout=15, after=unplugged)
        assert recorder.of("error", gone)[0] == (
            f"the microphone '{MIC_DESCRIPTION}' is gone and PulseAudio offered only "
            f"'{MONITOR}', the monitor of an output (it would hear the speakers); "
            "waiting for a microphone"
        )
        assert recorder.source.waiting_for == MIC_DESCRIPTION
        # The monitor delivers its zeros 0.1-2.5 s after the move (pulse.py); retries
        # every 0.5-1 s would open it again and again if that were how it waited.
        time.sleep(4.0)
        assert pulse_server.source_outputs() == [], "the monitor is not recorded from"

        replugged = recorder.now()
        virtual_mic.replug()
        back = recorder.wait_for("listening", timeout=20, after=replugged)
        assert re.fullmatch(rf"mic:#\d+ pulse \({MIC_DESCRIPTION}\)", recorder.log[back][1])
        recorder.wait_for("frame", timeout=15, after=back, match=heard)
        assert recorder.source.waiting_for is None
    finally:
        recorder.close()
    during = recorder.of("frame", unplugged, back)
    assert all(heard(frame) for frame in during), "a frame of the monitor was used"
    assert recorder.of("frame", gone, back) == []
    assert len(recorder.of("error")) == 1, "reported once, not at every retry"


def test_a_move_to_another_microphone_is_reported_and_heard(
    pulse_server: PulseServer, virtual_mic: VirtualMic, pulse_env: dict[str, str]
) -> None:
    module = pulse_server.add_tone_source()
    recorder = Recorder(AudioConfig(device="pulse"))
    try:
        recorder.wait_for("frame", timeout=15)
        streams = pulse_server.source_outputs()
        assert len(streams) == 1, streams
        assert recorder.of("listening") == []  # the name at start was already right

        moved = recorder.now()
        pulse_server.move_source_output(streams[0][0], TONE_SOURCE)
        at = recorder.wait_for("listening", timeout=15, after=moved)
        assert re.fullmatch(rf"mic:#\d+ pulse \({TONE_DESCRIPTION}\)", recorder.log[at][1])
        assert recorder.source.source_description == TONE_DESCRIPTION
        recorder.wait_for(
            "frame", timeout=15, after=at, match=lambda f: abs(pitch(f) - TONE_HZ) < 25
        )
    finally:
        recorder.close()
        pulse_server.unload_module(module)
    assert recorder.of("error") == []


@pytest.fixture
def pulse_workdir() -> Any:
    """A private server's directory, its socket unserved until a test starts one there."""
    workdir = PulseServer.new_workdir()
    servers: list[PulseServer] = []
    yield workdir, servers
    for server in servers:
        server.stop()


def test_an_audio_server_started_later_is_waited_for(
    tmp_path: Path, pulse_workdir: tuple[Path, list[PulseServer]]
) -> None:
    workdir, servers = pulse_workdir
    with reinit_portaudio(PulseServer.env_for(workdir)):
        recorder = Recorder(AudioConfig(reconnect_max_delay=1.0))
        try:
            assert recorder.source.name == "mic:default (waiting)"
            recorder.wait_for("error", timeout=15)
            assert "no audio input devices found" in recorder.of("error")[0]
            time.sleep(2.5)  # retried meanwhile: reported once, still waiting
            assert recorder.source.waiting_for == ""

            servers.append(PulseServer.start(tmp_path / "pulse", workdir=workdir))
            mic = VirtualMic(servers[0].fifo, server=servers[0])
            mic.start()
            try:
                back = recorder.wait_for("listening", timeout=20)
                # ALSA's `default` leads to PulseAudio only if the server answered when
                # PortAudio re-listed the devices; `pulse` always does. Either is right.
                assert re.fullmatch(
                    rf"mic:#\d+ (default|pulse) \({MIC_DESCRIPTION}\)", recorder.log[back][1]
                )
                mic.feed(tone(5.0))
                recorder.wait_for("frame", timeout=15, after=back, match=heard)
            finally:
                mic.stop()
        finally:
            recorder.close()
    assert len(recorder.of("error")) == 1


def test_an_audio_server_restart_is_survived(
    tmp_path: Path, pulse_workdir: tuple[Path, list[PulseServer]]
) -> None:
    workdir, servers = pulse_workdir
    server = PulseServer.start(tmp_path / "pulse", workdir=workdir)
    servers.append(server)
    mic = VirtualMic(server.fifo, server=server)
    mic.start()
    with reinit_portaudio(server.env):
        recorder = Recorder(AudioConfig(reconnect_max_delay=1.0))
        try:
            recorder.wait_for("frame", timeout=15)
            killed = recorder.now()
            server.kill()
            lost = recorder.wait_for("error", timeout=15, after=killed)

            server.relaunch()
            back = recorder.wait_for("listening", timeout=20, after=lost)
            assert re.fullmatch(
                rf"mic:#\d+ (default|pulse) \({MIC_DESCRIPTION}\)", recorder.log[back][1]
            )
            mic.feed(tone(5.0))
            recorder.wait_for("frame", timeout=15, after=back, match=heard)
        finally:
            recorder.close()
            mic.stop()
    assert recorder.of("error")[0] == "the microphone stopped delivering audio; reopening it"


def test_the_default_input_being_a_monitor_is_not_listened_to(
    pulse_server: PulseServer, virtual_mic: VirtualMic, pulse_env: dict[str, str]
) -> None:
    """No microphone at start, only a monitor as PulseAudio's default source."""
    virtual_mic.unplug(fallback_source=True)
    recorder = Recorder(AudioConfig(device="pulse", reconnect_max_delay=1.0))
    try:
        assert re.fullmatch(r"mic:#\d+ pulse", recorder.source.name)  # no monitor named
        recorder.wait_for("error", timeout=15)
        assert recorder.of("error") == [
            f"PulseAudio offered only '{MONITOR}', the monitor of an output (it would hear "
            "the speakers); waiting for a microphone"
        ]
        time.sleep(2.0)  # retried meanwhile
        assert pulse_server.source_outputs() == []
        virtual_mic.replug()
        back = recorder.wait_for("listening", timeout=20)
        virtual_mic.feed(tone(5.0))
        recorder.wait_for("frame", timeout=15, after=back, match=heard)
    finally:
        recorder.close()
    assert recorder.of("frame", 0, back) == [], "a frame of the monitor was used"
    assert len(recorder.of("error")) == 1


def test_without_pulseaudio_the_microphone_works_as_before(tmp_path: Path) -> None:
    """Plain ALSA, no server to follow: a PCM reading a raw file stands in for a card.

    ALSA's ``file`` plugin reads its ``infile`` on capture (with no clock of its own,
    so as fast as it is read); ``plug`` converts it to what PortAudio asks for.
    """
    raw = tmp_path / "tone.raw"
    raw.write_bytes(tone(30.0).astype("<i2").tobytes())
    conf = tmp_path / "filemic.conf"
    conf.write_text(
        "pcm.filemic {\n  type plug\n  slave {\n"
        f'    pcm {{ type file slave.pcm null file "/dev/null" infile "{raw}" format raw }}\n'
        f"    format S16_LE\n    rate {SAMPLE_RATE}\n    channels 1\n  }}\n}}\n",
        encoding="utf-8",
    )
    env = {
        "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}",
        "PULSE_SERVER": f"unix:{tmp_path / 'no-server.sock'}",
    }
    with reinit_portaudio(env):
        recorder = Recorder(AudioConfig(device="filemic"))
        try:
            recorder.wait_for("frame", timeout=15, match=heard)
            assert re.fullmatch(r"mic:#\d+ filemic", recorder.source.name)
            assert recorder.source.source_description == ""
        finally:
            recorder.close()
    assert recorder.of("error") == []


def test_our_stream_is_the_newest_this_process_opened() -> None:
    """PortAudio's device probing leaves older streams of ours; other programs record too."""

    def output(index: int, pid: int) -> SimpleNamespace:
        return SimpleNamespace(index=index, proplist={"application.process.id": str(pid)})

    outputs = [output(3, 42), output(7, 42), output(9, 1000)]
    assert ours(outputs, 42) is outputs[1]
    assert ours(outputs, 5) is None
    assert is_monitor("alsa_output.pci.analog-stereo.monitor", PA_INVALID_INDEX)  # PipeWire
    assert is_monitor("nullsink.monitor", 0)
    assert not is_monitor("alsa_input.usb-mic.mono-fallback", PA_INVALID_INDEX)
