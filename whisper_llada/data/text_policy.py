"""Target-text policies: how corpus transcripts are rewritten into training targets (casing, punctuation).

LibriSpeech's transcripts are upper case without punctuation, and Whisper-LLaDA was trained on
them as they are, so LibriSpeech's default policy keeps its text unchanged; `LIBRISPEECH_STYLE`
(upper case, punctuation stripped) is the default of the other corpora (`corpora`), so mixed
training data shares one target style.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

Casing = Literal["upper", "lower", "as_is"]
Punctuation = Literal["keep", "strip"]
CASINGS: tuple[Casing, ...] = ("upper", "lower", "as_is")
PUNCTUATIONS: tuple[Punctuation, ...] = ("keep", "strip")
APOSTROPHE = "'"
APOSTROPHE_LOOKALIKES = "’‘ʼ"  # typographic apostrophes, read as "'"
WORD_JOINERS = "/"  # besides dashes: "either/or" -> "either or"
DASH_CATEGORY = "Pd"
PUNCTUATION_CATEGORY_PREFIX = "P"  # Unicode categories Pc Pd Ps Pe Pi Pf Po


@dataclass(frozen=True)
class TextPolicy:
    """How supervision texts are rewritten into training targets.

    Attributes:
        casing: "upper", "lower", or "as_is".
        punctuation: "keep", or "strip": Unicode punctuation goes, except apostrophes inside
            words (don't, o'brien); dashes and slashes become spaces; whitespace is collapsed.
    """

    casing: Casing = "as_is"
    punctuation: Punctuation = "keep"

    def __post_init__(self) -> None:
        if self.casing not in CASINGS:
            raise ValueError(f"casing must be one of {', '.join(CASINGS)}; got {self.casing!r}")
        if self.punctuation not in PUNCTUATIONS:
            raise ValueError(
                f"punctuation must be one of {', '.join(PUNCTUATIONS)}; got {self.punctuation!r}"
            )


LIBRISPEECH_TEXT_POLICY = TextPolicy(casing="as_is", punctuation="keep")
LIBRISPEECH_STYLE = TextPolicy(casing="upper", punctuation="strip")


def apply_text_policy(text: str, policy: TextPolicy) -> str:
    """`text` rewritten by `policy`; ("as_is", "keep") returns it unchanged."""
    if policy.punctuation == "strip":
        text = _strip_punctuation(text)
    if policy.casing == "upper":
        return text.upper()
    if policy.casing == "lower":
        return text.lower()
    return text


def _strip_punctuation(text: str) -> str:
    for lookalike in APOSTROPHE_LOOKALIKES:
        text = text.replace(lookalike, APOSTROPHE)
    kept = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if char == APOSTROPHE:
            inside_word = 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()
            kept.append(APOSTROPHE if inside_word else "")
        elif category == DASH_CATEGORY or char in WORD_JOINERS:
            kept.append(" ")
        elif not category.startswith(PUNCTUATION_CATEGORY_PREFIX):
            kept.append(char)
    return " ".join("".join(kept).split())
