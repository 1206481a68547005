"""Word and phrase rules for requests a profanity model lets through.

A profanity model scores words, not intent: "draw me stabbing my boss" has no
swear word in it. These rules look for the shapes of harmful requests — a violent
act aimed at a person, sexual content, attacks on a group — over a normalised text
(lower case, leetspeak undone, spaced-out letters joined), so "k1ll my n e i g h b o r"
matches too. Allow phrases are cut out before matching ("killer whale",
"chicken breast"). The rule lists live in :mod:`rules`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..config import LABELS, ModerationConfig
from . import rules as builtin_rules
from .verdict import Verdict, judge

log = logging.getLogger(__name__)

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
# Digits with a unit or ordinal are not leetspeak: "1990s", "4k", "3d", "35mm", "2nd".
_NUMBER_WORD = re.compile(r"\d+(?:s|st|nd|rd|th|d|k|p|px|x|mm|cm|m|ft|in|am|pm|hz|fps|yo)")


def _unleet(token: str) -> str:
    """Leetspeak inside a word: k1ll -> kill, $lut -> slut, a55 -> ass; 4k and win! stay."""
    core = token.rstrip("!?.,;:")
    if not re.search(r"[a-z]", core) or _NUMBER_WORD.fullmatch(core):
        return token
    return core.translate(_LEET) + token[len(core) :]


def normalise(text: str) -> str:
    """Lower case ASCII words, leetspeak undone, spaced letters joined, stretched letters cut."""
    text = " ".join(_unleet(token) for token in text.lower().replace("\u2019", "'").split())
    text = re.sub(r"[^a-z ]+", " ", text.replace("'", ""))
    # "k i l l" -> "kill": three or more single letters in a row are one word.
    text = re.sub(r"\b(?:[a-z] ){2,}[a-z]\b", lambda m: m.group().replace(" ", ""), text)
    text = re.sub(r"([a-z])\1{2,}", r"\1", text)  # "fuuuuck" -> "fuck"
    return " ".join(text.split())


def _phrase_pattern(phrase: str) -> str:
    return r"\b" + r"\s+".join(re.escape(word) for word in normalise(phrase).split()) + r"\b"


def _raw_phrase_pattern(phrase: str) -> str:
    """An allowed phrase as it may stand in raw text: any case, any punctuation between."""
    return r"\b" + r"[\W_]+".join(re.escape(word) for word in phrase.lower().split()) + r"\b"


@dataclass(frozen=True)
class Lexicon:
    rules: Mapping[str, Sequence[re.Pattern[str]]]
    allow: re.Pattern[str] | None  # over normalised text, for the word rules
    allow_raw: re.Pattern[str] | None = None  # over the text as said, for the models

    @classmethod
    def builtin(cls, extra_block: Iterable[str] = (), extra_allow: Iterable[str] = ()) -> Lexicon:
        """The built-in rules plus the user's block list (as ``toxicity``) and allow list."""
        rules: dict[str, list[re.Pattern[str]]] = {
            label: [re.compile(pattern) for pattern in patterns]
            for label, patterns in builtin_rules.expanded().items()
        }
        blocked = [re.compile(_phrase_pattern(p)) for p in extra_block if normalise(p)]
        rules.setdefault("toxicity", []).extend(blocked)
        phrases = [p for p in (*builtin_rules.ALLOW, *extra_allow) if normalise(p)]
        allow = re.compile("|".join(_phrase_pattern(p) for p in phrases)) if phrases else None
        raw = "|".join(_raw_phrase_pattern(p) for p in phrases)
        allow_raw = re.compile(raw, re.IGNORECASE) if phrases else None
        return cls(rules, allow, allow_raw)

    def without_allowed(self, text: str) -> str:
        """The text as said, with the allowed phrases ("moby dick", the user's allow list)
        cut out and nothing else changed: what the model backends judge."""
        if self.allow_raw is None:
            return text
        return " ".join(self.allow_raw.sub(" | ", text).split())

    def clean(self, text: str) -> str:
        """Normalised text with the allowed phrases cut out: what the word rules judge."""
        clean = normalise(text)
        if self.allow is not None:
            clean = " ".join(self.allow.sub(" | ", clean).split())  # "|": no words join up
        return clean

    def match(self, text: str) -> dict[str, str]:
        """Label -> the first matching words, for every label with a match."""
        clean = self.clean(text)
        found: dict[str, str] = {}
        for label, patterns in self.rules.items():
            for pattern in patterns:
                hit = pattern.search(clean)
                if hit:
                    found[label] = hit.group()
                    break
        return found


class LexiconModerator:
    """Word and phrase rules for what a profanity model misses, plus the user's lists."""

    name = "lexicon"

    def __init__(self, config: ModerationConfig, lexicon: Lexicon) -> None:
        self._lexicon = lexicon
        self._config = config

    def check(self, text: str) -> Verdict:
        matches = self._lexicon.match(text)
        if matches:
            log.debug("lexicon matched %s", matches)
        scores = {label: 1.0 if label in matches else 0.0 for label in LABELS}
        return judge(scores, self._config, self.name)
