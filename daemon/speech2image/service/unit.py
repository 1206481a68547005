"""The systemd user unit, rendered from what differs between installations.

Everything that is the same for every user (the service type, the watchdog, restart
policy, the sandbox) is fixed text here; only the command line, the config file and
the folders the daemon may write vary. ``systemd/speech2image.service`` in the
repository is :func:`render_unit` of :data:`TEMPLATE` (a test keeps them equal), so
the shipped file and what ``speech2image service install`` writes cannot drift apart.

Paths under the user's home are written with systemd's ``%h`` so the unit reads the
same on every machine and is easy to compare with the template. Every value is quoted
and escaped the way systemd unquotes it (``%`` and ``$`` included), so a home or a
config path with a space in it works.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config import EX_CONFIG
from .lock import EX_ALREADY_RUNNING

UNIT_NAME = "speech2image.service"
WATCHDOG_S = 30
RESTART_S = 5
STOP_TIMEOUT_S = 15  # the daemon promises to stop within 10 s
START_TIMEOUT_S = 600  # loading and warming Stable Diffusion on a CPU takes minutes
# Characters that make a word need quotes in systemd's word splitting.
_NEEDS_QUOTES = frozenset(" \t\"'\\;")


@dataclass(frozen=True)
class UnitSpec:
    """What one installation puts into its unit.

    ``program`` is the command that runs this installation's CLI (its ``speech2image``
    script, or ``python -m speech2image.cli``); ``config`` the file ``load_config`` found
    (None: the daemon looks for one itself at each start). ``writable`` is every folder
    the daemon may write besides ``$XDG_RUNTIME_DIR``: the gallery, its own cache, the
    Hugging Face cache and the state folder; the rest of the file system is read-only.
    ``network`` opens IPv4/IPv6 for the web page or the Wyoming server.
    """

    program: tuple[str, ...]
    config: Path | None
    home: Path
    writable: tuple[Path, ...]
    cache: Path  # ours: CUDA and Triton compile their kernels under it
    network: bool = False
    environment: tuple[tuple[str, str], ...] = ()
    private_tmp: bool = True  # False when the installation itself lives under /tmp


def template_spec(home: Path = Path("/home/user")) -> UnitSpec:
    """The shipped template: a default user install (``pip install --user``, no config)."""
    cache = home / ".cache" / "speech2image"
    return UnitSpec(
        program=(str(home / ".local" / "bin" / "speech2image"),),
        config=None,
        home=home,
        writable=(
            home / "outputs",
            cache,
            home / ".cache" / "huggingface",
            home / ".local" / "state" / "speech2image",
        ),
        cache=cache,
    )


TEMPLATE = template_spec()


def exec_start(spec: UnitSpec) -> tuple[str, ...]:
    """The daemon's argv: ``run``, with ``--config`` only when a file was found."""
    config = ("--config", str(spec.config)) if spec.config is not None else ()
    return (*spec.program, "run", *config)


def render_unit(spec: UnitSpec) -> str:
    """The unit file's text for ``spec``."""
    paths = [systemd_path(str(path), spec.home) for path in _unique(spec.writable)]
    kernels = (
        ("CUDA_CACHE_PATH", spec.cache / "cuda"),
        ("TRITON_CACHE_DIR", spec.cache / "triton"),
        ("TORCHINDUCTOR_CACHE_DIR", spec.cache / "torchinductor"),  # else /tmp/torchinductor_*
    )
    env = [*((key, str(path)) for key, path in kernels), *spec.environment]
    return _TEXT.format(
        exec_start=_exec_line(exec_start(spec), spec.home),
        mkdir=" ".join(quote(path, dollar=True) for path in paths),
        read_write="\n".join(f"ReadWritePaths={quote('-' + path)}" for path in paths),
        environment="\n".join(
            f"Environment={quote(f'{key}={systemd_path(value, spec.home)}')}" for key, value in env
        ),
        families="AF_UNIX AF_NETLINK" + (" AF_INET AF_INET6" if spec.network else ""),
        private_network=_PRIVATE_NETWORK[spec.network],
        private_tmp=_PRIVATE_TMP[spec.private_tmp],
        ex_config=EX_CONFIG,
        ex_running=EX_ALREADY_RUNNING,
        watchdog=WATCHDOG_S,
        restart=RESTART_S,
        stop=STOP_TIMEOUT_S,
        start=START_TIMEOUT_S,
    )


def _exec_line(argv: Iterable[str], home: Path) -> str:
    return " ".join(quote(systemd_path(word, home), dollar=True) for word in argv)


def systemd_path(text: str, home: Path) -> str:
    """``text`` with ``%`` escaped, and written as ``%h/…`` when it is under ``home``."""
    escaped = text.replace("%", "%%")
    path = PurePosixPath(text)
    if path.is_absolute() and path.is_relative_to(home) and path != PurePosixPath(home):
        return "%h/" + str(path.relative_to(home)).replace("%", "%%")
    return escaped


def quote(word: str, *, dollar: bool = False) -> str:
    """One word as systemd splits and unquotes it; ``dollar`` for Exec lines (``$$``)."""
    if any(c in word for c in "\n\r\0"):
        raise ValueError(f"a systemd unit cannot hold a line break or NUL: {word!r}")
    if dollar:
        word = word.replace("$", "$$")
    if word and not _NEEDS_QUOTES.intersection(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path, None)
    return list(seen)


# Without the web page or Wyoming the daemon needs no network at all: a private network
# namespace (loopback only) makes that a guarantee. Unix sockets on the file system (the
# audio server, the session bus, $XDG_RUNTIME_DIR) still work; abstract ones do not,
# and nothing the daemon talks to uses them under a systemd user manager.
_PRIVATE_TMP = {
    True: "# A /tmp of its own: nothing the daemon leaves there is seen by others.\nPrivateTmp=yes",
    False: "# No PrivateTmp=: this installation (or its config or gallery) is under /tmp,\n"
    "# which a private /tmp would hide (the start would fail with 203/EXEC); so the\n"
    "# shared /tmp is writable, as ProtectSystem=strict would make it read-only.\n"
    "ReadWritePaths=-/tmp -/var/tmp",
}
_PRIVATE_NETWORK = {
    False: (
        "# No web page or Wyoming server: no network at all, loopback only. Unix sockets\n"
        "# on the file system still work; abstract ones (some old session buses) do not.\n"
        "PrivateNetwork=yes"
    ),
    True: "# The web page or Wyoming listens on the network: no PrivateNetwork=.",
}

_TEXT = """\
# speech2image: say a wake word, then what you want to see.
#
# A systemd *user* unit: the microphone (PipeWire or PulseAudio), the session bus and
# the desktop's notifications all live in the user's session. Install it with
# `speech2image service install`, which writes this file with ExecStart pointing at
# that installation and its config; this copy is the template (paths for a default
# `pip install --user`). Put local changes in `systemctl --user edit speech2image`,
# which survives a reinstall.

[Unit]
Description=speech2image: say a wake word, then what you want to see
# Ordered after the graphical session (GNOME and KDE start graphical-session.target
# once DISPLAY/WAYLAND_DISPLAY are in the user manager's environment, which the
# notification's Open action needs) and stopped with it, so logging out releases the
# microphone and the GPU. A headless user adds it to default.target instead; see the README.
After=graphical-session.target
PartOf=graphical-session.target
# A crash loop (a broken GPU driver, say) gives up after five tries in ten minutes
# instead of warming Stable Diffusion forever.
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# READY=1 once every model is warm; STATUS= shows the live state in `systemctl status`.
Type=notify
NotifyAccess=main
# The listening loop drives WATCHDOG=1 (sent every WATCHDOG_USEC/2); a stalled audio
# thread gets the process restarted, a paused daemon keeps beating.
WatchdogSec={watchdog}
ExecStartPre=+/bin/mkdir -p {mkdir}
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec={restart}
# {ex_config}: a config error, {ex_running}: another daemon of this user holds the microphone lock.
# Restarting would fail the same way, so neither is retried.
RestartPreventExitStatus={ex_config} {ex_running}
TimeoutStartSec={start}
TimeoutStopSec={stop}
WorkingDirectory=%h
Environment=PYTHONUNBUFFERED=1
{environment}
SyslogIdentifier=speech2image

# --- Sandbox -------------------------------------------------------------------------
# In a user unit these options run the service in an unprivileged user namespace.
# Everything is read-only except the folders below. ExecStartPre ('+': outside the
# sandbox) creates them at every start; '-' because systemd checks the paths before
# ExecStartPre runs. A gallery deleted while the service runs cannot be recreated
# inside the sandbox (its parent is read-only) until the service restarts.
# $XDG_RUNTIME_DIR (%t) holds the instance lock, the audio server's and the session
# bus's sockets.
ProtectSystem=strict
ProtectHome=read-only
{read_write}
ReadWritePaths=%t
{private_tmp}
{private_network}
# Unix sockets for audio and D-Bus; netlink for device and address queries.
RestrictAddressFamilies={families}
# No setuid: if CUDA finds no GPU here but does in a terminal, /dev/nvidia-uvm was not
# created at boot (libcuda runs the setuid nvidia-modprobe on demand); run
# `sudo nvidia-modprobe -u -c=0` at boot, or enable nvidia-persistenced.
NoNewPrivileges=yes
CapabilityBoundingSet=
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictNamespaces=yes
# The audio server gets real-time priority from RTKit; this process needs none.
RestrictRealtime=yes
# Kernel settings, modules, logs, cgroups, clock and hostname: never ours to change.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
PrivateMounts=yes
KeyringMode=private
# Pictures and state readable by this user only (a user service: the viewer is us).
UMask=0077
SystemCallArchitectures=native
# @system-service covers what CUDA, torch, ONNX Runtime and CTranslate2 call (ioctl on
# the driver, mbind/set_mempolicy, sched_setaffinity, memfd_create); anything else
# fails with EPERM rather than killing the process.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Left out on purpose, each because it would break the daemon:
# - PrivateDevices=, DevicePolicy=/DeviceAllow=: the GPU (/dev/nvidia*, /dev/dri) and
#   ALSA (/dev/snd); a user manager cannot enforce a device list anyway.
# - MemoryDenyWriteExecute=: CUDA's and Triton's JIT compilers and libffi need
#   writable-then-executable memory.
# - ProcSubset=pid: torch and accelerate read /proc/cpuinfo and /proc/meminfo.
# - RemoveIPC=: in a user unit it would remove all of the user's shared memory,
#   the audio server's included.
# - IPAddressDeny=: needs a BPF firewall a user manager does not have;
#   RestrictAddressFamilies= and PrivateNetwork= already close the network.

[Install]
WantedBy=graphical-session.target
"""
