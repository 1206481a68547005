"""Moderation: the toxicity gate between a transcript and an image.

The product card names ``flai`` (``ToxicityClassifier().predict(text)["toxicity"] > 0.7``),
but no published ``flai`` has that API: the package of that name on PyPI is an
unrelated socket framework. We keep the contract instead of the name: every backend
returns per-label scores with Detoxify's label names, compared with per-label
thresholds (default 0.7). Backends are combined; a request is rejected if any
backend rejects it. All run offline from files on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..config import ModerationConfig
from .classifier import TransformersModerator
from .language import check_language
from .lexicon import Lexicon, LexiconModerator
from .profanity import ProfanityModerator
from .semantic import SemanticModerator
from .verdict import Moderator, Verdict


class CombinedModerator:
    """Runs every configured backend; rejected if any rejects. Scores keep the maximum.

    First the language: a prompt the backends cannot read is refused as
    unsupported, never allowed. Then every backend judges the text as said, with
    only the allowed phrases ("moby dick", the user's allow list) cut out, so an
    allow entry works for the models too; normalising case, leetspeak and spacing
    is the word rules' own business (``Lexicon``): a model reads "Убей соседа" or
    "K1LL" better as written than as an empty or mangled string.
    """

    def __init__(
        self,
        backends: Sequence[Moderator],
        prepare: Callable[[str], str],
        languages: Sequence[str] = ("en",),
    ) -> None:
        self.backends = list(backends)
        self.name = "+".join(b.name for b in backends)
        self.languages = tuple(languages)
        self._prepare = prepare

    def check(self, text: str, language: str | None = None) -> Verdict:
        """``language``: the prompt's language when known for sure (Whisper's
        detection, a client that states it); else it is identified from the text."""
        found = check_language(text, self.languages, language)
        if not found.supported:
            return Verdict(False, {}, [], "language", unsupported=found.reason())
        prepared = self._prepare(text)
        verdicts = [backend.check(prepared) for backend in self.backends]
        scores: dict[str, float] = {}
        for verdict in verdicts:
            for label, score in verdict.scores.items():
                scores[label] = max(score, scores.get(label, 0.0))
        flagged = sorted({label for verdict in verdicts for label in verdict.flagged})
        rejecting = [v.backend for v in verdicts if not v.allowed]
        return Verdict(not flagged, scores, flagged, "+".join(rejecting) or self.name)


def build_moderator(config: ModerationConfig, source: str) -> CombinedModerator:
    lexicon = Lexicon.builtin(extra_block=config.block, extra_allow=config.allow)
    backends: list[Moderator] = []
    for name in config.backends:
        if name == "profanity":
            backends.append(ProfanityModerator(config))
        elif name == "lexicon":
            backends.append(LexiconModerator(config, lexicon))
        elif name == "semantic":
            backends.append(SemanticModerator(config))
        else:
            backends.append(TransformersModerator(config, source))
    return CombinedModerator(backends, lexicon.without_allowed, config.languages)
