"""Talking and typing to the daemon from its page, in a real browser.

One daemon for the module (loading its models is most of the cost): `speech2image run`
with ``[gallery] serve = true``, real whisper tiny.en, the tiny image model, and a
PulseAudio virtual microphone that only hears silence, so the wake word never fires
and every request comes from the page. Chromium's fake capture device plays the JFK
recording (tests/data/jfk.flac) when the page opens the microphone.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import with_base
from tests.e2e.browser import Browser, open_gallery
from tests.e2e.daemon import DaemonProcess
from tests.e2e.pulse import PulseServer, VirtualMic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVING = re.compile(r"gallery: serving (http://\S+)")
JFK = "ask not what your country can do for you"
# The fake microphone's WAV: 1 s of silence, the 11 s sentence, 2 s of silence.
RECORD_S = 13.0
# Transcribing and drawing with the tiny models on two CPU cores; generous.
DRAWN_WITHIN_S = 120.0


@dataclass(frozen=True)
class Served:
    daemon: DaemonProcess
    url: str
    gallery: Path


def words(text: str) -> str:
    """Lower case, punctuation gone, single spaces: how transcripts are compared."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def wait_for_url(daemon: DaemonProcess, timeout: float) -> str:
    """The page's address, from the daemon's log line once it serves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := SERVING.search(daemon.stderr):
            return match.group(1)
        if daemon.process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not serve its page within {timeout} s:\n{daemon.stderr}")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, pulse_server: PulseServer, base_config: str
) -> Iterator[Served]:
    """The daemon serving its page on a free port, its microphone fed silence."""
    root = tmp_path_factory.mktemp("talk")
    gallery = root / "gallery"
    config = root / "speech2image.toml"
    config.write_text(
        with_base(
            f'[audio]\ndevice = "pulse"\n[gallery]\ndir = "{gallery}"\nserve = true\nport = 0\n',
            base_config,
        ),
        encoding="utf-8",
    )
    if not pulse_server.mic_plugged:
        pulse_server.replug_mic()
    mic = VirtualMic(pulse_server.fifo, server=pulse_server)
    mic.start()
    daemon = DaemonProcess(["--config", str(config)], pulse_server.child_env())
    try:
        url = wait_for_url(daemon, timeout=120)
        daemon.wait_for("listening", timeout=60)
        yield Served(daemon, url, gallery)
    finally:
        code = daemon.terminate()
        mic.stop()
    assert code == 0, daemon.stderr


def request_row(browser: Browser) -> str:
    """The id of the newest request row on the page, once there is one."""
    row = browser.wait_for("#requests li.request[data-request]", timeout=30)
    return str(row.get_attribute("data-request"))


def picture_of(browser: Browser, request: str) -> str:
    """The gallery id of the picture the request row links to, once it lands."""
    css = f'li.request[data-request="{request}"] .outcome a.picture[data-id]'
    rejected = f'li.request[data-request="{request}"] .outcome.rejected'

    def landed() -> str | None:
        if browser.find_all(rejected):
            raise AssertionError(f"refused: {browser.text(rejected)}")
        found = browser.attributes(css, "data-id")
        return found[0] if found else None

    return browser.wait_until(landed, DRAWN_WITHIN_S, f"a picture for request {request}")


def sidecar(gallery: Path, image_id: str) -> dict[str, object]:
    image = gallery / image_id
    assert image.is_file(), f"{image_id} is not in the gallery"
    record: dict[str, object] = json.loads(image.with_suffix(".json").read_text("utf-8"))
    return record


def test_typed_prompt_becomes_a_picture(chromium: Browser, served: Served) -> None:
    open_gallery(chromium, served.url)
    assert chromium.find("#talk-panel").get_attribute("data-talk") == "on"
    prompt = "a red fox under a cherry tree"
    chromium.type("#prompt-input", prompt + "\n")
    request = request_row(chromium)
    row = f'li.request[data-request="{request}"]'
    assert chromium.text(f"{row} .transcript") == prompt
    image_id = picture_of(chromium, request)
    chromium.wait_for(f'#grid a.card[data-id="{image_id}"]')  # the grid got it live too
    record = sidecar(served.gallery, image_id)
    assert record["id"] == request
    assert record["prompt"] == prompt
    assert record["source"] == "web"


def test_spoken_request_ends_with_its_transcript_and_a_picture(
    chromium: Browser, served: Served
) -> None:
    open_gallery(chromium, served.url)
    chromium.click("#talk")
    chromium.wait_for('#talk[aria-pressed="true"]')
    time.sleep(RECORD_S)  # the fake microphone plays the sentence once, from the start
    chromium.click("#talk")
    request = request_row(chromium)
    row = f'li.request[data-request="{request}"]'
    chromium.wait_until(
        lambda: JFK in words(chromium.text(f"{row} .transcript")), 120, "the JFK transcript"
    )
    image_id = picture_of(chromium, request)
    record = sidecar(served.gallery, image_id)
    assert record["id"] == request
    assert record["source"] == "web"
    assert JFK in words(str(record["transcript"]))
    transcript = served.daemon.wait_for("transcript", timeout=10, id=request)
    assert JFK in words(transcript["text"])
