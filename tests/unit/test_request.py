"""The request record: it grows stage by stage, and its sidecar form reads back."""

from __future__ import annotations

import dataclasses
import json

import pytest

from speech2image.request import (
    SIDECAR_SCHEMA,
    ImagePart,
    ModerationPart,
    Request,
    SidecarError,
    from_sidecar,
    new_request_id,
)

RECIPE = ImagePart(7, 2, 0.0, 64, 64, "EulerDiscreteScheduler", "tiny", "", "cpu", "float32")


def spoken() -> Request:
    """A microphone request taken through every stage."""
    request = Request.start("microphone", "mic:#4 pulse")
    request = request.with_wake("hey_jarvis", 0.93219, 12.48)
    request = request.with_utterance(12.88, 2.8, "silence").timed("listen", 3.92)
    request = request.with_transcript("A red fox in the snow.", "en", 0.21)
    request = request.with_moderation(ModerationPart("profanity", True, {"obscene": 0.03}), 0.01)
    return request.with_image(RECIPE, 1.5).filed_as("140309-a-red-fox-in-the-snow-7.png")


def test_each_stage_returns_a_new_record_and_leaves_the_old_one_alone() -> None:
    started = Request.start("microphone")
    woken = started.with_wake("hey_jarvis", 0.9, 1.0)
    assert started.wake is None
    assert woken.wake is not None
    assert woken.id == started.id
    with pytest.raises(dataclasses.FrozenInstanceError):
        woken.prompt = "changed"  # type: ignore[misc]


def test_transcript_becomes_the_prompt_and_timings_add_up() -> None:
    request = spoken()
    assert request.prompt == "A red fox in the snow."
    assert request.timings == {
        "listen_s": 3.92,
        "transcribe_s": 0.21,
        "moderate_s": 0.01,
        "generate_s": 1.5,
    }


def test_ids_are_unique() -> None:
    ids = {new_request_id() for _ in range(10000)}
    assert len(ids) == 10000
    assert Request.start("command-line").id != Request.start("command-line").id


def test_sidecar_has_every_part_and_round_trips() -> None:
    request = spoken()
    sidecar = json.loads(json.dumps(request.to_sidecar()))
    assert sidecar["schema"] == SIDECAR_SCHEMA
    assert sidecar["source"] == "microphone"
    assert sidecar["origin"] == "mic:#4 pulse"
    assert sidecar["image"] == "140309-a-red-fox-in-the-snow-7.png"
    assert sidecar["wake"] == {"model": "hey_jarvis", "score": 0.9322, "t": 12.48}
    assert sidecar["utterance"] == {"start_s": 12.88, "duration_s": 2.8, "reason": "silence"}
    assert sidecar["transcript"] == "A red fox in the snow."
    assert sidecar["moderation"]["backend"] == "profanity"
    assert (sidecar["device"], sidecar["dtype"], sidecar["model"]) == ("cpu", "float32", "tiny")
    assert sidecar["versions"]["speech2image"] == sidecar["speech2image"]
    assert "numpy" not in sidecar["versions"]  # only what decides the picture
    assert from_sidecar(sidecar) == request


def test_typed_request_has_no_audio_parts() -> None:
    request = Request.start("command-line", prompt="a lighthouse", seed=3)
    sidecar = request.with_image(RECIPE, 0.2).to_sidecar()
    for part in ("wake", "utterance", "transcript"):
        assert part not in sidecar
    back = from_sidecar(sidecar)
    assert (back.source, back.prompt, back.wake) == ("command-line", "a lighthouse", None)


def test_reads_a_sidecar_written_before_schemas() -> None:
    """What speech2image 0.1.0 wrote, key for key (commit 0213174, gallery/writer.py)."""
    old = {
        "image": "140309-a-red-fox-7.png",
        "created": "2026-11-25T14:03:09+00:00",
        "prompt": "A red fox.",
        "negative_prompt": "",
        "seed": 7,
        "steps": 1,
        "guidance": 0.0,
        "sampler": "EulerDiscreteScheduler",
        "size": [512, 512],
        "model": "stabilityai/sd-turbo",
        "id": "2f1c0e9ab3d4",
        "transcript": "A red fox.",
        "wake": {"model": "hey_jarvis", "score": 0.93},
        "utterance": {"start_s": 12.88, "duration_s": 2.8},
        "moderation": {"backend": "profanity+lexicon+semantic", "scores": {"obscene": 0.02}},
        "timings": {"transcribe_s": 0.21, "generate_s": 3.1},
        "device": "cuda",
        "dtype": "float16",
        "speech2image": "0.1.0",
    }
    request = from_sidecar(old)
    assert request.source == "microphone"
    assert request.wake is not None
    assert request.wake.model == "hey_jarvis"
    assert request.image is not None
    assert (request.image.seed, request.image.width, request.image.device) == (7, 512, "cuda")
    assert request.moderation is not None
    assert request.moderation.allowed


def test_a_newer_schema_is_refused_with_the_fix() -> None:
    with pytest.raises(SidecarError, match="upgrade speech2image"):
        from_sidecar({"schema": SIDECAR_SCHEMA + 1, "prompt": "x"})


def test_a_malformed_sidecar_is_a_sidecar_error() -> None:
    with pytest.raises(SidecarError, match="malformed"):
        from_sidecar({"schema": 1, "wake": {"score": 0.9}})


def test_filing_needs_an_image() -> None:
    with pytest.raises(ValueError, match="no image"):
        Request.start("file").filed_as("x.png")
