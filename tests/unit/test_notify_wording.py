"""What a rejection notification says, for the reasons that quote something back."""

from __future__ import annotations

import pytest

from speech2image.config import NotifyConfig
from speech2image.desktop.wording import (
    PROGRESS_INTERVAL_S,
    PROMPT_CHARS,
    Close,
    Decision,
    Pending,
    Request,
    Track,
    concerns,
    decide,
    drawing,
    listening,
    progress_due,
    rejected_body,
    supersedes,
)
from speech2image.events import (
    REJECT_REASONS,
    Accepted,
    Event,
    ImageWritten,
    Progress,
    Rejected,
    Transcript,
    Wake,
)


def rejected(reason: str, detail: str = "", flagged: tuple[str, ...] = ()) -> Rejected:
    return Rejected(id="r", t=0.0, reason=reason, detail=detail, flagged=flagged)  # type: ignore[arg-type]


def test_unsupported_names_the_language_not_the_words() -> None:
    body = rejected_body(rejected("unsupported", "the request is in Spanish (es, identified)"))
    assert body == "Not drawn: the request is in Spanish (es, identified)"


def test_unclear_without_words_still_asks_again() -> None:
    """The words are withheld when moderation would refuse them."""
    expected = "Didn't catch that clearly. Please say it again."
    assert rejected_body(rejected("unclear", "")) == expected


def test_every_reason_that_notifies_has_its_own_wording() -> None:
    """`shutdown` never notifies: [notify] has no switch for it, so it is left out."""
    notifying = [reason for reason in REJECT_REASONS if hasattr(NotifyConfig(), reason)]
    assert set(REJECT_REASONS) - set(notifying) == {"shutdown"}
    bodies = {reason: rejected_body(rejected(reason, "x", ("threat",))) for reason in notifying}
    assert len(set(bodies.values())) == len(bodies)


def test_unclear_words_are_withheld_when_moderation_would_refuse_them() -> None:
    from speech2image.config import SpeechConfig
    from speech2image.ledger import Ledger
    from speech2image.moderation.verdict import Verdict
    from speech2image.steps import Understand

    class Rules:
        """Stands in for moderation: what is under test is what the step does with it."""

        name = "rules"

        def check(self, text: str, language: str | None = None) -> Verdict:
            return Verdict("kill" not in text, {}, [], self.name)

    step = Understand(
        SpeechConfig(),
        transcriber=None,  # type: ignore[arg-type]
        moderator=Rules(),
        ledger=Ledger(lambda _event: None, lambda: 0.0),  # type: ignore[arg-type]
        clock=lambda: 0.0,
        forward=lambda _request: None,
    )
    assert step._heard("a rid fax in the snew") == "a rid fax in the snew"
    assert step._heard("creator not to kill me") == ""


# One notification through a request: the decisions, with an injected clock.

PROMPT = "a red fox sleeping under a cherry tree in the snow at dawn"
SHORT = "a red fox sleeping under a cherry tree…"  # at most PROMPT_CHARS, cut at a word
RID = "2f1c0e9ab3d4"


def wake(rid: str = RID) -> Wake:
    return Wake(id=rid, t=0.0, model="hey_jarvis", score=0.9)


def accepted(rid: str = RID, text: str = PROMPT) -> Accepted:
    return Accepted(id=rid, t=0.0, text=text)


def progress(step: int, steps: int = 4, rid: str = RID) -> Progress:
    return Progress(id=rid, t=0.0, step=step, steps=steps)


def image(rid: str = RID) -> ImageWritten:
    path = "/gallery/2f1c0e9ab3d4.png"
    return ImageWritten(id=rid, t=0.0, path=path, prompt=PROMPT, seed=1, model="sd", seconds=1.0)


def play(timed: list[tuple[float, Event]], config: NotifyConfig | None = None) -> list[Decision]:
    """Feed events (at their times) through decide(), keeping each request's track."""
    tracks: dict[str, Track] = {}
    decisions = []
    for now, event in timed:
        rid = event.id or ""
        decision = decide(event, config or NotifyConfig(), tracks.get(rid), now)
        if decision.track is not None:
            tracks[rid] = decision.track
        decisions.append(decision)
    return decisions


def bodies(decisions: list[Decision]) -> list[str | None]:
    out: list[str | None] = []
    for decision in decisions:
        update = decision.update
        out.append(update.body if isinstance(update, Request) else type(update).__name__)
    return out


def whole_request(*, spacing: float = 1.0) -> list[tuple[float, Event]]:
    events: list[Event] = [wake(), accepted(), *(progress(s) for s in (1, 2, 3, 4)), image()]
    return [(i * spacing, event) for i, event in enumerate(events)]


def test_listening_then_drawing_then_its_steps_then_the_picture() -> None:
    decisions = play(whole_request())
    assert bodies(decisions) == [
        "Listening…",
        f"Drawing “{SHORT}”",
        f"Drawing “{SHORT}” 1/4",
        f"Drawing “{SHORT}” 2/4",
        f"Drawing “{SHORT}” 3/4",
        f"Drawing “{SHORT}” 4/4",
        PROMPT,
    ]
    *updates, final = [d.update for d in decisions]
    assert all(isinstance(u, Request) and u.progress and u.urgency == 1 for u in updates)
    assert isinstance(final, Request)
    assert (final.progress, final.image_path) == (False, "/gallery/2f1c0e9ab3d4.png")
    assert [d.ends for d in decisions] == [False] * 6 + [True]
    assert len(SHORT) <= PROMPT_CHARS


def test_progress_off_shows_only_the_final_notification() -> None:
    decisions = play(whole_request(), NotifyConfig(progress=False))
    assert bodies(decisions) == ["NoneType"] * 6 + [PROMPT]


def test_fast_steps_are_throttled_but_the_last_is_always_shown() -> None:
    """Steps every 0.25 s: one update per 0.5 s, and the last step even 0.25 s after one."""
    timed: list[tuple[float, Event]] = [(0.0, accepted())]
    timed += [(0.25 * step, progress(step, steps=6)) for step in range(1, 7)]
    shown = [d.update.body for d in play(timed) if isinstance(d.update, Request)]
    assert shown == [f"Drawing “{SHORT}”", *(f"Drawing “{SHORT}” {n}/6" for n in (2, 4, 6))]


def test_progress_due() -> None:
    assert progress_due(None, 0.0, 1, 4)  # nothing shown yet
    assert not progress_due(10.0, 10.0 + PROGRESS_INTERVAL_S / 2, 2, 4)
    assert progress_due(10.0, 10.0 + PROGRESS_INTERVAL_S, 2, 4)
    assert progress_due(10.0, 10.0, 4, 4)  # the last step, however soon


def test_a_typed_request_gets_no_listening_but_drawing() -> None:
    decisions = play([(0.0, accepted(text="a fox")), (1.0, progress(1, 1)), (2.0, image())])
    assert bodies(decisions) == ["Drawing “a fox”", "Drawing “a fox” 1/1", PROMPT]


def test_a_rejection_replaces_listening() -> None:
    toxic = rejected("toxic", flagged=("threat",))
    decisions = play([(0.0, wake(toxic.id or "")), (1.0, toxic)])
    assert bodies(decisions) == [
        "Listening…",
        "Not drawn: the request was flagged as threat",
    ]
    assert decisions[1].ends


@pytest.mark.parametrize(
    ("reason", "config"),
    [("busy", NotifyConfig(busy=False)), ("empty", NotifyConfig(empty=False)), ("shutdown", None)],
)
def test_an_end_with_nothing_to_show_closes_the_progress_notice(
    reason: str, config: NotifyConfig | None
) -> None:
    end = rejected(reason)
    assert bodies(play([(0.0, wake("r")), (1.0, end)], config)) == ["Listening…", "Close"]
    assert play([(1.0, end)], config)[0].update is None  # nothing shown: nothing to close
    off = NotifyConfig(progress=False, busy=False, empty=False)
    assert [d.update for d in play([(0.0, wake("r")), (1.0, end)], off)] == [None, None]


def test_steps_after_the_end_are_ignored_but_a_repeated_final_is_not() -> None:
    timed: list[tuple[float, Event]] = [(0.0, wake()), (1.0, image()), (2.0, progress(4))]
    timed += [(3.0, wake()), (4.0, image())]
    assert bodies(play(timed)) == ["Listening…", PROMPT, "NoneType", "NoneType", PROMPT]


def test_requests_are_tracked_apart() -> None:
    timed: list[tuple[float, Event]] = [(0.0, accepted("a")), (0.1, accepted("b", "a cat"))]
    timed += [(0.2, progress(1, 2, "a")), (0.3, progress(2, 2, "b"))]
    assert bodies(play(timed)) == [
        f"Drawing “{SHORT}”",
        "Drawing “a cat”",
        "NoneType",  # throttled: 0.2 s after request a's "Drawing"
        "Drawing “a cat” 2/2",
    ]


def test_drawing_wording() -> None:
    assert drawing("a fox").body == "Drawing “a fox”"
    assert drawing("a fox", 2, 4).body == "Drawing “a fox” 2/4"
    assert drawing("", 2, 4).body == "Drawing… 2/4"  # a step with no prompt seen
    assert listening().summary == drawing("a fox").summary == "speech2image"


def test_a_later_update_takes_the_place_of_unsent_progress_but_never_of_a_final() -> None:
    listening_a = Pending("a", listening())
    assert supersedes(Pending("a", drawing("x", 1, 4)), listening_a)
    assert supersedes(Pending("a", Close(), ends=True), listening_a)
    assert not supersedes(Pending("b", drawing("x", 1, 4)), listening_a)  # another request
    final = Pending("a", Request("s", "b", 1), ends=True)
    assert not supersedes(Pending("a", Request("s", "b", 1), ends=True), final)
    assert not supersedes(Pending(None, listening()), Pending(None, listening()))


def test_what_concerns_the_notifier() -> None:
    on, off = NotifyConfig(), NotifyConfig(progress=False)
    assert all(concerns(e, on) for e in (wake(), accepted(), progress(1), image()))
    assert concerns(rejected("busy"), NotifyConfig(busy=False))  # it may close a notice
    assert not concerns(wake(), off)
    assert not concerns(progress(1), off)
    assert concerns(image(), off)
    assert not concerns(rejected("busy"), NotifyConfig(progress=False, busy=False))
    assert not concerns(rejected("shutdown"), off)
    assert not concerns(image(), NotifyConfig(enabled=False))
    assert not concerns(Transcript(id=RID, t=0, text="x", language="en", audio_s=1, seconds=1), on)
