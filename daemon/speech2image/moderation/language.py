"""Which language a prompt is in, so moderation never allows what it cannot read.

Every backend here was built for English: a threat in Spanish or a slur in Cyrillic
passes them untouched. So a prompt in a language outside ``[moderation] languages``
is rejected as ``unsupported``, naming the language, instead of being allowed.

Where the language is known it is used: Whisper's detection (when ``[speech]
language`` is ``""``), or a client that states it. Otherwise (typed text, or a
transcript from an English-only model, whose "language" is an assumption) the text
is identified with py3langid, which ships its model in its package.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# How much likelier the best unsupported language must be than the best supported one
# before a Latin-script prompt is refused. Chosen with py3langid 0.4 on the English
# prompts of tests/data/moderation train, dev and heldout (1,239; the blind test.tsv
# was not used): the highest ratio was 19 ("a magna cum laude diploma in a frame"),
# the next 2.3. Prompts of 3 to 6 words in Spanish, French, German and Italian
# scored 45 to 3,100 ("mata al perro", 19, is one that slips through).
MIN_RATIO = 30.0
MIN_WORDS = 3  # "a cat" reads as Galician: two words are too few to tell
# Latin is left out of the candidates: English prompts quote it ("carpe diem").
NOT_CANDIDATES = frozenset({"la"})
LATIN = "LATIN"  # the script py3langid has to tell apart; others narrow it down at once

# fmt: off
LANGUAGE_NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "ba": "Bashkir", "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bo": "Tibetan",
    "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "cy": "Welsh",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fo": "Faroese",
    "fr": "French", "gl": "Galician", "gu": "Gujarati", "ha": "Hausa", "haw": "Hawaiian",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian",
    "hy": "Armenian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese",
    "jw": "Javanese", "ka": "Georgian", "kk": "Kazakh", "km": "Khmer", "kn": "Kannada",
    "ko": "Korean", "la": "Latin", "lb": "Luxembourgish", "ln": "Lingala", "lo": "Lao",
    "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mi": "Maori", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese",
    "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian",
    "oc": "Occitan", "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sa": "Sanskrit", "sd": "Sindhi", "si": "Sinhala",
    "sk": "Slovak", "sl": "Slovenian", "sn": "Shona", "so": "Somali", "sq": "Albanian",
    "sr": "Serbian", "su": "Sundanese", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil",
    "te": "Telugu", "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog",
    "tr": "Turkish", "tt": "Tatar", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "vi": "Vietnamese", "yi": "Yiddish", "yo": "Yoruba", "zh": "Chinese", "yue": "Cantonese",
}
# fmt: on


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


@dataclass(frozen=True)
class LanguageCheck:
    """What language moderation thinks a prompt is in, and how it knows."""

    language: str  # an ISO 639-1 code (Whisper's), or "" when it cannot tell
    how: str  # "stated", "script", "identified" or "too short to tell"
    supported: bool

    def reason(self) -> str:
        """The ``detail`` of a ``rejected: unsupported`` event."""
        return (
            f"the request is in {language_name(self.language)} ({self.language}, {self.how}); "
            "moderation here covers only [moderation] languages"
        )


def check_language(text: str, supported: Sequence[str], stated: str | None = None) -> LanguageCheck:
    """Whether moderation can judge ``text``; ``stated`` is a language known for sure."""
    if stated:
        return LanguageCheck(stated, "stated", stated in supported)
    script = dominant_script(text)
    if script and script != LATIN:  # Cyrillic, CJK, Arabic...: no length is too short
        language, _ratio = identify(text, supported)
        return LanguageCheck(language, "script", language in supported)
    if len(text.split()) < MIN_WORDS:
        return LanguageCheck("", "too short to tell", True)
    language, ratio = identify(text, supported)
    if language in supported or ratio < MIN_RATIO:
        return LanguageCheck(language, "identified", True)
    return LanguageCheck(language, "identified", False)


def dominant_script(text: str) -> str:
    """The Unicode script most letters belong to ("LATIN", "CYRILLIC", ...), or ""."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            script = name.split(" ", 1)[0] if name else ""
            if script == "CJK" or script.startswith(("HIRAGANA", "KATAKANA")):
                script = "CJK"
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=lambda s: counts[s]) if counts else ""


def identify(text: str, supported: Sequence[str]) -> tuple[str, float]:
    """The likeliest language, and how much likelier it is than the best supported one."""
    ranked = dict(_identifier().rank(text))
    best = max(ranked, key=lambda code: ranked[code])
    best_supported = max((ranked.get(code, 0.0) for code in supported), default=0.0)
    return best, ranked[best] / max(best_supported, 1e-12)


@functools.cache
def _identifier() -> Any:
    """py3langid's model, restricted to Whisper's languages (what a transcript can be)."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    from ..vocabulary import WHISPER_LANGUAGES

    identifier = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    known = set(identifier.nb_classes)
    identifier.set_languages(
        [c for c in WHISPER_LANGUAGES if c in known and c not in NOT_CANDIDATES]
    )
    return identifier
