"""The synthetic corpus: sentences, espeak-ng speech, LibriSpeech's layout read by lhotse's recipe."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse.recipes import prepare_librispeech

from whisper_llada.data import sentences as sentence_module
from whisper_llada.data import synthetic_corpus
from whisper_llada.data.sentences import SentenceGenerator
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.data.synthetic_corpus import (
    MARKER_NAME,
    UTTERANCES_NAME,
    build_synthetic_corpus,
    read_planned_utterances,
)

SPLITS = {"train-clean-100": 12, "dev-clean": 4, "test-clean": 4}
TRAIN_VOICES = ["en-us", "en-gb+f3"]
UNSEEN_VOICE = "en-gb-scotland+m3"
SETTINGS = {
    "seed": 0,
    "vocabulary_size": 300,
    "min_words": 3,
    "max_words": 6,
    "random_order_share": 0.25,
    "voices": {
        "train-clean-100": TRAIN_VOICES,
        "dev-clean": TRAIN_VOICES,
        "test-clean": [UNSEEN_VOICE],
    },
    "rates_wpm": (170, 200),
    "pitches": (40, 60),
    "speeds": (1.0, 1.1),
    "snrs_db": (None, 20.0),
}
TEXT = "seven purple kites"
SAMPLE_RATE = 16000
DURATION_TOLERANCE_SECONDS = 0.010
UTTERANCE_ID = re.compile(r"(\d+)-(\d+)-\d{4}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "corpus"
    return build_synthetic_corpus(root, SPLITS, **SETTINGS)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_gives_the_same_corpus_byte_for_byte(corpus, tmp_path):
    again = build_synthetic_corpus(tmp_path / "again", SPLITS, **SETTINGS)
    assert _files(again) == _files(corpus)
    other = SentenceGenerator(1, vocabulary_size=300, min_words=3, max_words=6).generate(20)
    texts = {u.text for u in read_planned_utterances(corpus)}
    assert not texts & {s.text for s in other}


def test_generator_is_deterministic_and_keeps_to_its_vocabulary_and_lengths():
    make = lambda: SentenceGenerator(7, vocabulary_size=120, min_words=4, max_words=9)  # noqa: E731
    first, second = make(), make()
    sentences = first.generate(300)
    assert sentences == second.generate(300)
    assert len(first.vocabulary) == 120 == len(set(first.vocabulary))
    assert all(set(first.words[c]) for c in sentence_module.CATEGORIES)  # no category left empty
    words = [s.text.split() for s in sentences]
    assert set().union(*words) <= set(first.vocabulary) | {"an"}
    assert {len(w) for w in words} == set(range(4, 10))
    longest = sentence_module.MAX_TEMPLATE_WORDS
    full = SentenceGenerator(7, min_words=longest, max_words=longest, random_order_share=0)
    assert [len(s.text.split()) for s in full.generate(3)] == [longest] * 3


def test_sentences_are_never_repeated_so_held_out_splits_are_unseen(corpus):
    utterances = read_planned_utterances(corpus)
    train = {u.text for u in utterances if u.split == "train-clean-100"}
    held_out = [u.text for u in utterances if u.split != "train-clean-100"]
    assert len(train) == SPLITS["train-clean-100"] and not train & set(held_out)
    # A space too small for the count is an error, never a repeated sentence.
    tiny = SentenceGenerator(0, vocabulary_size=8, min_words=3, max_words=3, random_order_share=0)
    assert tiny.generate(1)[0].text.count(" ") == 2
    with pytest.raises(ValueError, match=r"no new template sentence .* raise vocabulary_size or"):
        tiny.generate(1)


def test_random_order_share_is_exact_and_only_templates_are_grammatical(corpus):
    generator = SentenceGenerator(3, random_order_share=0.3)
    sentences = generator.generate(50)
    assert Counter(s.kind for s in sentences) == {"random": 15, "template": 35}
    verbs = set(generator.words["verb"])
    for sentence in sentences:  # a template sentence has exactly one verb, after its subject
        if sentence.kind == "template":
            assert sum(w in verbs for w in sentence.text.split()) == 1
    kinds = Counter((u.split, u.kind) for u in read_planned_utterances(corpus))
    assert kinds[("train-clean-100", "random")] == 3 and kinds[("test-clean", "random")] == 1


def test_layout_is_librispeech(corpus):
    top_level = sorted(p.name for p in corpus.iterdir())
    assert top_level == sorted([*SPLITS, MARKER_NAME, UTTERANCES_NAME])
    speakers_by_split = {}
    for split in SPLITS:
        chapters = sorted(p for p in (corpus / split).glob("*/*") if p.is_dir())
        speakers_by_split[split] = {p.parent.name for p in chapters}
        n_utterances = 0
        for chapter_dir in chapters:
            speaker, chapter = chapter_dir.parent.name, chapter_dir.name
            transcript = chapter_dir / f"{speaker}-{chapter}.trans.txt"
            not_audio = [p.name for p in chapter_dir.iterdir() if p.suffix != ".flac"]
            assert not_audio == [transcript.name]
            lines = transcript.read_text().splitlines()
            ids = [line.split(" ", 1)[0] for line in lines]
            assert ids == sorted(p.stem for p in chapter_dir.glob("*.flac"))
            for line, utterance_id in zip(lines, ids, strict=True):
                assert UTTERANCE_ID.fullmatch(utterance_id).groups() == (speaker, chapter)
                assert re.fullmatch(r"[A-Z']+( [A-Z']+)+", line.split(" ", 1)[1])
                info = sf.info(chapter_dir / f"{utterance_id}.flac")
                assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
            n_utterances += len(lines)
        assert n_utterances == SPLITS[split]
    all_speakers = [s for speakers in speakers_by_split.values() for s in speakers]
    assert len(all_speakers) == len(set(all_speakers))  # speakers never shared across splits


def test_each_split_speaks_with_its_own_voices(corpus):
    voices = {}
    for u in read_planned_utterances(corpus):
        voices.setdefault(u.split, set()).add(u.voice)
    assert voices == {
        "train-clean-100": set(TRAIN_VOICES),
        "dev-clean": set(TRAIN_VOICES),
        "test-clean": {UNSEEN_VOICE},
    }


def test_lhotse_librispeech_recipe_prepares_the_corpus(corpus):
    manifests = prepare_librispeech(corpus, dataset_parts=list(SPLITS))
    planned = read_planned_utterances(corpus)
    for split in SPLITS:
        supervisions = manifests[split]["supervisions"]
        expected = {u.id: u for u in planned if u.split == split}
        assert sorted(s.id for s in supervisions) == sorted(expected)
        for s in supervisions:
            assert s.text == expected[s.id].text.upper()
            assert s.speaker == s.id.split("-")[0]
            info = sf.info(corpus / expected[s.id].path)
            assert abs(s.duration - info.frames / info.samplerate) <= DURATION_TOLERANCE_SECONDS
            recording = manifests[split]["recordings"][s.recording_id]
            assert recording.sources[0].source == str(corpus / expected[s.id].path)


def test_a_finished_corpus_is_not_rebuilt_and_other_parameters_are_an_error(corpus, monkeypatch):
    marker_time = (corpus / MARKER_NAME).stat().st_mtime_ns
    monkeypatch.setattr(synthetic_corpus, "synthesize", lambda *a, **k: pytest.fail("rebuilt"))
    assert build_synthetic_corpus(corpus, SPLITS, **SETTINGS) == corpus
    assert (corpus / MARKER_NAME).stat().st_mtime_ns == marker_time
    with pytest.raises(ValueError, match=r"built with other parameters \(changed: seed\)"):
        build_synthetic_corpus(corpus, SPLITS, **{**SETTINGS, "seed": 1})


def test_an_interrupted_build_is_redone_and_foreign_folders_are_refused(tmp_path, monkeypatch):
    root, small = tmp_path / "corpus", {"dev-clean": 3}
    calls = []

    def fail_on_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return synthesize(*args, **kwargs)

    monkeypatch.setattr(synthetic_corpus, "synthesize", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_synthetic_corpus(root, small, seed=0, workers=1)
    assert not root.exists() and (tmp_path / ".corpus.partial").is_dir()
    monkeypatch.undo()
    build_synthetic_corpus(root, small, seed=0)
    assert len(list(root.rglob("*.flac"))) == 3 and not (tmp_path / ".corpus.partial").exists()
    (tmp_path / "foreign" / "dev-clean").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"is not a finished synthetic corpus .* a new or empty"):
        build_synthetic_corpus(tmp_path / "foreign", small, seed=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"voices": ["en-us+nope"]},
            "unknown espeak-ng variant 'nope' in 'en-us\\+nope'; variants: ",
        ),
        ({"voices": ["xx-yy"]}, "unknown espeak-ng voice 'xx-yy' .* English voices: en-029, "),
        ({"splits": {"train": 3}}, "split names must be LibriSpeech's .* got \\['train'\\]"),
        ({"pitches": [120]}, "pitches must lie in espeak-ng's 0..99, got \\[120\\]"),
        ({"max_words": 40}, "min_words <= max_words <= 25 .* max_words=40"),
    ],
)
def test_bad_settings_raise_before_any_work(tmp_path, changes, message):
    arguments = {"splits": {"dev-clean": 2}, "seed": 0, **changes}
    with pytest.raises(ValueError, match=message):
        build_synthetic_corpus(tmp_path / "corpus", **arguments)
    assert not (tmp_path / "corpus").exists()


def test_speed_perturbation_and_noise_are_deterministic(tmp_path):
    plain = synthesize(TEXT, tmp_path / "plain.flac")
    assert synthesize(TEXT, tmp_path / "again.flac").read_bytes() == plain.read_bytes()
    clean, _ = sf.read(plain)
    fast = sf.info(synthesize(TEXT, tmp_path / "fast.flac", speed=1.25)).frames
    assert abs(fast - len(clean) / 1.25) <= 1
    noisy_path = synthesize(TEXT, tmp_path / "noisy.flac", snr_db=10.0, noise_seed=3)
    noisy, _ = sf.read(noisy_path)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    same = synthesize(TEXT, tmp_path / "same.flac", snr_db=10.0, noise_seed=3)
    other = synthesize(TEXT, tmp_path / "other.flac", snr_db=10.0, noise_seed=4)
    assert same.read_bytes() == noisy_path.read_bytes() != other.read_bytes()


def test_utterances_record_matches_the_audio(corpus):
    lines = (corpus / UTTERANCES_NAME).read_text().splitlines()
    planned = read_planned_utterances(corpus)
    assert [json.loads(line)["id"] for line in lines] == [u.id for u in planned]
    assert {u.speed for u in planned} == {1.0, 1.1} and {u.snr_db for u in planned} == {None, 20.0}
    assert all((corpus / u.path).is_file() for u in planned)
