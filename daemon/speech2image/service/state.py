"""What the daemon remembers across restarts, kept under the user's state directory.

Someone who pauses the daemon (closing the microphone) expects it to stay paused after
a reboot, a crash or a ``systemctl --user restart``, so the paused state is a file
rather than a variable. It lives under ``$XDG_STATE_HOME`` (the XDG place for state
that should persist but is not worth backing up), not under the config directory,
which the daemon never writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

APP_NAME = "speech2image"
PAUSED_NAME = "paused"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/speech2image``, or ``~/.local/state/speech2image`` without it."""
    return platformdirs.user_state_path(APP_NAME)


class PausedFlag:
    """The paused state as the presence of a file: it exists while the daemon is paused.

    A failure to read or write it is logged and swallowed: pausing must still work in
    memory when the state directory is read-only or full, it just will not survive a
    restart.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_state_dir() / PAUSED_NAME

    def get(self) -> bool:
        """Whether the daemon was left paused; an unreadable directory counts as not."""
        try:
            return self.path.exists()
        except OSError as error:
            log.warning("could not read the paused state %s: %s", self.path, error)
            return False

    def set(self, paused: bool) -> None:
        """Remember ``paused``: create the file atomically, or remove it."""
        try:
            if paused:
                self._create()
            else:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    self.path.unlink()  # either way, no flag is there
        except OSError as error:
            log.warning(
                "could not remember the daemon as %s in %s (%s); it will not survive a restart",
                "paused" if paused else "resumed",
                self.path,
                error,
            )

    def _create(self) -> None:
        """Write a temporary file beside the flag and rename it into place, so that a
        crash mid-write never leaves a half-made flag (or a stray one in the way)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write("paused\n")
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
