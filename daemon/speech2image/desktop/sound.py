"""The wake sound: a short chime at the wake word, so people know at once they were heard.

The tone is made here (no sound file to ship or lose) and played on the default
output. Playing must never hold up listening: PortAudio's open can take tens of
milliseconds, and the microphone's queue drops blocks the listening loop is late for,
so one worker thread owns every PortAudio call and :meth:`WakeSound.play` only wakes
it. What ``play`` returns is how much of the microphone's input the listener keeps
out of the utterance: the tone comes back through the microphone, and in the
utterance it would make Whisper hear a word or "beep", and the VAD hear speech.

A missing PortAudio, output device or audio server is normal on a headless box: one
WARNING, then the sound is off and ``play`` returns 0.0, retried at most every
:data:`RETRY_S` s. PortAudio is imported here, not through ``listening`` (a stage
may not import another), and only when a WakeSound is made: sound files never need it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RETRY_S = 60.0  # after a failure, play() is silent for this long before trying again
MARGIN_S = 0.15  # input buffering and timing jitter, on top of the measured delay
FIRST_DELAY_S = 0.2  # open + output latency assumed until a play has measured it
CLOSE_TIMEOUT_S = 2.0
NOTES_HZ = (1046.5, 1568.0)  # C6 then G6: a rising fifth, bright but not shrill
NOTE_S = 0.075
FADE_IN_S = 0.004  # a step from silence clicks; 4 ms is too short to hear as a fade
OFF_HINT = "set [feedback] sound = false to silence this"


def wake_tone(rate: int = 48000, volume: float = 0.3) -> npt.NDArray[np.float32]:
    """Two bell-like notes, ~150 ms, peaking at ``volume`` of full scale.

    Each note rises over a few milliseconds and decays exponentially, and the whole
    chime is faded to exact zero at both ends: a waveform that jumps from or to
    silence is heard as a click. The same arguments always give the same samples.
    """
    length = round(2 * NOTE_S * rate)
    t = np.arange(length, dtype=np.float64) / rate
    tone = np.zeros(length, dtype=np.float64)
    for i, hz in enumerate(NOTES_HZ):
        local = t - i * NOTE_S
        on = local >= 0
        decay = np.exp(-local[on] / (NOTE_S * 0.6))
        phase = 2 * np.pi * hz * local[on]
        tone[on] += decay * (np.sin(phase) + 0.2 * np.sin(2 * phase))  # a soft overtone
    fade_in = min(length, max(2, round(FADE_IN_S * rate)))
    tone[:fade_in] *= np.sin(np.linspace(0, np.pi / 2, fade_in)) ** 2
    tail = max(2, length // 4)
    tone[-tail:] *= np.cos(np.linspace(0, np.pi / 2, tail)) ** 2
    peak = float(np.max(np.abs(tone)))
    scale = volume / peak if peak > 0 else 0.0
    return (tone * scale).astype(np.float32)


class WakeSound:
    """Plays the tone on the default output without ever blocking listening.

    The output is opened once here (on the caller's thread, at start-up) to learn
    whether there is one and how late its sound comes out; each :meth:`play` then
    opens it afresh on the worker thread, so an audio server restarted in between
    is simply reached again.
    """

    def __init__(
        self,
        volume: float,
        output: str | int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._volume = volume
        self._output = output
        self._clock = clock
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._failed_at: float | None = None
        self._warned = False
        self._tone = wake_tone(volume=volume)
        self._rate = 48000
        self._delay_s = FIRST_DELAY_S
        self._thread: threading.Thread | None = None
        if volume > 0:  # at volume 0 there is nothing to hear, play or keep out
            self._attempt(probe=True)

    @property
    def working(self) -> bool:
        """Whether the last attempt to reach the output succeeded."""
        with self._lock:
            return self._failed_at is None

    def play(self) -> float:
        """Start the chime; the seconds of microphone input to keep out of the utterance.

        0.0 when the sound is off (it failed less than :data:`RETRY_S` s ago). A retry
        counts as a play: its tone may well reach the microphone.
        """
        now = self._clock()
        with self._lock:
            if self._closed or self._volume <= 0:
                return 0.0
            if self._failed_at is not None:
                if now - self._failed_at < RETRY_S:
                    return 0.0
                self._failed_at = now  # one retry per RETRY_S, however often we wake
            keep_out = len(self._tone) / self._rate + self._delay_s + MARGIN_S
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wake-sound", daemon=True)
                self._thread.start()
        self._wanted.set()
        return keep_out

    def close(self) -> None:
        """Stop the worker; a chime still playing is cut short after at most a few seconds."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wanted.set()
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                if self._closed:
                    return
            self._attempt(probe=False)

    def _attempt(self, probe: bool) -> None:
        """Open the output (and play the tone unless probing); record how it went."""
        started = self._clock()
        try:
            delay = self._open_and_play(started, probe)
        except Exception as exc:  # PortAudio raises many kinds; all mean "off"
            self._failed(exc)
            return
        with self._lock:
            back = self._failed_at is not None
            self._failed_at, self._delay_s = None, delay
            if back:
                self._warned = False  # a later outage is news again
        if back:
            log.info("wake sound is back on")

    def _open_and_play(self, started: float, probe: bool) -> float:
        """Seconds from the request to the tone leaving the speakers, measured."""
        sd = _import_sounddevice()
        info = sd.query_devices(self._output, "output")
        rate = int(info["default_samplerate"])
        if rate != self._rate:
            tone = wake_tone(rate, self._volume)
            with self._lock:
                self._rate, self._tone = rate, tone
        with sd.OutputStream(
            device=self._output, samplerate=rate, channels=1, dtype="float32", latency="low"
        ) as stream:
            delay = self._clock() - started + float(stream.latency)
            if not probe:
                stream.write(self._tone.reshape(-1, 1))
        return delay

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._failed_at = self._clock()
            warn, self._warned = not self._warned, True
        reason = _describe(exc)
        if warn:
            log.warning("wake sound is off: %s; %s", reason, OFF_HINT)
        else:
            log.debug("wake sound still off: %s", reason)


def _import_sounddevice() -> Any:
    """sounddevice; without libportaudio2 its import raises a bare OSError."""
    try:
        import sounddevice
    except OSError as exc:
        raise OSError(f"PortAudio is not installed (libportaudio2): {exc}") from exc
    return sounddevice


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
