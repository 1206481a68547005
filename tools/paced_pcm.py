#!/usr/bin/env python3
"""A microphone made of a WAV file, for wyoming-satellite's ``--mic-command``.

Writes raw 16 kHz 16-bit mono PCM to stdout in 80 ms chunks, paced by the wall
clock as a real microphone delivers it, then silence until it is stopped (SIGTERM,
SIGINT, or the reader going away). ``sox file.wav -t raw -`` would deliver the whole
file at once and then end, which no microphone does: the satellite would stream
it faster than real time and then restart its "microphone".

``--after PATH`` sends silence until PATH exists, then the file: a test starts the
satellite, waits until it streams to its controller, then touches PATH, so no
word is spoken into a satellite nobody listens to yet.

Standard library only, so it runs under any ``python3`` (the satellite's own venv,
or none).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import os
import signal
import sys
import time
import wave
from typing import BinaryIO

RATE = 16000
CHUNK_SECONDS = 0.08
CHUNK_SAMPLES = int(RATE * CHUNK_SECONDS)


def read_pcm(path: str) -> bytes:
    """The WAV's audio as 16 kHz 16-bit mono little-endian PCM."""
    with wave.open(path, "rb") as wav:
        rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        raw = wav.readframes(wav.getnframes())
    samples = _to_int16(raw, width)
    if channels > 1:
        samples = [
            sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)
        ]
    if rate != RATE:
        samples = _resample(samples, rate)
    out = array.array("h", samples)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def _to_int16(raw: bytes, width: int) -> list[int]:
    if width == 1:  # unsigned 8-bit
        return [(b - 128) << 8 for b in raw]
    step = width
    return [
        int.from_bytes(raw[i : i + step], "little", signed=True) >> (8 * (step - 2))
        for i in range(0, len(raw) - step + 1, step)
    ]


def _resample(samples: list[int], rate: int) -> list[int]:
    """Linear interpolation: fine for speech fixtures, not for music."""
    count = int(len(samples) * RATE / rate)
    out = []
    for n in range(count):
        position = n * rate / RATE
        i = int(position)
        following = samples[min(i + 1, len(samples) - 1)]
        out.append(int(samples[i] + (following - samples[i]) * (position - i)))
    return out


def chunks(pcm: bytes) -> list[bytes]:
    size = CHUNK_SAMPLES * 2
    padded = pcm + bytes(-len(pcm) % size)
    return [padded[i : i + size] for i in range(0, len(padded), size)]


def play(pcm: bytes, after: str | None, out: BinaryIO) -> None:
    """Silence until ``after`` exists, the file, then silence: each chunk at its time."""
    silence = bytes(CHUNK_SAMPLES * 2)
    start = time.monotonic()
    sent = 0
    pending = chunks(pcm)
    while True:
        started = after is None or os.path.exists(after)
        chunk = pending.pop(0) if started and pending else silence
        out.write(chunk)
        out.flush()
        sent += 1
        delay = start + sent * CHUNK_SECONDS - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="the WAV file to speak")
    parser.add_argument("--after", help="send silence until this path exists")
    args = parser.parse_args()
    pcm = read_pcm(args.wav)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt, SystemExit):
        play(pcm, args.after, sys.stdout.buffer)
    # The reader is gone: point stdout at /dev/null so the exit flush cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
