"""Listening benchmarks: CPU cost, wake accuracy, and end-of-speech latency.

Each figure is measured against a baseline in the same run where one exists
(openWakeWord's own ``Model.predict`` loop on the same audio), so a ratio stays
meaningful on another machine even when the seconds do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import numpy.typing as npt

from bench import corpus
from speech2image.config import Config, WakeConfig
from speech2image.events import Rejected, Utterance, Wake
from speech2image.listening.audio import read_audio
from speech2image.listening.listener import Listener
from speech2image.listening.wake_models import resolve_wake_models
from speech2image.listening.wakeword import OpenWakeWordScorer, WakeGate
from speech2image.pcm import FRAME_SECONDS, SAMPLE_RATE
from speech2image.stages import build_listener

Audio = npt.NDArray[np.int16]


def frames_of(audio: Audio) -> list[Audio]:
    return list(corpus.frames([audio]))


def listener_for(models: Sequence[str], **wake: object) -> Listener:
    config = Config()
    return build_listener(
        replace(config, wake=replace(config.wake, models=tuple(models), **wake))  # type: ignore[arg-type]
    )


def cpu_seconds(step: Callable[[Audio], object], frames: Iterable[Audio]) -> float:
    started = time.process_time()
    for frame in frames:
        step(frame)
    return time.process_time() - started


def raw_openwakeword(models: Sequence[str]) -> Callable[[Audio], object]:
    """openWakeWord's own loop with the same ONNX files: the baseline for our overhead."""
    from openwakeword.model import Model

    files = resolve_wake_models(WakeConfig(models=tuple(models)), "bench")
    model = Model(
        wakeword_models=[str(p) for p in files.models.values()],
        inference_framework="onnx",
        melspec_model_path=str(files.melspectrogram),
        embedding_model_path=str(files.embedding),
    )
    return model.predict  # type: ignore[no-any-return]


@dataclass(frozen=True)
class CostRow:
    """CPU seconds per second of audio, one figure per run, runs of the two interleaved."""

    label: str
    ours: tuple[float, ...]
    baseline: tuple[float, ...]

    @property
    def cpu_per_audio_s(self) -> float:
        return statistics.median(self.ours)

    @property
    def baseline_per_audio_s(self) -> float:
        return statistics.median(self.baseline)

    @property
    def ratios(self) -> list[float]:
        """Ours over the baseline, pair by pair: each pair ran back to back."""
        return sorted(a / b for a, b in zip(self.ours, self.baseline, strict=True))


def listening_cost(stream_seconds: float = 600.0, pairs: int = 20) -> list[CostRow]:
    """The listener against openWakeWord alone on the same frames, run alternately.

    A few per cent is this machine's noise between two runs of the same code (other
    processes share the cores), so the stream is cut into ``pairs`` blocks and each
    block is run by both, back to back (A B, B A, A B, ...); a ratio is taken within
    each pair, where both saw the same audio under the same load.
    """
    frames = list(corpus.frames(corpus.negative_stream(stream_seconds, seed=11)))
    size = -(-len(frames) // pairs)
    blocks = [frames[i : i + size] for i in range(0, len(frames), size)]
    rows = []
    for models in (["hey_jarvis"], ["hey_jarvis", "alexa", "hey_mycroft"]):
        listener, baseline = listener_for(models), raw_openwakeword(models)
        for step in (listener.process, baseline):  # first calls allocate; not measured
            cpu_seconds(step, frames[:50])
        ours: list[float] = []
        theirs: list[float] = []
        for k, block in enumerate(blocks):
            runs = [(ours, listener.process), (theirs, baseline)]
            for into, step in runs if k % 2 == 0 else runs[::-1]:
                into.append(cpu_seconds(step, block) / (len(block) * FRAME_SECONDS))
        rows.append(CostRow(f"{len(models)} model(s)", tuple(ours), tuple(theirs)))
    return rows


@dataclass(frozen=True)
class AccuracyRow:
    model: str
    negative_hours: float
    false_accepts: int
    positives: int
    misses: int

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts / self.negative_hours

    @property
    def false_reject_rate(self) -> float:
        return self.misses / self.positives


MODELS = ("hey_jarvis", "alexa", "hey_mycroft")


def wake_accuracy(negative_seconds: float = 3600.0, positives: int = 200) -> list[AccuracyRow]:
    listener = listener_for(MODELS)
    false_accepts = dict.fromkeys(MODELS, 0)
    audio_s = 0.0
    for frame in corpus.frames(corpus.negative_stream(negative_seconds, seed=23)):
        audio_s += FRAME_SECONDS
        event = listener.process(frame)
        if isinstance(event, Wake):
            false_accepts[event.model] += 1
    rows = []
    for model in MODELS:
        clips = corpus.positive_clips(model, positives, seed=5)
        misses = sum(1 for clip in clips if not _wakes_on(model, clip))
        rows.append(AccuracyRow(model, audio_s / 3600, false_accepts[model], len(clips), misses))
    return rows


def _wakes_on(model: str, clip: Audio) -> bool:
    """A fresh listener with only this model, as a user who configured just it would run."""
    listener = listener_for([model])
    padded = np.concatenate(
        [np.zeros(SAMPLE_RATE, np.int16), clip, np.zeros(SAMPLE_RATE, np.int16)]
    )
    return any(isinstance(listener.process(f), Wake) for f in frames_of(padded))


@dataclass(frozen=True)
class LatencyRow:
    label: str
    audio_latency_s: float  # end of speech -> utterance event, in audio time
    frame_p50_ms: float
    frame_p99_ms: float


# jfk.flac's first phrase, "And so my fellow Americans", ends at 2.21 s (Silero, 32 ms steps).
JFK_PHRASE_END = 2.21


def end_of_speech_latency(repeats: int = 20) -> LatencyRow:
    """From the last speech frame to the `utterance` event, and the compute per frame.

    In audio time the delay is the silence timeout by design, plus frame rounding;
    with a microphone the compute time of the last frame comes on top.
    """
    wake = read_audio(corpus.TEST_DATA / "hey_mycroft_test.wav")
    phrase = read_audio(corpus.TEST_DATA / "jfk.flac")[: int(2.4 * SAMPLE_RATE)]
    lead = np.zeros(SAMPLE_RATE, np.int16)
    tail = np.zeros(3 * SAMPLE_RATE, np.int16)
    speech_end = (len(lead) + len(wake)) / SAMPLE_RATE + JFK_PHRASE_END
    latencies, per_frame = [], []
    for _ in range(repeats):
        listener = listener_for(["hey_mycroft"])
        for frame in frames_of(np.concatenate([lead, wake, phrase, tail])):
            started = time.perf_counter()
            event = listener.process(frame)
            per_frame.append(time.perf_counter() - started)
            if isinstance(event, Utterance):
                latencies.append(event.t - speech_end)
            elif isinstance(event, Rejected):
                raise RuntimeError("benchmark input was rejected; the fixture changed?")
    per_frame.sort()
    return LatencyRow(
        "hey_mycroft + 'And so my fellow Americans' + silence",
        statistics.median(latencies),
        per_frame[len(per_frame) // 2] * 1000,
        per_frame[int(len(per_frame) * 0.99)] * 1000,
    )


@dataclass(frozen=True)
class SweepRow:
    model: str
    threshold: float
    patience: int
    false_accepts_per_hour: float
    false_reject_rate: float


def wake_sweep(
    negative_seconds: float = 3600.0,
    positives: int = 200,
    thresholds: Sequence[float] = (0.3, 0.5, 0.6, 0.7, 0.8),
    patiences: Sequence[int] = (1, 2, 3),
) -> list[SweepRow]:
    """Thresholds and patience against the same audio: the scores are computed once and
    replayed through the daemon's own WakeGate (refractory 2 s) for each setting."""
    files = resolve_wake_models(WakeConfig(models=MODELS), "bench")
    scorer = OpenWakeWordScorer(files.models, files.melspectrogram, files.embedding)
    negative = [
        scorer.scores(f) for f in corpus.frames(corpus.negative_stream(negative_seconds, seed=23))
    ]
    hours = len(negative) * FRAME_SECONDS / 3600
    silence = np.zeros(SAMPLE_RATE, np.int16)
    positive: dict[str, list[list[dict[str, float]]]] = {}
    for model in MODELS:
        positive[model] = []
        for clip in corpus.positive_clips(model, positives, seed=5):
            scorer.reset()
            padded = np.concatenate([silence, clip, silence])
            positive[model].append([scorer.scores(f) for f in frames_of(padded)])
    rows = []
    for model in MODELS:
        for threshold in thresholds:
            for patience in patiences:
                gate = partial(WakeGate, {model: threshold}, {model: patience}, REFRACTORY)
                false_accepts = _wakes(gate(), negative)
                misses = sum(not _wakes(gate(), clip) for clip in positive[model])
                rows.append(
                    SweepRow(
                        model,
                        threshold,
                        patience,
                        false_accepts / hours,
                        misses / len(positive[model]),
                    )
                )
    return rows


REFRACTORY = round(2.0 / FRAME_SECONDS)


def _wakes(gate: WakeGate, scores: Sequence[dict[str, float]]) -> int:
    return sum(1 for frame_scores in scores if gate.update(frame_scores))
