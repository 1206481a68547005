"""What a notification's "Open" runs: the desktop's opener, detached from the daemon.

Kept apart from the notifier: it is plain process handling, and the notifier's loop
only decides when to call it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class PictureOpener:
    """Runs ``command + [locate(path)]``: the file itself, or its page on the gallery."""

    def __init__(self, command: Sequence[str], locate: Callable[[str], str] = str) -> None:
        self.command = tuple(command)
        self._locate = locate
        self._warned = False

    def available(self) -> bool:
        """Offer "Open" only if it can work; say so once if it cannot."""
        found = shutil.which(self.command[0]) is not None
        if not found and not self._warned:
            self._warned = True
            log.warning("%s not found: images cannot be opened from notifications", self.command[0])
        return found

    def open(self, path: str) -> None:
        """Run the opener detached (own session, no shell) and reap it in a thread."""
        try:
            command, devnull = [*self.command, self._locate(path)], subprocess.DEVNULL
            process = subprocess.Popen(
                command, stdin=devnull, stdout=devnull, stderr=devnull, start_new_session=True
            )
        except FileNotFoundError:
            self.available()
            return
        except OSError as exc:
            log.warning("could not run %s: %s", self.command[0], exc.strerror)
            return
        threading.Thread(target=process.wait, name="notify-opener", daemon=True).start()
