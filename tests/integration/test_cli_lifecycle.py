"""The CLI as a user meets it: signals, exit codes, the models command, help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import silence, write_wav

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLI = [sys.executable, "-m", "speech2image.cli"]
ConfigFile = Callable[[str], Path]


def test_sigterm_stops_a_realtime_run_cleanly(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "long.wav", silence(120.0))
    process = subprocess.Popen(
        [*CLI, "run", "--input", str(wav), "--realtime", "--events", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    assert first["type"] == "listening"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["type"] == "stopped"
    assert last["t"] < 60  # stopped long before the two minutes of input were heard
    assert "received SIGTERM, stopping" in err


def test_models_pull_is_idempotent_and_offline_when_present() -> None:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    result = subprocess.run(
        [*CLI, "models", "pull"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "wake-word models: already in" in result.stdout


def test_models_pull_failure_is_clear(tmp_path: Path, config_file: ConfigFile) -> None:
    config = config_file(f'[wake]\nmodel_dir = "{tmp_path / "fresh"}"\n')
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    result = subprocess.run(
        [*CLI, "models", "pull", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "could not download openwakeword==0.5.1 with pip" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "fresh").glob("*.onnx"))


def test_config_command_prints_toml_that_loads_back(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    config = config_file('[wake]\nmodels = ["alexa"]\nthreshold = 0.6\n')
    result = subprocess.run(
        [*CLI, "config", "--config", str(config)], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith(f"# effective configuration (from {config})")
    printed = tomllib.loads(result.stdout)
    assert printed["wake"]["models"] == ["alexa"]
    assert printed["wake"]["threshold"] == 0.6
    assert printed["listen"]["silence_timeout"] == 0.7


def test_version_and_help() -> None:
    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("speech2image 0.")
    helptext = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "devices", "models", "config"):
        assert command in helptext.stdout
