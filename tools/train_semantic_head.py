"""Train the semantic moderation head: logistic regression over MiniLM embeddings.

    .venv/bin/python tools/train_semantic_head.py

Trains on tests/data/moderation/train.tsv, dev.tsv, train_harms.tsv and
misheard_train.tsv (Whisper's garbles of harmless training prompts, as benign; never
heldout.tsv or dev_harms.tsv, kept for validation, nor the blind test sets), picks
the regularisation by 5-fold cross-validation on that training data, and writes
daemon/speech2image/data/semantic_head.npz. Deterministic: the same data and
embedding model give the same weights.

The features come from the daemon's own embedder (the int8 ONNX model, one prompt
at a time, built into the user cache on first use), so the head is trained on
exactly the numbers it will be applied to.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from speech2image.moderation.embedder import OnnxEmbedder
from speech2image.moderation.semantic import CLASSES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "moderation"
OUT = ROOT / "daemon" / "speech2image" / "data" / "semantic_head.npz"
TRAINING_SETS = ("train.tsv", "dev.tsv", "train_harms.tsv", "misheard_train.tsv")
STRENGTHS = (1.0, 4.0, 16.0, 64.0, 256.0)


def rows(name: str) -> list[tuple[str, str]]:
    """(class, text): a toxic row's class is its category; every benign row is benign."""
    with (DATA / name).open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [("benign" if r["label"] == "benign" else r["category"], r["text"]) for r in reader]


def toxic_recall_and_fpr(truth: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """At the default 0.7 threshold on toxicity = 1 - P(benign)."""
    flagged = 1.0 - probabilities[:, 0] >= 0.7
    toxic = truth != 0
    return float(flagged[toxic].mean()), float(flagged[~toxic].mean())


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the one-time ONNX export
    data = [row for name in TRAINING_SETS for row in rows(name)]
    labels = np.array([CLASSES.index(label) for label, _ in data])
    print(f"embedding {len(data)} prompts ...", file=sys.stderr)
    features = OnnxEmbedder().embed([text for _, text in data])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    best, best_score = STRENGTHS[0], -1.0
    for strength in STRENGTHS:
        model = LogisticRegression(C=strength, max_iter=5000)
        probabilities = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")
        recall, fpr = toxic_recall_and_fpr(labels, probabilities)
        score = recall - 3 * fpr  # a false positive annoys; weigh it like the 0.03 goal does
        print(f"C={strength:>5}: cross-validated recall {recall:.3f}, fpr {fpr:.3f}")
        if score > best_score:
            best, best_score = strength, score
    model = LogisticRegression(C=best, max_iter=5000).fit(features, labels)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        OUT,
        classes=np.array(CLASSES),
        weights=model.coef_.T.astype(np.float32),
        bias=model.intercept_.astype(np.float32),
        strength=np.array(best),
        trained_on=np.array(TRAINING_SETS),
    )
    print(f"C={best} chosen; wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
