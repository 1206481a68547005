"""Where the desktop's D-Bus session bus is: shared by notifications and control."""

from __future__ import annotations

import os
from pathlib import Path


def session_address() -> str | None:
    """The session bus address, or None when there is none to find.

    ``$DBUS_SESSION_BUS_ADDRESS`` first; systemd user sessions may provide only the
    socket ``$XDG_RUNTIME_DIR/bus`` (the variable is then missing in some shells).
    """
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime, "bus").exists():
        return f"unix:path={Path(runtime, 'bus')}"
    return None
