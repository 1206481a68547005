"""Wake-word scoring (openWakeWord on ONNX Runtime) and the debounce that decides a wake.

Scoring is I/O with a model; deciding is a pure state machine (:class:`WakeGate`)
so thresholds, patience and the refractory period are unit-tested without models.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..config import WakeConfig
from ..pcm import FRAME_SECONDS

log = logging.getLogger(__name__)


class WakeScorer(Protocol):
    """Scores each 80 ms frame for every loaded wake-word model (0..1)."""

    names: tuple[str, ...]

    def scores(self, frame: npt.NDArray[np.int16]) -> dict[str, float]: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class WakeHit:
    model: str
    score: float


class WakeGate:
    """Per-model threshold and patience, plus a refractory period after each wake.

    ``patience`` consecutive frames at or above a model's threshold make a wake; after
    one, every model is ignored for ``refractory_frames`` so one spoken phrase (whose
    score stays high for up to a second) cannot wake twice.
    """

    def __init__(
        self,
        thresholds: Mapping[str, float],
        patience: Mapping[str, int],
        refractory_frames: int,
    ) -> None:
        self._thresholds = dict(thresholds)
        self._patience = dict(patience)
        self._refractory_frames = refractory_frames
        self._streak = dict.fromkeys(thresholds, 0)
        self._quiet_for = 0

    @classmethod
    def from_config(cls, config: WakeConfig, names: Sequence[str]) -> WakeGate:
        return cls(
            {name: config.threshold_for(name) for name in names},
            {name: config.patience_for(name) for name in names},
            round(config.refractory / FRAME_SECONDS),
        )

    def update(self, scores: Mapping[str, float]) -> WakeHit | None:
        for name, threshold in self._thresholds.items():
            above = scores.get(name, 0.0) >= threshold
            self._streak[name] = self._streak[name] + 1 if above else 0
        if self._quiet_for > 0:
            self._quiet_for -= 1
            return None
        ready = [
            WakeHit(name, float(scores[name]))
            for name in self._thresholds
            if self._streak[name] >= self._patience[name]
        ]
        if not ready:
            return None
        self._quiet_for = self._refractory_frames
        self._streak = dict.fromkeys(self._streak, 0)
        return max(ready, key=lambda hit: hit.score)


class OpenWakeWordScorer:
    """openWakeWord's current release running the ONNX models, with our model names.

    openWakeWord keys scores by file stem (``hey_jarvis_v0.1``); events and config
    use the name the user wrote (``hey_jarvis``), so both are mapped here once.
    """

    def __init__(
        self,
        models: Mapping[str, Path],
        melspec_model: Path,
        embedding_model: Path,
    ) -> None:
        from openwakeword.model import Model

        self.names = tuple(models)
        self._stems = {path.stem: name for name, path in models.items()}
        self._model: Any = Model(
            wakeword_models=[str(path) for path in models.values()],
            inference_framework="onnx",
            melspec_model_path=str(melspec_model),
            embedding_model_path=str(embedding_model),
        )

    def scores(self, frame: npt.NDArray[np.int16]) -> dict[str, float]:
        raw = self._model.predict(frame)
        return {self._stems[stem]: float(score) for stem, score in raw.items()}

    def reset(self) -> None:
        self._model.reset()
