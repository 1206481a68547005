"""The real wyoming-satellite 1.0.0 driven by the real daemon: spoken at, drawn.

Two satellites, each fed a WAV in real time by ``tools/paced_pcm.py``, and one
``speech2image serve`` with ``[wyoming] satellites`` naming both:

- one that always streams, so our wake word ("hey jarvis") and end-pointer decide;
- one with a wake word of its own (a stand-in service that "hears" a short tone),
  which sends ``run-pipeline`` from speech-to-text and streams only after it.

Each request must end as a PNG in the gallery whose sidecar says it came over
Wyoming from that satellite, and the satellite must get its transcript and re-arm.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.satellite_env import MISSING, SatelliteProcess, installed
from tests.support import concat, data_audio, silence, word_error_rate, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SERVING = re.compile(r"wyoming: serving tcp://127\.0\.0\.1:(\d+)")
PROMPT = "a red fox sleeping under a cherry tree"  # what both WAVs ask for


def tone(seconds: float, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (np.sin(2 * np.pi * hz * t) * 16000).astype(np.int16)


@dataclass
class Rooms:
    daemon: subprocess.Popen[str]
    gallery: Path
    always: SatelliteProcess
    local: SatelliteProcess
    stderr: list[str]


@pytest.fixture(scope="module")
def rooms(
    tmp_path_factory: pytest.TempPathFactory, base_config: str, daemon_config_env: Path
) -> Iterator[Rooms]:
    from tests.conftest import with_base

    if not installed():
        pytest.fail(MISSING)
    root = tmp_path_factory.mktemp("satellites")
    spoken = write_wav(
        root / "kitchen.wav",
        concat(data_audio("espeak/hey_jarvis_prompt_en-us.wav"), silence(2.0)),
    )
    woken = write_wav(
        root / "bedroom.wav",
        concat(tone(0.12), silence(0.6), data_audio("espeak/prompt_1_en-us.wav"), silence(2.0)),
    )
    always = SatelliteProcess(spoken, root, "kitchen")
    local = SatelliteProcess(woken, root, "bedroom", local_wake=True)
    try:
        always.wait_listening()
        local.wait_listening()
        gallery = root / "gallery"
        config = root / "config.toml"
        table = f'[gallery]\ndir = "{gallery}"\n\n'
        table += f'[wyoming]\nsatellites = ["{always.uri}", "{local.uri}"]\n'
        config.write_text(with_base(table, base_config), "utf-8")
        daemon, stderr = start_daemon(config)
        try:
            yield Rooms(daemon, gallery, always, local, stderr)
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=20) == 0, "".join(stderr)
    finally:
        always.stop()
        local.stop()


def start_daemon(config: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """``speech2image serve`` with no microphone; its stderr collected in a thread."""
    command = [sys.executable, "-m", "speech2image.cli", "serve", "--config", str(config)]
    command += ["--uri", "tcp://127.0.0.1:0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise AssertionError("the daemon exited:\n" + "".join(lines))
        lines.append(line)
        if SERVING.search(line):
            break
    else:
        raise AssertionError("the daemon did not start:\n" + "".join(lines))
    stream = process.stderr
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return process, lines


def sidecar_from(rooms: Rooms, satellite: SatelliteProcess, timeout: float) -> dict[str, Any]:
    """The record of the first picture the satellite asked for, once its PNG is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(rooms.gallery.rglob("*.json")):
            if ".tmp" in path.parts or not path.with_suffix(".png").exists():
                continue
            record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if satellite.uri in record.get("origin", ""):
                return record
        time.sleep(0.2)
    raise AssertionError(
        f"no picture from {satellite.uri} within {timeout} s\n"
        f"daemon:\n{''.join(rooms.stderr)}\nsatellite:\n{satellite.log}"
    )


def test_a_request_spoken_at_an_always_streaming_satellite_ends_as_a_png(rooms: Rooms) -> None:
    satellite = rooms.always
    satellite.wait_log("Streaming audio", 60)  # the daemon connected: run-satellite came
    satellite.speak()
    record = sidecar_from(rooms, satellite, 120)
    assert record["source"] == "wyoming"
    assert record["origin"] == f"satellite {satellite.uri}"
    assert word_error_rate(PROMPT, record["prompt"]) <= 0.25, record["prompt"]
    assert record["wake"]["model"] == "hey_jarvis"
    satellite.wait_log("Wake word detected", 10)  # our wake word, told to the satellite
    satellite.wait_log("Event(type='transcript'", 10)
    satellite.wait_log("Streaming audio", 10, count=2)  # it re-armed


def test_a_satellite_with_its_own_wake_word_is_listened_to_at_once(rooms: Rooms) -> None:
    satellite = rooms.local
    satellite.wait_log("Waiting for wake word", 60)
    satellite.speak()
    record = sidecar_from(rooms, satellite, 120)
    assert record["source"] == "wyoming"
    assert record["origin"] == f"satellite {satellite.uri}"
    assert word_error_rate(PROMPT, record["prompt"]) <= 0.25, record["prompt"]
    assert record["wake"]["model"] == "satellite"
    satellite.wait_log("Event(type='transcript'", 10)
    satellite.wait_log("Waiting for wake word", 10, count=2)  # back to its own wake word
