"""SIGHUP: read the config again and rebuild only what changed.

A model reloads only when its own table changed; the microphone stays open unless
``[audio]`` changed. Everything new is built first, in this module's own thread
while the daemon keeps listening, and put in force in one step, so a config that
is bad (its key named in the log) or a model that fails to load leaves the running
config entirely in force.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import TABLES, Config
from .configcheck import ConfigError
from .daemon import Daemon
from .desktop.sound import WakeSound
from .listening.listener import Listener
from .stages import Stages, build_listener, desktop_notifier, feedback_of, wake_sound

log = logging.getLogger(__name__)

# Which tables each part is built from. [audio] reopens the microphone (Daemon.swap);
# [debug] is read per request, so it needs nothing rebuilt.
PARTS: dict[str, frozenset[str]] = {
    "listener": frozenset({"wake", "listen", "feedback"}),
    "transcriber": frozenset({"speech"}),
    "moderator": frozenset({"moderation"}),
    "generator": frozenset({"image"}),
    "writer": frozenset({"gallery"}),
    "notifier": frozenset({"notify"}),
}


def changed_tables(old: Config, new: Config) -> frozenset[str]:
    """The tables whose values differ (where the config came from does not count)."""
    return frozenset(name for name in TABLES if getattr(old, name) != getattr(new, name))


def parts_to_rebuild(changed: frozenset[str]) -> list[str]:
    """The parts, in PARTS order, that read a changed table."""
    return [part for part, tables in PARTS.items() if tables & changed]


Loader = Callable[[], Config]


class Reloader:
    """Turns "reload" requests (a SIGHUP handler only sets a flag) into rebuilds."""

    def __init__(self, load: Loader, microphone: bool) -> None:
        self._daemon: Daemon | None = None
        self._load = load
        self._microphone = microphone
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
        self.on_start: Callable[[], None] = lambda: None  # sd_notify RELOADING=1
        self.on_done: Callable[[], None] = lambda: None  # sd_notify READY=1
        self.done = threading.Event()  # set after each reload attempt (tests wait on it)

    def start(self, daemon: Daemon) -> None:
        """Reload requests made before this (while models loaded) are served now."""
        self._daemon = daemon
        self._thread.start()

    def request(self) -> None:
        """Async-signal-safe enough: sets a flag, nothing else."""
        self._wanted.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopped.is_set():
                return
            self._wanted.clear()
            self.done.clear()
            self.on_start()
            try:
                self.reload()
            except Exception:  # never the end of the daemon: the old config stays
                log.exception("reloading the config failed; the running config stays in force")
            finally:
                self.on_done()
                self.done.set()

    def reload(self) -> bool:
        """Read, build, swap; True when a new config was put in force."""
        daemon = self._daemon
        assert daemon is not None, "start() hands the daemon over"
        old = daemon.config
        try:
            new = self._load()
        except ConfigError as exc:
            log.error("config reload refused, the running config stays in force: %s", exc)
            return False
        changed = changed_tables(old, new)
        parts = parts_to_rebuild(changed)
        if not changed:
            log.info("config reloaded from %s: nothing changed", new.source)
            return False
        log.info("config reload: %s changed; rebuilding %s", _names(changed), _names(parts))
        if page_settings(old) != page_settings(new):
            log.warning("the web page's [gallery] settings take effect at the next restart")
        if old.wyoming != new.wyoming:  # servers and satellite links are not rebuilt
            log.warning("[wyoming] changes take effect at the next restart")
        previous = daemon.stages
        sound = daemon.wake_sound
        try:
            if "feedback" in changed:
                sound = wake_sound(new, self._microphone)
            stages, listener = self._build(new, parts, previous, sound)
        except Exception as exc:  # a model, gallery or bus that cannot be used: say which
            log.error("config reload failed, the running config stays in force: %s", exc)
            return False
        daemon.swap(new, stages, listener, sound)
        if previous.notifier is not None and previous.notifier is not stages.notifier:
            previous.notifier.close()
        log.info("config reloaded from %s", new.source)
        return True

    def _build(
        self, new: Config, parts: list[str], current: Stages, sound: WakeSound | None
    ) -> tuple[Stages, Listener | None]:
        """New parts for ``parts``; the others are the running ones."""
        replace: dict[str, Any] = {}
        if "transcriber" in parts:
            from .speech.transcribe import WhisperTranscriber

            transcriber = WhisperTranscriber(new.speech, new.source)
            transcriber.warm_up()
            replace["transcriber"] = transcriber
        if "moderator" in parts:
            from .moderation.combined import build_moderator

            replace["moderator"] = build_moderator(new.moderation, new.source)
        if "generator" in parts:
            from .images.generate import Generator

            generator = Generator(new.image, new.source)
            generator.warm_up()
            replace["generator"] = generator
        if "writer" in parts:
            from .gallery.writer import GalleryWriter

            writer = GalleryWriter(Path(new.gallery.dir))
            writer.prepare()
            replace["writer"] = writer
        if "notifier" in parts:
            replace["notifier"] = desktop_notifier(new)
        listener = None
        if "listener" in parts:
            listener = build_listener(new, feedback_of(sound))
        return dataclasses.replace(current, **replace), listener


def page_settings(config: Config) -> tuple[object, ...]:
    """What the running web server was started with (it is not rebuilt at a reload)."""
    gallery = config.gallery
    served = (gallery.dir, gallery.host, gallery.port, gallery.token, gallery.cert, gallery.key)
    return (gallery.serve, *(served if gallery.serve else ()))


def _names(items: frozenset[str] | list[str]) -> str:
    return ", ".join(f"[{name}]" if name in TABLES else name for name in sorted(items)) or "nothing"
