"""The notifications against the notification daemon people run: dunst, on Xvfb.

The recording server (``dbus_session.py``) checks the exact D-Bus arguments; these
tests check that a real server makes of them what we mean: ``dunst -print`` says what
it parsed from each ``Notify`` (id, text, icon, actions), ``dunstctl count displayed``
what is on screen, ``dunstctl history`` what was shown once closed, ``dunstctl action
0`` clicks the default action. The desktop's opener (``xdg-open``) is a recording script
first on PATH: it stands in for the desktop, it is not what is tested. Each test waits
on what dunst reports, never on the clock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from speech2image.config import Config, GalleryConfig, NotifyConfig
from speech2image.desktop.notify import DesktopNotifier
from speech2image.stages import desktop_notifier
from tests.e2e.dbus_session import wait_until
from tests.e2e.dunst import Dunst
from tests.e2e.request_events import DRAWING, PROMPT, RID, accepted, finished, progress, wake

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OPEN_ACTIONS = {"default": "Open", "open": "Open"}
PORT = 18765  # only written into the page's address: nothing listens on it
STAYS = NotifyConfig(timeout=0)  # until dismissed: nothing expires while a test looks


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    path = tmp_path / "gallery"
    path.mkdir()
    return path


@pytest.fixture
def image(gallery: Path) -> Path:
    """A real PNG: dunst loads it for the notification's image."""
    path = gallery / f"{RID}.png"
    Image.new("RGB", (24, 24), (200, 40, 40)).save(path)
    return path


@pytest.fixture
def opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recording ``xdg-open`` first on PATH; the file it appends its argument to."""
    bin_dir, record = tmp_path / "bin", tmp_path / "opened"
    bin_dir.mkdir()
    script = bin_dir / "xdg-open"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {record}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


@pytest.fixture
def on_bus(dunst: Dunst, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[DesktopNotifier]]:
    """The notifiers a test makes talk to dunst's bus; all closed at the end."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", dunst.bus_address)
    made: list[DesktopNotifier] = []
    yield made
    for notifier in made:
        notifier.close()


@pytest.fixture
def make_notifier(on_bus: list[DesktopNotifier]) -> Callable[..., DesktopNotifier]:
    def make(config: NotifyConfig = STAYS) -> DesktopNotifier:
        on_bus.append(DesktopNotifier(config))  # the default opener: xdg-open on PATH
        return on_bus[-1]

    return make


def received(dunst: Dunst, count: int, what: str = "") -> list[dict[str, Any]]:
    """dunst's ``-print`` blocks once there are at least ``count`` (AssertionError if not)."""
    wait_until(lambda: len(dunst.printed()) >= count, timeout=10, what=what or f"{count} notices")
    return dunst.printed()


def assert_the_picture(notice: dict[str, Any], image: Path) -> None:
    assert (notice["appname"], notice["summary"], notice["body"]) == (
        "speech2image",
        "speech2image",
        PROMPT,
    )
    assert notice["icon"] == image.as_uri()  # the image-path hint won over app_icon
    assert notice["actions"] == OPEN_ACTIONS


def assert_in_history(dunst: Dunst, image: Path) -> dict[str, Any]:
    """Close what is on screen; the picture is then dunst's one history entry."""
    dunst.close_all()
    wait_until(lambda: dunst.count("displayed") == 0, what="dunst to close its notices")
    (entry,) = dunst.history()
    assert (entry["summary"], entry["body"]) == ("speech2image", PROMPT)
    assert entry["icon_path"] == str(image)
    assert entry["default_action_name"] == "default"
    return entry


def opened_lines(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_the_picture_arrives_with_its_image_and_open_action(
    dunst: Dunst, make_notifier: Callable[..., DesktopNotifier], image: Path, opened: Path
) -> None:
    notifier = make_notifier()
    notifier.notify(finished(image))
    (notice,) = received(dunst, 1, "the picture")
    assert_the_picture(notice, image)
    assert dunst.count("displayed") == 1
    log = dunst.log.read_text()
    assert str(image) not in log, f"dunst could not show the image: {log}"
    entry = assert_in_history(dunst, image)
    assert int(notice["id"]) == entry["id"]


def test_open_in_dunst_opens_the_picture(
    dunst: Dunst, make_notifier: Callable[..., DesktopNotifier], image: Path, opened: Path
) -> None:
    notifier = make_notifier()
    notifier.notify(finished(image))
    received(dunst, 1, "the picture")
    dunst.ctl("action", "0")  # the default action of the first notice on screen
    wait_until(lambda: bool(opened_lines(opened)), timeout=10, what="xdg-open to run")
    assert opened_lines(opened) == [str(image)]


def test_open_in_dunst_opens_the_page_when_the_gallery_is_served(
    dunst: Dunst, on_bus: list[DesktopNotifier], gallery: Path, image: Path, opened: Path
) -> None:
    served = GalleryConfig(dir=str(gallery), serve=True, port=PORT)
    notifier = desktop_notifier(Config(gallery=served, notify=STAYS), environ={})
    assert notifier is not None
    on_bus.append(notifier)
    notifier.notify(finished(image))
    received(dunst, 1, "the picture")
    dunst.ctl("action", "0")
    wait_until(lambda: bool(opened_lines(opened)), timeout=10, what="xdg-open to run")
    assert opened_lines(opened) == [f"http://127.0.0.1:{PORT}/#image={RID}.png"]


def test_a_request_is_one_notification_in_dunst_from_listening_to_the_picture(
    dunst: Dunst, make_notifier: Callable[..., DesktopNotifier], image: Path
) -> None:
    """Every update reaches dunst (so nothing was coalesced away), each replaces the
    one before: one notice on screen, and only the picture in the history."""
    notifier = make_notifier()
    notifier.notify(wake())
    received(dunst, 1, "Listening…")
    notifier.notify(accepted())
    received(dunst, 2, "Drawing")
    for step in (1, 2, 3, 4):
        notifier.notify(progress(step))
    last_step = f"{DRAWING} 4/4"  # the last step is never throttled away
    wait_until(lambda: dunst.printed()[-1]["body"] == last_step, timeout=10, what="step 4/4")
    notifier.notify(finished(image))
    wait_until(lambda: dunst.printed()[-1]["body"] == PROMPT, timeout=10, what="the picture")
    notices = dunst.printed()
    bodies = [notice["body"] for notice in notices]
    assert bodies[:2] == ["Listening…", DRAWING]
    assert bodies[-2:] == [last_step, PROMPT]
    assert set(bodies[2:-1]) <= {f"{DRAWING} {n}/4" for n in (1, 2, 3, 4)}
    assert len({notice["id"] for notice in notices}) == 1  # dunst kept one id throughout
    assert_the_picture(notices[-1], image)
    assert dunst.count("displayed") == 1  # replaced in place, not stacked
    entry = assert_in_history(dunst, image)  # the replaced ones never became entries
    assert entry["id"] == int(notices[0]["id"])


def test_a_restarted_dunst_gets_every_later_notification(
    dunst: Dunst,
    make_notifier: Callable[..., DesktopNotifier],
    image: Path,
    opened: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dunst is killed mid-request and started again on the same bus: the picture and
    the next request reach the new one, as new notices, and its Open still works."""
    caplog.set_level(logging.WARNING)
    notifier = make_notifier()
    notifier.notify(wake())
    received(dunst, 1, "Listening…")
    dunst.kill()
    dunst.spawn()  # the same bus, display and -print log: later blocks are the new dunst's
    assert dunst.count("displayed") == 0
    notifier.notify(finished(image))
    after = received(dunst, 2, "the picture at the new dunst")[1:]
    assert_the_picture(after[0], image)
    dunst.ctl("action", "0")  # the one notice on screen: the picture
    wait_until(lambda: bool(opened_lines(opened)), timeout=10, what="xdg-open to run")
    assert opened_lines(opened) == [str(image)]
    notifier.notify(wake("second"))
    after = received(dunst, 3, "the next request at the new dunst")[1:]
    assert [notice["body"] for notice in after] == [PROMPT, "Listening…"]
    assert dunst.count("displayed") == 2  # the second did not take the picture's place
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_notification_while_dunst_is_down_does_not_lose_the_next_one(
    dunst: Dunst, make_notifier: Callable[..., DesktopNotifier], image: Path
) -> None:
    """A notice sent while no server owns the name is lost; the next one, once dunst
    is back, is not (the notifier asks again at the next notification, not in 60 s)."""
    notifier = make_notifier()
    notifier.notify(wake())
    received(dunst, 1, "Listening…")
    dunst.kill()
    notifier.notify(wake("lost"))  # nobody owns the name: this one cannot be shown
    dunst.spawn()
    notifier.notify(finished(image))
    after = received(dunst, 2, "the picture at the new dunst")[1:]
    assert_the_picture(after[-1], image)
