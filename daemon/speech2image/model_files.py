"""What every stage shares about finding model files: the error, the fix, the cache.

The daemon never reaches the network: each stage looks only in local places and,
when a model is missing, raises :class:`ModelError` naming the config key, the path
it tried and :data:`PULL_HINT`, the one command that downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

PULL_HINT = "run `speech2image models pull` (it needs network access once)"


class ModelError(Exception):
    """A model that is not where the config says; the message names the key and the fix."""


def hf_cache() -> Path:
    """The Hugging Face hub cache, read at call time (tests point it elsewhere)."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home).expanduser() / "hub"


def looks_like_a_path(name: str) -> bool:
    """A folder the user meant (``./m``, ``~/m``, ``/m``, ``a/b/c``), not a hub id (``org/m``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1
