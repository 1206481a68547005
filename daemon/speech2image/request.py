"""The one record a request carries from its start to its picture, and its sidecar form.

A request starts at a wake word, a typed ``generate``, and later a web page or a
Wyoming client. Each stage returns a new :class:`Request` with its part added
(wake, utterance, transcript, moderation, image) and its timing noted; nothing
about a request rides beside it. The gallery's JSON sidecar is this record
serialised (:meth:`Request.to_sidecar`), with a schema version so that older
sidecars stay readable (:func:`from_sidecar`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib.metadata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SIDECAR_SCHEMA = 1
# Where requests come from; later sources (the web page, Wyoming) add their names here.
RequestSource = Literal["microphone", "file", "command-line", "web", "wyoming"]
SOURCES: tuple[str, ...] = ("microphone", "file", "command-line", "web", "wyoming")
# The packages whose versions decide what a picture looks like, recorded per image.
VERSIONED_PACKAGES = (
    "speech2image",
    "torch",
    "diffusers",
    "transformers",
    "faster-whisper",
    "ctranslate2",
    "openwakeword",
    "onnxruntime",
    "alt-profanity-check",
)


def new_request_id() -> str:
    """Random, so ids never repeat across runs or between processes sharing a gallery."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class WakePart:
    model: str
    score: float
    t: float  # seconds of input audio when it fired


@dataclass(frozen=True)
class UtterancePart:
    start_s: float
    duration_s: float
    reason: str  # silence | max_length


@dataclass(frozen=True)
class TranscriptPart:
    text: str
    language: str


@dataclass(frozen=True)
class ModerationPart:
    backend: str
    allowed: bool
    scores: Mapping[str, float]
    flagged: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImagePart:
    """How the picture was made: enough to make it again, and where it went."""

    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    sampler: str  # the diffusers scheduler class name
    model: str
    negative_prompt: str
    device: str
    dtype: str
    file: str = ""  # the PNG's name in its date folder, once the gallery has it


@dataclass(frozen=True)
class Request:
    """One request; frozen, so a stage can only hand on a new one with its part added."""

    id: str
    source: str  # one of SOURCES
    origin: str = ""  # the device, file or client it came from
    created: str = ""  # ISO 8601 with the local offset
    prompt: str = ""  # what to draw: the transcript, or typed text
    seed: int | None = None  # asked for; None lets [image] seed decide
    wake: WakePart | None = None
    utterance: UtterancePart | None = None
    transcript: TranscriptPart | None = None
    moderation: ModerationPart | None = None
    image: ImagePart | None = None
    timings: Mapping[str, float] = field(default_factory=dict)  # "<stage>_s" -> seconds

    @classmethod
    def start(
        cls,
        source: RequestSource,
        origin: str = "",
        *,
        id: str | None = None,  # the field's own name
        prompt: str = "",
        seed: int | None = None,
    ) -> Request:
        created = dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
        return cls(id or new_request_id(), source, origin, created, prompt, seed)

    def timed(self, stage: str, seconds: float) -> Request:
        """``timings[f"{stage}_s"]``: where the time went, per stage, in the sidecar."""
        timings = {**self.timings, f"{stage}_s": round(seconds, 4)}
        return dataclasses.replace(self, timings=timings)

    def with_wake(self, model: str, score: float, t: float) -> Request:
        return dataclasses.replace(self, wake=WakePart(model, round(score, 4), round(t, 3)))

    def with_utterance(self, start_s: float, duration_s: float, reason: str) -> Request:
        part = UtterancePart(round(start_s, 3), round(duration_s, 3), reason)
        return dataclasses.replace(self, utterance=part)

    def with_transcript(self, text: str, language: str, seconds: float) -> Request:
        part = TranscriptPart(text, language)
        return dataclasses.replace(self, transcript=part, prompt=text).timed("transcribe", seconds)

    def with_moderation(self, part: ModerationPart, seconds: float) -> Request:
        return dataclasses.replace(self, moderation=part).timed("moderate", seconds)

    def with_image(self, part: ImagePart, seconds: float) -> Request:
        return dataclasses.replace(self, image=part).timed("generate", seconds)

    def filed_as(self, name: str) -> Request:
        """The record once the gallery has chosen the PNG's name."""
        if self.image is None:
            raise ValueError(f"request {self.id} has no image to file")
        return dataclasses.replace(self, image=dataclasses.replace(self.image, file=name))

    def to_sidecar(self) -> dict[str, Any]:
        """The record as the gallery stores it next to the PNG (schema 1).

        Flat where tools look first (prompt, seed, model, as A1111-style readers
        expect), nested per stage for the rest; parts a request never had are absent.
        """
        out: dict[str, Any] = {
            "schema": SIDECAR_SCHEMA,
            "id": self.id,
            "source": self.source,
            "origin": self.origin,
            "created": self.created,
            "prompt": self.prompt,
        }
        if self.image is not None:
            out.update(_image_fields(self.image))
        if self.transcript is not None:
            out["transcript"] = self.transcript.text
            out["language"] = self.transcript.language
        for name in ("wake", "utterance"):
            part = getattr(self, name)
            if part is not None:
                out[name] = dataclasses.asdict(part)
        if self.moderation is not None:
            part = self.moderation
            out["moderation"] = {
                "backend": part.backend,
                "allowed": part.allowed,
                "scores": dict(part.scores),
                "flagged": list(part.flagged),
            }
        out["timings"] = dict(self.timings)
        out["versions"] = package_versions()
        out["speech2image"] = out["versions"].get("speech2image", "")
        return out


def _image_fields(image: ImagePart) -> dict[str, Any]:
    return {
        "image": image.file,
        "negative_prompt": image.negative_prompt,
        "seed": image.seed,
        "steps": image.steps,
        "guidance": image.guidance,
        "sampler": image.sampler,
        "size": [image.width, image.height],
        "model": image.model,
        "device": image.device,
        "dtype": image.dtype,
    }


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of :data:`VERSIONED_PACKAGES` (absent ones are left out)."""
    found: dict[str, str] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


class SidecarError(ValueError):
    """A sidecar this version cannot read; the message says why."""


def from_sidecar(data: Mapping[str, Any]) -> Request:
    """A record from a sidecar of any schema so far.

    Schema 0 is what speech2image 0.1 wrote before sidecars had a version: the same
    flat keys, no ``schema``, ``source`` or ``created`` time of its own.
    """
    schema = data.get("schema", 0)
    if not isinstance(schema, int) or schema > SIDECAR_SCHEMA:
        raise SidecarError(
            f"sidecar schema {schema!r} is newer than this speech2image reads "
            f"(up to {SIDECAR_SCHEMA}); upgrade speech2image"
        )
    try:
        return _parse(data, schema)
    except (KeyError, TypeError, ValueError) as exc:
        raise SidecarError(f"sidecar (schema {schema}) is malformed: {exc!r}") from exc


def _parse(data: Mapping[str, Any], schema: int) -> Request:
    source = data.get("source") or ("microphone" if "wake" in data else "command-line")
    wake = data.get("wake")
    utterance = data.get("utterance")
    moderation = data.get("moderation")
    transcript = data.get("transcript")
    return Request(
        id=str(data.get("id") or ""),
        source=str(source),
        origin=str(data.get("origin", "")),
        created=str(data.get("created", "")),
        prompt=str(data.get("prompt", "")),
        wake=WakePart(wake["model"], float(wake["score"]), float(wake.get("t", 0.0)))
        if wake
        else None,
        utterance=UtterancePart(
            float(utterance["start_s"]),
            float(utterance["duration_s"]),
            str(utterance.get("reason", "silence")),
        )
        if utterance
        else None,
        transcript=TranscriptPart(str(transcript), str(data.get("language", "en")))
        if transcript is not None
        else None,
        moderation=ModerationPart(
            str(moderation.get("backend", "")),
            bool(moderation.get("allowed", True)),
            {str(k): float(v) for k, v in moderation.get("scores", {}).items()},
            tuple(moderation.get("flagged", ())),
        )
        if moderation
        else None,
        image=_parse_image(data) if "seed" in data else None,
        timings={str(k): float(v) for k, v in data.get("timings", {}).items()},
    )


def _parse_image(data: Mapping[str, Any]) -> ImagePart:
    width, height = data.get("size", (0, 0))
    return ImagePart(
        seed=int(data["seed"]),
        steps=int(data.get("steps", 0)),
        guidance=float(data.get("guidance", 0.0)),
        width=int(width),
        height=int(height),
        sampler=str(data.get("sampler", "")),
        model=str(data.get("model", "")),
        negative_prompt=str(data.get("negative_prompt", "")),
        device=str(data.get("device", "")),
        dtype=str(data.get("dtype", "")),
        file=str(data.get("image", "")),
    )
