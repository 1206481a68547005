"""``speech2image service install|uninstall|status|logs``: the user unit, managed.

``install`` writes the unit for *this* installation (its interpreter, its config) and
tells the user manager; ``status`` and ``logs`` are systemctl and journalctl with the
unit's name filled in. Every call to those tools goes through :func:`run_tool`, which
has a timeout and turns a missing tool into a sentence, because a user without systemd
should read what to do, not a traceback.

A user manager may not be running (a container, ``su``, a headless machine without
linger): then the unit is still written and the user is told exactly how to start it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..config import Config, find_config_file, load_config
from .state import default_state_dir
from .unit import UNIT_NAME, UnitSpec, exec_start, render_unit

log = logging.getLogger(__name__)

EX_UNAVAILABLE = 69  # systemctl or journalctl missing
EX_CANTCREAT = 73  # the unit file cannot be written
STATUS_NOT_RUNNING = 3  # as `systemctl status` and LSB: installed, not running
STATUS_NOT_INSTALLED = 4  # as `systemctl status` for a unit it does not know
TOOL_TIMEOUT_S = 30.0
# The Hugging Face variables the daemon reads; carried into the unit when set at install.
HF_VARIABLES = ("HF_HOME", "HF_HUB_CACHE")
NO_MANAGER = "no systemd user manager is running for this session"
HOW_TO_START = (
    "Log in to a graphical session (GNOME and KDE start the user manager), or on a machine\n"
    "without one let it run from boot: `loginctl enable-linger $USER`. Then:\n"
    "  systemctl --user daemon-reload && systemctl --user enable --now speech2image"
)


class ToolMissingError(Exception):
    """systemctl or journalctl is not installed: this system does not run systemd."""


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    stdout: str
    stderr: str


def run_tool(argv: Sequence[str], timeout: float = TOOL_TIMEOUT_S) -> ToolResult:
    """Run systemctl (or another tool) and collect its output; a hang is exit 124."""
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(
            f"{argv[0]} not found: this system does not seem to run systemd"
        ) from exc
    except subprocess.TimeoutExpired:
        return ToolResult(124, "", f"{' '.join(argv)} did not answer within {timeout:.0f} s")
    return ToolResult(done.returncode, done.stdout, done.stderr)


def systemctl(*args: str) -> ToolResult:
    return run_tool(["systemctl", "--user", *args])


def manager_running() -> bool:
    """Whether a user manager answers. (``is-system-running`` says "offline" wherever
    the machine was not booted with systemd, even when a user manager runs.)"""
    return systemctl("show-environment").returncode == 0


def unit_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user``: where the user manager reads its own units."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "systemd" / "user"


def program_command(executable: str = sys.executable) -> tuple[str, ...]:
    """The command that runs this installation: the ``speech2image`` script beside the
    interpreter (a venv or pipx), else the interpreter with ``-m speech2image.cli``.

    The interpreter's path is kept as it is, not resolved: a venv's ``python`` is a
    symlink to the system one, and resolving it would leave the venv behind.
    """
    script = Path(executable).parent / "speech2image"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (executable, "-m", "speech2image.cli")


def needs_network(config: Config) -> bool:
    """Whether the web page or the Wyoming server is on (Wyoming read with getattr:
    its table does not exist yet, and this must keep working once it does)."""
    serve = config.gallery.serve
    wyoming = getattr(config, "wyoming", None)
    wyoming_on = wyoming is not None and bool(
        getattr(wyoming, "enabled", False) or getattr(wyoming, "uri", "")
    )
    return serve or wyoming_on


def installation_spec(
    config: Config,
    config_path: Path | None,
    home: Path,
    environ: Mapping[str, str] = os.environ,
    executable: str = sys.executable,
) -> UnitSpec:
    """What this installation's unit says: its command, its config, and the folders the
    daemon writes. A relative gallery is under the home folder, the unit's working dir."""
    gallery = Path(config.gallery.dir).expanduser()
    hf_home = Path(environ.get("HF_HOME") or home / ".cache" / "huggingface").expanduser()
    writable = [home / gallery, platformdirs.user_cache_path("speech2image"), hf_home]
    hub = Path(environ.get("HF_HUB_CACHE") or hf_home).expanduser()  # as model_files.hf_cache
    if not hub.is_relative_to(hf_home):
        writable.append(hub)
    writable.append(default_state_dir())
    if config.gallery.open_to_network:  # the page's token and certificate are made there
        writable.append(platformdirs.user_config_path("speech2image"))
    if config.debug.save_audio and config.debug.audio_dir:
        writable.append(Path(config.debug.audio_dir).expanduser())
    program = program_command(executable)
    needed = [Path(executable), Path(__file__), *writable]
    needed += [config_path] if config_path is not None else []
    return UnitSpec(
        program=program,
        config=config_path.resolve() if config_path is not None else None,
        home=home,
        writable=tuple(writable),
        cache=platformdirs.user_cache_path("speech2image"),
        network=needs_network(config),
        environment=tuple((key, environ[key]) for key in HF_VARIABLES if environ.get(key)),
        private_tmp=not any(under_tmp(path) for path in needed),
    )


def under_tmp(path: Path) -> bool:
    """Whether a private /tmp would hide ``path`` from the service."""
    resolved = path.expanduser().resolve()
    return any(resolved.is_relative_to(tmp) for tmp in (Path("/tmp"), Path("/var/tmp")))


def write_action(existing: str | None, new: str) -> str:
    """``created``, ``unchanged`` or ``replaced``: what writing ``new`` does."""
    if existing is None:
        return "created"
    return "unchanged" if existing == new else "replaced"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``service install|uninstall|status|logs`` to the CLI."""
    service = sub.add_parser("service", help="run as a systemd user service")
    actions = service.add_subparsers(title="actions", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install", help="write the user unit for this installation and its config"
    )
    install.add_argument(
        "--config",
        metavar="FILE",
        help="the config the service runs with (default: the one `speech2image run` finds)",
    )
    install.add_argument("--enable", action="store_true", help="start it at every login")
    install.add_argument("--now", action="store_true", help="enable it and start it now")
    install.set_defaults(command=cmd_install)
    uninstall = actions.add_parser("uninstall", help="stop, disable and remove the unit")
    uninstall.set_defaults(command=cmd_uninstall)
    status = actions.add_parser("status", help="the unit's state (systemctl --user status)")
    status.set_defaults(command=cmd_status)
    logs = actions.add_parser("logs", help="the service's log (journalctl --user -u)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, metavar="N", help="the last N lines only")
    logs.set_defaults(command=cmd_logs)


def cmd_install(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a bad config fails here, not at every restart
    config_path = find_config_file(args.config)
    spec = installation_spec(config, config_path, Path.home())
    path = unit_dir() / UNIT_NAME
    try:
        action = write_unit(path, render_unit(spec))
    except OSError as exc:
        print(f"speech2image: cannot write the unit {path}: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    print(f"{action} {path}")
    if action == "replaced":
        print(f"  (the previous unit is kept as {backup_path(path)})")
    print(f"  runs: {' '.join(exec_start(spec))}")
    print(f"  gallery: {spec.writable[0]}; network: {'on' if spec.network else 'off'}")
    try:
        if not manager_running():
            return _without_manager(enable=args.enable or args.now)
        return _tell_manager(enable=args.enable or args.now, now=args.now, changed=action)
    except ToolMissingError as exc:
        print(f"speech2image: {exc}; the unit was written but cannot be used", file=sys.stderr)
        return EX_UNAVAILABLE


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def write_unit(path: Path, text: str) -> str:
    """Write the unit atomically; a different unit already there is kept as ``.bak``
    (it may hold the user's own edits, which a reinstall should not silently destroy)."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    action = write_action(existing, text)
    if action == "unchanged":
        return action
    path.parent.mkdir(parents=True, exist_ok=True)
    if action == "replaced":
        shutil.copy2(path, backup_path(path))
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return action


def _tell_manager(*, enable: bool, now: bool, changed: str) -> int:
    steps: list[list[str]] = [["daemon-reload"]]
    if enable:  # --no-block: the first start warms the models, which can take minutes
        steps.append(
            ["enable", "--now", "--no-block", "speech2image"] if now else ["enable", "speech2image"]
        )
    for step in steps:
        result = systemctl(*step)
        if result.returncode != 0:
            print(
                f"speech2image: systemctl --user {' '.join(step)} failed: {result.stderr.strip()}",
                file=sys.stderr,
            )
            return result.returncode
    if now:
        print("starting; follow it with `speech2image service logs -f`")
    elif enable:
        print(
            "enabled: it starts with your next graphical login "
            "(`systemctl --user start speech2image` starts it now)"
        )
    else:
        print("the user manager knows it: `speech2image service install --now` starts it")
    if changed == "replaced" and systemctl("is-active", "speech2image").returncode == 0:
        print("it is running the old unit: `systemctl --user restart speech2image`")
    return 0


def _without_manager(*, enable: bool) -> int:
    if enable:  # systemctl can enable offline on some systems: only a symlink is made
        result = systemctl("enable", "speech2image")
        if result.returncode == 0:
            print("enabled: it starts with your next graphical login")
        else:
            print(f"could not enable it yet: {result.stderr.strip()}")
    print(f"{NO_MANAGER.capitalize()}, so nothing was started.\n{HOW_TO_START}")
    return 0


def cmd_uninstall(_args: argparse.Namespace) -> int:
    path = unit_dir() / UNIT_NAME
    try:
        running = manager_running()
        if running:
            systemctl("disable", "--now", "speech2image")
    except ToolMissingError:
        running = False
    removed = [p for p in (path, backup_path(path), *enable_links(path.parent)) if _remove(p)]
    if running:
        systemctl("daemon-reload")
        systemctl("reset-failed", "speech2image")
    if not removed:
        print(f"not installed ({path} does not exist)")
        return 0
    for item in removed:
        print(f"removed {item}")
    if not running:
        print("no user manager is running; nothing to stop")
    return 0


def enable_links(directory: Path) -> list[Path]:
    """``*.wants/speech2image.service`` links that ``enable`` made (systemctl removes them
    when a manager runs; without one, they are removed here)."""
    return [link for link in directory.glob(f"*/{UNIT_NAME}") if link.is_symlink()]


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def cmd_status(_args: argparse.Namespace) -> int:
    path = unit_dir() / UNIT_NAME
    try:
        if not manager_running():
            if not path.is_file():
                print("not installed: `speech2image service install` writes the unit")
                return STATUS_NOT_INSTALLED
            print(f"installed at {path}, but {NO_MANAGER}.\n{HOW_TO_START}")
            return STATUS_NOT_RUNNING
        result = systemctl("status", "speech2image", "--no-pager")
    except ToolMissingError as exc:
        print(f"speech2image: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    if result.returncode == STATUS_NOT_INSTALLED:
        print("not installed: `speech2image service install` writes the unit")
    return result.returncode


def journal_command(follow: bool, lines: int | None) -> list[str]:
    """``journalctl --user -u speech2image`` with the user's -f and -n."""
    argv = ["journalctl", "--user", "-u", "speech2image"]
    if follow:
        argv.append("--follow")
    if lines is not None:
        argv += ["--lines", str(lines)]
    return argv


def cmd_logs(args: argparse.Namespace) -> int:
    """Replace this process with journalctl: following a log is its job, not ours."""
    argv = journal_command(args.follow, args.lines)
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(
            "speech2image: journalctl not found: this system does not seem to run systemd",
            file=sys.stderr,
        )
    return EX_UNAVAILABLE
