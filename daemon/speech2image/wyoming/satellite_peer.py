"""What the satellite driver decides without doing I/O, and reading one event safely.

A satellite is a peer we connect to, so everything it sends is untrusted input:
``wyoming``'s own reader believes any ``data_length`` or ``payload_length`` in a
header and would buffer whatever it announces, so :func:`read_event` checks the
header before reading the rest. The rest of this module is pure decisions: where a
satellite is, whether it answers pings, how long it may stay silent, how long to
wait before connecting again, and what to tell it when a request gets no picture.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from wyoming.event import Event

MAX_EVENT_BYTES = 1 << 20  # JSON data or audio payload: 1 MiB is ~30 s of 16 kHz audio
SATELLITE_WITH_PINGS = (1, 1)  # wyoming-satellite answers `ping` from 1.1.0 on


class MalformedEventError(ValueError):
    """The satellite sent something that is not a Wyoming event, or one too large."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def parse_uri(uri: str) -> Endpoint:
    """``tcp://host:port``, the only way wyoming-satellite listens for a controller."""
    parsed = urlparse(uri)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise ValueError(f"a satellite is tcp://host:port, not {uri!r}")
    return Endpoint(parsed.hostname, port)


@dataclass(frozen=True)
class Timing:
    """The driver's clocks. Tests shorten them; the defaults are Home Assistant's."""

    connect_s: float = 5.0  # to connect and have `describe` answered
    ping_every_s: float = 2.0  # Home Assistant's _PING_SEND_DELAY
    pong_within_s: float = 5.0  # Home Assistant's _PING_TIMEOUT
    describe_every_s: float = 10.0  # the liveness probe for a peer that cannot be pinged
    stall_s: float = 5.0  # audio stopped mid-stream, on a peer that cannot be pinged
    write_s: float = 5.0  # a peer that reads nothing for this long is gone
    first_backoff_s: float = 1.0


@dataclass(frozen=True)
class PeerInfo:
    """What a satellite's ``info`` says about it."""

    name: str
    version: str | None
    answers_ping: bool | None  # None: its info does not say, so one ping asks


def peer_info(data: Mapping[str, Any]) -> PeerInfo | None:
    """The satellite part of an ``info`` event's data; None when there is none (the
    URI names some other Wyoming service)."""
    satellite = data.get("satellite")
    if not isinstance(satellite, Mapping):
        return None
    name = satellite.get("name")
    version = satellite.get("version")
    version = version if isinstance(version, str) and version else None
    return PeerInfo(str(name) if name else "", version, answers_ping(version))


def answers_ping(version: str | None) -> bool | None:
    """wyoming-satellite answers pings from 1.1.0 on, but only says its version from
    1.2.0 on: a version says yes (or no), its absence says nothing (1.0.0 or 1.1.x)."""
    if version is None:
        return None
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers is None:
        return None
    return (int(numbers[1]), int(numbers[2])) >= SATELLITE_WITH_PINGS


def liveness_timeout(pings: bool, streaming: bool, timing: Timing) -> float:
    """How long the next read may wait before the peer counts as gone.

    A peer that answers pings gets one every ``ping_every_s``, so any silence longer
    than that plus ``pong_within_s`` is a dead peer. One that does not (the PyPI
    release) may rightly send nothing for hours while it waits for its own wake
    word, but it always answers ``describe``: it gets one every ``describe_every_s``
    instead. That also finds the connection a satellite has stopped reading without
    closing it (wyoming-satellite does that to a second controller). In the middle of
    an audio stream a stall of ``stall_s`` is enough.
    """
    if pings:
        return timing.ping_every_s + timing.pong_within_s
    if streaming:
        return min(timing.stall_s, timing.describe_every_s + timing.pong_within_s)
    return timing.describe_every_s + timing.pong_within_s


def next_backoff(previous: float | None, first: float, cap: float) -> float:
    """1 s, 2 s, 4 s … up to ``cap``; None starts over."""
    if previous is None:
        return min(first, cap)
    return min(previous * 2, cap)


# Why a request got no picture, as a satellite's error command gets it: short text, a code.
ERROR_TEXTS = {
    "busy": "busy, try again in a minute",
    "empty": "I didn't hear anything to draw",
    "unclear": "I didn't understand that",
    "toxic": "I can't draw that",
    "unsupported": "I can't draw requests in that language",
    "shutdown": "speech2image is stopping",
}


def error_for(reason: str) -> tuple[str, str]:
    """The ``error`` event's text and code for a rejection reason."""
    text = ERROR_TEXTS.get(reason, "something went wrong, no picture")
    return text, reason if reason in ERROR_TEXTS else "error"


@dataclass(frozen=True)
class Transcribed:
    """Whisper heard the request: the satellite gets the text and re-arms."""

    text: str


@dataclass(frozen=True)
class Refused:
    """The request gets no picture: the satellite gets an ``error``."""

    reason: str
    transcribed: bool  # it has had its transcript already


class Requests:
    """The requests a satellite waits to hear the end of, and the daemon's events for
    ids not yet known: ``spoken()`` runs in an executor and its id can come back after
    the transcript (another thread) is out. Bounded both ways; decisions only."""

    def __init__(self, tracked: int = 32, recent: int = 64) -> None:
        self._transcribed: OrderedDict[str, bool] = OrderedDict()
        self._limit = tracked
        self._recent: deque[Mapping[str, Any]] = deque(maxlen=recent)

    def track(self, request_id: str) -> list[Transcribed | Refused]:
        """Follow ``request_id``; what its events so far call for."""
        self._transcribed[request_id] = False
        while len(self._transcribed) > self._limit:
            self._transcribed.popitem(last=False)
        early = [data for data in self._recent if data.get("id") == request_id]
        return [r for r in map(self.outcome, early) if r is not None]

    def outcome(self, data: Mapping[str, Any]) -> Transcribed | Refused | None:
        """What a ``transcript``, ``rejected`` or ``image`` event means for the satellite."""
        request_id = str(data.get("id"))
        if request_id not in self._transcribed:
            self._recent.append(data)
            return None
        kind = data.get("type")
        if kind == "transcript":
            self._transcribed[request_id] = True
            return Transcribed(str(data.get("text", "")))
        transcribed = self._transcribed.pop(request_id)
        if kind == "rejected":
            return Refused(str(data.get("reason", "error")), transcribed)
        return None


def check_format(rate: Any, width: Any, channels: Any, size: int) -> None:
    """An audio chunk's format, checked before anything converts it."""
    if not (isinstance(rate, int) and 4000 <= rate <= 192000):
        raise MalformedEventError(f"audio rate {rate!r}")
    if width not in (1, 2, 3, 4) or not (isinstance(channels, int) and 1 <= channels <= 8):
        raise MalformedEventError(f"audio width {width!r}, channels {channels!r}")
    if size % (width * channels):
        raise MalformedEventError(f"{size} bytes of audio are not whole samples")


def _length(header: Mapping[str, Any], key: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedEventError(f"{key} {value!r}")
    if value > MAX_EVENT_BYTES:
        raise MalformedEventError(f"{key} {value} is over {MAX_EVENT_BYTES}")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None at the end of the stream. ``MalformedEventError`` for
    anything else: after a bad header nothing that follows can be trusted, so the
    caller drops the connection rather than trying to find the next event."""
    try:
        line = await reader.readline()
    except ValueError as exc:  # a line over the reader's limit
        raise MalformedEventError("header line too long") from exc
    if not line:
        return None
    if not line.endswith(b"\n"):
        return None  # the stream ended inside a header
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise MalformedEventError("header is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise MalformedEventError("header has no type")
    data = header.get("data") or {}
    data_length = _length(header, "data_length")
    payload_length = _length(header, "payload_length")
    try:
        if data_length:
            data = {**data, **json.loads(await reader.readexactly(data_length))}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None  # the peer went away mid-event
    except (ValueError, TypeError) as exc:
        raise MalformedEventError("data is not a JSON object") from exc
    if not isinstance(data, dict):
        raise MalformedEventError("data is not a JSON object")
    return Event(type=header["type"], data=data, payload=payload)
