"""The ``transformers`` backend: any local Detoxify-style multi-label text classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import LABELS, ModerationConfig
from ..model_files import ModelError
from .verdict import Verdict, judge

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
