"""The listener on real openWakeWord and Silero models and real human recordings.

Each test builds a sound file from the recordings in tests/data and runs the real
`speech2image run --input FILE --events -`, exactly as a user would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from speech2image.config import Config
from speech2image.events import Event, Utterance, Wake
from speech2image.listening.endpoint import EndpointSettings
from speech2image.listening.listener import WARM_UP_FRAMES, Listener
from speech2image.listening.vad import SileroVad
from speech2image.listening.wake_models import resolve_wake_models
from speech2image.listening.wakeword import OpenWakeWordScorer, WakeGate
from speech2image.pcm import FRAME_SAMPLES, Frame
from tests.support import (
    Run,
    concat,
    data_audio,
    listening_types,
    noise,
    run_cli,
    silence,
    write_wav,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ConfigFile = Callable[[str], Path]
ALL_MODELS = '["hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy"]'
# jfk.flac: the sentence runs from 0.32 s to 10.46 s (Silero VAD, 32 ms steps), with
# dramatic pauses of ~1.1 s, longer than the default silence_timeout of 0.7 s.
JFK_SPEECH = (0.32, 10.46)
PATIENT = "[listen]\nsilence_timeout = 1.5\n"


def run_file(tmp_path: Path, audio: object, config: Path) -> Run:
    wav = write_wav(tmp_path / "input.wav", audio)  # type: ignore[arg-type]
    result = run_cli(["run", "--config", str(config), "--input", str(wav)])
    assert result.returncode == 0, result.stderr
    assert result.events[0]["type"] == "listening"
    assert result.events[-1]["type"] == "stopped"
    return result


@pytest.mark.parametrize(
    ("wake_file", "model"),
    [("hey_mycroft_test.wav", "hey_mycroft"), ("alexa_test.wav", "alexa")],
)
def test_wake_then_jfk_gives_one_utterance_covering_the_sentence(
    tmp_path: Path, config_file: ConfigFile, wake_file: str, model: str
) -> None:
    wake = data_audio(wake_file)
    lead = 1.0
    jfk_at = lead + len(wake) / 16000
    audio = concat(silence(lead), wake, data_audio("jfk.flac"), silence(2.0))
    config = config_file(f'[wake]\nmodels = ["{model}"]\n' + PATIENT)

    result = run_file(tmp_path, audio, config)

    assert listening_types(result) == ["listening", "wake", "utterance", "stopped"]
    (wake_event,) = result.of("wake")
    (utterance,) = result.of("utterance")
    assert wake_event["model"] == model
    assert wake_event["score"] >= 0.5
    assert lead < wake_event["t"] <= jfk_at + 0.5
    assert utterance["id"] == wake_event["id"]
    assert utterance["reason"] == "silence"
    speech_start, speech_end = (jfk_at + s for s in JFK_SPEECH)
    assert abs(utterance["duration_s"] - (speech_end - speech_start)) <= 0.5
    # The wake phrase stays out; the first word stays in.
    assert jfk_at - 0.1 <= utterance["start_s"] <= speech_start
    assert utterance["start_s"] + utterance["duration_s"] >= speech_end


def test_jfk_noise_and_other_speech_never_wake(tmp_path: Path, config_file: ConfigFile) -> None:
    jfk = data_audio("jfk.flac")
    audio = concat(
        silence(1.0), jfk, noise(10.0, level=0.05), noise(5.0, level=0.3, seed=3), jfk, silence(1)
    )
    result = run_file(tmp_path, audio, config_file(f"[wake]\nmodels = {ALL_MODELS}\n"))
    assert result.of("wake") == []
    assert result.of("utterance") == []


def test_each_model_only_wakes_for_its_own_phrase(tmp_path: Path, config_file: ConfigFile) -> None:
    audio = concat(silence(1.0), data_audio("alexa_test.wav"), silence(3.0))
    result = run_file(tmp_path, audio, config_file('[wake]\nmodels = ["hey_mycroft"]\n'))
    assert result.of("wake") == []


def test_two_wake_phrases_5_s_apart_give_two_utterances(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    wake = data_audio("hey_mycroft_test.wav")
    first_words = data_audio("jfk.flac")[: int(2.4 * 16000)]  # "And so my fellow Americans"
    gap = silence(5.0 - (len(wake) + len(first_words)) / 16000)
    audio = concat(silence(1.0), wake, first_words, gap, wake, first_words, silence(2.0))
    result = run_file(tmp_path, audio, config_file('[wake]\nmodels = ["hey_mycroft"]\n'))

    wakes, utterances = result.of("wake"), result.of("utterance")
    assert len(wakes) == 2
    assert len(utterances) == 2
    assert [u["id"] for u in utterances] == [w["id"] for w in wakes]
    assert wakes[0]["id"] != wakes[1]["id"]
    assert 4.5 <= wakes[1]["t"] - wakes[0]["t"] <= 5.5
    for utterance in utterances:
        assert abs(utterance["duration_s"] - (2.21 - 0.32)) <= 0.5


def test_wake_then_silence_is_rejected_empty(tmp_path: Path, config_file: ConfigFile) -> None:
    audio = concat(silence(1.0), data_audio("hey_mycroft_test.wav"), silence(6.0))
    result = run_file(tmp_path, audio, config_file('[wake]\nmodels = ["hey_mycroft"]\n'))
    (wake,) = result.of("wake")
    (rejected,) = result.of("rejected")
    assert rejected["reason"] == "empty"
    assert rejected["id"] == wake["id"]
    assert rejected["t"] - wake["t"] == pytest.approx(4.0, abs=0.1)  # no_speech_timeout
    assert result.of("utterance") == []


def test_endless_speech_is_cut_at_max_utterance(tmp_path: Path, config_file: ConfigFile) -> None:
    wake = data_audio("hey_mycroft_test.wav")
    audio = concat(silence(1.0), wake, noise(0.4, level=0.001), data_audio("jfk.flac"))
    config = config_file('[wake]\nmodels = ["hey_mycroft"]\n' + PATIENT + "max_utterance = 5.0\n")
    result = run_file(tmp_path, audio, config)
    (utterance,) = result.of("utterance")
    assert utterance["reason"] == "max_length"
    assert utterance["duration_s"] == pytest.approx(5.0, abs=0.09)


def test_input_ending_mid_utterance_still_delivers_it(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    audio = concat(silence(1.0), data_audio("hey_mycroft_test.wav"), data_audio("jfk.flac"))
    result = run_file(tmp_path, audio, config_file('[wake]\nmodels = ["hey_mycroft"]\n' + PATIENT))
    (utterance,) = result.of("utterance")
    assert utterance["reason"] == "silence"


def test_missing_model_names_key_path_and_fix(tmp_path: Path, config_file: ConfigFile) -> None:
    config = config_file(f'[wake]\nmodel_dir = "{tmp_path / "empty"}"\n')
    wav = write_wav(tmp_path / "in.wav", silence(1.0))
    result = run_cli(["run", "--config", str(config), "--input", str(wav)])
    assert result.returncode == 78
    assert "wake-word model 'hey_jarvis' ([wake] models in" in result.stderr
    assert str(tmp_path / "empty" / "hey_jarvis_v0.1.onnx") in result.stderr
    assert "speech2image models pull" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(["run", "--input", str(tmp_path / "nope.flac")])
    assert result.returncode == 66
    assert f"audio file not found: {tmp_path / 'nope.flac'}" in result.stderr
    assert "Traceback" not in result.stderr


class CountingVad:
    """The real Silero VAD, counting the frames it is run on."""

    def __init__(self) -> None:
        self.vad = SileroVad()
        self.frames = 0

    def probability(self, frame: Frame) -> float:
        self.frames += 1
        return self.vad.probability(frame)

    def probabilities(self, frames: Sequence[Frame]) -> list[float]:
        self.frames += len(frames)
        return self.vad.probabilities(frames)

    def reset(self) -> None:
        self.vad.reset()


def test_vad_runs_only_from_the_wake_until_the_utterance_ends() -> None:
    """Idle listening is the wake word alone: the VAD sees the look-back buffer at the
    wake, then the frames of the capture, and nothing before or after."""
    config = Config()
    wake = replace(config.wake, models=("hey_mycroft",))
    files = resolve_wake_models(wake, "test")
    scorer = OpenWakeWordScorer(files.models, files.melspectrogram, files.embedding)
    vad = CountingVad()
    listener = Listener(scorer, WakeGate.from_config(wake, scorer.names), vad, config.listen)
    jfk = data_audio("jfk.flac")
    audio = concat(
        jfk, noise(10.0, level=0.05), data_audio("hey_mycroft_test.wav"), jfk[: int(2.4 * 16000)]
    )
    audio = concat(audio, silence(10.0))
    frames = [audio[i : i + FRAME_SAMPLES] for i in range(0, len(audio), FRAME_SAMPLES)]
    frames[-1] = np.pad(frames[-1], (0, FRAME_SAMPLES - len(frames[-1])))
    events: list[tuple[int, Event]] = []
    for index, frame in enumerate(frames):
        if (event := listener.process(frame)) is not None:
            events.append((index, event))

    (woke, wake_event), (ended, utterance) = events
    assert isinstance(wake_event, Wake)
    assert isinstance(utterance, Utterance)
    settings = EndpointSettings.from_config(config.listen)
    lookback = max(settings.lookback, settings.pre_roll) + 1  # what the end-pointer is given
    buffered = lookback + WARM_UP_FRAMES + 1
    buffered -= (woke - buffered + 1) % 2  # the warm-up starts on an even frame
    assert vad.frames == buffered + (ended - woke)
    assert vad.frames < len(frames) / 4, (vad.frames, len(frames))
