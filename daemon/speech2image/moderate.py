"""Moderation: the toxicity gate between a transcript and an image.

The product card names ``flai`` (``ToxicityClassifier().predict(text)["toxicity"] > 0.7``),
but no published ``flai`` has that API: the package of that name on PyPI is an
unrelated socket framework. We keep the contract instead of the name: every backend
returns per-label scores with Detoxify's label names, compared with per-label
thresholds (default 0.7). Backends are combined; a request is rejected if any
backend rejects it. All run offline from files on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import LABELS, ModerationConfig
from .lexicon import Lexicon
from .models import ModelError
from .semantic import SemanticModerator
from .verdict import Moderator, Verdict, judge

log = logging.getLogger(__name__)


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


class LexiconModerator:
    """Word and phrase rules for what a profanity model misses, plus the user's lists."""

    name = "lexicon"

    def __init__(self, config: ModerationConfig, lexicon: Lexicon) -> None:
        self._lexicon = lexicon
        self._config = config

    def check(self, text: str) -> Verdict:
        matches = self._lexicon.match(text)
        if matches:
            log.debug("lexicon matched %s", matches)
        scores = {label: 1.0 if label in matches else 0.0 for label in LABELS}
        return judge(scores, self._config, self.name)


# Names Detoxify-style classifiers use, mapped to ours.
LABEL_ALIASES = {
    "toxic": "toxicity",
    "severe_toxic": "severe_toxicity",
    "identity_hate": "identity_attack",
    "sexually_explicit": "sexual_explicit",
    "sexual": "sexual_explicit",
}


class TransformersModerator:
    """Any local multi-label text classifier with toxicity labels (e.g. unitary/toxic-bert)."""

    name = "transformers"

    def __init__(self, config: ModerationConfig, source: str) -> None:
        path = Path(config.transformers_model).expanduser()
        if not config.transformers_model or not (path / "config.json").is_file():
            raise ModelError(
                f"moderation model folder {str(path) if config.transformers_model else '(unset)'} "
                f"([moderation] transformers_model in {source}) has no config.json; point it at "
                "a local text-classification model, e.g. a saved unitary/toxic-bert"
            )
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch: Any = torch
        self._tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model: Any = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True
        ).eval()
        names = self._model.config.id2label
        self._labels = [LABEL_ALIASES.get(names[i], names[i]) for i in range(len(names))]
        unknown = [label for label in self._labels if label not in LABELS]
        if len(unknown) == len(self._labels):
            raise ModelError(
                f"moderation model {path} has labels {self._labels}, none of them "
                f"toxicity labels ({', '.join(LABELS)})"
            )
        self._config = config

    def check(self, text: str) -> Verdict:
        with self._torch.inference_mode():
            inputs = self._tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
            logits = self._model(**inputs).logits[0]
            probabilities = self._torch.sigmoid(logits).tolist()
        scores = {
            label: float(p)
            for label, p in zip(self._labels, probabilities, strict=True)
            if label in LABELS
        }
        return judge(scores, self._config, self.name)


class CombinedModerator:
    """Runs every configured backend; rejected if any rejects. Scores keep the maximum.

    Every backend judges the text after ``prepare``: normalised, with the allowed
    phrases ("moby dick", "a bloody steak", the user's allow list) cut out, so an
    allow entry works for the models too, not just for the word rules.
    """

    def __init__(self, backends: Sequence[Moderator], prepare: Callable[[str], str]) -> None:
        self.backends = list(backends)
        self.name = "+".join(b.name for b in backends)
        self._prepare = prepare

    def check(self, text: str) -> Verdict:
        prepared = self._prepare(text)
        verdicts = [backend.check(prepared) for backend in self.backends]
        scores: dict[str, float] = {}
        for verdict in verdicts:
            for label, score in verdict.scores.items():
                scores[label] = max(score, scores.get(label, 0.0))
        flagged = sorted({label for verdict in verdicts for label in verdict.flagged})
        rejecting = [v.backend for v in verdicts if not v.allowed]
        return Verdict(not flagged, scores, flagged, "+".join(rejecting) or self.name)


def build_moderator(config: ModerationConfig, source: str) -> CombinedModerator:
    lexicon = Lexicon.builtin(extra_block=config.block, extra_allow=config.allow)
    backends: list[Moderator] = []
    for name in config.backends:
        if name == "profanity":
            backends.append(ProfanityModerator(config))
        elif name == "lexicon":
            backends.append(LexiconModerator(config, lexicon))
        elif name == "semantic":
            backends.append(SemanticModerator(config))
        else:
            backends.append(TransformersModerator(config, source))
    return CombinedModerator(backends, prepare=lexicon.clean)
