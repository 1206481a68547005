"""The daemon behind the gallery page: its requests, its live state, its events.

The page is one more source of requests, like the microphone: a clip recorded in the
browser or a typed prompt becomes a request (source ``web``) in the daemon's one
ledger and joins its one queue, so the wake word and the page share the models and
a full queue answers "busy" to both. This module is the only one that knows both
the gallery's web layer and the daemon.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .gallery.access import AccessError
from .gallery.live import DaemonEvents, EventHub
from .gallery.pagestate import PageStateError
from .gallery.server import GalleryServeError, GalleryServer, ServeOptions
from .gallery.talk import BusyError
from .pcm import Frame
from .request import Request

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

ORIGIN = "gallery page"


class DaemonTalk:
    """:class:`gallery.talk.Talk` for a running daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def speak(self, audio: Frame) -> str:
        return self._submit(Request.start("web", ORIGIN), audio)

    def type(self, prompt: str) -> str:
        return self._submit(Request.start("web", ORIGIN, prompt=prompt), None)

    def state(self) -> tuple[str, str]:
        return self._daemon.live.current

    def _submit(self, request: Request, audio: Frame | None) -> str:
        if not self._daemon.submit(request, audio):
            raise BusyError(request.id)
        return request.id


class PageError(Exception):
    """The page cannot be served; the daemon exits as for a config error."""


class ServedPage:
    """``[gallery] serve = true``: the page, served from the daemon's process.

    Built in two steps because the daemon needs the page's event sink at
    construction (:attr:`events`), and the page needs the constructed daemon."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._hub = EventHub()
        self.events = DaemonEvents(self._hub, Path(config.gallery.dir).expanduser().resolve())
        self._server: GalleryServer | None = None

    def start(self, daemon: Daemon) -> str:
        """Serve; its URL, or :class:`PageError` saying why not (port taken, bad cert)."""
        daemon.live.subscribe(self.events.state)
        options = ServeOptions.from_config(self._config.gallery)
        try:
            self._server = GalleryServer(options, talk=DaemonTalk(daemon), hub=self._hub)
            return self._server.start()
        except (GalleryServeError, AccessError, PageStateError) as exc:
            raise PageError(f"the gallery page cannot be served: {exc}") from exc

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
