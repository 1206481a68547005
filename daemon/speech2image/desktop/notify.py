"""Desktop notifications (``org.freedesktop.Notifications``): an image is ready, or why not.

The pipeline's stages must never wait on the desktop, and dbus-fast is asyncio-only, so
one background thread owns an asyncio loop and the one bus connection; ``notify()`` only
decides *what* to show and queues it. A missing bus or notification service is normal
(headless box, no session): one WARNING, then notifications are off, retried at most
every :data:`RETRY_S` s. Prompts are private: only DEBUG logs show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..config import NotifyConfig
from ..events import Event, ImageWritten, Rejected

log = logging.getLogger(__name__)

APP_NAME = "speech2image"
RETRY_S = 60.0  # after a failure to connect, notify() is a no-op for this long
CALL_TIMEOUT_S = 5.0  # dbus-fast's MessageBus.call() has no timeout of its own
CLOSE_TIMEOUT_S = 5.0
MAX_PENDING = 64  # a hung server must not make the queue grow without bound
MAX_REMEMBERED = 128  # notification ids whose "Open" action we still honour
HEARD_CHARS = 120  # of an unclear request's words, quoted back in its notification

_SERVICE = "org.freedesktop.Notifications"
_PATH = "/org/freedesktop/Notifications"
_OPEN_KEYS = frozenset({"default", "open"})
_ACTIONS = ["default", "Open", "open", "Open"]
_URGENCY_NORMAL = 1
_URGENCY_CRITICAL = 2


@dataclass(frozen=True)
class Request:
    """One notification to show; ``image_path`` (absolute) makes it an image notice."""

    summary: str
    body: str
    urgency: int
    image_path: str | None = None


def request_for(event: Event, config: NotifyConfig) -> Request | None:
    """What to show for ``event``, or None; pure, so the wording is easy to test.

    Plain ``Error`` events are ignored: a failed request also gets a ``rejected``
    (reason ``error``) event, and one notification per request is enough.
    """
    if not config.enabled:
        return None
    if isinstance(event, ImageWritten):
        if not config.image:
            return None
        return Request(APP_NAME, event.prompt, _URGENCY_NORMAL, os.path.abspath(event.path))
    if isinstance(event, Rejected):
        if not getattr(config, event.reason, False):  # [notify] has one switch per reason
            return None
        urgency = _URGENCY_CRITICAL if event.reason == "error" else _URGENCY_NORMAL
        return Request(f"{APP_NAME}: request rejected", rejected_body(event), urgency)
    return None


_FIXED_BODIES = {
    "empty": "Nothing was heard after the wake word",
    "busy": "Still working on earlier requests; please try again",
}


def rejected_body(event: Rejected) -> str:
    """Why no image came, in plain words. Never the (private, maybe toxic) prompt, but
    for ``unclear`` the words Whisper made out: the user sees what went wrong, and
    says it again. ``unsupported`` names the language, not the words."""
    if event.reason == "unclear":
        return _unclear_body(event.detail)
    if event.reason == "toxic":
        labels = ", ".join(label.replace("_", " ") for label in event.flagged)
        if labels:
            return f"Not drawn: the request was flagged as {labels}"
        return "Not drawn: the request was flagged by moderation"
    if event.reason in _FIXED_BODIES:
        return _FIXED_BODIES[event.reason]
    prefix = "Not drawn" if event.reason == "unsupported" else "Something went wrong"
    return f"{prefix}: {event.detail}" if event.detail else prefix


def _unclear_body(heard: str) -> str:
    heard = _shorten(" ".join(heard.split()))
    quoted = f': "{heard}"' if heard else ""
    return f"Didn't catch that clearly{quoted}. Please say it again."


def _shorten(text: str, limit: int = HEARD_CHARS) -> str:
    """At most ``limit`` characters, cut at a word: a notification is no transcript."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _trim(remembered: dict[int, Any]) -> None:
    """Forget the oldest ids: servers need not say when a notification is gone."""
    while len(remembered) > MAX_REMEMBERED:
        del remembered[next(iter(remembered))]


def _quiet_disconnects(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """dbus-fast drops the future of a write that fails when the bus goes away, and asyncio
    would log each one as an ERROR "Future exception was never retrieved"."""
    if isinstance(context.get("exception"), OSError | EOFError):
        log.debug("session bus: %s: %r", context.get("message"), context.get("exception"))
    else:
        loop.default_exception_handler(context)


class _UnavailableError(Exception):
    """No bus or no notification service: notifications are off for a while."""


def _session_address() -> str:
    """The session bus address; systemd user sessions may only provide the socket."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime, "bus").exists():
        return f"unix:path={Path(runtime, 'bus')}"
    raise _UnavailableError("DBUS_SESSION_BUS_ADDRESS is not set, nor $XDG_RUNTIME_DIR/bus")


_Target = tuple[str, str, str]  # destination, object path, interface
_NOTIFICATIONS: _Target = (_SERVICE, _PATH, _SERVICE)
_DBUS: _Target = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


async def _call(bus: MessageBus, to: _Target, member: str, sig: str = "", *body: Any) -> list[Any]:
    """Call a method; error replies raise (dbus-fast returns them), a silent peer times out."""
    message = Message(*to, member, signature=sig, body=list(body))
    reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT_S)
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise DBusError(reply.error_name or "unknown error", text, reply)
    return list(reply.body)


class DesktopNotifier:
    """Desktop notifications for pipeline events (an :class:`EventSink` too); ``opener``
    is run with the image path when the user clicks "Open"."""

    def __init__(self, config: NotifyConfig, opener: Sequence[str] = ("xdg-open",)) -> None:
        self._config = config
        self._opener = tuple(opener)
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0  # monotonic; written by the loop thread, read by callers
        # Everything below belongs to the loop thread.
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._bus: MessageBus | None = None
        self._caps: frozenset[str] = frozenset()
        self._off_warned = False
        self._opener_warned = False
        self._images: dict[int, str] = {}  # notification id -> image path
        self._early: dict[int, None] = {}  # "Open" clicks that beat the Notify reply

    def notify(self, event: Event) -> None:
        """Queue a notification for ``event`` if it wants one; never blocks or raises."""
        try:
            request = request_for(event, self._config)
            if request is None or time.monotonic() < self._retry_at:
                return
            loop = self._start()
            if loop is not None:
                loop.call_soon_threadsafe(self._enqueue, request)
        except Exception:  # a notification is never worth failing the pipeline for
            log.warning("could not queue a desktop notification", exc_info=True)

    emit = notify  # so a DesktopNotifier can sit in a FanOut of event sinks

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued (for at most ``timeout`` s), then disconnect."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, None)
        except RuntimeError:  # the loop is already gone
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the notification thread did not stop within %.1f s", timeout)

    def _start(self) -> asyncio.AbstractEventLoop | None:
        """The loop, starting its thread on first use; None once closed."""
        with self._lock:
            if self._closed:
                return None
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._run, args=(self._loop,), name="notify", daemon=True
                )
                self._thread.start()
            return self._loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_disconnects)
        try:
            loop.run_until_complete(self._consume())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _enqueue(self, request: Request) -> None:
        if self._queue.qsize() >= MAX_PENDING:
            log.debug("notification dropped: %d already pending", MAX_PENDING)
            return
        self._queue.put_nowait(request)

    async def _consume(self) -> None:
        """Send requests one at a time, in order, until close() queues None."""
        try:
            while (request := await self._queue.get()) is not None:
                try:
                    await self._send(request)
                except Exception:
                    log.warning("desktop notification failed", exc_info=True)
        finally:
            if self._bus is not None and self._bus.connected:
                self._bus.disconnect()  # only shuts the socket down: wait until it is closed
                closed = self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closed, 1.0)

    async def _send(self, request: Request) -> None:
        """Notify, reconnecting once when the connection turns out to have dropped."""
        for _attempt in range(2):
            bus = await self._connected_bus()
            if bus is None:
                return
            try:
                args = self._notify_args(request)
                (nid,) = await _call(bus, _NOTIFICATIONS, "Notify", "susssasa{sv}i", *args)
            except DBusError as exc:  # an error reply: the bus is fine
                if exc.type != "org.freedesktop.DBus.Error.ServiceUnknown":
                    log.warning("the notification server refused a notification: %s", exc)
                    return
                bus.disconnect()
                self._bus = None  # reconnect (and re-read capabilities) after RETRY_S
                self._off(f"no {_SERVICE} service on the session bus")
                return
            except Exception as exc:
                if bus.connected:
                    log.warning("the notification server did not answer: %r", exc)
                    return
                log.info("lost the session bus connection; reconnecting")
                continue
            log.debug("notification %d shown: %s: %s", nid, request.summary, request.body)
            if request.image_path is not None:
                self._remember(int(nid), request.image_path)
            return

    def _notify_args(self, request: Request) -> list[Any]:
        hints: dict[str, Variant] = {"urgency": Variant("y", request.urgency)}
        icon, actions = "", []
        if request.image_path is not None:
            icon = request.image_path
            hints["image-path"] = Variant("s", Path(request.image_path).as_uri())
            if "actions" in self._caps and self._opener_available():
                actions = list(_ACTIONS)
        body = request.body
        if "body-markup" in self._caps:  # or "<b>" and "&" in a prompt are markup
            body = html.escape(body, quote=False)
        expire_ms = round(self._config.timeout * 1000)
        return [APP_NAME, 0, icon, request.summary, body, actions, hints, expire_ms]

    async def _connected_bus(self) -> MessageBus | None:
        """The live connection, or a new one; None while notifications are off."""
        if self._bus is not None:
            if self._bus.connected:
                return self._bus
            self._bus = None  # dropped: reconnect now, not after RETRY_S
        elif time.monotonic() < self._retry_at:
            return None
        try:
            self._bus = await self._connect()
        except _UnavailableError as exc:
            self._off(str(exc))
            return None
        self._retry_at = 0.0
        if self._off_warned:
            self._off_warned = False
            log.info("desktop notifications are back on")
        return self._bus

    async def _connect(self) -> MessageBus:
        """Connect, learn the server's capabilities, and listen for "Open" clicks."""
        address = _session_address()
        try:  # MessageBus() itself raises for a malformed address
            bus = MessageBus(bus_address=address, auth_timeout=CALL_TIMEOUT_S)
            await asyncio.wait_for(bus.connect(), CALL_TIMEOUT_S)
        except Exception as exc:
            raise _UnavailableError(f"no session bus at {address} ({exc!r})") from exc
        try:
            (caps,) = await _call(bus, _NOTIFICATIONS, "GetCapabilities")
            self._caps = frozenset(caps)
            if "actions" in self._caps:
                bus.add_message_handler(self._on_message)
                rule = f"type='signal',interface='{_SERVICE}',path='{_PATH}'"
                await _call(bus, _DBUS, "AddMatch", "s", rule)
        except Exception as exc:
            bus.disconnect()
            raise _UnavailableError(f"no {_SERVICE} service on the session bus ({exc})") from exc
        log.debug("notification server capabilities: %s", sorted(self._caps))
        return bus

    def _off(self, what: str) -> None:
        """Turn notifications off for RETRY_S, with one WARNING per outage."""
        self._retry_at = time.monotonic() + RETRY_S
        if self._off_warned:
            log.debug("desktop notifications still off: %s", what)
            return
        self._off_warned = True
        log.warning("desktop notifications are off: %s; retrying every %.0f s", what, RETRY_S)

    def _remember(self, nid: int, path: str) -> None:
        self._images[nid] = path
        _trim(self._images)
        if nid in self._early:
            del self._early[nid]
            self._open(path)

    def _on_message(self, message: Message) -> None:
        """Handle ActionInvoked/NotificationClosed; other apps' ids are ignored."""
        if message.message_type != MessageType.SIGNAL or message.interface != _SERVICE:
            return
        if message.member == "ActionInvoked" and message.signature == "us":
            nid, key = message.body
            if key not in _OPEN_KEYS:
                return
            path = self._images.get(nid)
            if path is not None:
                self._open(path)
            else:
                # The signal can arrive in the same read as the Notify reply,
                # before _send() has resumed and remembered the id.
                self._early[nid] = None
                _trim(self._early)
        elif message.member == "NotificationClosed" and message.signature == "uu":
            self._images.pop(message.body[0], None)

    def _opener_available(self) -> bool:
        """Offer "Open" only if it can work; say so once if it cannot."""
        available = shutil.which(self._opener[0]) is not None
        if not available and not self._opener_warned:
            self._opener_warned = True
            log.warning("%s not found: images cannot be opened from notifications", self._opener[0])
        return available

    def _open(self, path: str) -> None:
        """Run the opener detached (own session, no shell) and reap it in a thread."""
        try:
            command, devnull = [*self._opener, path], subprocess.DEVNULL
            process = subprocess.Popen(
                command, stdin=devnull, stdout=devnull, stderr=devnull, start_new_session=True
            )
        except FileNotFoundError:
            self._opener_available()
            return
        except OSError as exc:
            log.warning("could not run %s: %s", self._opener[0], exc)
            return
        threading.Thread(target=process.wait, name="notify-opener", daemon=True).start()
