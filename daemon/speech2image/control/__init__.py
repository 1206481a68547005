"""Control of a running daemon over the D-Bus session bus.

``bus`` is the daemon's side (:class:`~speech2image.control.bus.ControlService`), ``client``
the command line's (``speech2image pause|resume|status|listen``). The session bus, not a
socket of our own, because desktops already know how to reach it: a keyboard shortcut can
run ``gdbus call`` without speech2image on its ``PATH``, and the bus says who owns the
name, so two daemons cannot both answer.

The names below are the interface's contract; they never change within ``Daemon1``.
"""

from ..sessionbus import session_address

__all__ = [
    "BUS_NAME",
    "ERROR_FAILED",
    "INTERFACE",
    "METHODS",
    "NO_BUS",
    "OBJECT_PATH",
    "session_address",
]

BUS_NAME = "io.github.speech2image"
OBJECT_PATH = "/io/github/speech2image/Daemon1"
INTERFACE = "io.github.speech2image.Daemon1"
ERROR_FAILED = "io.github.speech2image.Error.Failed"  # a daemon method refused; text says why
METHODS = ("Pause", "Resume", "ListenNow", "Status")
NO_BUS = "$DBUS_SESSION_BUS_ADDRESS is unset and there is no $XDG_RUNTIME_DIR/bus"
