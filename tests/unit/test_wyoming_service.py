"""The Wyoming service over real TCP with the real ``wyoming`` client, as Home Assistant
uses it: describe, ASR (transcribe, audio-start, audio-chunk..., audio-stop), handle
(transcript with context), and the service's start/stop contract.

The daemon is not under test here: :class:`FakePipeline` stands in for it, records
what reached it, and can be made busy on demand.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient, AsyncUnixClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong

from speech2image.pcm import SAMPLE_RATE, Frame
from speech2image.wyoming.audioin import AudioIn
from speech2image.wyoming.info import BUSY_REPLY, FAILED_REPLY, Limits, origin_for
from speech2image.wyoming.pipeline import Answer, BusyError, Heard
from speech2image.wyoming.service import (
    STOP_TIMEOUT_S,
    WyomingError,
    WyomingService,
    parse_uri,
)
from tests.support import DATA, data_audio

HA_CONTEXT = {
    "conversation_id": "01JBX9ZQ8M5N2Y8W0V1T3S6R4P",
    "device_id": "4f1c2b9e0d7a",
    "satellite_id": "assist_satellite.kitchen",
}


class FakePipeline:
    """A daemon stand-in: fixed answers, a record of every call, and a gate that
    holds calls inside the pipeline (busy) until opened."""

    asr_model = "tiny.en"
    asr_languages = ("en", "de")
    image_model = "stabilityai/sd-turbo"

    def __init__(self) -> None:
        self.text = "a red fox in the snow"
        self.answer: Answer | None = None
        self.fail: Exception | None = None
        self.asked: list[str] = []  # every call, on entry
        self.heard: list[tuple[Frame, str | None]] = []
        self.drawn: list[tuple[str, str | None, str, dict[str, Any]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Semaphore(0)  # released once per call that entered

    def _enter(self, what: str) -> None:
        self.asked.append(what)
        self.inside.release()
        assert self.gate.wait(20), "the test never opened the pipeline"
        if self.fail is not None:
            raise self.fail

    def transcribe(self, audio: Frame, language: str | None) -> Heard:
        self._enter("transcribe")
        self.heard.append((audio.copy(), language))
        return Heard(self.text, language or "en")

    def draw(
        self, prompt: str, language: str | None, origin: str, context: dict[str, Any]
    ) -> Answer:
        self._enter(prompt)
        self.drawn.append((prompt, language, origin, dict(context)))
        return self.answer or Answer(True, f"Drawing {prompt}", "r-1")

    def wait_inside(self, count: int = 1, timeout: float = 5.0) -> None:
        for _ in range(count):
            assert self.inside.acquire(timeout=timeout), "no call reached the pipeline"


@contextmanager
def serving(
    pipeline: FakePipeline, limits: Limits | None = None, uri: str = "tcp://127.0.0.1:0"
) -> Iterator[WyomingService]:
    service = WyomingService(pipeline, uri, version="9.9.9", limits=limits)
    service.start()
    try:
        yield service
    finally:
        pipeline.gate.set()
        service.stop()


def port_of(service: WyomingService) -> int:
    assert service.uri is not None
    return int(service.uri.rsplit(":", 1)[1])


@pytest.fixture
def pipeline() -> Iterator[FakePipeline]:
    fake = FakePipeline()
    yield fake
    fake.gate.set()


@pytest.fixture
def service(pipeline: FakePipeline) -> Iterator[WyomingService]:
    with serving(pipeline) as running:
        yield running


def client(service: WyomingService) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port_of(service))


async def read(peer: AsyncClient, timeout: float = 5.0) -> Event | None:
    return await asyncio.wait_for(peer.read_event(), timeout)


async def ask(service: WyomingService, *events: Event, answers: int = 1) -> list[Event | None]:
    """A fresh connection per request, as Home Assistant makes them."""
    async with client(service) as peer:
        for event in events:
            await peer.write_event(event)
        return [await read(peer) for _ in range(answers)]


def describe(service: WyomingService, timeout: float = 1.0) -> Info:
    """``describe`` -> ``info`` within ``timeout`` (Home Assistant gives up after 1 s)."""

    async def go() -> Info:
        async with client(service) as peer:
            await peer.write_event(Describe().event())
            event = await read(peer, timeout)
        assert event is not None
        assert Info.is_type(event.type)
        return Info.from_event(event)

    return asyncio.run(go())


def audio_events(
    pcm: bytes, rate: int, width: int, channels: int, chunk_bytes: int = 4096
) -> list[Event]:
    events = [AudioStart(rate, width, channels).event()]
    for start in range(0, len(pcm), chunk_bytes):
        piece = pcm[start : start + chunk_bytes]
        events.append(AudioChunk(rate, width, channels, piece).event())
    return [*events, AudioStop().event()]


def likeness(got: Frame, reference: Frame) -> tuple[float, float]:
    """(correlation, RMS ratio) of two 16 kHz clips over their common length."""
    n = min(len(got), len(reference))
    a, b = got[:n].astype(np.float64), reference[:n].astype(np.float64)
    rms = float(np.sqrt(np.mean(a**2)) / np.sqrt(np.mean(b**2)))
    return float(np.corrcoef(a, b)[0, 1]), rms


def jfk_as(width: int, rate: int = 44100, channels: int = 2) -> bytes:
    """tests/data/jfk.flac (44.1 kHz stereo) as little-endian PCM of ``width`` bytes."""
    samples, file_rate = soundfile.read(Path(DATA, "jfk.flac"), dtype="int32")
    assert file_rate == 44100
    assert samples.shape[1] == 2
    if rate != file_rate or channels != 2:
        mono = samples.mean(axis=1) / 2.0**31
        samples = (resample_poly(mono, rate // 100, 441) * 2.0**31).astype(np.int64)
        samples = np.clip(samples, -(2**31), 2**31 - 1)[:, None]
    if width == 1:
        return (np.clip(np.round(samples / 2.0**24), -128, 127) + 128).astype(np.uint8).tobytes()
    bytes4 = samples.astype("<i4").view(np.uint8).reshape(-1, 4)
    return bytes4[:, 4 - width :].tobytes()


# --- describe -------------------------------------------------------------------------


def test_describe_advertises_an_asr_and_a_handle_program(service: WyomingService) -> None:
    info = describe(service)
    (asr,) = info.asr
    (handle,) = info.handle
    assert (asr.name, asr.installed, asr.version) == ("speech2image", True, "9.9.9")
    assert asr.supports_transcript_streaming is False
    assert [(m.name, m.languages, m.installed) for m in asr.models] == [
        ("tiny.en", ["en", "de"], True)
    ]
    assert (handle.name, handle.description, handle.installed) == (
        "speech2image",
        "Draws what you ask for",
        True,
    )
    assert [(m.name, m.languages) for m in handle.models] == [
        ("stabilityai/sd-turbo", ["en", "de"])
    ]
    assert info.tts == []
    assert info.satellite is None


def test_describe_answers_within_a_second_while_every_pipeline_thread_is_busy(
    pipeline: FakePipeline,
) -> None:
    """Home Assistant gives up after 1 s; the pipeline may be transcribing for others."""
    pipeline.gate.clear()
    with serving(pipeline, Limits(workers=2)) as service:

        async def go() -> None:
            speech = np.zeros(SAMPLE_RATE, dtype=np.int16).tobytes()
            busy = [client(service) for _ in range(3)]  # one more than the pool has threads
            for peer in busy:
                await peer.connect()
                await peer.write_event(Transcribe(language="en").event())
                for event in audio_events(speech, SAMPLE_RATE, 2, 1):
                    await peer.write_event(event)
            await asyncio.to_thread(pipeline.wait_inside, 2)
            info = await asyncio.to_thread(describe, service, 1.0)
            assert info.asr[0].name == "speech2image"
            # ... and on a connection that is itself waiting for the pipeline
            await busy[0].write_event(Describe().event())
            event = await read(busy[0], timeout=1.0)
            assert event is not None
            assert Info.is_type(event.type)
            pipeline.gate.set()
            for peer in busy:
                answer = await read(peer)
                assert answer is not None
                assert Transcript.is_type(answer.type)
                await peer.disconnect()

        asyncio.run(go())
    assert len(pipeline.heard) == 3


def test_ping_is_answered_with_pong(service: WyomingService) -> None:
    (pong,) = asyncio.run(ask(service, Ping(text="still there?").event()))
    assert pong is not None
    assert Pong.is_type(pong.type)
    assert Pong.from_event(pong).text == "still there?"


# --- ASR ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "rate", "channels", "min_correlation"),
    [(2, 44100, 2, 0.999), (3, 44100, 2, 0.999), (4, 44100, 2, 0.999), (1, 8000, 1, 0.99)],
)
def test_audio_of_any_format_reaches_the_pipeline_as_16k_mono(
    service: WyomingService,
    pipeline: FakePipeline,
    width: int,
    rate: int,
    channels: int,
    min_correlation: float,
) -> None:
    pcm = jfk_as(width, rate, channels)
    events = [Transcribe(language="en").event(), *audio_events(pcm, rate, width, channels)]
    (answer,) = asyncio.run(ask(service, *events))
    assert answer is not None
    assert Transcript.is_type(answer.type)
    transcript = Transcript.from_event(answer)
    assert (transcript.text, transcript.language) == ("a red fox in the snow", "en")
    ((audio, language),) = pipeline.heard
    assert language == "en"
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    reference = data_audio("jfk.flac")  # the microphone path's own conversion
    assert abs(len(audio) - 11.0 * SAMPLE_RATE) < 0.01 * SAMPLE_RATE
    correlation, rms = likeness(audio, reference)
    assert correlation > min_correlation
    assert 0.95 < rms < 1.05  # channels averaged, not summed


def test_16k_mono_audio_passes_through_bit_exact_even_split_mid_sample(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    speech = data_audio("jfk.flac")
    events = audio_events(speech.astype("<i2").tobytes(), SAMPLE_RATE, 2, 1, chunk_bytes=2047)
    (answer,) = asyncio.run(ask(service, *events))
    assert answer is not None
    assert Transcript.is_type(answer.type)
    ((audio, language),) = pipeline.heard
    assert language is None
    np.testing.assert_array_equal(audio, speech)


def test_a_failing_transcription_is_an_error_event_and_the_connection_goes_on(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    pipeline.fail = RuntimeError("model fell over")
    speech = np.zeros(SAMPLE_RATE, dtype=np.int16).tobytes()

    async def go() -> tuple[Event | None, Event | None]:
        async with client(service) as peer:
            for event in audio_events(speech, SAMPLE_RATE, 2, 1):
                await peer.write_event(event)
            error = await read(peer)
            pipeline.fail = None
            for event in audio_events(speech, SAMPLE_RATE, 2, 1):
                await peer.write_event(event)
            return error, await read(peer)

    error, transcript = asyncio.run(go())
    assert error is not None
    assert Error.from_event(error) == Error(
        text="could not transcribe the audio", code="asr-failed"
    )
    assert transcript is not None
    assert Transcript.is_type(transcript.type)


def test_resampling_filters_what_16k_cannot_hold_and_averages_channels() -> None:
    """What wyoming's AudioChunkConverter gets wrong: a 12 kHz tone at 44.1 kHz aliases
    to 4 kHz there, and two channels at 0.6 of full scale sum to a clipped 1.2."""
    t = np.arange(44100) / 44100
    high = 0.5 * np.sin(2 * np.pi * 12000 * t)
    low = 0.6 * np.sin(2 * np.pi * 1000 * t)
    for tone, expected_rms in ((high, 0.0), (low, 0.6 / np.sqrt(2))):
        stereo = np.repeat(np.round(tone * 32767).astype("<i2"), 2)
        audio = AudioIn(60)
        audio.add(44100, 2, 2, stereo.tobytes())
        out = audio.finish().astype(np.float64) / 32768
        assert abs(np.sqrt(np.mean(out**2)) - expected_rms) < 0.01
        assert np.abs(out).max() < 0.62


# --- handle ---------------------------------------------------------------------------


def test_handle_like_home_assistant_describe_then_a_fresh_connection_per_request(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    info = describe(service)
    assert info.handle[0].installed
    request = Transcript("a red fox in the snow", context=HA_CONTEXT, language="en")
    (answer,) = asyncio.run(ask(service, request.event()))
    assert answer is not None
    assert Handled.is_type(answer.type)
    handled = Handled.from_event(answer)
    assert handled.text == "Drawing a red fox in the snow"
    assert handled.context == HA_CONTEXT
    ((prompt, language, origin, context),) = pipeline.drawn
    assert (prompt, language, context) == ("a red fox in the snow", "en", HA_CONTEXT)
    assert origin == "wyoming 127.0.0.1 satellite=assist_satellite.kitchen device=4f1c2b9e0d7a"


def test_a_request_without_language_or_room_reaches_the_pipeline_as_such(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    """Home Assistant's conversation agent sends only a conversation id."""
    context = {"conversation_id": "01JBX9ZQ8M"}
    (answer,) = asyncio.run(ask(service, Transcript("ein Fuchs", context=context).event()))
    assert answer is not None
    assert Handled.is_type(answer.type)
    assert pipeline.drawn == [("ein Fuchs", None, "wyoming 127.0.0.1", context)]


@pytest.mark.parametrize(
    ("answer", "fail", "reply"),
    [
        (Answer(False, "I can't draw that.", reason="toxic"), None, "I can't draw that."),
        (None, BusyError("full"), BUSY_REPLY),
        (None, RuntimeError("boom"), FAILED_REPLY),
    ],
)
def test_refusals_and_failures_are_not_handled_with_a_spoken_reason(
    service: WyomingService,
    pipeline: FakePipeline,
    answer: Answer | None,
    fail: Exception | None,
    reply: str,
) -> None:
    pipeline.answer, pipeline.fail = answer, fail
    (event,) = asyncio.run(ask(service, Transcript("x", context=HA_CONTEXT).event()))
    assert event is not None
    assert NotHandled.is_type(event.type)
    assert NotHandled.from_event(event).text == reply
    assert NotHandled.from_event(event).context == HA_CONTEXT


def test_requests_on_one_connection_are_answered_in_the_order_asked(
    pipeline: FakePipeline,
) -> None:
    """All three wait behind the first; four pool threads could run them at once and
    answer in any order, but one connection's answers keep its order."""
    pipeline.gate.clear()
    speech = np.zeros(SAMPLE_RATE, dtype=np.int16).tobytes()
    events = [
        Transcript("first").event(),
        *audio_events(speech, SAMPLE_RATE, 2, 1),
        Transcript("third").event(),
    ]

    async def go(service: WyomingService) -> list[Event | None]:
        async with client(service) as peer:
            for event in events:
                await peer.write_event(event)
            await asyncio.to_thread(pipeline.wait_inside)
            await asyncio.sleep(0.2)  # let the other two reach the pool if they could
            pipeline.gate.set()
            return [await read(peer) for _ in range(3)]

    with serving(pipeline, Limits(max_pending=3)) as service:
        first, second, third = asyncio.run(go(service))
    assert first is not None
    assert Handled.from_event(first).text == "Drawing first"
    assert second is not None
    assert Transcript.is_type(second.type)
    assert third is not None
    assert Handled.from_event(third).text == "Drawing third"
    assert pipeline.asked == ["first", "transcribe", "third"]


def test_origin_names_client_and_room_and_keeps_network_text_harmless() -> None:
    assert origin_for("10.0.0.7", None) == "wyoming 10.0.0.7"
    assert origin_for("", {"device_id": 42}) == "wyoming local device=42"
    evil = {"satellite_id": "kitchen\n[ERROR] forged\x1b[31m" + "x" * 500}
    origin = origin_for("127.0.0.1", evil)
    assert "\n" not in origin
    assert "\x1b" not in origin
    assert " " not in origin.split("=", 1)[1]
    assert len(origin) < 120
    assert origin_for("::1", {"satellite_id": None, "device_id": True}) == "wyoming ::1"


# --- start and stop -------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["tcp://0.0.0.0:10650", "tcp://192.168.1.20:10650", "tcp://[::]:1"])
def test_listening_beyond_loopback_needs_allow_network(uri: str) -> None:
    with pytest.raises(WyomingError) as refused:
        WyomingService(FakePipeline(), uri).start()
    message = str(refused.value)
    assert uri in message
    assert "no authentication" in message
    assert "allow_network" in message
    assert parse_uri(uri, allow_network=True).scheme == "tcp"


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:10650", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "unix://"]
)
def test_a_bad_uri_is_a_wyoming_error_naming_it(uri: str) -> None:
    with pytest.raises(WyomingError) as refused:
        WyomingService(FakePipeline(), uri).start()
    assert str(refused.value).startswith(f"{uri}: ")


def test_allow_network_binds_the_wildcard_address(pipeline: FakePipeline) -> None:
    service = WyomingService(pipeline, "tcp://0.0.0.0:0", allow_network=True)
    uri = service.start()
    try:
        assert uri.startswith("tcp://0.0.0.0:")
        assert not uri.endswith(":0")
        assert describe(service).asr
    finally:
        service.stop()


def test_a_taken_port_is_a_wyoming_error_naming_it(pipeline: FakePipeline) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        uri = f"tcp://127.0.0.1:{port}"
        with pytest.raises(WyomingError) as refused:
            WyomingService(pipeline, uri).start()
    assert uri in str(refused.value)
    assert f"port {port} is taken" in str(refused.value)


# stop() bounds itself (service.py): STOP_TIMEOUT_S * 0.75 for closing, then
# STOP_TIMEOUT_S / 2 for the loop thread; the rest is the call's own overhead.
STOP_BOUND_S = STOP_TIMEOUT_S * 0.75 + STOP_TIMEOUT_S / 2 + 0.5


def test_stop_with_clients_connected_and_a_call_stuck_in_the_pipeline_is_prompt(
    pipeline: FakePipeline,
) -> None:
    pipeline.gate.clear()
    service = WyomingService(pipeline, "tcp://127.0.0.1:0")
    port = port_of_started(service)

    async def go() -> list[Event | None]:
        peers = [AsyncTcpClient("127.0.0.1", port) for _ in range(3)]
        for peer in peers:
            await peer.connect()
        await peers[0].write_event(Transcript("stuck").event())
        await asyncio.to_thread(pipeline.wait_inside)
        started = time.monotonic()
        await asyncio.to_thread(service.stop)
        assert time.monotonic() - started < STOP_BOUND_S  # not the stuck call's 20 s
        return [await read(peer) for peer in peers]

    assert asyncio.run(go()) == [None, None, None]  # every client sees the end
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    service.stop()  # idempotent
    assert service.uri is None


def port_of_started(service: WyomingService) -> int:
    service.start()
    return port_of(service)


def test_a_unix_socket_serves_too_and_a_second_server_there_is_refused(
    pipeline: FakePipeline, tmp_path: Path
) -> None:
    path = tmp_path / "s2i.sock"
    with serving(pipeline, uri=f"unix://{path}") as service:
        assert service.uri == f"unix://{path}"

        async def go() -> Event | None:
            async with AsyncUnixClient(str(path)) as peer:
                await peer.write_event(Transcript("over a unix socket").event())
                return await read(peer)

        answer = asyncio.run(go())
        assert answer is not None
        assert Handled.is_type(answer.type)
        assert pipeline.drawn[0][2] == "wyoming local"
        with pytest.raises(WyomingError, match="another server"):
            WyomingService(pipeline, f"unix://{path}").start()
    assert not path.exists()


def test_zeroconf_flag_starts_and_the_service_works(
    pipeline: FakePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """mDNS needs multicast; where it fails the service logs a warning and carries on.
    Either way the flag never stops the service from serving or from stopping."""
    caplog.set_level(logging.DEBUG, logger="wyoming.zeroconf")
    service = WyomingService(pipeline, "tcp://127.0.0.1:0", zeroconf=True)
    service.start()
    try:
        assert describe(service).handle
        deadline = time.monotonic() + 10
        while not any(_zeroconf_done(r.getMessage()) for r in caplog.records):
            assert time.monotonic() < deadline, "zeroconf neither registered nor failed"
            time.sleep(0.05)
        assert describe(service).asr
    finally:
        started = time.monotonic()
        service.stop()
        assert time.monotonic() - started < STOP_BOUND_S
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def _zeroconf_done(message: str) -> bool:
    return message.startswith(("Zeroconf discovery enabled", "Wyoming: zeroconf failed"))
