"""The Wyoming service Home Assistant adds: ASR and handle over the daemon's pipeline.

``speech2image serve`` and the daemon's ``[wyoming]`` table both run one of these. It
is built on the ``wyoming`` library's ``AsyncServer`` (tcp:// and unix://) with one
:class:`~.handler.ServiceHandler` per connection, as rhasspy's own services are, on an
asyncio loop in a thread of its own, so the daemon's threads never wait for a client.

Wyoming has no authentication: anyone who can connect can make this machine draw and
fill its gallery. So the service listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from wyoming.server import AsyncEventHandler, AsyncServer, AsyncTcpServer

from ..configcheck import is_loopback
from .handler import Connections, ServiceHandler, Shared
from .info import Limits, build_info
from .pipeline import Pipeline

log = logging.getLogger(__name__)

DEFAULT_URI = "tcp://127.0.0.1:10650"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
WILDCARDS = ("", "0.0.0.0", "::")

__all__ = ["DEFAULT_URI", "WyomingError", "WyomingService", "build_info", "parse_uri"]


class WyomingError(Exception):
    """The service cannot start; the message names the URI and the fix."""


@dataclass(frozen=True)
class Endpoint:
    """Where to listen, as parsed from a ``tcp://`` or ``unix://`` URI."""

    uri: str
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""


def parse_uri(uri: str, allow_network: bool) -> Endpoint:
    """The endpoint, or a :class:`WyomingError` saying what is wrong and how to fix it.

    A TCP host other than loopback needs ``allow_network``: the protocol has no
    authentication, so serving the network is a choice, never an accident.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "unix":
        if not parsed.path:
            raise WyomingError(f"{uri}: a unix:// URI needs a path, e.g. unix:///run/s2i.sock")
        return Endpoint(uri, "unix", path=parsed.path)
    if parsed.scheme != "tcp":
        raise WyomingError(f"{uri}: use tcp://HOST:PORT or unix:///PATH (e.g. {DEFAULT_URI})")
    try:
        port = parsed.port
    except ValueError as error:
        raise WyomingError(f"{uri}: the port must be 0-65535 (e.g. {DEFAULT_URI})") from error
    if parsed.hostname is None or port is None:
        raise WyomingError(f"{uri}: a tcp:// URI needs a host and a port (e.g. {DEFAULT_URI})")
    host = parsed.hostname
    if not is_loopback(host) and not allow_network:
        raise WyomingError(
            f"{uri}: Wyoming has no authentication: anyone who can reach {host} could "
            "make this machine draw and fill its gallery. Listen on 127.0.0.1, or pass "
            "--allow-network / set [wyoming] allow_network = true to serve the network "
            "on purpose"
        )
    return Endpoint(uri, "tcp", host=host, port=port)


def _unix_in_use(path: str) -> bool:
    """Whether a live server already answers on ``path`` (the library would unlink it)."""
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _cannot_listen(endpoint: Endpoint, error: OSError) -> WyomingError:
    if error.errno == errno.EADDRINUSE:
        where = f"port {endpoint.port}" if endpoint.scheme == "tcp" else endpoint.path
        return WyomingError(
            f"{endpoint.uri}: {where} is taken (another speech2image serve?); stop that "
            "program or choose another with --uri / [wyoming] uri"
        )
    return WyomingError(f"{endpoint.uri}: cannot listen there: {error.strerror or error}")


class WyomingService:
    """The server, its loop thread and the thread pool that calls the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        uri: str = DEFAULT_URI,
        *,
        zeroconf: bool = False,
        allow_network: bool = False,
        version: str = "",
        limits: Limits | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._uri = uri
        self._zeroconf = zeroconf
        self._allow_network = allow_network
        self._limits = limits or Limits()
        self._info = build_info(pipeline, version).event()  # built once: describe is instant
        self._connections = Connections(self._limits.max_connections)
        self._lock = threading.Lock()
        self._running: tuple[asyncio.AbstractEventLoop, threading.Thread, ThreadPoolExecutor] | None
        self._running = None
        self._server: AsyncServer | None = None
        self._advertising: asyncio.Task[None] | None = None
        self._advertiser: Any = None
        self.uri: str | None = None  # the bound URI while running

    @property
    def connections(self) -> int:
        """How many clients are connected now."""
        return len(self._connections.live)

    def start(self) -> str:
        """Listens, and returns the bound URI (a tcp port of 0 becomes the real one)."""
        with self._lock:
            if self._running is not None:
                raise RuntimeError("the Wyoming service is already running")
            endpoint = parse_uri(self._uri, self._allow_network)
            if endpoint.scheme == "unix" and _unix_in_use(endpoint.path):
                raise WyomingError(f"{self._uri}: another server answers on {endpoint.path}")
            loop = asyncio.new_event_loop()
            pool = ThreadPoolExecutor(self._limits.workers, thread_name_prefix="wyoming-pipeline")
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="wyoming-service", daemon=True
            )
            thread.start()
            try:
                opening = asyncio.run_coroutine_threadsafe(self._open(endpoint, pool), loop)
                self.uri = opening.result(START_TIMEOUT_S)
            except BaseException:
                _end(loop, thread, pool)
                raise
            self._running = (loop, thread, pool)
            return self.uri

    def stop(self) -> None:
        """Closes the server and every connection; returns within about 2 s. Idempotent.

        A pipeline call already running in the pool finishes on its own; its answer
        goes nowhere.
        """
        with self._lock:
            running, self._running = self._running, None
        if running is None:
            return
        loop, thread, pool = running
        closing = asyncio.run_coroutine_threadsafe(self._close(), loop)
        try:
            closing.result(STOP_TIMEOUT_S * 0.75)
        except Exception as error:
            log.warning("Wyoming: closing took too long (%s); leaving it", type(error).__name__)
        _end(loop, thread, pool)
        log.info("Wyoming service on %s stopped", self.uri)
        self.uri = None

    async def _open(self, endpoint: Endpoint, pool: ThreadPoolExecutor) -> str:
        shared = Shared(self._pipeline, self._info, pool, self._limits, self._connections)

        def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> AsyncEventHandler:
            return ServiceHandler(reader, writer, shared)

        try:
            server = AsyncServer.from_uri(endpoint.uri)
            await server.start(handler)
        except ValueError as error:
            raise WyomingError(f"{endpoint.uri}: {error}") from error
        except OSError as error:
            raise _cannot_listen(endpoint, error) from error
        self._server = server
        bound = _bound_uri(server, endpoint)
        log.info("Wyoming service listening on %s", bound)
        if self._zeroconf:  # mDNS probing takes a second: do not hold up the start for it
            port = urlparse(bound).port or endpoint.port
            self._advertising = asyncio.get_running_loop().create_task(
                self._advertise(endpoint, port)
            )
        return bound

    async def _advertise(self, endpoint: Endpoint, port: int) -> None:
        """mDNS for Home Assistant's discovery; without it (no multicast, no package)
        the service still works and is added by host and port."""
        if endpoint.scheme != "tcp":
            log.warning("Wyoming: zeroconf advertises TCP only; %s is not", endpoint.uri)
            return
        if importlib.util.find_spec("zeroconf") is None:
            log.warning(
                "Wyoming: zeroconf is not installed; add this service to Home Assistant "
                "by host and port"
            )
            return
        from wyoming.zeroconf import HomeAssistantZeroconf

        host = None if endpoint.host in WILDCARDS else endpoint.host
        if host is not None and is_loopback(host):
            log.warning("Wyoming: zeroconf advertises %s, which only this machine can reach", host)
        try:
            self._advertiser = HomeAssistantZeroconf(port=port, host=host)
            await self._advertiser.register_server()
        except Exception as error:
            log.warning("Wyoming: zeroconf failed (%s); add this service by host and port", error)

    async def _close(self) -> None:
        if self._advertising is not None:
            self._advertising.cancel()
            await asyncio.wait([self._advertising], timeout=STOP_TIMEOUT_S / 4)
            self._advertising = None
        advertiser, self._advertiser = self._advertiser, None
        if advertiser is not None:
            try:  # the library has no close of its own: send mDNS goodbyes, end its tasks
                await advertiser._aiozc.async_close()
            except Exception as error:
                log.debug("Wyoming: zeroconf close failed: %s", error)
        if self._server is not None:
            await self._server.stop()  # closes the listener and every connection
            self._server = None
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S / 2)


def _bound_uri(server: AsyncServer, endpoint: Endpoint) -> str:
    """The URI clients can use: with port 0 asked for, the port the system gave."""
    if not isinstance(server, AsyncTcpServer):
        return endpoint.uri
    listener = server._server  # the library keeps the asyncio server; its sockets say the port
    if not isinstance(listener, asyncio.Server) or not listener.sockets:
        return endpoint.uri
    port = int(listener.sockets[0].getsockname()[1])
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"tcp://{host}:{port}"


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _end(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, pool: ThreadPoolExecutor
) -> None:
    """Stops the loop thread and the pool without waiting for a pipeline call."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join(STOP_TIMEOUT_S / 2)
    pool.shutdown(wait=False, cancel_futures=True)
    if not thread.is_alive():
        loop.close()
