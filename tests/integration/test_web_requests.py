"""Requests from the gallery page through the real daemon: a recording uploaded to
``/api/speak`` and a typed prompt to ``/api/generate`` are transcribed, moderated and
drawn by the daemon's own models and queue, and end like any other request.

The daemon listens to a paced file of silence (a stand-in microphone that never wakes),
so the only requests are the page's.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from speech2image.config import Config, load_config
from speech2image.webtalk import ServedPage
from tests.integration.daemon_thread import DaemonThread
from tests.support import data_audio, silence, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
ConfigFile = Callable[[str], Path]
JFK_WORDS = "ask not what your country can do for you"


class RunningDaemon(DaemonThread):
    """The daemon serving its page (``[gallery] serve``, any free port)."""

    def __init__(self, config: Config, wav: Path) -> None:
        self.page = ServedPage(config)
        super().__init__(config, wav, self.page.events)
        self.url = self.page.start(self.daemon)
        self.run()

    def stop(self) -> None:
        super().stop()
        self.page.stop()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, base_config: str, daemon_config_env: Path
) -> Iterator[RunningDaemon]:
    from tests.conftest import with_base

    root = tmp_path_factory.mktemp("web")
    gallery = root / "gallery"
    config_path = root / "config.toml"
    config_path.write_text(
        with_base(f'[gallery]\ndir = "{gallery}"\nserve = true\nport = 0\n', base_config),
        encoding="utf-8",
    )
    running = RunningDaemon(load_config(str(config_path)), write_wav(root / "s.wav", silence(240)))
    yield running
    running.stop()


def jfk_wav_bytes() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data_audio("jfk.flac"), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def sidecar_of(image_event: dict[str, Any]) -> dict[str, Any]:
    path = Path(image_event["path"]).with_suffix(".json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_a_recording_from_the_page_becomes_a_picture(served: RunningDaemon) -> None:
    response = httpx.post(
        served.url + "api/speak",
        content=jfk_wav_bytes(),
        headers={"Content-Type": "audio/wav"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["request"]

    end = served.recorder.wait_end(request_id)
    assert end["type"] == "image", end
    transcript = next(
        e for e in served.recorder.events if e["id"] == request_id and e["type"] == "transcript"
    )
    words = "".join(c for c in transcript["text"].lower() if c.isalpha() or c == " ")
    assert JFK_WORDS in " ".join(words.split())
    sidecar = sidecar_of(end)
    assert sidecar["source"] == "web"
    assert sidecar["origin"] == "gallery page"
    assert "wake" not in sidecar  # no wake word: the page is the trigger
    # and the page lists it
    listed = httpx.get(served.url + "api/images", timeout=10).json()["images"]
    assert Path(end["path"]).name in {image["name"] for image in listed}


def test_a_typed_prompt_is_drawn_and_a_toxic_one_refused(served: RunningDaemon) -> None:
    ok = httpx.post(served.url + "api/generate", json={"prompt": "a red fox under a tree"})
    bad = httpx.post(served.url + "api/generate", json={"prompt": "I will kill my neighbour"})
    assert ok.status_code == bad.status_code == 202, (ok.text, bad.text)

    drawn = served.recorder.wait_end(ok.json()["request"])
    refused = served.recorder.wait_end(bad.json()["request"])
    assert drawn["type"] == "image"
    assert sidecar_of(drawn)["prompt"] == "a red fox under a tree"
    assert refused["type"] == "rejected"
    assert refused["reason"] == "toxic"


def test_the_page_hears_the_daemon_events(served: RunningDaemon) -> None:
    """The event stream carries a page request's transcript and end, with the image's id."""
    seen: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", served.url + "api/events", timeout=60) as stream:
            name = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    seen.append((name, json.loads(line[6:])))
                    if name == "daemon" and seen[-1][1]["type"] in ("image", "rejected"):
                        done.set()
                        return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    time.sleep(0.5)  # the stream is open (its first event is the state)
    response = httpx.post(served.url + "api/generate", json={"prompt": "a blue boat"})
    assert response.status_code == 202
    assert done.wait(90), seen
    daemon_events = [data for name, data in seen if name == "daemon"]
    assert daemon_events[-1]["id"] == response.json()["request"]
    assert daemon_events[-1]["type"] == "image"
    assert daemon_events[-1]["image_id"].endswith(".png")
    assert any(name == "state" for name, _ in seen)
