"""The command line's side of the D-Bus control: ``speech2image pause|resume|status|listen``.

Each command is one method call on a fresh connection: a command exits at once, so
there is nothing to keep. Failures are said in words a user can act on (no bus, no
daemon, the daemon's own refusal), never as a D-Bus error name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from . import BUS_NAME, ERROR_FAILED, INTERFACE, NO_BUS, OBJECT_PATH, session_address

EX_FAILURE = 1
CALL_TIMEOUT_S = 5.0

NO_DAEMON = (
    "no speech2image daemon is running on the session bus; start it with "
    "`speech2image run` or `systemctl --user start speech2image`"
)
NO_SESSION_BUS = (
    f"no D-Bus session bus ({NO_BUS}): the daemon is controlled over the desktop "
    "session's bus, so run this from within that session"
)
_NOT_RUNNING = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)
_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
STATUS_ORDER = ("state", "detail", "paused", "queue", "last_image", "microphone")


class ControlError(Exception):
    """The call did not do what was asked; the message says why, for a user."""


def call(method: str, address: str | None = None, timeout: float = CALL_TIMEOUT_S) -> Any:
    """Call ``method`` (``Pause``, ``Resume``, ``ListenNow``, ``Status``) on the daemon.

    ``Status`` returns a plain dict (values unwrapped from their variants), the others
    None. Raises :class:`ControlError`. Not for use inside a running event loop: it
    runs its own, for one call.
    """
    address = address or session_address()
    if address is None:
        raise ControlError(NO_SESSION_BUS)
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(_call(method, address), timeout))
    except TimeoutError:
        raise ControlError(
            f"no answer to {method} within {timeout:.0f} s: the daemon or the session bus "
            "is not responding"
        ) from None
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _call(method: str, address: str) -> Any:
    try:
        bus = await MessageBus(bus_address=address).connect()
    except Exception as exc:
        raise ControlError(f"cannot reach the D-Bus session bus at {address}: {exc}") from exc
    try:
        message = Message(BUS_NAME, OBJECT_PATH, INTERFACE, method)
        reply = await bus.call(message)
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):  # also collects the EOF of the hang-up
            await asyncio.wait_for(bus.wait_for_disconnect(), 1.0)  # type: ignore[no-untyped-call]
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise ControlError(error_text(method, reply.error_name or "", text))
    if method == "Status":
        return {str(key): variant.value for key, variant in reply.body[0].items()}
    return None


def error_text(method: str, name: str, text: str) -> str:
    """A D-Bus error reply in words: why the daemon said no, or why nobody answered."""
    if name in _NOT_RUNNING:
        return NO_DAEMON
    if name == ERROR_FAILED:
        return text
    if name == _UNKNOWN_METHOD:
        return f"the running daemon does not know {method} (is it an older version?)"
    return f"{method} failed: {text or name}"


def format_status(status: Mapping[str, Any]) -> str:
    """The status as aligned ``key  value`` lines, known keys first; yes/no for flags."""
    keys = [k for k in STATUS_ORDER if k in status]
    keys += sorted(k for k in status if k not in STATUS_ORDER)
    width = max((len(k) for k in keys), default=0)
    return "\n".join(f"{k.replace('_', ' '):<{width}}  {_shown(status[k])}" for k in keys)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value == "":
        return "none"
    return str(value)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pause``, ``resume``, ``status`` and ``listen``.

    Each exits 0, or prints ``speech2image: <why>`` to stderr and exits 1: no daemon,
    no bus and a refusal alike, since a script or a keyboard shortcut can only act on
    "it did not happen" (the message says the rest).
    """
    pause = sub.add_parser("pause", help="pause the running daemon (it closes the microphone)")
    pause.set_defaults(command=cmd_pause)
    resume = sub.add_parser("resume", help="resume listening for the wake word")
    resume.set_defaults(command=cmd_resume)
    status = sub.add_parser("status", help="what the running daemon is doing now")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(command=cmd_status)
    listen = sub.add_parser(
        "listen", help="listen for a request now, as if the wake word was heard (for a shortcut)"
    )
    listen.set_defaults(command=cmd_listen)


def cmd_pause(_args: argparse.Namespace) -> int:
    return _simple("Pause", "paused: the microphone is closed until `speech2image resume`")


def cmd_resume(_args: argparse.Namespace) -> int:
    return _simple("Resume", "resumed")


def cmd_listen(_args: argparse.Namespace) -> int:
    return _simple("ListenNow", "listening: say what you want to see")


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = call("Status")
    except ControlError as exc:
        return _fail(exc)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _simple(method: str, done: str) -> int:
    try:
        call(method)
    except ControlError as exc:
        return _fail(exc)
    print(done)
    return 0


def _fail(exc: ControlError) -> int:
    print(f"speech2image: {exc}", file=sys.stderr)
    return EX_FAILURE
