"""What every moderation backend returns, and the one threshold rule they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..config import LABELS, ModerationConfig


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    scores: dict[str, float]
    flagged: list[str] = field(default_factory=list)
    backend: str = ""


class Moderator(Protocol):
    name: str

    def check(self, text: str) -> Verdict: ...


def judge(scores: Mapping[str, float], config: ModerationConfig, backend: str) -> Verdict:
    """Thresholds applied to scores: the one decision every backend shares."""
    flagged = sorted(
        label
        for label, score in scores.items()
        if label in LABELS and score >= config.threshold(label)
    )
    return Verdict(not flagged, dict(scores), flagged, backend)
