"""The Listener: wake word, then the utterance that follows, cut out by voice activity.

Per 80 ms frame it scores the wake-word models and returns at most one event. Run
on every frame, the VAD would add a fifth to a quarter to the cost of listening, so
it runs only from a wake onward: while idle the listener keeps just the last few
seconds of raw frames (see BENCHMARKS.md, "Listening cost"); at a wake it
resets the VAD and runs it over them in one call (the end-pointer's look-back),
then frame by frame until the utterance has ended. The decisions live in two pure
state machines, :class:`WakeGate` (in ``wakeword``) and :class:`EndPointer` (in
``endpoint``); this class only moves audio between them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config import ListenConfig
from ..events import Event, Rejected, Utterance, Wake
from ..pcm import FRAME_SECONDS, SAMPLE_RATE, Frame
from ..request import new_request_id
from .endpoint import Decision, EndPointer, EndpointSettings, Phase
from .vad import VoiceActivity, is_speech
from .wakeword import WakeGate, WakeScorer

log = logging.getLogger(__name__)

# Frames the VAD runs over at a wake before the end-pointer's look-back. Silero is
# an LSTM: straight after a reset its speech probability differs from that of a VAD
# that has been running by up to 0.95. Measured on tests/data (378 wakes: the eight
# espeak/hey_jarvis_en*.wav voices, hey_mycroft_test.wav and alexa_test.wav, then
# jfk.flac's first phrase, prompt_1 or nothing, preceded by 1 s of silence, 4 s of
# noise, or 20-30 s of jfk.flac or espeak speech), the look-back decisions equal
# those of a VAD that ran continuously from the start of the file:
#
#   warm-up frames        0      40     60     100    240
#   after silence        100 %  100 %  100 %  100 %  100 %   (the tests' inputs)
#   all 378 wakes         68 %   79 %   83 %   86 %   95 %
#
# 60 frames (4.8 s) settle every wake after silence or noise; after speech, Silero
# keeps a trace of it for tens of seconds (some decisions still differ with 19 s
# of warm-up), so no buffer buys equality there. What differs is single frames
# whose probability sits at the threshold as speech fades, and it costs nothing in
# accuracy: on 100 of those inputs the utterance's start and end were as close to
# the true speech bounds as with the continuous VAD (mean error 156 vs 152 ms at
# the start, 136 vs 131 ms at the end).
WARM_UP_FRAMES = 60


@dataclass
class _Capture:
    """One wake word's worth of state: its id, time and the frames since it."""

    id: str
    wake_frame: int
    pointer: EndPointer
    frames: list[Frame]  # frames -before .. now, relative to the wake
    before: int


class Listener:
    """Turns frames into ``wake``, ``utterance`` and ``rejected: empty`` events."""

    def __init__(
        self,
        scorer: WakeScorer,
        gate: WakeGate,
        vad: VoiceActivity,
        config: ListenConfig,
    ) -> None:
        self._scorer = scorer
        self._gate = gate
        self._vad = vad
        self._threshold = config.vad_threshold
        self._settings = EndpointSettings.from_config(config)
        self._lookback = max(self._settings.lookback, self._settings.pre_roll) + 1
        # +1: the warm-up starts on an even frame (see _catch_up), which may drop one
        self._recent: deque[Frame] = deque(maxlen=self._lookback + WARM_UP_FRAMES + 1)
        self._speech = False
        self._frame_index = 0
        self._capture: _Capture | None = None

    @property
    def now(self) -> float:
        """Seconds of audio heard so far: the ``t`` of events."""
        return self._frame_index * FRAME_SECONDS

    def process(self, frame: Frame) -> Event | None:
        index = self._frame_index
        self._frame_index += 1
        scores = self._scorer.scores(frame)
        self._recent.append(frame)
        hit = self._gate.update(scores)
        if self._capture is not None:
            return self._continue(frame)
        if hit is None:
            return None
        self._scorer.reset()  # the tail of the phrase must not wake us again
        frames, history = self._catch_up(index)
        pointer = EndPointer(self._settings, history)
        self._capture = _Capture(new_request_id(), index, pointer, frames, len(frames) - 1)
        log.info("wake word %s (score %.2f)", hit.model, hit.score)
        return Wake(id=self._capture.id, t=self.now, model=hit.model, score=hit.score)

    def _catch_up(self, index: int) -> tuple[list[Frame], list[bool]]:
        """The look-back frames and their speech decisions, from a fresh VAD run over
        the buffer. It starts on an even frame of the stream: two frames are exactly
        five Silero chunks, so the chunks fall where they would for a VAD that had
        been running since the first frame."""
        buffered = list(self._recent)
        buffered = buffered[(index - len(buffered) + 1) % 2 :]
        self._vad.reset()
        self._speech, history = False, []
        for probability in self._vad.probabilities(buffered):
            self._speech = is_speech(probability, self._speech, self._threshold)
            history.append(self._speech)
        return buffered[-self._lookback :], history[-self._lookback :]

    def _continue(self, frame: Frame) -> Event | None:
        capture = self._capture
        assert capture is not None
        capture.frames.append(frame)
        self._speech = is_speech(self._vad.probability(frame), self._speech, self._threshold)
        decision = capture.pointer.step(self._speech)
        if decision is Decision.NO_SPEECH:
            self._capture = None
            log.info("nothing said after the wake word")
            return Rejected(id=capture.id, t=self.now, reason="empty", detail="no speech")
        if decision in (Decision.END_SILENCE, Decision.END_MAX_LENGTH):
            self._capture = None
            return self._utterance(capture, decision)
        return None

    def finish(self) -> Event | None:
        """The input ended: close an open capture as if silence followed."""
        capture, self._capture = self._capture, None
        if capture is None:
            return None
        if capture.pointer.phase is Phase.CAPTURING:
            return self._utterance(capture, Decision.END_SILENCE)
        return Rejected(id=capture.id, t=self.now, reason="empty", detail="no speech")

    def _utterance(self, capture: _Capture, decision: Decision) -> Utterance:
        first, last = capture.pointer.span(decision)
        lo = max(0, first + capture.before)
        audio = np.concatenate(capture.frames[lo : last + capture.before + 1])
        start_s = (capture.wake_frame + first) * FRAME_SECONDS
        reason: Literal["silence", "max_length"] = (
            "max_length" if decision is Decision.END_MAX_LENGTH else "silence"
        )
        log.info("utterance of %.2f s (%s)", len(audio) / SAMPLE_RATE, reason)
        return Utterance(
            id=capture.id,
            t=self.now,
            start_s=start_s,
            duration_s=len(audio) / SAMPLE_RATE,
            reason=reason,
            audio=audio,
        )
