"""Fixtures shared by every test layer, and the rule that nothing skips but GPU tests.

Under `make test` everything a test needs is installed by `make test` itself, so a
test that skips for want of a part hides a broken set-up. A skip is turned into a
failure unless the test is marked ``gpu`` (no GPU can exist on a CPU-only machine).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

ENV = "SPEECH2IMAGE_CONFIG"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or hasattr(report, "wasxfail") or item.get_closest_marker("gpu"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped ({reason}), but only tests marked gpu may skip: whatever else a test "
        "needs, `make test` installs (see the Makefile), so this is a broken set-up"
    )


@pytest.fixture(autouse=True)
def _private_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own runtime and state directories, so the daemon's instance
    lock and its persistent pause never leak from one test (or the user) to another."""
    root = tmp_path_factory.mktemp("user")
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))


@pytest.fixture(scope="session")
def tiny_sd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline on disk, loaded like any local model."""
    from tests.tinysd import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def base_config(tmp_path_factory: pytest.TempPathFactory, tiny_sd_model: Path) -> str:
    """What every daemon run in the tests shares: the tiny image model, a private gallery,
    and no desktop notifications unless a test asks for them."""
    gallery = tmp_path_factory.mktemp("gallery")
    return (
        f'[image]\nmodel = "{tiny_sd_model}"\nwidth = 64\nheight = 64\nsteps = 2\n\n'
        f'[gallery]\ndir = "{gallery}"\n\n'
        "[notify]\nenabled = false\n"
    )


@pytest.fixture(scope="session")
def daemon_config_env(tmp_path_factory: pytest.TempPathFactory, base_config: str) -> Iterator[Path]:
    """$SPEECH2IMAGE_CONFIG for daemons started without --config (they inherit it)."""
    path = tmp_path_factory.mktemp("config") / "base.toml"
    path.write_text(base_config, encoding="utf-8")
    before = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = before


def with_base(text: str, base: str) -> str:
    """``base`` overlaid with ``text``, key by key (the test's own values win)."""
    merged = tomllib.loads(base)
    for table, values in tomllib.loads(text).items():
        merged.setdefault(table, {}).update(values)
    return tomli_w.dumps(merged)


@pytest.fixture
def config_file(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Writes TOML text into a config file in tmp_path and returns its path.

    In integration and end-to-end tests the shared base tables are added, so a test
    only writes what it is about.
    """
    uses_daemon = "daemon_config_env" in request.fixturenames
    base = request.getfixturevalue("base_config") if uses_daemon else ""

    def make(text: str) -> Path:
        path = tmp_path / "speech2image.toml"
        path.write_text(with_base(text, base) if base else text, encoding="utf-8")
        return path

    return make
