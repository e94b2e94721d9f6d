"""Scoring: the authors' text normalisation, word alignment and WER with substitutions, deletions and insertions.

Both sides of every pair go through `normalize` (the Whisper-LLaDA authors' clean-up followed by
openai-whisper's `EnglishTextNormalizer`), are split into words and aligned with kaldialign, the
minimum-edit alignment of Kaldi's `compute-wer` and icefall. WER is pooled over the whole set:
(S + D + I) / N * 100, not an average of per-utterance rates.

Decode outputs are written as icefall writes them, each file atomically:

    recogs-*.txt   "{id}:<TAB>ref=[...]", "{id}:<TAB>hyp=[...]"  (normalised words, by id)
    errs-*.txt     %WER 2.25% [118 / 5240, 12 ins, 30 del, 76 sub ] + per-utterance details
    wer-*.txt      %WER = 2.25, the error counts, then the caller's extra `key: value` lines

Ties between minimum-edit alignments are broken as kaldialign breaks them, which can differ from
jiwer (rapidfuzz): "red blue" -> "blue green" is one deletion and one insertion here, two
substitutions there. S + D + I and D - I, hence the WER, are the same either way.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import kaldialign
from whisper.normalizers import EnglishTextNormalizer

from whisper_llada.utils.atomic_write import write_text_atomically

# Special tokens such as <|endoftext|> or <|eot_id|> that a decoder may leave in its text.
SPECIAL_TAG = re.compile(r"<\|.*?\|>")
WHITESPACE = re.compile(r"\s+")
# Detokenised output can put a space before punctuation ("hello , world ."); it must stick to the
# previous word as in the reference. "%" belongs here: the normaliser keeps "25%" but drops " %".
SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.!?;:%])")

# kaldialign's gap symbol. Words come from str.split(), which never yields an empty string, so
# the gap can never be mistaken for a word.
EPS = ""
ERR = "*"  # how a gap is written in errs files, as icefall writes it
PERCENT = 100.0

Key = TypeVar("Key", str, tuple[str, str])


@functools.cache
def _english_normalizer() -> EnglishTextNormalizer:
    # Built once: construction reads whisper's English spelling table from disk.
    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Normalise a reference or hypothesis exactly as the authors score it.

    Strip `<|...|>` tags, collapse whitespace, attach punctuation to the previous word, apply
    whisper's `EnglishTextNormalizer` (lower case, no punctuation, spelled and digit numbers to
    one form: "THIRTEENTH" and "13TH" both give "13th", contractions expanded, British spellings
    to American), then rejoin the words with single spaces.

    Args:
        text: raw transcript, any casing.

    Returns:
        The normalised words joined by single spaces ("" when nothing is left).
    """
    text = SPECIAL_TAG.sub(" ", text)  # a space, so that "a<|x|>b" stays two words
    text = WHITESPACE.sub(" ", text).strip()
    text = SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    return " ".join(_english_normalizer()(text).split())


@dataclass(frozen=True)
class Alignment:
    """Minimum-edit alignment of one utterance's normalised words.

    `pairs` holds (ref word, hyp word) in order: (w, w) correct, (r, h) with r != h a
    substitution, (r, None) a deletion, (None, h) an insertion.
    """

    pairs: list[tuple[str | None, str | None]]

    @property
    def substitutions(self) -> int:
        return sum(1 for r, h in self.pairs if r is not None and h is not None and r != h)

    @property
    def deletions(self) -> int:
        return sum(1 for _, h in self.pairs if h is None)

    @property
    def insertions(self) -> int:
        return sum(1 for r, _ in self.pairs if r is None)

    @property
    def correct(self) -> int:
        return sum(1 for r, h in self.pairs if r is not None and r == h)

    @property
    def ref_words(self) -> int:
        return sum(1 for r, _ in self.pairs if r is not None)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def align(ref: str, hyp: str) -> Alignment:
    """Align the normalised words of a reference and a hypothesis (minimum edit distance)."""
    pairs = kaldialign.align(normalize(ref).split(), normalize(hyp).split(), EPS)
    return Alignment([(None if r == EPS else r, None if h == EPS else h) for r, h in pairs])


@dataclass
class WerSummary:
    """Error counts pooled over a test set.

    `failed` counts utterances that could not be decoded; they are scored with an empty
    hypothesis, so their reference words are all deletions and the WER is not flattered.
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0
    utterances: int = 0
    failed: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """(S + D + I) / N in percent; with no reference words: 0.0 if no errors, else inf."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else math.inf
        return PERCENT * self.errors / self.ref_words


def score(
    records: Iterable[tuple[str, str, str | None]],
) -> tuple[WerSummary, list[tuple[str, Alignment]]]:
    """Score a test set.

    Args:
        records: (utterance id, reference, hypothesis), raw text; a hypothesis of None marks an
            utterance that could not be decoded (counted in `failed`, scored as empty).

    Returns:
        The pooled summary and (id, alignment) per utterance, in input order.

    Raises:
        ValueError: an utterance id appears twice (a DistributedSampler pads the last batch
            with repeated utterances: drop them before scoring).
    """
    summary = WerSummary()
    alignments: list[tuple[str, Alignment]] = []
    seen: set[str] = set()
    for utt_id, ref, hyp in records:
        if utt_id in seen:
            raise ValueError(
                f"utterance id {utt_id!r} appears twice; score each utterance once "
                "(drop the repeats a distributed sampler adds to fill the last batch)"
            )
        seen.add(utt_id)
        failed = hyp is None
        alignment = align(ref, "" if failed else hyp)
        summary.substitutions += alignment.substitutions
        summary.deletions += alignment.deletions
        summary.insertions += alignment.insertions
        summary.ref_words += alignment.ref_words
        summary.utterances += 1
        summary.failed += int(failed)
        alignments.append((utt_id, alignment))
    return summary, alignments


def write_recogs(path: str | Path, records: Iterable[tuple[str, str, str | None]]) -> Path:
    """Write icefall's recogs file: normalised ref and hyp word lists per utterance, by id.

    Args:
        path: output file, replaced whole.
        records: (utterance id, reference, hypothesis) as for `score`; None hypothesis -> [].
    """
    lines = []
    for utt_id, ref, hyp in sorted(records, key=lambda record: record[0]):
        ref_words = normalize(ref).split()
        hyp_words = [] if hyp is None else normalize(hyp).split()
        lines.append(f"{utt_id}:\tref={ref_words!r}")
        lines.append(f"{utt_id}:\thyp={hyp_words!r}")
    return write_text_atomically(path, "".join(f"{line}\n" for line in lines))


def _alignment_line(alignment: Alignment) -> str:
    """Words joined by spaces; errors as (ref->hyp), (ref->*), (*->hyp)."""
    tokens = []
    for r, h in alignment.pairs:
        if r is not None and r == h:
            tokens.append(r)
        else:
            tokens.append(f"({ERR if r is None else r}->{ERR if h is None else h})")
    return " ".join(tokens)


def _by_count(counts: Counter[Key]) -> list[Key]:
    """Keys by falling count, ties in alphabetical order."""
    return sorted(counts, key=lambda key: (-counts[key], key))


def write_errs(
    path: str | Path, summary: WerSummary, alignments: Iterable[tuple[str, Alignment]]
) -> Path:
    """Write icefall's errs file: WER header, per-utterance alignments, per-word error counts.

    Args:
        path: output file, replaced whole.
        summary: from `score`.
        alignments: (utterance id, alignment) from `score`; written sorted by id.
    """
    alignments = sorted(alignments, key=lambda item: item[0])
    subs: Counter[tuple[str, str]] = Counter()
    dels: Counter[str] = Counter()
    ins: Counter[str] = Counter()
    for _, alignment in alignments:
        for r, h in alignment.pairs:
            if r is None:
                ins[h] += 1
            elif h is None:
                dels[r] += 1
            elif r != h:
                subs[(r, h)] += 1
    s = summary
    lines = [
        f"%WER {s.wer:.2f}% [{s.errors} / {s.ref_words}, {s.insertions} ins, "
        f"{s.deletions} del, {s.substitutions} sub ]",
        "",
        "PER-UTT DETAILS: corr or (ref->hyp)",
        *(f"{utt_id}:\t{_alignment_line(alignment)}" for utt_id, alignment in alignments),
        "",
        "SUBSTITUTIONS: count ref -> hyp",
        *(f"{subs[key]}   {key[0]} -> {key[1]}" for key in _by_count(subs)),
        "",
        "DELETIONS: count ref",
        *(f"{dels[word]}   {word}" for word in _by_count(dels)),
        "",
        "INSERTIONS: count hyp",
        *(f"{ins[word]}   {word}" for word in _by_count(ins)),
    ]
    return write_text_atomically(path, "".join(f"{line}\n" for line in lines))


def _format_extra(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_wer(path: str | Path, summary: WerSummary, extra: dict[str, float | int | str]) -> Path:
    """Write the summary file: `%WER = 12.34`, the error counts, then `key: value` per extra.

    Args:
        path: output file, replaced whole.
        summary: from `score`.
        extra: in the caller's order, e.g. RTF, forward passes per utterance, utterances/s;
            floats are written with 4 decimals.
    """
    s = summary
    lines = [
        f"%WER = {s.wer:.2f}",
        f"Errors: {s.insertions} insertions, {s.deletions} deletions, "
        f"{s.substitutions} substitutions, over {s.ref_words} reference words "
        f"({s.utterances} utterances, {s.failed} failed)",
        *(f"{key}: {_format_extra(value)}" for key, value in extra.items()),
    ]
    return write_text_atomically(path, "".join(f"{line}\n" for line in lines))
