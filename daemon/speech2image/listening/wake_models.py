"""Where every model comes from, and `speech2image models pull`, the one command that downloads.

The daemon never reaches the network: at start it only looks in local places and,
when a model is missing, fails with an error naming the config key, the path it
tried and this command.

Wake-word models: openWakeWord's current release ships no model files; the 0.5.1
wheel on PyPI does. `pull` fetches that wheel with pip, checks its SHA-256, and
extracts the ONNX files (each checked again) into the user cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..config import WakeConfig, wake_model_name
from ..model_files import PULL_HINT, ModelError

log = logging.getLogger(__name__)

WAKE_PACKAGE = "openwakeword==0.5.1"
WAKE_WHEEL = "openwakeword-0.5.1-py3-none-any.whl"
WAKE_WHEEL_SHA256 = "015467e49f08b0ef8efa433690ce70566abb72f7c36501a6fa893762b4ddc559"
WAKE_MEMBER_DIR = "openwakeword/resources/models/"
# File name -> SHA-256 of the ONNX models inside that wheel.
WAKE_FILES: Mapping[str, str] = {
    "melspectrogram.onnx": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    "embedding_model.onnx": "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
    "hey_jarvis_v0.1.onnx": "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
    "alexa_v0.1.onnx": "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
    "hey_mycroft_v0.1.onnx": "c2a311e8fa1338de89c31b3b46dc4dffd4af2f9a8d6ddead48893c2d301b1f18",
    "hey_rhasspy_v0.1.onnx": "5a9b3ed3be2910e35780e097905aa9f35a9c10038df47914cf2b3ec4d670f6ea",
}
PRETRAINED_WAKE_WORDS = ("hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy")


def wake_model_dir(config: WakeConfig) -> Path:
    if config.model_dir:
        return Path(config.model_dir).expanduser()
    return platformdirs.user_cache_path("speech2image") / "openwakeword-0.5.1"


@dataclass(frozen=True)
class WakeModelFiles:
    models: dict[str, Path]  # our name (as written in [wake] models) -> .onnx
    melspectrogram: Path
    embedding: Path


def resolve_wake_models(config: WakeConfig, source: str) -> WakeModelFiles:
    """Every configured wake word and the two feature models, or a ModelError saying why."""
    folder = wake_model_dir(config)
    models: dict[str, Path] = {}
    for entry in config.models:
        path = _wake_model_path(entry, folder)
        if not path.is_file():
            raise ModelError(
                f"wake-word model {entry!r} ([wake] models in {source}) not found at {path}; "
                + (PULL_HINT if entry in PRETRAINED_WAKE_WORDS else "check the path")
            )
        models[wake_model_name(entry)] = path
    features = [folder / "melspectrogram.onnx", folder / "embedding_model.onnx"]
    for path in features:
        if not path.is_file():
            raise ModelError(f"openWakeWord feature model not found at {path}; {PULL_HINT}")
    return WakeModelFiles(models, features[0], features[1])


def _wake_model_path(entry: str, folder: Path) -> Path:
    if entry in PRETRAINED_WAKE_WORDS:
        return folder / f"{entry}_v0.1.onnx"
    if not entry.endswith(".onnx"):
        known = ", ".join(PRETRAINED_WAKE_WORDS)
        raise ModelError(
            f"[wake] models: {entry!r} is neither a built-in wake word ({known}) "
            "nor a path to an .onnx model"
        )
    return Path(entry).expanduser()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wake_models_present(folder: Path) -> bool:
    return all(
        (folder / name).is_file() and sha256(folder / name) == digest
        for name, digest in WAKE_FILES.items()
    )


Say = Callable[[str], None]


def pull_wake_models(folder: Path, say: Say) -> None:
    """Fetch the openWakeWord 0.5.1 wheel with pip and install its ONNX models into ``folder``."""
    if wake_models_present(folder):
        say(f"wake-word models: already in {folder}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speech2image-pull-") as tmp:
        say(f"wake-word models: downloading {WAKE_PACKAGE} with pip")
        wheel = _download_wheel(Path(tmp))
        _extract_checked(wheel, folder)
    say(f"wake-word models: {len(WAKE_FILES)} files verified in {folder}")
    say("note: these pretrained models are licensed CC BY-NC-SA 4.0 (non-commercial use)")


def _download_wheel(tmp: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--progress-bar",
        "on",
        "--disable-pip-version-check",
        "-d",
        str(tmp),
        WAKE_PACKAGE,
    ]
    result = subprocess.run(command, check=False, stdout=sys.stderr)
    wheel = tmp / WAKE_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        raise ModelError(
            f"could not download {WAKE_PACKAGE} with pip (exit {result.returncode}); "
            "check the network or your pip index settings"
        )
    if sha256(wheel) != WAKE_WHEEL_SHA256:
        raise ModelError(f"{WAKE_WHEEL} has an unexpected SHA-256; refusing to use it")
    return wheel


def _extract_checked(wheel: Path, folder: Path) -> None:
    """Each file goes to a temp name, is hashed, then renamed: no half-written model survives."""
    with zipfile.ZipFile(wheel) as archive:
        for name, digest in WAKE_FILES.items():
            target = folder / name
            partial = target.with_suffix(".part")
            with archive.open(WAKE_MEMBER_DIR + name) as src, partial.open("wb") as dst:
                dst.write(src.read())
                dst.flush()
                os.fsync(dst.fileno())
            if sha256(partial) != digest:
                partial.unlink()
                raise ModelError(f"{name} from {WAKE_WHEEL} failed its SHA-256 check")
            os.replace(partial, target)
