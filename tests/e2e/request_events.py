"""One request's events, as the daemon emits them, for the notification tests.

The recording-server tests (``test_notify_in_place.py``) and the dunst tests
(``test_notify_dunst.py``) feed the notifier the same request, so they check one story
against two servers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speech2image.events import Accepted, ImageWritten, Progress, Rejected, Wake

RID = "2f1c0e9ab3d4"
PROMPT = "a red fox sleeping under a cherry tree in the snow at dawn"
DRAWING = "Drawing “a red fox sleeping under a cherry tree…”"  # PROMPT as the notification cuts it


def wake(rid: str = RID) -> Wake:
    return Wake(id=rid, t=1.0, model="hey_jarvis", score=0.9)


def accepted(rid: str = RID) -> Accepted:
    return Accepted(id=rid, t=2.0, text=PROMPT)


def progress(step: int, rid: str = RID) -> Progress:
    return Progress(id=rid, t=3.0, step=step, steps=4)


def finished(path: Path, rid: str = RID) -> ImageWritten:
    return ImageWritten(id=rid, t=4.0, path=str(path), prompt=PROMPT, seed=7, model="sd", seconds=1)


def rejected(reason: Any, rid: str = RID, flagged: tuple[str, ...] = ()) -> Rejected:
    return Rejected(id=rid, t=4.0, reason=reason, flagged=flagged)
