"""The Open action: under the systemd unit it starts the viewer outside the sandbox,
and it opens the image on the page when the daemon serves one."""

from __future__ import annotations

import shutil
from pathlib import Path

from speech2image.config import Config, GalleryConfig
from speech2image.stages import picture_locator, picture_opener


def test_from_a_terminal_xdg_open_runs_directly() -> None:
    assert picture_opener({}) == ("xdg-open",)


def test_under_systemd_the_user_manager_starts_the_viewer() -> None:
    assert shutil.which("systemd-run"), "make test installs systemd"
    opener = picture_opener({"INVOCATION_ID": "0123abcd"})
    assert opener[0] == "systemd-run"
    assert opener[-1] == "xdg-open"
    assert "--user" in opener


def test_open_goes_to_the_page_when_the_daemon_serves_it(tmp_path: Path) -> None:
    image = tmp_path / "2026-11-30" / "201500-a red fox-42.png"
    served = Config(gallery=GalleryConfig(dir=str(tmp_path), serve=True, port=8765))
    locate = picture_locator(served)
    assert locate(str(image)) == (
        "http://127.0.0.1:8765/#image=2026-11-30/201500-a%20red%20fox-42.png"
    )
    assert locate("/elsewhere/x.png") == "/elsewhere/x.png"  # not in the gallery: the file
    lan = Config(gallery=GalleryConfig(dir=str(tmp_path), serve=True, host="0.0.0.0"))
    assert picture_locator(lan)(str(image)).startswith("https://127.0.0.1:8765/#image=")


def test_open_goes_to_the_file_without_a_page_or_a_known_port(tmp_path: Path) -> None:
    image = str(tmp_path / "x.png")
    assert picture_locator(Config(gallery=GalleryConfig(dir=str(tmp_path))))(image) == image
    any_port = GalleryConfig(dir=str(tmp_path), serve=True, port=0)
    assert picture_locator(Config(gallery=any_port))(image) == image
