"""One connection to a satellite: reading its events, pinging it, writing to it.

The link knows what kind of run the satellite is in, because that decides what its
audio is for. ``run-pipeline`` starting at ``wake`` (a satellite that always
streams) means our wake word decides. ``run-pipeline`` starting at ``asr``, or a
``detection`` (a satellite with a wake word of its own), means the user has just
woken it: the listener starts over and captures from now, and once the capture
ends the satellite waits for our ``transcript`` or ``error``; the audio in between
is not fed to our wake word. wyoming-satellite 1.0.0 re-arms only on a
``transcript`` (later releases also on an ``error``), so an error to one that has
never answered a ping is followed by an empty transcript.

Deadlines use ``asyncio.timeout``, never ``asyncio.wait_for``: in Python 3.11
``wait_for`` returns the result, swallowing a cancellation, when both arrive
together, and a cancelled prober that goes on pinging keeps ``stop()`` waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Protocol

from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStop
from wyoming.event import Event, async_write_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.satellite import PauseSatellite, RunSatellite
from wyoming.wake import Detection

from .satellite_listen import Chunk, Command, Listen
from .satellite_peer import (
    Endpoint,
    MalformedEventError,
    PeerInfo,
    Timing,
    check_format,
    liveness_timeout,
    peer_info,
    read_event,
)

log = logging.getLogger(__name__)

PAUSE_WITHIN_S = 0.3  # at stop, what a last `pause-satellite` may take


class LinkLostError(Exception):
    """The connection ended or the satellite stopped answering; the text says how."""


async def connect(
    endpoint: Endpoint, timing: Timing
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, PeerInfo]:
    """A connection to the satellite, and what its ``info`` says about it."""
    async with asyncio.timeout(timing.connect_s):
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        _keepalive(writer.get_extra_info("socket"))
        async with asyncio.timeout(timing.connect_s):
            info = await _describe(reader, writer)
        peer = peer_info(info.data)
        if peer is None:
            raise LinkLostError("is not a Wyoming satellite (its info names no satellite)")
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer, peer


async def _describe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Event:
    """``describe`` answered: the satellite's ``info`` event."""
    await async_write_event(Describe().event(), writer)
    while (event := await read_event(reader)) is not None:
        if Info.is_type(event.type):
            return event
    raise LinkLostError("closed the connection before answering describe")


def _keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive: how a silent peer that cannot be pinged is found to be gone
    (a host switched off mid-connection), within ~25 s."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class LinkHandler(Protocol):
    """The driver, as the link reports to it."""

    stopping: bool

    def connected_well(self) -> None: ...

    def audio(self, chunk: Chunk) -> None: ...

    def command(self, command: Command | Listen) -> None: ...


class Link:
    """The satellite at the other end of one TCP connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: PeerInfo,
        handler: LinkHandler,
        timing: Timing,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._handler = handler
        self._timing = timing
        self.pings = bool(peer.answers_ping)  # True once its info or a pong says so
        self.streaming = False  # audio is flowing: silence now means something
        self.local = False  # the current run began with the satellite's own wake word
        self._awaiting = False  # a local run whose end the satellite waits to hear
        self._feeding = True  # its audio goes to the listener
        self._fed = 0  # chunks fed since the current local run began
        self._pinger: asyncio.Task[None] | None = None
        self._answered = False  # it has sent something since run-satellite
        self._broken = ""

    async def start(self) -> None:
        """``run-satellite``; then pings if it answers them, else ``describe`` now and
        then (and, where its info leaves it open, one ping to ask)."""
        await self.send(RunSatellite().event())
        if self._peer.answers_ping is None:
            await self.send(Ping().event())
        self._pinger = asyncio.get_running_loop().create_task(self._probe_forever())

    async def serve(self) -> None:
        """Read and act on events until the connection ends: ``LinkLostError`` or
        ``MalformedEventError`` then says why."""
        while not self._handler.stopping:
            timeout = liveness_timeout(self.pings, self.streaming, self._timing)
            try:
                async with asyncio.timeout(timeout):
                    event = await read_event(self._reader)
            except TimeoutError:
                raise LinkLostError(self._silent(timeout)) from None
            except OSError as exc:  # reset, or a failed write ended the transport
                raise LinkLostError(self._broken or f"ended the connection ({exc})") from exc
            if event is None:
                raise LinkLostError(self._broken or "closed the connection")
            try:
                await self._on_event(event)
            except MalformedEventError:
                raise
            except (KeyError, TypeError, ValueError) as exc:  # the right type, the wrong data
                raise MalformedEventError(f"{event.type}: {exc!r}") from exc
            self._answered = True
            self._handler.connected_well()  # it answers after run-satellite: a good link

    def _silent(self, timeout: float) -> str:
        if self._answered:
            return f"sent nothing for {timeout:g} s"
        return (
            f"answered nothing after run-satellite for {timeout:g} s "
            "(is another controller, such as Home Assistant, connected to it?)"
        )

    async def close(self, pause: bool) -> None:
        """Stop pinging and close; at shutdown first ask the satellite to stop streaming."""
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.wait([self._pinger], timeout=PAUSE_WITHIN_S)
        if pause and not self._writer.is_closing():
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(PAUSE_WITHIN_S):
                    await async_write_event(PauseSatellite().event(), self._writer)
        self._writer.transport.abort()

    async def send(self, event: Event) -> None:
        """Write one event; a peer that takes it too slowly or not at all is cut off."""
        if self._writer.is_closing():
            return
        try:
            async with asyncio.timeout(self._timing.write_s):
                await async_write_event(event, self._writer)
        except (OSError, TimeoutError) as exc:
            self._broken = f"stopped taking events ({exc or type(exc).__name__})"
            self._writer.transport.abort()

    async def send_transcript(self, text: str) -> None:
        """What Whisper heard: the satellite shows it and re-arms."""
        self._awaiting = False
        await self.send(Transcript(text=text).event())

    async def rearm(self) -> None:
        """After an ``error`` ended a local run: a 1.0.0 satellite needs a transcript."""
        if self._awaiting:
            self._awaiting = False
            if not self.pings:
                await self.send(Transcript(text="").event())

    def capture_ended(self) -> None:
        """The end-pointer closed the capture: a local run's audio is no longer ours."""
        if self.local:
            self._feeding = False
            self.streaming = False

    async def _on_event(self, event: Event) -> None:
        kind = event.type
        if AudioChunk.is_type(kind):
            self._on_audio(AudioChunk.from_event(event))
        elif Ping.is_type(kind):
            await self.send(Pong(text=Ping.from_event(event).text).event())
        elif Pong.is_type(kind):
            self._answered_ping()
        elif RunPipeline.is_type(kind):
            self._on_run(RunPipeline.from_event(event))
        elif Detection.is_type(kind):
            self._listen_now(Detection.from_event(event).name)
        elif Info.is_type(kind):
            pass  # the answer to a describe: it is alive
        elif AudioStop.is_type(kind):
            self.streaming = False
            self._handler.command(Command.FINISH)
        elif kind == "error":
            log.warning(
                "satellite %s reports an error: %s", self._peer.name, event.data.get("text")
            )
        else:
            log.debug("satellite %s: %s ignored", self._peer.name, kind)

    def _on_audio(self, chunk: AudioChunk) -> None:
        check_format(chunk.rate, chunk.width, chunk.channels, len(chunk.audio))
        if not self._feeding:
            return
        self.streaming = True
        self._fed += 1
        self._handler.audio(Chunk(chunk.rate, chunk.width, chunk.channels, chunk.audio))

    def _on_run(self, run: RunPipeline) -> None:
        if run.start_stage == PipelineStage.ASR:
            if self._awaiting and self._fed == 0:
                return  # the `detection` just before it began this run
            self._listen_now(run.wake_word_name)
        elif run.start_stage == PipelineStage.WAKE:
            self.local, self._awaiting, self._feeding = False, False, True
        else:
            log.debug("satellite %s: a run from %s ignored", self._peer.name, run.start_stage)

    def _listen_now(self, wake_word: str | None) -> None:
        """The satellite heard its wake word: reset, and capture what follows."""
        self.local, self._awaiting, self._feeding, self._fed = True, True, True, 0
        self._handler.command(Listen(wake_word or ""))

    def _answered_ping(self) -> None:
        if not self.pings:
            log.debug("satellite %s answers pings", self._peer.name)
            self.pings = True

    async def _probe_forever(self) -> None:
        """A ``ping`` every ``ping_every_s`` to a peer that answers them, else a
        ``describe`` (answered with ``info``) every ``describe_every_s``."""
        timing = self._timing
        while True:
            await asyncio.sleep(timing.ping_every_s if self.pings else timing.describe_every_s)
            await self.send(Ping().event() if self.pings else Describe().event())
