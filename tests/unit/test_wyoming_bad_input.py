"""What a careless or hostile client can send the Wyoming service: each case gets an
``error`` event or a closed connection, never a dead server, and memory stays bounded.
After every case a fresh client's ``describe`` still gets ``info`` within 1 s.

Real TCP, raw bytes where the ``wyoming`` client would refuse to send them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.handle import Handled
from wyoming.info import Describe, Info

from speech2image.pcm import SAMPLE_RATE
from speech2image.wyoming.info import Limits
from speech2image.wyoming.service import WyomingService
from tests.unit.test_wyoming_service import (
    FakePipeline,
    audio_events,
    client,
    describe,
    port_of,
    read,
    serving,
)

SECOND = np.zeros(SAMPLE_RATE, dtype=np.int16).tobytes()


@pytest.fixture
def pipeline() -> Iterator[FakePipeline]:
    fake = FakePipeline()
    yield fake
    fake.gate.set()


@pytest.fixture
def service(pipeline: FakePipeline) -> Iterator[WyomingService]:
    with serving(pipeline, Limits(max_event_bytes=64 * 1024)) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A task that died unseen ("Task exception was never retrieved") or a handler
    that crashed logs at ERROR; bad input is a WARNING at most."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def still_serving(service: WyomingService) -> None:
    assert describe(service, timeout=1.0).asr[0].name == "speech2image"


async def raw(service: WyomingService, data: bytes) -> list[Event]:
    """Sends bytes as they are, then reads events until the server closes (or 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    writer.write(data)
    await writer.drain()
    events: list[Event] = []
    try:
        while (event := await asyncio.wait_for(async_read_event(reader), 5)) is not None:
            events.append(event)
    except ConnectionResetError:  # closed with our bytes unread: the kernel resets
        pass
    writer.close()
    return events


def header(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, **fields}).encode() + b"\n"


# --- malformed events: an error event, then the connection closes ---------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"this is not json\n", "header is not JSON"),
        (b"[1, 2, 3]\n", "header has no event type"),
        (b'{"data": {}}\n', "header has no event type"),
        (b'{"type": "describe", "data": [1]}\n', "event data is not an object"),
        (header("describe", data_length=5) + b"nope!", "event data is not JSON"),
        (header("describe", data_length="12"), "data_length is not a length"),
        (header("audio-chunk", payload_length=-1), "payload_length is not a length"),
        (header("audio-chunk", payload_length=10**12), "payload_length 1000000000000 is over"),
        (header("describe", data_length=2**40), "data_length 1099511627776 is over"),
    ],
)
def test_a_malformed_event_gets_an_error_and_a_closed_connection(
    service: WyomingService, data: bytes, text: str
) -> None:
    events = asyncio.run(raw(service, data + header("describe")))
    assert len(events) == 1
    assert Error.is_type(events[0].type)
    error = Error.from_event(events[0])
    assert error.code == "bad-event"
    assert error.text.startswith(text)
    still_serving(service)


def test_a_header_line_longer_than_the_reader_allows_closes_the_connection(
    service: WyomingService,
) -> None:
    asyncio.run(raw(service, b"{" + b" " * (200 * 1024)))
    still_serving(service)


def test_a_payload_shorter_than_announced_then_the_client_leaves(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    async def go() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
        writer.write(header("audio-start", data={"rate": 16000, "width": 2, "channels": 1}))
        chunk = {"rate": 16000, "width": 2, "channels": 1}
        writer.write(header("audio-chunk", data=chunk, payload_length=32000) + b"\0" * 10)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    asyncio.run(go())
    still_serving(service)
    assert pipeline.asked == []


def test_events_with_fields_of_the_wrong_type_get_an_error_and_the_connection_goes_on(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    bad = [
        Event("transcript", {"text": 42}),
        Event("transcript", {}),
        Event("transcript", {"text": "x", "context": "not a dict"}),
        Event("transcribe", {"language": ["en"]}),
        Event("audio-start", {"rate": 16000}),
    ]
    answers = asyncio.run(_ask_all(service, [*bad, Describe().event()], len(bad) + 1))
    assert [Error.from_event(e).code for e in answers[:-1]] == ["bad-event"] * len(bad)
    assert Info.is_type(answers[-1].type)
    assert pipeline.asked == []


async def _ask_all(service: WyomingService, events: list[Event], count: int) -> list[Event]:
    async with client(service) as peer:
        for event in events:
            await peer.write_event(event)
        answers = [await read(peer) for _ in range(count)]
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


# --- audio out of order or out of bounds: an error event, the connection goes on ------


def test_audio_chunks_before_audio_start_get_one_error_and_the_connection_goes_on(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    stray = [AudioChunk(16000, 2, 1, SECOND).event() for _ in range(3)]
    events = [*stray, Describe().event(), *audio_events(SECOND, 16000, 2, 1)]
    error, info, transcript = asyncio.run(_ask_all(service, events, 3))
    assert Error.from_event(error).code == "audio-chunk-before-start"
    assert Info.is_type(info.type)  # exactly one error for the three chunks
    assert Transcript.is_type(transcript.type)
    ((audio, _),) = pipeline.heard
    assert len(audio) == SAMPLE_RATE  # the stray second was not kept


def test_audio_stop_without_audio_start_gets_an_error(service: WyomingService) -> None:
    (error,) = asyncio.run(_ask_all(service, [AudioStop().event()], 1))
    assert Error.from_event(error).code == "audio-stop-before-start"


@pytest.mark.parametrize(
    "audio_format", [(0, 2, 1), (16000, 5, 1), (16000, 2, 0), (1, 2, 1), (16000, 2, 99)]
)
def test_an_unsupported_audio_format_gets_an_error_and_no_transcription(
    service: WyomingService, pipeline: FakePipeline, audio_format: tuple[int, int, int]
) -> None:
    rate, width, channels = audio_format
    stream = [
        AudioStart(16000, 2, 1).event(),
        AudioChunk(rate, width, channels, SECOND).event(),
        AudioChunk(16000, 2, 1, SECOND).event(),  # the request is already dropped
        AudioStop().event(),
        Describe().event(),
    ]
    error, info = asyncio.run(_ask_all(service, stream, 2))
    assert Error.from_event(error).code == "audio-format"
    assert Info.is_type(info.type)
    assert pipeline.asked == []


def test_ten_minutes_of_audio_are_refused_past_the_cap_in_bounded_memory(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    """19 MB of audio sent as fast as the socket takes it: the server keeps at most
    the 60 s cap (2 MB) and says so with an error; the connection then works again."""

    async def go() -> list[Event]:
        async with client(service) as peer:
            await peer.write_event(Transcribe(language="en").event())
            await peer.write_event(AudioStart(16000, 2, 1).event())
            for _ in range(600):
                await peer.write_event(AudioChunk(16000, 2, 1, SECOND).event())
            await peer.write_event(AudioStop().event())
            for event in audio_events(SECOND, 16000, 2, 1):  # a normal request after it
                await peer.write_event(event)
            answers = [await read(peer, timeout=30) for _ in range(2)]
        assert all(answer is not None for answer in answers)
        return [answer for answer in answers if answer is not None]

    tracemalloc.start()
    try:
        error, transcript = asyncio.run(go())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert Error.from_event(error) == Error(text="audio longer than 60 s", code="audio-too-long")
    assert Transcript.is_type(transcript.type)
    assert [len(audio) for audio, _ in pipeline.heard] == [SAMPLE_RATE]  # only the short one
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held for 19 MiB of audio"
    still_serving(service)


def test_too_many_requests_waiting_on_one_connection_get_a_busy_error(
    pipeline: FakePipeline,
) -> None:
    pipeline.gate.clear()
    with serving(pipeline, Limits(max_pending=2)) as service:

        async def go() -> list[Event]:
            async with client(service) as peer:
                for prompt in ("one", "two"):
                    await peer.write_event(Transcript(prompt).event())
                await asyncio.to_thread(pipeline.wait_inside)
                await peer.write_event(Transcript("three").event())
                busy = await read(peer)
                pipeline.gate.set()
                answers = [busy, await read(peer), await read(peer)]
            return [answer for answer in answers if answer is not None]

        busy, one, two = asyncio.run(go())
    assert Error.from_event(busy).code == "busy"
    assert [Handled.from_event(e).text for e in (one, two)] == ["Drawing one", "Drawing two"]
    assert pipeline.asked == ["one", "two"]


# --- clients that go away, and floods ------------------------------------------------


def test_a_client_that_leaves_mid_audio_costs_nothing(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    async def go() -> None:
        async with client(service) as peer:
            await peer.write_event(AudioStart(16000, 2, 1).event())
            await peer.write_event(AudioChunk(16000, 2, 1, SECOND).event())

    asyncio.run(go())
    still_serving(service)
    assert pipeline.asked == []


def test_a_client_that_leaves_while_its_request_waits_never_reaches_the_pipeline(
    pipeline: FakePipeline,
) -> None:
    """One pool thread, held by A: B's request waits for it, B leaves, and B's request
    is cancelled before the pipeline sees it; A's answer still arrives."""
    pipeline.gate.clear()
    with serving(pipeline, Limits(workers=1)) as service:

        async def go() -> Event | None:
            async with client(service) as first:
                await first.write_event(Transcript("from A").event())
                await asyncio.to_thread(pipeline.wait_inside)
                async with client(service) as second:
                    await second.write_event(Transcript("from B").event())
                    await asyncio.to_thread(_wait_for, lambda: service.connections == 2)
                await asyncio.to_thread(_wait_for, lambda: service.connections == 1)
                pipeline.gate.set()
                return await read(first)

        answer = asyncio.run(go())
        assert answer is not None
        assert Handled.from_event(answer).text == "Drawing from A"
        still_serving(service)
    assert pipeline.asked == ["from A"]


def test_a_client_that_leaves_while_the_pipeline_works_for_it_is_no_harm(
    service: WyomingService, pipeline: FakePipeline
) -> None:
    pipeline.gate.clear()

    async def go() -> None:
        async with client(service) as peer:
            await peer.write_event(Transcript("then gone").event())
            await asyncio.to_thread(pipeline.wait_inside)

    asyncio.run(go())
    _wait_for(lambda: service.connections == 0)
    pipeline.gate.set()
    still_serving(service)
    _wait_for(lambda: len(pipeline.drawn) == 1)  # the call finished; its answer went nowhere


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_a_flood_of_connections_is_turned_away_past_the_cap_and_the_server_survives(
    pipeline: FakePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """200 connections open at once, 16 allowed: 16 get ``info``, the rest are closed at
    once, and when the flood ends a fresh client is served."""
    with serving(pipeline, Limits(max_connections=16)) as service:
        outcomes = asyncio.run(_flood(port_of(service), 200))
        assert (outcomes.count("info"), outcomes.count("closed")) == (16, 184)
        _wait_for(lambda: service.connections == 0)
        still_serving(service)
    turned_away = [r for r in caplog.records if "connections are open" in r.getMessage()]
    assert len(turned_away) == 1  # one line per flood, not one per connection


async def _flood(port: int, count: int) -> list[str]:
    """``count`` connections opened at once, each asking ``describe``: what each got."""
    opened = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
    )
    try:
        return await asyncio.gather(*(_describe_on(*pair) for pair in opened))
    finally:
        for _, writer in opened:
            writer.close()


async def _describe_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    try:
        writer.write(header("describe"))
        await writer.drain()
        event = await asyncio.wait_for(async_read_event(reader), 10)
    except ConnectionError:
        event = None
    return "info" if event is not None and Info.is_type(event.type) else "closed"


def test_a_flood_under_the_default_limits_leaves_the_server_serving(
    service: WyomingService,
) -> None:
    outcomes = asyncio.run(_flood(port_of(service), 200))
    assert outcomes.count("info") == Limits().max_connections
    _wait_for(lambda: service.connections == 0)
    still_serving(service)


def test_idle_connections_are_closed_so_they_cannot_hold_every_slot(
    pipeline: FakePipeline,
) -> None:
    with serving(pipeline, Limits(max_connections=4, idle_timeout_s=0.5)) as service:

        async def go() -> list[Event | None]:
            idle = [await asyncio.open_connection("127.0.0.1", port_of(service)) for _ in range(4)]
            await asyncio.to_thread(_wait_for, lambda: service.connections == 4)
            ends = [await asyncio.wait_for(async_read_event(r), 5) for r, _ in idle]
            for _, writer in idle:
                writer.close()
            return ends

        assert asyncio.run(go()) == [None] * 4  # the server closed each idle one
        still_serving(service)


def test_a_request_waiting_on_the_pipeline_is_not_idle(pipeline: FakePipeline) -> None:
    pipeline.gate.clear()
    with serving(pipeline, Limits(idle_timeout_s=0.3)) as service:

        async def go() -> Event | None:
            async with client(service) as peer:
                await peer.write_event(Transcript("slow").event())
                await asyncio.to_thread(pipeline.wait_inside)
                await asyncio.sleep(1.0)  # over three idle timeouts inside the pipeline
                pipeline.gate.set()
                return await read(peer)

        answer = asyncio.run(go())
    assert answer is not None
    assert Handled.from_event(answer).text == "Drawing slow"
