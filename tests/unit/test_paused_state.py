"""The paused flag: kept on disk so a paused daemon stays paused after a restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from speech2image.service.state import PausedFlag, default_state_dir


def test_paused_survives_a_new_flag_object_and_resume_clears_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "speech2image" / "paused"  # the directory does not exist yet
    flag = PausedFlag(path)
    assert not flag.get()
    flag.set(True)
    assert PausedFlag(path).get()  # as a restarted daemon would read it
    flag.set(True)  # pausing twice is still paused
    assert PausedFlag(path).get()
    flag.set(False)
    assert not PausedFlag(path).get()
    flag.set(False)  # resuming when not paused is fine
    assert not flag.get()
    assert list(path.parent.iterdir()) == []  # no temporary file left behind


def test_an_unwritable_place_is_logged_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    flag = PausedFlag(blocker / "paused")
    with caplog.at_level(logging.WARNING, logger="speech2image.service.state"):
        flag.set(True)
        flag.set(False)
        assert not flag.get()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1  # unlinking a flag that cannot exist is no failure
    assert str(blocker / "paused") in messages[0]
    assert "will not survive a restart" in messages[0]


def test_default_state_dir_follows_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert default_state_dir() == tmp_path / "xdg-state" / "speech2image"
    assert PausedFlag().path == tmp_path / "xdg-state" / "speech2image" / "paused"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "speech2image"
