"""Decode outputs as scoring entries: this project's results JSONL or the authors' output JSON, and the test set's name.

Two formats, told apart by content:

- this project's results JSONL (`inference.py`'s `results.jsonl`): one object a line with `id`,
  `reference`, `hypothesis` and `error` (null when decoded), plus fields the scorer ignores;
- the authors' output JSON: a list (or `{"annotation": [...]}`) of `{"path", "text",
  "llada_prediction"}` objects, `origin_transcripts` too after deliberation; `path` is the id.

An utterance has no hypothesis (it failed) when its record has an `error`, or when its authors'
entry lacks the hypothesis field or holds null there. Another field can be scored instead of the
default: `prior` (the first pass or CTC draft) in the JSONL, `origin_transcripts` (the first
pass; a list gives its first item) in the authors' JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

JSONL = "results JSONL"
AUTHORS = "authors' JSON"
DEFAULT_HYP_FIELD = {JSONL: "hypothesis", AUTHORS: "llada_prediction"}
FORMATS_HINT = (
    "expected this project's results JSONL (inference.py's results.jsonl: one "
    '{"id", "reference", "hypothesis", "error", ...} object a line) or the authors\' output '
    'JSON (a list, or {"annotation": [...]}, of {"path", "text", "llada_prediction"} objects)'
)
TORN_HINT = (
    "; a torn last line: the shard of a run still going or killed "
    "(score results.jsonl once the run has finished)"
)
# Naming a test set (`default_name`). inference.py writes the config it ran with beside the results; its manifest names the test set.
RUN_CONFIG = "config.yaml"
GENERIC_STEM = re.compile(r"results(-rank\d+)?")
LIBRISPEECH_SPLIT = re.compile(r"(?<![a-z])(dev|test)[-_ ]?(clean|other)(?![a-z])")
OTHER_CORPORA = (
    (re.compile(r"voxpopuli"), "VoxPopuli"),
    (re.compile(r"common[-_ ]?voice"), "Common Voice"),
)
DEV_SPLIT = re.compile(r"(?<![a-z])dev(?![a-z])")


class ResultsFileError(ValueError):
    """A results file that cannot be scored: the message names the file and what was expected."""


@dataclass(frozen=True)
class Entry:
    """One utterance of a results file; `failure` says why there is no hypothesis (None: there is)."""

    id: str
    reference: str
    hypothesis: str
    failure: str | None = None


@dataclass(frozen=True)
class ResultsFile:
    """A results file read for scoring: its format, the field scored and its utterances in order."""

    path: Path
    format: str  # JSONL or AUTHORS
    hyp_field: str
    entries: list[Entry]


def read_results(path: str | Path, hyp_field: str | None = None) -> ResultsFile:
    """Read a results file in either format (see the module docstring), told apart by content.

    Args:
        path: the file.
        hyp_field: the field to score as the hypothesis; None for the format's default
            (`hypothesis` or `llada_prediction`).

    Raises:
        ResultsFileError: not UTF-8, neither format, an entry missing a field or of the wrong
            type, no utterances, or (authors' JSON) no entry with the hypothesis field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ResultsFileError(f"{path}: not UTF-8 text ({error}); {FORMATS_HINT}") from error
    if not text.strip():
        raise ResultsFileError(f"{path}: the file is empty; {FORMATS_HINT}")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        data = None  # not one JSON document: JSONL, or neither format
    if isinstance(data, list) or (isinstance(data, dict) and "annotation" in data):
        field = hyp_field or DEFAULT_HYP_FIELD[AUTHORS]
        return ResultsFile(path, AUTHORS, field, _authors_entries(path, data, field))
    field = hyp_field or DEFAULT_HYP_FIELD[JSONL]
    return ResultsFile(path, JSONL, field, _jsonl_entries(path, text, field))


def _authors_entries(path: Path, data: list | dict, field: str) -> list[Entry]:
    items = data["annotation"] if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ResultsFileError(
            f"{path}: no utterances (an empty or non-list annotation); {FORMATS_HINT}"
        )
    entries = []
    for index, item in enumerate(items):
        where = f"{path}: entry {index}"
        if not isinstance(item, dict):
            raise ResultsFileError(
                f"{where} is a {type(item).__name__}, not an object; {FORMATS_HINT}"
            )
        utt_id, reference = (_string(item, key, where) for key in ("path", "text"))
        value = item.get(field)
        if value is None:
            entries.append(Entry(utt_id, reference, "", failure=f"no {field!r}"))
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = value[0]  # an n-best first pass: its best
        if not isinstance(value, str):
            raise ResultsFileError(
                f"{where}: {field!r} must be a string (or a list of strings), got {value!r}"
            )
        entries.append(Entry(utt_id, reference, value))
    if all(entry.failure is not None for entry in entries):
        raise ResultsFileError(
            f"{path}: no entry has {field!r}: a manifest rather than a decode output, or "
            "the hypothesis is in another field (name it with --hyp-field)"
        )
    return entries


def _jsonl_entries(path: Path, text: str, field: str) -> list[Entry]:
    """Strict, unlike `results.read_records`: a torn or malformed line is an error, not skipped."""
    lines = text.splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if not entries:
                raise ResultsFileError(
                    f"{path} is in neither format ({where} is not JSON: {error}); {FORMATS_HINT}"
                ) from error
            hint = TORN_HINT if number == len(lines) else ""
            raise ResultsFileError(f"{where} is not JSON ({error}){hint}") from error
        if not isinstance(record, dict) or not {"id", "reference"} <= record.keys():
            raise ResultsFileError(
                f"{where} is not a result record (no 'id' and 'reference'); {FORMATS_HINT}"
            )
        utt_id, reference = (_string(record, key, where) for key in ("id", "reference"))
        failure = record.get("error")
        if failure is not None:
            if not isinstance(failure, str):
                raise ResultsFileError(
                    f"{where}: 'error' must be a string or null, got {failure!r}"
                )
            entries.append(Entry(utt_id, reference, "", failure=failure))
            continue
        if record.get(field) is None:
            raise ResultsFileError(
                f"{where}: utterance {utt_id!r} was decoded but has no {field!r} "
                "(missing or null); choose a field every decoded record has with --hyp-field"
            )
        entries.append(Entry(utt_id, reference, _string(record, field, where)))
    return entries


def _string(record: dict, key: str, where: str) -> str:
    if key not in record:
        raise ResultsFileError(f"{where} has no {key!r}; {FORMATS_HINT}")
    value = record[key]
    if not isinstance(value, str):
        raise ResultsFileError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def default_name(path: str | Path) -> str:
    """The test set's name from a results file: its run's manifest, else its own name.

    For `results.jsonl` (or a rank shard) the manifest named in the `config.yaml` that
    `inference.py` writes beside it, else the folder's name. LibriSpeech splits, VoxPopuli and
    Common Voice are recognised in that name (`librispeech_cuts_test-clean.jsonl.gz` ->
    "LibriSpeech test-clean", `commonvoice_cuts_test` -> "Common Voice"); others stay as they are.
    """
    path = Path(path)
    stem = path.name.split(".")[0]
    if GENERIC_STEM.fullmatch(stem):
        stem = _run_manifest_stem(path.parent) or path.absolute().parent.name
    key = stem.lower()
    if match := LIBRISPEECH_SPLIT.search(key):
        return f"LibriSpeech {match[1]}-{match[2]}"
    for pattern, corpus in OTHER_CORPORA:
        if pattern.search(key):
            return f"{corpus} dev" if DEV_SPLIT.search(key) else corpus
    return stem


def _run_manifest_stem(folder: Path) -> str | None:
    """The manifest's name (no suffixes) in the run's config.yaml; None without a usable one."""
    try:
        config = yaml.safe_load((folder / RUN_CONFIG).read_text(encoding="utf-8"))
        manifest = config["inference"]["manifest"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError):
        return None  # only a label: the folder's name will do
    return Path(manifest).name.split(".")[0] if isinstance(manifest, str) and manifest else None
