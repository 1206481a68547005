"""Talking and typing to the daemon from the page, over HTTP: ``POST /api/speak`` with
what browsers record (real speech, tests/data/jfk.flac, as WebM/Opus), uploads too big,
too long or not audio, ``POST /api/generate``, busy, browse-only and cross-site.

The daemon is not the thing under test here: a small recording Talk stands in for it
(the daemon's side, webtalk.py, has its own tests with the real daemon)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from PIL import Image
from starlette.testclient import TestClient

from speech2image.gallery.access import AccessMiddleware, policy_for
from speech2image.gallery.live import DaemonEvents, EventHub
from speech2image.gallery.talk import MAX_PROMPT_CHARS, BusyError
from speech2image.gallery.upload import MAX_UPLOAD_BYTES
from speech2image.gallery.web import Gallery, create_app
from speech2image.pcm import SAMPLE_RATE, Frame
from tests.support import DATA, silence
from tests.unit.test_gallery_web import EventReader, wait_for_subscriber

LOCAL = "http://127.0.0.1:8765"


@dataclass
class RecordingTalk:
    """Takes every request (or refuses all as busy) and remembers what it got."""

    busy: bool = False
    spoken: list[Frame] = field(default_factory=list)
    typed: list[str] = field(default_factory=list)

    def speak(self, audio: Frame) -> str:
        if self.busy:
            raise BusyError
        self.spoken.append(audio)
        return f"web-{len(self.spoken)}"

    def type(self, prompt: str) -> str:
        if self.busy:
            raise BusyError
        self.typed.append(prompt)
        return f"typed-{len(self.typed)}"

    def state(self) -> tuple[str, str]:
        return "listening", "say the wake word, or talk from the page"

    @property
    def calls(self) -> int:
        return len(self.spoken) + len(self.typed)


@dataclass
class Page:
    client: TestClient
    talk: RecordingTalk
    hub: EventHub
    root: Path


def open_page(root: Path, talk: RecordingTalk | None) -> Iterator[tuple[TestClient, EventHub]]:
    gallery = Gallery.open(root)
    hub = EventHub()
    app = AccessMiddleware(
        create_app(gallery, hub, talk=talk), policy_for("127.0.0.1", 8765, None, secure=False)
    )
    try:
        with TestClient(app, base_url=LOCAL) as client:
            yield client, hub
    finally:
        gallery.state.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    talk = RecordingTalk()
    for client, hub in open_page(tmp_path / "gallery", talk):
        yield Page(client, talk, hub, tmp_path / "gallery")


@pytest.fixture
def browse_only(tmp_path: Path) -> Iterator[TestClient]:
    for client, _hub in open_page(tmp_path / "gallery", None):
        yield client


@pytest.fixture(scope="module")
def webm() -> bytes:
    """jfk.flac as Chrome's MediaRecorder sends it: live WebM (no duration), Opus, 48 kHz."""
    samples, rate = soundfile.read(DATA / "jfk.flac", dtype="float32", always_2d=True)
    out = io.BytesIO()
    with av.open(out, "w", format="webm", options={"live": "1"}) as muxer:
        stream = muxer.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32)[None, :]),
            format="flt",
            layout="mono",
        )
        frame.sample_rate = int(rate)
        for chunk in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(chunk):
                muxer.mux(packet)
    return out.getvalue()


def wav(audio: Frame) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


# --- speaking ------------------------------------------------------------------------


def test_status_names_the_daemons_state(page: Page) -> None:
    status = page.client.get("/api/status").json()
    assert status["talk"] is True
    assert status["state"] == "listening"
    assert status["detail"] == "say the wake word, or talk from the page"


def test_a_browser_recording_reaches_the_daemon_as_speech(page: Page, webm: bytes) -> None:
    response = page.client.post(
        "/api/speak", content=webm, headers={"Content-Type": "audio/webm;codecs=opus"}
    )
    assert response.status_code == 202
    assert response.json() == {"request": "web-1"}
    [audio] = page.talk.spoken
    assert audio.dtype == np.int16
    assert 10.5 < len(audio) / SAMPLE_RATE < 11.5  # the JFK sentence is 11 s
    assert np.abs(audio.astype(np.float64)).mean() > 300  # speech, not silence


def test_a_wav_recording_is_taken_too(page: Page) -> None:
    response = page.client.post(
        "/api/speak", content=wav(silence(2.0)), headers={"Content-Type": "audio/wav"}
    )
    assert response.status_code == 202
    assert len(page.talk.spoken[0]) == 2 * SAMPLE_RATE


def test_a_body_declared_too_large_is_413_unread(page: Page) -> None:
    response = page.client.post(
        "/api/speak",
        content=b"\0" * (MAX_UPLOAD_BYTES + 1),
        headers={"Content-Type": "audio/webm"},
    )
    assert response.status_code == 413
    assert "MB" in response.json()["error"]
    assert page.talk.calls == 0


def test_a_chunked_body_growing_too_large_is_413(page: Page) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(11):
            yield b"\0" * (1024 * 1024)

    response = page.client.post(
        "/api/speak", content=chunks(), headers={"Content-Type": "audio/webm"}
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert page.talk.calls == 0


def test_a_recording_too_long_is_413(page: Page) -> None:
    response = page.client.post(
        "/api/speak", content=wav(silence(31.0)), headers={"Content-Type": "audio/wav"}
    )
    assert response.status_code == 413
    assert "30 s" in response.json()["error"]
    assert page.talk.calls == 0


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (np.random.default_rng(1).bytes(50_000), 415),
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage", 415),
        (png(), 422),
        (b"", 422),
    ],
    ids=["random-bytes", "broken-wav", "png", "empty"],
)
def test_what_is_not_audio_is_a_clear_4xx(page: Page, body: bytes, status: int) -> None:
    response = page.client.post("/api/speak", content=body, headers={"Content-Type": "audio/webm"})
    assert response.status_code == status
    assert "WebM/Opus" in response.json()["error"]  # says what to send instead
    assert page.talk.calls == 0


def test_a_full_queue_is_503_busy(page: Page, webm: bytes) -> None:
    page.talk.busy = True
    spoken = page.client.post("/api/speak", content=webm, headers={"Content-Type": "audio/webm"})
    typed = page.client.post("/api/generate", json={"prompt": "a red fox"})
    for response in (spoken, typed):
        assert response.status_code == 503
        assert response.json()["busy"] is True
        assert "busy" in response.json()["error"]


def test_a_browse_only_gallery_takes_no_requests(browse_only: TestClient, webm: bytes) -> None:
    assert browse_only.get("/api/status").json()["talk"] is False
    spoken = browse_only.post("/api/speak", content=webm, headers={"Content-Type": "audio/webm"})
    typed = browse_only.post("/api/generate", json={"prompt": "a red fox"})
    for response in (spoken, typed):
        assert response.status_code == 501
        assert "browse-only" in response.json()["error"]


# --- typing --------------------------------------------------------------------------


def test_a_typed_prompt_is_queued_with_its_spaces_tidied(page: Page) -> None:
    response = page.client.post("/api/generate", json={"prompt": "  a red\n fox  "})
    assert response.status_code == 202
    assert response.json() == {"request": "typed-1"}
    assert page.talk.typed == ["a red fox"]
    longest = "x" * MAX_PROMPT_CHARS
    assert page.client.post("/api/generate", json={"prompt": longest}).status_code == 202


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"prompt": "a red fox"}', "text/plain", 415),
        (b"prompt=a+red+fox", "application/x-www-form-urlencoded", 415),
        (b'{"prompt": "a red fox"}', "", 415),
        (b'{"prompt": "a red', "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"prompt": ""}', "application/json", 422),
        (b'{"prompt": "  \\n "}', "application/json", 422),
        (b'{"prompt": 5}', "application/json", 422),
        (b'["a red fox"]', "application/json", 422),
        (b"{}", "application/json", 422),
        (b'{"prompt": "' + b"x" * (MAX_PROMPT_CHARS + 1) + b'"}', "application/json", 422),
        (b'{"prompt": "' + b"x" * 20_000 + b'"}', "application/json", 413),
    ],
)
def test_a_bad_typed_request_says_what_is_wrong(
    page: Page, body: bytes, content_type: str, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = page.client.post("/api/generate", content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]
    assert page.talk.calls == 0


# --- from other sites, and what the page hears back --------------------------------


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:9999"])
def test_another_site_cannot_talk_or_type(page: Page, webm: bytes, origin: str) -> None:
    spoken = page.client.post(
        "/api/speak", content=webm, headers={"Content-Type": "audio/webm", "Origin": origin}
    )
    typed = page.client.post(
        "/api/generate", json={"prompt": "a red fox"}, headers={"Origin": origin}
    )
    assert (spoken.status_code, typed.status_code) == (403, 403)
    assert page.talk.calls == 0
    own = page.client.post("/api/generate", json={"prompt": "a fox"}, headers={"Origin": LOCAL})
    assert own.status_code == 202


def test_the_daemons_events_reach_the_page(page: Page) -> None:
    from speech2image.events import ImageWritten, Transcript

    sink = DaemonEvents(page.hub, page.root.resolve())
    image = page.root.resolve() / "2026-11-25" / "140000-a-red-fox-42.png"
    with page.client.stream("GET", "/api/events") as response:
        reader = EventReader(response)
        assert reader.next() == (
            "state",
            dict(zip(("state", "detail"), page.talk.state(), strict=True)),
        )
        wait_for_subscriber(page.hub)
        sink.emit(
            Transcript(id="web-1", t=1.0, text="A red fox.", language="en", audio_s=2, seconds=0.5)
        )
        heard = reader.until("daemon")
        assert (heard["event"], heard["id"], heard["text"]) == ("transcript", "web-1", "A red fox.")
        sink.emit(
            ImageWritten(
                id="web-1",
                t=3.0,
                path=str(image),
                prompt="a red fox",
                seed=42,
                model="m",
                seconds=1,
            )
        )
        drawn = reader.until("daemon")
        assert (drawn["event"], drawn["image_id"]) == (
            "image",
            "2026-11-25/140000-a-red-fox-42.png",
        )
        sink.state("drawing", "step 2/4")
        assert reader.until("state") == {"state": "drawing", "detail": "step 2/4"}
        page.hub.publish("bye", {})
        reader.thread.join(5)
