"""What `speech2image doctor` looks at besides the microphone, each check a small function.

Every check returns a :class:`Check`: a status, one line that says what was found and,
when something is wrong, the command or key that fixes it. What decides the status
(is this much free space enough? is a CPU-only torch a failure here?) is a pure
``judge_*`` function of what was measured, so it is tested without a GPU, a full disk
or a user manager; the functions around them only measure. Nothing here loads a model
or reaches the network: models are looked up exactly where the daemon looks for them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import BUILTIN, Config, default_user_config, load_config
from .configcheck import ConfigError
from .model_files import PULL_HINT, ModelError, looks_like_a_path
from .service.commands import ToolMissingError, run_tool
from .service.unit import UNIT_NAME
from .sessionbus import session_address

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail", "info"]
GIB = 1024**3
MIN_FREE_DISK = GIB  # a gallery with less room fills within days of 0.5 MB pictures
MIN_FREE_GPU = 2 * GIB  # sd-turbo in half precision needs about this much to draw
BUS_TIMEOUT_S = 3.0
SYSTEMCTL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    """One line of the report; ``fix`` says what to do when the status is not ``ok``."""

    name: str
    status: Status
    summary: str
    fix: str = ""


def worst(statuses: list[Status]) -> Status:
    """The status that counts for a line made of several findings."""
    for status in ("fail", "warn", "info"):
        if status in statuses:
            return status
    return "ok"


def without_hint(exc: Exception) -> str:
    """A ModelError's message without the generic pull hint: the fix line is more precise."""
    return str(exc).removesuffix(f"; {PULL_HINT}")


def check_config(explicit: str | None) -> tuple[Check, Config]:
    """The config as the daemon would load it; on an error, the defaults for the rest.

    A broken file fails the report anyway; the other checks still say what else is
    wrong, so one run of doctor finds every problem, not just the first.
    """
    try:
        config = load_config(explicit)
    except ConfigError as exc:
        fix = "correct the key named above; `speech2image config` prints the effective config"
        summary = f"{exc} (the checks below use the built-in defaults)"
        return Check("config", "fail", summary, fix), Config()
    if config.source == BUILTIN:
        summary = f"built-in defaults ({default_user_config()} is absent)"
        return Check("config", "ok", summary), config
    return Check("config", "ok", config.source), config


def check_wake(config: Config) -> Check:
    from .listening.wake_models import PRETRAINED_WAKE_WORDS, resolve_wake_models, wake_model_dir

    try:
        found = resolve_wake_models(config.wake, config.source)
    except ModelError as exc:
        fix = "speech2image models pull wake"
        if any(entry not in PRETRAINED_WAKE_WORDS for entry in config.wake.models):
            fix = f"correct the path in [wake] models, or {fix} for the built-in wake words"
        return Check("wake", "fail", without_hint(exc), fix)
    return Check("wake", "ok", f"{', '.join(found.models)} in {wake_model_dir(config.wake)}")


def check_speech(config: Config) -> Check:
    from .speech.transcribe import resolve_speech_model

    try:
        path = resolve_speech_model(config.speech, config.source)
    except ModelError as exc:
        fix = "speech2image models pull speech"
        if looks_like_a_path(config.speech.model):
            fix = f"correct [speech] model, or name a model (e.g. tiny.en) and run `{fix}`"
        return Check("speech", "fail", without_hint(exc), fix)
    return Check("speech", "ok", f"{config.speech.model} in {path}")


def check_moderation(config: Config) -> Check:
    """Every configured backend, on one line: the request gate needs all of them."""
    findings = [_moderation_backend(name, config) for name in config.moderation.backends]
    status = worst([status for status, _, _ in findings])
    fix = next((fix for found, _, fix in findings if found == status and fix), "")
    return Check("moderation", status, "; ".join(text for _, text, _ in findings), fix)


def _moderation_backend(name: str, config: Config) -> tuple[Status, str, str]:
    if name == "lexicon":
        return "ok", "lexicon (built in)", ""
    if name == "profanity":
        if importlib.util.find_spec("profanity_check") is None:
            fix = 'pip install alt-profanity-check, or drop "profanity" from [moderation] backends'
            return "fail", "profanity: alt-profanity-check is not installed", fix
        return "ok", "profanity", ""
    if name == "semantic":
        return _semantic_backend()
    folder = Path(config.moderation.transformers_model).expanduser()
    if not config.moderation.transformers_model or not (folder / "config.json").is_file():
        fix = "set [moderation] transformers_model to a local text-classification model folder"
        return "fail", f"transformers: no model folder with a config.json at {folder}", fix
    return "ok", f"transformers ({folder})", ""


def _semantic_backend() -> tuple[Status, str, str]:
    """The packaged weights and head, and whether their ONNX export is built yet."""
    from .moderation.embedder import embedding_model_dir, onnx_model_dir, read_verified
    from .moderation.semantic import load_head

    try:
        folder = onnx_model_dir(embedding_model_dir())
        load_head()
    except (ModelError, OSError, ValueError) as exc:
        fix = 'reinstall speech2image, or remove "semantic" from [moderation] backends'
        return "fail", f"semantic: {exc}", fix
    if read_verified(folder, warn=False) is None:
        text = "semantic: not prepared for ONNX Runtime yet (the daemon does it at start, slowly)"
        return "warn", text, "speech2image models pull moderation"
    return "ok", f"semantic (ONNX in {folder})", ""


def check_image(config: Config) -> Check:
    """The pipeline folder and its weights; Stable Diffusion itself is not loaded (slow)."""
    from .images.pull import resolve_image_model

    fix = "speech2image models pull image"
    try:
        folder = resolve_image_model(config.image, config.source)
    except ModelError as exc:
        if looks_like_a_path(config.image.model):
            fix = f"correct [image] model, or name a Hugging Face model and run `{fix}`"
        return Check("image", "fail", without_hint(exc), fix)
    missing = components_without_weights(folder)
    if missing:
        summary = f"{folder} has no weights for {', '.join(missing)} (an interrupted download?)"
        return Check("image", "fail", summary, fix)
    return Check("image", "ok", f"{config.image.model} in {folder}")


def components_without_weights(folder: Path) -> list[str]:
    """Pipeline parts that are models (a config.json) but have no weight file beside it.

    An interrupted pull leaves the small files and not the large ones; a hub cache
    holds symlinks, and one whose blob is missing is not a file.
    """
    missing = []
    for part in sorted(p for p in folder.iterdir() if (p / "config.json").is_file()):
        weights = [*part.glob("*.safetensors"), *part.glob("*.bin")]
        if not any(w.is_file() for w in weights):
            missing.append(part.name)
    return missing


@dataclass(frozen=True)
class Gpu:
    name: str
    free: int  # bytes
    total: int


def judge_gpu(device: str, torch_version: str, gpu: Gpu | None) -> Check:
    """CPU only is a warning (it works, slowly) unless the config insists on CUDA."""
    if gpu is None:
        if device == "cuda":
            summary = f'torch {torch_version} sees no CUDA GPU, but [image] device = "cuda"'
            fix = 'set [image] device = "auto", or install the NVIDIA driver and a CUDA torch'
            return Check("gpu", "fail", summary, fix)
        summary = f"torch {torch_version}, CPU only: images will take minutes"
        fix = "for seconds, not minutes: an NVIDIA GPU with its driver and a CUDA build of torch"
        return Check("gpu", "warn", summary, fix)
    memory = f"{gpu.free / GIB:.1f} of {gpu.total / GIB:.1f} GiB free"
    summary = f"torch {torch_version}, CUDA on {gpu.name}, {memory}"
    if device == "cpu":
        return Check("gpu", "info", f'{summary}; unused: [image] device = "cpu"')
    if gpu.free < MIN_FREE_GPU:
        fix = "close what holds the GPU, or set [image] cpu_offload = true"
        return Check("gpu", "warn", f"{summary}: too little to draw", fix)
    return Check("gpu", "ok", summary)


def check_gpu(config: Config) -> Check:
    try:
        import torch
    except ImportError as exc:
        return Check("gpu", "fail", f"torch cannot be imported: {exc}", "reinstall speech2image")
    gpu = None
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        gpu = Gpu(torch.cuda.get_device_name(0), free, total)
    return judge_gpu(config.image.device, str(torch.__version__), gpu)


async def _server_information(address: str) -> list[str]:
    from dbus_fast import DBusError, Message, MessageType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_address=address).connect()
    try:
        name, path = "org.freedesktop.Notifications", "/org/freedesktop/Notifications"
        reply = await bus.call(Message(name, path, name, "GetServerInformation"))
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise DBusError(reply.error_name or "unknown error", text, reply)
        return [str(field) for field in reply.body]
    finally:
        bus.disconnect()


def check_notifications(config: Config) -> Check:
    """Never a failure: without a desktop the daemon draws all the same, silently."""
    from dbus_fast import DBusError

    address = session_address()
    if address is None:
        summary = "no session bus (DBUS_SESSION_BUS_ADDRESS unset, no $XDG_RUNTIME_DIR/bus)"
        fix = "run inside a desktop session: without a bus, no notifications and no pause/resume"
        return Check("notifications", "warn", summary, fix)
    if not config.notify.enabled:
        return Check("notifications", "info", "off ([notify] enabled = false)")
    try:
        info = asyncio.run(asyncio.wait_for(_server_information(address), BUS_TIMEOUT_S))
    except DBusError as exc:
        summary = f"no notification server on the session bus ({exc.type})"
        fix = "start the desktop's notification service (dunst, mako, …)"
        fix += ", or set [notify] enabled = false"
        return Check("notifications", "warn", summary, fix)
    except (OSError, EOFError, TimeoutError, ValueError) as exc:
        summary = f"session bus {address} unreachable: {exc or type(exc).__name__}"
        return Check("notifications", "warn", summary, "check DBUS_SESSION_BUS_ADDRESS")
    name, vendor, version = [*info, "", "", ""][:3]
    return Check("notifications", "ok", f"{name} {version} ({vendor}) on the session bus")


def judge_gallery(root: Path, exists: bool, error: str | None, free: int) -> Check:
    """Not writable fails (every picture would be lost); little space only warns."""
    fix = "make it writable (chown, chmod) or set [gallery] dir to a folder you own"
    if error is not None:
        if exists:
            return Check("gallery", "fail", f"{root} is not writable ({error})", fix)
        return Check("gallery", "fail", f"{root} cannot be created ({error})", fix)
    space = f"{free / GIB:.1f} GiB free"
    if free < MIN_FREE_DISK:
        fix = "free some space, or set [gallery] dir on another disk"
        return Check("gallery", "warn", f"{root}: only {space}", fix)
    if exists:
        return Check("gallery", "ok", f"{root} (writable, {space})")
    return Check("gallery", "ok", f"{root} (created at the first start, {space})")


def check_gallery(config: Config) -> Check:
    """A real write and delete, as the daemon's user: permissions alone miss read-only mounts."""
    root = Path(config.gallery.dir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        fix = "set [gallery] dir to a folder"
        return Check("gallery", "fail", f"{root} exists and is not a folder", fix)
    existing = next(p for p in (root, *root.parents) if p.exists())
    error = probe_write(root) if existing == root else probe_create(existing)
    free = shutil.disk_usage(existing).free
    return judge_gallery(root, existing == root, error, free)


def probe_write(folder: Path) -> str | None:
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".doctor-")
        try:
            os.write(handle, b"speech2image doctor\n")
        finally:
            os.close(handle)
            os.unlink(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def probe_create(parent: Path) -> str | None:
    """Whether a folder can be made in ``parent``; the one made is removed again."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".speech2image-doctor-"))
    except OSError as exc:
        return f"{parent}: {exc.strerror or exc}"
    return None


def judge_unit(active: str | None, enabled: str) -> Check:
    """``active`` None: no user manager. Running in a terminal is fine, so mostly info."""
    installed = enabled not in ("", "not-found")
    if active is None:
        state = f"the unit is installed ({enabled})" if installed else "the unit is not installed"
        fix = "log in to a desktop session (or `loginctl enable-linger`) to start it at login"
        if not installed:
            fix = "to start it at login: speech2image service install --enable"
        summary = f"no systemd user manager runs here; {state}; a terminal works"
        return Check("service", "info", summary, fix)
    if not installed:
        fix = "speech2image service install --enable --now"
        return Check("service", "info", "the user unit is not installed", fix)
    if active == "failed":
        fix = "speech2image service logs; then systemctl --user restart speech2image"
        return Check("service", "warn", f"the unit has failed ({enabled})", fix)
    if active in ("active", "reloading", "activating"):
        return Check("service", "ok", f"{active} ({enabled})")
    fix = "systemctl --user enable --now speech2image"
    return Check("service", "info", f"{active} ({enabled})", fix)


def check_service() -> Check:
    if shutil.which("systemctl") is None:
        return Check("service", "info", "no systemctl: not a systemd system; a terminal works")
    active = _systemctl("is-active")
    enabled = _systemctl("is-enabled")
    return judge_unit(active, enabled or "")


def _systemctl(verb: str) -> str | None:
    """The state systemctl prints, or None when it printed none (no manager, a timeout)."""
    try:
        done = run_tool(["systemctl", "--user", verb, UNIT_NAME], SYSTEMCTL_TIMEOUT_S)
    except (OSError, ToolMissingError) as exc:
        log.debug("systemctl --user %s: %s", verb, exc)
        return None
    state = done.stdout.strip()
    log.debug("systemctl --user %s: %r (%s)", verb, state, done.stderr.strip())
    return state or None
