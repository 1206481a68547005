"""`speech2image doctor`: is this machine ready to run the daemon, and if not, what to do.

One line per check (config, PortAudio, the microphone with a live level meter, the
four models, torch and the GPU, the session bus, the gallery, the user unit), the fix
under every line that is not ``ok``, and a summary. The exit status is 1 when a
required check fails; warnings (CPU only, no notification server, little disk) and
information (no user manager: a terminal is fine) do not fail it.

The checks themselves are in :mod:`.doctor_checks`; the microphone is measured here
because its meter writes to the terminal while it listens.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

from .config import AudioConfig, Config
from .doctor_checks import (
    Check,
    check_config,
    check_gallery,
    check_gpu,
    check_image,
    check_moderation,
    check_notifications,
    check_service,
    check_speech,
    check_wake,
)

if TYPE_CHECKING:  # numpy only when the microphone is measured: every command parses this
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

GROUPS = ("microphone", "models", "gpu", "notifications", "gallery", "service")
LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "info": "info"}
NAME_WIDTH = 14
SILENCE_DBFS = -60.0  # a live microphone in a quiet room stays well above this
METER_FLOOR_DBFS = -60.0
METER_WIDTH = 30
METER_TICK_S = 0.1
CLOSE_TIMEOUT_S = 2.0

Meter = Callable[[float], None]  # the level of the last tick, in dBFS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor", help="check microphone, models, GPU, desktop and gallery; say what to fix"
    )
    doctor.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $SPEECH2IMAGE_CONFIG, then ~/.config/speech2image/config.toml)",
    )
    doctor.add_argument("--json", action="store_true", help="the checks as JSON")
    doctor.add_argument(
        "--seconds",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="how long to listen to the microphone (default 2)",
    )
    doctor.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        metavar="CHECK",
        help=f"only these checks besides the config (repeatable): {', '.join(GROUPS)}",
    )
    doctor.set_defaults(command=cmd_doctor)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 30:
        raise argparse.ArgumentTypeError("between 0.1 and 30 seconds")
    return value


def cmd_doctor(args: argparse.Namespace) -> int:
    out = sys.stdout
    live = not args.json and out.isatty()
    checks: list[Check] = []
    for check in run_checks(args.config, args.only or GROUPS, args.seconds, out if live else None):
        checks.append(check)
        if not args.json:
            print(format_check(check), file=out, flush=True)
    if args.json:
        print(json.dumps(report_json(checks), indent=2), file=out)
    else:
        print(summary_line(checks, complete=not args.only), file=out)
    return exit_status(checks)


def run_checks(
    explicit: str | None, groups: Sequence[str], seconds: float, terminal: IO[str] | None
) -> Iterator[Check]:
    """Each check as soon as it is done, so a slow one (torch, the meter) shows progress."""
    first, config = check_config(explicit)
    yield first
    steps: dict[str, Callable[[Config], Iterator[Check]]] = {
        "microphone": lambda c: check_audio(c.audio, seconds, terminal),
        "models": lambda c: (check(c) for check in MODEL_CHECKS),
        "gpu": lambda c: iter((check_gpu(c),)),
        "notifications": lambda c: iter((check_notifications(c),)),
        "gallery": lambda c: iter((check_gallery(c),)),
        "service": lambda _c: iter((check_service(),)),
    }
    for group in GROUPS:
        if group in groups:
            yield from steps[group](config)


MODEL_CHECKS = (check_wake, check_speech, check_moderation, check_image)


def exit_status(checks: Sequence[Check]) -> int:
    return 1 if any(check.status == "fail" for check in checks) else 0


def format_check(check: Check) -> str:
    """``  FAIL  wake          <what>`` and, when there is one, the fix on the next line."""
    line = f"  {LABELS[check.status]:<5} {check.name:<{NAME_WIDTH}} {check.summary}"
    if check.fix and check.status != "ok":
        word = "hint" if check.status == "info" else "fix"
        line += f"\n  {'':<5} {'':<{NAME_WIDTH}} {word}: {check.fix}"
    return line


def summary_line(checks: Sequence[Check], complete: bool = True) -> str:
    """The counts, and what to do next; ``complete`` False when ``--only`` left checks out."""
    counts = {status: sum(c.status == status for c in checks) for status in LABELS}
    parts = [f"{counts['ok']} ok"]
    if counts["warn"]:
        parts.append(f"{counts['warn']} warning{'s' * (counts['warn'] != 1)}")
    if counts["fail"]:
        parts.append(f"{counts['fail']} failed")
    if counts["info"]:
        parts.append(f"{counts['info']} for information")
    if counts["fail"]:
        verdict = "fix the failures above before `speech2image run`"
    else:
        verdict = "ready to `speech2image run`" if complete else "nothing required failed"
    return f"{', '.join(parts)}: {verdict}"


def report_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": exit_status(checks) == 0, "checks": [asdict(check) for check in checks]}


@dataclass(frozen=True)
class Levels:
    peak_dbfs: float  # -inf when every sample is zero
    rms_dbfs: float
    seconds: float  # of audio received


def dbfs(amplitude: float) -> float:
    """Decibels relative to full scale (1.0); digital silence is minus infinity."""
    return 20 * math.log10(amplitude) if amplitude > 0 else -math.inf


def levels_of(samples: npt.NDArray[np.float32], rate: int) -> Levels:
    import numpy as np

    if samples.size == 0:
        return Levels(-math.inf, -math.inf, 0.0)
    peak = float(np.max(np.abs(samples)))
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return Levels(dbfs(peak), dbfs(rms), samples.size / rate)


def judge_levels(device: str, levels: Levels, listened: float) -> Check:
    """No audio at all fails (the daemon would hear nothing); silence only warns (muted?)."""
    if levels.seconds == 0:
        summary = f"{device} opened but delivered no audio in {listened:.1f} s"
        fix = "is the audio server working and the device free? `speech2image devices` lists inputs"
        return Check("microphone", "fail", summary, fix)
    over = f"over {levels.seconds:.1f} s"
    fix = "unmute it or raise its input volume (pavucontrol, alsamixer), or set [audio] device"
    if levels.peak_dbfs == -math.inf:
        summary = f"{device}: silence, every sample zero {over}: is the microphone muted?"
        return Check("microphone", "warn", summary, fix)
    measured = f"peak {levels.peak_dbfs:.1f} dBFS, RMS {levels.rms_dbfs:.1f} dBFS {over}"
    if levels.peak_dbfs < SILENCE_DBFS:
        summary = f"{device}: {measured}: nearly silent, is the microphone muted?"
        return Check("microphone", "warn", summary, fix)
    return Check("microphone", "ok", f"{device}: {measured}")


def no_input(error: str, inputs: Sequence[str]) -> Check:
    """The configured input is not there: say which ones are."""
    if inputs:
        fix = f"set [audio] device to one of: {'; '.join(inputs)} (see speech2image devices)"
    else:
        fix = (
            "plug a microphone in or start the audio server (PulseAudio, PipeWire); "
            "`speech2image devices` lists the inputs, [audio] device picks one"
        )
    return Check("microphone", "fail", error, fix)


def meter_bar(level_dbfs: float, width: int = METER_WIDTH) -> str:
    """``[=======       ]  -23.4 dBFS``: the level from the floor (-60) to full scale."""
    fraction = 0.0
    if level_dbfs > METER_FLOOR_DBFS:
        fraction = min(1.0, 1 - level_dbfs / METER_FLOOR_DBFS)
    filled = round(fraction * width)
    shown = "  -inf" if level_dbfs == -math.inf else f"{level_dbfs:6.1f}"
    return f"[{'=' * filled}{' ' * (width - filled)}] {shown} dBFS"


def terminal_meter(terminal: IO[str]) -> Meter:
    """A bar redrawn in place with ``\\r``; the check's own line replaces it."""

    def show(level: float) -> None:
        prefix = f"  {'..':<5} {'microphone':<{NAME_WIDTH}} say something "
        terminal.write(f"\r{prefix}{meter_bar(level)}\x1b[K")
        terminal.flush()

    return show


def check_audio(config: AudioConfig, seconds: float, terminal: IO[str] | None) -> Iterator[Check]:
    """PortAudio, then the configured input listened to for ``seconds`` (and no longer)."""
    from .listening.microphone import PortAudioMissingError, import_sounddevice

    try:
        sd = import_sounddevice()
    except PortAudioMissingError:
        summary = "PortAudio (libportaudio2) is not installed, so no microphone can be opened"
        fix = "sudo apt-get install libportaudio2"
        yield Check("portaudio", "fail", summary, fix)
        yield Check("microphone", "fail", "not checked: PortAudio is missing", fix)
        return
    yield Check("portaudio", "ok", str(sd.get_portaudio_version()[1]))
    meter = terminal_meter(terminal) if terminal is not None else None
    check = listen(config, seconds, meter)
    if terminal is not None:
        terminal.write("\r\x1b[K")
    yield check


def listen(config: AudioConfig, seconds: float, meter: Meter | None) -> Check:
    import numpy as np

    from .listening.audio import AudioError
    from .listening.microphone import (
        describe_device,
        import_sounddevice,
        input_devices,
        resolve_input,
    )

    sd = import_sounddevice()
    try:
        index, rate = resolve_input(config)
        label = describe_device(index)
    except AudioError as exc:
        return no_input(str(exc), [f"#{d['index']} {d['name']}" for d in input_devices()])
    blocks: list[npt.NDArray[np.float32]] = []

    def callback(indata: npt.NDArray[np.float32], *_: Any) -> None:
        blocks.append(indata[:, 0].copy())  # list.append is atomic: no lock in the callback

    try:
        stream = sd.InputStream(
            device=index, channels=1, samplerate=rate, dtype="float32", callback=callback
        )
        stream.start()
    except sd.PortAudioError as exc:
        fix = "close programs that hold it, or set [audio] device (see speech2image devices)"
        return Check("microphone", "fail", f"{label} cannot be opened: {exc}", fix)
    try:
        _meter_until(time.monotonic() + seconds, blocks, meter)
    finally:
        _close(stream)
    audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return judge_levels(label, levels_of(audio, rate), seconds)


def _meter_until(
    deadline: float, blocks: list[npt.NDArray[np.float32]], meter: Meter | None
) -> None:
    import numpy as np

    seen = 0
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(METER_TICK_S, left))
        fresh, seen = blocks[seen:], len(blocks)
        if meter is not None:
            peak = max((float(np.max(np.abs(b))) for b in fresh if b.size), default=0.0)
            meter(dbfs(peak))


def _close(stream: Any) -> None:
    """abort(), not stop() (which waits for buffers and can hang on a dead device), in a
    thread, so a wedged device cannot keep doctor or the microphone past the check."""

    def close() -> None:
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except Exception:  # a dying device may fail in any way; the report is made
            log.debug("closing the audio stream failed", exc_info=True)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    closer.join(CLOSE_TIMEOUT_S)
