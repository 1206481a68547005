"""The Listener: wake word, then the utterance that follows, cut out by voice activity.

Per 80 ms frame it scores the wake-word models and returns at most one event. Run
on every frame, the VAD would add a fifth to a quarter to the cost of listening, so
it runs only from a wake onward: while idle the listener keeps just the last few
seconds of raw frames (see BENCHMARKS.md, "Listening cost"); at a wake it
resets the VAD and runs it over them in one call (the end-pointer's look-back),
then frame by frame until the utterance has ended. The decisions live in two pure
state machines, :class:`WakeGate` (in ``wakeword``) and :class:`EndPointer` (in
``endpoint``); this class only moves audio between them.

Two additions: the wake sound and listening on request. At a wake the ``feedback``
callable plays a chime and says for how long it will come back through the
microphone; that much input after the wake is replaced by zeros, for the wake
model, the VAD and the utterance alike (see :meth:`Listener.process`).
:meth:`Listener.listen_now` (a keyboard shortcut, over D-Bus) makes the next frame
start a capture as a wake would, with none of the audio before it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
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
LISTEN_NOW = "listen-now"  # the ``model`` of a wake that a request, not a word, made
MAX_KEEP_OUT_S = 1.0  # a feedback that claims more is misreporting its latency

Feedback = Callable[[], float]  # plays the wake sound; seconds of input to keep out


@dataclass
class _Capture:
    """One wake word's worth of state: its id, time and the frames since it."""

    id: str
    wake_frame: int
    pointer: EndPointer
    frames: list[Frame]  # frames -before .. now, relative to the wake
    before: int
    muted: int = 0  # samples of input still to be replaced by zeros (the wake sound)


class Listener:
    """Turns frames into ``wake``, ``utterance`` and ``rejected: empty`` events."""

    def __init__(
        self,
        scorer: WakeScorer,
        gate: WakeGate,
        vad: VoiceActivity,
        config: ListenConfig,
        feedback: Feedback | None = None,
    ) -> None:
        self._scorer = scorer
        self._gate = gate
        self._vad = vad
        self._feedback = feedback
        self._threshold = config.vad_threshold
        self._settings = EndpointSettings.from_config(config)
        self._lookback = max(self._settings.lookback, self._settings.pre_roll) + 1
        # +1: the warm-up starts on an even frame (see _catch_up), which may drop one
        self._recent: deque[Frame] = deque(maxlen=self._lookback + WARM_UP_FRAMES + 1)
        self._speech = False
        self._frame_index = 0
        self._capture: _Capture | None = None
        self._asked = threading.Lock()  # guards _listen_now, set from another thread
        self._listen_now = False

    @property
    def now(self) -> float:
        """Seconds of audio heard so far: the ``t`` of events."""
        return self._frame_index * FRAME_SECONDS

    def follow(self, previous: Listener) -> None:
        """Take over from ``previous`` (a config reload) between two frames: its clock,
        so event times go on counting, its buffer of recent frames, so a wake straight
        after the switch still has its look-back, and a pending request to listen now.
        A capture in flight is not taken over: the caller has ``finish``-ed it."""
        self._frame_index = previous._frame_index
        self._recent.clear()
        self._recent.extend(previous._recent)  # keeps the newest if this buffer is shorter
        with previous._asked:
            asked, previous._listen_now = previous._listen_now, False
        with self._asked:
            self._listen_now = self._listen_now or asked

    def listen_now(self) -> None:
        """Start a capture at the next frame, as if the wake word had been heard.

        Thread-safe: the D-Bus control calls it for a keyboard shortcut. A request
        that arrives while a capture is running is dropped, not kept for later.
        """
        with self._asked:
            self._listen_now = True

    def process(self, frame: Frame) -> Event | None:
        """One frame in, at most one event out.

        After a wake, the ``feedback``'s seconds of input are replaced by zeros before
        anything looks at them (wake model, VAD, utterance, a later wake's look-back):
        the chime, played from the speakers, reaches the microphone. It is not what
        the user said, and what Whisper makes of a tone depends on the model, the
        speakers and the room, while zeros (digital silence) are nothing anywhere.
        The price is the syllables said over the chime. Measured on the espeak
        fixtures with tiny.en (18 requests): a prompt run straight on after "hey
        jarvis" loses its first word (WER 0.05 -> 0.15), one after a pause of 0.15 s
        or more loses nothing, and people wait for a sound they know is coming.
        (The chime itself, mixed in with two echoes at 0.3 or 0.9 of full scale,
        left tiny.en's WER at 0.05 there, and Silero scores it under 0.05.) The
        wake word's own frames and the look-back before them precede the chime and
        are untouched.
        """
        index = self._frame_index
        self._frame_index += 1
        frame, muted = self._keep_out(frame)
        scores = self._scorer.scores(frame)
        self._recent.append(frame)
        hit = self._gate.update(scores)
        with self._asked:
            asked, self._listen_now = self._listen_now, False
        if self._capture is not None:
            if asked:
                log.info("asked to listen while already listening")
            return self._continue(frame, muted)
        if hit is not None:
            self._scorer.reset()  # the tail of the phrase must not wake us again
            log.info("wake word %s (score %.2f)", hit.model, hit.score)
            frames, history = self._catch_up(index)
            return self._start(index, frames, history, hit.model, hit.score)
        if asked:
            # The look-back tells the wake phrase's tail from the prompt; here the
            # prompt can only follow the request, so the end-pointer gets no history
            # (it starts WAITING, its pre-roll floored at the next frame) and the
            # utterance holds no audio from before it. The VAD is still warmed on
            # the buffer, as at a wake, so its decisions are a running VAD's.
            log.info("listening now, as asked")
            frames, _ = self._catch_up(index)
            return self._start(index, frames[-1:], [], LISTEN_NOW, 1.0)
        return None

    def _start(
        self, index: int, frames: list[Frame], history: list[bool], model: str, score: float
    ) -> Wake:
        pointer = EndPointer(self._settings, history)
        capture = _Capture(new_request_id(), index, pointer, frames, len(frames) - 1)
        capture.muted = self._keep_out_samples()
        self._capture = capture
        return Wake(id=capture.id, t=self.now, model=model, score=score)

    def _keep_out_samples(self) -> int:
        """Play the wake sound; how many samples after the wake to replace by zeros."""
        if self._feedback is None:
            return 0
        try:
            seconds = float(self._feedback())
        except Exception as exc:  # feedback must never stop listening
            log.warning("the wake feedback failed: %s", exc)
            return 0
        if not math.isfinite(seconds):
            return 0
        return math.ceil(min(max(seconds, 0.0), MAX_KEEP_OUT_S) * SAMPLE_RATE)

    def _keep_out(self, frame: Frame) -> tuple[Frame, bool]:
        """The frame with the wake sound's stretch zeroed, and whether it had any."""
        capture = self._capture
        if capture is None or capture.muted <= 0:
            return frame, False
        count = min(capture.muted, len(frame))
        capture.muted -= count
        kept = frame.copy()
        kept[:count] = 0
        return kept, True

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

    def _continue(self, frame: Frame, muted: bool) -> Event | None:
        capture = self._capture
        assert capture is not None
        capture.frames.append(frame)
        if muted and capture.pointer.phase is Phase.CAPTURING:
            # The silence we made is no evidence: a prompt under way at the wake goes
            # on through it. Silero, fed zeros, would need ~0.25 s to hear speech again
            # after them, so it does not hear them and picks up where it left off.
            self._speech = True
        else:
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
