"""A stage that raises ends its request as `rejected: error`, and the next request works.

The real daemon, in process, with the real models; each fault injector wraps a real
stage and makes only its first call raise, the way a CUDA error or a bug in a
backend would. Two spoken requests in one file: the first must end in an `error`
event naming the stage and `rejected: error`, the second in a picture. Generation
raising is covered the same way in test_request_contract.py
(``test_mixed_file_with_a_failing_generator``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from speech2image.config import Config, load_config
from speech2image.daemon import Daemon, Stages
from speech2image.events import Event
from speech2image.gallery.writer import GalleryWriter
from speech2image.listening.audio import FileSource
from speech2image.moderation.verdict import PromptModerator, Verdict
from speech2image.speech.transcribe import Transcriber, Transcription
from tests.support import concat, data_audio, silence, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # diffusers' schedulers call np.array() on tensors; numpy 2 deprecates how torch answers
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


class FirstTranscriptionFails:
    """The real transcriber, except that its first call raises."""

    def __init__(self, real: Transcriber) -> None:
        self._real = real
        self.calls = 0

    def transcribe(self, audio: npt.NDArray[np.int16]) -> Transcription:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("CUDA failed with error out of memory")
        return self._real.transcribe(audio)


class FirstModerationFails:
    """The real moderator, except that its first call raises, repeating its input as
    error messages often do (so the log must not carry it: see the ledger)."""

    def __init__(self, real: PromptModerator) -> None:
        self._real = real
        self.name = real.name
        self.calls = 0

    def check(self, text: str, language: str | None = None) -> Verdict:
        self.calls += 1
        if self.calls == 1:
            raise ValueError(f"cannot score {text!r}: the tokenizer is gone")
        return self._real.check(text, language)


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        self.events.append(event.to_dict())


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, base_config: str) -> tuple[Config, Stages]:
    """Every model once for the module; each test gets its own gallery writer."""
    path = tmp_path_factory.mktemp("stage-faults") / "config.toml"
    path.write_text(base_config, encoding="utf-8")
    config = load_config(str(path))
    return config, Stages.load(config)


def two_requests(tmp_path: Path) -> Path:
    benign = data_audio("espeak/hey_jarvis_benign_en+f3.wav")
    audio = concat(silence(0.5), benign, silence(2.0), benign, silence(2.0))
    return write_wav(tmp_path / "two.wav", audio)


def run_with(
    tmp_path: Path, loaded: tuple[Config, Stages], **faulty: object
) -> tuple[list[dict[str, Any]], Path]:
    config, stages = loaded
    gallery = tmp_path / "gallery"
    broken = dataclasses.replace(stages, writer=GalleryWriter(gallery), **faulty)  # type: ignore[arg-type]
    recorder = Recorder()
    daemon = Daemon(config, recorder, broken)
    assert daemon.run(FileSource(two_requests(tmp_path)), wait_when_busy=True) == 0
    return recorder.events, gallery


def outcome(events: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    (end,) = [e for e in events if e["id"] == request_id and e["type"] in ("image", "rejected")]
    return end


def assert_first_failed_in(stage: str, events: list[dict[str, Any]], gallery: Path) -> None:
    first, second = [e["id"] for e in events if e["type"] == "wake"]
    (error,) = [e for e in events if e["type"] == "error"]
    assert (error["id"], error["stage"]) == (first, stage)
    failed = outcome(events, first)
    assert (failed["type"], failed["reason"]) == ("rejected", "error")
    assert events.index(error) < events.index(failed)  # the why comes before the end
    drawn = outcome(events, second)
    assert drawn["type"] == "image"  # the next request works
    pngs = [p for p in gallery.rglob("*.png") if ".tmp" not in p.parts]
    assert pngs == [Path(drawn["path"])]


def test_transcription_raising_fails_one_request(
    tmp_path: Path, loaded: tuple[Config, Stages]
) -> None:
    transcriber = FirstTranscriptionFails(loaded[1].transcriber)
    events, gallery = run_with(tmp_path, loaded, transcriber=transcriber)
    assert_first_failed_in("speech", events, gallery)
    assert transcriber.calls == 2
    first = next(e["id"] for e in events if e["type"] == "wake")
    assert "out of memory" in outcome(events, first)["detail"]


def test_moderation_raising_fails_one_request_and_keeps_the_prompt_out_of_logs(
    tmp_path: Path, loaded: tuple[Config, Stages], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="speech2image")
    moderator = FirstModerationFails(loaded[1].moderator)
    events, gallery = run_with(tmp_path, loaded, moderator=moderator)
    assert_first_failed_in("moderation", events, gallery)
    transcript = next(e["text"] for e in events if e["type"] == "transcript")
    assert "lighthouse" in transcript.lower()  # what the fixture says
    (error,) = [e for e in events if e["type"] == "error"]
    assert transcript in error["message"]  # the event says it all ...
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("moderation failed" in message for message in loud)
    assert not [m for m in loud if "lighthouse" in m.lower()]  # ... the log does not
    quiet = [r.getMessage() for r in caplog.records if r.levelno < logging.INFO]
    assert any(transcript in message for message in quiet)  # at DEBUG it may
