"""The browser half of the gallery benchmark (``bench/gallery.py``): first page loads
in Debian's headless Chromium, and the time from a file landing in the folder to the
server-sent event and to the page's card.

Times in the page are taken by the page's own clock (``performance.now()``, and
``performance.timeOrigin`` for epoch times), from scripts handed to Chromium through
the DevTools protocol: the page's content security policy allows no inline script,
and polling from Selenium would add its round trips to the figures.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.gallery import TILE, Spread, image_pair, spread

READY_JS = """window.__ready = null; new MutationObserver((_, obs) => {
  if (document.body && document.body.dataset.ready === '1') {
    window.__ready = performance.now(); obs.disconnect(); }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-ready']});"""
SEEN_JS = """window.__seen = {}; const note = () => {
  const t = performance.timeOrigin + performance.now();
  for (const c of document.querySelectorAll('a.card')) {
    if (!(c.dataset.id in window.__seen)) window.__seen[c.dataset.id] = t; } };
note(); new MutationObserver(note).observe(document.body, {childList: true, subtree: true});"""
THUMBS_DONE_JS = """const shown = [...document.querySelectorAll('img.thumb')].filter((i) => {
  const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; });
if (!shown.length || !shown.every((i) => i.complete)) return null;
const ends = performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/thumbs/')).map((e) => e.responseEnd);
return [shown.length, Math.max(0, ...ends)];"""


# ------------------------------------------------------------------ the browser


@dataclass(frozen=True)
class PageLoad:
    thumbs_cached: bool
    dom_ms: float  # DOMContentLoaded: the HTML and scripts are in
    ready_ms: float | None  # body[data-ready]: first page listed, events open
    thumbs_ms: float | None  # the thumbnails in the window all loaded
    thumbs: int


def browser(profile: Path) -> Any:
    """Debian's headless Chromium through the browser tests' harness (no microphone);
    ``profile`` is a new, empty folder."""
    from tests.e2e.browser import launch

    return launch(profile, "bench-gallery", None)


def wait(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (found := probe()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def page_load(
    work: Path, url: str, root: Path, thumbs_cached: bool, ready_timeout: float
) -> tuple[PageLoad, Any]:
    """One navigation in a new profile, timed by the page's own clock; and the browser."""
    if not thumbs_cached:
        shutil.rmtree(root / ".thumbs", ignore_errors=True)
    window = browser(Path(tempfile.mkdtemp(dir=work, prefix="profile-")))
    try:
        window.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": READY_JS})
        window.open(url)
        ready = wait(lambda: window.js("return window.__ready"), ready_timeout)
        thumbs = wait(lambda: window.js(THUMBS_DONE_JS), 30.0) if ready is not None else None
        dom = window.js(
            "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
        )
    except BaseException:
        window.driver.quit()
        raise
    shown, thumbs_ms = thumbs if thumbs is not None else (0, None)
    return PageLoad(thumbs_cached, float(dom), ready, thumbs_ms, int(shown)), window


class EventWatch:
    """A raw server-sent-event client: when each ``added`` id arrived (epoch seconds)."""

    def __init__(self, url: str) -> None:
        self.seen: dict[str, float] = {}
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=None))
        self._open = threading.Event()
        threading.Thread(target=self._listen, daemon=True).start()
        if not self._open.wait(10):
            raise RuntimeError("the event stream did not open")

    def _listen(self) -> None:
        event = ""
        try:
            with self._client.stream("GET", "/api/events") as response:
                self._open.set()
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "added":
                        self.seen[json.loads(line[5:])["id"]] = time.time()
        except httpx.HTTPError:
            pass  # closed at the end

    def close(self) -> None:
        self._client.close()


def arrive(root: Path, stage: Path, number: int) -> tuple[str, float]:
    """One new image linked into the gallery: its id and the epoch second of the link."""
    name, png, sidecar = image_pair(
        f"a live arrival number {number}", 900_000 + number, dt.datetime.now(), TILE
    )
    (stage / "s.json").write_bytes(sidecar)
    (stage / "s.png").write_bytes(png)
    (root / name.parent).mkdir(exist_ok=True)
    os.link(stage / "s.json", (root / name).with_suffix(".json"))
    landed = time.time()
    os.link(stage / "s.png", root / name)
    for part in stage.iterdir():
        part.unlink()
    return name.as_posix(), landed


def arrivals(root: Path, url: str, window: Any, samples: int) -> tuple[Spread, Spread]:
    """Link new PNGs into the gallery (the sidecar first, as the writer does) and time
    the SSE ``added`` event and the browser's card against the moment of the link."""
    window.js(SEEN_JS)
    watch = EventWatch(url)
    stage = Path(tempfile.mkdtemp(dir=root.parent, prefix="stage-"))  # same file system
    sse: list[float | None] = []
    page: list[float | None] = []
    try:
        for number in range(samples):
            id, landed = arrive(root, stage, number)
            shown = wait(lambda: window.js("return window.__seen[arguments[0]]", id), 10)  # noqa: B023
            heard = wait(lambda: watch.seen.get(id), 1)  # noqa: B023
            page.append(None if shown is None else shown / 1000 - landed)
            sse.append(None if heard is None else heard - landed)
            time.sleep(0.3)  # one at a time, not a burst
    finally:
        watch.close()
    return spread("server-sent `added` event", sse), spread("the card in the browser", page)


def browse(
    work: Path, url: str, root: Path, rounds: int, samples: int
) -> tuple[list[PageLoad], Spread, Spread]:
    """Page loads in new profiles, thumbnails made afresh then cached, in turn; then
    arrivals, watched by the last page."""
    loads: list[PageLoad] = []
    window: Any = None
    try:
        for cached in (False, True) * rounds:
            if window is not None:
                window.driver.quit()
            load, window = page_load(work, url, root, cached, 30.0)
            loads.append(load)
        sse, page = arrivals(root, url, window, samples)
    finally:
        if window is not None:
            window.driver.quit()
    return loads, sse, page
