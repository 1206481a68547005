"""Simulated rooms for the rooms benchmark: wyoming-satellites that speak on a schedule.

Each room is a Wyoming server built on the real ``wyoming`` library's
``AsyncTcpServer`` and ``AsyncEventHandler`` (what wyoming-satellite itself runs on),
behaving like wyoming-satellite 1.0.0 without a local wake word: its ``info`` names a
satellite with no version (so it answers no ping), ``run-satellite`` starts a
``run-pipeline`` from the wake stage and then a stream of 1024-sample
``audio-chunk``s that never ends. The stream is paced by the wall clock as a
microphone is: chunk k leaves when its last sample has been "recorded",
``(k + 1) * 64 ms`` after the stream began, so the daemon meets real time, not a
file read at full speed. The room hears a faint noise floor until the benchmark
tells it to say a request; it then notes when the last word ended (on the same
clock) and when the daemon's ``transcript`` or ``error`` came back.

Also here: the daemon they speak to, the real CLI as a child process whose events
file is read as it grows and whose CPU time is read from ``/proc``; and the pure
matching of what came back to what was said.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from wyoming.event import Event
from wyoming.info import Attribution, Info, Satellite
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from tests.support import concat, data_audio, silence

RATE = 16000
CHUNK = 1024  # wyoming-satellite's samples per chunk
CHUNK_S = CHUNK / RATE
NOISE_RMS = 30.0  # about -60 dBFS: a quiet room, not digital zero
NOISE_CHUNKS = 109  # ~7 s of it, looped
WINDOW_S = 0.01  # the energy window that finds where speech ends
QUIET_DB = 30.0  # a window this far below the loudest one is silence
POLL_S = 0.025  # how often the daemon's events file is read
TICK = os.sysconf("SC_CLK_TCK")
VOICES = ("en-us", "en+f3")
PROMPTS = 3  # tests/data/espeak/prompt_{1,2,3}_<voice>.wav

Audio = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Clip:
    """A spoken request: "hey jarvis", a pause, a prompt; and where its speech ends."""

    name: str
    audio: Audio
    speech_end_s: float  # from the clip's first sample to the end of the last word


def speech_end(audio: Audio, quiet_db: float = QUIET_DB) -> float:
    """Seconds from the start to the end of the last window within ``quiet_db`` of the
    loudest: the trailing silence espeak-ng leaves is not speech."""
    size = int(WINDOW_S * RATE)
    count = len(audio) // size
    windows = audio[: count * size].astype(np.float64).reshape(count, size)
    rms = np.sqrt(np.mean(windows**2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-quiet_db / 20))
    return float((loud[-1] + 1) * size / RATE)


def request_clips() -> list[Clip]:
    """Wake phrase, 0.4 s, prompt: two espeak-ng voices by three prompts."""
    clips = []
    for voice in VOICES:
        wake = data_audio(f"espeak/hey_jarvis_{voice}_160.wav")
        for number in range(1, PROMPTS + 1):
            audio = concat(wake, silence(0.4), data_audio(f"espeak/prompt_{number}_{voice}.wav"))
            clips.append(Clip(f"prompt {number} ({voice})", audio, speech_end(audio)))
    return clips


def schedule(
    duration_s: float, period_s: float, clip_s: Sequence[float], rng: random.Random
) -> list[tuple[float, int]]:
    """(start second, clip index) for one room: once every ``period_s`` from a random
    first offset, a random clip, each wholly said within ``duration_s``."""
    plan: list[tuple[float, int]] = []
    start = rng.uniform(0.0, period_s)
    while True:
        index = rng.randrange(len(clip_s))
        if start + clip_s[index] > duration_s:
            return plan
        plan.append((start, index))
        start += period_s


@dataclass(frozen=True)
class Said:
    """A request as the room said it; ``end`` is on the ``time.monotonic`` clock."""

    room: int
    clip: str
    end: float


@dataclass
class Ear:
    """What came back to one room, each with its ``time.monotonic``."""

    transcripts: list[tuple[float, str]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    runs: int = 0  # run-satellite received (connections that started streaming)


class Room:
    """One simulated wyoming-satellite on 127.0.0.1."""

    def __init__(self, number: int, seed: int) -> None:
        self.number = number
        self.said: list[Said] = []
        self.ear = Ear()
        self.late_s = 0.0  # the most a chunk left after its time: did we keep up?
        self.uri = ""
        self._server: AsyncTcpServer | None = None
        self._epoch: float | None = None  # time.monotonic of sample 0
        self._queued: list[tuple[int, Clip]] = []  # (first sample, clip), in order
        noise = np.random.default_rng(seed).normal(0.0, NOISE_RMS, NOISE_CHUNKS * CHUNK)
        self._noise = noise.astype(np.int16)

    async def start(self) -> None:
        server = AsyncTcpServer("127.0.0.1", 0)
        await server.start(lambda reader, writer: _Handler(reader, writer, self))
        bound = cast(asyncio.Server, server._server)  # the library keeps its socket there
        port = bound.sockets[0].getsockname()[1]
        self._server, self.uri = server, f"tcp://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()

    @property
    def streaming(self) -> bool:
        return self._epoch is not None

    def say(self, clip: Clip, at: float) -> None:
        """Say ``clip`` from ``at`` (``time.monotonic``, at least a chunk ahead)."""
        assert self._epoch is not None, "the room is not streaming yet"
        first = math.ceil((at - self._epoch) * RATE)
        self._queued.append((first, clip))
        self._queued.sort(key=lambda item: item[0])

    def chunk(self, index: int) -> bytes:
        """Chunk ``index`` of the microphone: noise, with any clip said over it."""
        start = index * CHUNK
        offset = start % len(self._noise)  # a whole number of chunks: never wraps
        samples = self._noise[offset : offset + CHUNK].astype(np.int32)
        for first, clip in list(self._queued):
            lo, hi = max(start, first), min(start + CHUNK, first + len(clip.audio))
            if lo < hi:
                samples[lo - start : hi - start] += clip.audio[lo - first : hi - first]
            end_sample = first + round(clip.speech_end_s * RATE)
            if start <= end_sample < start + CHUNK:  # the last word is in this chunk
                assert self._epoch is not None
                self.said.append(Said(self.number, clip.name, self._epoch + end_sample / RATE))
            if first + len(clip.audio) <= start + CHUNK:
                self._queued.remove((first, clip))
        return np.clip(samples, -32768, 32767).astype("<i2").tobytes()

    async def stream(self, handler: _Handler) -> None:
        """Chunks on the wall clock until the connection ends; a reconnection goes on
        from the current time (what was said meanwhile is lost, as with a real room)."""
        if self._epoch is None:
            self._epoch = time.monotonic()
        index = math.floor((time.monotonic() - self._epoch) / CHUNK_S)
        while True:
            due = self._epoch + (index + 1) * CHUNK_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.late_s = max(self.late_s, time.monotonic() - due)
            event = Event(
                "audio-chunk", {"rate": RATE, "width": 2, "channels": 1}, self.chunk(index)
            )
            try:
                await handler.write_event(event)
            except (ConnectionError, OSError):
                return  # the daemon went away; it connects again if it is still running
            index += 1


class _Handler(AsyncEventHandler):
    """One controlling connection, as wyoming-satellite 1.0.0 answers it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, room: Room
    ) -> None:
        super().__init__(reader, writer)
        self.room = room
        self._streamer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        with contextlib.suppress(ConnectionError):  # the daemon stopped mid-write
            await super().run()

    async def handle_event(self, event: Event) -> bool:
        now, kind = time.monotonic(), event.type
        if kind == "describe":
            name = f"room {self.room.number}"
            satellite = Satellite(
                name=name,
                attribution=Attribution(name="", url=""),
                installed=True,
                description=name,
                area=name,
                version=None,  # 1.0.0 says none
            )
            await self.write_event(Info(satellite=satellite).event())
        elif kind == "run-satellite" and self._streamer is None:
            self.room.ear.runs += 1
            run = RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.HANDLE)
            await self.write_event(run.event())
            self._streamer = asyncio.get_running_loop().create_task(self.room.stream(self))
        elif kind == "pause-satellite":
            await self._stop_streaming()
        elif kind == "transcript":
            self.room.ear.transcripts.append((now, str(event.data.get("text", ""))))
        elif kind == "error":
            self.room.ear.errors.append((now, str(event.data.get("code") or "error")))
        return True  # ping, detection and the rest: 1.0.0 answers none of them

    async def _stop_streaming(self) -> None:
        if self._streamer is not None:
            self._streamer.cancel()
            await asyncio.gather(self._streamer, return_exceptions=True)
            self._streamer = None

    async def disconnect(self) -> None:
        await self._stop_streaming()


# ------------------------------------------------------------------ the daemon


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds every core spent not idle, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Daemon:
    """``speech2image serve`` as a child; its events file read as it grows."""

    def __init__(self, config: Path, work: Path) -> None:
        self.events_path = work / "events.jsonl"
        self.events: list[tuple[float, dict[str, Any]]] = []  # (time.monotonic seen, event)
        self.serving = False
        self.log: list[str] = []  # its stderr
        command = [sys.executable, "-m", "speech2image.cli", "serve", "--config", str(config)]
        command += ["--uri", "tcp://127.0.0.1:0", "--events", str(self.events_path)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        self._stop = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        threading.Thread(target=self._tail, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            self.serving = self.serving or "wyoming: serving" in line

    def _tail(self) -> None:
        offset = 0
        while not self._stop.wait(POLL_S):
            try:
                with self.events_path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                continue
            whole = data[: data.rfind(b"\n") + 1]
            offset += len(whole)
            now = time.monotonic()
            self.events += [(now, json.loads(line)) for line in whole.splitlines() if line]

    def of(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in list(self.events) if e["type"] == kind]

    def problems(self) -> tuple[str, ...]:
        """Its WARNING and ERROR log lines."""
        return tuple(line.strip() for line in self.log if " WARNING " in line or " ERROR " in line)

    def cpu_s(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stop.set()


# ------------------------------------------------------------------ what came back (pure)


@dataclass(frozen=True)
class Outcome:
    """One request a room said, and what came of it (seconds from its last word)."""

    room: int
    clip: str
    transcript_s: float | None
    png_s: float | None
    error: str | None  # the code of an `error` event the room got instead


def replies_to(said: Sequence[float], replies: Sequence[float]) -> tuple[list[float | None], int]:
    """For each request (its last word's time, ascending), the time of the first reply
    after it and before the next request's end; and how many replies followed no
    request (answers to a wake word nobody said)."""
    out: list[float | None] = []
    used = 0
    for i, end in enumerate(said):
        until = said[i + 1] if i + 1 < len(said) else math.inf
        within = [t for t in replies if end < t <= until]
        out.append(within[0] if within else None)
        used += len(within)
    return out, len(replies) - used


def room_of(origin: str, uris: Sequence[str]) -> int | None:
    """The room a sidecar's ``origin`` ("satellite tcp://127.0.0.1:P") names."""
    for number, uri in enumerate(uris):
        if origin.endswith(uri):
            return number
    return None


def outcomes(rooms: Sequence[Room], pictures: dict[int, list[float]]) -> tuple[list[Outcome], int]:
    """Every request said, matched to its room's replies; and the stray replies."""
    result, stray = [], 0
    for room in rooms:
        said = sorted(room.said, key=lambda s: s.end)
        ends = [s.end for s in said]
        texts, stray_texts = replies_to(ends, [t for t, _ in room.ear.transcripts])
        errors, stray_errors = replies_to(ends, [t for t, _ in room.ear.errors])
        pngs, _ = replies_to(ends, pictures.get(room.number, []))
        stray += stray_texts + stray_errors
        codes = dict(room.ear.errors)
        for s, text_t, error_t, png_t in zip(said, texts, errors, pngs, strict=True):
            result.append(
                Outcome(
                    room.number,
                    s.clip,
                    None if text_t is None else text_t - s.end,
                    None if png_t is None else png_t - s.end,
                    None if error_t is None else codes[error_t],
                )
            )
    return result, stray


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1, inclusive method); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]
