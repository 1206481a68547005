"""The gallery page in a real browser, served by a standalone `speech2image gallery`.

The gallery holds what a user's folder holds: pictures the daemon wrote (PNG plus
sidecar, through the real GalleryWriter), a JPEG copied in by hand with no metadata,
and a PNG from another tool with only an A1111 ``parameters`` chunk. Each test starts
its own server process and browser; teardown keeps a screenshot in tests/artifacts/.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.keys import Keys

from speech2image.gallery.server import detail_url
from speech2image.gallery.writer import GalleryWriter
from tests.e2e.browser import Browser, card_css, card_ids, open_gallery, wait_detail_meta
from tests.support import drawn_request

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
log = logging.getLogger(__name__)

XSS = "<img src=x onerror=alert(1)> <b>bold</b>"
A1111 = (
    "a castle on a hill at dusk, oil painting\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x48, Model: sd15"
)
# What the page promises for a file landing in the folder; the test waits longer and
# records how long it took (machines under load are slow, the promise is the product's).
LIVE_WAIT_S = 5.0
SERVING = re.compile(r"gallery: serving (\S+)")


@dataclasses.dataclass(frozen=True)
class Filled:
    """The gallery's images by role, and their ids newest first."""

    root: Path
    fox: str
    whale: str
    lighthouse: str
    xss: str
    jpeg: str
    castle: str

    @property
    def newest_first(self) -> list[str]:
        return [self.fox, self.xss, self.whale, self.jpeg, self.lighthouse, self.castle]


def picture(colour: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


def drawn(writer: GalleryWriter, prompt: str, seed: int, when: dt.datetime, colour: str) -> str:
    """A picture as the daemon stores it, made ``when`` (its sidecar's time)."""
    request = drawn_request(prompt, seed, 64)
    request = dataclasses.replace(request, created=when.isoformat(timespec="milliseconds"))
    return writer.write(picture(colour), request, when).relative_to(writer.root).as_posix()


def by_hand(path: Path, when: dt.datetime, image: Image.Image, **save: Any) -> None:
    """A file put into the gallery by hand: its time is its modification time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    os.utime(path, (when.timestamp(), when.timestamp()))


def earlier_today(now: dt.datetime, seconds: int) -> dt.datetime:
    """``seconds`` (< 10) before ``now``, shifted to stay today in a run just after midnight."""
    midnight = now.replace(hour=0, minute=0, second=0)
    return max(now, midnight + dt.timedelta(seconds=10)) - dt.timedelta(seconds=seconds)


def fill(root: Path) -> Filled:
    """Six images on five days (so the day groups and their order are known)."""
    now = dt.datetime.now().astimezone().replace(microsecond=0)
    writer = GalleryWriter(root)
    writer.prepare()
    info = PngInfo()
    info.add_text("parameters", A1111)
    by_hand(root / "holiday.jpg", now - dt.timedelta(days=2), picture("orange"), format="JPEG")
    by_hand(
        root / "imported" / "castle.png",
        now - dt.timedelta(days=5),
        picture("grey", (64, 48)),
        pnginfo=info,
    )
    return Filled(
        root=root.resolve(),
        fox=drawn(writer, "a red fox in the snow", 42, earlier_today(now, 1), "red"),
        xss=drawn(writer, XSS, 7, earlier_today(now, 2), "purple"),
        whale=drawn(writer, "a blue whale under the sea", 3, now - dt.timedelta(days=1), "blue"),
        lighthouse=drawn(writer, "a lighthouse in a storm", 9, now - dt.timedelta(days=3), "white"),
        jpeg="holiday.jpg",
        castle="imported/castle.png",
    )


class GalleryProcess:
    """`speech2image gallery --dir ROOT --port 0` in a subprocess; ``url`` once it serves."""

    def __init__(self, root: Path, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "speech2image.cli",
                "gallery",
                "--dir",
                str(root),
                "--port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        found: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(found,), daemon=True).start()
        try:
            self.url = found.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"the gallery did not start in {timeout} s:\n{self.log}") from None

    def _read(self, found: queue.Queue[str]) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            if match := SERVING.search(line):
                found.put(match.group(1))

    @property
    def log(self) -> str:
        return "".join(self.stderr)

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C or systemd would; the server must exit cleanly."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        assert code == 0, f"the gallery exited with {code}:\n{self.log}"


@pytest.fixture
def gallery(tmp_path: Path) -> Filled:
    return fill(tmp_path / "gallery")


@pytest.fixture
def served(gallery: Filled) -> Iterator[str]:
    """`speech2image gallery --dir G --port 0`, as a user starts it; yields its URL."""
    process = GalleryProcess(gallery.root)
    try:
        yield process.url
    finally:
        process.stop()


def days_of(browser: Browser) -> list[str]:
    return browser.attributes("#grid section.day", "data-day")


def search(browser: Browser, text: str, expected: list[str]) -> None:
    box = browser.wait_for("#search")
    box.send_keys(text)
    browser.wait_until(
        lambda: card_ids(browser) == expected, 10, f"search {text!r} to show {expected}"
    )
    assert browser.find("#search").get_attribute("value") == text


def test_lists_newest_first_by_day_and_search_filters(
    chromium: Browser, gallery: Filled, served: str
) -> None:
    open_gallery(chromium, served)
    assert card_ids(chromium) == gallery.newest_first
    days = days_of(chromium)
    assert len(days) == 5
    assert days == sorted(days, reverse=True)
    assert chromium.text("#grid section.day h2") == "Today"
    assert chromium.text(f"{card_css(gallery.castle)} .prompt").startswith("a castle on a hill")
    search(chromium, "fox", [gallery.fox])
    chromium.find("#search").send_keys(Keys.ESCAPE)
    chromium.wait_until(lambda: card_ids(chromium) == gallery.newest_first, 10, "all cards back")
    search(chromium, "CASTLE painting", [gallery.castle])  # words from the A1111 chunk
    chromium.find("#search").clear()
    chromium.find("#search").send_keys(Keys.ESCAPE)
    chromium.wait_until(lambda: card_ids(chromium) == gallery.newest_first, 10, "all cards back")
    search(chromium, "no such thing", [])
    chromium.wait_for("#empty")
    # Standalone: browse-only, and the page says so instead of offering a microphone.
    panel = chromium.find("#talk-panel")
    assert panel.get_attribute("data-talk") == "off"
    assert "Browse-only" in panel.text
    assert not chromium.find("#talk").is_displayed()
    assert not chromium.find("#prompt-form").is_displayed()


def test_a_copied_file_appears_without_reload(
    chromium: Browser,
    gallery: Filled,
    served: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    elsewhere = GalleryWriter(tmp_path / "elsewhere")
    made = elsewhere.root / drawn(
        elsewhere, "a green frog on a lily pad", 5, dt.datetime.now().astimezone(), "green"
    )
    open_gallery(chromium, served)
    chromium.js("window.notReloaded = true;")
    copied = gallery.root / "frog.png"
    started = time.monotonic()
    shutil.copy(made, copied)
    chromium.wait_for(card_css("frog.png"), timeout=LIVE_WAIT_S)
    took = time.monotonic() - started
    log.info("a copied PNG appeared on the page %.2f s after the copy", took)
    record_property("copied_file_appeared_after_s", round(took, 3))
    assert chromium.js("return window.notReloaded === true;"), "the page was reloaded"
    today = dt.date.today().isoformat()
    assert chromium.find_all(f'section.day[data-day="{today}"] {card_css("frog.png")}')
    assert chromium.text(f"{card_css('frog.png')} .prompt") == "a green frog on a lily pad"
    copied.unlink()
    chromium.wait_gone(card_css("frog.png"), timeout=LIVE_WAIT_S)
    assert card_ids(chromium) == gallery.newest_first


def test_detail_view_shows_prompt_and_seed(chromium: Browser, gallery: Filled, served: str) -> None:
    open_gallery(chromium, served)
    chromium.click(card_css(gallery.fox))
    chromium.wait_for("#detail")
    chromium.wait_until(
        lambda: chromium.text("#detail-prompt") == "a red fox in the snow", 10, "the prompt"
    )
    meta = wait_detail_meta(chromium, "Seed")
    assert meta["Seed"] == "42"
    assert meta["Size"] == "64 \u00d7 64"  # multiplication sign
    assert str(chromium.find("#detail-download").get_attribute("href")).endswith("?download=1")
    chromium.click("#detail-close")
    chromium.wait_gone("#detail")
    # A link straight to an image, as the desktop notification opens it.
    link = detail_url(served, gallery.root, gallery.root / gallery.castle)
    assert link is not None
    open_gallery(chromium, link)
    chromium.wait_for("#detail")
    chromium.wait_until(
        lambda: chromium.text("#detail-prompt").startswith("a castle on a hill"),
        10,
        "the A1111 prompt",
    )
    assert wait_detail_meta(chromium, "Seed")["Seed"] == "1234"


def test_favourite_toggles_and_survives_a_reload(
    chromium: Browser, gallery: Filled, served: str
) -> None:
    open_gallery(chromium, served)
    for image in (gallery.whale, gallery.jpeg):  # a picture the daemon made, and one copied in
        chromium.click(card_css(image))
        chromium.wait_for("#detail")
        chromium.click("#detail-favourite")
        chromium.wait_until(
            lambda: chromium.find("#detail-favourite").get_attribute("aria-pressed") == "true",
            10,
            "favourite pressed",
        )
        chromium.click("#detail-close")
        chromium.wait_for(f"{card_css(image)} .fav.on")
    chromium.reload()
    open_gallery(chromium, None)
    for image in (gallery.whale, gallery.jpeg):
        chromium.wait_for(f"{card_css(image)} .fav.on")
    assert not chromium.find_all(f"{card_css(gallery.fox)} .fav.on")
    chromium.click(card_css(gallery.whale))
    chromium.wait_until(
        lambda: chromium.find("#detail-favourite").get_attribute("aria-pressed") == "true",
        10,
        "favourite shown in the detail view",
    )
    chromium.click("#detail-favourite")
    chromium.wait_until(
        lambda: chromium.find("#detail-favourite").get_attribute("aria-pressed") == "false",
        10,
        "favourite off",
    )
    chromium.reload()
    open_gallery(chromium, None)
    assert not chromium.find_all(f"{card_css(gallery.whale)} .fav.on")
    chromium.wait_for(f"{card_css(gallery.jpeg)} .fav.on")


def delete_from_detail(browser: Browser, image: str) -> None:
    browser.click(card_css(image))
    browser.wait_for("#detail")
    browser.click("#detail-delete")
    browser.wait_gone(card_css(image))


def in_trash(root: Path, image: str) -> list[Path]:
    return sorted((root / ".trash").glob(f"*/{image}"))


def test_delete_undo_restore_and_empty_trash(
    chromium: Browser, gallery: Filled, served: str
) -> None:
    image, path = gallery.whale, gallery.root / gallery.whale
    open_gallery(chromium, served)
    delete_from_detail(chromium, image)
    assert not path.exists()
    assert not path.with_suffix(".json").exists()
    (trashed,) = in_trash(gallery.root, image)
    assert trashed.with_suffix(".json").is_file()
    assert "Moved to trash" in chromium.wait_for("#toast").text
    chromium.click("#toast button.undo")
    chromium.wait_for(card_css(image))
    assert path.is_file()
    assert path.with_suffix(".json").is_file()
    assert card_ids(chromium) == gallery.newest_first
    # Deleted again, then restored from the trash panel.
    delete_from_detail(chromium, image)
    chromium.click("#open-trash")
    chromium.wait_for("#trash")
    chromium.click(f'li.trash-item[data-id="{image}"] button.restore')
    chromium.wait_for(card_css(image))
    assert path.is_file()
    assert not in_trash(gallery.root, image)
    # Deleted a third time, and the trash emptied for good.
    chromium.wait_gone(f'li.trash-item[data-id="{image}"]')
    if chromium.find("#trash").is_displayed():
        chromium.click("#close-trash")
    delete_from_detail(chromium, image)
    chromium.click("#open-trash")
    chromium.wait_for(f'li.trash-item[data-id="{image}"]')
    chromium.click("#empty-trash")
    chromium.driver.switch_to.alert.accept()  # the "cannot be undone" confirm()
    chromium.wait_gone("li.trash-item")
    assert not in_trash(gallery.root, image)
    assert not path.exists()
    assert image not in card_ids(chromium)


def test_a_prompt_with_html_is_shown_as_text(
    chromium: Browser, gallery: Filled, served: str
) -> None:
    open_gallery(chromium, served)
    assert chromium.text(f"{card_css(gallery.xss)} .prompt") == XSS
    chromium.click(card_css(gallery.xss))
    chromium.wait_until(lambda: chromium.text("#detail-prompt") == XSS, 10, "the prompt as text")
    injected = chromium.js(
        "return document.querySelectorAll('img[src=\"x\"], [onerror], b').length;"
    )
    assert injected == 0, "markup from the prompt became elements"
    with pytest.raises(NoAlertPresentException):
        chromium.driver.switch_to.alert.text  # noqa: B018 - reading it is the check
