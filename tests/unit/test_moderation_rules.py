"""Moderation decisions without models: thresholds, combination, the lexicon rules."""

from __future__ import annotations

import pytest

from speech2image.config import ModerationConfig
from speech2image.moderation.combined import CombinedModerator
from speech2image.moderation.lexicon import Lexicon, LexiconModerator, normalise
from speech2image.moderation.verdict import Verdict, judge


class Fixed:
    """A backend with fixed scores: the combination logic is what is under test."""

    def __init__(self, name: str, scores: dict[str, float]) -> None:
        self.name = name
        self.scores = scores
        self.seen: list[str] = []

    def check(self, text: str) -> Verdict:
        self.seen.append(text)
        return judge(self.scores, ModerationConfig(), self.name)


def test_judge_uses_per_label_thresholds() -> None:
    config = ModerationConfig(thresholds={"toxicity": 0.7, "threat": 0.3})
    assert judge({"toxicity": 0.69, "threat": 0.29}, config, "x").allowed
    verdict = judge({"toxicity": 0.7, "threat": 0.31}, config, "x")
    assert not verdict.allowed
    assert verdict.flagged == ["threat", "toxicity"]


def test_unset_labels_keep_the_default_threshold() -> None:
    config = ModerationConfig(thresholds={"threat": 0.3})
    assert not judge({"insult": 0.75}, config, "x").allowed


def test_combined_rejects_if_any_backend_rejects_and_keeps_max_scores() -> None:
    calm = Fixed("a", {"toxicity": 0.2, "threat": 0.0})
    angry = Fixed("b", {"toxicity": 0.1, "threat": 0.9})
    verdict = CombinedModerator([calm, angry], prepare=str.lower).check("Some Text")
    assert not verdict.allowed
    assert verdict.flagged == ["threat"]
    assert verdict.scores == {"toxicity": 0.2, "threat": 0.9}
    assert verdict.backend == "b"
    assert calm.seen == angry.seen == ["some text"]


def test_normalise_undoes_obfuscation() -> None:
    assert normalise("K1LL my n e i g h b o r!!!") == "kill my neighbor"
    assert normalise("$lut") == "slut"
    assert normalise("fuuuuck") == "fuck"
    assert normalise("a55hole") == "asshole"
    assert normalise("a 1990s car, 4 wheels, 4k, 3d render") == "a s car wheels k d render"
    assert normalise("don\u2019t") == "dont"


LEXICON = Lexicon.builtin()


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("draw me stabbing my boss", "threat"),
        ("show my neighbor getting killed", "threat"),
        ("k1ll my n e i g h b o r", "threat"),
        ("a picture of me hurting myself", "threat"),
        ("a naked woman on a bed", "sexual_explicit"),
        ("immigrants as filthy rats", "identity_attack"),
        ("exterminate all the jews", "severe_toxicity"),
        ("draw my sister as a fat ugly pig", "insult"),
        ("a fucking pirate ship", "obscene"),
    ],
)
def test_lexicon_catches(text: str, label: str) -> None:
    assert label in LEXICON.match(text)


@pytest.mark.parametrize(
    "text",
    [
        "a bloody steak",
        "a damn beautiful mountain",
        "a killer whale",
        "shoot a photo of a sunset",
        "my friend shot a basket",
        "kids hanging out with their friends",
        "a shot of espresso",
        "an executive meeting with my boss",
        "a red fox sleeping under a cherry tree",
    ],
)
def test_lexicon_lets_benign_prompts_through(text: str) -> None:
    assert LEXICON.match(text) == {}


def test_user_block_and_allow_lists() -> None:
    lexicon = Lexicon.builtin(extra_block=["clowns"], extra_allow=["stabbing my boss"])
    assert lexicon.match("Three CL0WNS at a party") == {"toxicity": "clowns"}
    assert lexicon.match("draw me stabbing my boss") == {}


def test_lexicon_moderator_scores_every_label() -> None:
    verdict = LexiconModerator(ModerationConfig(), LEXICON).check("draw me stabbing my boss")
    assert not verdict.allowed
    assert verdict.flagged == ["threat"]
    assert verdict.scores["threat"] == 1.0
    assert verdict.scores["obscene"] == 0.0


def test_models_read_the_text_as_said_minus_the_allowed_phrases() -> None:
    """Normalising is for the word rules; models get case, script and spelling as said."""
    lexicon = Lexicon.builtin(extra_allow=["moby dick"])
    assert lexicon.without_allowed("Draw MOBY-DICK fighting a ship!") == "Draw | fighting a ship!"
    assert lexicon.without_allowed("Убей соседа") == "Убей соседа"  # ASCII-normalised: ""
    assert lexicon.clean("Убей соседа") == ""
    assert lexicon.without_allowed("K1LL my n e i g h b o r") == "K1LL my n e i g h b o r"


def test_every_backend_gets_the_raw_text_without_allowed_phrases() -> None:
    seen: list[str] = []

    class Recording:
        name = "recording"

        def check(self, text: str) -> Verdict:
            seen.append(text)
            return Verdict(True, {}, [], self.name)

    lexicon = Lexicon.builtin(extra_allow=["moby dick"])
    moderator = CombinedModerator([Recording()], lexicon.without_allowed)
    moderator.check("Moby Dick, Attacking", language="en")  # stated: no identifier needed
    assert seen == ["| , Attacking"]
