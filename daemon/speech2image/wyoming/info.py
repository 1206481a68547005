"""What the Wyoming service says about itself, and the small decisions behind it.

Home Assistant asks every Wyoming service to ``describe`` itself and gives up after
one second, so the answer is built once, before the first client connects, from what
the :class:`Pipeline` advertises. The rest are pure functions: where a request came
from (for the gallery sidecar) and the limits that keep one client from taking the
server's memory or all of its connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
)

from .pipeline import Pipeline

NAME = "speech2image"
ATTRIBUTION = Attribution(name="speech2image", url="")
WHISPER = Attribution(name="faster-whisper", url="https://github.com/SYSTRAN/faster-whisper")
DIFFUSERS = Attribution(name="diffusers", url="https://github.com/huggingface/diffusers")

FAILED_REPLY = "Something went wrong; I could not draw that."
BUSY_REPLY = "I'm busy, try again in a minute."

MAX_ORIGIN_PART = 80  # a context value longer than this is cut (it lands in every sidecar)
ORIGIN_KEYS = ("satellite_id", "device_id")  # what Home Assistant's context names a room by


@dataclass(frozen=True)
class Limits:
    """What one client may take from the server; beyond it the client gets an ``error``
    event or a closed connection, never more memory.

    Worst case held at once is about ``max_connections`` x (``max_event_bytes`` + audio
    of ``max_audio_s`` x (1 + ``max_pending``)): bounded, whatever the clients send.
    """

    max_connections: int = 64  # more at once are closed at once
    max_audio_s: float = 60.0  # one ASR request; Home Assistant's own VAD ends far sooner
    max_event_bytes: int = 1 << 20  # data or payload of one event (a 16 kHz chunk is ~2 KB)
    idle_timeout_s: float = 60.0  # an idle connection with nothing pending is closed
    max_pending: int = 2  # requests waiting for the pipeline on one connection
    workers: int = 4  # threads that call the pipeline (the event loop never does)


def build_info(pipeline: Pipeline, version: str) -> Info:
    """The ``info`` answer: an ASR program (our Whisper model) and a handle program (our
    image model), which Home Assistant 2024.11+ offers as speech-to-text engine and as
    conversation agent. Both advertise the same languages: a prompt is drawn in any
    language the transcriber hears."""
    languages = list(pipeline.asr_languages)
    asr = AsrProgram(
        name=NAME,
        attribution=ATTRIBUTION,
        installed=True,
        description="Whisper speech to text, shared with the speech2image daemon",
        version=version or None,
        models=[
            AsrModel(
                name=pipeline.asr_model,
                attribution=WHISPER,
                installed=True,
                description=f"Whisper {pipeline.asr_model}",
                version=None,
                languages=languages,
            )
        ],
        supports_transcript_streaming=False,
    )
    handle = HandleProgram(
        name=NAME,
        attribution=ATTRIBUTION,
        installed=True,
        description="Draws what you ask for",
        version=version or None,
        models=[
            HandleModel(
                name=pipeline.image_model,
                attribution=DIFFUSERS,
                installed=True,
                description="Stable Diffusion image model",
                version=None,
                languages=list(languages),
            )
        ],
    )
    return Info(asr=[asr], handle=[handle])


def origin_for(peer: str, context: Mapping[str, Any] | None) -> str:
    """Who asked, as the sidecar records it: the client's address and the satellite or
    device Home Assistant names in ``context``, e.g.
    ``"wyoming 127.0.0.1 satellite=assist_satellite.kitchen"``.

    Values come from the network, so they are cut short and stripped of anything
    that is not printable before they reach a file or a log line.
    """
    parts = ["wyoming", _clean(peer) or "local"]
    for key in ORIGIN_KEYS:
        value = (context or {}).get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            cleaned = _clean(str(value))
            if cleaned:
                parts.append(f"{key.removesuffix('_id')}={cleaned}")
    return " ".join(parts)


def _clean(text: str) -> str:
    printable = "".join(c for c in text if c.isprintable() and not c.isspace())
    return printable[:MAX_ORIGIN_PART]
