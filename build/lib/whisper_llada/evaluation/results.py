"""Decode results: one JSONL record per utterance, appended crash-safely, resumed and merged across ranks.

Each rank appends to its own `results-rank{R}.jsonl` and fsyncs after every batch, so a run
killed at any moment (kill -9 included) loses at most the batch in flight; a torn last line is
cut off when the file is reopened. A rerun skips every utterance that any earlier shard already
finished, whatever the number of ranks was then. The main rank merges all shards into
`results.jsonl` (sorted by id, written atomically).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO

from whisper_llada.data.manifest import Utterance
from whisper_llada.utils.atomic_write import write_text_atomically
from whisper_llada.utils.file_hash import file_sha256

SHARD_PATTERN = "results-rank*.jsonl"
MERGED_NAME = "results.jsonl"
LOCK_NAME = ".lock"  # held by the main rank of the run decoding into the folder
MODEL_FINGERPRINT_NAME = "model.json"  # in a results folder: the model its results come from


@dataclass(frozen=True)
class Record:
    id: str
    reference: str
    hypothesis: str
    prior: str | None
    forward_passes: int
    decode_seconds: float  # this utterance's share of its batch's wall time
    audio_seconds: float
    error: str | None = None  # why the utterance could not be decoded; None = decoded
    # A cascade's first stage (decode.first_pass=model; None otherwise): its forward passes and
    # its share of the batch's seconds. `prior` holds its text; the fields above the second stage's.
    first_pass_forward_passes: int | None = None
    first_pass_seconds: float | None = None
    # The clip's full duration when audio.max_seconds cut it (audio_seconds is what was decoded:
    # the reference's words past the cut count as deletions); None when nothing was cut.
    truncated_from_seconds: float | None = None
    # input_sha256(the utterance) when it was decoded: its audio and first pass, so a resume
    # notices when they changed; None in folders written before it was recorded.
    input_sha256: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def shard_path(output_dir: Path, rank: int) -> Path:
    return output_dir / f"results-rank{rank}.jsonl"


def read_records(path: Path) -> list[Record]:
    """Records of one JSONL file; a torn last line (the process died mid-write) is ignored."""
    records = []
    lines = path.read_text().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            records.append(Record(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            if number == len(lines):  # no newline after it: torn by a crash
                break
            raise ValueError(
                f"{path}:{number} is not a result record ({error}); delete the file to redo it"
            ) from error
    return records


def finished_ids(output_dir: Path) -> set[str]:
    """Ids decoded (or failed) by any shard of an earlier run in `output_dir`."""
    return {r.id for path in sorted(output_dir.glob(SHARD_PATTERN)) for r in read_records(path)}


def input_sha256(utterance: Utterance, uses_first_pass: bool) -> str:
    """SHA-256 of what the manifest gives for `utterance` besides its id and reference: the bytes
    of its audio file (not its path, so a test set moved elsewhere resumes), the segment (start,
    duration) and, when the mode decodes from it, the first pass. A missing file counts as no
    bytes (its record is a failure)."""
    fields = [_audio_file_sha256(utterance.audio), utterance.start, utterance.duration]
    if uses_first_pass:
        fields.append(utterance.first_pass)
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _audio_file_sha256(path: str) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _file_sha256_once(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)  # segments of one long recording: the file is read once
def _file_sha256_once(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def with_inputs(
    records: list[Record], utterances: Sequence[Utterance], uses_first_pass: bool = False
) -> list[Record]:
    """`records` with each one's `input_sha256` (`utterances` holds every record's utterance)."""
    by_id = {u.id: u for u in utterances}
    digest = functools.partial(input_sha256, uses_first_pass=uses_first_pass)
    return [replace(r, input_sha256=digest(by_id[r.id])) for r in records]


def check_same_utterances(
    output_dir: Path, utterances: Sequence[Utterance], uses_first_pass: bool = False
) -> None:
    """Stop unless every utterance `output_dir` has finished is one of this test set, unchanged.

    A resume keyed on the manifest's path alone would keep results of utterances dropped from
    it, scored against an edited reference, or decoded from other audio or (`uses_first_pass`:
    the mode decodes from the manifest's first pass) another first pass; all are refused.

    Raises:
        SystemExit: a finished utterance is not in `utterances`, or its reference, audio or
            first pass changed.
    """
    records = [r for path in sorted(output_dir.glob(SHARD_PATTERN)) for r in read_records(path)]
    by_id = {u.id: u for u in utterances}
    known = [r for r in records if r.id in by_id]
    stray = sorted({r.id for r in records} - set(by_id))
    changed = sorted(r.id for r in known if r.reference != by_id[r.id].text)
    inputs = sorted(
        r.id
        for r in known
        if r.input_sha256 is not None
        and r.input_sha256 != input_sha256(by_id[r.id], uses_first_pass)
    )
    for ids, what in (
        (stray, "are not in this test set"),
        (changed, "have another reference now"),
        (inputs, "have other audio or another first pass now"),
    ):
        if ids:
            raise SystemExit(
                f"{output_dir} holds results of {len(ids)} utterance(s) that {what} (e.g. "
                f"{ids[0]}): the test set changed since they were decoded; decode into another "
                "inference.output_dir, or delete this one"
            )


class ShardWriter:
    """Appends records to this rank's shard file, durable after each `write` call."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if path.exists():
            self._cut_torn_tail()
        self.file = path.open("a")

    def _cut_torn_tail(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.path.open("r+b") as f:
                f.truncate(end)

    def write(self, records: list[Record]) -> None:
        self.file.write("".join(json.dumps(asdict(r)) + "\n" for r in records))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def merge_shards(output_dir: Path) -> list[Record]:
    """All shards' records sorted by id, written atomically to results.jsonl.

    An utterance decoded twice (two runs at once in one folder, or two shardings) is kept once
    when both records agree on the result (batched decoding equals per-utterance decoding, so a
    rerun with the same settings does); counting it twice would skew the WER.

    Raises:
        SystemExit: an utterance was decoded twice with different results.
    """
    records: dict[str, Record] = {}
    for path in sorted(output_dir.glob(SHARD_PATTERN)):
        for record in read_records(path):
            kept = records.setdefault(record.id, record)
            if _result(kept) != _result(record):
                raise SystemExit(
                    f"utterance {record.id} was decoded twice in {output_dir} with different "
                    f"results ({path} and before): two runs with other settings wrote there; "
                    "delete the folder (or its results-rank*.jsonl files) and decode again"
                )
    merged = [records[key] for key in sorted(records)]
    write_text_atomically(
        output_dir / MERGED_NAME, "".join(json.dumps(asdict(r)) + "\n" for r in merged)
    )
    return merged


def lock_results_folder(folder: Path) -> IO[str]:
    """Hold `folder`'s lock for as long as the returned file stays open (the OS drops it when the
    process ends, kill -9 included, so a lock is never stale).

    Raises:
        SystemExit: another process holds it (a second run into the same folder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / LOCK_NAME).open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SystemExit(
            f"another run is decoding into {folder} (it holds {folder / LOCK_NAME}): wait for "
            "it to end, or decode into another inference.output_dir"
        ) from None
    return handle


def _result(record: Record) -> tuple:
    """What a record says about its utterance (not how long it took)."""
    return (record.reference, record.hypothesis, record.prior, record.forward_passes, record.error)


def claim_results_folder(
    folder: Path,
    fingerprint: dict[str, str],
    name: str = MODEL_FINGERPRINT_NAME,
    what: str = "model",
    elsewhere: str = "decode into another folder",
) -> None:
    """Record in `folder`/`name` which model (`what`) its results come from, by the sha256 of
    its checkpoint (`fingerprint["checkpoint_sha256"]`, beside e.g. its path); refuse to mix in
    another's, so a checkpoint replaced at the same path is not resumed with. `elsewhere`: how
    the user picks another folder, for the message."""
    path = folder / name
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded["checkpoint_sha256"] != fingerprint["checkpoint_sha256"]:
            raise SystemExit(
                f"{folder} holds results of another {what} ({recorded.get('model', '?')}, "
                f"checkpoint sha256 {recorded['checkpoint_sha256'][:12]}): {elsewhere}, or "
                f"delete {folder} to decode this one there"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(fingerprint, indent=2) + "\n")
