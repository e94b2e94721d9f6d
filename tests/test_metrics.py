"""Tests for scoring: the normaliser, the alignment, pooled WER (against jiwer) and result files."""

from __future__ import annotations

import math
import os
import random

import jiwer
import pytest

from whisper_llada.evaluation.metrics import (
    Alignment,
    WerSummary,
    align,
    normalize,
    score,
    write_errs,
    write_recogs,
    write_wer,
)
from whisper_llada.utils import atomic_write

# Words the normaliser leaves as they are (no numbers, spellings or fillers it would rewrite).
VOCABULARY = ("cat", "dog", "bird", "tree", "river", "stone", "light", "house", "green", "blue")
RANDOM_PAIRS = 50
SEED = 1234


# --- normalize ---------------------------------------------------------------------------------


def test_ordinals_spelled_or_in_digits_normalise_alike() -> None:
    assert normalize("THE THIRTEENTH OF MAY") == "the 13th of may"
    assert normalize("the 13TH of May") == "the 13th of may"
    summary, _ = score([("u1", "THE THIRTEENTH OF MAY", "the 13TH of May")])
    assert summary.wer == 0.0


def test_casing_abbreviations_and_possessives() -> None:
    assert normalize("MR. SMITH'S HOUSE.") == "mister smith is house"
    assert normalize("Mr Smith's house") == "mister smith is house"
    assert normalize('HE SAID, "NO!"') == "he said no"


def test_special_tags_are_stripped() -> None:
    assert normalize("<|startoftext|>hello world<|endoftext|>") == "hello world"
    assert normalize("hello<|eot_id|>world") == "hello world"  # a tag separates words
    assert normalize("<|endoftext|>") == ""


def test_whitespace_collapses() -> None:
    assert normalize("  hello \n\t world  ") == "hello world"


def test_punctuation_attaches_to_the_previous_word() -> None:
    assert normalize("hello , world .") == normalize("hello, world.") == "hello world"
    # The normaliser keeps "25%" but drops a lone "%": attaching it makes "25 %" score as
    # "twenty five percent" does.
    assert normalize("25 %") == normalize("twenty five percent") == "25%"


def test_contractions_expand() -> None:
    assert normalize("IT'S") == normalize("it is") == "it is"
    assert normalize("he won't go") == "he will not go"
    assert normalize("I'M") == "i am"


def test_numbers_spelled_or_in_digits_normalise_alike() -> None:
    assert normalize("twenty five") == normalize("25") == normalize("twenty-five") == "25"


# --- align -------------------------------------------------------------------------------------


def test_align_one_substitution_one_deletion_one_insertion() -> None:
    alignment = align("the cat sat on the mat", "the bat sat the mat too")
    assert alignment.pairs == [
        ("the", "the"),
        ("cat", "bat"),
        ("sat", "sat"),
        ("on", None),
        ("the", "the"),
        ("mat", "mat"),
        (None, "too"),
    ]
    assert (alignment.substitutions, alignment.deletions, alignment.insertions) == (1, 1, 1)
    assert (alignment.correct, alignment.ref_words, alignment.errors) == (4, 6, 3)


def test_align_compares_normalised_words() -> None:
    alignment = align("IT'S THE 13TH.", "it is the thirteenth")
    assert alignment.pairs == [("it", "it"), ("is", "is"), ("the", "the"), ("13th", "13th")]


def test_align_empty_sides() -> None:
    assert align("green tree", "").pairs == [("green", None), ("tree", None)]
    assert align("", "green tree").pairs == [(None, "green"), (None, "tree")]
    assert align("<|endoftext|>", "").pairs == []


def test_ties_are_broken_as_kaldialign_breaks_them() -> None:
    # Both cost 2; kaldialign (Kaldi, icefall) reports D + I here, where jiwer reports 2 S.
    alignment = align("red blue", "blue green")
    assert alignment.pairs == [("red", None), ("blue", "blue"), (None, "green")]
    reference = jiwer.process_words("red blue", "blue green")
    assert (reference.substitutions, reference.deletions, reference.insertions) == (2, 0, 0)


# --- score -------------------------------------------------------------------------------------


def _random_pair(rng: random.Random) -> tuple[str, str]:
    ref = [rng.choice(VOCABULARY) for _ in range(rng.randint(1, 12))]
    hyp = list(ref)
    for _ in range(rng.randint(0, 4)):
        edit = rng.choice(("substitute", "delete", "insert"))
        if edit == "substitute" and hyp:
            hyp[rng.randrange(len(hyp))] = rng.choice(VOCABULARY)
        elif edit == "delete" and hyp:
            del hyp[rng.randrange(len(hyp))]
        else:
            hyp.insert(rng.randint(0, len(hyp)), rng.choice(VOCABULARY))
    # Random casing and punctuation that normalisation must undo.
    ref_text = " ".join(ref).upper() + "."
    hyp_text = " , ".join(hyp)
    return ref_text, hyp_text


def test_score_matches_jiwer_on_random_pairs() -> None:
    assert all(normalize(word) == word for word in VOCABULARY)
    rng = random.Random(SEED)
    records = [(f"utt{i:03d}", *_random_pair(rng)) for i in range(RANDOM_PAIRS)]
    summary, alignments = score(records)

    refs = [normalize(ref) for _, ref, _ in records]
    hyps = [normalize(hyp) for _, _, hyp in records]
    ties = 0
    for (utt_id, alignment), ref, hyp in zip(alignments, refs, hyps, strict=True):
        expected = jiwer.process_words(ref, hyp)
        # Every minimum-edit alignment has the same S + D + I, and D - I = len(ref) - len(hyp);
        # on ties kaldialign and jiwer may still split the errors differently (2 S vs D + I).
        expected_errors = expected.substitutions + expected.deletions + expected.insertions
        assert alignment.errors == expected_errors, utt_id
        assert (
            alignment.deletions - alignment.insertions == expected.deletions - expected.insertions
        )
        ties += alignment.substitutions != expected.substitutions  # same S: same D, I too
        # A valid alignment: dropping the gaps gives back both word sequences.
        assert [r for r, _ in alignment.pairs if r is not None] == ref.split()
        assert [h for _, h in alignment.pairs if h is not None] == hyp.split()
    assert 0 < ties < RANDOM_PAIRS // 2  # the sample exercises both cases

    expected = jiwer.process_words(refs, hyps)
    assert summary.errors == expected.substitutions + expected.deletions + expected.insertions
    assert summary.ref_words == expected.hits + expected.substitutions + expected.deletions
    assert summary.wer == pytest.approx(100 * expected.wer, rel=1e-12)
    assert summary.errors > 0
    assert (summary.utterances, summary.failed) == (RANDOM_PAIRS, 0)
    assert [utt_id for utt_id, _ in alignments] == [utt_id for utt_id, _, _ in records]


def test_score_matches_jiwer_exactly_without_ties() -> None:
    # One edit per pair has a unique minimum-edit alignment: S, D and I must equal jiwer's.
    rng = random.Random(SEED)
    records = []
    for i in range(RANDOM_PAIRS):
        ref = [rng.choice(VOCABULARY) for _ in range(rng.randint(1, 12))]
        hyp = list(ref)
        position = rng.randrange(len(ref))
        edit = ("substitute", "delete", "insert")[i % 3]
        if edit == "substitute":
            hyp[position] = rng.choice([w for w in VOCABULARY if w != ref[position]])
        elif edit == "delete":
            del hyp[position]
        else:
            hyp.insert(position, rng.choice(VOCABULARY))
        records.append((f"utt{i:03d}", " ".join(ref), " ".join(hyp)))
    summary, alignments = score(records)
    for (utt_id, alignment), (_, ref, hyp) in zip(alignments, records, strict=True):
        expected = jiwer.process_words(ref, hyp)
        assert (alignment.substitutions, alignment.deletions, alignment.insertions) == (
            expected.substitutions,
            expected.deletions,
            expected.insertions,
        ), utt_id
        assert alignment.correct == expected.hits
    expected = jiwer.process_words([r for _, r, _ in records], [h for _, _, h in records])
    assert (summary.substitutions, summary.deletions, summary.insertions) == (
        expected.substitutions,
        expected.deletions,
        expected.insertions,
    )
    assert summary.wer == pytest.approx(100 * expected.wer, rel=1e-12)


def test_wer_is_pooled_over_the_set_not_averaged() -> None:
    nine_words = "green tree river stone light house blue bird dog"
    summary, _ = score([("a", "cat", "dog"), ("b", nine_words, nine_words)])
    # Per-utterance rates 100 % and 0 % would average to 50 %; pooled: 1 error over 10 words.
    assert (summary.errors, summary.ref_words, summary.utterances) == (1, 10, 2)
    assert summary.wer == 10.0


def test_failed_utterances_count_as_deletions() -> None:
    summary, alignments = score([("a", "green tree", None), ("b", "cat", "cat")])
    assert (summary.failed, summary.utterances, summary.deletions, summary.ref_words) == (
        1,
        2,
        2,
        3,
    )
    assert alignments[0] == ("a", Alignment([("green", None), ("tree", None)]))


def test_duplicate_utterance_ids_are_refused() -> None:
    with pytest.raises(ValueError, match=r"utterance id 'a' appears twice; score each utterance"):
        score([("a", "cat", "cat"), ("b", "dog", "dog"), ("a", "cat", "cat")])


def test_wer_without_reference_words() -> None:
    assert WerSummary().wer == 0.0
    assert WerSummary(insertions=2, utterances=1).wer == math.inf
    summary, _ = score([("a", "<|endoftext|>", "uh")])  # fillers normalise away
    assert (summary.ref_words, summary.errors, summary.wer) == (0, 0, 0.0)


# --- result files ------------------------------------------------------------------------------

TINY_RECORDS = [
    ("utt-b", "THE CAT SAT ON THE MAT.", "the bat sat the mat too"),
    ("utt-a", "IT'S THE 13TH", "it is the thirteenth"),
    ("utt-c", "RED BLUE", None),
]


def test_write_wer(tmp_path) -> None:
    summary, _ = score(TINY_RECORDS)
    path = write_wer(
        tmp_path / "wer-test.txt", summary, {"RTF": 0.0631, "NFE/utt": 12, "mode": "x"}
    )
    assert path == tmp_path / "wer-test.txt"
    assert path.read_text().splitlines() == [
        "%WER = 41.67",  # 5 errors over 12 words
        "Errors: 1 insertions, 3 deletions, 1 substitutions, over 12 reference words "
        "(3 utterances, 1 failed)",
        "RTF: 0.0631",
        "NFE/utt: 12",
        "mode: x",
    ]


def test_write_errs(tmp_path) -> None:
    summary, alignments = score(TINY_RECORDS)
    path = write_errs(tmp_path / "errs-test.txt", summary, alignments)
    assert path.read_text() == (
        "%WER 41.67% [5 / 12, 1 ins, 3 del, 1 sub ]\n"
        "\n"
        "PER-UTT DETAILS: corr or (ref->hyp)\n"
        "utt-a:\tit is the 13th\n"
        "utt-b:\tthe (cat->bat) sat (on->*) the mat (*->too)\n"
        "utt-c:\t(red->*) (blue->*)\n"
        "\n"
        "SUBSTITUTIONS: count ref -> hyp\n"
        "1   cat -> bat\n"
        "\n"
        "DELETIONS: count ref\n"
        "1   blue\n"
        "1   on\n"
        "1   red\n"
        "\n"
        "INSERTIONS: count hyp\n"
        "1   too\n"
    )


def test_errs_word_counts_sort_by_count_then_word(tmp_path) -> None:
    summary, alignments = score([("a", "dog cat", ""), ("b", "cat", "")])
    text = write_errs(tmp_path / "errs.txt", summary, alignments).read_text()
    assert "DELETIONS: count ref\n2   cat\n1   dog\n" in text


def test_write_recogs(tmp_path) -> None:
    path = write_recogs(tmp_path / "recogs-test.txt", TINY_RECORDS)
    assert path.read_text().splitlines() == [
        "utt-a:\tref=['it', 'is', 'the', '13th']",
        "utt-a:\thyp=['it', 'is', 'the', '13th']",
        "utt-b:\tref=['the', 'cat', 'sat', 'on', 'the', 'mat']",
        "utt-b:\thyp=['the', 'bat', 'sat', 'the', 'mat', 'too']",
        "utt-c:\tref=['red', 'blue']",
        "utt-c:\thyp=[]",
    ]


def test_writes_replace_a_file_whole_and_leave_no_temp_file(tmp_path) -> None:
    path = tmp_path / "out" / "wer.txt"
    path.parent.mkdir()
    path.write_text("old content\n" * 100)
    write_wer(path, WerSummary(ref_words=4, substitutions=1, utterances=1), {})
    assert path.read_text() == (
        "%WER = 25.00\n"
        "Errors: 0 insertions, 0 deletions, 1 substitutions, over 4 reference words "
        "(1 utterances, 0 failed)\n"
    )
    assert os.listdir(path.parent) == ["wer.txt"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "errs.txt"
    path.write_text("previous results\n")

    def failing_replace(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_write.os, "replace", failing_replace)
    summary, alignments = score(TINY_RECORDS)
    with pytest.raises(OSError, match="disk full"):
        write_errs(path, summary, alignments)
    assert path.read_text() == "previous results\n"
    assert os.listdir(tmp_path) == ["errs.txt"]
