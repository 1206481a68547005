"""One Wyoming connection: ``describe``, ``ping``, ASR and handle, on an open port.

Events on one connection are read in order, but requests run as tasks beside the
reader: the pipeline is called only in the service's thread pool, so ``describe``
is answered at once however busy the daemon is, and a client that goes away is
noticed (its waiting request is cancelled; one already in the pool finishes and its
answer goes nowhere). Requests on one connection still answer in the order asked.

Nothing a client sends can take more than :class:`Limits` allows: lengths are checked
before anything is read, audio is capped, idle connections are closed. A bad event
gets an ``error`` event where the stream can go on (an ``audio-chunk`` before
``audio-start`` is reported, not taken as an implicit start: Home Assistant always
sends ``audio-start``, so a stray chunk means a confused client), and an ``error``
then a closed connection where it cannot (a header that is not JSON, a length over
the limit).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from ..pcm import SAMPLE_RATE, Frame
from .audioin import AudioIn, AudioRefusedError
from .info import BUSY_REPLY, FAILED_REPLY, Limits, origin_for
from .pipeline import Answer, BusyError, Pipeline

log = logging.getLogger(__name__)

T = TypeVar("T")


class BadEventError(Exception):
    """An event that cannot be read; the connection cannot go on after it."""


@dataclass(frozen=True)
class Shared:
    """What every connection's handler shares, built once by the service."""

    pipeline: Pipeline
    info: Event
    pool: Executor
    limits: Limits
    connections: Connections


class Connections:
    """The open connections, so a flood is turned away before it costs anything.

    Only the event loop's thread touches it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live: set[ServiceHandler] = set()
        self._refusing = False

    def admit(self, handler: ServiceHandler) -> bool:
        if len(self.live) >= self.limit:
            if not self._refusing:  # one line per flood, not one per connection
                log.warning(
                    "Wyoming: %d connections are open, the most allowed; closing new ones "
                    "until some end",
                    self.limit,
                )
            self._refusing = True
            return False
        self._refusing = False
        self.live.add(handler)
        return True


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event, or None when the client has gone (also mid-event).

    ``wyoming.event.async_read_event`` reads whatever lengths a header announces and
    raises on some malformed headers; on an open port both lengths are checked first.
    Raises :class:`BadEventError` for what cannot be read.
    """
    try:
        line = await reader.readline()
    except ValueError as error:  # longer than the reader's limit (64 KiB)
        raise BadEventError("header line too long") from error
    except ConnectionError:
        return None
    if not line:
        return None
    try:
        header = json.loads(line)
    except ValueError as error:
        raise BadEventError("header is not JSON") from error
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BadEventError("header has no event type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise BadEventError("event data is not an object")
    data_length = _length(header, "data_length", max_bytes)
    payload_length = _length(header, "payload_length", max_bytes)
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise BadEventError("event data is not an object")
            data.update(extra)
        payload = await reader.readexactly(payload_length) if payload_length else None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except ValueError as error:
        raise BadEventError("event data is not JSON") from error
    return Event(type=header["type"], data=data, payload=payload)


def _length(header: Mapping[str, Any], key: str, max_bytes: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadEventError(f"{key} is not a length")
    if value > max_bytes:
        raise BadEventError(f"{key} {value} is over the limit of {max_bytes} bytes")
    return value


def peer_of(writer: asyncio.StreamWriter) -> str:
    """The client's address, for logs and the request's origin."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "local"


def _optional(data: Mapping[str, Any], key: str, kind: type) -> Any:
    """A field that may be absent; present with the wrong type is a bad event."""
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{key} is not a {kind.__name__}")
    return value


class ServiceHandler(AsyncEventHandler):
    """One client connection (Home Assistant opens one per request)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shared: Shared
    ) -> None:
        super().__init__(reader, writer)
        self._shared = shared
        self._limits = shared.limits
        self._peer = peer_of(writer)
        self._language: str | None = None
        self._audio: AudioIn | None = None
        self._dropping = False  # an audio error was sent: ignore chunks until audio-stop
        self._warned_unstarted = False
        self._jobs: set[asyncio.Task[None]] = set()
        self._turn = asyncio.Lock()
        self._sending = asyncio.Lock()
        self._idle: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Read events until the client goes, an event cannot be read, or the service
        stops; replaces the library's loop to add the limits."""
        if not self._shared.connections.admit(self):
            self.writer.close()
            return
        self._is_running = True
        self._touch()
        try:
            await self._read_events()
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("Wyoming: unexpected failure on the connection from %s", self._peer)
        finally:
            self._shared.connections.live.discard(self)
            await self.disconnect()
            self.writer.close()

    async def _read_events(self) -> None:
        while self._is_running:
            try:
                event = await read_event(self.reader, self._limits.max_event_bytes)
            except BadEventError as error:
                log.warning("Wyoming: %s from %s; closing the connection", error, self._peer)
                await self._send(Error(text=str(error), code="bad-event").event())
                return
            if event is None or not await self.handle_event(event):
                return
            self._touch()

    async def disconnect(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._jobs:
            log.info(
                "Wyoming: %s went away with %d request(s) unanswered; dropping them",
                self._peer,
                len(self._jobs),
            )
        for job in list(self._jobs):
            job.cancel()

    async def handle_event(self, event: Event) -> bool:
        """Never ends the connection: a bad event gets an ``error`` and the next one is read."""
        try:
            await self._dispatch(event)
        except (KeyError, TypeError, ValueError) as error:
            log.warning("Wyoming: bad %s event from %s (%s)", event.type, self._peer, error)
            await self._send(Error(text=f"bad {event.type} event", code="bad-event").event())
        return True

    async def _dispatch(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self._send(self._shared.info)
        elif Ping.is_type(kind):
            await self._send(Pong(text=_optional(event.data, "text", str)).event())
        elif Transcribe.is_type(kind):
            self._language = _optional(event.data, "language", str)
            self._begin(None)
        elif AudioStart.is_type(kind):
            start = AudioStart.from_event(event)
            self._begin(AudioIn(self._limits.max_audio_s))
            await self._refusing(lambda audio: audio.check(start.rate, start.width, start.channels))
        elif AudioChunk.is_type(kind):
            await self._audio_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(kind):
            await self._audio_stop()
        elif Transcript.is_type(kind):
            await self._transcript(event.data)
        else:
            log.debug("Wyoming: ignoring a %s event from %s", kind, self._peer)

    def _begin(self, audio: AudioIn | None) -> None:
        self._audio = audio
        self._dropping = False
        self._warned_unstarted = False

    async def _audio_chunk(self, chunk: AudioChunk) -> None:
        if self._dropping:
            return
        if self._audio is None:
            if not self._warned_unstarted:  # once per stray stream, not once per chunk
                self._warned_unstarted = True
                log.warning("Wyoming: audio-chunk before audio-start from %s", self._peer)
                text, code = "audio-chunk before audio-start", "audio-chunk-before-start"
                await self._send(Error(text=text, code=code).event())
            return
        await self._refusing(
            lambda audio: audio.add(chunk.rate, chunk.width, chunk.channels, chunk.audio)
        )

    async def _audio_stop(self) -> None:
        if self._dropping:  # the error was sent when the audio was refused
            self._begin(None)
            return
        if self._audio is None:
            text, code = "audio-stop without audio-start", "audio-stop-before-start"
            await self._send(Error(text=text, code=code).event())
            return
        audio = await self._refusing(lambda audio: audio.finish())
        language, self._language = self._language, None
        self._begin(None)
        if audio is not None:
            await self._submit(self._transcribe(audio, language))

    async def _refusing(self, step: Callable[[AudioIn], T]) -> T | None:
        """``step(self._audio)`` in a thread (converting audio is decoding, and decoding
        never runs on the event loop); audio it refuses ends the request with an ``error``."""
        assert self._audio is not None
        try:
            return await asyncio.to_thread(step, self._audio)
        except AudioRefusedError as refused:
            log.warning("Wyoming: %s from %s; request dropped", refused, self._peer)
            self._audio = None
            self._dropping = True
            await self._send(Error(text=str(refused), code=refused.code).event())
            return None

    async def _transcript(self, data: Mapping[str, Any]) -> None:
        text = data["text"]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
        language = _optional(data, "language", str)
        context = _optional(data, "context", dict)
        await self._submit(self._draw(text, language, context))

    async def _submit(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` after this connection's earlier requests, beside the reader."""
        if len(self._jobs) >= self._limits.max_pending:
            work.close()
            text = "too many requests at once on this connection"
            await self._send(Error(text=text, code="busy").event())
            return
        job = asyncio.get_running_loop().create_task(self._in_turn(work))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _in_turn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._turn:
                await work
        finally:
            work.close()  # a no-op once it ran; stops "never awaited" if cancelled first
            self._touch()

    async def _transcribe(self, audio: Frame, language: str | None) -> None:
        loop = asyncio.get_running_loop()
        pipeline = self._shared.pipeline
        try:
            heard = await loop.run_in_executor(
                self._shared.pool, pipeline.transcribe, audio, language
            )
        except Exception as error:
            log.warning(
                "Wyoming: transcription for %s failed (%s)", self._peer, type(error).__name__
            )
            log.debug("Wyoming: transcription failure", exc_info=True)
            await self._send(
                Error(text="could not transcribe the audio", code="asr-failed").event()
            )
            return
        log.info(
            "Wyoming: transcribed %.1f s of audio for %s", len(audio) / SAMPLE_RATE, self._peer
        )
        log.debug("Wyoming: transcript for %s: %r", self._peer, heard.text)
        await self._send(Transcript(text=heard.text, language=heard.language).event())

    async def _draw(self, text: str, language: str | None, context: dict[str, Any] | None) -> None:
        loop = asyncio.get_running_loop()
        pipeline = self._shared.pipeline
        origin = origin_for(self._peer, context)
        try:
            answer = await loop.run_in_executor(
                self._shared.pool, pipeline.draw, text, language, origin, context or {}
            )
        except BusyError:
            answer = Answer(handled=False, reply=BUSY_REPLY, reason="busy")
        except Exception as error:
            log.warning("Wyoming: drawing for %s failed (%s)", origin, type(error).__name__)
            log.debug("Wyoming: drawing failure", exc_info=True)
            answer = Answer(handled=False, reply=FAILED_REPLY, reason="error")
        log.info("Wyoming: %s for %s", "handled" if answer.handled else answer.reason, origin)
        log.debug("Wyoming: prompt %r from %s", text, origin)
        reply = Handled if answer.handled else NotHandled
        await self._send(reply(text=answer.reply, context=context).event())

    async def _send(self, event: Event) -> None:
        """Writes one event whole; a client that has gone just misses it."""
        async with self._sending:
            try:
                await self.write_event(event)
            except (ConnectionError, RuntimeError):
                log.debug("Wyoming: %s went away before its %s", self._peer, event.type)

    def _touch(self) -> None:
        """Restarts the idle clock (on every event, and when a request is answered)."""
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._limits.idle_timeout_s, self._on_idle)

    def _on_idle(self) -> None:
        if self._jobs:  # waiting for the pipeline is not idling
            self._touch()
            return
        log.info("Wyoming: closing the idle connection from %s", self._peer)
        self._is_running = False
        self.writer.close()
        self.reader.feed_eof()
