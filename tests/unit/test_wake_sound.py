"""The wake sound: the tone itself, and a WakeSound that has no output to play on.

Playing on a real audio server is in tests/integration/test_wake_sound_kept_out.py.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from speech2image.desktop.sound import RETRY_S, WakeSound, wake_tone


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("volume", [0.05, 0.3, 1.0])
def test_tone_is_short_finite_and_peaks_at_the_volume(rate: int, volume: float) -> None:
    tone = wake_tone(rate, volume)
    assert tone.dtype == np.float32
    assert np.all(np.isfinite(tone))
    assert 0.1 <= len(tone) / rate <= 0.2
    assert float(np.max(np.abs(tone))) == pytest.approx(volume, rel=1e-4)


def test_tone_starts_and_ends_at_silence_with_no_click() -> None:
    tone = wake_tone(48000, 0.3).astype(np.float64)
    assert tone[0] == 0.0
    assert abs(tone[-1]) < 1e-6
    ms = 48  # samples per millisecond
    assert np.max(np.abs(tone[:ms])) < 0.3 * 0.5  # fades in over the first milliseconds
    assert np.max(np.abs(tone[-ms:])) < 0.3 * 0.05  # and out at the end
    # No step anywhere: adjacent samples differ by no more than a 1.6 kHz sine allows.
    assert np.max(np.abs(np.diff(tone))) < 0.3 * 2 * np.pi * 1568 * 1.3 / 48000


def test_tone_is_two_notes_the_second_higher() -> None:
    rate = 48000
    tone = wake_tone(rate, 0.3)
    half = len(tone) // 2

    def pitch(part: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
        return float(np.argmax(spectrum) * rate / len(part))

    first, second = pitch(tone[: half - 400]), pitch(tone[half + 400 :])
    assert 900 < first < 1200
    assert 1400 < second < 1700


def test_tone_is_deterministic() -> None:
    assert np.array_equal(wake_tone(), wake_tone())
    assert np.array_equal(wake_tone(16000, 0.2), wake_tone(16000, 0.2))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_missing_output_turns_the_sound_off_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    caplog.set_level(logging.DEBUG, logger="speech2image.desktop.sound")
    sound = WakeSound(0.3, output=9999, clock=clock)
    try:
        assert not sound.working
        plays = [sound.play() for _ in range(5)]
        clock.now += RETRY_S / 2
        plays.append(sound.play())
    finally:
        sound.close()
    assert plays == [0.0] * 6
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("wake sound is off: ")
    assert "set [feedback] sound = false to silence this" in warnings[0].getMessage()


def records(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(start)]


def wait_for(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    """The records starting with ``start``, once the worker thread has logged one."""
    deadline = time.monotonic() + 10
    while not (found := records(caplog, start)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


def test_a_missing_output_is_tried_again_once_a_minute_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    caplog.set_level(logging.DEBUG, logger="speech2image.desktop.sound")
    sound = WakeSound(0.3, output=9999, clock=clock)
    try:
        clock.now += RETRY_S + 1
        retried = sound.play()  # the retry plays, so its echo is kept out too
        assert retried > len(wake_tone()) / 48000
        retries = wait_for(caplog, "wake sound still off")  # the worker's attempt failed
        clock.now += RETRY_S / 2
        assert [sound.play() for _ in range(5)] == [0.0] * 5  # one retry a minute
    finally:
        sound.close()
    assert len(retries) == 1
    assert len(records(caplog, "wake sound still off")) == 1
    assert retries[0].levelno == logging.DEBUG
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_closed_sound_plays_nothing() -> None:
    sound = WakeSound(0.3, output=9999)
    sound.close()
    assert sound.play() == 0.0


def test_at_volume_zero_nothing_is_played_or_kept_out(caplog: pytest.LogCaptureFixture) -> None:
    sound = WakeSound(0.0, output=9999)  # a broken output is never even opened
    try:
        assert sound.play() == 0.0
    finally:
        sound.close()
    assert caplog.records == []
