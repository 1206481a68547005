"""The wake sound kept out of the utterance, and "listen now", on the real models.

The listener is driven frame by frame, as the daemon drives it, with the real
openWakeWord, Silero and Whisper tiny.en models. A loudspeaker is simulated: at the
wake it adds the real wake tone, with two room echoes, to the microphone's input a
little later, as speakers beside a microphone do. The last test plays the tone on a
real (private) PulseAudio server.
"""

from __future__ import annotations

import logging
import math
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from speech2image.config import Config, ListenConfig, SpeechConfig
from speech2image.desktop.sound import MARGIN_S, WakeSound, wake_tone
from speech2image.events import Event, Rejected, Utterance, Wake
from speech2image.listening.listener import LISTEN_NOW, Listener
from speech2image.listening.vad import SileroVad
from speech2image.listening.wake_models import resolve_wake_models
from speech2image.listening.wakeword import OpenWakeWordScorer, WakeGate, WakeScorer
from speech2image.pcm import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, Frame
from speech2image.speech.transcribe import WhisperTranscriber
from tests.e2e.pulse import NULL_SINK, PulseServer, reinit_portaudio
from tests.support import Audio, concat, data_audio, silence, word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT_1 = "a red fox sleeping under a cherry tree"
TONE_VOLUME = 0.3
ARRIVAL_S = 0.1  # wake frame's end -> the tone in the input: output and input latency
MEASURED_S = 0.05  # what WakeSound measures (open + output latency); the margin covers the rest
KEEP_OUT_S = len(wake_tone()) / 48000 + MEASURED_S + MARGIN_S


def in_a_room(tone: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
    """The tone as a microphone hears it from a speaker: with echoes at 10 and 30 ms."""
    heard = np.concatenate([tone.astype(np.float64), np.zeros(SAMPLE_RATE // 10)])
    echoes = np.zeros_like(heard)
    for delay_s, gain in ((0.01, 0.4), (0.03, 0.2)):
        shift = round(delay_s * SAMPLE_RATE)
        echoes[shift:] += gain * heard[:-shift]
    room: npt.NDArray[np.int32] = np.round((heard + echoes) * 32767).astype(np.int32)
    return room


ECHO = in_a_room(wake_tone(SAMPLE_RATE, TONE_VOLUME))


@dataclass
class Loudspeaker:
    """The wake feedback of a daemon whose speakers the microphone hears."""

    audio: npt.NDArray[np.int32]  # the microphone's input; the tone is added in place
    keep_out: float  # what the feedback reports
    fed: int = 0  # samples given to the listener so far
    played: list[int] = field(default_factory=list)  # where each tone was asked for

    def __call__(self) -> float:
        self.played.append(self.fed)
        at = self.fed + round(ARRIVAL_S * SAMPLE_RATE)
        echo = ECHO[: max(0, len(self.audio) - at)]
        self.audio[at : at + len(echo)] += echo
        return self.keep_out


class Models:
    """The real wake-word, VAD and Whisper models, loaded once for the module."""

    def __init__(self) -> None:
        self.config = Config()
        files = resolve_wake_models(self.config.wake, "test")
        self.scorer = OpenWakeWordScorer(files.models, files.melspectrogram, files.embedding)
        self.vad = SileroVad()
        self.whisper = WhisperTranscriber(SpeechConfig(), "test")

    def listener(
        self,
        feedback: Callable[[], float] | None = None,
        listen: ListenConfig | None = None,
        scorer: WakeScorer | None = None,
    ) -> Listener:
        self.scorer.reset()
        scorer = scorer or self.scorer
        gate = WakeGate.from_config(self.config.wake, scorer.names)
        return Listener(scorer, gate, self.vad, listen or self.config.listen, feedback=feedback)

    def text(self, utterance: Utterance) -> str:
        return self.whisper.transcribe(utterance.audio).text


@pytest.fixture(scope="module")
def models() -> Models:
    return Models()


@dataclass
class Heard:
    events: list[Event]
    input: npt.NDArray[np.int32]  # what the microphone delivered, tone included

    def wake(self) -> Wake:
        (found,) = [event for event in self.events if isinstance(event, Wake)]
        return found

    def utterance(self) -> Utterance:
        (found,) = [event for event in self.events if isinstance(event, Utterance)]
        return found


class Counting:
    """A feedback that plays nothing audible and reports ``seconds``; counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.seconds


def hear(
    listener: Listener,
    audio: Audio,
    speaker: Loudspeaker | None = None,
    before: dict[int, Callable[[], None]] | None = None,
) -> Heard:
    """Feed ``audio`` frame by frame; ``before[i]`` runs before frame ``i`` is processed."""
    mic = speaker.audio if speaker is not None else audio.astype(np.int32)
    events = []
    for index, start in enumerate(range(0, len(mic) - FRAME_SAMPLES + 1, FRAME_SAMPLES)):
        if before and index in before:
            before[index]()
        if speaker is not None:
            speaker.fed = start + FRAME_SAMPLES
        frame = np.clip(mic[start : start + FRAME_SAMPLES], -32768, 32767).astype(np.int16)
        if (event := listener.process(frame)) is not None:
            events.append(event)
    if (event := listener.finish()) is not None:
        events.append(event)
    return Heard(events, mic)


def positions(utterance: Utterance) -> npt.NDArray[np.int64]:
    """The input sample index of each sample of the utterance."""
    first = round(utterance.start_s * SAMPLE_RATE)
    return np.arange(first, first + len(utterance.audio))


def end_s(utterance: Utterance) -> float:
    return utterance.start_s + utterance.duration_s


def request(voice: str, pause: float) -> Audio:
    wake = data_audio(f"espeak/hey_jarvis_{voice}_160.wav")
    prompt = data_audio(f"espeak/prompt_1_{voice}.wav")
    return concat(silence(1.0), wake, silence(pause), prompt, silence(2.0))


@pytest.mark.parametrize("pause", [0.1, 0.15])
@pytest.mark.parametrize("voice", ["en-us", "en+f3"])
def test_the_wake_sound_is_kept_out_of_the_utterance(
    models: Models, voice: str, pause: float
) -> None:
    audio = request(voice, pause)
    plain = hear(models.listener(), audio)
    speaker = Loudspeaker(audio.astype(np.int32), KEEP_OUT_S)
    heard = hear(models.listener(speaker), audio, speaker)

    wake = heard.wake()
    assert wake.t == plain.wake().t  # the tone comes after the wake, never before
    lo = round(wake.t * SAMPLE_RATE)  # the end of the wake frame
    hi = lo + math.ceil(KEEP_OUT_S * SAMPLE_RATE)
    assert speaker.played == [lo]
    tone_at = np.flatnonzero(heard.input != audio)
    assert lo <= tone_at[0]  # the simulation itself: the tone lies inside the span
    assert tone_at[-1] < hi
    assert np.max(np.abs(heard.input - audio)) > 0.2 * 32767

    utterance, before = heard.utterance(), plain.utterance()
    at = positions(utterance)
    kept_out = (at >= lo) & (at < hi)
    assert kept_out.any(), "the utterance does not reach into the kept-out span"
    assert not utterance.audio[kept_out].any()  # digital silence where the tone was
    assert np.array_equal(utterance.audio[~kept_out], audio[at[~kept_out]])  # no tone anywhere
    assert abs(end_s(utterance) - end_s(before)) <= FRAME_SECONDS
    assert word_error_rate(models.text(before), models.text(utterance)) == 0

    unmuted = Loudspeaker(audio.astype(np.int32), 0.0)  # the same tone, not kept out
    leaky = hear(models.listener(unmuted), audio, unmuted).utterance()
    assert not np.array_equal(leaky.audio, audio[positions(leaky)]), "the test shows nothing"


def test_without_the_wake_sound_the_listener_is_unchanged(models: Models) -> None:
    """A feedback that keeps nothing out changes no sample and no decision. (What the
    listener did before the wake sound existed is held by test_listen_real_models.)"""
    audio = concat(request("en-us", 0.4), request("en+f3", 0.15), data_audio("jfk.flac"))
    without = hear(models.listener(), audio).events
    feedback = Counting(0.0)
    quiet = hear(models.listener(feedback), audio).events
    assert feedback.calls == 2
    assert [type(e) for e in quiet] == [Wake, Utterance, Wake, Utterance]
    for a, b in zip(without, quiet, strict=True):
        assert (a.type, a.t) == (b.type, b.t)
        if isinstance(a, Utterance) and isinstance(b, Utterance):
            assert (a.start_s, a.duration_s, a.reason) == (b.start_s, b.duration_s, b.reason)
            assert np.array_equal(a.audio, b.audio)


class ScriptedWake:
    """A wake-word scorer that fires on chosen frames: no recording makes openWakeWord
    fire only once a prompt, begun after a pause, is under way, so it is placed by hand."""

    names: tuple[str, ...] = ("scripted",)

    def __init__(self, fire_on: int) -> None:
        self.fire_on = fire_on
        self.frame = 0

    def scores(self, frame: Frame) -> dict[str, float]:
        self.frame += 1
        return {"scripted": 1.0 if self.frame - 1 == self.fire_on else 0.0}

    def reset(self) -> None:
        """The phrase is over; the frame count goes on."""


def test_the_silence_made_for_the_sound_does_not_end_a_prompt_under_way(models: Models) -> None:
    # jfk.flac, by Silero: speech 3.28-4.40 s, a pause, then "ask not what your
    # country can do for you" from 5.44 to 7.68 s, a pause of 0.56 s.
    wake_frame = round(5.68 / FRAME_SECONDS)  # 0.24 s into the phrase: the look-back sees
    # the pause before it, so the end-pointer starts capturing at the wake
    listen = replace(models.config.listen, silence_timeout=0.2)
    listener = models.listener(lambda: 0.5, listen, ScriptedWake(wake_frame))
    heard = hear(listener, concat(data_audio("jfk.flac")[: 8 * SAMPLE_RATE], silence(1.0)))
    utterance = heard.events[1]
    assert isinstance(utterance, Utterance), heard.events
    assert utterance.start_s <= 5.44
    assert end_s(utterance) >= 7.6  # not ended 0.2 s into the 0.5 s of zeros
    at = positions(utterance)
    muted = (at >= (wake_frame + 1) * FRAME_SAMPLES) & (
        at < (wake_frame + 1) * FRAME_SAMPLES + 8000
    )
    assert not utterance.audio[muted].any()


def speech_bounds(audio: Audio) -> tuple[float, float]:
    """First and last sample above -40 dBFS in a clean synthetic clip, in seconds."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 328)
    return loud[0] / SAMPLE_RATE, loud[-1] / SAMPLE_RATE


def from_another_thread(action: Callable[[], None]) -> Callable[[], None]:
    """``action``, run on a thread of its own (as the D-Bus control runs it)."""

    def run() -> None:
        thread = threading.Thread(target=action)
        thread.start()
        thread.join()

    return run


def test_listen_now_captures_what_follows_without_a_wake_word(models: Models) -> None:
    prompt = data_audio("espeak/prompt_1_en-us.wav")
    lead = 1.5
    audio = concat(silence(lead), prompt, silence(2.0))
    asked_at = round(1.0 / FRAME_SECONDS)
    feedback = Counting(0.3)
    listener = models.listener(feedback)
    heard = hear(listener, audio, before={asked_at: from_another_thread(listener.listen_now)})

    assert [type(e) for e in heard.events] == [Wake, Utterance]
    wake, utterance = heard.events
    assert isinstance(wake, Wake)
    assert isinstance(utterance, Utterance)
    assert (wake.model, wake.score) == (LISTEN_NOW, 1.0)
    assert wake.t == pytest.approx((asked_at + 1) * FRAME_SECONDS)
    assert feedback.calls == 1  # the wake sound says "listening" here too
    assert utterance.id == wake.id
    start, end = (lead + s for s in speech_bounds(prompt))
    assert wake.t <= utterance.start_s <= start
    assert end_s(utterance) >= end
    assert word_error_rate(PROMPT_1, models.text(utterance)) <= 0.15


def test_listen_now_takes_nothing_said_before_the_request(models: Models) -> None:
    talk = data_audio("espeak/speech_no_wake_en-us.wav")  # 10.6 s of talk, no wake word
    # By Silero, a phrase starts at 4.56 s after a 0.24 s pause: asked 0.16 s into it,
    # a wake word's look-back would start the utterance with the phrase.
    asked_at = round(4.72 / FRAME_SECONDS)
    listener = models.listener()
    heard = hear(listener, concat(talk, silence(2.0)), before={asked_at: listener.listen_now})
    wake, utterance = heard.events
    assert isinstance(wake, Wake)
    assert wake.model == LISTEN_NOW
    assert isinstance(utterance, Utterance)
    assert utterance.start_s >= wake.t  # no look-back: the request frame and before stay out
    assert utterance.duration_s > 1.0


def test_listen_now_during_a_capture_is_dropped(models: Models) -> None:
    audio = request("en-us", 0.4)
    listener = models.listener()
    during = round(2.8 / FRAME_SECONDS)  # in the prompt, after the wake at ~1.9 s
    heard = hear(listener, concat(audio, silence(5.0)), before={during: listener.listen_now})
    assert [type(e) for e in heard.events] == [Wake, Utterance]  # not started afterwards
    wake = heard.events[0]
    assert isinstance(wake, Wake)
    assert wake.model == "hey_jarvis"
    assert wake.t < during * FRAME_SECONDS
    assert not any(isinstance(e, Rejected) for e in heard.events)


def reloaded(models: Models, old: Listener, scorer: WakeScorer | None = None) -> Listener:
    """A listener rebuilt by a config reload that kept the wake-word models (and so
    their state), taking over from ``old``."""
    scorer = scorer or models.scorer
    gate = WakeGate.from_config(models.config.wake, scorer.names)
    new = Listener(scorer, gate, models.vad, models.config.listen)
    new.follow(old)
    return new


def test_a_reloaded_listener_follows_on_from_the_old_one(models: Models) -> None:
    """A reload just before a wake changes nothing: the clock goes on, and the look-back
    (the VAD's warm-up, the pause before the prompt) reaches into the old one's frames."""
    audio = concat(data_audio("jfk.flac")[: 8 * SAMPLE_RATE], silence(1.0))
    wake_frame = round(5.68 / FRAME_SECONDS)  # a prompt under way: it started before the wake
    whole = hear(models.listener(scorer=ScriptedWake(wake_frame)), audio)
    assert whole.utterance().start_s < whole.wake().t
    scorer, switch = ScriptedWake(wake_frame), wake_frame - 2
    old = models.listener(scorer=scorer)
    for i in range(switch):
        assert old.process(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) is None
    new = reloaded(models, old, scorer)
    assert new.now == old.now
    heard = hear(new, audio[switch * FRAME_SAMPLES :])
    assert heard.wake().t == whole.wake().t
    utterance, expected = heard.utterance(), whole.utterance()
    assert (utterance.start_s, utterance.duration_s) == (expected.start_s, expected.duration_s)
    assert np.array_equal(utterance.audio, expected.audio)


def test_a_request_to_listen_survives_a_reload(models: Models) -> None:
    old = models.listener()
    for _ in range(10):
        old.process(silence(FRAME_SECONDS))
    old.listen_now()  # asked, then the config was reloaded before the next frame
    new = reloaded(models, old)
    assert old.process(silence(FRAME_SECONDS)) is None  # the old one gave it up
    event = new.process(silence(FRAME_SECONDS))
    assert isinstance(event, Wake)
    assert event.model == LISTEN_NOW


@pytest.fixture
def audio_server(tmp_path: Path) -> Iterator[PulseServer]:
    server = PulseServer.start(tmp_path / "pulse")
    try:
        yield server
    finally:
        server.stop()


def record_sink(server: PulseServer) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "parec",
            "-d",
            f"{NULL_SINK}.monitor",
            "--raw",
            "--format=s16le",
            "--rate=16000",
            "--channels=1",
            "--latency-msec=20",
        ],
        env=server.child_env(),
        stdout=subprocess.PIPE,
    )


def test_the_wake_sound_plays_on_a_real_audio_server_and_goes_quiet_when_it_is_gone(
    audio_server: PulseServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="speech2image.desktop.sound")
    readings: list[float] = []

    def clock() -> float:  # the real clock, with each reading written down
        readings.append(time.monotonic())
        return readings[-1]

    with reinit_portaudio(audio_server.env):
        import sounddevice as sd

        rate = int(sd.query_devices(None, "output")["default_samplerate"])
        with sd.OutputStream(samplerate=rate, channels=1, dtype="float32", latency="low") as out:
            reported_s = float(out.latency)  # what PortAudio says of such an output
        sound = WakeSound(TONE_VOLUME, clock=clock)
        # The probe at construction read the clock before and after opening the output.
        opened_s = readings[1] - readings[0]
        try:
            assert sound.working
            recorder = record_sink(audio_server)
            time.sleep(0.5)
            keep_out = sound.play()
            time.sleep(3.0)  # an idle null sink's monitor delivers in ~2 s blocks
            recorder.send_signal(2)
            played, _ = recorder.communicate(timeout=10)
            audio_server.stop()
            assert sound.play() > 0  # it does not know yet: this attempt finds out
            deadline = time.monotonic() + 10
            while sound.working and time.monotonic() < deadline:
                time.sleep(0.01)
            after = [sound.play() for _ in range(3)]
        finally:
            sound.close()

    tone_s = len(wake_tone(rate)) / rate
    # Kept out: the tone, the time the output took to open and its latency, and the margin.
    assert keep_out == pytest.approx(tone_s + opened_s + reported_s + MARGIN_S, abs=1e-6)
    heard = np.frombuffer(played, dtype=np.int16).astype(np.float64) / 32768
    assert np.max(np.abs(heard)) == pytest.approx(TONE_VOLUME, rel=0.1)
    loud = np.flatnonzero(np.abs(heard) > 0.01)
    assert loud[-1] - loud[0] == pytest.approx(tone_s * SAMPLE_RATE, rel=0.2)
    assert after == [0.0, 0.0, 0.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("wake sound is off: ")
