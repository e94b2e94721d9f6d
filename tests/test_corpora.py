"""Corpus preparation through lhotse's recipes, offline, on small fake corpora in their layouts."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, SupervisionSegment, SupervisionSet
from lhotse.recipes import commonvoice as commonvoice_recipe
from lhotse.recipes import librispeech as librispeech_recipe
from lhotse.recipes import voxpopuli as voxpopuli_recipe

from whisper_llada.data import corpora
from whisper_llada.data.authors_json import export_authors_json
from whisper_llada.data.corpora import (
    CorpusError,
    prepare_commonvoice,
    prepare_librispeech,
    prepare_voxpopuli,
)
from whisper_llada.data.manifest import read_manifest
from whisper_llada.data.text_policy import LIBRISPEECH_STYLE, TextPolicy, apply_text_policy

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16000
TOLERANCE_SECONDS = 0.010

# LibriSpeech: (utterance id, seconds, transcript) per part.
LIBRISPEECH_UTTERANCES = {
    "dev-clean": [
        ("19-198-0000", 0.50, "NORTHANGER ABBEY"),
        ("19-198-0001", 0.75, "THIS LITTLE WORK WAS FINISHED IN THE YEAR"),
        ("26-495-0000", 0.60, "CHAPTER ONE"),
    ],
    "test-clean": [("61-70968-0000", 0.40, "HE BEGAN A CONFUSED COMPLAINT")],
}
# VoxPopuli: session lengths in seconds, and annotation rows (session, split, start, end, text).
VOXPOPULI_SESSIONS = {"20190101-0900-PLENARY-1": 4.0, "20190102-0900-PLENARY-2": 3.0}
VOXPOPULI_ROWS = [
    ("20190101-0900-PLENARY-1", "train", 0.5, 1.5, "thank you mister president"),
    ("20190101-0900-PLENARY-1", "train", 2.0, 3.25, "the debate is closed"),
    ("20190101-0900-PLENARY-1", "other", 3.3, 3.9, "a row the recipe drops"),
    ("20190102-0900-PLENARY-2", "dev", 0.25, 1.0, "we vote now"),
    ("20190102-0900-PLENARY-2", "test", 1.5, 2.75, "the sitting is closed"),
]
VOXPOPULI_COLUMNS = (
    "session_id|id_|lang|split|gender|is_gold_transcript|accent|original_text|normed_text|"
    "speaker_id|start_time|end_time"
)
VOXPOPULI_URL = "https://dl.fbaipublicfiles.com/voxpopuli/annotations/asr/asr_en.tsv.gz"
# Common Voice before 13.0: no `variant` column. Rows: (client, clip, sentence, seconds).
COMMONVOICE_COLUMNS = (
    "client_id path sentence up_votes down_votes age gender accents locale segment"
)
COMMONVOICE_ROWS = {
    "train": [
        ("c1", "common_voice_en_101.mp3", "Hello, world!", 0.8),
        ("c2", "common_voice_en_102.mp3", "He said \"don't go.", 1.2),
    ],
    "test": [("c3", "common_voice_en_201.mp3", "Rock-and-roll… never dies", 1.0)],
}


def _write_tone(path: Path, seconds: float, **format_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), SAMPLE_RATE, **format_args)
    return path


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Every download helper the recipes use fails loudly: preparation must stay offline."""

    def download(*args, **kwargs):
        raise AssertionError(f"a recipe tried to download: {args}")

    monkeypatch.setattr(librispeech_recipe, "resumable_download", download)
    monkeypatch.setattr(commonvoice_recipe, "resumable_download", download)
    monkeypatch.setattr(voxpopuli_recipe, "download_url_to_file", download)


@pytest.fixture
def librispeech(tmp_path) -> Path:
    root = tmp_path / "LibriSpeech"
    for part, utterances in LIBRISPEECH_UTTERANCES.items():
        for utterance_id, seconds, text in utterances:
            speaker, chapter, _ = utterance_id.split("-")
            chapter_dir = root / part / speaker / chapter
            _write_tone(chapter_dir / f"{utterance_id}.flac", seconds)
            with open(chapter_dir / f"{speaker}-{chapter}.trans.txt", "a") as f:
                f.write(f"{utterance_id} {text}\n")
    return root


@pytest.fixture
def voxpopuli(tmp_path) -> Path:
    root = tmp_path / "voxpopuli"
    for session, seconds in VOXPOPULI_SESSIONS.items():
        audio = root / "raw_audios" / "en" / "2019" / f"{session}_original.ogg"
        _write_tone(audio, seconds, format="OGG", subtype="VORBIS")
    lines = [VOXPOPULI_COLUMNS]
    for i, (session, split, start, end, text) in enumerate(VOXPOPULI_ROWS):
        fields = [session, f"{session}_{i}", "en", split, "female", "True", "None"]
        lines.append(
            "|".join([*fields, f"{text.capitalize()}.", text, str(i), str(start), str(end)])
        )
    with gzip.open(root / "asr_en.tsv.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    return root


@pytest.fixture
def commonvoice(tmp_path) -> Path:
    root = tmp_path / "cv-corpus-12.0-2022-12-07"
    for split, rows in COMMONVOICE_ROWS.items():
        lines = ["\t".join(COMMONVOICE_COLUMNS.split())]
        for client, clip, sentence, seconds in rows:
            _write_tone(root / "en" / "clips" / clip, seconds, format="MP3")
            lines.append("\t".join([client, clip, sentence, "2", "0", "", "", "", "en", ""]))
        (root / "en" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(
    ("text", "policy", "expected"),
    [
        ("Don't stop — now!", TextPolicy("upper", "strip"), "DON'T STOP NOW"),
        ("‘Quoted’, e.g. rock-and-roll.", TextPolicy("lower", "strip"), "quoted eg rock and roll"),
        (
            "O’Brien's  dog,  students' books",
            TextPolicy("as_is", "strip"),
            "O'Brien's dog students books",
        ),
        ("either/or (maybe)", TextPolicy("as_is", "strip"), "either or maybe"),
        ("  Mixed  Case, kept. ", TextPolicy("as_is", "keep"), "  Mixed  Case, kept. "),
        ("Straße, café", TextPolicy("upper", "keep"), "STRASSE, CAFÉ"),
        ("THE END", TextPolicy("lower", "keep"), "the end"),
    ],
)
def test_text_policy_rewrites_texts(text, policy, expected):
    assert apply_text_policy(text, policy) == expected


def test_text_policy_rejects_unknown_values():
    with pytest.raises(ValueError, match="casing must be one of upper, lower, as_is; got 'title'"):
        TextPolicy(casing="title")
    with pytest.raises(ValueError, match="punctuation must be one of keep, strip; got 'drop'"):
        TextPolicy(punctuation="drop")


def test_librispeech_prepares_to_sorted_cuts_with_texts_as_they_are(librispeech, tmp_path):
    out = tmp_path / "manifests"
    paths = prepare_librispeech(librispeech, out)
    assert paths == {p: out / f"librispeech_cuts_{p}.jsonl.gz" for p in LIBRISPEECH_UTTERANCES}
    for part, utterances in LIBRISPEECH_UTTERANCES.items():
        got = [
            (c.id, c.supervisions[0].text, Path(c.recording.sources[0].source))
            for c in CutSet.from_file(paths[part])
        ]
        speaker_chapter = [u[0].split("-")[:2] for u in utterances]
        assert got == [
            (u[0], u[2], librispeech / part / speaker / chapter / f"{u[0]}.flac")
            for u, (speaker, chapter) in zip(utterances, speaker_chapter, strict=True)
        ]
        durations = [c.duration for c in CutSet.from_file(paths[part])]
        assert durations == pytest.approx([u[1] for u in utterances], abs=TOLERANCE_SECONDS)
    record = json.loads((out / "librispeech_preparation.json").read_text())
    assert record["splits"] == ["dev-clean", "test-clean"]
    assert record["text_policy"] == {"casing": "as_is", "punctuation": "keep"}
    assert record["corpus_dir"] == str(librispeech)


def test_prepared_manifests_are_reused_only_for_the_same_policy_and_parts(
    librispeech, tmp_path, monkeypatch
):
    out = tmp_path / "manifests"
    (out / ".librispeech_recipe.interrupted").mkdir(parents=True)  # left by a killed run
    # The trap: lhotse's recipe silently reuses a manifest it finds in its output folder.
    stale = SupervisionSegment(
        id="19-198-0000", recording_id="19-198-0000", start=0, duration=0.5, text="STALE"
    )
    SupervisionSet([stale]).to_file(out / "librispeech_supervisions_dev-clean.jsonl.gz")
    paths = prepare_librispeech(librispeech, out, ["dev-clean", "test-clean"])
    assert CutSet.from_file(paths["dev-clean"])[0].supervisions[0].text == "NORTHANGER ABBEY"
    assert not (out / ".librispeech_recipe.interrupted").exists()

    lower = prepare_librispeech(librispeech, out, ["dev-clean"], TextPolicy(casing="lower"))
    assert CutSet.from_file(lower["dev-clean"])[0].supervisions[0].text == "northanger abbey"
    assert not paths["test-clean"].exists()  # a part no longer asked for is not left behind
    prepared_at = lower["dev-clean"].stat().st_mtime_ns

    def recipe(*args, **kwargs):
        raise AssertionError("the recipe ran again")

    monkeypatch.setattr(librispeech_recipe, "prepare_librispeech", recipe)
    assert prepare_librispeech(librispeech, out, ["dev-clean"], TextPolicy(casing="lower")) == lower
    assert lower["dev-clean"].stat().st_mtime_ns == prepared_at
    with pytest.raises(AssertionError, match="the recipe ran again"):
        prepare_librispeech(librispeech, out, ["dev-clean"])  # another policy: prepared again


def test_missing_or_misshapen_corpus_folders_raise(tmp_path, librispeech, commonvoice):
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=r"LibriSpeech corpus folder .*/nowhere does not exist"):
        prepare_librispeech(tmp_path / "nowhere", out)
    with pytest.raises(CorpusError, match=r"no LibriSpeech part folder .* pass the folder that"):
        prepare_librispeech(librispeech / "dev-clean", out)
    (librispeech / "test-other" / "1" / "2").mkdir(parents=True)
    with pytest.raises(CorpusError, match="test-other has no <speaker>/<chapter>/<speaker>-"):
        prepare_librispeech(librispeech, out, ["test-other"])
    with pytest.raises(CorpusError, match=r"no \.ogg session audio under .*/raw_audios/en"):
        prepare_voxpopuli(tmp_path, out)
    with pytest.raises(CorpusError, match=r"en/clips is not a folder.*; pass its parent"):
        prepare_commonvoice(commonvoice / "en", out)
    with pytest.raises(CorpusError, match=r"en/dev\.tsv is missing"):
        prepare_commonvoice(commonvoice, out, ["dev"])
    assert not out.exists()


def test_voxpopuli_prepares_offline_to_segment_cuts(voxpopuli, tmp_path):
    paths = prepare_voxpopuli(voxpopuli, tmp_path / "out")
    got = {
        split: [(c.id, c.start, c.duration, c.supervisions[0].text) for c in CutSet.from_file(path)]
        for split, path in paths.items()
    }
    assert got == {  # ids count each session's segments in table order; "other" rows are dropped
        "train": [
            ("20190101-0900-PLENARY-1-1", 0.5, 1.0, "THANK YOU MISTER PRESIDENT"),
            ("20190101-0900-PLENARY-1-2", 2.0, 1.25, "THE DEBATE IS CLOSED"),
        ],
        "dev": [("20190102-0900-PLENARY-2-1", 0.25, 0.75, "WE VOTE NOW")],
        "test": [("20190102-0900-PLENARY-2-2", 1.5, 1.25, "THE SITTING IS CLOSED")],
    }
    assert not (tmp_path / "out" / "asr_en.tsv.gz").exists()  # the recipe's copy was temporary
    with pytest.raises(CorpusError, match=r"cut 20190101-0900-PLENARY-1-1 is a segment .* not Vox"):
        export_authors_json(paths["train"], tmp_path / "train.json")


def test_voxpopuli_without_its_annotation_table_asks_for_it(voxpopuli, tmp_path):
    (voxpopuli / "asr_en.tsv.gz").unlink()
    where = f"download {VOXPOPULI_URL} and put it at {voxpopuli}/asr_en.tsv.gz"
    with pytest.raises(CorpusError, match=rf"asr_en\.tsv\.gz is missing .* {re.escape(where)}"):
        prepare_voxpopuli(voxpopuli, tmp_path / "out")


def test_commonvoice_release_without_variant_prepares_without_touching_the_corpus(
    commonvoice, tmp_path
):
    tsvs = {p: p.read_bytes() for p in (commonvoice / "en").glob("*.tsv")}
    out = tmp_path / "out"
    paths = prepare_commonvoice(commonvoice, out, ["train", "test"])
    got = {
        split: [(c.id, c.supervisions[0].text, c.recording.sources[0].source) for c in cuts]
        for split, cuts in ((s, CutSet.from_file(p)) for s, p in paths.items())
    }
    clips = commonvoice / "en" / "clips"
    assert got == {
        "train": [
            ("common_voice_en_101", "HELLO WORLD", str(clips / "common_voice_en_101.mp3")),
            ("common_voice_en_102", "HE SAID DON'T GO", str(clips / "common_voice_en_102.mp3")),
        ],
        "test": [
            (
                "common_voice_en_201",
                "ROCK AND ROLL NEVER DIES",
                str(clips / "common_voice_en_201.mp3"),
            )
        ],
    }
    durations = [c.duration for c in CutSet.from_file(paths["train"])]
    assert durations == pytest.approx([0.8, 1.2], abs=TOLERANCE_SECONDS)
    assert {p: p.read_bytes() for p in (commonvoice / "en").glob("*.tsv")} == tsvs
    assert sorted(p.name for p in out.iterdir()) == [
        "commonvoice_cuts_test.jsonl.gz",
        "commonvoice_cuts_train.jsonl.gz",
        "commonvoice_preparation.json",
    ]


def test_commonvoice_tsv_copy_gains_the_missing_columns(commonvoice, tmp_path):
    target = tmp_path / "patched" / "train.tsv"
    corpora._patch_commonvoice_tsv(commonvoice / "en" / "train.tsv", target)
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    clips = commonvoice / "en" / "clips"
    assert [(r["variant"], r["sentence"], r["path"]) for r in rows] == [
        ("", "Hello, world!", str(clips / "common_voice_en_101.mp3")),
        ("", "He said \"don't go.", str(clips / "common_voice_en_102.mp3")),
    ]


def test_authors_json_export_reads_back_as_the_same_utterances(librispeech, tmp_path):
    cuts = prepare_librispeech(librispeech, tmp_path / "out", ["dev-clean"], LIBRISPEECH_STYLE)
    out = export_authors_json(cuts["dev-clean"], tmp_path / "dev.json")
    annotation = json.loads(out.read_text())["annotation"]
    assert annotation[0] == {
        "path": str(librispeech / "dev-clean" / "19" / "198" / "19-198-0000.flac"),
        "text": "NORTHANGER ABBEY",
    }
    from_json = [(u.audio, u.text) for u in read_manifest(out)]
    from_cuts = [(u.audio, u.text) for u in read_manifest(cuts["dev-clean"])]
    assert from_json == from_cuts
    assert len(from_json) == len(LIBRISPEECH_UTTERANCES["dev-clean"])


def _cli(name: str):
    """The module of the CLI data/<name>.py (data/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clis_prepare_export_and_report_corpus_errors(librispeech, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--corpus-dir", str(librispeech), "--output-dir", str(out), "--parts", "test-clean"]
    _cli("prepare_librispeech").main([*args, "--casing", "lower"])
    cuts = out / "librispeech_cuts_test-clean.jsonl.gz"
    assert capsys.readouterr().out == f"{cuts}\n"
    assert CutSet.from_file(cuts)[0].supervisions[0].text == "he began a confused complaint"
    _cli("export_authors_json").main([str(cuts), str(tmp_path / "test.json")])
    assert capsys.readouterr().out == f"{tmp_path / 'test.json'}\n"
    assert len(json.loads((tmp_path / "test.json").read_text())["annotation"]) == 1
    with pytest.raises(SystemExit) as exit_info:
        args = ["--corpus-dir", str(tmp_path / "nowhere"), "--output-dir", str(out)]
        _cli("prepare_commonvoice").main(args)
    assert exit_info.value.code == 2
    assert "error: Common Voice corpus folder" in capsys.readouterr().err
