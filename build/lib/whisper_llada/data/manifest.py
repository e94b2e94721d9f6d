"""Test-set manifests (the authors' JSON, JSONL, lhotse CutSets) as utterances, and decode batches.

Three formats, told apart by content (not by file name; gzip is detected by its magic bytes):

- the authors' JSON: `{"annotation": [{"path": ..., "text": ..., "origin_transcripts": ...}]}`;
- JSONL, one utterance object a line: `audio` (or `path`), `text`, optional `id`, `first_pass`
  (or `origin_transcripts`) and `duration`;
- a lhotse CutSet as `CutSet.to_file` writes it (`.jsonl`, `.jsonl.gz`, or `.json`, a JSON list
  of cuts; a JSON list of utterance objects is read too).

The authors' entries and JSONL lines share one set of keys, so either may use any of them. Keys
beyond these are ignored (the authors' files carry more). `text` is required, "" when the
reference is unknown, so that a misspelt key is an error rather than an empty reference.
Relative audio paths are resolved against the manifest's folder. A missing audio file is not a
manifest error: reading succeeds and `load_wave` raises AudioError for that utterance.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import MonoCut
from lhotse.augmentation import Resample
from lhotse.cut import MultiCut

from whisper_llada.data.audio import (
    SAMPLE_RATE,
    AudioError,
    TooLongPolicy,
    audio_seconds,
    load_audio,
)

GZIP_MAGIC = b"\x1f\x8b"
# Cut types that read one recording; MixedCut and PaddingCut have no single file to decode.
SINGLE_RECORDING_CUTS = {"MonoCut": MonoCut, "MultiCut": MultiCut}
LHOTSE_CUT_TYPES = (*SINGLE_RECORDING_CUTS, "MixedCut", "PaddingCut", "Cut")
# A segment may end this far past the end of its file (rounding of durations); lhotse's default.
SEGMENT_TOLERANCE_SECONDS = 0.025
# A one-line JSON object with one of these keys is a one-utterance JSONL manifest.
RECORD_KEYS = {"audio", "path", "text", "id", "type"}
FORMATS_HINT = (
    'expected the authors\' JSON {"annotation": [{"path": ..., "text": ...}, ...]}, '
    'JSONL with one {"audio": ..., "text": ...} object a line, or a lhotse CutSet '
    "(CutSet.to_file('cuts.jsonl.gz'))"
)


class ManifestError(ValueError):
    """A malformed manifest: the message names the file, the line or entry, and what is wrong."""


@dataclass(frozen=True)
class Utterance:
    """One test utterance: the audio to decode, its reference and an optional first pass.

    Attributes:
        id: unique within the manifest (the `id` field, a cut's id, else the audio file's stem).
        audio: path of the audio file (absolute when the manifest's path was relative).
        text: reference transcript; "" when unknown.
        start: seconds into the file where the utterance starts (lhotse segment cuts).
        duration: seconds of audio from `start`; None for "to the end of the file".
        first_pass: a first-pass hypothesis for deliberation, or None.
    """

    id: str
    audio: str
    text: str
    start: float = 0.0
    duration: float | None = None
    first_pass: str | None = None


def read_manifest(path: str | os.PathLike[str]) -> list[Utterance]:
    """Read a test-set manifest in any of the three formats (see the module docstring).

    `origin_transcripts` may be a string or a list of strings (several first-pass hypotheses,
    e.g. an n-best list): the first one is taken.

    Returns:
        utterances in manifest order.

    Raises:
        ManifestError: invalid JSON, a missing required key, a wrong type, an unknown format, an
            empty manifest, duplicate ids, or a cut that is not one file of one recording.
        OSError: the manifest file itself cannot be opened.
    """
    text = _read_text(path)
    folder = Path(path).absolute().parent
    if not text.strip():
        raise ManifestError(f"{path}: the manifest is empty; {FORMATS_HINT}")
    located = [
        (where, _utterance(path, where, record, folder)) for where, record in _records(path, text)
    ]
    if not located:
        raise ManifestError(f"{path}: the manifest holds no utterances; {FORMATS_HINT}")
    first_seen: dict[str, str] = {}
    for where, utt in located:
        if utt.id in first_seen:
            raise ManifestError(
                f"{path}: duplicate utterance id {utt.id!r} at {first_seen[utt.id]} and {where}; "
                "ids (the 'id' field, else the audio file's name) must be unique"
            )
        first_seen[utt.id] = where
    return [utt for _, utt in located]


def _read_text(path: str | os.PathLike[str]) -> str:
    """The manifest's text, gunzipped when it starts with gzip's magic bytes."""
    data = Path(path).read_bytes()
    try:
        if data.startswith(GZIP_MAGIC):
            data = gzip.decompress(data)
        return data.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ManifestError(
            f"{path}: cannot read the manifest as (gzipped) UTF-8 text ({error}); {FORMATS_HINT}"
        ) from error


def _records(path: str | os.PathLike[str], text: str) -> list[tuple[str, Any]]:
    """(where, record) pairs, `where` being "line N" (JSONL) or "annotation[i]" / "item i"."""
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None  # not one JSON document: JSONL (or broken, reported line by line)
    if isinstance(document, dict) and "annotation" in document:
        entries = document["annotation"]
        if not isinstance(entries, list):
            raise ManifestError(
                f"{path}: 'annotation' must be a list of entries, got {type(entries).__name__}"
            )
        return [(f"annotation[{index}]", entry) for index, entry in enumerate(entries)]
    if isinstance(document, list):  # lhotse's CutSet.to_file("cuts.json")
        return [(f"item {index}", item) for index, item in enumerate(document)]
    if document is not None and not (
        len(lines) == 1 and isinstance(document, dict) and document.keys() & RECORD_KEYS
    ):
        raise ManifestError(
            f"{path}: a JSON {type(document).__name__} without the 'annotation' key; {FORMATS_HINT}"
        )
    records = []
    for number, line in lines:
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise ManifestError(
                f"{path}: line {number}: invalid JSON ({error.msg} at column {error.colno}); "
                "a JSONL manifest holds one JSON object a line"
            ) from error
    return records


def _utterance(path: str | os.PathLike[str], where: str, record: Any, folder: Path) -> Utterance:
    """One manifest record (an utterance object or a lhotse cut) as an Utterance."""
    if not isinstance(record, dict):
        raise ManifestError(
            f"{path}: {where}: expected a JSON object, got {type(record).__name__}; {FORMATS_HINT}"
        )
    if record.get("type") in LHOTSE_CUT_TYPES:
        return _cut_utterance(path, where, record, folder)
    if "sources" in record or "recording_id" in record:
        raise ManifestError(
            f"{path}: {where}: a lhotse recording or supervision manifest; decode a CutSet: "
            "CutSet.from_manifests(recordings=..., supervisions=...).to_file('cuts.jsonl.gz')"
        )
    audio = _string(path, where, record, _one_of(path, where, record, "audio", "path"))
    if not audio:
        raise ManifestError(f"{path}: {where}: the audio path is empty")
    utt_id = _string(path, where, record, "id") if "id" in record else Path(audio).stem
    if not utt_id:
        raise ManifestError(f"{path}: {where}: the utterance id is empty; give a non-empty 'id'")
    duration = record.get("duration")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0
    ):
        raise ManifestError(
            f"{path}: {where}: 'duration' must be a positive number of seconds, got {duration!r}"
        )
    return Utterance(
        id=utt_id,
        audio=str(folder / audio),  # an absolute audio path stays as it is
        text=_string(path, where, record, "text"),
        duration=None if duration is None else float(duration),
        first_pass=_first_pass(path, where, record),
    )


def _one_of(path: str | os.PathLike[str], where: str, record: dict, *keys: str) -> str:
    """The one key of `keys` the record has (alternative names of the same field)."""
    present = [key for key in keys if key in record]
    if not present:
        raise ManifestError(f"{path}: {where}: missing key {keys[0]!r} (or {keys[1]!r})")
    if len(present) > 1:
        raise ManifestError(f"{path}: {where}: give one of {present}, not both")
    return present[0]


def _string(path: str | os.PathLike[str], where: str, record: dict, key: str) -> str:
    if key not in record:
        raise ManifestError(f"{path}: {where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise ManifestError(
            f"{path}: {where}: {key!r} must be a string, got {type(value).__name__} {value!r}"
        )
    return value


def _first_pass(path: str | os.PathLike[str], where: str, record: dict) -> str | None:
    """`first_pass` or `origin_transcripts`: a string, or a list of strings of which the first."""
    if "first_pass" not in record and "origin_transcripts" not in record:
        return None
    key = _one_of(path, where, record, "first_pass", "origin_transcripts")
    value = record[key]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value[0]
    raise ManifestError(
        f"{path}: {where}: {key!r} must be a string or a non-empty list of strings, got {value!r}"
    )


def unsupported_cut(cut: MonoCut | MultiCut) -> str | None:
    """Why the project cannot read this cut's audio as lhotse would give it (None: it can).

    `load_wave` reads one audio file, averages its channels and cuts the span; so a cut needs a
    recording of one file, no lhotse transforms but resampling (speed perturbation, volume,
    reverberation would be silently skipped) and every channel selected. Inference and training
    both refuse other cuts with this message.
    """
    recording = cut.recording
    if recording is None:
        return f"cut {cut.id!r} has no recording to decode"
    sources = recording.sources
    if len(sources) != 1 or sources[0].type != "file":
        kinds = [source.type for source in sources]
        return (
            f"cut {cut.id!r} reads from sources {kinds}; only a recording stored as one audio "
            "file (one source of type 'file') can be read"
        )
    if any(not isinstance(transform, Resample) for transform in recording.transforms or []):
        return (
            f"cut {cut.id!r} has lhotse audio transforms {recording.transforms}; save the "
            "transformed audio to files and make a CutSet of those"
        )
    channels = cut.channel if isinstance(cut.channel, list) else [cut.channel]
    if sorted(channels) != sorted(recording.channel_ids):
        return (
            f"cut {cut.id!r} selects channels {channels} of a recording with channels "
            f"{recording.channel_ids}, but the audio is read with all channels averaged; save "
            "the selected channels to their own file"
        )
    return None


def _cut_utterance(
    path: str | os.PathLike[str], where: str, record: dict, folder: Path
) -> Utterance:
    """A lhotse cut of one file of one recording as an Utterance (its id, span, texts)."""
    # lhotse's from_dict, not CutSet.from_file, so that errors can name the line.
    cut_type = record.pop("type")
    if cut_type not in SINGLE_RECORDING_CUTS:
        raise ManifestError(
            f"{path}: {where}: a {cut_type}; only cuts of one recording (MonoCut, MultiCut) "
            "can be decoded: mix or pad the audio offline and make a CutSet of the result"
        )
    try:
        cut = SINGLE_RECORDING_CUTS[cut_type].from_dict(record)
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as error:
        raise ManifestError(
            f"{path}: {where}: not a valid lhotse {cut_type} ({error!r})"
        ) from error
    problem = unsupported_cut(cut)
    if problem is not None:
        raise ManifestError(f"{path}: {where}: {problem}")
    sources = cut.recording.sources
    first_pass = (cut.custom or {}).get("first_pass")
    if first_pass is not None and not isinstance(first_pass, str):
        raise ManifestError(
            f"{path}: {where}: cut {cut.id!r}: custom 'first_pass' must be a string, "
            f"got {first_pass!r}"
        )
    supervisions = sorted(cut.supervisions, key=lambda supervision: supervision.start)
    return Utterance(
        id=cut.id,
        audio=str(folder / sources[0].source),
        text=" ".join(s.text for s in supervisions if s.text),
        start=float(cut.start),
        duration=float(cut.duration),
        first_pass=first_pass,
    )


def load_wave(utt: Utterance, *, max_seconds: float | None, too_long: TooLongPolicy) -> np.ndarray:
    """The utterance's audio: its file through `load_audio`, cut to [start, start + duration).

    Args:
        utt: the utterance; a segment when start > 0 or duration is set.
        max_seconds: longest duration kept, in seconds (applied to the segment); None: no limit.
        too_long: "truncate" keeps the first `max_seconds` and warns, "error" raises AudioError.

    Returns:
        wave: (N,) float32 at SAMPLE_RATE, N > 0.

    Raises:
        AudioError: the file is missing, unreadable or too short for the segment, or the
            utterance is too long with too_long="error"; the message names the file.
    """
    if utt.start == 0 and utt.duration is None:
        return load_audio(utt.audio, max_seconds=max_seconds, too_long=too_long)
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive or None (no limit), got {max_seconds}")
    # The whole file first (max_seconds applies to the segment, not to the recording).
    wave = load_audio(utt.audio, max_seconds=None, too_long=too_long)  # (N_file,)
    first = round(utt.start * SAMPLE_RATE)
    available = len(wave) - first
    wanted = available if utt.duration is None else round(utt.duration * SAMPLE_RATE)
    if wanted <= 0 or wanted > available + round(SEGMENT_TOLERANCE_SECONDS * SAMPLE_RATE):
        end = "the end" if utt.duration is None else f"{utt.start + utt.duration:.3f} s"
        raise AudioError(
            f"{utt.audio}: utterance {utt.id!r} spans {utt.start:.3f} s to {end}, but the file "
            f"holds {audio_seconds(wave):.3f} s; fix its start and duration in the manifest"
        )
    segment = wave[first : first + wanted]  # (N,)
    if max_seconds is not None and len(segment) > round(max_seconds * SAMPLE_RATE):
        message = (
            f"{utt.audio}: utterance {utt.id!r} from {utt.start:.3f} s is "
            f"{audio_seconds(segment):.2f} s, longer than the {max_seconds:g} s limit"
        )
        if too_long == "error":
            raise AudioError(f"{message}; split it, raise max_seconds, or pass too_long='truncate'")
        warnings.warn(f"{message}; keeping the first {max_seconds:g} s", stacklevel=2)
        segment = segment[: round(max_seconds * SAMPLE_RATE)]
    return np.ascontiguousarray(segment, dtype=np.float32)


def utterance_seconds(utt: Utterance) -> float | None:
    """The utterance's duration in seconds: the manifest's, else the file's (header only).

    Returns None when the manifest gives none and the file cannot be read.
    """
    if utt.duration is not None:
        return utt.duration
    try:
        file_seconds = sf.info(utt.audio).duration
    # soundfile raises TypeError (not SoundFileError) for header-less RAW files.
    except (sf.SoundFileError, TypeError):
        return None
    return max(file_seconds - utt.start, 0.0)
