"""DesktopNotifier against a real dbus-daemon and a recording notification server.

Nothing is mocked: events go through the notifier's thread and dbus-fast to a
private bus (``session_bus``) and a D-Bus peer that records what it was asked to
show (``notification_server``).  No blind sleeps: tests wait on the recorder's
condition, on a file, or on ``close()``, which sends what is queued first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from speech2image.config import NotifyConfig
from speech2image.desktop.notify import DesktopNotifier
from speech2image.desktop.wording import rejected_body, request_for
from speech2image.events import Error, Event, ImageWritten, Rejected
from tests.e2e.dbus_session import NotificationServer, OwnBus, wait_until

pytestmark = pytest.mark.e2e

PROMPT = "a red fox sleeping under a cherry tree"
ACTIONS = ["default", "Open", "open", "Open"]
MakeNotifier = Callable[..., DesktopNotifier]


def image_event(path: Path, prompt: str = PROMPT) -> ImageWritten:
    return ImageWritten(
        id="2f1c0e9ab3d4", t=16.4, path=str(path), prompt=prompt, seed=42, model="sd", seconds=3.2
    )


def rejected(reason: Any, detail: str = "", flagged: tuple[str, ...] = ()) -> Rejected:
    return Rejected(id="9a0b5e8c1d77", t=30.2, reason=reason, detail=detail, flagged=flagged)


@pytest.fixture
def make_notifier(session_bus: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeNotifier]:
    """Build notifiers that find ``session_bus`` through the environment, as in real life."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session_bus)
    made: list[DesktopNotifier] = []

    def make(config: NotifyConfig | None = None, opener: Any = ("true",)) -> DesktopNotifier:
        # "true" rather than xdg-open, which test machines often lack
        made.append(DesktopNotifier(config or NotifyConfig(), opener))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "gallery" / "2f1c0e9ab3d4.png"
    path.parent.mkdir()
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


def send_all(notifier: DesktopNotifier, *events: Event) -> None:
    """Notify, then close: close() sends everything queued before it returns."""
    for event in events:
        notifier.notify(event)
    notifier.close()


def test_image_notification(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    send_all(make_notifier(), image_event(image))
    (call,) = notification_server.calls
    assert call.app_name == "speech2image"
    assert call.summary == "speech2image"
    assert call.body == PROMPT
    assert call.app_icon == str(image)
    assert call.hints == {"image-path": image.as_uri(), "urgency": 1}
    assert call.actions == ACTIONS
    assert call.timeout == 8000
    assert call.replaces_id == 0


@pytest.mark.parametrize("notification_server", [("body", "body-markup")], indirect=True)
def test_no_open_action_without_actions_capability(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    send_all(make_notifier(), image_event(image))
    (call,) = notification_server.calls
    assert call.actions == []
    assert call.hints["image-path"] == image.as_uri()


def test_open_action_runs_opener(
    make_notifier: MakeNotifier,
    notification_server: NotificationServer,
    image: Path,
    tmp_path: Path,
) -> None:
    opener, opened = write_arg_script(tmp_path)
    notifier = make_notifier(opener=(str(opener),))
    notifier.notify(image_event(image))
    (call,) = notification_server.wait_for_calls(1)
    notification_server.invoke_action(call.id, "default")
    wait_until(opened.exists, what="the opener to run")
    assert opened.read_text() == str(image)


def test_missing_opener_means_no_open_button_and_one_warning(
    make_notifier: MakeNotifier,
    notification_server: NotificationServer,
    image: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    notifier = make_notifier(opener=("/nonexistent/xdg-open",))
    send_all(notifier, image_event(image), image_event(image))
    assert [call.actions for call in notification_server.calls] == [[], []]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "xdg-open" in warnings[0].getMessage()


def test_markup_is_escaped_when_the_server_parses_it(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    send_all(make_notifier(), image_event(image, prompt="salt & pepper <b>bold</b>"))
    assert notification_server.calls[0].body == "salt &amp; pepper &lt;b&gt;bold&lt;/b&gt;"


@pytest.mark.parametrize(
    ("event", "body", "urgency"),
    [
        (
            rejected("toxic", "flagged by semantic", ("threat", "toxicity")),
            "Not drawn: the request was flagged as threat, toxicity",
            1,
        ),
        (rejected("empty", "no speech"), "Nothing was heard after the wake word", 1),
        (rejected("busy"), "Still working on earlier requests; please try again", 1),
        (
            rejected("error", "image generation failed"),
            "Something went wrong: image generation failed",
            2,
        ),
    ],
    ids=["toxic", "empty", "busy", "error"],
)
def test_rejected_bodies(
    make_notifier: MakeNotifier,
    notification_server: NotificationServer,
    event: Rejected,
    body: str,
    urgency: int,
) -> None:
    send_all(make_notifier(), event)
    (call,) = notification_server.calls
    assert call.summary == "speech2image: request rejected"
    assert call.body == body
    assert call.hints == {"urgency": urgency}
    assert call.actions == []
    assert call.app_icon == ""


def test_plain_error_events_are_not_shown(
    make_notifier: MakeNotifier, notification_server: NotificationServer
) -> None:
    error = Error(id="9a0b5e8c1d77", t=1.0, stage="image", message="CUDA out of memory")
    send_all(make_notifier(), error, rejected("error", "CUDA out of memory"))
    assert [call.body for call in notification_server.calls] == [
        "Something went wrong: CUDA out of memory"
    ]


@pytest.mark.parametrize("kind", ["image", "toxic", "empty", "busy", "error"])
def test_switched_off_kinds_send_nothing(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path, kind: str
) -> None:
    events: dict[str, tuple[Event, str]] = {
        "image": (image_event(image), PROMPT),
        "toxic": (
            rejected("toxic", flagged=("insult",)),
            "Not drawn: the request was flagged as insult",
        ),
        "empty": (rejected("empty"), "Nothing was heard after the wake word"),
        "busy": (rejected("busy"), "Still working on earlier requests; please try again"),
        "error": (rejected("error", "boom"), "Something went wrong: boom"),
    }
    config = NotifyConfig(**{kind: False})  # type: ignore[arg-type]
    send_all(make_notifier(config), *(event for event, _ in events.values()))
    expected = [body for name, (_, body) in events.items() if name != kind]
    assert [call.body for call in notification_server.calls] == expected


def test_disabled_sends_nothing(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    send_all(make_notifier(NotifyConfig(enabled=False)), image_event(image), rejected("busy"))
    assert notification_server.calls == []


def test_timeout_zero_never_expires(
    make_notifier: MakeNotifier, notification_server: NotificationServer, image: Path
) -> None:
    send_all(make_notifier(NotifyConfig(timeout=0.0)), image_event(image))
    assert notification_server.calls[0].timeout == 0


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_unreachable_bus_warns_once_and_keeps_going(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, image: Path
) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/dbus/bus")
    caplog.set_level(logging.WARNING)
    notifier = DesktopNotifier(NotifyConfig())
    send_all(notifier, image_event(image), rejected("busy"), image_event(image))
    notifier.notify(image_event(image))  # after close: still no exception
    (warning,) = _warnings(caplog)
    assert "/nonexistent/dbus/bus" in warning
    assert "notifications are off" in warning
    assert PROMPT not in caplog.text


def test_unset_bus_address_warns_once(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    image: Path,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no "bus" socket in it
    caplog.set_level(logging.WARNING)
    send_all(DesktopNotifier(NotifyConfig()), image_event(image), image_event(image))
    (warning,) = _warnings(caplog)
    assert "DBUS_SESSION_BUS_ADDRESS is not set" in warning


def test_no_notification_service_warns_once(
    make_notifier: MakeNotifier, caplog: pytest.LogCaptureFixture, image: Path
) -> None:
    caplog.set_level(logging.WARNING)
    send_all(make_notifier(), image_event(image), rejected("empty"), image_event(image))
    (warning,) = _warnings(caplog)
    assert "no org.freedesktop.Notifications service" in warning


def write_arg_script(tmp_path: Path) -> tuple[Path, Path]:
    """An opener that writes its argument to a file (atomically): (script, file)."""
    opened, script = tmp_path / "opened", tmp_path / "fake-xdg-open"
    script.write_text(f"#!/bin/sh\nprintf '%s' \"$1\" > {opened}.tmp && mv {opened}.tmp {opened}\n")
    script.chmod(0o755)
    return script, opened


def test_reconnects_after_the_bus_restarts(
    own_bus: OwnBus, caplog: pytest.LogCaptureFixture, image: Path, tmp_path: Path
) -> None:
    script, opened = write_arg_script(tmp_path)
    caplog.set_level(logging.WARNING)
    first = own_bus.server()
    notifier = DesktopNotifier(NotifyConfig(), opener=(str(script),))
    notifier.notify(image_event(image))
    (call,) = first.wait_for_calls(1)
    # Barrier: the opener runs only once the notifier has the Notify reply, so
    # the restart cannot catch that call in flight (which would be a different test).
    first.invoke_action(call.id)
    wait_until(opened.exists, what="the opener to run")
    own_bus.session.restart()
    first.stop()
    second = own_bus.server()
    send_all(notifier, rejected("busy"))
    assert [call.body for call in second.calls] == [
        "Still working on earlier requests; please try again"
    ]
    assert _warnings(caplog) == []


HEARD = "a rid fax in the snew"


def test_unclear_request_quotes_what_was_heard() -> None:
    """Said but unclear: the user sees the words Whisper made out, and says it again."""
    request = request_for(rejected("unclear", HEARD), NotifyConfig())
    assert request is not None
    assert request.summary == "speech2image: request rejected"
    assert request.body == f'Didn\'t catch that clearly: "{HEARD}". Please say it again.'
    assert request.urgency == 1
    assert request.image_path is None


def test_unclear_wording_without_words_and_with_too_many() -> None:
    assert rejected_body(rejected("unclear")) == "Didn't catch that clearly. Please say it again."
    body = rejected_body(rejected("unclear", " ".join(["a red fox"] * 60)))
    quoted = body.split('"')[1]
    assert len(quoted) <= 120
    assert quoted.endswith("\u2026")  # cut at a word, and says so
    assert quoted[:-1].split()[-1] in {"a", "red", "fox"}
    assert body.endswith('". Please say it again.')


def test_unclear_has_its_own_switch() -> None:
    assert request_for(rejected("unclear", HEARD), NotifyConfig(unclear=False)) is None
    assert request_for(rejected("empty"), NotifyConfig(unclear=False)) is not None
    assert request_for(rejected("unclear", HEARD), NotifyConfig(empty=False)) is not None


def test_unclear_notification_reaches_the_desktop(
    make_notifier: MakeNotifier, notification_server: NotificationServer
) -> None:
    send_all(make_notifier(), rejected("unclear", HEARD))
    (call,) = notification_server.calls
    assert call.body == f'Didn\'t catch that clearly: "{HEARD}". Please say it again.'
    assert call.hints == {"urgency": 1}
