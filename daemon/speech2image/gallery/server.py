"""Serving the page: uvicorn in a thread, the index's observer, TLS and the token.

Used two ways: ``speech2image gallery`` (standalone, browse-only) and the daemon with
``[gallery] serve = true`` (with :class:`talk.Talk`). Either way the server runs in
its own thread with its own event loop, so the caller's main thread keeps its
signal handling (uvicorn's own would re-raise SIGTERM after shutdown), and
:meth:`GalleryServer.stop` ends it within a couple of seconds even with pages open
(their event streams are cut, and they reconnect to the next server).

We bind the socket ourselves: a port already taken is a clear error before anything
else starts, and ``port = 0`` tells us which port the system chose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import GalleryConfig
from .access import (
    AccessMiddleware,
    TlsFiles,
    ensure_certificate,
    is_loopback,
    load_or_create_token,
    policy_for,
    token_file,
)
from .live import EventHub
from .talk import Talk
from .web import Gallery, create_app, quote_id

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0
PURGE_EVERY_S = 24 * 3600.0


class GalleryServeError(Exception):
    """The page cannot be served (port taken, address not on this machine, bad cert)."""


@dataclass(frozen=True)
class ServeOptions:
    root: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    cert: str = ""
    key: str = ""
    config_dir: Path | None = None  # where a generated token and certificate are kept

    @classmethod
    def from_config(
        cls,
        config: GalleryConfig,
        *,
        root: Path | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> ServeOptions:
        """The table's settings, with what the command line gave instead."""
        return cls(
            root=root if root is not None else Path(config.dir),
            host=host if host is not None else config.host,
            port=port if port is not None else config.port,
            token=config.token,
            cert=config.cert,
            key=config.key,
        )

    @property
    def open_to_network(self) -> bool:
        return not is_loopback(self.host)


def local_url(host: str, port: int, secure: bool) -> str:
    """The address to open on this machine (a wildcard bind is reached over loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"{'https' if secure else 'http'}://{host}:{port}/"


def network_url(host: str, port: int) -> str:
    """The address another machine (a phone) types: this machine's address on the
    network for a wildcard bind, found without sending anything."""
    if host in ("0.0.0.0", "::"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: a route lookup, no packet
            host = probe.getsockname()[0]
        except OSError:
            host = socket.gethostname()
        finally:
            probe.close()
    return local_url(host, port, secure=True)


def detail_url(base: str, root: Path, image: Path) -> str | None:
    """The page's detail view of ``image`` (what a notification's "Open" opens)."""
    try:
        image_id = image.resolve().relative_to(root.expanduser().resolve()).as_posix()
    except ValueError:
        return None
    return f"{base}#image={quote_id(image_id)}"


class GalleryServer:
    def __init__(
        self, options: ServeOptions, *, talk: Talk | None = None, hub: EventHub | None = None
    ) -> None:
        self.options = options
        self.hub = hub or EventHub()
        self.gallery = Gallery.open(options.root)
        self._talk = talk
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop_purging = threading.Event()
        self.token: str | None = None
        self.url = ""

    # ---------------------------------------------------------------- set-up
    def prepare_access(self) -> TlsFiles | None:
        if not self.options.open_to_network:
            return None
        log.warning(
            "the gallery listens on %s, reachable from other machines: every request needs "
            "its access token (`speech2image gallery --print-url` prints the address with it)"
            ", and it is served over HTTPS",
            self.options.host,
        )
        config_dir = self.options.config_dir or token_file().parent
        self.token = load_or_create_token(self.options.token, config_dir / "gallery-token")
        cert = Path(self.options.cert).expanduser() if self.options.cert else None
        key = Path(self.options.key).expanduser() if self.options.key else None
        return ensure_certificate(cert, key, config_dir, [self.options.host])

    def _bind(self) -> socket.socket:
        host, port = self.options.host, self.options.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only for sockets that say TCP, and
        # without that every keep-alive response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise GalleryServeError(_bind_problem(host, port, exc)) from exc
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Bind, index the folder, serve in a thread; the URL, once it answers."""
        import uvicorn

        tls = self.prepare_access()
        sock = self._bind()
        port = sock.getsockname()[1]
        self.url = local_url(self.options.host, port, tls is not None)
        policy = policy_for(self.options.host, port, self.token, secure=tls is not None)
        app = AccessMiddleware(create_app(self.gallery, self.hub, self._talk), policy)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,  # URLs name images and may carry the token: not for logs
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            lifespan="on",
        )
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # "Started server process"
        self._server = uvicorn.Server(config)
        self.gallery.trash.purge()
        self.gallery.index.start()
        log.info("gallery: %d images indexed in %s", len(self.gallery.index), self.gallery.root)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="gallery-web", daemon=True
        )
        self._thread.start()
        self._wait_started()
        threading.Thread(target=self._purge_daily, name="gallery-trash", daemon=True).start()
        log.info("gallery: serving %s%s", self.url, "" if self._talk else " (browse-only)")
        return self.url

    def _serve(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except Exception:  # the page is gone; the daemon itself carries on
            log.exception("the gallery web server stopped")
        finally:
            sock.close()

    def _wait_started(self) -> None:
        assert self._thread is not None
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > START_TIMEOUT_S:
                self.stop()
                raise GalleryServeError("the gallery web server did not start (see the log)")
            threading.Event().wait(0.02)
            waited += 0.02

    def _purge_daily(self) -> None:
        while not self._stop_purging.wait(PURGE_EVERY_S):
            try:
                self.gallery.trash.purge()
            except OSError as exc:
                log.warning("could not empty old items from the gallery's trash: %s", exc)

    def stop(self) -> None:
        """Stop serving (open pages' streams are cut) and the observer; idempotent."""
        self._stop_purging.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(1.0)
        self.gallery.index.stop()
        self.gallery.state.close()

    def address_with_token(self) -> str:
        return self.url if self.token is None else f"{self.url}?token={self.token}"


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another speech2image gallery or "
            "daemon?); choose another with --port or [gallery] port, or stop the other one"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; use 127.0.0.1 or 0.0.0.0"
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges; use a port above 1023"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
