"""What a long-running daemon needs around it, assembled for ``speech2image run``.

systemd's notifications (READY=1 once models are warm, STATUS= from the live state,
WATCHDOG=1 from a heartbeat the listening loop drives, STOPPING=1), control on the
session bus, a config reload on SIGHUP, and a pause that survives a restart. Each
piece is optional in the sense that the daemon runs without it: no NOTIFY_SOCKET
outside systemd, no session bus on a headless box.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping
from types import FrameType

from .config import Config
from .control.bus import ControlService
from .daemon import Daemon
from .reload import Reloader
from .service.sdnotify import Heartbeat, SystemdNotifier
from .service.state import PausedFlag

log = logging.getLogger(__name__)

# The listening loop beats per 80 ms frame; a microphone that is being reopened
# beats from its wait. Silence longer than this means the audio thread is stuck.
MAX_SILENCE_S = 20.0


class Controls:
    """The daemon as the D-Bus interface sees it: a pause is also written down, so
    that it survives a restart (the microphone stays closed after a reboot)."""

    def __init__(self, daemon: Daemon, flag: PausedFlag) -> None:
        self._daemon = daemon
        self._flag = flag

    def pause(self) -> None:
        self._daemon.pause()
        self._flag.set(True)

    def resume(self) -> None:
        self._daemon.resume()
        self._flag.set(False)

    def listen_now(self) -> None:
        self._daemon.listen_now()

    def status(self) -> Mapping[str, str | int | float | bool]:
        return self._daemon.status()


class ServiceSession:
    """Created before the models load (so a SIGHUP then is not fatal), started once
    the daemon exists, closed when it has stopped."""

    def __init__(self, load: Callable[[], Config], microphone: bool) -> None:
        self.systemd = SystemdNotifier.from_environment()
        interval = self.systemd.watchdog_interval()  # None: systemd wants no watchdog
        self._heartbeat = Heartbeat(self.systemd, interval, MAX_SILENCE_S) if interval else None
        self.paused = PausedFlag()
        self._microphone = microphone
        self._reloader = Reloader(load, microphone)
        self._control: ControlService | None = None
        self._previous_hup = signal.signal(signal.SIGHUP, self._on_hup)

    def beat(self) -> None:
        """Called per audio frame and from the pause and reconnect waits: cheap."""
        if self._heartbeat is not None:
            self._heartbeat.beat()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reloader.request()  # only sets a flag: models load in the reload thread

    def start(self, daemon: Daemon) -> None:
        systemd = self.systemd
        daemon.live.subscribe(lambda _state, detail: systemd.status(detail))
        daemon.shutdown.on_request(lambda: systemd.stopping("stopping"))
        self._reloader.on_start = systemd.reloading
        self._reloader.on_done = lambda: systemd.ready(daemon.live.current[1])
        self._reloader.start(daemon)
        if self._microphone:
            control = ControlService(Controls(daemon, self.paused))
            if control.start():
                daemon.live.subscribe(control.state_changed)
                self._control = control
        if self._heartbeat is not None:
            self._heartbeat.start()
        daemon.live.started()  # the models are warm: READY=1 carries the first state
        systemd.ready(daemon.live.current[1])

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self._reloader.stop()
        if self._control is not None:
            self._control.close()
        signal.signal(signal.SIGHUP, self._previous_hup)
