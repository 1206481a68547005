"""Moderation quality and latency on the labeled prompt sets in tests/data/moderation/.

Precision, recall and false-positive rate per backend and for the default
combination, on heldout.tsv (never used to tune anything) and dev.tsv (the
lexicon was written against it, so its figures flatter the lexicon).
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from speech2image.config import ModerationConfig
from speech2image.moderation.combined import build_moderator
from speech2image.moderation.verdict import Moderator

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "moderation"


@dataclass(frozen=True)
class Row:
    toxic: bool
    category: str
    text: str


def load(name: str) -> list[Row]:
    with (DATA / name).open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [Row(r["label"] == "toxic", r["category"], r["text"]) for r in reader]


@dataclass(frozen=True)
class Quality:
    backend: str
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int
    missed: Counter[str]
    wrongly_blocked: tuple[str, ...]

    @property
    def precision(self) -> float:
        return self.true_pos / max(1, self.true_pos + self.false_pos)

    @property
    def recall(self) -> float:
        return self.true_pos / max(1, self.true_pos + self.false_neg)

    @property
    def false_positive_rate(self) -> float:
        return self.false_pos / max(1, self.false_pos + self.true_neg)


def evaluate(moderator: Moderator, rows: Sequence[Row]) -> Quality:
    tp = fp = fn = tn = 0
    missed: Counter[str] = Counter()
    blocked: list[str] = []
    for row in rows:
        rejected = not moderator.check(row.text).allowed
        if row.toxic and rejected:
            tp += 1
        elif row.toxic:
            fn += 1
            missed[row.category] += 1
        elif rejected:
            fp += 1
            blocked.append(row.text)
        else:
            tn += 1
    return Quality(moderator.name, tp, fp, fn, tn, missed, tuple(blocked))


def configurations() -> dict[str, ModerationConfig]:
    default = ModerationConfig()
    return {
        "profanity": replace(default, backends=("profanity",)),
        "lexicon": replace(default, backends=("lexicon",)),
        "semantic": replace(default, backends=("semantic",)),
        "profanity + lexicon": replace(default, backends=("profanity", "lexicon")),
        "lexicon + semantic": replace(default, backends=("lexicon", "semantic")),
        "profanity + lexicon + semantic": replace(
            default, backends=("profanity", "lexicon", "semantic")
        ),
        f"default ({' + '.join(default.backends)})": default,
    }


def quality(name: str) -> list[tuple[str, Quality]]:
    rows = load(name)
    return [
        (label, evaluate(build_moderator(config, "bench"), rows))
        for label, config in configurations().items()
    ]


def latency(repeats: int = 3) -> list[tuple[str, float, float]]:
    """p50 and p99 milliseconds per check, over every prompt in both sets."""
    texts = [row.text for name in ("dev.tsv", "heldout.tsv") for row in load(name)]
    results = []
    for label, config in configurations().items():
        moderator = build_moderator(config, "bench")
        moderator.check("warm up")
        times = []
        for _ in range(repeats):
            for text in texts:
                started = time.perf_counter()
                moderator.check(text)
                times.append((time.perf_counter() - started) * 1000)
        times.sort()
        results.append((label, statistics.median(times), times[int(len(times) * 0.99)]))
    return results


if __name__ == "__main__":
    import sys

    for set_name in sys.argv[1:] or ["dev.tsv"]:
        for label, q in quality(set_name):
            print(
                f"{set_name} {label}: precision {q.precision:.3f} recall {q.recall:.3f} "
                f"fpr {q.false_positive_rate:.3f} missed {dict(q.missed)}"
            )
            for text in q.wrongly_blocked:
                print("   FP:", text)
