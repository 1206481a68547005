"""What a rejection notification says, for the reasons that quote something back."""

from __future__ import annotations

from speech2image.config import NotifyConfig
from speech2image.desktop.notify import rejected_body
from speech2image.events import REJECT_REASONS, Rejected


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
