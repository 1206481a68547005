"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[[str], Path]:
    """Writes TOML text into a config file in tmp_path and returns its path."""

    def make(text: str) -> Path:
        path = tmp_path / "speech2image.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return make
