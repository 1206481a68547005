"""Integration tests run the real daemon, with the tiny image model (see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _daemon_config(daemon_config_env: Path) -> Path:
    """Every daemon these tests start uses the tiny image model and a private gallery."""
    return daemon_config_env
