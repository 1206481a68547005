"""The Listener: wake word, then the utterance that follows, cut out by voice activity.

Per 80 ms frame it scores the wake-word models and the VAD, and returns at most one
event. The decisions live in two pure state machines, :class:`WakeGate` (in
``wakeword``) and :class:`EndPointer` (in ``endpoint``); this class only moves
audio between them.
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


@dataclass
class _Capture:
    """One wake word's worth of state: its id, time and the frames since it."""

    id: str
    wake_frame: int
    pointer: EndPointer
    frames: list[Frame]  # frames -len(before)+1 .. now, relative to the wake
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
        keep = max(self._settings.lookback, self._settings.pre_roll) + 1
        self._recent: deque[tuple[Frame, bool]] = deque(maxlen=keep)
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
        self._speech = is_speech(self._vad.probability(frame), self._speech, self._threshold)
        self._recent.append((frame, self._speech))
        hit = self._gate.update(scores)
        if self._capture is not None:
            return self._continue(frame)
        if hit is None:
            return None
        self._scorer.reset()  # the tail of the phrase must not wake us again
        history = list(self._recent)
        pointer = EndPointer(self._settings, [speech for _, speech in history])
        self._capture = _Capture(
            new_request_id(), index, pointer, [f for f, _ in history], len(history) - 1
        )
        log.info("wake word %s (score %.2f)", hit.model, hit.score)
        return Wake(id=self._capture.id, t=self.now, model=hit.model, score=hit.score)

    def _continue(self, frame: Frame) -> Event | None:
        capture = self._capture
        assert capture is not None
        capture.frames.append(frame)
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
