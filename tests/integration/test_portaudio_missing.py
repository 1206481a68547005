"""Without PortAudio (no libportaudio2), sound files still work and the microphone says why not.

The CLI runs in a subprocess in which ``import sounddevice`` fails exactly as it does
when the library is absent: a ``sitecustomize`` module on PYTHONPATH installs an
import hook raising ``OSError("PortAudio library not found")``. The hook also writes
down every attempt, so the file test proves sounddevice was never even tried, and
every first import of a library a model needs, so the microphone test proves the
PortAudio check came before any model was loaded (no model loads without its library).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speech2image.config import EX_CONFIG
from speech2image.listening.microphone import PORTAUDIO_MISSING
from tests.support import concat, data_audio, run_cli, silence, write_wav

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITECUSTOMIZE = '''
import os
import sys


MODEL_LIBRARIES = {
    "ctranslate2", "diffusers", "faster_whisper", "onnxruntime", "openwakeword", "torch"
}


class NoPortAudio:
    """What sounddevice does at import when libportaudio2 is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name in MODEL_LIBRARIES:
            with open(os.environ["S2I_TEST_MODEL_LIBRARIES"], "a") as imported:
                imported.write(name + "\\n")
        if name == "sounddevice":
            with open(os.environ["S2I_TEST_SOUNDDEVICE_TRIED"], "a") as tried:
                tried.write(name + "\\n")
            raise OSError("PortAudio library not found")
        return None


sys.meta_path.insert(0, NoPortAudio())
'''


@pytest.fixture
def no_portaudio(tmp_path: Path) -> dict[str, str]:
    """Environment for a child process in which PortAudio cannot be loaded."""
    hook_dir = tmp_path / "no_portaudio"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "PYTHONPATH": path,
        "S2I_TEST_SOUNDDEVICE_TRIED": str(tmp_path / "tried.txt"),
        "S2I_TEST_MODEL_LIBRARIES": str(tmp_path / "model_libraries.txt"),
    }


def tried_sounddevice(env: dict[str, str]) -> bool:
    return Path(env["S2I_TEST_SOUNDDEVICE_TRIED"]).exists()


def model_libraries_imported(env: dict[str, str]) -> list[str]:
    """The libraries a model needs that the child imported, in order."""
    imported = Path(env["S2I_TEST_MODEL_LIBRARIES"])
    return imported.read_text(encoding="utf-8").split() if imported.exists() else []


def test_the_hook_really_hides_portaudio(no_portaudio: dict[str, str]) -> None:
    """The premise: in such a child, importing sounddevice fails as without the library."""
    result = subprocess.run(
        [sys.executable, "-c", "import sounddevice"],
        env={**os.environ, **no_portaudio},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "OSError: PortAudio library not found" in result.stderr
    assert tried_sounddevice(no_portaudio)


def test_a_sound_file_runs_every_stage_without_sounddevice(
    tmp_path: Path, no_portaudio: dict[str, str]
) -> None:
    wav = write_wav(
        tmp_path / "in.wav",
        concat(silence(0.5), data_audio("espeak/hey_jarvis_benign_en+f3.wav"), silence(2.0)),
    )
    result = run_cli(["run", "--input", str(wav)], env=no_portaudio)
    assert result.returncode == 0, result.stderr
    kinds = [event["type"] for event in result.events]
    for kind in ("listening", "wake", "utterance", "transcript", "accepted", "image", "stopped"):
        assert kind in kinds, (kind, kinds)
    assert not tried_sounddevice(no_portaudio), "the file path imported sounddevice"
    assert "PortAudio" not in result.stderr
    # The hook sees model libraries being imported (the premise of the microphone test).
    assert {"faster_whisper", "openwakeword"} <= set(model_libraries_imported(no_portaudio))


@pytest.mark.parametrize("command", [["run"], ["devices"]])
def test_microphone_commands_fail_before_loading_models_with_the_fix(
    no_portaudio: dict[str, str], command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "speech2image.cli", *command],
        env={**os.environ, **no_portaudio},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"speech2image: {PORTAUDIO_MISSING}" in result.stderr.splitlines()
    assert "install libportaudio2 (sudo apt-get install libportaudio2" in result.stderr
    assert "Traceback" not in result.stderr
    assert tried_sounddevice(no_portaudio)
    assert model_libraries_imported(no_portaudio) == [], "models were loaded before the check"
