"""Command line: parse, load config, call one function. Heavy imports stay inside commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING

from . import __version__
from .config import EX_CONFIG, load_config
from .configcheck import ConfigError
from .shutdown import Shutdown, StopRequested

if TYPE_CHECKING:
    pass

log = logging.getLogger("speech2image")

EX_FAILURE = 1
EX_NOINPUT = 66
MODEL_KINDS = ("wake", "speech", "moderation", "image")


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything slow: a SIGTERM or Ctrl-C while models load must stop cleanly too.
    shutdown = Shutdown()
    shutdown.install()
    args = build_parser().parse_args(argv)
    args.shutdown = shutdown
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EX_CONFIG)
    except (StopRequested, KeyboardInterrupt):  # a stop is not a failure: no traceback
        log.info("stopped")
        return 0


def _fail(message: str, status: int) -> int:
    print(f"speech2image: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech2image",
        description="Say a wake word, then what you want to see.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(command=lambda _args: _usage(parser))
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $SPEECH2IMAGE_CONFIG, then ~/.config/speech2image/config.toml)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", parents=[config_flag], help="run the daemon")
    run.add_argument("--input", metavar="FILE", help="listen to a sound file instead of the mic")
    run.add_argument("--realtime", action="store_true", help="pace --input like a microphone")
    run.add_argument("--events", metavar="FILE", help="write events as JSON lines (- = stdout)")
    run.set_defaults(command=_runner("cmd_run"))

    serve = sub.add_parser(
        "serve",
        parents=[config_flag],
        help="run the daemon without a microphone, as a Wyoming service for Home Assistant",
    )
    serve.add_argument(
        "--uri", help="where to listen (default: [wyoming] uri, else tcp://127.0.0.1:10650)"
    )
    serve.add_argument("--zeroconf", action="store_true", help="announce it for discovery (mDNS)")
    serve.add_argument(
        "--allow-network",
        action="store_true",
        help="allow an address beyond loopback (Wyoming has no authentication)",
    )
    serve.add_argument("--events", metavar="FILE", help="write events as JSON lines (- = stdout)")
    serve.set_defaults(command=_runner("cmd_serve"))

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(command=cmd_devices)

    models = sub.add_parser("models", help="manage models")
    models_sub = models.add_subparsers(title="actions", metavar="ACTION", required=True)
    pull = models_sub.add_parser(
        "pull", parents=[config_flag], help="download the configured models (needs network)"
    )
    pull.add_argument(
        "kinds",
        nargs="*",
        type=_model_kind,
        metavar="KIND",
        help=f"only these: {', '.join(MODEL_KINDS)} (default: all)",
    )
    pull.set_defaults(command=cmd_models_pull)

    config = sub.add_parser("config", parents=[config_flag], help="print the effective config")
    config.set_defaults(command=cmd_config)

    transcribe = sub.add_parser(
        "transcribe", parents=[config_flag], help="transcribe a sound file with [speech]"
    )
    transcribe.add_argument("file", metavar="FILE")
    transcribe.add_argument("--json", action="store_true", help="segments with timings, as JSON")
    transcribe.set_defaults(command=cmd_transcribe)

    check = sub.add_parser(
        "check-prompt", parents=[config_flag], help="moderate a prompt: exit 0 allowed, 1 rejected"
    )
    check.add_argument("text", metavar="TEXT")
    check.add_argument("--json", action="store_true", help="the verdict as JSON")
    check.add_argument(
        "--language", metavar="CODE", help="the prompt's language if known (else identified)"
    )
    check.set_defaults(command=cmd_check_prompt)

    generate = sub.add_parser(
        "generate", parents=[config_flag], help="moderate a prompt, draw it, print the image path"
    )
    generate.add_argument("prompt", metavar="PROMPT")
    generate.add_argument("--seed", type=int, help="overrides [image] seed")
    generate.add_argument(
        "--events", metavar="FILE", help="write events as JSON lines (- = stdout)"
    )
    generate.set_defaults(command=cmd_generate)
    # Command groups in their own modules: the service, its control, the check-up, the page.
    from .control.client import register as register_control
    from .doctor import register as register_doctor
    from .gallery.command import register as register_gallery
    from .service.commands import register as register_service

    for register in (register_service, register_control, register_doctor, register_gallery):
        register(sub)
    return parser


def _model_kind(text: str) -> str:
    if text not in MODEL_KINDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(MODEL_KINDS)}")
    return text


def _runner(name: str) -> Callable[[argparse.Namespace], int]:
    """A command of runner.py, imported when it runs (it pulls in the daemon)."""

    def command(args: argparse.Namespace) -> int:
        from . import runner

        function: Callable[[argparse.Namespace], int] = getattr(runner, name)
        return function(args)

    return command


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EX_FAILURE


def cmd_generate(args: argparse.Namespace) -> int:
    from .gallery.writer import GalleryError
    from .model_files import ModelError
    from .runner import event_sink
    from .stages import generate_once

    config = load_config(args.config)
    with ExitStack() as stack:
        try:
            path = generate_once(config, args.prompt, event_sink(args.events, stack), args.seed)
        except (ModelError, GalleryError) as exc:
            return _fail(str(exc), EX_CONFIG)
    if path is None:
        return EX_FAILURE
    print(path)
    return 0


def cmd_devices(_args: argparse.Namespace) -> int:
    from .listening.microphone import PortAudioMissingError, import_sounddevice, input_devices

    try:
        sd = import_sounddevice()
    except PortAudioMissingError as exc:
        return _fail(str(exc), EX_CONFIG)
    default = sd.default.device[0]
    devices = input_devices()
    if not devices:
        return _fail("no audio input devices found", EX_FAILURE)
    for device in devices:
        marker = "*" if device["index"] == default else " "
        print(
            f"{marker} {device['index']:>3}  {device['name']}  "
            f"({device['max_input_channels']} ch, {device['default_samplerate']:.0f} Hz)"
        )
    print("\n* = default input; set [audio] device to a name substring or index to choose")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from .images.pull import pull_image_model
    from .listening.wake_models import pull_wake_models, wake_model_dir
    from .model_files import ModelError
    from .moderation.embedder import prepare_embedder
    from .speech.transcribe import pull_speech_model

    config = load_config(args.config)
    kinds = set(args.kinds or MODEL_KINDS)

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        if "wake" in kinds:
            pull_wake_models(wake_model_dir(config.wake), say)
        if "speech" in kinds:
            pull_speech_model(config.speech, say)
        if "moderation" in kinds and "semantic" in config.moderation.backends:
            prepare_embedder(say)  # no download: an ONNX export of the packaged weights
        if "image" in kinds:
            pull_image_model(config.image, say)
    except ModelError as exc:
        return _fail(str(exc), EX_FAILURE)
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .listening.audio import AudioError, read_audio
    from .model_files import ModelError
    from .speech.guard import hallucination
    from .speech.transcribe import WhisperTranscriber, transcribe_segments

    config = load_config(args.config)
    try:
        audio = read_audio(args.file)
        transcriber = WhisperTranscriber(config.speech, config.source)
    except AudioError as exc:
        return _fail(str(exc), EX_NOINPUT)
    except ModelError as exc:
        return _fail(str(exc), EX_CONFIG)
    result = transcriber.transcribe(audio)
    if not args.json:
        print(result.text)
        return 0
    report = {
        "text": result.text,
        "language": result.language,
        "audio_s": round(len(audio) / 16000, 3),
        "seconds": round(result.seconds, 3),
        "hallucination": hallucination(result, config.speech),
        "segments": transcribe_segments(result.segments),
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def cmd_check_prompt(args: argparse.Namespace) -> int:
    from .model_files import ModelError
    from .moderation.combined import build_moderator

    config = load_config(args.config)
    try:
        moderator = build_moderator(config.moderation, config.source)
        verdict = moderator.check(args.text, language=args.language)
    except ModelError as exc:
        return _fail(str(exc), EX_CONFIG)
    if args.json:
        print(json.dumps(dataclasses.asdict(verdict), indent=2))
    elif verdict.unsupported:
        print(f"rejected (unsupported: {verdict.unsupported})")
    else:
        state = "allowed" if verdict.allowed else f"rejected ({', '.join(verdict.flagged)})"
        print(f"{state} by {verdict.backend}")
        for label, score in sorted(verdict.scores.items(), key=lambda item: -item[1]):
            print(f"  {label:16} {score:.3f}")
    return 0 if verdict.allowed else EX_FAILURE


def cmd_config(args: argparse.Namespace) -> int:
    import tomli_w

    from .config import to_toml_dict

    config = load_config(args.config)
    print(f"# effective configuration (from {config.source})")
    print(tomli_w.dumps(to_toml_dict(config)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
