"""The gallery page with 10,000 images: index build, search latency, first page load,
and the time from a file landing in the folder to the browser's card.

The gallery is made here (small PNGs with AUTOMATIC1111 ``parameters`` and JSON
sidecars, prompts drawn from a word list, ~30 day folders) and served by the real
``speech2image gallery`` command in its own process, so the measuring client, the
browser and the server each have their own interpreter, as they do in use. The
index is also built alone in fresh subprocesses, where its memory can be read
without the web server's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image

from speech2image.gallery.metadata import a1111_parameters, encode_png, image_name
from speech2image.gallery.writer import sidecar_bytes
from speech2image.request import ImagePart, Request

if TYPE_CHECKING:
    from bench import gallery_browser

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "speech2image"
DAYS = 30
# Prompts are "a <adjective> <subject> in the <place>, <style>".
WORDS = {
    "adjective": "red blue golden tiny giant ancient misty neon quiet frozen wild happy",
    "subject": "fox cat dragon castle lighthouse robot owl forest city ship garden whale",
    "place": "mountains desert ocean jungle moon village library harbour meadow cave",
}
STYLES = ("watercolor", "oil painting", "photograph", "pencil sketch", "pixel art", "cinematic")
TILE = Image.new("RGB", (32, 32), (200, 120, 40))
ABSENT = ["zebra", "quartz submarine"]  # in no prompt: a search that reads every entry


@dataclass(frozen=True)
class Spread:
    label: str
    samples: int  # measured; ``missed`` more never arrived (no figure for them)
    p50_ms: float
    p99_ms: float
    missed: int = 0


def spread(label: str, seconds: Sequence[float | None]) -> Spread:
    ms = sorted(s * 1000 for s in seconds if s is not None)
    missed = len(seconds) - len(ms)
    if len(ms) < 2:
        return Spread(label, len(ms), ms[0] if ms else math.nan, ms[0] if ms else math.nan, missed)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98]
    return Spread(label, len(ms), statistics.median(ms), p99, missed)


# ------------------------------------------------------------------ the gallery


def prompt_for(rng: random.Random) -> str:
    return (
        f"a {rng.choice(WORDS['adjective'].split())} {rng.choice(WORDS['subject'].split())} "
        f"in the {rng.choice(WORDS['place'].split())}, {rng.choice(STYLES)}"
    )


def image_pair(
    prompt: str, seed: int, when: dt.datetime, tile: Image.Image
) -> tuple[Path, bytes, bytes]:
    """An image's gallery name, PNG bytes and sidecar bytes, as the writer makes them."""
    recipe = ImagePart(seed, 4, 0.0, 32, 32, "EulerDiscreteScheduler", "bench", "", "cpu", "f32")
    created = when.astimezone().isoformat(timespec="milliseconds")
    request = Request(f"bench{seed:07d}", "command-line", "bench", created, prompt)
    request = request.with_image(recipe, 0.1)
    name = image_name(when, prompt, seed)
    png = encode_png(tile, a1111_parameters(prompt, recipe))
    return name, png, sidecar_bytes(request.filed_as(name.name), when)


def make_gallery(root: Path, count: int, seed: int = 11) -> None:
    """``count`` images over the last :data:`DAYS` days, sidecar first as the writer does."""
    rng = random.Random(seed)
    tiles = [Image.new("RGB", (32, 32), (rng.randrange(256), 90, 160)) for _ in range(16)]
    now = dt.datetime.now()
    for i in range(count):
        when = now - dt.timedelta(seconds=rng.uniform(60, DAYS * 86400))
        name, png, sidecar = image_pair(prompt_for(rng), i, when, tiles[i % 16])
        (root / name.parent).mkdir(parents=True, exist_ok=True)
        (root / name).with_suffix(".json").write_bytes(sidecar)
        (root / name).write_bytes(png)


def evict(root: Path) -> None:
    """Drop the gallery's file data from the page cache (this folder only, not the
    machine's: other processes keep theirs), so the next scan reads from disk."""
    os.sync()
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ------------------------------------------------------------------ the index alone


def vm_rss_kib(pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def probe(root: Path, trace: bool) -> dict[str, float]:
    """Build the index once in this (fresh) process: seconds, RSS growth, Python heap."""
    import gc
    import tracemalloc

    from speech2image.gallery.index import GalleryIndex

    gc.collect()
    before = vm_rss_kib()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    index = GalleryIndex(root)
    images = index.scan()
    seconds = time.perf_counter() - started
    gc.collect()
    out = {"images": images, "scan_s": seconds, "rss_mib": (vm_rss_kib() - before) / 1024}
    if trace:
        current, peak = tracemalloc.get_traced_memory()
        out.update(heap_mib=current / 2**20, heap_peak_mib=peak / 2**20)
    return out


def run_probe(root: Path, trace: bool = False) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.gallery", "probe", str(root)]
    done = subprocess.run(
        command + (["--trace"] if trace else []),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


# ------------------------------------------------------------------ the server


@dataclass(frozen=True)
class Served:
    url: str
    start_s: float  # from the command's start to "serving"
    rss_mib: float  # the server process once serving


@contextmanager
def serve(root: Path, config: Path) -> Iterator[Served]:
    """``speech2image gallery`` on a free port, until the block ends."""
    command = [str(CLI), "gallery", "--config", str(config), "--dir", str(root), "--port", "0"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=root.parent)
    assert process.stderr is not None
    lines: list[str] = []
    try:
        for line in process.stderr:
            lines.append(line)
            if "gallery: serving " in line:
                break
        else:
            raise RuntimeError("the gallery did not start:\n" + "".join(lines[-20:]))
        seconds = time.perf_counter() - started
        threading.Thread(target=lambda: list(process.stderr or ()), daemon=True).start()
        url = line.split("gallery: serving ", 1)[1].split()[0]
        yield Served(url, seconds, vm_rss_kib(str(process.pid)) / 1024)
    finally:
        process.terminate()
        process.wait(10)


# ------------------------------------------------------------------ the API


def timed(
    client: httpx.Client, path: str, params: dict[str, str] | None = None
) -> tuple[float, Any]:
    started = time.perf_counter()
    response = client.get(path, params=params)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds, response.json()


def queries(count: int, seed: int = 3) -> list[str]:
    """One- and two-word searches over the prompts' words, a few that match nothing."""
    rng = random.Random(seed)
    words = " ".join([*WORDS.values(), *STYLES]).split()
    found = [" ".join(rng.sample(words, rng.choice((1, 2)))) for _ in range(count)]
    return [ABSENT[i % 2] if i % 25 == 0 else q for i, q in enumerate(found)]


def api_latency(url: str, requests: int, images: int) -> list[Spread]:
    """Status (the baseline round trip), search, first page, and a page 100 pages in."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(30):  # warm-up: connection, code paths
            timed(client, "/api/images", {"q": "fox"})
        status = [timed(client, "/api/status")[0] for _ in range(requests)]
        search = [timed(client, "/api/images", {"q": q})[0] for q in queries(requests)]
        absent = [timed(client, "/api/images", {"q": ABSENT[i % 2]})[0] for i in range(100)]
        first = [timed(client, "/api/images")[0] for _ in range(requests // 2)]
        cursor, walk = None, []
        for _ in range(100):
            seconds, body = timed(client, "/api/images", {"before": cursor} if cursor else None)
            walk.append(seconds)
            cursor = body["next"]
        assert cursor is not None, "the gallery has fewer than 101 pages"
        deep = [timed(client, "/api/images", {"before": cursor})[0] for _ in range(requests // 2)]
    return [
        spread("`GET /api/status` (baseline round trip)", status),
        spread("`?q=` one or two words (4 % match nothing)", search),
        spread(f"`?q=` a word in no prompt (reads all {images:,})", absent),
        spread("no query: the first page", first),
        spread("paging: each of the first 100 `before=` pages", walk),
        spread("`before=` the 101st page", deep),
    ]


# ------------------------------------------------------------------ all of it


@dataclass(frozen=True)
class Figures:
    images: int
    make_s: float
    probes: dict[str, dict[str, float]]  # probe(): "cold" (files not cached), "warm", "traced"
    empty: Served  # the command on an empty gallery: the baseline
    full: Served
    api: list[Spread]
    loads: list[gallery_browser.PageLoad]
    sse: Spread
    page: Spread


def note(what: str) -> None:
    print(f"bench: gallery: {what}", file=sys.stderr, flush=True)


def measure(quick: bool) -> Figures:
    from bench import gallery_browser  # which imports this module

    count, requests, samples = (2_000, 200, 5) if quick else (10_000, 500, 20)
    with tempfile.TemporaryDirectory(prefix="s2i-bench-gallery-") as tmp:
        work = Path(tmp)
        root, config = work / "gallery", work / "speech2image.toml"
        config.write_text("")
        (work / "empty").mkdir()
        for _ in range(
            2
        ):  # the second start finds the code in the page cache, as the full one will
            with serve(work / "empty", config) as empty:
                pass
        started = time.perf_counter()
        make_gallery(root, count)
        made = time.perf_counter() - started
        note(f"{count} images made in {made:.0f} s; building the index alone")
        evict(root)
        cold = run_probe(root)
        warm = run_probe(root)
        traced = run_probe(root, trace=True)
        evict(root)
        with serve(root, config) as full:
            note(f"serving after {full.start_s:.1f} s; timing the API")
            api = api_latency(full.url, requests, count)
            note("loading the page in Chromium")
            loads, sse, page = gallery_browser.browse(
                work, full.url, root, 1 if quick else 3, samples
            )
    probes = {"cold": cold, "warm": warm, "traced": traced}
    return Figures(count, made, probes, empty, full, api, loads, sse, page)


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "probe":
        print(json.dumps(probe(Path(sys.argv[2]), "--trace" in sys.argv[3:])))
        return 0
    print(dataclasses.asdict(measure("--quick" in sys.argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
