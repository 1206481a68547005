"""`make bench`: run every benchmark and write the figures to BENCHMARKS.md.

Benchmarks are not tests: nothing here passes or fails on a time. Each section
states its goal next to the figure so a reader sees where we stand.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import gallery, images, listening, moderation, rooms, speech, wyoming_asr
from speech2image import __version__

OUT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def cost_section(quick: bool) -> str:
    pairs = 10 if quick else 40
    rows = listening.listening_cost(60.0 if quick else 600.0, pairs)
    lines = [
        "## Listening cost",
        "",
        f"CPU seconds per second of audio on a {'1' if quick else '10'}-minute stream of",
        "speech, music-like audio and noise (no wake word), one core's share. Goal: <= 0.02,",
        "and within 5 % of the baseline: openWakeWord's own `Model.predict` loop on the same",
        "frames. A few per cent is noise between two runs on this machine, so the stream",
        f"is cut into {pairs} blocks, each run by both back to back (A B, B A, ...): the",
        "ratio is taken within each pair; its median and spread are shown.",
        "",
        "| configuration | speech2image | openWakeWord alone | ratio: median | IQR | min-max |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        q1, _, q3 = statistics.quantiles(row.ratios, n=4)
        lines.append(
            f"| {row.label} | {row.cpu_per_audio_s:.4f} | {row.baseline_per_audio_s:.4f} "
            f"| {statistics.median(row.ratios):.3f}x | {q1:.3f}-{q3:.3f} "
            f"| {row.ratios[0]:.3f}-{row.ratios[-1]:.3f} |"
        )
    lines += [
        "\nWhile idle the listener runs only the wake-word models and keeps the last few",
        "seconds of raw audio; the Silero VAD runs from a wake onward (over that buffer,",
        "then per frame) and stops when the utterance has ended. Run on every frame, as it",
        "was until 0.1.0, it made listening cost 1.26x openWakeWord alone with 1 model and",
        "with 3 (measured the same way, median of 40 pairs, 2026-11-30; 1.15x in the",
        "single runs this table showed before).",
    ]
    return "\n".join(lines)


def accuracy_section(quick: bool) -> str:
    rows = listening.wake_accuracy(600.0 if quick else 3600.0, 20 if quick else 200)
    lines = [
        "## Wake-word accuracy",
        "",
        "Default settings (threshold 0.5, patience 1, refractory 2 s). Negatives: synthetic",
        "speech without the wake word (espeak-ng, many voices, near-miss words), music-like",
        "audio and noise (`bench/corpus.py`), all three models listening at once. Positives:",
        "augmented clips (gain, noise at 10-30 dB SNR, speed, reverb); hey_jarvis from",
        "espeak-ng voices, alexa and hey_mycroft from the real recordings in tests/data.",
        "Goal: < 0.5 false accepts per hour, < 5 % false rejects.",
        "",
        "| model | negative audio (h) | false accepts | per hour | positives | misses "
        "| false-reject rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | {row.negative_hours:.2f} | {row.false_accepts} "
            f"| {row.false_accepts_per_hour:.2f} | {row.positives} | {row.misses} "
            f"| {row.false_reject_rate:.1%} |"
        )
    lines += [
        "",
        "Synthetic positives are a proxy: espeak-ng voices are not people. The real",
        "recordings pass at 1.0; the spread on people's voices is larger.",
    ]
    return "\n".join(lines)


def latency_section(quick: bool) -> str:
    row = listening.end_of_speech_latency(5 if quick else 20)
    return "\n".join(
        [
            "## End of speech to `utterance` event",
            "",
            f"Input: {row.label}. The end-pointer waits `silence_timeout` (0.7 s) of silence",
            "by design; the rest is frame rounding (80 ms) and the compute of one frame.",
            "",
            "| audio-time delay (median) | compute per frame p50 | p99 |",
            "|---|---|---|",
            f"| {row.audio_latency_s:.3f} s | {row.frame_p50_ms:.2f} ms "
            f"| {row.frame_p99_ms:.2f} ms |",
            "",
            f"With a microphone: about {row.audio_latency_s + row.frame_p99_ms / 1000:.2f} s "
            "from the last word to the event (p99 frame).",
        ]
    )


def speech_section(quick: bool) -> str:
    rows = speech.transcription_latency(repeats=3 if quick else 7)
    lines = [
        "## Transcription latency",
        "",
        "From the `utterance` event (the end-pointer's decision, `silence_timeout` after the",
        "last word) to the `transcript` event, whisper tiny.en int8 on CPU, greedy; median of",
        "several runs. Baseline: faster-whisper's `transcribe` called directly on the same",
        "audio with the same settings, in the same run. Goals: <= 0.35 s for 5 s of speech;",
        "overhead <= 10 %.",
        "",
        "| utterance | speech2image | faster-whisper alone | overhead |",
        "|---|---|---|---|",
    ]
    for row in rows:
        overhead = row.pipeline_s / row.direct_s - 1
        lines.append(
            f"| {row.audio_s:.0f} s | {row.pipeline_s:.3f} s | {row.direct_s:.3f} s "
            f"| {overhead:+.1%} |"
        )
    return "\n".join(lines)


def _category_table(results: list[tuple[str, moderation.Quality]]) -> list[str]:
    categories = sorted(results[0][1].toxic_by_category)
    rows = ["| backends | " + " | ".join(categories) + " |", "|---" * (len(categories) + 1) + "|"]
    for label, q in results:
        rows.append(f"| {label} | " + " | ".join(f"{q.category_recall(c):.2f}" for c in categories))
    return [row if row.endswith("|") else row + " |" for row in rows]


def moderation_section(quick: bool) -> str:
    lines = [
        "## Moderation quality",
        "",
        "Labeled spoken-style image prompts in `tests/data/moderation/` (see its README).",
        "Blind, evaluated once, nothing tuned or chosen on them: `test.tsv` (321, Detoxify's",
        "labels) and `test_harms.tsv` (360, the picture harms, committed before any rule",
        "for them). Validation, on which the rules, thresholds and default were chosen, so",
        "they flatter a little: `heldout.tsv` (263) and `dev_harms.tsv` (200).",
        "`misheard.tsv`: 833 of Whisper tiny.en's real garbles of harmless prompts (all",
        "benign: only a false-positive rate). A prompt counts as rejected when any backend",
        "of the configuration rejects it. Goal for the default: the highest recall at a",
        "false-positive rate <= 0.03.",
    ]
    for name in ("test.tsv", "test_harms.tsv", "heldout.tsv", "dev_harms.tsv", "misheard.tsv"):
        lines += [
            "",
            f"`{name}`:",
            "",
            "| backends | precision | recall | false-positive rate | missed by category |",
            "|---|---|---|---|---|",
        ]
        results = moderation.quality(name)
        for label, q in results:
            missed = ", ".join(f"{k} {v}" for k, v in sorted(q.missed.items())) or "-"
            lines.append(
                f"| {label} | {q.precision:.3f} | {q.recall:.3f} "
                f"| {q.false_positive_rate:.3f} | {missed} |"
            )
        if name == "test_harms.tsv":
            lines += ["", "Recall per category on `test_harms.tsv`:", ""]
            lines += _category_table(results)
    lines += [
        "",
        "## Moderation latency",
        "",
        "Milliseconds per `check` over every prompt of dev.tsv, heldout.tsv and",
        "dev_harms.tsv, after a warm-up. Goal: default combination <= 5 ms p99.",
        "",
        "| backends | p50 | p99 |",
        "|---|---|---|",
    ]
    for label, p50, p99 in moderation.latency(1 if quick else 3):
        lines.append(f"| {label} | {p50:.2f} ms | {p99:.2f} ms |")
    return "\n".join(lines)


def sweep_section(quick: bool) -> str:
    rows = listening.wake_sweep(600.0 if quick else 3600.0, 20 if quick else 200)
    lines = [
        "## Wake-word settings sweep",
        "",
        "The same negatives and positives as above, scored once and replayed through the",
        "daemon's `WakeGate` for each threshold and patience (refractory 2 s). The daemon",
        "also resets the model after a wake, so the default rows can differ by one event",
        "from the table above. False accepts per hour / false-reject rate:",
        "",
        "| model | threshold | patience 1 | patience 2 | patience 3 |",
        "|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, float], list[str]] = {}
    for row in rows:
        cells.setdefault((row.model, row.threshold), []).append(
            f"{row.false_accepts_per_hour:.1f} / {row.false_reject_rate:.1%}"
        )
    for (model, threshold), values in cells.items():
        lines.append(f"| {model} | {threshold} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def images_section(quick: bool) -> str:
    overhead = images.pipeline_overhead(3 if quick else 6)
    drops = images.dropped_frames_during_generation(steps=10 if quick else 100)
    return "\n".join(
        [
            "## Image pipeline on this machine",
            "",
            "The tiny random Stable Diffusion pipeline the tests use, on the CPU. What is",
            "measured is the daemon around the model, not the model.",
            "",
            "Overhead: from the `utterance` event to the PNG on disk, minus the time inside",
            "faster-whisper and inside the diffusers call (so: hand-offs, moderation, PNG",
            "encoding, and the sidecar then the PNG each written, fsynced and linked, with",
            "their folder synced). Goal <= 50 ms.",
            "",
            "| requests | median | worst |",
            "|---|---|---|",
            f"| {overhead.requests} | {overhead.median_ms:.1f} ms | {overhead.worst_ms:.1f} ms |",
            "",
            "Dropped audio frames while images are generated: the daemon listening to a",
            "PulseAudio virtual microphone through sounddevice while the tiny model draws",
            "512x512 images (both cores busy). Goal: 0.",
            "",
            "| seconds per image | images | frames heard | frames dropped |",
            "|---|---|---|---|",
            f"| {drops.generation_s:.1f} s | {drops.images} | {drops.frames} | {drops.dropped} |",
        ]
    )


def _ms(value: float | None) -> str:
    return "never" if value is None or math.isnan(value) else f"{value:.1f} ms"


def _met(worst: float, goal: float) -> str:
    return "met" if worst <= goal else "**not met**"


def _gallery_index(f: gallery.Figures) -> list[str]:
    lines = [
        "| index build, alone in a fresh process | scan | RSS growth | Python heap kept (peak) |",
        "|---|---|---|---|",
    ]
    heap = f.probes["traced"]
    for label, key in (("file data not in the page cache", "cold"), ("again, cached", "warm")):
        probe = f.probes[key]
        lines.append(
            f"| {label} | {probe['scan_s']:.2f} s | {probe['rss_mib']:.1f} MiB "
            f"| {heap['heap_mib']:.1f} MiB ({heap['heap_peak_mib']:.1f}) |"
        )
    return [
        *lines,
        "",
        f"`speech2image gallery` from exec to serving: {f.full.start_s:.2f} s, "
        f"{f.full.rss_mib:.0f} MiB resident; on an empty gallery {f.empty.start_s:.2f} s, "
        f"{f.empty.rss_mib:.0f} MiB (the baseline: interpreter, imports, uvicorn).",
    ]


def _gallery_api(f: gallery.Figures) -> list[str]:
    status = f.api[0].p50_ms
    lines = ["| request | requests | p50 | p99 | p50 / status p50 |", "|---|---|---|---|---|"]
    for row in f.api:
        lines.append(
            f"| {row.label} | {row.samples} | {_ms(row.p50_ms)} | {_ms(row.p99_ms)} "
            f"| {row.p50_ms / status:.2f}x |"
        )
    worst = max(row.p99_ms for row in f.api if "?q=" in row.label)
    return [*lines, "", f"Goal `?q=` p99 <= 20 ms: {_met(worst, 20.0)} ({worst:.1f} ms)."]


def _gallery_browser(f: gallery.Figures) -> list[str]:
    lines = [
        "| load (new profile each) | DOMContentLoaded | ready | thumbnails in view loaded |",
        "|---|---|---|---|",
    ]
    for load in f.loads:
        kind = "thumbnails cached" if load.thumbs_cached else "thumbnails made afresh"
        lines.append(
            f"| {kind} | {_ms(load.dom_ms)} | {_ms(load.ready_ms)} "
            f"| {_ms(load.thumbs_ms)} ({load.thumbs}) |"
        )
    cold = [load.ready_ms for load in f.loads if not load.thumbs_cached]
    ready = [ms for ms in cold if ms is not None]
    if len(ready) < len(cold):
        lines += ["", "**The page did not set `body[data-ready]` within 30 s.**"]
    else:
        lines += ["", f"Median ready, thumbnails made afresh: {statistics.median(ready):.0f} ms."]
    lines += ["", "| a file lands -> | samples | p50 | p99 | never seen |", "|---|---|---|---|---|"]
    for row in (f.sse, f.page):
        lines.append(
            f"| {row.label} | {row.samples} | {_ms(row.p50_ms)} | {_ms(row.p99_ms)} "
            f"| {row.missed} |"
        )
    worst = math.inf if f.sse.missed + f.page.missed else max(f.sse.p99_ms, f.page.p99_ms)
    return [*lines, "", f"Goal p99 <= 1 s: {_met(worst, 1000.0)}."]


def gallery_section(quick: bool) -> str:
    f = gallery.measure(quick)
    return "\n".join(
        [
            "## Gallery page",
            "",
            f"{f.images:,} images made by the benchmark in {f.make_s:.0f} s (32x32 PNGs with",
            "A1111 `parameters` and JSON sidecars, prompts from a word list, over 30 day",
            "folders), served by `speech2image gallery` (browse-only, loopback) in its own",
            "process; the HTTP client and Chromium run in others, on the same machine.",
            "",
            *_gallery_index(f),
            "",
            "`GET /api/images` through real HTTP (httpx, one keep-alive connection), after a",
            "warm-up. Baseline: `GET /api/status`, the same round trip with no work.",
            "",
            *_gallery_api(f),
            "",
            "First page load in headless Chromium, from navigation start by the page's clock:",
            "ready is `body[data-ready]`, the first page of cards shown and the event stream",
            "open. Then a PNG is hard-linked into a day folder (its sidecar first, as the",
            "writer does), one every ~0.3 s: time until an SSE client sees `added`, and",
            "until the open page has its card in the DOM (a MutationObserver, page clock).",
            "",
            *_gallery_browser(f),
        ]
    )


SECTIONS: dict[str, Callable[[bool], str]] = {
    "cost": cost_section,
    "accuracy": accuracy_section,
    "sweep": sweep_section,
    "latency": latency_section,
    "speech": speech_section,
    "moderation": moderation_section,
    "images": images_section,
    "gallery": gallery_section,
    "rooms": rooms.section,
    "asr": wyoming_asr.section,
}


def merge(document: str, name: str, body: str) -> str:
    """Replace one section (between its markers) and keep the others as they were."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = f"_Measured {time.strftime('%Y-%m-%d')}, speech2image {__version__}, {machine()}._"
    block = f"{start}\n{body}\n\n{stamp}\n{end}"
    if start in document and end in document:
        before, rest = document.split(start, 1)
        return before + block + rest.split(end, 1)[1]
    return document.rstrip("\n") + "\n\n" + block + "\n"


HEADER = """# Benchmarks

Written by `make bench` (`python -m bench`); each section says when and where it was
measured. Figures, not tests: rerun them to compare on your machine. `--only NAME`
refreshes one section and keeps the others.
"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    document = args.output.read_text(encoding="utf-8") if args.output.exists() else HEADER
    for name in args.only or SECTIONS:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        document = merge(document, name, SECTIONS[name](args.quick))
        args.output.write_text(document, encoding="utf-8")
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"bench: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
