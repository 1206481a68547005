"""The daemon as Wyoming sees it (``wyomingglue.DaemonPipeline``), with real models:
transcription only for ASR, a handled transcript that is moderated at once and drawn,
a refusal with a reason a voice assistant can speak, and a full queue that says busy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from speech2image.config import Config, load_config
from speech2image.wyomingglue import REPLIES, DaemonPipeline, EventTap, spoken
from tests.integration.daemon_thread import DaemonThread
from tests.support import data_audio, silence, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


class Running(DaemonThread):
    def __init__(self, config: Config, wav: Path) -> None:
        tap = EventTap()
        super().__init__(config, wav, tap)
        self.pipeline = DaemonPipeline(self.daemon, tap)
        self.run()


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, base_config: str, daemon_config_env: Path
) -> Iterator[Running]:
    from tests.conftest import with_base

    root = tmp_path_factory.mktemp("wyoming")
    config_path = root / "config.toml"
    config_path.write_text(
        with_base(f'[gallery]\ndir = "{root / "gallery"}"\n[image]\nqueue = 1\n', base_config),
        encoding="utf-8",
    )
    daemon = Running(load_config(str(config_path)), write_wav(root / "s.wav", silence(240)))
    yield daemon
    daemon.stop()


def test_asr_only_transcribes(running: Running) -> None:
    heard = running.pipeline.transcribe(data_audio("jfk.flac"), None)
    assert "ask not what your country can do for you" in heard.text.lower()
    assert heard.language == "en"
    assert running.recorder.events == [] or all(
        event["type"] == "listening" for event in running.recorder.events
    )  # no request was made


def test_a_handled_transcript_is_drawn_and_recorded(running: Running) -> None:
    context = {"conversation_id": "c1", "satellite_id": "assist_satellite.kitchen"}
    answer = running.pipeline.draw(
        "A red fox in the snow.", "en", "wyoming 127.0.0.1 satellite=kitchen", context
    )
    assert answer.handled, answer
    assert answer.reply == "Drawing A red fox in the snow."
    assert answer.request_id is not None
    end = running.recorder.wait_end(answer.request_id)
    assert end["type"] == "image"
    sidecar = json.loads(Path(end["path"]).with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["source"] == "wyoming"
    assert sidecar["origin"] == "wyoming 127.0.0.1 satellite=kitchen"


def test_a_refusal_is_not_handled_with_a_spoken_reason(running: Running) -> None:
    answer = running.pipeline.draw("I will kill my neighbour", "en", "wyoming test", {})
    assert not answer.handled
    assert (answer.reason, answer.reply) == ("toxic", REPLIES["toxic"])
    german = running.pipeline.draw("Ein roter Fuchs im Schnee", "de", "wyoming test", {})
    assert (german.handled, german.reason) == (False, "unsupported")


def test_a_full_queue_is_busy(running: Running) -> None:
    """A queue of one: while one picture is drawn and one waits, the next is refused."""
    answers = [
        running.pipeline.draw(f"a boat number {n}", "en", "wyoming test", {}) for n in range(6)
    ]
    busy = [a for a in answers if not a.handled]
    assert busy, answers
    assert all((a.reason, a.reply) == ("busy", REPLIES["busy"]) for a in busy)
    for answer in answers:
        assert answer.request_id is not None
        running.recorder.wait_end(answer.request_id)


def test_a_spoken_request_runs_like_a_microphones(running: Running) -> None:
    request_id = running.pipeline.spoken(
        data_audio("jfk.flac"), "satellite kitchen", ("hey_jarvis", 0.9)
    )
    end = running.recorder.wait_end(request_id)
    assert end["type"] == "image"
    sidecar = json.loads(Path(end["path"]).with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["wake"]["model"] == "hey_jarvis"
    assert "ask not what your country" in sidecar["transcript"].lower()


def test_a_reply_says_the_prompt_short() -> None:
    assert spoken("A red fox.") == "A red fox"
    long = "a very long prompt " * 10
    said = spoken(long)
    assert len(said) <= 61
    assert said.endswith("…")
