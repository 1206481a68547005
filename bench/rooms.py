"""Many rooms, one daemon: N simulated wyoming-satellites driven by `speech2image serve`.

For each N the benchmark starts N rooms (``bench/rooms_peer.py``: Wyoming servers
on loopback that stream a quiet room in real time, as wyoming-satellite 1.0.0 does
without a wake word of its own) and one daemon, the real CLI in its own process,
with ``[wyoming] satellites`` naming them and the tiny image pipeline. The daemon
connects to every room and runs our wake word, end-pointer, Whisper, moderation
and drawing for each. Every room first streams only its noise floor (the idle
cost), then says a real request ("hey jarvis, <prompt>") once every 30 s from a
random offset. Timed on one clock in this process: from the end of the last word
to the room receiving its ``transcript``, and to the daemon's ``image`` event (the
PNG is in the gallery), read from its events file every 25 ms; the sidecar's
``origin`` names the room. CPU is the daemon's own (``/proc/PID/stat``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import rooms_peer as peer
from bench.rooms_peer import Clip, Daemon, Outcome, Room, quantile

PERIOD_S = 30.0  # each room says a request this often
SETTLE_S = 2.0  # after every room streams, before the idle window
DRAIN_S = 20.0  # after the last request, for the answers still on their way
READY_S = 240.0  # model loading and N listeners, on a busy 2-core machine


@dataclass(frozen=True)
class Plan:
    rooms: tuple[int, ...]
    speak_s: float
    idle_s: float


FULL = Plan(rooms=(1, 2, 4, 8, 16), speak_s=75.0, idle_s=10.0)
QUICK = Plan(rooms=(1, 2, 4), speak_s=40.0, idle_s=5.0)


@dataclass(frozen=True)
class Figures:
    """One run with N rooms."""

    rooms: int
    speak_s: float
    outcomes: tuple[Outcome, ...]
    idle_cores: float  # the daemon's CPU while every room streamed only noise
    busy: Cores  # every process's while they spoke
    whisper_s: tuple[float, ...]  # inside faster-whisper, per transcript
    diffusion_s: tuple[float, ...]  # inside the diffusers call, per image
    rejected: dict[str, int]  # the daemon's `rejected` events by reason
    stray: int  # replies that followed no request (a wake word heard in noise)
    warnings: tuple[str, ...]  # the daemon's WARNING and ERROR log lines
    late_s: float  # while they spoke, the most a chunk left after its time: did we keep up?


# ------------------------------------------------------------------ one run


def write_config(work: Path, model: Path, uris: Sequence[str]) -> Path:
    """The tests' tiny image model, a private gallery, a queue no room fills."""
    satellites = ", ".join(f'"{uri}"' for uri in uris)
    path = work / "rooms.toml"
    path.write_text(
        f'[image]\nmodel = "{model}"\nwidth = 64\nheight = 64\nsteps = 2\nqueue = 16\n\n'
        f'[gallery]\ndir = "{work / "gallery"}"\n\n[notify]\nenabled = false\n\n'
        f"[wyoming]\nsatellites = [{satellites}]\n",
        encoding="utf-8",
    )
    return path


def pictures_by_room(daemon: Daemon, uris: Sequence[str]) -> dict[int, list[float]]:
    """When each room's PNGs were announced, from the ``image`` events and sidecars."""
    found: dict[int, list[float]] = {}
    for seen, event in daemon.of("image"):
        sidecar = json.loads(Path(event["path"]).with_suffix(".json").read_text("utf-8"))
        number = peer.room_of(str(sidecar.get("origin", "")), uris)
        if number is not None:
            found.setdefault(number, []).append(seen)
    return found


async def wait_until(check: Callable[[], bool], timeout: float, what: str, daemon: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline or daemon.process.poll() is not None:
            tail = "".join(daemon.log[-20:])
            raise RuntimeError(f"rooms bench: not within {timeout:.0f} s: {what}\n{tail}")
        await asyncio.sleep(0.1)


def settled(rooms: Sequence[Room], daemon: Daemon) -> bool:
    """Every request answered, and every transcript has ended in a PNG or a refusal."""
    answered = all(
        len(room.ear.transcripts) + len(room.ear.errors) >= len(room.said) for room in rooms
    )
    ended = {e["id"] for kind in ("image", "rejected") for _, e in daemon.of(kind)}
    return answered and all(e["id"] in ended for _, e in daemon.of("transcript"))


@dataclass(frozen=True)
class Cores:
    """CPU over a window, in cores: the daemon, this process (the rooms), the rest."""

    daemon: float
    rooms: float
    others: float


async def cores_over(seconds: float, daemon: Daemon) -> Cores:
    def now() -> tuple[float, float, float, float]:
        own, busy = peer.own_cpu_seconds(), peer.machine_busy_seconds()
        return daemon.cpu_s(), own, busy, time.monotonic()

    d0, o0, m0, t0 = now()
    await asyncio.sleep(seconds)
    d1, o1, m1, t1 = now()
    span = t1 - t0
    return Cores((d1 - d0) / span, (o1 - o0) / span, (m1 - m0 - d1 + d0 - o1 + o0) / span)


def speak(rooms: Sequence[Room], clips: Sequence[Clip], plan: Plan) -> None:
    """Queue each room's requests for the speaking window (seeded by N: repeatable)."""
    rng = random.Random(len(rooms))
    lengths = [len(clip.audio) / peer.RATE for clip in clips]
    begin = time.monotonic() + 0.5
    for room in rooms:
        room.late_s = 0.0  # from here on, a late chunk is late speech
        for start, index in peer.schedule(plan.speak_s, PERIOD_S, lengths, rng):
            room.say(clips[index], begin + start)


async def run_rooms(count: int, plan: Plan, clips: Sequence[Clip], model: Path) -> Figures:
    rooms = [Room(number, seed=number) for number in range(count)]
    for room in rooms:
        await room.start()
    uris = [room.uri for room in rooms]
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp:
        work = Path(tmp)
        daemon = Daemon(write_config(work, model, uris), work)
        try:
            await wait_until(
                lambda: daemon.serving and all(room.streaming for room in rooms),
                READY_S,
                f"the daemon serving and streaming from {count} rooms",
                daemon,
            )
            await asyncio.sleep(SETTLE_S)
            idle = await cores_over(plan.idle_s, daemon)
            speak(rooms, clips, plan)
            busy = await cores_over(plan.speak_s + 0.5, daemon)
            late = max(room.late_s for room in rooms)
            deadline = time.monotonic() + DRAIN_S  # what has not come by then counts as lost
            while not settled(rooms, daemon) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            pictures = pictures_by_room(daemon, uris)
        finally:
            daemon.stop()
            for room in rooms:
                await room.stop()
        found, stray = peer.outcomes(rooms, pictures)
        rejected = Counter(str(e.get("reason")) for _, e in daemon.of("rejected"))
        return Figures(
            rooms=count,
            speak_s=plan.speak_s,
            outcomes=tuple(found),
            idle_cores=idle.daemon,
            busy=busy,
            whisper_s=tuple(float(e["seconds"]) for _, e in daemon.of("transcript")),
            diffusion_s=tuple(float(e["seconds"]) for _, e in daemon.of("image")),
            rejected=dict(rejected),
            stray=stray,
            warnings=daemon.problems(),
            late_s=late,
        )


def measure(quick: bool) -> list[Figures]:
    """Every N of the plan, each with a daemon of its own."""
    from tests.tinysd import build_tiny_pipeline

    plan = QUICK if quick else FULL
    clips = peer.request_clips()
    with tempfile.TemporaryDirectory(prefix="bench-rooms-model-") as tmp:
        model = build_tiny_pipeline(Path(tmp) / "tiny-sd")
        results = []
        for count in plan.rooms:
            print(f"bench: rooms: {count} ...", file=sys.stderr, flush=True)
            results.append(asyncio.run(run_rooms(count, plan, clips, model)))
        return results


# ------------------------------------------------------------------ the section

# Published, not measured here: sd-turbo, 512x512, 1 step, batch 1, on an
# A100-SXM4-80GB with ONNX Runtime CUDA (static shapes, CUDA graphs).
PUBLISHED_SD_TURBO_S = 0.0382
PUBLISHED_SOURCE = "https://huggingface.co/onnxruntime/sd-turbo"
ORT_BLOG = "https://huggingface.co/blog/sdxl_ort_inference"
LOAD = 0.5  # the share of a worker's time taken, at which a request waits s / 2 on average
EXPECTED_WARNING = "image generation runs on the CPU"  # true here, said once per daemon
NO_GPU = (
    "Not measured on a GPU: the `device` tool lent this task none, so sd-turbo was not "
    "timed here (`make bench-gpu` does that where there is one). Worked out instead, from "
    "the figures above and one published figure:"
)
FORMULA = (
    "One drawing worker serves every room. A request holds it for s = the model's time + "
    "the rest (moderation, hand-offs, the PNG and sidecar written). N rooms each asking "
    "once every P seconds keep it busy a share rho = N * s / P of the time; at rho = "
    f"{LOAD} a request waits on average s / 2 behind others (M/D/1), so **N <= {LOAD} * P / "
    "s**. The same holds for Whisper (one worker, its own s), and for listening, which "
    f"stays on the CPU with a GPU or without: **N <= {LOAD} * cores / (CPU per room, noise "
    "only)**."
)


def wrap(text: str, bullet: bool = False) -> str:
    """A paragraph (or a list item) wrapped as the rest of BENCHMARKS.md is."""
    if bullet:
        return textwrap.fill(text, 88, initial_indent="- ", subsequent_indent="  ")
    return textwrap.fill(text, 88)


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} s"


def _p50_p95(values: Sequence[float]) -> str:
    return f"{_s(quantile(values, 0.5))} / {_s(quantile(values, 0.95))}"


def _texts(f: Figures) -> list[float]:
    return [o.transcript_s for o in f.outcomes if o.transcript_s is not None]


def _pngs(f: Figures) -> list[float]:
    return [o.png_s for o in f.outcomes if o.png_s is not None]


def table(results: Sequence[Figures]) -> list[str]:
    lines = [
        "| rooms | said | transcripts | pictures | refused / no answer | per minute: said "
        "/ drawn | end of speech -> transcript p50 / p95 | -> PNG p50 / p95 | CPU per room: "
        "noise only / speaking |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in results:
        said, texts, pngs = len(f.outcomes), _texts(f), _pngs(f)
        refused = sum(o.error is not None for o in f.outcomes)
        silent = sum(o.transcript_s is None and o.error is None for o in f.outcomes)
        minutes = f.speak_s / 60
        lines.append(
            f"| {f.rooms} | {said} | {len(texts)} | {len(pngs)} | {refused} / {silent} "
            f"| {said / minutes:.1f} / {len(pngs) / minutes:.1f} | {_p50_p95(texts)} "
            f"| {_p50_p95(pngs)} | {f.idle_cores / f.rooms:.3f} / {f.busy.daemon / f.rooms:.3f} |"
        )
    return lines


def goal(results: Sequence[Figures]) -> str:
    by_rooms = {f.rooms: f for f in results}
    if 1 not in by_rooms or 8 not in by_rooms:
        return wrap(
            "Goal, p95 end of speech -> transcript at 8 rooms within 2x of 1 room: not run."
        )
    one, eight = _texts(by_rooms[1]), _texts(by_rooms[8])
    ratio = quantile(eight, 0.95) / quantile(one, 0.95)
    return wrap(
        "Goal, p95 end of speech -> transcript at 8 rooms within 2x of 1 room: "
        f"{'met' if ratio <= 2.0 else '**not met**'} ({_s(quantile(eight, 0.95))} against "
        f"{_s(quantile(one, 0.95))}: {ratio:.2f}x). One room said {len(one)} requests in its "
        f"run and eight rooms {len(eight)}: a p95 of so few is close to their worst."
    )


def notes(results: Sequence[Figures]) -> str:
    whisper = [s for f in results for s in f.whisper_s]
    rejected: Counter[str] = Counter()
    for f in results:
        rejected.update(f.rejected)
    warnings = [w for f in results for w in f.warnings if EXPECTED_WARNING not in w]
    for line in warnings:
        print(f"bench: rooms: the daemon logged: {line}", file=sys.stderr)
    refused = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items())) or "nothing"
    late = ", ".join(f"{f.late_s * 1000:.0f} ms ({f.rooms})" for f in results)
    others = ", ".join(f"{f.busy.others:.2f} ({f.rooms})" for f in results)
    biggest = max(results, key=lambda f: f.rooms)
    return wrap(
        "End of speech -> transcript includes, by design, the end-pointer's 0.7 s "
        "`silence_timeout` and up to one 64 ms chunk; faster-whisper itself took "
        f"{_p50_p95(whisper)} (p50 / p95). The daemon refused {refused}. Replies that "
        "followed no request (a wake word heard in the noise): "
        f"{sum(f.stray for f in results)}. Daemon warnings and errors, beyond the one that "
        f"images are drawn on the CPU: {len(warnings)}. The rooms share the machine with "
        f"the daemon: they used {biggest.busy.rooms:.2f} cores at {biggest.rooms} rooms, "
        f"and while they spoke their latest chunk left this late (rooms): {late}. Other "
        f"processes on the machine meanwhile used, in cores (rooms): {others}."
    )


def rooms_per_gpu(results: Sequence[Figures]) -> list[str]:
    """The arithmetic of rooms per GPU, from what was measured here and one published
    figure (this task had no GPU to time sd-turbo on)."""
    alone = min(results, key=lambda f: f.rooms)  # the times of a request nothing delays
    diffusion = statistics.median(alone.diffusion_s)
    spans = [
        o.png_s - o.transcript_s
        for o in alone.outcomes
        if o.png_s is not None and o.transcript_s is not None
    ]
    rest = max(0.0, statistics.median(spans) - diffusion)
    whisper = statistics.median(alone.whisper_s)
    biggest = max(results, key=lambda f: f.rooms)
    listen, cores = biggest.idle_cores / biggest.rooms, os.cpu_count() or 1
    fast, slow = PUBLISHED_SD_TURBO_S + rest, 2 * PUBLISHED_SD_TURBO_S + rest
    gpu_rooms = LOAD * PERIOD_S / slow  # the fewest one GPU serves
    needed = gpu_rooms * listen / LOAD  # cores to listen to as many
    limit = "the CPU, not the GPU, limits the rooms" if needed > cores else "the GPU does first"
    return [
        "### Rooms per GPU: sd-turbo, one step",
        "",
        wrap(NO_GPU),
        "",
        wrap(FORMULA, bullet=True),
        wrap(
            f"Measured here (CPU, the tiny pipeline at 64x64, 2 steps; medians at {alone.rooms} "
            f"room{'s' if alone.rooms > 1 else ''}, where no request waits for another): the "
            f"diffusers call {diffusion:.3f} s, the rest {rest:.3f} s, Whisper tiny.en int8 "
            f"{whisper:.3f} s a request; listening {listen:.3f} cores a room (at "
            f"{biggest.rooms} rooms). With "
            f"P = {PERIOD_S:.0f} s that is {LOAD * PERIOD_S / (diffusion + rest):.0f} rooms "
            f"for drawing, {LOAD * PERIOD_S / whisper:.0f} for Whisper on this CPU and "
            f"{LOAD * cores / listen:.0f} for listening on its {cores} cores.",
            bullet=True,
        ),
        wrap(
            "Published, not measured here: sd-turbo at 512x512, 1 step, batch 1 takes "
            f"{PUBLISHED_SD_TURBO_S * 1000:.1f} ms on an A100-SXM4-80GB with ONNX Runtime CUDA "
            f"({PUBLISHED_SOURCE}); the ONNX Runtime team's post reports its throughput for SD "
            f"Turbo at up to 2.2x PyTorch's ({ORT_BLOG}), and speech2image runs diffusers on "
            "PyTorch: take up to twice that. (The often quoted 207 ms per 512x512 image on "
            "an A100 is SDXL-Turbo's, not sd-turbo's.) With the rest as measured here, s = "
            f"{fast * 1000:.0f}-{slow * 1000:.0f} ms, and one such GPU draws for "
            f"{gpu_rooms:.0f}-{LOAD * PERIOD_S / fast:.0f} rooms asking every "
            f"{PERIOD_S:.0f} s (fewer where Whisper runs on the GPU too, and a 512x512 PNG "
            "takes longer to write than a 64x64 one). Listening to that many rooms takes "
            f"{needed:.0f} cores at rho = {LOAD}, against this machine's {cores}: {limit}.",
            bullet=True,
        ),
    ]


def section(quick: bool) -> str:
    """The "rooms" section of BENCHMARKS.md."""
    results = measure(quick)
    plan = QUICK if quick else FULL
    intro = (
        f"N simulated wyoming-satellites on loopback, each saying a real request (espeak-ng "
        f'"hey jarvis" + a prompt) in real time once every {PERIOD_S:.0f} s from a random '
        f"offset, for {plan.speak_s:.0f} s, to one `speech2image serve` that drives them "
        "(`[wyoming] satellites`) with the tiny image pipeline; a daemon of its own for each "
        "N. The rooms behave like wyoming-satellite 1.0.0 streaming all the time (our wake "
        "word, our end-pointer). Times run from the end of the last word (found once per "
        "clip from its energy) to the room receiving `transcript`, and to the daemon's "
        "`image` event (the PNG is in the gallery). CPU is the daemon's, per room: over "
        f"{plan.idle_s:.0f} s of every room streaming only a quiet noise floor, then while "
        "they speak."
    )
    return "\n".join(
        [
            "## Many rooms: Wyoming satellites",
            "",
            wrap(intro),
            "",
            *table(results),
            "",
            goal(results),
            "",
            notes(results),
            "",
            *rooms_per_gpu(results),
        ]
    )
