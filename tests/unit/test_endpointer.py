"""EndPointer: where the prompt after a wake word starts and ends, on synthetic VAD flags.

Frame indexes are relative to the wake (frame 0); one frame is 80 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

from speech2image.config import ListenConfig
from speech2image.listening.endpoint import (
    TRAILING_PAD_FRAMES,
    Decision,
    EndPointer,
    EndpointSettings,
    Phase,
)
from speech2image.listening.vad import is_speech

S = EndpointSettings(pre_roll=2, silence=9, max_length=40, no_speech=50, max_wake_tail=6)
_ = False
X = True


def drive(pointer: EndPointer, flags: Sequence[bool]) -> list[tuple[int, Decision]]:
    decisions = []
    for flag in flags:
        decision = pointer.step(flag)
        if decision is not Decision.NONE:
            decisions.append((pointer.now, decision))
    return decisions


def test_settings_from_seconds() -> None:
    settings = EndpointSettings.from_config(ListenConfig())
    assert settings.silence == 9  # 0.7 s
    assert settings.max_length == 188  # 15 s
    assert settings.no_speech == 50  # 4 s
    assert settings.pre_roll == 2  # 0.2 s rounds to 2 frames (0.16 s)
    assert settings.lookback == 6


def test_pause_after_wake_then_prompt_ended_by_silence() -> None:
    pointer = EndPointer(S, [_, X, X, X, X, _])  # the wake fired in the pause after the phrase
    assert pointer.phase is Phase.WAITING
    flags = [_, _, _, X, X, X, _, X, X] + [_] * 9
    decisions = drive(pointer, flags)
    assert decisions == [(4, Decision.START), (18, Decision.END_SILENCE)]
    assert pointer.span(Decision.END_SILENCE) == (2, 9 + TRAILING_PAD_FRAMES)


def test_pre_roll_never_reaches_into_the_wake_phrase() -> None:
    pointer = EndPointer(S, [X, X, X, X, X, X])  # still saying the phrase at the wake
    assert pointer.phase is Phase.WAKE_TAIL
    decisions = drive(pointer, [X, _, X, X] + [_] * 9)
    assert decisions[0] == (3, Decision.START)
    first, _last = pointer.span(decisions[-1][1])
    assert first == 2  # the pause at frame 2 is the earliest pre-roll, not frame 1 (phrase)


def test_prompt_already_started_when_the_wake_fires_late() -> None:
    # phrase, a 3-frame pause, then 2 frames of prompt before openWakeWord fired at 0.
    pointer = EndPointer(S, [X, X, X, _, _, _, X, X])
    assert pointer.phase is Phase.CAPTURING
    assert pointer.start == -3  # onset at -1, two frames of pre-roll inside the pause
    assert drive(pointer, [X] + [_] * 9) == [(10, Decision.END_SILENCE)]


def test_run_on_prompt_without_a_pause_starts_after_the_tail() -> None:
    pointer = EndPointer(S, [X] * 8)
    decisions = drive(pointer, [X] * 10 + [_] * 9)
    assert decisions[0] == (6, Decision.START)
    assert pointer.span(decisions[-1][1])[0] == 1


def test_nothing_said_after_wake_gives_no_speech() -> None:
    pointer = EndPointer(S, [X, X, _])
    assert drive(pointer, [_] * 60) == [(50, Decision.NO_SPEECH)]
    assert pointer.phase is Phase.DONE


def test_max_length_caps_endless_speech() -> None:
    pointer = EndPointer(S, [_])  # the wake frame itself is silent: pre-roll may include it
    decisions = drive(pointer, [X] * 100)
    assert decisions == [(1, Decision.START), (39, Decision.END_MAX_LENGTH)]
    first, last = pointer.span(Decision.END_MAX_LENGTH)
    assert last - first + 1 == 40


def test_short_pauses_inside_the_prompt_do_not_end_it() -> None:
    pointer = EndPointer(S, [_])
    flags = [X, X] + ([_] * 8 + [X]) * 3 + [_] * 9
    decisions = drive(pointer, flags)
    assert [d for _, d in decisions] == [Decision.START, Decision.END_SILENCE]


def test_vad_hysteresis() -> None:
    assert not is_speech(0.45, was_speech=False, threshold=0.5)
    assert is_speech(0.5, was_speech=False, threshold=0.5)
    assert is_speech(0.4, was_speech=True, threshold=0.5)
    assert not is_speech(0.3, was_speech=True, threshold=0.5)
