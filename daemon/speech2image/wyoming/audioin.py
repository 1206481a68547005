"""Wyoming audio chunks of any rate, width and channel count as 16 kHz mono int16.

``wyoming.audio.AudioChunkConverter`` is not used: its resampler (audioop's
``ratecv``) has no anti-aliasing filter (a 12 kHz tone at 44.1 kHz comes out as a
4 kHz tone at 80 % of its level), and its stereo-to-mono adds the channels instead of
averaging them (a tone at 0.6 of full scale on both clips). Here channels are
averaged and soxr resamples, streaming, with a real filter, as the microphone path
does. Audio already at 16 kHz mono 16-bit passes through bit for bit.

Audio is capped as it arrives, so ten minutes of it cost no more than the cap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..pcm import SAMPLE_RATE, Frame

WIDTHS = (1, 2, 3, 4)  # bytes per sample; 1 is unsigned (as in WAV), the rest signed
MIN_RATE, MAX_RATE = 4000, 384000
MAX_CHANNELS = 8


class AudioRefusedError(Exception):
    """Audio the request cannot take; ``code`` goes into the ``error`` event."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


def check_format(rate: Any, width: Any, channels: Any) -> None:
    """Refuses a format that cannot be converted (or is a lie: a rate of 1 Hz)."""
    ok = (
        _is_int(rate)
        and MIN_RATE <= rate <= MAX_RATE
        and width in WIDTHS
        and _is_int(channels)
        and 1 <= channels <= MAX_CHANNELS
    )
    if not ok:
        raise AudioRefusedError(
            f"unsupported audio format: rate {rate!r}, width {width!r}, channels {channels!r}",
            "audio-format",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_pcm(audio: bytes, width: int, channels: int) -> npt.NDArray[np.float32]:
    """Interleaved little-endian PCM (whole frames) as mono floats in [-1, 1)."""
    if width == 1:
        samples = (np.frombuffer(audio, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        padded = np.zeros((len(audio) // 3, 4), dtype=np.uint8)
        padded[:, 1:] = np.frombuffer(audio, np.uint8).reshape(-1, 3)
        samples = (padded.view("<i4")[:, 0] >> 8).astype(np.float32) / float(1 << 23)
    else:
        kind = "<i2" if width == 2 else "<i4"
        scale = float(1 << (8 * width - 1))
        samples = np.frombuffer(audio, kind).astype(np.float32) / scale
    if channels == 1:
        return samples
    return np.asarray(samples.reshape(-1, channels).mean(axis=1), dtype=np.float32)


def to_int16(samples: npt.NDArray[np.float32]) -> Frame:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


class AudioIn:
    """One request's audio, converted chunk by chunk and capped at ``max_seconds``.

    A chunk may change the format mid-stream (the resampler restarts) or end
    mid-frame (the rest waits for the next chunk).
    """

    def __init__(self, max_seconds: float) -> None:
        self._max_seconds = max_seconds
        self._max_samples = int(max_seconds * SAMPLE_RATE)
        self._parts: list[Frame] = []
        self._samples = 0
        self._format: tuple[int, int, int] | None = None
        self._resampler: Any = None
        self._carry = b""

    @property
    def seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    def check(self, rate: Any, width: Any, channels: Any) -> None:
        check_format(rate, width, channels)

    def add(self, rate: Any, width: Any, channels: Any, audio: bytes) -> None:
        """Raises :class:`AudioRefusedError` for a bad format or audio past the cap."""
        check_format(rate, width, channels)
        if (rate, width, channels) != self._format:
            self._flush()
            self._format = (rate, width, channels)
            self._carry = b""
            if rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        data = self._carry + audio
        usable = len(data) - len(data) % (width * channels)
        self._carry = data[usable:]
        whole = data[:usable]
        if self._resampler is None and width == 2 and channels == 1:
            self._keep(np.frombuffer(whole, "<i2").astype(np.int16))
            return
        mono = decode_pcm(whole, width, channels)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        self._keep(to_int16(mono))

    def finish(self) -> Frame:
        """All of it, as one frame (the resampler's tail included)."""
        self._flush()
        if not self._parts:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._parts)

    def _flush(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self._resampler = None
            self._keep(to_int16(np.asarray(tail, dtype=np.float32)))

    def _keep(self, frame: Frame) -> None:
        if self._samples + len(frame) > self._max_samples:
            raise AudioRefusedError(f"audio longer than {self._max_seconds:g} s", "audio-too-long")
        if len(frame):
            self._parts.append(frame)
            self._samples += len(frame)
