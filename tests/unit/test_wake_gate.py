"""WakeGate: threshold, patience and refractory period on synthetic score sequences."""

from __future__ import annotations

from speech2image.config import WakeConfig, WakeOverride
from speech2image.listening.wakeword import WakeGate, WakeHit


def run(gate: WakeGate, scores: list[dict[str, float]]) -> list[tuple[int, WakeHit]]:
    hits = []
    for index, frame_scores in enumerate(scores):
        hit = gate.update(frame_scores)
        if hit is not None:
            hits.append((index, hit))
    return hits


def series(name: str, values: list[float]) -> list[dict[str, float]]:
    return [{name: v} for v in values]


def test_fires_on_first_frame_at_threshold() -> None:
    gate = WakeGate({"a": 0.5}, {"a": 1}, refractory_frames=25)
    assert run(gate, series("a", [0.1, 0.49, 0.5, 0.9])) == [(2, WakeHit("a", 0.5))]


def test_patience_needs_consecutive_frames() -> None:
    gate = WakeGate({"a": 0.5}, {"a": 3}, refractory_frames=0)
    hits = run(gate, series("a", [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.2]))
    assert [index for index, _ in hits] == [5]


def test_refractory_suppresses_the_rest_of_a_phrase_then_rearms() -> None:
    gate = WakeGate({"a": 0.5}, {"a": 1}, refractory_frames=4)
    scores = [0.9, 0.9, 0.9, 0.9, 0.9, 0.0, 0.0, 0.8]
    assert [index for index, _ in run(gate, series("a", scores))] == [0, 7]


def test_scores_below_threshold_never_fire() -> None:
    gate = WakeGate({"a": 0.5}, {"a": 1}, refractory_frames=0)
    assert run(gate, series("a", [0.3, 0.49, 0.15, 0.0] * 50)) == []


def test_per_model_thresholds_and_best_model_wins() -> None:
    config = WakeConfig(
        models=("a", "b"),
        threshold=0.5,
        overrides={"b": WakeOverride(threshold=0.9)},
    )
    gate = WakeGate.from_config(config, ["a", "b"])
    assert run(gate, [{"a": 0.4, "b": 0.8}]) == []
    gate = WakeGate.from_config(config, ["a", "b"])
    assert run(gate, [{"a": 0.6, "b": 0.95}]) == [(0, WakeHit("b", 0.95))]


def test_refractory_seconds_become_frames() -> None:
    gate = WakeGate.from_config(WakeConfig(refractory=2.0), ["hey_jarvis"])
    scores = series("hey_jarvis", [0.9] + [0.0] * 25 + [0.9])  # 2.08 s later: a new wake
    assert [index for index, _ in run(gate, scores)] == [0, 26]
    gate = WakeGate.from_config(WakeConfig(refractory=2.0), ["hey_jarvis"])
    scores = series("hey_jarvis", [0.9] + [0.0] * 24 + [0.9])  # 2.0 s later: still quiet
    assert [index for index, _ in run(gate, scores)] == [0]
