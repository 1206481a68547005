"""Moderation quality and latency on the labeled prompt sets in tests/data/moderation/.

Precision, recall and false-positive rate per combination of backends, on the blind
sets (test.tsv, test_harms.tsv: written before the rules and head they judge, never
tuned on), the validation sets (heldout.tsv, dev_harms.tsv) and Whisper's real
mishearings of harmless prompts (misheard.tsv), plus recall per harm category.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from speech2image.config import ModerationConfig
from speech2image.moderation.combined import build_moderator
from speech2image.moderation.verdict import Moderator

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "moderation"
LATENCY_SETS = ("dev.tsv", "heldout.tsv", "dev_harms.tsv")


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
    toxic_by_category: Counter[str] = field(default_factory=Counter)

    def category_recall(self, category: str) -> float:
        total = self.toxic_by_category[category]
        return (total - self.missed[category]) / max(1, total)

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
    totals = Counter(row.category for row in rows if row.toxic)
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
    return Quality(moderator.name, tp, fp, fn, tn, missed, tuple(blocked), totals)


COMBINATIONS = (
    ("profanity",),
    ("lexicon",),
    ("semantic",),
    ("profanity", "lexicon"),
    ("lexicon", "semantic"),
    ("profanity", "lexicon", "semantic"),
)


def configurations() -> dict[str, ModerationConfig]:
    """Every combination, with the default thresholds; the default one is marked."""
    default = ModerationConfig()
    configs = {}
    for backends in COMBINATIONS:
        label = " + ".join(backends) + (" (default)" if backends == default.backends else "")
        configs[label] = replace(default, backends=backends)
    return configs


def quality(name: str) -> list[tuple[str, Quality]]:
    rows = load(name)
    return [
        (label, evaluate(build_moderator(config, "bench"), rows))
        for label, config in configurations().items()
    ]


def latency(repeats: int = 3) -> list[tuple[str, float, float]]:
    """p50 and p99 milliseconds per check, over every prompt of the development sets."""
    texts = [row.text for name in LATENCY_SETS for row in load(name)]
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
