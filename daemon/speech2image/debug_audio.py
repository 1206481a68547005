"""Debug recordings: each utterance as a WAV file, only with ``[debug] save_audio = true``.

Speech is private: by default nothing the microphone hears leaves memory. A user
chasing a misheard request can turn recordings on; each utterance (the audio after
the wake word, exactly what Whisper was given) is then kept as
``<request id>.wav``, 16 kHz mono 16-bit, so it can be matched with its events and
replayed with ``speech2image run --input``. The file is readable by its owner only,
and its name holds the request id, never the words.

Writing is atomic (a hidden temp file, then a rename), so a crash leaves no
half-written WAV. A failure is a warning, never a failed request: debugging must not
change what the user gets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import platformdirs
import soundfile

from .config import DebugConfig
from .pcm import SAMPLE_RATE

log = logging.getLogger(__name__)

FOLDER_NAME = "debug-audio"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def debug_audio_dir(config: DebugConfig) -> Path:
    """``[debug] audio_dir``, or ``debug-audio/`` under the user state directory
    (``~/.local/state/speech2image`` by default): state, not a cache to be cleared."""
    if config.audio_dir:
        return Path(config.audio_dir).expanduser()
    return Path(platformdirs.user_state_dir("speech2image")) / FOLDER_NAME


def recording_name(request_id: str) -> str:
    """``<request id>.wav``, with anything a file name should not hold replaced."""
    return f"{_UNSAFE.sub('_', request_id) or 'utterance'}.wav"


def save_utterance(folder: Path, request_id: str, audio: npt.NDArray[np.int16]) -> Path | None:
    """Write ``audio`` (16 kHz mono int16) as ``folder/<request id>.wav``; its path, or
    None when it could not be written (logged, with the folder and the reason only)."""
    target = folder / recording_name(request_id)
    temp = folder / f".{target.name}.{os.getpid()}.part"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            soundfile.write(handle, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except (OSError, RuntimeError) as exc:  # soundfile's errors are RuntimeErrors
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        log.warning(
            "could not save the debug recording of request %s in %s: %s", request_id, folder, reason
        )
        return None
    log.debug("debug recording of request %s: %s", request_id, target)
    return target
