"""Training and validation manifests as lhotse cuts: CutSet files read lazily, the other manifest formats turned into cuts, several multiplexed; a cut back to an `Utterance` for `load_wave`.

Manifests are lhotse CutSets (`cuts.jsonl.gz`, read lazily) or anything `manifest.read_manifest`
reads (the authors' JSON, JSONL, a JSON list), turned into cuts. Relative audio paths are
resolved against the manifest's folder, as for decoding. Several training manifests are
multiplexed lazily (`CutSet.mux`, weighted by their sizes, fixed seed).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.cut import Cut, MultiCut
from lhotse.utils import fastcopy

from whisper_llada.data.audio import SAMPLE_RATE, AudioError
from whisper_llada.data.manifest import (
    GZIP_MAGIC,
    LHOTSE_CUT_TYPES,
    ManifestError,
    Utterance,
    read_manifest,
    unsupported_cut,
    utterance_seconds,
)

FILE_SOURCE = "file"


def read_cuts(paths: Sequence[str], *, skip_bad_audio: bool, seed: int) -> tuple[CutSet, list[str]]:
    """Open the training or validation manifests as one CutSet.

    Args:
        paths: lhotse CutSet files or manifests `read_manifest` reads.
        skip_bad_audio: an utterance of the authors' JSON / JSONL with no `duration` whose audio
            header cannot be read is left out (its message returned) instead of raising.
        seed: seed of the multiplexing of several manifests.

    Returns:
        cuts: lazy for lhotse CutSet JSONL files, eager otherwise; several manifests multiplexed.
        dropped: one message per utterance left out.

    Raises:
        ManifestError: no manifest given, or a malformed one.
        AudioError: an unreadable audio header, unless skip_bad_audio.
    """
    if not paths:
        raise ManifestError("no manifest given: set data.train_manifests (or valid_manifests)")
    sets, sizes, dropped = [], [], []
    for path in paths:
        if is_cut_jsonl(path):
            cuts = CutSet.from_jsonl_lazy(path).map(
                partial(resolve_audio_paths, folder=Path(path).absolute().parent)
            )
            size = count_lines(path)
        else:
            cuts, left_out = utterance_cuts(read_manifest(path), skip_bad_audio=skip_bad_audio)
            size = len(cuts)
            dropped += left_out
        sets.append(cuts)
        sizes.append(size)
    if len(sets) == 1:
        return sets[0], dropped
    return CutSet.mux(*sets, weights=sizes, seed=seed), dropped


def is_cut_jsonl(path: str | Path) -> bool:
    """Whether `path` is a lhotse CutSet in JSONL (gzipped or not): its first line is a cut."""
    with Path(path).open("rb") as raw:
        magic = raw.read(len(GZIP_MAGIC))
    opener = gzip.open if magic == GZIP_MAGIC else open
    with opener(path, "rt", encoding="utf-8") as text:
        first = next((line for line in text if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False  # a multi-line JSON document (or a broken file: read_manifest reports it)
    return isinstance(record, dict) and record.get("type") in LHOTSE_CUT_TYPES


def count_lines(path: str | Path) -> int:
    """Non-empty lines of a (gzipped) JSONL file: the cuts of a CutSet file, without parsing."""
    with Path(path).open("rb") as raw:
        gzipped = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    with (gzip.open if gzipped else open)(path, "rb") as lines:
        return sum(1 for line in lines if line.strip())


def resolve_audio_paths(cut: Cut, folder: Path) -> Cut:
    """The cut with relative audio file paths made absolute against the manifest's `folder`."""
    recording = getattr(cut, "recording", None)
    if recording is None:
        return cut
    sources = [
        fastcopy(s, source=str(folder / s.source)) if s.type == FILE_SOURCE else s
        for s in recording.sources
    ]
    return fastcopy(cut, recording=fastcopy(recording, sources=sources))


def utterance_cuts(
    utterances: Sequence[Utterance], *, skip_bad_audio: bool
) -> tuple[CutSet, list[str]]:
    """Cuts of `read_manifest` utterances; the duration is the manifest's, else the file's.

    The recording is nominal (16 kHz, one channel): `load_wave` reads the file itself, at any
    rate and channel count; lhotse only needs the ids and durations.
    """
    cuts, dropped = [], []
    for utt in utterances:
        seconds = utterance_seconds(utt)
        if seconds is None or seconds <= 0:
            message = f"{utt.audio}: cannot read the audio file's header (utterance {utt.id!r})"
            if not skip_bad_audio:
                raise AudioError(f"{message}; fix or remove the file, or set data.skip_bad_audio")
            dropped.append(message)
            continue
        end = utt.start + seconds
        recording = Recording(
            id=utt.id,
            sources=[AudioSource(type=FILE_SOURCE, channels=[0], source=utt.audio)],
            sampling_rate=SAMPLE_RATE,
            num_samples=round(end * SAMPLE_RATE),
            duration=end,
        )
        supervision = SupervisionSegment(
            id=utt.id, recording_id=utt.id, start=0.0, duration=seconds, text=utt.text
        )
        cuts.append(
            MonoCut(
                id=utt.id,
                start=utt.start,
                duration=seconds,
                channel=0,
                supervisions=[supervision],
                recording=recording,
            )
        )
    return CutSet.from_cuts(cuts), dropped


def cut_utterance(cut: Cut) -> Utterance:
    """The cut as an Utterance for `load_wave`: one audio file, a span, the joined transcripts."""
    if not isinstance(cut, MonoCut | MultiCut):
        raise ManifestError(
            f"cut {cut.id!r}: training reads cuts of one audio file (a MonoCut whose recording "
            "has one source of type 'file'); mix, pad or export the audio offline and make a "
            "CutSet of the result"
        )
    problem = unsupported_cut(cut)
    if problem is not None:
        raise ManifestError(f"{problem} (training)")
    recording = cut.recording
    supervisions = sorted(cut.supervisions, key=lambda supervision: supervision.start)
    return Utterance(
        id=cut.id,
        audio=recording.sources[0].source,
        text=" ".join(s.text for s in supervisions if s.text),
        start=float(cut.start),
        duration=float(cut.duration),
    )
