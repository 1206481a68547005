"""The end-pointer: where the prompt after a wake word starts and where it ends.

A pure state machine over per-frame speech decisions, tested on synthetic
sequences. Where the prompt starts is the subtle part. openWakeWord fires anywhere
from the last syllable of the phrase to ~0.5 s after it, so at the moment of the
wake the speaker may still be saying "...jarvis", be silent, or already be saying
"a red fox". The end-pointer looks back over the last half second of VAD decisions
to tell these apart, so the wake phrase stays out of the prompt and the first words
of the prompt stay in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..config import ListenConfig
from ..pcm import FRAME_SECONDS

LOOKBACK_SECONDS = 0.5  # how far back a pause after the wake phrase is searched for
MIN_GAP_FRAMES = 2  # a pause this long (160 ms) separates the wake phrase from the prompt
TRAILING_PAD_FRAMES = 1  # silence kept after the last speech frame (VAD hysteresis adds more)


def frames_for(seconds: float) -> int:
    return max(0, round(seconds / FRAME_SECONDS))


class Phase(Enum):
    WAKE_TAIL = "wake_tail"  # the wake phrase may still be being spoken
    WAITING = "waiting"  # the phrase is over, the prompt has not started
    CAPTURING = "capturing"
    DONE = "done"


class Decision(Enum):
    NONE = "none"
    START = "start"
    END_SILENCE = "silence"
    END_MAX_LENGTH = "max_length"
    NO_SPEECH = "no_speech"


@dataclass(frozen=True)
class EndpointSettings:
    """The ``[listen]`` durations, in frames."""

    pre_roll: int
    silence: int
    max_length: int
    no_speech: int
    max_wake_tail: int
    lookback: int = frames_for(LOOKBACK_SECONDS)

    @classmethod
    def from_config(cls, config: ListenConfig) -> EndpointSettings:
        return cls(
            pre_roll=frames_for(config.pre_roll),
            silence=max(1, frames_for(config.silence_timeout)),
            max_length=max(1, frames_for(config.max_utterance)),
            no_speech=max(1, frames_for(config.no_speech_timeout)),
            max_wake_tail=frames_for(config.max_wake_tail),
        )


class EndPointer:
    """Decides where the prompt after one wake word starts and ends.

    Frame indexes are relative to the wake: 0 is the frame the wake word fired on,
    negative ones came before it. ``history`` holds the VAD decisions up to and
    including frame 0.
    """

    def __init__(self, settings: EndpointSettings, history: Sequence[bool]) -> None:
        self.s = settings
        self.now = 0
        self.start = 1
        self.last_speech = 0
        self.floor = 1  # the earliest frame the pre-roll may reach back to
        self.phase = self._initial_phase(list(history))

    def _initial_phase(self, history: list[bool]) -> Phase:
        if not history or not history[-1]:
            spoken = [i for i, speech in enumerate(history) if speech]
            self.floor = (spoken[-1] + 1 - len(history) + 1) if spoken else 1 - len(history)
            return Phase.WAITING
        recent = history[-self.s.lookback :] if self.s.lookback else []
        gap_end = _end_of_last_gap(recent)
        if gap_end is None:
            return Phase.WAKE_TAIL
        onset = gap_end - len(recent) + 2  # relative index of the first frame after the pause
        gap_start = onset - _gap_length(recent, gap_end)
        self.start = max(onset - self.s.pre_roll, gap_start)
        self.last_speech = 0
        return Phase.CAPTURING

    def step(self, speech: bool) -> Decision:
        if self.phase is Phase.DONE:
            return Decision.NONE
        self.now += 1
        if self.phase is Phase.WAKE_TAIL:
            return self._wake_tail(speech)
        if self.phase is Phase.WAITING:
            return self._waiting(speech)
        return self._capturing(speech)

    def _wake_tail(self, speech: bool) -> Decision:
        if not speech:
            self.phase, self.floor = Phase.WAITING, self.now
            return self._waiting(speech)
        if self.now >= self.s.max_wake_tail:
            # No pause at all: the speaker ran the prompt on; keep what came after the wake.
            self.phase, self.start, self.last_speech = Phase.CAPTURING, 1, self.now
            return Decision.START
        return Decision.NONE

    def _waiting(self, speech: bool) -> Decision:
        if speech:
            self.phase = Phase.CAPTURING
            self.start = max(self.now - self.s.pre_roll, self.floor)
            self.last_speech = self.now
            return Decision.START
        if self.now >= self.s.no_speech:
            self.phase = Phase.DONE
            return Decision.NO_SPEECH
        return Decision.NONE

    def _capturing(self, speech: bool) -> Decision:
        if speech:
            self.last_speech = self.now
        if self.now - self.last_speech >= self.s.silence:
            self.phase = Phase.DONE
            return Decision.END_SILENCE
        if self.now - self.start + 1 >= self.s.max_length:
            self.phase = Phase.DONE
            return Decision.END_MAX_LENGTH
        return Decision.NONE

    def span(self, decision: Decision) -> tuple[int, int]:
        """First and last frame (inclusive) of the utterance once it has ended."""
        if decision is Decision.END_MAX_LENGTH:
            return self.start, self.now
        return self.start, min(self.last_speech + TRAILING_PAD_FRAMES, self.now)


def _end_of_last_gap(flags: list[bool]) -> int | None:
    """Index of the last silent frame of the latest pause of MIN_GAP_FRAMES or more."""
    run = 0
    found = None
    for i, speech in enumerate(flags):
        run = 0 if speech else run + 1
        if run >= MIN_GAP_FRAMES:
            found = i
    return found


def _gap_length(flags: list[bool], end: int) -> int:
    length = 0
    while end - length >= 0 and not flags[end - length]:
        length += 1
    return length
