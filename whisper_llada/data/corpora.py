"""Preparing ASR corpora offline with lhotse's recipes into cut manifests, with an explicit target-text policy.

LibriSpeech, VoxPopuli (English ASR) and Common Voice (English) are prepared from local copies by
lhotse's recipes, never downloading: where a recipe would download (VoxPopuli's annotation table)
the file must already be in the corpus folder, else a `CorpusError` says which file goes where.
Each requested split becomes `<output_dir>/<corpus>_cuts_<split>.jsonl.gz`: one cut per utterance
(`trim_to_supervisions`), sorted by id, its supervision text rewritten by a `TextPolicy`.

`<output_dir>/<corpus>_preparation.json` records what the manifests were made from (corpus folder,
splits, text policy). lhotse's recipes reuse whatever manifests sit in their output folder; here
they write into a temporary folder instead, and prepared cuts are reused only when that record
matches the request exactly. Otherwise the corpus is prepared again and the record rewritten last,
so an interrupted preparation is redone rather than half used.

Target text: LibriSpeech's transcripts are upper case without punctuation, and Whisper-LLaDA was
trained on them as they are, so LibriSpeech's default policy keeps its text unchanged. VoxPopuli
and Common Voice default to the same convention (upper case, punctuation stripped), so mixed
training data shares one target style; pass another `TextPolicy` (`text_policy`) to change that.
`authors_json` writes prepared whole-file cuts in the authors' annotation JSON.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lhotse import CutSet
from lhotse.recipes import commonvoice as commonvoice_recipe
from lhotse.recipes import librispeech as librispeech_recipe
from lhotse.recipes import voxpopuli as voxpopuli_recipe

from whisper_llada.data.text_policy import (
    LIBRISPEECH_STYLE,
    LIBRISPEECH_TEXT_POLICY,
    TextPolicy,
    apply_text_policy,
)
from whisper_llada.utils.atomic_write import write_text_atomically

logger = logging.getLogger(__name__)


LANGUAGE = "en"
LIBRISPEECH_PARTS = (*librispeech_recipe.LIBRISPEECH, *librispeech_recipe.MINI_LIBRISPEECH)
VOXPOPULI_SPLITS = ("train", "dev", "test")
VOXPOPULI_ANNOTATIONS = f"asr_{LANGUAGE}.tsv.gz"
VOXPOPULI_ANNOTATIONS_URL = (
    f"{voxpopuli_recipe.DOWNLOAD_BASE_URL}/annotations/asr/{VOXPOPULI_ANNOTATIONS}"
)
COMMONVOICE_SPLITS = commonvoice_recipe.COMMONVOICE_SPLITS
COMMONVOICE_DEFAULT_SPLITS = ("train", "dev", "test")
COMMONVOICE_REQUIRED_COLUMNS = ("client_id", "path", "sentence")
# Read by lhotse's recipe, missing from some releases (`variant` arrived in 13.0): filled with "".
COMMONVOICE_OPTIONAL_COLUMNS = ("age", "gender", "accents", "variant")
PREPARATION_FORMAT = 1  # bump when the same request would produce different manifests


class CorpusError(Exception):
    """A corpus folder that is missing, laid out otherwise than its recipe expects, or lacking."""


def cuts_path(output_dir: str | Path, corpus: str, split: str) -> Path:
    """Where the cuts of `corpus`'s `split` go: `<output_dir>/<corpus>_cuts_<split>.jsonl.gz`."""
    return Path(output_dir) / f"{corpus}_cuts_{split}.jsonl.gz"


def prepare_librispeech(
    corpus_dir: str | Path,
    output_dir: str | Path,
    parts: Sequence[str] | None = None,
    text_policy: TextPolicy = LIBRISPEECH_TEXT_POLICY,
    *,
    num_jobs: int = 1,
) -> dict[str, Path]:
    """LibriSpeech (or a corpus in its layout, e.g. the synthetic one) to cut manifests.

    Args:
        corpus_dir: the folder holding the parts, `<corpus_dir>/<part>/<speaker>/<chapter>/`.
        output_dir: where the cuts and the preparation record go.
        parts: e.g. ["train-clean-100", "dev-clean"]; None prepares every part found.
        text_policy: by default the transcripts stay as they are (upper case, no punctuation).
        num_jobs: threads reading audio headers.

    Returns:
        {part: path of its cuts}.
    """
    corpus_dir = _existing_dir(corpus_dir, "LibriSpeech")
    if parts is None:
        parts = [p for p in LIBRISPEECH_PARTS if (corpus_dir / p).is_dir()]
        if not parts:
            raise CorpusError(
                f"no LibriSpeech part folder ({', '.join(LIBRISPEECH_PARTS)}) in {corpus_dir}: "
                "pass the folder that holds them (e.g. .../LibriSpeech)"
            )
    for part in parts:
        if part not in LIBRISPEECH_PARTS:
            known = ", ".join(LIBRISPEECH_PARTS)
            raise CorpusError(f"unknown LibriSpeech part {part!r}; parts: {known}")
        if next((corpus_dir / part).glob("*/*/*.trans.txt"), None) is None:
            raise CorpusError(
                f"{corpus_dir / part} has no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt: "
                f"expected LibriSpeech's layout, {part}/<speaker>/<chapter>/ with .flac files and "
                "a transcript per chapter"
            )

    def run_recipe(scratch: Path) -> dict[str, Any]:
        return librispeech_recipe.prepare_librispeech(
            corpus_dir, dataset_parts=list(parts), output_dir=scratch, num_jobs=num_jobs
        )

    return _prepare("librispeech", corpus_dir, output_dir, parts, text_policy, run_recipe)


def prepare_voxpopuli(
    corpus_dir: str | Path,
    output_dir: str | Path,
    splits: Sequence[str] = VOXPOPULI_SPLITS,
    text_policy: TextPolicy = LIBRISPEECH_STYLE,
    *,
    num_jobs: int = 1,
) -> dict[str, Path]:
    """VoxPopuli's English ASR data to cut manifests (one cut per segment of a session).

    Args:
        corpus_dir: holds `raw_audios/en/<year>/<session>_original.ogg` (the session audio) and
            `asr_en.tsv.gz` (the annotation table lhotse's recipe would otherwise download).
        output_dir: where the cuts and the preparation record go.
        splits: any of "train", "dev", "test".
        text_policy: applied to the recipe's text (VoxPopuli's `normed_text`).
        num_jobs: workers reading audio headers.

    Returns:
        {split: path of its cuts}.
    """
    corpus_dir = _existing_dir(corpus_dir, "VoxPopuli")
    _check_splits(splits, VOXPOPULI_SPLITS, "VoxPopuli")
    audio_dir = corpus_dir / "raw_audios" / LANGUAGE
    if next(audio_dir.rglob("*.ogg"), None) is None:
        raise CorpusError(
            f"no .ogg session audio under {audio_dir}: lhotse's VoxPopuli recipe reads "
            f"raw_audios/{LANGUAGE}/<year>/<session>_original.ogg under the corpus folder "
            f"(VoxPopuli's `--subset asr` download puts them in raw_audios/original: link it, "
            f"`ln -s original {corpus_dir / 'raw_audios' / LANGUAGE}`)"
        )
    annotations = corpus_dir / VOXPOPULI_ANNOTATIONS
    if not annotations.is_file():
        raise CorpusError(
            f"{annotations} is missing and lhotse's VoxPopuli recipe would download it (no "
            f"network here): download {VOXPOPULI_ANNOTATIONS_URL} and put it at {annotations}"
        )

    def run_recipe(scratch: Path) -> dict[str, Any]:
        shutil.copyfile(annotations, scratch / VOXPOPULI_ANNOTATIONS)  # where the recipe looks
        return voxpopuli_recipe.prepare_voxpopuli(
            corpus_dir, output_dir=scratch, task="asr", lang=LANGUAGE, num_jobs=num_jobs
        )

    return _prepare("voxpopuli", corpus_dir, output_dir, splits, text_policy, run_recipe)


def prepare_commonvoice(
    corpus_dir: str | Path,
    output_dir: str | Path,
    splits: Sequence[str] = COMMONVOICE_DEFAULT_SPLITS,
    text_policy: TextPolicy = LIBRISPEECH_STYLE,
    *,
    num_jobs: int = 1,
) -> dict[str, Path]:
    """Common Voice English to cut manifests; releases without a `variant` column work too.

    The recipe reads `<release>/en/<split>.tsv`; it gets patched copies in a temporary folder
    (missing optional columns added, clip paths made absolute), never touching the corpus.
    Its workers are spawned processes: call this under `if __name__ == "__main__":`.

    Args:
        corpus_dir: a release folder (e.g. cv-corpus-13.0-2023-03-09) holding `en/clips/` and
            `en/<split>.tsv`.
        output_dir: where the cuts and the preparation record go.
        splits: any of the release's TSVs: train, dev, test, validated, invalidated, other.
        text_policy: applied to the `sentence` column.
        num_jobs: worker processes reading audio headers.

    Returns:
        {split: path of its cuts}.
    """
    corpus_dir = _existing_dir(corpus_dir, "Common Voice")
    _check_splits(splits, COMMONVOICE_SPLITS, "Common Voice")
    language_dir = corpus_dir / LANGUAGE
    if not (language_dir / "clips").is_dir():
        hint = f"; pass its parent {corpus_dir.parent}" if corpus_dir.name == LANGUAGE else ""
        raise CorpusError(
            f"{language_dir / 'clips'} is not a folder: expected a Common Voice release folder "
            f"holding {LANGUAGE}/clips/ and {LANGUAGE}/<split>.tsv{hint}"
        )
    for split in splits:
        if not (language_dir / f"{split}.tsv").is_file():
            raise CorpusError(
                f"{language_dir / f'{split}.tsv'} is missing: this release has no {split} "
                "split, or the folder is incomplete"
            )

    def run_recipe(scratch: Path) -> dict[str, Any]:
        patched = scratch / "corpus"
        for split in splits:
            tsv = f"{split}.tsv"
            _patch_commonvoice_tsv(language_dir / tsv, patched / LANGUAGE / tsv)
        manifests = commonvoice_recipe.prepare_commonvoice(
            patched, scratch, languages=[LANGUAGE], splits=list(splits), num_jobs=num_jobs
        )
        return manifests[LANGUAGE]

    return _prepare("commonvoice", corpus_dir, output_dir, splits, text_policy, run_recipe)


def _patch_commonvoice_tsv(source: Path, target: Path) -> None:
    """Copy a Common Voice TSV with the recipe's optional columns added and absolute clip paths.

    The recipe opens `<lang dir>/clips/<path>`; an absolute `path` makes pathlib's join yield it
    unchanged, so the recordings point into the user's corpus, not the temporary copy.
    """
    with open(source, newline="", encoding="utf-8") as f:
        # QUOTE_NONE as the recipe reads it: Common Voice sentences contain unbalanced quotes.
        header, *rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = [c for c in COMMONVOICE_REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CorpusError(
            f"{source} lacks the column(s) {', '.join(missing)}: not a Common Voice TSV"
        )
    added = [c for c in COMMONVOICE_OPTIONAL_COLUMNS if c not in header]
    path_column = header.index("path")
    clips = source.parent.absolute() / "clips"
    lines = ["\t".join([*header, *added])]
    for row in rows:
        if not row:
            continue
        row = (row + [""] * len(header))[: len(header)]
        row[path_column] = str(clips / row[path_column])
        lines.append("\t".join([*row, *[""] * len(added)]))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _existing_dir(corpus_dir: str | Path, corpus: str) -> Path:
    corpus_dir = Path(corpus_dir).absolute()  # manifests then hold absolute audio paths
    if not corpus_dir.is_dir():
        raise CorpusError(
            f"{corpus} corpus folder {corpus_dir} does not exist: pass the folder of your "
            "local copy"
        )
    return corpus_dir


def _check_splits(splits: Sequence[str], known: Sequence[str], corpus: str) -> None:
    unknown = [s for s in splits if s not in known]
    if not splits or unknown:
        raise CorpusError(f"{corpus} splits must be among {', '.join(known)}; got {list(splits)}")


def _prepare(
    corpus: str,
    corpus_dir: Path,
    output_dir: str | Path,
    splits: Sequence[str],
    text_policy: TextPolicy,
    run_recipe: Callable[[Path], dict[str, Any]],
) -> dict[str, Path]:
    """Run a recipe into a temporary folder and write its splits as cuts, unless already done."""
    output_dir = Path(output_dir)
    record = {
        "format": PREPARATION_FORMAT, "corpus": corpus, "corpus_dir": str(corpus_dir),
        "splits": list(splits), "text_policy": asdict(text_policy),
    }  # fmt: skip
    paths = {split: cuts_path(output_dir, corpus, split) for split in splits}
    marker = output_dir / f"{corpus}_preparation.json"
    previous = json.loads(marker.read_text()) if marker.is_file() else None
    if previous == record and all(path.is_file() for path in paths.values()):
        logger.info("%s already prepared in %s with the same settings", corpus, output_dir)
        return paths
    if previous is not None:
        logger.warning("preparing %s again: %s records other settings", corpus, marker)
        marker.unlink()
        for split in set(previous.get("splits", [])) - set(splits):
            cuts_path(output_dir, corpus, split).unlink(missing_ok=True)  # stale: not asked for
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch_prefix = f".{corpus}_recipe."
    for leftover in output_dir.glob(f"{scratch_prefix}*"):  # from an interrupted preparation
        shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=scratch_prefix) as scratch:
        manifests = run_recipe(Path(scratch))
        staged = {}
        for split, path in paths.items():
            staged[split] = Path(scratch) / path.name
            _split_cuts(manifests, split, corpus, text_policy).to_file(staged[split])
        for split, path in paths.items():
            os.replace(staged[split], path)
    write_text_atomically(marker, json.dumps(record, indent=2) + "\n")
    logger.info("prepared %s: %s", corpus, ", ".join(str(p) for p in paths.values()))
    return paths


def _split_cuts(
    manifests: dict[str, Any], split: str, corpus: str, text_policy: TextPolicy
) -> CutSet:
    """One cut per supervision of `split`, sorted by id, texts rewritten by `text_policy`."""
    if split not in manifests:
        raise CorpusError(f"lhotse's {corpus} recipe produced no {split} split")
    supervisions = manifests[split]["supervisions"].transform_text(
        lambda text: apply_text_policy(text, text_policy)
    )
    trimmed = CutSet.from_manifests(
        recordings=manifests[split]["recordings"], supervisions=supervisions
    ).trim_to_supervisions(keep_overlapping=False)
    cuts = sorted(trimmed, key=lambda cut: cut.id)
    if not cuts:
        raise CorpusError(
            f"no {corpus} {split} utterance has its audio in the corpus folder: check that the "
            "audio files named by the transcripts exist"
        )
    return CutSet.from_cuts(cuts)
