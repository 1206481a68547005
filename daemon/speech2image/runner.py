"""``speech2image run`` and ``speech2image serve``: a daemon and what runs around it.

Both build the same daemon (one model set, one ledger, one drawing queue) and differ
only in where sound comes from: ``run`` listens to a microphone or a file, ``serve``
to nobody (its requests come over Wyoming, and from the web page when it is served).
Around the daemon: the service session (sd_notify, control, reload), the web page
(``[gallery] serve``) and Wyoming (``[wyoming]``), each started once the models are
loaded and stopped, in reverse order, by one exit stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING

from .config import EX_CONFIG, Config, load_config
from .events import EventSink, FanOut, JsonLinesSink, LogSink
from .shutdown import exit_now

if TYPE_CHECKING:
    from .daemon import Daemon
    from .listening.audio import AudioSource
    from .webtalk import ServedPage
    from .wyomingglue import WyomingSide

EX_NOINPUT = 66
DEFAULT_WYOMING_URI = "tcp://127.0.0.1:10650"


def fail(message: str, status: int) -> int:
    print(f"speech2image: {message}", file=sys.stderr)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from .listening.audio import AudioError, FileSource
    from .listening.microphone import PortAudioMissingError, import_sounddevice

    config = load_config(args.config)
    source: AudioSource | None = None
    try:  # a wrong file, or no PortAudio for a microphone, should not wait for the models
        if args.input:
            source = FileSource(args.input, realtime=args.realtime)
        else:  # a missing microphone is not checked here: MicSource waits for it
            import_sounddevice()
    except PortAudioMissingError as exc:
        return fail(str(exc), EX_CONFIG)
    except AudioError as exc:
        return fail(str(exc), EX_NOINPUT)
    wait = bool(args.input) and not args.realtime
    return run_daemon(args, config, source, wait_when_busy=wait, wyoming=_wyoming_side(config))


def cmd_serve(args: argparse.Namespace) -> int:
    """The daemon without a microphone, as a Wyoming service (and the page, if configured)."""
    from .wyomingglue import IdleSource, WyomingSide

    config = load_config(args.config)
    table = config.wyoming
    table = dataclasses.replace(
        table,
        zeroconf=table.zeroconf or args.zeroconf,
        allow_network=table.allow_network or args.allow_network,
    )
    config = dataclasses.replace(config, wyoming=table)
    side = WyomingSide(config, uri=args.uri or table.uri or DEFAULT_WYOMING_URI)
    return run_daemon(args, config, IdleSource(), wait_when_busy=False, wyoming=side)


def run_daemon(
    args: argparse.Namespace,
    config: Config,
    source: AudioSource | None,
    *,
    wait_when_busy: bool,
    wyoming: WyomingSide | None,
) -> int:
    """Models, then the parts around the daemon, then listen until the end or a stop.

    ``source`` None means the microphone: one per user (a lock), reopened after a
    pause or an ``[audio]`` change."""
    from .daemon import Daemon
    from .gallery.writer import GalleryError
    from .model_files import ModelError
    from .service.lock import EX_ALREADY_RUNNING, AlreadyRunningError, InstanceLock
    from .session import ServiceSession

    microphone = source is None
    with ExitStack() as stack:
        if microphone:  # one microphone daemon per user; file runs need no lock
            try:
                stack.enter_context(InstanceLock())
            except AlreadyRunningError as exc:
                return fail(str(exc), EX_ALREADY_RUNNING)
        session = ServiceSession(lambda: load_config(args.config), microphone)
        stack.callback(session.close)
        page = _served_page(config)
        sinks = [event_sink(args.events, stack)]
        sinks += [page.events] if page is not None else []
        sinks += [wyoming.tap] if wyoming is not None else []
        try:
            daemon = Daemon(
                config,
                FanOut(*sinks) if len(sinks) > 1 else sinks[0],
                shutdown=args.shutdown,
                reopen=_microphone_opener(lambda: daemon) if microphone else None,
                heartbeat=session.beat,
                paused=microphone and session.paused.get(),
            )
        except (ModelError, GalleryError) as exc:
            return fail(str(exc), EX_CONFIG)
        stack.callback(daemon.close)
        problem = _start_around(daemon, page, wyoming, stack)
        if problem is not None:
            return fail(problem, EX_CONFIG)
        session.start(daemon)
        if source is None:  # never fails for a missing device: it reports it and waits
            source = _microphone_opener(lambda: daemon)(config)
        elif hasattr(source, "heartbeat"):
            source.heartbeat = session.beat  # an idle `serve` still feeds the watchdog
        code = daemon.run(source, wait_when_busy=wait_when_busy)
        if daemon.abandoned:  # a worker is still inside torch: leave without waiting for it
            session.close()
            daemon.close()
            exit_now(code)
        return code


def _start_around(
    daemon: Daemon, page: ServedPage | None, wyoming: WyomingSide | None, stack: ExitStack
) -> str | None:
    """Start the page and Wyoming around a loaded daemon; why not, if one cannot."""
    if page is not None:
        from .webtalk import PageError

        try:
            page.start(daemon)
        except PageError as exc:
            return str(exc)
        stack.callback(page.stop)
    if wyoming is not None:
        from .wyoming.service import WyomingError

        stack.callback(wyoming.stop)  # whatever started before a failure stops too
        try:
            wyoming.start(daemon)
        except WyomingError as exc:
            return str(exc)
    return None


def _wyoming_side(config: Config) -> WyomingSide | None:
    if not config.wyoming.enabled:
        return None
    from .wyomingglue import WyomingSide

    return WyomingSide(config)


def _served_page(config: Config) -> ServedPage | None:
    """The web page inside the daemon (``[gallery] serve``); imported only then."""
    if not config.gallery.serve:
        return None
    from .webtalk import ServedPage

    return ServedPage(config)


def _microphone_opener(daemon: Callable[[], Daemon]) -> Callable[[Config], AudioSource]:
    """Opens the configured microphone, reporting to the daemon (created after this)."""
    from .listening.microphone import MicSource

    def open_microphone(config: Config) -> AudioSource:
        target = daemon()
        return MicSource(
            config.audio,
            on_error=target.report_source_error,
            on_resumed=target.report_listening,
            on_wait=target.heartbeat,
        )

    return open_microphone


def event_sink(target: str | None, stack: ExitStack) -> EventSink:
    return LogSink() if target is None else JsonLinesSink(open_events(target, stack))


def open_events(target: str, stack: ExitStack) -> IO[str]:
    if target == "-":
        return sys.stdout
    return stack.enter_context(open(target, "a", encoding="utf-8"))
