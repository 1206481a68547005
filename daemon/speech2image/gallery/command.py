"""``speech2image gallery``: the page on its own, browse-only, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import webbrowser
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ..config import EX_CONFIG, load_config
from ..configcheck import ConfigError

if TYPE_CHECKING:
    from .server import ServeOptions

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "gallery",
        help="serve the gallery web page (browse-only; the daemon serves it with [gallery] serve)",
        description=(
            "Serve the live gallery page over the output folder: newest first, search, "
            "favourites, trash. On its own it only browses; to talk or type to the daemon "
            "from the page, set [gallery] serve = true and run the daemon."
        ),
    )
    parser.add_argument("--config", type=Path, help="config file (default: the usual places)")
    parser.add_argument("--dir", type=Path, help="the gallery folder (default: [gallery] dir)")
    parser.add_argument("--host", help="address to listen on (default: [gallery] host)")
    parser.add_argument("--port", type=int, help="port (default: [gallery] port; 0 = any)")
    parser.add_argument("--open", action="store_true", help="open the page in the browser")
    parser.add_argument(
        "--print-url",
        action="store_true",
        help="print the page's address (with its access token off loopback) and exit",
    )
    parser.set_defaults(command=cmd_gallery)


def cmd_gallery(args: argparse.Namespace) -> int:
    from .access import AccessError
    from .server import GalleryServeError, GalleryServer, ServeOptions

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"speech2image: {exc}", file=sys.stderr)
        return EX_CONFIG
    options = ServeOptions.from_config(
        config.gallery, root=args.dir, host=args.host, port=args.port
    )
    if args.print_url:
        return _print_url(options)
    server = GalleryServer(options)
    try:
        server.start()  # logs "gallery: serving <url>"
    except (GalleryServeError, AccessError) as exc:
        print(f"speech2image: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.open:
        webbrowser.open(server.address_with_token())
    _wait_for_signal()
    server.stop()
    return 0


def _print_url(options: ServeOptions) -> int:
    """The address to type into a browser; makes the token (and certificate) if needed."""
    from .access import AccessError
    from .server import GalleryServer, local_url, network_url

    server = GalleryServer(options)
    try:
        tls = server.prepare_access()
    except AccessError as exc:
        print(f"speech2image: {exc}", file=sys.stderr)
        return EX_CONFIG
    finally:
        server.gallery.state.close()
    if tls is None:
        server.url = local_url(options.host, options.port, secure=False)
    else:
        server.url = network_url(options.host, options.port)
    print(server.address_with_token())
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("gallery: %s, stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    while not stop.wait(0.5):
        pass
