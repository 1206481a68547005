"""The one-line state systemd shows (STATUS=) and D-Bus signals, from the events."""

from __future__ import annotations

import numpy as np

from speech2image.events import (
    Accepted,
    Error,
    ImageWritten,
    Listening,
    Progress,
    Rejected,
    Transcript,
    Utterance,
    Wake,
)
from speech2image.livestate import STATES, LiveState, Snapshot, advance, describe


def utterance(rid: str) -> Utterance:
    audio = np.zeros(1600, dtype=np.int16)
    return Utterance(id=rid, t=1.0, start_s=0.5, duration_s=0.1, reason="silence", audio=audio)


def image(rid: str, path: str = "/g/a.png") -> ImageWritten:
    return ImageWritten(id=rid, t=2.0, path=path, prompt="a fox", seed=1, model="m", seconds=0.1)


def started() -> LiveState:
    live = LiveState()
    live.started()
    return live


def test_a_request_walks_through_the_states_and_back_to_listening() -> None:
    live, seen = started(), []
    live.subscribe(lambda state, detail: seen.append(detail))
    for event in (
        Listening(id=None, t=0, models=("hey_jarvis",), source="mic:#1 pulse"),
        Wake(id="r1", t=1, model="hey_jarvis", score=0.9),
        utterance("r1"),
        Transcript(id="r1", t=1, text="a fox", language="en", audio_s=1, seconds=0.1),
        Accepted(id="r1", t=1, text="a fox"),
        Progress(id="r1", t=1, step=1, steps=2),
        Progress(id="r1", t=1, step=2, steps=2),
        image("r1"),
    ):
        live.emit(event)
    assert seen == [
        "listening to a request",
        "transcribing",
        "drawing",
        "drawing 1/2",
        "drawing 2/2",
        "listening",
    ]
    assert live.snapshot.last_image == "/g/a.png"
    assert live.snapshot.microphone == "mic:#1 pulse"


def test_only_changes_are_told() -> None:
    live, seen = started(), []
    live.subscribe(lambda state, detail: seen.append(state))
    live.emit(Transcript(id="r", t=0, text="x", language="en", audio_s=1, seconds=0.1))
    live.emit(Error(id=None, t=0, stage="image", message="boom"))
    assert seen == []


def test_a_rejection_at_any_point_ends_the_request() -> None:
    live = started()
    live.emit(Wake(id="r1", t=1, model="m", score=0.9))
    live.emit(Rejected(id="r1", t=2, reason="empty"))
    assert live.current == ("listening", "listening")
    assert live.snapshot.last_image == ""


def test_paused_and_waiting_outrank_work_in_flight_and_stopping_outranks_all() -> None:
    live = started()
    live.emit(Accepted(id="r1", t=1, text="a fox"))
    live.emit(Accepted(id="r2", t=1, text="a cat"))
    live.emit(Progress(id="r1", t=1, step=3, steps=4))
    assert live.current == ("drawing", "drawing 3/4, 1 queued")
    live.waiting("'USB Audio'")
    assert live.current == ("waiting for microphone", "waiting for microphone 'USB Audio'")
    live.paused(True)
    assert live.current[0] == "paused"
    live.stopping()
    assert live.current[0] == "stopping"


def test_a_listening_event_ends_the_wait_for_the_microphone() -> None:
    live = started()
    live.waiting("'USB Audio'")
    live.emit(Listening(id=None, t=0, models=("m",), source="mic:#2 USB Audio"))
    assert live.current == ("listening", "listening")


def test_before_start_it_is_starting() -> None:
    assert LiveState().current == ("starting", "loading models")


def test_every_state_describe_gives_is_listed() -> None:
    snaps = [
        Snapshot(),
        Snapshot(starting=False),
        Snapshot(starting=False, capturing=frozenset({"a"})),
        Snapshot(starting=False, transcribing=frozenset({"a"})),
        Snapshot(starting=False, queued=frozenset({"a"})),
        Snapshot(starting=False, waiting_for="'x'"),
        Snapshot(starting=False, paused=True),
        Snapshot(stopping=True),
    ]
    assert sorted({describe(s)[0] for s in snaps}) == sorted(STATES)


def test_a_listener_that_raises_does_not_stop_the_others() -> None:
    live, seen = started(), []

    def broken(state: str, detail: str) -> None:
        raise RuntimeError("display gone")

    live.subscribe(broken)
    live.subscribe(lambda state, detail: seen.append(state))
    live.paused(True)
    assert seen == ["paused"]


def test_advance_ignores_events_of_no_request() -> None:
    snap = Snapshot(starting=False)
    assert advance(snap, Error(id=None, t=0, stage="x", message="y")) == snap
