"""Prepared cuts of whole-file utterances written in the authors' annotation JSON (`{"annotation": [{"path", "text"}]}`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lhotse import CutSet, MonoCut

from whisper_llada.data.corpora import CorpusError
from whisper_llada.utils.atomic_write import write_text_atomically

WHOLE_FILE_TOLERANCE_SECONDS = 1e-3  # a cut this close to its file's span covers the whole file


def export_authors_json(cuts_path: str | Path, out_json: str | Path) -> Path:
    """Write a CutSet of whole-file utterances in the authors' annotation format.

    `{"annotation": [{"path": <audio file>, "text": <transcript>}, ...]}`, in the CutSet's order,
    written atomically. Relative audio paths are made absolute (lhotse reads them from the
    working directory). Cuts the format cannot express raise a `CorpusError`: segments of longer
    recordings (VoxPopuli), mixed or transformed (e.g. speed-perturbed) audio, and cuts without
    exactly one supervision.
    """
    annotation = []
    for cut in CutSet.from_file(cuts_path):
        annotation.append({"path": _whole_file(cut, cuts_path), "text": _only_text(cut, cuts_path)})
    text = json.dumps({"annotation": annotation}, indent=1, ensure_ascii=False)
    return write_text_atomically(out_json, text + "\n")


def _whole_file(cut: Any, cuts_path: str | Path) -> str:
    if not isinstance(cut, MonoCut):
        raise CorpusError(
            f"{cuts_path}: cut {cut.id} is a {type(cut).__name__}, not one audio file: the "
            "authors' format holds a file per utterance"
        )
    recording = cut.recording
    sources = recording.sources if recording is not None else []
    if len(sources) != 1 or sources[0].type != "file" or recording.transforms:
        raise CorpusError(
            f"{cuts_path}: cut {cut.id} is not read from one audio file as it is (no recording, "
            "several sources, a URL or command, or transforms); the authors' format holds a file"
        )
    trimmed = recording.duration - cut.duration
    if cut.start > WHOLE_FILE_TOLERANCE_SECONDS or abs(trimmed) > WHOLE_FILE_TOLERANCE_SECONDS:
        raise CorpusError(
            f"{cuts_path}: cut {cut.id} is a segment ({cut.start:.3f} s + {cut.duration:.3f} s) of "
            f"the {recording.duration:.3f} s recording {recording.sources[0].source}; the authors' "
            "format has no start or end, so it holds whole-file corpora only (e.g. LibriSpeech, "
            "Common Voice; not VoxPopuli): use the cuts themselves instead"
        )
    return str(Path(recording.sources[0].source).absolute())


def _only_text(cut: MonoCut, cuts_path: str | Path) -> str:
    if len(cut.supervisions) != 1:
        raise CorpusError(
            f"{cuts_path}: cut {cut.id} has {len(cut.supervisions)} supervisions; the authors' "
            "format holds exactly one text per file"
        )
    return cut.supervisions[0].text or ""
