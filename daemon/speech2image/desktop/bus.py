"""The session bus, at the level the notifier needs it: find it, call a method.

Kept apart from :mod:`.notify` (what to send when) because these few pieces are about
D-Bus itself: where the session bus is when only systemd's socket says so, a method
call that cannot hang on a silent peer, and asyncio's view of a dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus

from .. import sessionbus

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0  # dbus-fast's MessageBus.call() has no timeout of its own
SERVICE = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"

Target = tuple[str, str, str]  # destination, object path, interface
NOTIFICATIONS: Target = (SERVICE, PATH, SERVICE)
DBUS: Target = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


class UnavailableError(Exception):
    """No bus or no notification service: notifications are off for a while."""


class ServerMissingError(UnavailableError):
    """The bus is there, no server owns the name (yet): ask again at the next notice."""


def session_address() -> str:
    """The session bus address, or :class:`UnavailableError` when there is none."""
    address = sessionbus.session_address()
    if address is None:
        raise UnavailableError("DBUS_SESSION_BUS_ADDRESS is not set, nor $XDG_RUNTIME_DIR/bus")
    return address


async def call(bus: MessageBus, to: Target, member: str, sig: str = "", *body: Any) -> list[Any]:
    """Call a method; error replies raise (dbus-fast returns them), a silent peer times out."""
    message = Message(*to, member, signature=sig, body=list(body))
    reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT_S)
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise DBusError(reply.error_name or "unknown error", text, reply)
    return list(reply.body)


def quiet_disconnects(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """dbus-fast drops the future of a write that fails when the bus goes away, and asyncio
    would log each one as an ERROR "Future exception was never retrieved"."""
    if isinstance(context.get("exception"), OSError | EOFError):
        log.debug("session bus: %s: %r", context.get("message"), context.get("exception"))
    else:
        loop.default_exception_handler(context)
