"""Building the stages from a config: the listener, and everything after it, loaded and warm.

Kept apart from the daemon's lifecycle so that a config reload (SIGHUP) can build
exactly the parts whose keys changed with the same functions a start uses.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .events import EventSink, FanOut
from .gallery.writer import GalleryWriter
from .ledger import Ledger
from .listening.listener import Listener
from .listening.vad import SileroVad
from .listening.wake_models import resolve_wake_models
from .listening.wakeword import OpenWakeWordScorer, WakeGate
from .moderation.verdict import PromptModerator
from .request import Request
from .speech.transcribe import Transcriber
from .steps import Draw, ImageSource, ToDraw

if TYPE_CHECKING:
    from .desktop.sound import WakeSound

Feedback = Callable[[], float]


def build_listener(config: Config, feedback: Feedback | None = None) -> Listener:
    """Load the wake-word and VAD models (local files only) into a Listener.

    ``feedback`` runs at each wake (the wake sound) and says how many seconds of
    input after it to keep out of the utterance.
    """
    files = resolve_wake_models(config.wake, config.source)
    scorer = OpenWakeWordScorer(files.models, files.melspectrogram, files.embedding)
    gate = WakeGate.from_config(config.wake, scorer.names)
    return Listener(scorer, gate, SileroVad(), config.listen, feedback=feedback)


def wake_sound(config: Config, microphone: bool) -> WakeSound | None:
    """The wake sound, for a microphone only: a file has no one to hear it."""
    if not (microphone and config.feedback.sound):
        return None
    from .desktop.sound import WakeSound

    return WakeSound(config.feedback.volume)


def feedback_of(sound: WakeSound | None) -> Feedback | None:
    return None if sound is None else sound.play


@dataclass(frozen=True)
class Stages:
    """Everything after the listener, loaded and warm. Tests and benchmarks pass their own."""

    transcriber: Transcriber
    moderator: PromptModerator
    generator: ImageSource
    writer: GalleryWriter
    notifier: Any  # a DesktopNotifier (an EventSink with close(timeout)), or None

    @classmethod
    def load(cls, config: Config) -> Stages:
        """Load every model from local files (never the network) and warm them up."""
        from .images.generate import Generator
        from .moderation.combined import build_moderator
        from .speech.transcribe import WhisperTranscriber

        transcriber = WhisperTranscriber(config.speech, config.source)
        transcriber.warm_up()
        moderator = build_moderator(config.moderation, config.source)
        generator = Generator(config.image, config.source)
        generator.warm_up()
        writer = GalleryWriter(Path(config.gallery.dir))
        writer.prepare()
        return cls(transcriber, moderator, generator, writer, desktop_notifier(config))

    def close(self, timeout: float | None = None) -> None:
        if self.notifier is not None:
            self.notifier.close() if timeout is None else self.notifier.close(timeout)


def desktop_notifier(config: Config, environ: Mapping[str, str] = os.environ) -> Any:
    if not config.notify.enabled:
        return None
    from .desktop.notify import DesktopNotifier

    return DesktopNotifier(
        config.notify, opener=picture_opener(environ), locate=picture_locator(config)
    )


def picture_locator(config: Config) -> Callable[[str], str]:
    """What "Open" opens: the image's view on the page the daemon serves, else the file.

    With ``port = 0`` the address is only known once bound, so the file it is."""
    gallery = config.gallery
    if not gallery.serve or gallery.port == 0:
        return str
    from .gallery.server import ServeOptions, detail_url, local_url

    base = local_url(gallery.host, gallery.port, ServeOptions.from_config(gallery).open_to_network)
    root = Path(gallery.dir)
    return lambda path: detail_url(base, root, Path(path)) or path


def picture_opener(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The command the notification's Open action runs, before the picture's path.

    Under the systemd unit a child would inherit the sandbox (read-only home, a
    private /tmp without the X11 socket, no network), so the viewer is started by the
    user manager instead, outside it, as if from the desktop.
    """
    if environ.get("INVOCATION_ID") and shutil.which("systemd-run"):
        return ("systemd-run", "--user", "--collect", "--quiet", "xdg-open")
    return ("xdg-open",)


def generate_once(
    config: Config, prompt: str, sink: EventSink, seed: int | None = None
) -> Path | None:
    """`speech2image generate`: moderation, generation, gallery, notification; no audio.

    The typed prompt is a request like a spoken one (source ``command-line``) and ends
    like one: ``image``, or ``rejected`` (toxic, error, shutdown). Returns the image
    path, or None when there is no image (the events say why).
    """
    from .images.generate import Generator
    from .moderation.combined import build_moderator
    from .shutdown import StopRequested
    from .steps import moderate

    notifier = desktop_notifier(config)
    ledger = Ledger(sink if notifier is None else FanOut(sink, notifier), lambda: 0.0)
    request = Request.start("command-line", "speech2image generate", prompt=prompt, seed=seed)
    ledger.open(request)
    try:
        accepted = moderate(
            request, build_moderator(config.moderation, config.source), ledger, lambda: 0.0
        )
        if accepted is None:
            return None
        writer = GalleryWriter(Path(config.gallery.dir))
        writer.prepare()
        draw = Draw(Generator(config.image, config.source), writer, ledger, lambda: 0.0)
        return draw(ToDraw(accepted, time.monotonic()))
    except StopRequested:
        ledger.abandon_open("stopped before the picture was finished")
        raise
    except Exception as exc:  # a model or gallery that cannot be used: say so, then exit
        ledger.fail(request.id, "setup", str(exc))
        raise
    finally:
        if notifier is not None:
            notifier.close()
