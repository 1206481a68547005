"""The ``profanity`` backend: alt-profanity-check, which ships its own model."""

from __future__ import annotations

from typing import Any

from ..config import ModerationConfig
from .verdict import Verdict, judge


class ProfanityModerator:
    """alt-profanity-check: a linear model over word n-grams; fast, profanity only.

    Its one probability is reported as ``obscene``, which is what it measures: it
    knows swearing, not threats ("kill my neighbour" scores below 0.5), which is why
    the lexicon and semantic backends run beside it by default.
    """

    name = "profanity"

    def __init__(self, config: ModerationConfig) -> None:
        from profanity_check import predict_prob

        self._predict: Any = predict_prob
        self._config = config

    def check(self, text: str) -> Verdict:
        probability = float(self._predict([text])[0])
        return judge({"obscene": probability}, self._config, self.name)
