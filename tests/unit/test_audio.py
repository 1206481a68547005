"""Audio sources: any rate, channel count, width and format becomes 16 kHz mono int16 frames."""

from __future__ import annotations

import importlib.abc
import sys
import threading
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from speech2image.config import AudioConfig
from speech2image.listening import microphone
from speech2image.listening.audio import AudioError, FileSource, FrameAssembler, read_audio
from speech2image.listening.microphone import (
    PORTAUDIO_MISSING,
    MicSource,
    PortAudioMissingError,
    import_sounddevice,
)
from speech2image.pcm import FRAME_SAMPLES, SAMPLE_RATE


def tones(
    rate: int, seconds: float, freqs: list[float], channels: int = 1
) -> npt.NDArray[np.float64]:
    t = np.arange(int(rate * seconds)) / rate
    mono = sum(0.3 * np.sin(2 * np.pi * f * t) for f in freqs)
    return np.repeat(np.asarray(mono)[:, None], channels, axis=1)


def level_db(samples: npt.NDArray[np.int16], freq: float) -> float:
    """Spectral level at ``freq`` relative to the strongest component."""
    windowed = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    bins = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    near = spectrum[np.abs(bins - freq) < 30].max()
    return float(20 * np.log10(near / spectrum.max()))


def test_44k1_stereo_24bit_keeps_content_and_filters_aliases(tmp_path: Path) -> None:
    path = tmp_path / "tones.flac"
    # 1 kHz belongs in the output; 12 kHz is above 16 kHz's Nyquist and would alias to 4 kHz.
    soundfile.write(path, tones(44100, 2.0, [1000, 12000], channels=2), 44100, subtype="PCM_24")
    audio = read_audio(path)
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= FRAME_SAMPLES
    assert len(audio) % FRAME_SAMPLES == 0
    assert level_db(audio, 1000) > -1
    assert level_db(audio, 4000) < -60
    assert level_db(audio, 12000 - SAMPLE_RATE / 2) < -60


def test_8k_upsampled_without_images(tmp_path: Path) -> None:
    path = tmp_path / "phone.wav"
    soundfile.write(path, tones(8000, 1.0, [500]), 8000, subtype="PCM_16")
    audio = read_audio(path)
    assert abs(len(audio) - SAMPLE_RATE) <= FRAME_SAMPLES
    assert level_db(audio, 500) > -1
    assert level_db(audio, 7500) < -60  # the mirror image of 500 Hz around 4 kHz


@pytest.mark.parametrize(
    ("name", "rate", "subtype"),
    [
        ("a.wav", 48000, "PCM_16"),
        ("b.wav", 22050, "FLOAT"),
        ("c.flac", 16000, "PCM_24"),
        ("d.ogg", 44100, "VORBIS"),
        ("e.mp3", 44100, "MPEG_LAYER_III"),
    ],
)
def test_formats(tmp_path: Path, name: str, rate: int, subtype: str) -> None:
    path = tmp_path / name
    soundfile.write(path, tones(rate, 1.0, [440]), rate, subtype=subtype)
    audio = read_audio(path)
    assert abs(len(audio) - SAMPLE_RATE) <= 2 * FRAME_SAMPLES  # mp3 adds encoder padding
    assert level_db(audio, 440) > -1
    assert 0.2 < np.abs(audio).max() / 32768 < 0.4


def test_16k_mono_int16_passes_through_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = rng.integers(-20000, 20000, size=5 * FRAME_SAMPLES, dtype=np.int16)
    path = tmp_path / "exact.wav"
    soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    assert np.array_equal(read_audio(path), samples)


def test_streaming_equals_whole_file_for_any_block_size() -> None:
    signal = tones(44100, 1.5, [300, 2500]).astype(np.float32)
    reference = np.concatenate(FrameAssembler(44100).push(signal, last=True))
    rng = np.random.default_rng(7)
    assembler = FrameAssembler(44100)
    frames, pos = [], 0
    while pos < len(signal):
        size = int(rng.integers(1, 5000))
        block = signal[pos : pos + size]
        pos += size
        frames += assembler.push(block, last=pos >= len(signal))
    assert all(len(f) == FRAME_SAMPLES for f in frames)
    streamed = np.concatenate(frames)
    assert len(streamed) == len(reference)
    assert np.max(np.abs(streamed.astype(int) - reference.astype(int))) <= 1


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"audio file not found: .*missing.wav"):
        FileSource(tmp_path / "missing.wav")


def test_undecodable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(AudioError, match=r"cannot decode .*notes.wav: .*supported formats: WAV"):
        FileSource(path)


def test_realtime_pacing_can_be_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(SAMPLE_RATE * 30, dtype=np.int16), SAMPLE_RATE)
    source = FileSource(path, realtime=True)
    frames = source.frames()
    next(frames)
    source.close()
    assert list(frames) == []


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """``import sounddevice`` fails as it does without libportaudio2."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


def test_missing_portaudio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(PortAudioMissingError) as caught:
        import_sounddevice()
    assert str(caught.value) == PORTAUDIO_MISSING
    assert "install libportaudio2" in PORTAUDIO_MISSING
    assert "sound files work without it (--input FILE)" in PORTAUDIO_MISSING
    with pytest.raises(PortAudioMissingError):  # the microphone source cannot even be named
        MicSource(AudioConfig(), on_error=print, on_resumed=print)


class FakeSoundDevice(types.SimpleNamespace):
    """Just enough of sounddevice for MicSource: a device list the test changes."""

    class PortAudioError(Exception):
        pass

    def __init__(self, names: list[str]) -> None:
        super().__init__(default=types.SimpleNamespace(device=[0, 0]))
        self.names = names
        self.streams: list[FakeStream] = []
        self.refreshes = 0

    def query_devices(self, index: int | None = None) -> Any:
        devices = [
            {"index": i, "name": n, "max_input_channels": 1, "default_samplerate": 48000.0}
            for i, n in enumerate(self.names)
        ]
        return devices if index is None else devices[index]

    def check_input_settings(self, **_settings: Any) -> None:
        pass

    def InputStream(self, **settings: Any) -> FakeStream:  # noqa: N802 (sounddevice's name)
        stream = FakeStream(settings)
        self.streams.append(stream)
        return stream

    def _terminate(self) -> None:
        self.refreshes += 1

    def _initialize(self) -> None:
        pass


class FakeStream:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.started = False

    def start(self) -> None:
        self.started = True

    def speak(self, block: npt.NDArray[np.float32]) -> None:
        status = types.SimpleNamespace(input_overflow=False)
        self.settings["callback"](block[:, None], len(block), None, status)

    def abort(self, ignore_errors: bool = True) -> None:
        pass

    def close(self, ignore_errors: bool = True) -> None:
        pass


def test_missing_microphone_is_waited_for_then_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reported once with the inputs there are, retried with backoff, opened when plugged in."""
    sd = FakeSoundDevice(["pulse", "default"])
    monkeypatch.setattr(microphone, "import_sounddevice", lambda: sd)
    errors: list[str] = []
    resumed = threading.Event()
    config = AudioConfig(device="USB Audio", reconnect_max_delay=0.5)
    source = MicSource(config, on_error=errors.append, on_resumed=resumed.set)
    assert source.name == "mic:'USB Audio' (waiting)"

    frames: list[npt.NDArray[np.int16]] = []
    reader = threading.Thread(target=lambda: frames.extend(source.frames()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while sd.refreshes < 3 and time.monotonic() < deadline:  # three tries, ~1.5 s
            time.sleep(0.05)
        assert sd.refreshes >= 3
        assert errors == [
            "cannot open the microphone: [audio] device = 'USB Audio' matches no input "
            "device (not plugged in?); inputs: #0 pulse; #1 default; retrying until it works"
        ]
        assert not sd.streams
        assert not resumed.is_set()

        sd.names.append("USB Audio Device")  # plugged in
        assert resumed.wait(5), "no `listening` after the device appeared"
        assert source.name == "mic:#2 USB Audio Device"
        assert (source.device_index, source.samplerate) == (2, SAMPLE_RATE)
        sd.streams[0].speak(np.full(FRAME_SAMPLES, 0.25, dtype=np.float32))
        while not frames and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        source.close()
        reader.join(5)
    assert not reader.is_alive()
    assert len(frames) == 1
    assert np.all(frames[0] == 8192)
    assert len(errors) == 1


def test_present_microphone_is_named_at_start_and_not_announced_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sd = FakeSoundDevice(["pulse", "default"])
    monkeypatch.setattr(microphone, "import_sounddevice", lambda: sd)
    resumed: list[bool] = []
    source = MicSource(AudioConfig(), on_error=print, on_resumed=lambda: resumed.append(True))
    assert source.name == "mic:#0 pulse"
    frames = source.frames()
    reader = threading.Thread(target=lambda: list(frames), daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while not sd.streams and time.monotonic() < deadline:
        time.sleep(0.02)
    source.close()
    reader.join(5)
    assert sd.streams
    assert sd.streams[0].settings["device"] == 0
    assert resumed == []
