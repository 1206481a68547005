"""The Open action under the systemd unit starts the viewer outside the sandbox."""

from __future__ import annotations

import shutil

from speech2image.stages import picture_opener


def test_from_a_terminal_xdg_open_runs_directly() -> None:
    assert picture_opener({}) == ("xdg-open",)


def test_under_systemd_the_user_manager_starts_the_viewer() -> None:
    assert shutil.which("systemd-run"), "make test installs systemd"
    opener = picture_opener({"INVOCATION_ID": "0123abcd"})
    assert opener[0] == "systemd-run"
    assert opener[-1] == "xdg-open"
    assert "--user" in opener
