"""One notification through a request, updated in place (``replaces_id``), on a real bus.

"Listening…" at the wake word, "Drawing “…” n/4" while the picture is drawn, then the
picture or why there is none, all in one notification: checked on the ``Notify`` and
``CloseNotification`` calls a recording server receives (``dbus_session.py``), through
a private ``dbus-daemon``. Each test waits on the recorder, never on the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from speech2image.config import NotifyConfig
from speech2image.desktop.notify import DesktopNotifier
from speech2image.events import Event
from tests.e2e.dbus_session import NotificationServer, NotifyCall, OwnBus, wait_until
from tests.e2e.request_events import (
    DRAWING,
    PROMPT,
    RID,
    accepted,
    finished,
    progress,
    rejected,
    wake,
)

pytestmark = pytest.mark.e2e

ACTIONS = ["default", "Open", "open", "Open"]
PROGRESS_HINTS = {"urgency": 1, "suppress-sound": True}
MakeNotifier = Callable[..., DesktopNotifier]


@pytest.fixture
def make_notifier(session_bus: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeNotifier]:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session_bus)
    made: list[DesktopNotifier] = []

    def make(config: NotifyConfig | None = None, opener: Any = ("true",)) -> DesktopNotifier:
        made.append(DesktopNotifier(config or NotifyConfig(), opener))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "gallery" / f"{RID}.png"
    path.parent.mkdir()
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


def shown(notifier: DesktopNotifier, server: NotificationServer, event: Event) -> NotifyCall:
    """Notify ``event`` and wait until the server has been asked to show it."""
    before = len(server.calls)
    notifier.notify(event)
    return server.wait_for_calls(before + 1)[-1]


def our_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The product's warnings; the recording server's own complaints are not its."""
    records = caplog.records
    return [
        r.getMessage() for r in records if r.levelno >= logging.WARNING and "speech2image" in r.name
    ]


def assert_one_notification(calls: list[NotifyCall]) -> None:
    """Each call replaces the one before: the first is new, the rest reuse its id."""
    first = calls[0]
    assert first.replaces_id == 0
    assert [call.replaces_id for call in calls[1:]] == [first.id] * (len(calls) - 1)
    assert {call.id for call in calls} == {first.id}


def test_a_request_is_one_notification_from_listening_to_the_picture(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    notifier = make_notifier()
    listening = shown(notifier, notification_server, wake())
    assert (listening.summary, listening.body, listening.hints) == (
        "speech2image",
        "Listening…",
        PROGRESS_HINTS,
    )
    assert shown(notifier, notification_server, accepted()).body == DRAWING
    for step in (1, 2, 3, 4):
        notifier.notify(progress(step))
    last_step = f"{DRAWING} 4/4"  # the last step is never throttled away
    wait_until(lambda: notification_server.calls[-1].body == last_step, what="step 4/4")
    notifier.notify(finished(image))
    notifier.close()
    calls = notification_server.calls
    assert_one_notification(calls)
    steps = [call.body for call in calls[2:-1]]
    assert steps == sorted(steps)
    assert set(steps) <= {f"{DRAWING} {n}/4" for n in (1, 2, 3, 4)}
    final = calls[-1]
    assert (final.summary, final.body, final.actions) == ("speech2image", PROMPT, ACTIONS)
    assert final.hints == {"image-path": image.as_uri(), "urgency": 1}


def write_arg_script(tmp_path: Path) -> tuple[Path, Path]:
    """An opener that writes its argument to a file (atomically): (script, file)."""
    opened, script = tmp_path / "opened", tmp_path / "fake-xdg-open"
    script.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > {opened}.tmp && mv {opened}.tmp {opened}\n")
    script.chmod(0o755)
    return script, opened


def test_a_server_that_issues_new_ids_gets_the_newest_replaced_and_open_works(
    make_notifier: MakeNotifier, session_bus: str, image: Path, tmp_path: Path
) -> None:
    server = NotificationServer(session_bus, honour_replaces=False).start()
    try:
        script, opened = write_arg_script(tmp_path)
        notifier = make_notifier(opener=(str(script),))
        first = shown(notifier, server, wake())
        second = shown(notifier, server, accepted())
        final = shown(notifier, server, finished(image))
        assert [first.replaces_id, second.replaces_id, final.replaces_id] == [
            0,
            first.id,
            second.id,
        ]
        assert len({first.id, second.id, final.id}) == 3
        server.invoke_action(final.id)  # "Open" belongs to the id the server returned
        wait_until(opened.exists, what="the opener to run")
        assert opened.read_text() == str(image)
    finally:
        server.stop()


def test_a_rejection_replaces_listening(
    make_notifier: MakeNotifier, notification_server: NotificationServer
) -> None:
    notifier = make_notifier()
    shown(notifier, notification_server, wake())
    notifier.notify(rejected("toxic", flagged=("threat",)))
    notifier.close()
    calls = notification_server.calls
    assert_one_notification(calls)
    assert [(call.summary, call.body) for call in calls] == [
        ("speech2image", "Listening…"),
        ("speech2image: request rejected", "Not drawn: the request was flagged as threat"),
    ]
    assert notification_server.closed == []


@pytest.mark.parametrize(
    ("reason", "config"),
    [("busy", NotifyConfig(busy=False)), ("shutdown", NotifyConfig())],
    ids=["switched-off", "shutdown"],
)
def test_an_end_with_nothing_to_show_closes_listening(
    make_notifier: MakeNotifier,
    notification_server: NotificationServer,
    reason: str,
    config: NotifyConfig,
) -> None:
    notifier = make_notifier(config)
    listening = shown(notifier, notification_server, wake())
    notifier.notify(rejected(reason))
    notifier.close()
    assert notification_server.calls == [listening]
    assert notification_server.closed == [listening.id]


def test_progress_off_is_one_final_notification_per_request(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    notifier = make_notifier(NotifyConfig(progress=False))
    for event in (wake(), accepted(), *(progress(s) for s in (1, 2, 3, 4)), finished(image)):
        notifier.notify(event)
    notifier.notify(wake("b"))
    notifier.notify(rejected("busy", rid="b"))
    notifier.notify(wake("c"))
    notifier.notify(rejected("shutdown", rid="c"))
    notifier.close()
    calls = notification_server.calls
    assert [(call.body, call.replaces_id) for call in calls] == [
        (PROMPT, 0),
        ("Still working on earlier requests; please try again", 0),
    ]
    assert notification_server.closed == []


def test_a_typed_request_starts_at_drawing(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    notifier = make_notifier()
    shown(notifier, notification_server, accepted())
    notifier.notify(finished(image))
    notifier.close()
    calls = notification_server.calls
    assert_one_notification(calls)
    assert [call.body for call in calls] == [DRAWING, PROMPT]


def test_a_slow_server_gets_the_newest_state_not_every_update(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    """While "Listening…" is in flight, everything after it waits as one update."""
    notification_server.hold = threading.Event()
    notifier = make_notifier()
    try:
        listening = shown(notifier, notification_server, wake())  # the reply is held back
        for event in (accepted(), *(progress(s) for s in (1, 2, 3, 4)), finished(image)):
            notifier.notify(event)
    finally:
        notification_server.hold.set()
    notifier.close()
    calls = notification_server.calls
    assert [call.body for call in calls] == ["Listening…", PROMPT]
    assert calls[1].replaces_id == listening.id


def test_a_restarted_server_that_refuses_old_ids_gets_a_new_notification(
    make_notifier: MakeNotifier,
    session_bus: str,
    image: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bus stays, the server is new: the old id means nothing to it."""
    caplog.set_level(logging.WARNING)
    first = NotificationServer(session_bus).start()
    servers = [first]
    try:
        notifier = make_notifier()
        shown(notifier, first, wake())
        first.stop()
        servers.append(NotificationServer(session_bus, strict_replaces=True).start())
        notifier.notify(finished(image))
        notifier.close()
        (final,) = servers[1].calls
        assert (final.body, final.replaces_id) == (PROMPT, 0)
        assert our_warnings(caplog) == []
    finally:
        for server in servers:
            server.stop()


def test_after_the_bus_restarts_old_ids_are_not_replaced(
    own_bus: OwnBus, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    first = own_bus.server()
    notifier = DesktopNotifier(NotifyConfig())
    shown(notifier, first, wake())
    own_bus.session.restart()
    first.stop()
    second = own_bus.server()
    notifier.notify(finished(image))
    notifier.close()
    # The restart may beat the first reply to the notifier: then "Listening…" was
    # in flight and is shown again on the new bus (the test below makes that sure).
    *resent, final = second.calls
    assert [call.body for call in resent] in ([], ["Listening…"])
    assert final.body == PROMPT
    assert final.replaces_id == (resent[0].id if resent else 0)  # never the old bus's id
    assert our_warnings(caplog) == []


def test_a_notification_in_flight_when_the_bus_restarts_is_shown_on_the_new_one(
    own_bus: OwnBus, image: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bus goes while "Listening…" waits for its reply: the notifier reconnects
    once the bus and a server are back, sends it again, and stays on."""
    caplog.set_level(logging.WARNING)
    first = own_bus.server()
    first.hold = threading.Event()
    notifier = DesktopNotifier(NotifyConfig())
    shown(notifier, first, wake())  # recorded; its reply is held back
    own_bus.session.restart()  # the call in flight loses its connection; the socket is new
    first.hold.set()
    first.stop()
    second = own_bus.server()
    notifier.notify(finished(image))
    notifier.close()
    assert [call.body for call in second.calls] == ["Listening…", PROMPT]
    resent, final = second.calls
    assert (resent.replaces_id, final.replaces_id) == (0, resent.id)
    assert our_warnings(caplog) == []
