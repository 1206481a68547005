"""The satellite driver against a fake wyoming-satellite over real TCP.

The fake is the peer, not the thing under test: a real asyncio server speaking real
``wyoming`` events, built to behave like wyoming-satellite 1.0.0 (no pong, drops a
second controller) or a later release (answers pings, says its version). The
daemon side is a small test Pipeline whose listener wakes on the first loud frame
and ends the utterance a fixed number of frames later; the real listener is used in
tests/e2e/test_wyoming_satellite.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStop
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Info, Satellite
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.wake import Detection

from speech2image.events import Rejected, Utterance, Wake
from speech2image.pcm import FRAME_SAMPLES, Frame
from speech2image.wyoming.pipeline import Answer, BusyError, Heard
from speech2image.wyoming.satellite import (
    STOP_WITHIN_S,
    THREADS_WITHIN_S,
    SatelliteDriver,
    Satellites,
)
from speech2image.wyoming.satellite_peer import (
    Refused,
    Requests,
    Timing,
    Transcribed,
    answers_ping,
    error_for,
    liveness_timeout,
    next_backoff,
    parse_uri,
    peer_info,
)
from tests.support import concat, data_audio, silence

TIMING = Timing(
    connect_s=2.0,
    ping_every_s=0.2,
    pong_within_s=0.4,
    describe_every_s=0.3,
    stall_s=3.0,  # the fake's streams end; only the stall test wants that noticed
    write_s=1.0,
    first_backoff_s=0.1,
)
PROMPT = concat(silence(1.0), data_audio("espeak/hey_jarvis_prompt_en-us.wav"), silence(1.0))
UTTERANCE_FRAMES = 12
QUIET_FRAMES = 10  # the stub wakes on a loud frame after this many quiet ones
LOUD = 3000


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout} s: {what or check}")


# -- the fake satellite --------------------------------------------------------------


class FakeSatellite:
    """A wyoming-satellite stand-in on 127.0.0.1, in a loop thread of its own."""

    def __init__(self, *, version: str | None = None, pongs: bool = False) -> None:
        self.version = version
        self.pongs = pongs
        self.controlled_elsewhere = False  # then, like 1.0.0, it stops reading a controller
        self.received: list[tuple[int, Event]] = []  # (connection number, event)
        self.connected_at: list[float] = []
        self.closed: list[int] = []
        self._writer: asyncio.StreamWriter | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self.uri = f"tcp://127.0.0.1:{self.port}"

    def _call(self, coroutine: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connected_at.append(time.monotonic())
            number = len(self.connected_at)
        self._writer = writer
        try:
            while (event := await async_read_event(reader)) is not None:
                with self._lock:
                    self.received.append((number, event))
                if not await self._answer(event, writer):
                    # wyoming-satellite's handler for a second controller returns False:
                    # it reads and answers nothing more, but leaves the connection open
                    while await reader.read(65536):
                        pass
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            with self._lock:
                self.closed.append(number)
            writer.close()

    async def _answer(self, event: Event, writer: asyncio.StreamWriter) -> bool:
        if event.type == "describe":
            satellite = Satellite(
                name="fake",
                attribution=Attribution(name="", url=""),
                installed=True,
                description="fake",
                version=self.version,
            )
            await async_write_event(Info(satellite=satellite).event(), writer)
        elif event.type == "ping" and self.pongs:
            await async_write_event(Pong(text=Ping.from_event(event).text).event(), writer)
        elif event.type == "run-satellite" and self.controlled_elsewhere:
            return False
        return True

    def send(self, *events: Event) -> None:
        async def write() -> None:
            assert self._writer is not None
            for event in events:
                await async_write_event(event, self._writer)

        self._call(write())

    def send_raw(self, data: bytes) -> None:
        async def write() -> None:
            assert self._writer is not None
            self._writer.write(data)
            await self._writer.drain()

        self._call(write())

    def stream(self, audio: Frame, rate: int = 16000, channels: int = 1, chunk: int = 1024) -> None:
        """Audio as wyoming-satellite sends it: chunks of 1024 samples, as fast as TCP
        takes them (the driver paces nothing; real time is the e2e test's job)."""
        data = audio.astype("<i2").tobytes()
        step = chunk * 2 * channels
        self.send(
            *(
                AudioChunk(rate=rate, width=2, channels=channels, audio=data[i : i + step]).event()
                for i in range(0, len(data), step)
            )
        )

    def drop(self) -> None:
        async def close() -> None:
            if self._writer is not None:
                self._writer.transport.abort()

        self._call(close())

    def events(self, kind: str, connection: int | None = None) -> list[Event]:
        with self._lock:
            return [e for n, e in self.received if e.type == kind and connection in (None, n)]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[Event]:
        found: list[Event] = wait_until(
            lambda: (found := self.events(kind)) and len(found) >= count and found,
            timeout,
            f"{count} {kind} event(s); got {[e.type for _, e in self.received]}",
        )
        return found

    def close(self) -> None:
        async def close() -> None:
            self._server.close()
            if self._writer is not None:
                self._writer.transport.abort()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2)


# -- the daemon side -----------------------------------------------------------------


class StubListener:
    """Wakes on a loud frame after 0.8 s of quiet (or when asked), and ends the
    utterance 12 frames on."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.frames: list[int] = []
        self.finished = 0
        self.listen_now_calls = 0
        self._asked = False
        self._capture: list[Frame] | None = None
        self._quiet = 0

    def process(self, frame: Frame) -> Any:
        self.frames.append(len(frame))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self._capture is not None:
            self._capture.append(frame)
            if len(self._capture) < UTTERANCE_FRAMES:
                return None
            audio, self._capture = np.concatenate(self._capture), None
            return Utterance(
                id="u", t=0.0, start_s=0.0, duration_s=0.96, reason="silence", audio=audio
            )
        loud = np.abs(frame.astype(np.int32)).max() > LOUD
        woken = loud and self._quiet >= QUIET_FRAMES
        self._quiet = 0 if loud else self._quiet + 1
        if self._asked or woken:
            model = "listen-now" if self._asked else "hey_jarvis"
            self._asked, self._capture = False, []
            return Wake(id="u", t=0.0, model=model, score=0.9)
        return None

    def listen_now(self) -> None:
        self.listen_now_calls += 1
        self._asked = True

    def finish(self) -> Any:
        self.finished += 1
        capture, self._capture = self._capture, None
        if capture is None:
            return None
        return Rejected(id="u", t=0.0, reason="empty", detail="no speech")


class StubPipeline:
    asr_model = "tiny.en"
    asr_languages: tuple[str, ...] = ("en",)
    image_model = "tiny"

    def __init__(self, busy: bool = False, delay_s: float = 0.0) -> None:
        self.busy = busy
        self.delay_s = delay_s
        self.spoken_calls: list[tuple[Frame, str, tuple[str, float] | None]] = []
        self.listeners: list[StubListener] = []
        self.early: list[str] = []  # event types to emit before spoken() returns
        self._subscribers: list[Callable[[Mapping[str, Any]], None]] = []
        self._lock = threading.Lock()

    def transcribe(self, audio: Frame, language: str | None) -> Heard:
        raise NotImplementedError

    def draw(self, prompt: str, language: str | None, origin: str, context: Any) -> Answer:
        raise NotImplementedError

    def spoken(self, audio: Frame, origin: str, wake: tuple[str, float] | None) -> str:
        with self._lock:
            self.spoken_calls.append((audio, origin, wake))
            request_id = f"r{len(self.spoken_calls)}"
        if self.busy:
            raise BusyError(request_id)
        for kind in self.early:
            self.emit(kind, request_id)
        return request_id

    def listener(self) -> StubListener:
        listener = StubListener(self.delay_s)
        self.listeners.append(listener)
        return listener

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> Callable[[], None]:
        self._subscribers.append(listener)
        return lambda: self._subscribers.remove(listener)

    def emit(self, kind: str, request_id: str, **fields: Any) -> None:
        defaults = {"transcript": {"text": "a red fox in the snow", "language": "en"}}
        data = {"type": kind, "id": request_id, "t": 0.0, **defaults.get(kind, {}), **fields}
        for subscriber in list(self._subscribers):
            subscriber(data)


@pytest.fixture
def fake() -> Iterator[FakeSatellite]:
    satellite = FakeSatellite()
    yield satellite
    satellite.close()


@contextlib.contextmanager
def driving(pipeline: StubPipeline, uri: str, **kwargs: Any) -> Iterator[SatelliteDriver]:
    driver = SatelliteDriver(pipeline, uri, timing=TIMING, **kwargs)
    driver.start()
    try:
        yield driver
    finally:
        driver.stop()


# -- pure decisions --------------------------------------------------------------------


def test_a_satellite_is_a_tcp_uri_with_a_port() -> None:
    assert parse_uri("tcp://kitchen.local:10700") == parse_uri("tcp://kitchen.local:10700")
    assert parse_uri("tcp://kitchen.local:10700").port == 10700
    for bad in ("kitchen.local:10700", "tcp://kitchen.local", "unix:///run/sat", "tcp://:1"):
        with pytest.raises(ValueError, match="tcp://host:port"):
            parse_uri(bad)


def test_only_a_version_from_1_1_on_says_the_satellite_answers_pings() -> None:
    assert answers_ping(None) is None  # 1.0.0 and 1.1.x say no version: ask with one ping
    assert answers_ping("1.4.1") is True
    assert answers_ping("1.0.0") is False
    assert answers_ping("2.0") is True
    data = {"satellite": {"name": "kitchen", "version": "1.4.1"}}
    assert peer_info(data) == peer_info({"satellite": {"name": "kitchen", "version": "1.4.1"}})
    assert peer_info({"asr": []}) is None


def test_silence_is_a_dead_peer_only_where_it_means_one() -> None:
    assert liveness_timeout(True, False, TIMING) == pytest.approx(0.6)
    assert liveness_timeout(False, True, replace(TIMING, stall_s=0.5)) == 0.5
    assert liveness_timeout(False, False, TIMING) == pytest.approx(0.7)  # describe answered


def test_backoff_doubles_to_the_cap_and_starts_over() -> None:
    delays = [next_backoff(None, 1.0, 30.0)]
    for _ in range(6):
        delays.append(next_backoff(delays[-1], 1.0, 30.0))
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert next_backoff(None, 1.0, 30.0) == 1.0


def test_each_rejection_has_a_short_error_for_the_satellite() -> None:
    assert error_for("busy") == ("busy, try again in a minute", "busy")
    assert error_for("no such reason")[1] == "error"


def test_a_request_is_answered_by_its_own_events_even_those_before_its_id() -> None:
    requests = Requests(tracked=2)
    early = {"type": "transcript", "id": "a", "text": "a red fox"}
    assert requests.outcome(early) is None  # spoken() has not returned "a" yet
    assert requests.track("a") == [Transcribed("a red fox")]
    assert requests.outcome({"type": "rejected", "id": "a", "reason": "toxic"}) == Refused(
        "toxic", transcribed=True
    )
    assert requests.outcome({"type": "transcript", "id": "a", "text": "again"}) is None
    requests.track("b")
    assert requests.outcome({"type": "rejected", "id": "b", "reason": "unclear"}) == Refused(
        "unclear", transcribed=False
    )
    for name in "cde":
        requests.track(name)
    assert requests.outcome({"type": "transcript", "id": "c", "text": "x"}) is None  # forgotten
    assert requests.outcome({"type": "image", "id": "e"}) is None


# -- the driver ------------------------------------------------------------------------


def test_it_describes_runs_the_satellite_and_asks_once_whether_it_answers_pings(
    fake: FakeSatellite,
) -> None:
    with driving(StubPipeline(), fake.uri):
        fake.wait_for("ping")
        time.sleep(4 * TIMING.describe_every_s)
        types = [e.type for _, e in fake.received]
    assert types[:3] == ["describe", "run-satellite", "ping"]
    assert types.count("ping") == 1, "a satellite that does not answer is not pinged again"
    assert types.count("describe") >= 3, "it is asked to describe itself instead"
    assert len(fake.connected_at) == 1, "a satellite that answers describe is alive"


def test_our_wake_word_then_the_transcript_goes_back(fake: FakeSatellite) -> None:
    pipeline = StubPipeline()
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.send(RunPipeline(PipelineStage.WAKE, PipelineStage.HANDLE).event())
        fake.stream(PROMPT)
        detection = fake.wait_for("detection")[0]
        wait_until(lambda: pipeline.spoken_calls)
        audio, origin, wake = pipeline.spoken_calls[0]
        assert len(audio) == UTTERANCE_FRAMES * FRAME_SAMPLES
        pipeline.emit("transcript", "r1")
        transcript = fake.wait_for("transcript")[0]
        pipeline.emit("image", "r1", path="/x.png")
        time.sleep(0.2)
    assert Detection.from_event(detection).name == "hey_jarvis"
    assert origin == f"satellite {fake.uri}"
    assert wake == ("hey_jarvis", 0.9)
    assert transcript.data["text"] == "a red fox in the snow"
    assert fake.events("error") == []


def test_a_transcript_before_spoken_returns_still_reaches_the_satellite(
    fake: FakeSatellite,
) -> None:
    pipeline = StubPipeline()
    pipeline.early = ["transcript"]
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.stream(PROMPT)
        assert fake.wait_for("transcript")[0].data["text"] == "a red fox in the snow"


def test_busy_is_an_error_event(fake: FakeSatellite) -> None:
    with driving(StubPipeline(busy=True), fake.uri):
        fake.wait_for("run-satellite")
        fake.stream(PROMPT)
        error = fake.wait_for("error")[0]
    assert error.data == {"text": "busy, try again in a minute", "code": "busy"}


def test_a_rejection_is_an_error_before_or_after_the_transcript(fake: FakeSatellite) -> None:
    pipeline = StubPipeline()
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.stream(PROMPT)
        wait_until(lambda: pipeline.spoken_calls)
        pipeline.emit("rejected", "r1", reason="unclear")
        fake.wait_for("error")
        fake.stream(PROMPT)
        wait_until(lambda: len(pipeline.spoken_calls) == 2)
        pipeline.emit("transcript", "r2")
        pipeline.emit("rejected", "r2", reason="toxic")
        errors = fake.wait_for("error", 2)
    assert len(pipeline.spoken_calls) == 2
    assert [e.data["code"] for e in errors] == ["unclear", "toxic"]
    assert [e.data["text"] for e in fake.events("transcript")] == ["a red fox in the snow"]


def test_the_satellites_own_wake_word_starts_a_capture_and_rearms_it(
    fake: FakeSatellite,
) -> None:
    """wyoming-satellite 1.0.0 with a local wake word: `run-pipeline` from `asr`, audio,
    and it goes back to its wake word only on a transcript (an error is not enough)."""
    pipeline = StubPipeline()
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.send(RunPipeline(PipelineStage.ASR, PipelineStage.HANDLE).event())
        fake.stream(silence(1.5))  # quiet: only listen_now can have started it
        wait_until(lambda: pipeline.spoken_calls)
        assert pipeline.spoken_calls[0][2] == ("satellite", 1.0)
        assert fake.events("detection") == [], "the satellite knows it woke"
        pipeline.emit("rejected", "r1", reason="empty")
        fake.wait_for("transcript")
    assert pipeline.listeners[0].listen_now_calls == 1
    assert fake.events("error")[0].data["code"] == "empty"
    assert fake.events("transcript")[0].data["text"] == ""


def test_a_detection_then_its_run_pipeline_start_one_capture(fake: FakeSatellite) -> None:
    """Later releases send `detection` (with the wake word's name), then `run-pipeline`."""
    fake.pongs = True
    pipeline = StubPipeline()
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.send(
            Detection(name="ok_nabu").event(),
            RunPipeline(PipelineStage.ASR, PipelineStage.HANDLE).event(),
        )
        fake.stream(silence(1.5))
        wait_until(lambda: pipeline.spoken_calls)
        pipeline.emit("rejected", "r1", reason="empty")
        fake.wait_for("error")
        time.sleep(0.2)
    assert pipeline.spoken_calls[0][2] == ("satellite ok_nabu", 1.0)
    assert pipeline.listeners[0].listen_now_calls == 1  # the run-pipeline adds no reset
    assert len(pipeline.spoken_calls) == 1
    assert fake.events("transcript") == [], "a release that answers pings re-arms on error"


def test_audio_of_any_format_becomes_16_khz_mono_frames(fake: FakeSatellite) -> None:
    pipeline = StubPipeline()
    seconds = 2.0
    t = np.arange(int(48000 * seconds)) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 1000).astype(np.int16)
    stereo = np.repeat(tone, 2)  # interleaved left/right
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.stream(stereo, rate=48000, channels=2)
        frames = pipeline.listeners[0].frames
        wait_until(lambda: len(frames) >= int(16000 * seconds) // FRAME_SAMPLES - 1)
        time.sleep(0.2)
    assert set(frames) == {FRAME_SAMPLES}
    assert abs(len(frames) * FRAME_SAMPLES - 16000 * seconds) <= FRAME_SAMPLES


# stop() bounds itself: STOP_WITHIN_S for the connections, then THREADS_WITHIN_S for the
# listener threads (satellite.py); the rest is the call's own overhead.
STOP_BOUND_S = STOP_WITHIN_S + THREADS_WITHIN_S + 0.4
# The delay before each new try, as the driver announces it (WARNING once, then DEBUG).
ANNOUNCED_DELAY = re.compile(r"(?:connecting again in|next try in) ([0-9.]+) s")


def test_a_satellite_controlled_elsewhere_is_retried_with_backoff_warning_once(
    fake: FakeSatellite, caplog: pytest.LogCaptureFixture
) -> None:
    """wyoming-satellite answers a second controller's `describe`, then stops reading it
    at `run-satellite` without closing the connection: only silence tells."""
    fake.controlled_elsewhere = True
    caplog.set_level(logging.DEBUG, logger="speech2image.wyoming.satellite")
    timing = replace(TIMING, describe_every_s=0.1, pong_within_s=0.2)
    driver = SatelliteDriver(StubPipeline(), fake.uri, reconnect_max_s=0.8, timing=timing)
    driver.start()
    try:
        wait_until(lambda: len(fake.connected_at) >= 6, 15)
        fake.controlled_elsewhere = False
        kept = wait_until(lambda: _kept_connection(fake), 5)
        fake.stream(silence(0.3))  # audio: a good connection
        wait_until(lambda: "connected again" in caplog.text)
        fake.drop()
        wait_until(lambda: len(fake.connected_at) > kept, 3)
    finally:
        driver.stop()
    gaps = np.diff(fake.connected_at)
    silent = timing.describe_every_s + timing.pong_within_s  # until the driver gives up
    for gap, backoff in zip(gaps, [0.1, 0.2, 0.4, 0.8, 0.8], strict=False):
        assert gap >= (silent + backoff) * 0.95  # it really waited what it announced
    announced = [float(found) for found in ANNOUNCED_DELAY.findall(caplog.text)]
    *elsewhere, after_good = announced
    assert len(elsewhere) >= 5, announced
    assert elsewhere[:4] == [0.1, 0.2, 0.4, 0.8], announced
    assert set(elsewhere[3:]) == {0.8}, "the backoff stops growing at reconnect_max_s"
    assert after_good == 0.1, "after a good connection the backoff starts over at 0.1 s"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one outage each
    assert "is another controller, such as Home Assistant, connected" in warnings[0]
    assert "connecting again in 0.1 s" in warnings[0]


def _kept_connection(fake: FakeSatellite) -> int:
    """The number of the newest connection if it took run-satellite and is still open."""
    newest = len(fake.connected_at)
    taken = fake.events("run-satellite", newest) and newest not in fake.closed
    return newest if taken else 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"{not json\n",
        b"[1, 2]\n",
        b'{"data": {}}\n',
        b'{"type": "audio-chunk", "payload_length": 1000000000}\n',
        b'{"type": "audio-chunk", "data_length": -4}\n',
        b'{"type": "audio-chunk", "data": {"width": 2, "channels": 1}}\n',
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 7, "channels": 1}}\n',
        b'{"type": "run-pipeline", "data": {"start_stage": "dance", "end_stage": "tts"}}\n',
        b"x" * 100_000 + b"\n",
    ],
    ids=lambda g: g[:40].decode(),
)
def test_a_malformed_event_drops_the_connection_not_the_driver(
    fake: FakeSatellite, garbage: bytes
) -> None:
    pipeline = StubPipeline()
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.send_raw(garbage)
        fake.wait_for("run-satellite", 2)  # connected again
        fake.stream(PROMPT)
        wait_until(lambda: pipeline.spoken_calls)


def test_a_satellite_that_answers_pings_is_pinged_and_dropped_when_it_stops(
    fake: FakeSatellite,
) -> None:
    fake.version, fake.pongs = "1.4.1", True
    with driving(StubPipeline(), fake.uri):
        fake.wait_for("ping", 3)
        assert len(fake.connected_at) == 1
        fake.pongs = False
        wait_until(lambda: fake.events("run-satellite", 2), 3, "connected again")


def test_a_satellite_that_answers_the_probe_is_pinged_from_then_on(fake: FakeSatellite) -> None:
    fake.pongs = True  # wyoming-satellite 1.1.x: pongs, but no version in its info
    with driving(StubPipeline(), fake.uri):
        fake.wait_for("ping", 3)


def test_the_satellites_ping_is_answered(fake: FakeSatellite) -> None:
    with driving(StubPipeline(), fake.uri):
        fake.wait_for("run-satellite")
        fake.send(Ping(text="are you there").event())
        wait_until(lambda: fake.received and _pongs(fake))
    assert _pongs(fake) == ["are you there"]


def _pongs(fake: FakeSatellite) -> list[str]:
    return [str(e.data.get("text")) for e in _sent_by_driver(fake) if e.type == "pong"]


def _sent_by_driver(fake: FakeSatellite) -> list[Event]:
    return [e for _, e in fake.received]


def test_a_stream_that_stalls_on_a_satellite_without_pings_is_a_dead_peer(
    fake: FakeSatellite,
) -> None:
    timing = replace(TIMING, stall_s=0.5, describe_every_s=10.0)
    driver = SatelliteDriver(StubPipeline(), fake.uri, timing=timing)
    driver.start()
    try:
        fake.wait_for("run-satellite")
        fake.stream(silence(0.3))
        wait_until(lambda: len(fake.connected_at) == 2, 3)
    finally:
        driver.stop()


def test_a_disconnect_mid_utterance_drops_the_capture(fake: FakeSatellite) -> None:
    pipeline = StubPipeline()
    first_loud = int(np.argmax(np.abs(PROMPT.astype(np.int32)) > LOUD))
    wake = PROMPT[: first_loud + (UTTERANCE_FRAMES // 2) * FRAME_SAMPLES]
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.stream(wake)
        fake.wait_for("detection")
        fake.drop()
        fake.wait_for("run-satellite", 2)
        listener = pipeline.listeners[0]
        wait_until(lambda: listener.finished)
        assert pipeline.spoken_calls == []
        fake.stream(PROMPT)
        wait_until(lambda: pipeline.spoken_calls)


def test_a_slow_listener_drops_audio_while_pings_are_still_answered(
    fake: FakeSatellite, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = StubPipeline(delay_s=0.05)  # 50 ms a frame: under real time, behind a burst
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        fake.stream(silence(20.0))
        fake.send(Ping(text="busy?").event())
        wait_until(lambda: _pongs(fake), 1.0, "a pong within 1 s while listening is behind")
        wait_until(lambda: "dropping audio" in caplog.text)
        processed = len(pipeline.listeners[0].frames)
    assert processed < 20 * 16000 // FRAME_SAMPLES


def test_stop_pauses_the_satellite_and_returns_within_two_seconds(fake: FakeSatellite) -> None:
    pipeline = StubPipeline(delay_s=0.05)
    driver = SatelliteDriver(pipeline, fake.uri, timing=TIMING)
    driver.start()
    fake.wait_for("run-satellite")
    fake.stream(silence(5.0))
    began = time.monotonic()
    driver.stop()
    assert time.monotonic() - began < STOP_BOUND_S
    fake.wait_for("pause-satellite")
    wait_until(lambda: fake.closed == [1])


def test_stop_while_waiting_to_connect_again_returns_within_two_seconds() -> None:
    fake = FakeSatellite()
    uri = fake.uri
    fake.close()  # nothing listens there now
    driver = SatelliteDriver(StubPipeline(), uri, timing=TIMING, reconnect_max_s=30)
    driver.start()
    time.sleep(0.5)
    began = time.monotonic()
    driver.stop()
    assert time.monotonic() - began < STOP_BOUND_S


def test_satellites_share_one_loop_and_each_hears_only_of_its_own_requests() -> None:
    kitchen, bedroom = FakeSatellite(), FakeSatellite(version="1.4.1", pongs=True)
    pipeline = StubPipeline()
    satellites = Satellites(pipeline, [kitchen.uri, bedroom.uri, kitchen.uri], timing=TIMING)
    try:
        satellites.start()
        assert len(pipeline.listeners) == 2
        kitchen.wait_for("run-satellite")
        bedroom.wait_for("run-satellite")
        kitchen.stream(PROMPT)
        wait_until(lambda: pipeline.spoken_calls)
        bedroom.stream(PROMPT)
        wait_until(lambda: len(pipeline.spoken_calls) == 2)
        origins = {origin: f"r{n}" for n, (_, origin, _) in enumerate(pipeline.spoken_calls, 1)}
        pipeline.emit("transcript", origins[f"satellite {bedroom.uri}"], text="a blue owl")
        pipeline.emit("transcript", origins[f"satellite {kitchen.uri}"], text="a red fox")
        kitchen.wait_for("transcript")
        bedroom.wait_for("transcript")
        began = time.monotonic()
        satellites.stop()
        assert time.monotonic() - began < STOP_BOUND_S
    finally:
        satellites.stop()
        kitchen.close()
        bedroom.close()
    assert [e.data["text"] for e in kitchen.events("transcript")] == ["a red fox"]
    assert [e.data["text"] for e in bedroom.events("transcript")] == ["a blue owl"]
    assert kitchen.events("pause-satellite")
    assert bedroom.events("pause-satellite")
    names = {t.name for t in threading.enumerate()}
    assert not any(name.startswith("listen tcp://") for name in names)


def test_audio_stop_ends_an_open_capture(fake: FakeSatellite) -> None:
    """A VAD satellite stops streaming (`audio-stop`) when its wake-word timeout ends."""
    pipeline = StubPipeline()
    with driving(pipeline, fake.uri):
        fake.wait_for("run-satellite")
        first_loud = int(np.argmax(np.abs(PROMPT.astype(np.int32)) > LOUD))
        fake.stream(PROMPT[: first_loud + 4 * FRAME_SAMPLES])
        fake.wait_for("detection")
        fake.send(AudioStop().event())
        fake.wait_for("error")
    assert fake.events("error")[0].data["code"] == "empty"
    assert pipeline.listeners[0].finished >= 1


def test_a_listener_that_cannot_be_built_stops_the_satellites_already_started() -> None:
    kitchen, bedroom = FakeSatellite(), FakeSatellite()
    pipeline = StubPipeline()
    built = pipeline.listener

    def listener() -> StubListener:
        if pipeline.listeners:
            raise FileNotFoundError("hey_jarvis.onnx")
        return built()

    pipeline.listener = listener  # type: ignore[method-assign]
    satellites = Satellites(pipeline, [kitchen.uri, bedroom.uri], timing=TIMING)
    try:
        with pytest.raises(FileNotFoundError):
            satellites.start()
        time.sleep(0.3)
    finally:
        kitchen.close()
        bedroom.close()
    assert bedroom.connected_at == []
    assert not any(t.name.startswith("listen tcp://") for t in threading.enumerate())
