"""Transcription latency: end of speech to `transcript`, against faster-whisper alone.

The pipeline's number is measured from the moment the listener hands the utterance
on (its `utterance` event, which comes `silence_timeout` after the last word) to
the `transcript` event: queue hand-off, transcription, guard. The baseline calls
faster-whisper's `transcribe` directly with the same model, audio and settings.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from bench.corpus import TEST_DATA
from speech2image.config import Config, SpeechConfig
from speech2image.events import Event, Transcript
from speech2image.ledger import Ledger
from speech2image.listening.audio import read_audio
from speech2image.moderation.combined import build_moderator
from speech2image.pcm import SAMPLE_RATE
from speech2image.request import Request
from speech2image.speech.transcribe import WhisperTranscriber
from speech2image.steps import Heard, Understand
from speech2image.worker import Worker

JFK_SPEECH_START = 0.32


class Stopwatch:
    """An event sink that notes when each transcript arrives."""

    def __init__(self) -> None:
        self.arrived = threading.Event()

    def emit(self, event: Event) -> None:
        if isinstance(event, Transcript):
            self.arrived.set()


@dataclass(frozen=True)
class SpeechRow:
    audio_s: float
    pipeline_s: float
    direct_s: float


def transcription_latency(
    lengths: tuple[float, ...] = (2.0, 5.0, 10.0), repeats: int = 7
) -> list[SpeechRow]:
    """The daemon's speech worker (queue, handler, guard, moderation) vs the bare model."""
    jfk = read_audio(TEST_DATA / "jfk.flac")
    config = Config()
    transcriber = WhisperTranscriber(config.speech, "bench")
    transcriber.warm_up()
    watch = Stopwatch()
    ledger = Ledger(watch, clock=lambda: 0.0)
    handler = Understand(
        config.speech,
        transcriber,
        build_moderator(config.moderation, "bench"),
        ledger,
        clock=lambda: 0.0,
        forward=lambda _request: None,
    )
    worker: Worker[Heard] = Worker("speech", handler, 4, lambda _h, exc: print(exc))
    worker.start()
    rows = []
    for seconds in lengths:
        start = int(JFK_SPEECH_START * SAMPLE_RATE)
        audio = jfk[start : start + int(seconds * SAMPLE_RATE)]
        direct, pipeline = [], []
        for _ in range(repeats):
            direct.append(_direct(transcriber, config.speech, audio))
            watch.arrived.clear()
            request = Request.start("file").with_utterance(0.0, seconds, "silence")
            ledger.open(request)
            began = time.perf_counter()
            worker.submit(Heard(request, audio), wait=True)
            watch.arrived.wait(timeout=60)
            pipeline.append(time.perf_counter() - began)
        rows.append(SpeechRow(seconds, statistics.median(pipeline), statistics.median(direct)))
    worker.close()
    worker.join(10)
    return rows


def _direct(transcriber: WhisperTranscriber, config: SpeechConfig, audio: np.ndarray) -> float:
    """faster-whisper's own call with the daemon's settings: the baseline."""
    samples = audio.astype(np.float32) / 32768.0
    began = time.perf_counter()
    segments, _info = transcriber.model.transcribe(
        samples,
        language=config.language,
        beam_size=config.beam_size,
        temperature=0.0,
        condition_on_previous_text=False,
        initial_prompt=config.initial_prompt or None,
        without_timestamps=True,
        vad_filter=False,
    )
    list(segments)
    return time.perf_counter() - began
