"""What every moderation backend returns, and the one threshold rule they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..config import LABELS, ModerationConfig


@dataclass(frozen=True)
class Verdict:
    """Allowed or not, the per-label scores, and which labels (or what) decided it.

    ``unsupported`` is set, and nothing was scored, when the prompt is in a language
    the backends cannot read: refused for that, not for its content.
    """

    allowed: bool
    scores: dict[str, float]
    flagged: list[str] = field(default_factory=list)
    backend: str = ""
    unsupported: str = ""


class Moderator(Protocol):
    """One backend: scores for the text it is given."""

    name: str

    def check(self, text: str) -> Verdict: ...


class PromptModerator(Protocol):
    """What the daemon asks about a request (``combined.CombinedModerator``): the
    language gate first, then every backend. ``language`` is the prompt's language
    when known for sure (Whisper's detection, a client that states it)."""

    name: str

    def check(self, text: str, language: str | None = None) -> Verdict: ...


def judge(scores: Mapping[str, float], config: ModerationConfig, backend: str) -> Verdict:
    """Thresholds applied to scores: the one decision every backend shares."""
    flagged = sorted(
        label
        for label, score in scores.items()
        if label in LABELS and score >= config.threshold(label)
    )
    return Verdict(not flagged, dict(scores), flagged, backend)
