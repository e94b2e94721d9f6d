"""Scoring decode outputs from the command line: WER with S/D/I per test set, one table for several.

    python -m whisper_llada.evaluation.score RESULTS [RESULTS ...] [--name NAME ...] [--out-dir DIR] [--hyp-field F]

RESULTS are this project's results JSONL or the authors' output JSON (`result_files`). Every text
goes through `metrics.normalize` (the authors' tag and punctuation clean-up, then whisper's
`EnglishTextNormalizer`) and WER is pooled over the set, as the authors score.

Failed utterances (no hypothesis): the authors' scorer counts nothing for outputs it never
received; here they are reported separately and the WER is over the rest, and the output says
so. The WER with them scored as empty hypotheses (all deletions; what `inference.py`'s wer file
and the authors' `calc_wer_json.py` report for a missing `llada_prediction`) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from whisper_llada.evaluation.metrics import (
    PERCENT,
    Alignment,
    WerSummary,
    score,
    write_errs,
    write_recogs,
    write_wer,
)
from whisper_llada.evaluation.result_files import (
    ResultsFile,
    ResultsFileError,
    default_name,
    read_results,
)
from whisper_llada.utils.atomic_write import write_text_atomically

TABLE_JSON = "scores.json"
TABLE_MARKDOWN = "scores.md"
TABLE_NOTE = (
    "WER and SER are over the utterances with a hypothesis; failed ones are not scored "
    "(last column: the WER with them scored as empty hypotheses)."
)


@dataclass(frozen=True)
class SetScore:
    """One test set's score: the utterances with a hypothesis, and the failed ones apart.

    `failed` is the failed utterances scored as empty hypotheses (their words all deletions).
    """

    name: str
    results: ResultsFile
    summary: WerSummary
    alignments: list[tuple[str, Alignment]]
    failed: WerSummary

    @property
    def sentence_errors(self) -> int:
        return sum(1 for _, alignment in self.alignments if alignment.errors)

    @property
    def ser(self) -> float | None:
        """Sentence error rate in percent; None when no utterance was scored."""
        if not self.summary.utterances:
            return None
        return PERCENT * self.sentence_errors / self.summary.utterances

    @property
    def wer(self) -> float | None:
        """WER in percent over the scored utterances; None when none was scored."""
        return self.summary.wer if self.summary.utterances else None

    @property
    def wer_failed_as_empty(self) -> float:
        """WER in percent with the failed utterances scored as empty hypotheses."""
        both = {
            key.name: getattr(self.summary, key.name) + getattr(self.failed, key.name)
            for key in fields(WerSummary)
        }
        return WerSummary(**both).wer


def score_results(results: ResultsFile, name: str) -> SetScore:
    """Score the utterances with a hypothesis; score the failed ones apart as empty.

    Raises:
        ResultsFileError: an utterance id appears more than once in the file.
    """
    counts = Counter(e.id for e in results.entries)
    if repeated := [utt_id for utt_id, count in counts.items() if count > 1]:
        raise ResultsFileError(
            f"{results.path}: utterance id {repeated[0]!r} appears {counts[repeated[0]]} times "
            f"({len(repeated)} repeated id(s)); each utterance must be scored once"
        )
    decoded = [(e.id, e.reference, e.hypothesis) for e in results.entries if e.failure is None]
    failed = [(e.id, e.reference, None) for e in results.entries if e.failure is not None]
    summary, alignments = score(decoded)
    failed_summary, _ = score(failed)
    return SetScore(name, results, summary, alignments, failed_summary)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report(set_score: SetScore) -> str:
    """The per-file summary printed by the command line (several lines, no trailing newline)."""
    s, f, results = set_score.summary, set_score.failed, set_score.results
    failed = f"failed: {f.failed}"
    if f.failed:
        failed += (
            f" (not scored; {f.ref_words} reference words); with them as empty hypotheses "
            f"%WER {_percent(set_score.wer_failed_as_empty)}"
        )
    return "\n".join(
        [
            f"{set_score.name}: {results.path} ({results.format}, field {results.hyp_field!r})",
            f"%WER {_percent(set_score.wer)} [{s.errors} / {s.ref_words}, {s.insertions} ins, "
            f"{s.deletions} del, {s.substitutions} sub ]",
            f"%SER {_percent(set_score.ser)} [{set_score.sentence_errors} / {s.utterances} utterances]",
            failed,
        ]
    )


def markdown_table(scores: Sequence[SetScore]) -> str:
    """One row per test set, then a note on failed utterances; ends with a newline."""
    lines = [
        "| test set | utterances | failed | words | S | D | I | WER % | SER % | WER % failed as empty |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in scores:
        s = x.summary
        cells = [x.name, s.utterances, x.failed.failed, s.ref_words, s.substitutions, s.deletions]
        cells += [s.insertions, _percent(x.wer), _percent(x.ser), _percent(x.wer_failed_as_empty)]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join([*lines, "", TABLE_NOTE]) + "\n"


def table_rows(scores: Sequence[SetScore]) -> list[dict[str, Any]]:
    """The table as JSON-ready rows (rates in percent, null when nothing was scored)."""
    return [
        {
            "name": x.name,
            "path": str(x.results.path),
            "format": x.results.format,
            "hyp_field": x.results.hyp_field,
            "utterances": x.summary.utterances,
            "failed": x.failed.failed,
            "failed_ref_words": x.failed.ref_words,
            "ref_words": x.summary.ref_words,
            "substitutions": x.summary.substitutions,
            "deletions": x.summary.deletions,
            "insertions": x.summary.insertions,
            "wer": x.wer,
            "ser": x.ser,
            "wer_failed_as_empty": x.wer_failed_as_empty,
        }
        for x in scores
    ]


def file_tag(name: str) -> str:
    """A file-name-safe tag: "LibriSpeech test-clean" -> "librispeech-test-clean"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "results"


def write_outputs(out_dir: str | Path, scores: Sequence[SetScore]) -> list[Path]:
    """Write the result files of every set and the table, each atomically; return their paths.

    Per set (tagged by `file_tag(name)`): icefall's recogs / errs / wer files over the scored
    utterances and, when some failed, `failed-<tag>.txt` ("id<TAB>reason" per line). Then the
    table as scores.md and scores.json.
    """
    out_dir = Path(out_dir)
    written = []
    for x in scores:
        tag = file_tag(x.name)
        decoded = [
            (e.id, e.reference, e.hypothesis) for e in x.results.entries if e.failure is None
        ]
        failed = [e for e in x.results.entries if e.failure is not None]
        extra: dict[str, float | int | str] = {
            "test set": x.name,
            "source": f"{x.results.path} ({x.results.format}, field {x.results.hyp_field!r})",
            "%SER": f"{_percent(x.ser)} [{x.sentence_errors} / {x.summary.utterances} utterances]",
            "failed utterances (not scored)": x.failed.failed,
            "failed reference words": x.failed.ref_words,
            "%WER with failed as empty hypotheses": _percent(x.wer_failed_as_empty),
        }
        written += [
            write_recogs(out_dir / f"recogs-{tag}.txt", decoded),
            write_errs(out_dir / f"errs-{tag}.txt", x.summary, x.alignments),
            write_wer(out_dir / f"wer-{tag}.txt", x.summary, extra),
        ]
        if failed:
            reasons = "".join(f"{e.id}\t{e.failure}\n" for e in sorted(failed, key=lambda e: e.id))
            written.append(write_text_atomically(out_dir / f"failed-{tag}.txt", reasons))
    table = json.dumps(table_rows(scores), indent=2) + "\n"
    written.append(write_text_atomically(out_dir / TABLE_JSON, table))
    written.append(write_text_atomically(out_dir / TABLE_MARKDOWN, markdown_table(scores)))
    return written


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", type=Path, help="results files, either format")
    parser.add_argument(
        "--name", nargs="+", help="one test-set name per file, in order (default: from the file)"
    )
    parser.add_argument("--out-dir", type=Path, help="write errs/wer files and the table here")
    parser.add_argument(
        "--hyp-field", help="field to score (default: hypothesis / llada_prediction)"
    )
    args = parser.parse_args(argv)
    if args.name is not None and len(args.name) != len(args.results):
        parser.error(f"{len(args.name)} --name value(s) for {len(args.results)} results file(s)")
    names = args.name or [default_name(path) for path in args.results]
    tags = [file_tag(name) for name in names]
    if len(set(tags)) != len(tags):
        parser.error(f"test-set names must differ (got {names}); set them with --name")
    try:
        scores = [
            score_results(read_results(path, args.hyp_field), name)
            for path, name in zip(args.results, names, strict=True)
        ]
    except (ResultsFileError, OSError) as error:  # the message names the file
        parser.exit(2, f"error: {error}\n")
    print("\n\n".join(report(x) for x in scores))
    if len(scores) > 1:
        print()
        print(markdown_table(scores), end="")
    if args.out_dir is not None:
        write_outputs(args.out_dir, scores)


if __name__ == "__main__":
    main()
