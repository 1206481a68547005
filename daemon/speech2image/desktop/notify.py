"""Desktop notifications (``org.freedesktop.Notifications``): one per request, in place.

A request's notification is shown at the wake word ("Listening…"), updated while it is
drawn, and replaced (``replaces_id``) by the picture or by why there is none; what to
show when is decided in :mod:`.wording`. The pipeline's stages must never wait on the
desktop, and dbus-fast is asyncio-only, so one background thread owns an asyncio loop,
the one bus connection and all the per-request state; ``notify()`` only hands it the
event. Updates wait in a queue that holds at most one unsent progress update per
request (a slow server makes updates coalesce, not pile up). A missing bus is normal
(headless box): one WARNING, then retried every :data:`RETRY_S` s; a missing server
(restarting) is asked for again at the next notification; a connection that drops (the
bus restarting) gets a few seconds to come back, and the notification in flight is sent
again on the new one. Prompts are DEBUG only.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..config import NotifyConfig
from ..events import Event
from . import bus as dbus
from .opener import PictureOpener
from .wording import APP_NAME, Close, Pending, Request, Track, concerns, decide, supersedes

log = logging.getLogger(__name__)

RETRY_S = 60.0  # after a failure to connect, notify() is a no-op for this long
RECONNECT_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # after a drop: about 3 s to come back
CLOSE_TIMEOUT_S = 5.0
MAX_PENDING = 64  # a hung server must not make the queue grow without bound
MAX_REMEMBERED = 128  # notification ids and requests we still keep track of

_OPEN_KEYS = frozenset({"default", "open"})
_ACTIONS = ["default", "Open", "open", "Open"]


def _trim(remembered: dict[Any, Any]) -> None:
    """Forget the oldest entries: servers need not say when a notification is gone."""
    while len(remembered) > MAX_REMEMBERED:
        del remembered[next(iter(remembered))]


class DesktopNotifier:
    """Desktop notifications for pipeline events (an :class:`EventSink` too); ``opener``
    is run with ``locate(image path)`` when the user clicks "Open" (the path itself, or
    the web page's view of the image when the daemon serves one)."""

    def __init__(
        self,
        config: NotifyConfig,
        opener: Sequence[str] = ("xdg-open",),
        locate: Callable[[str], str] = str,
    ) -> None:
        self._config = config
        self._opener = PictureOpener(opener, locate)
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0  # monotonic; written by the loop thread, read by callers
        # Everything below belongs to the loop thread.
        self._pending: OrderedDict[Hashable, Pending] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._keys = itertools.count()  # queue keys for updates that never coalesce
        self._tracks: OrderedDict[str, Track] = OrderedDict()  # request id -> what it shows
        self._shown: OrderedDict[str, int] = OrderedDict()  # request id -> its notice's id
        self._bus: MessageBus | None = None
        self._caps: frozenset[str] = frozenset()
        self._off_warned = False
        self._images: dict[int, str] = {}  # notification id -> image path
        self._early: dict[int, None] = {}  # "Open" clicks that beat the Notify reply

    def notify(self, event: Event) -> None:
        """Hand ``event`` to the notification thread if it may change what is shown;
        never blocks or raises."""
        try:
            if not concerns(event, self._config) or time.monotonic() < self._retry_at:
                return
            loop = self._start()
            if loop is not None:
                loop.call_soon_threadsafe(self._on_event, event)
        except Exception as exc:  # a notification is never worth failing the pipeline for
            # the type only: an exception's text may quote the prompt (private speech)
            log.warning("could not queue a desktop notification (%s)", type(exc).__name__)
            log.debug("queueing the notification failed", exc_info=True)

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
            loop.call_soon_threadsafe(self._finish)
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
        loop.set_exception_handler(dbus.quiet_disconnects)
        try:
            loop.run_until_complete(self._consume())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _finish(self) -> None:
        self._closing = True
        self._wakeup.set()

    def _on_event(self, event: Event) -> None:
        """Decide what ``event`` changes (on the loop thread, which owns the tracks)."""
        request_id = event.id
        track = self._tracks.get(request_id) if request_id is not None else None
        decision = decide(event, self._config, track, time.monotonic())
        if request_id is not None and decision.track is not None:
            self._tracks[request_id] = decision.track
            self._tracks.move_to_end(request_id)
            _trim(self._tracks)
        if decision.update is not None:
            self._enqueue(Pending(request_id, decision.update, decision.ends))

    def _enqueue(self, item: Pending) -> None:
        """Queue ``item``, in place of its request's unsent progress update if any."""
        key: Hashable = item.request_id
        queued = self._pending.get(key)
        if queued is not None and supersedes(item, queued):
            self._pending[key] = item  # keeps its place: the request's updates stay in order
            return
        if key is None or queued is not None:
            key = ("unique", next(self._keys))
        if len(self._pending) >= MAX_PENDING:
            log.debug("notification dropped: %d already pending", MAX_PENDING)
            return
        self._pending[key] = item
        self._wakeup.set()

    async def _consume(self) -> None:
        """Send updates one at a time, in order, until close() and the queue is empty."""
        try:
            while True:
                while not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                _key, item = self._pending.popitem(last=False)
                try:
                    await self._deliver(item)
                except Exception as exc:
                    log.warning("desktop notification failed (%s)", type(exc).__name__)
                    log.debug("the notification failed", exc_info=True)
        finally:
            if self._bus is not None and self._bus.connected:
                self._bus.disconnect()  # only shuts the socket down: wait until it is closed
                closed = self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closed, 1.0)

    async def _deliver(self, item: Pending) -> None:
        if isinstance(item.update, Close):
            await self._close_notice(item.request_id)
        else:
            await self._send(item.update, item.request_id, item.ends)

    async def _send(self, request: Request, request_id: str | None, ends: bool) -> None:
        """Notify, reconnecting once when the connection turns out to have dropped."""
        for _attempt in range(2):
            bus = await self._connected_bus()
            if bus is None:
                return
            replaces = self._shown.get(request_id, 0) if request_id is not None else 0
            try:
                nid = await self._notify_replacing(bus, request, replaces)
            except DBusError as exc:  # an error reply: the bus is fine
                if exc.type != dbus.SERVICE_UNKNOWN:
                    log.warning("the notification server refused a notification: %s", exc.type)
                    log.debug("its reason: %s", exc.text)
                    return
                bus.disconnect()  # the next notification reconnects and re-reads the
                self._bus = None  # capabilities: a restarting server loses nothing later
                self._off(f"no {dbus.SERVICE} service on the session bus", retry_s=0.0)
                return
            except Exception as exc:
                if bus.connected:
                    log.warning("the notification server did not answer: %r", exc)
                    return
                log.info("lost the session bus connection; reconnecting")
                continue
            log.debug("notification %d shown: %s: %s", nid, request.summary, request.body)
            self._shown_as(request_id, nid, ends)
            if request.image_path is not None:
                self._remember(nid, request.image_path)
            return

    async def _notify_replacing(self, bus: MessageBus, request: Request, replaces: int) -> int:
        """``Notify`` in place of notice ``replaces`` (0: none); a server that refuses to
        replace it (it forgot the id) gets the notification as a new one."""
        args = self._notify_args(request, replaces)
        try:
            (nid,) = await dbus.call(bus, dbus.NOTIFICATIONS, "Notify", "susssasa{sv}i", *args)
        except DBusError as exc:
            if replaces == 0 or exc.type == dbus.SERVICE_UNKNOWN:
                raise
            log.debug("notification %d not replaced (%s); a new one instead", replaces, exc)
            args[1] = 0
            (nid,) = await dbus.call(bus, dbus.NOTIFICATIONS, "Notify", "susssasa{sv}i", *args)
        return int(nid)

    def _shown_as(self, request_id: str | None, nid: int, ends: bool) -> None:
        """Remember the request's notice id for its next update; forget it at the end
        (the id the server returned: some honour ``replaces_id``, some issue a new one)."""
        if request_id is None:
            return
        if ends:
            self._shown.pop(request_id, None)
            return
        self._shown[request_id] = nid
        self._shown.move_to_end(request_id)
        _trim(self._shown)

    async def _close_notice(self, request_id: str | None) -> None:
        """Close the request's progress notice: its end has no notification to replace it."""
        nid = self._shown.pop(request_id, None) if request_id is not None else None
        bus = self._bus
        if nid is None or bus is None or not bus.connected:
            return  # never shown, or shown on a connection (a server) that has gone since
        try:
            await dbus.call(bus, dbus.NOTIFICATIONS, "CloseNotification", "u", nid)
        except DBusError as exc:  # e.g. the user closed it already
            log.debug("notification %d could not be closed: %s", nid, exc)
        except Exception as exc:
            if bus.connected:
                log.warning("the notification server did not answer: %r", exc)
        else:
            log.debug("notification %d closed", nid)

    def _notify_args(self, request: Request, replaces: int = 0) -> list[Any]:
        urgency = Variant("y", request.urgency)
        hints: dict[str, Variant] = {"urgency": urgency}
        icon, actions = "", []
        if request.progress:  # the wake tone is the sound; updates must not chime
            hints["suppress-sound"] = Variant("b", True)
        if request.image_path is not None:
            icon = request.image_path
            hints["image-path"] = Variant("s", Path(request.image_path).as_uri())
            if "actions" in self._caps and self._opener.available():
                actions = list(_ACTIONS)
        body = request.body
        if "body-markup" in self._caps:  # or "<b>" and "&" in a prompt are markup
            body = html.escape(body, quote=False)
        expire_ms = round(self._config.timeout * 1000)
        return [APP_NAME, replaces, icon, request.summary, body, actions, hints, expire_ms]

    async def _connected_bus(self) -> MessageBus | None:
        """The live connection, or a new one; None while notifications are off.

        A new connection forgets every notification id: they belonged to a server
        that may have restarted since (a new bus has a new server).
        """
        dropped = False
        if self._bus is not None:
            if self._bus.connected:
                return self._bus
            self._bus, dropped = None, True  # reconnect now, not after RETRY_S
        elif time.monotonic() < self._retry_at:
            return None
        try:
            self._bus = await (self._reconnect() if dropped else self._connect())
        except dbus.UnavailableError as exc:
            self._off(str(exc), 0.0 if isinstance(exc, dbus.ServerMissingError) else RETRY_S)
            return None
        self._retry_at = 0.0
        for remembered in (self._shown, self._images, self._early):
            remembered.clear()
        if self._off_warned:
            self._off_warned = False
            log.info("desktop notifications are back on")
        return self._bus

    async def _reconnect(self) -> MessageBus:
        """Connect again after the bus dropped us, giving it a moment to come back.

        A dropped connection is usually a bus restarting, and the server with it: right
        after the drop the socket may be gone or the server not yet registered. Asking
        once would turn notifications off (and lose the one in flight) for a restart
        that takes milliseconds.
        """
        for delay in RECONNECT_DELAYS_S:
            try:
                return await self._connect()
            except dbus.UnavailableError as exc:
                log.debug("reconnecting to the session bus: %s; again in %.2f s", exc, delay)
            await asyncio.sleep(delay)
        return await self._connect()

    async def _connect(self) -> MessageBus:
        """Connect, learn the server's capabilities, and listen for its signals."""
        address = dbus.session_address()
        try:  # MessageBus() itself raises for a malformed address
            bus = MessageBus(bus_address=address, auth_timeout=dbus.CALL_TIMEOUT_S)
            await asyncio.wait_for(bus.connect(), dbus.CALL_TIMEOUT_S)
        except Exception as exc:
            raise dbus.UnavailableError(f"no session bus at {address} ({exc!r})") from exc
        try:
            (caps,) = await dbus.call(bus, dbus.NOTIFICATIONS, "GetCapabilities")
            self._caps = frozenset(caps)
            # "Open" clicks, and closed notices (a progress notice that expired or was
            # dismissed is shown anew, not replaced).
            bus.add_message_handler(self._on_message)
            rule = f"type='signal',interface='{dbus.SERVICE}',path='{dbus.PATH}'"
            await dbus.call(bus, dbus.DBUS, "AddMatch", "s", rule)
        except Exception as exc:
            bus.disconnect()
            missing = f"no {dbus.SERVICE} service on the session bus ({exc})"
            raise dbus.ServerMissingError(missing) from exc
        log.debug("notification server capabilities: %s", sorted(self._caps))
        return bus

    def _off(self, what: str, retry_s: float = RETRY_S) -> None:
        """Turn notifications off for ``retry_s``, with one WARNING per outage."""
        self._retry_at = time.monotonic() + retry_s
        if self._off_warned:
            log.debug("desktop notifications still off: %s", what)
            return
        self._off_warned = True
        log.warning("desktop notifications are off: %s; retrying after %.0f s", what, retry_s)

    def _remember(self, nid: int, path: str) -> None:
        self._images[nid] = path
        _trim(self._images)
        if nid in self._early:
            del self._early[nid]
            self._opener.open(path)

    def _on_message(self, message: Message) -> None:
        """Handle ActionInvoked/NotificationClosed; other apps' ids are ignored."""
        if message.message_type != MessageType.SIGNAL or message.interface != dbus.SERVICE:
            return
        if message.member == "ActionInvoked" and message.signature == "us":
            nid, key = message.body
            if key not in _OPEN_KEYS:
                return
            path = self._images.get(nid)
            if path is not None:
                self._opener.open(path)
            else:
                # The signal can arrive in the same read as the Notify reply,
                # before _send() has resumed and remembered the id.
                self._early[nid] = None
                _trim(self._early)
        elif message.member == "NotificationClosed" and message.signature == "uu":
            nid = message.body[0]
            self._images.pop(nid, None)
            for request_id in [r for r, shown in self._shown.items() if shown == nid]:
                del self._shown[request_id]
