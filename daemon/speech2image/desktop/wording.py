"""What the desktop notification says, and when: pure decisions, no bus.

One notification lives through a request, updated in place: "Listening…" at the wake
word, "Drawing “a red fox…”" once moderation accepted it, "… 2/4" as the steps finish,
then the picture, or why there is none. The notifier (:mod:`.notify`) keeps a
:class:`Track` per request and asks :func:`decide` what each event changes; it only
sends what it is told. Keeping the decisions here means the wording, the throttling
and the coalescing are tested with an injected clock instead of a notification server.

With ``[notify] progress = false`` only the final notifications are shown, exactly as
before progress existed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..config import NotifyConfig
from ..events import Accepted, Event, ImageWritten, Progress, Rejected, Wake

APP_NAME = "speech2image"
HEARD_CHARS = 120  # of an unclear request's words, quoted back in its notification
PROMPT_CHARS = 40  # of the prompt, quoted in "Drawing “…”": a glance, not the request
PROGRESS_INTERVAL_S = 0.5  # at most ~2 progress updates a second for one request
URGENCY_NORMAL = 1
URGENCY_CRITICAL = 2


@dataclass(frozen=True)
class Request:
    """One notification to show; ``image_path`` (absolute) makes it an image notice.

    ``progress`` marks the in-between notices ("Listening…", "Drawing…"): they are
    replaced by the next one and must not chime at every update.
    """

    summary: str
    body: str
    urgency: int
    image_path: str | None = None
    progress: bool = False


@dataclass(frozen=True)
class Close:
    """Take the request's progress notice off the screen: its end shows nothing."""


Update = Request | Close


@dataclass(frozen=True)
class Track:
    """What the notifier remembers of one request between its events."""

    prompt: str = ""  # shortened, from its `accepted` event
    shown: bool = False  # a progress notice is up, or on its way
    progress_at: float | None = None  # when the "Drawing" notice last changed (monotonic)
    ended: bool = False  # its terminal event came: later progress is stale


@dataclass(frozen=True)
class Decision:
    """What an event changes: the update to send (if any) and the request's new track.

    ``ends``: the update is the request's last; the notifier forgets its notice id.
    """

    update: Update | None
    track: Track | None
    ends: bool = False


@dataclass(frozen=True)
class Pending:
    """An update waiting for the notification thread; ``request_id`` None: no request."""

    request_id: str | None
    update: Update
    ends: bool = False


_PROGRESS_EVENTS = (Wake, Accepted, Progress)


def concerns(event: Event, config: NotifyConfig) -> bool:
    """Whether ``event`` may change what is shown; a cheap filter before any thread
    starts. With progress off, only events that show a final notification do."""
    if not config.enabled:
        return False
    if config.progress and isinstance(event, (*_PROGRESS_EVENTS, ImageWritten, Rejected)):
        return event.id is not None or request_for(event, config) is not None
    return request_for(event, config) is not None


def decide(event: Event, config: NotifyConfig, track: Track | None, now: float) -> Decision:
    """What ``event`` changes, given what is known of its request (``track``) at ``now``."""
    if isinstance(event, ImageWritten | Rejected):
        return _end(event, config, track)
    if not (config.enabled and config.progress and isinstance(event, _PROGRESS_EVENTS)):
        return Decision(None, track)
    if event.id is None or (track is not None and track.ended):  # stale: its request ended
        return Decision(None, track)
    return _progress(event, track or Track(), now)


def _progress(event: Event, track: Track, now: float) -> Decision:
    """The progress notice: "Listening…", then "Drawing “…”", then its steps, throttled."""
    if isinstance(event, Wake):
        return Decision(listening(), dataclasses.replace(track, shown=True))
    if isinstance(event, Accepted):
        prompt = shorten(" ".join(event.text.split()), PROMPT_CHARS)
        new = dataclasses.replace(track, prompt=prompt, shown=True, progress_at=now)
        return Decision(drawing(prompt), new)
    if isinstance(event, Progress) and progress_due(
        track.progress_at, now, event.step, event.steps
    ):
        new = dataclasses.replace(track, shown=True, progress_at=now)
        return Decision(drawing(track.prompt, event.step, event.steps), new)
    return Decision(None, track)


def _end(event: ImageWritten | Rejected, config: NotifyConfig, track: Track | None) -> Decision:
    """The final notification replaces the progress notice; with none to show (its
    switch is off, or ``shutdown``), the progress notice is closed, not left up."""
    ended = Track(ended=True) if event.id is not None else None
    final = request_for(event, config)
    if final is not None:
        return Decision(final, ended, ends=True)
    if track is not None and track.shown and not track.ended:
        return Decision(Close(), ended, ends=True)
    return Decision(None, ended)


def progress_due(last: float | None, now: float, step: int, steps: int) -> bool:
    """Throttle: a step is shown when none was shown for :data:`PROGRESS_INTERVAL_S`,
    and the last step always (it is what the user watches for). Skipped steps are
    not missed: the next one says more."""
    return last is None or step >= steps or now - last >= PROGRESS_INTERVAL_S


def supersedes(new: Pending, queued: Pending) -> bool:
    """Whether ``new`` may take the place of ``queued``, still unsent, in the queue.

    A request's newer state makes its unsent progress moot (so a slow notification
    server never makes the queue grow), but a final notification is never dropped.
    """
    return new.request_id is not None and new.request_id == queued.request_id and not queued.ends


def listening() -> Request:
    return Request(APP_NAME, "Listening…", URGENCY_NORMAL, progress=True)


def drawing(prompt: str, step: int | None = None, steps: int | None = None) -> Request:
    """ "Drawing “a red fox…” 2/4"; the prompt is already shortened."""
    body = f"Drawing “{prompt}”" if prompt else "Drawing…"
    if step is not None and steps:
        body = f"{body} {step}/{steps}"
    return Request(APP_NAME, body, URGENCY_NORMAL, progress=True)


def request_for(event: Event, config: NotifyConfig) -> Request | None:
    """The final notification for ``event``, or None.

    Plain ``Error`` events are ignored: a failed request also gets a ``rejected``
    (reason ``error``) event, and one notification per request is enough.
    """
    if not config.enabled:
        return None
    if isinstance(event, ImageWritten):
        if not config.image:
            return None
        return Request(APP_NAME, event.prompt, URGENCY_NORMAL, os.path.abspath(event.path))
    if isinstance(event, Rejected):
        if not getattr(config, event.reason, False):  # [notify] has one switch per reason
            return None
        urgency = URGENCY_CRITICAL if event.reason == "error" else URGENCY_NORMAL
        return Request(f"{APP_NAME}: request rejected", rejected_body(event), urgency)
    return None


_FIXED_BODIES = {
    "empty": "Nothing was heard after the wake word",
    "busy": "Still working on earlier requests; please try again",
}


def rejected_body(event: Rejected) -> str:
    """Why no image came, in plain words. Never the (private, maybe toxic) prompt, but
    for ``unclear`` the words Whisper made out: the user sees what went wrong, and
    says it again. ``unsupported`` names the language, not the words."""
    if event.reason == "unclear":
        return _unclear_body(event.detail)
    if event.reason == "toxic":
        labels = ", ".join(label.replace("_", " ") for label in event.flagged)
        if labels:
            return f"Not drawn: the request was flagged as {labels}"
        return "Not drawn: the request was flagged by moderation"
    if event.reason in _FIXED_BODIES:
        return _FIXED_BODIES[event.reason]
    prefix = "Not drawn" if event.reason == "unsupported" else "Something went wrong"
    return f"{prefix}: {event.detail}" if event.detail else prefix


def _unclear_body(heard: str) -> str:
    heard = shorten(" ".join(heard.split()))
    quoted = f': "{heard}"' if heard else ""
    return f"Didn't catch that clearly{quoted}. Please say it again."


def shorten(text: str, limit: int = HEARD_CHARS) -> str:
    """At most ``limit`` characters, cut at a word: a notification is no transcript."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0] + "…"
