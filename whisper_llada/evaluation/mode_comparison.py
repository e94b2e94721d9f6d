"""Comparing decoding modes on a test set: one model, each mode decoded resumably into its own folder, one table row per mode.

Each mode is a list of `decode.*` overrides on the model's config. A mode's folder is what
inference.py writes (result shards, results.jsonl, recogs / errs / wer files, config.yaml),
through the same functions, so a row holds exactly the numbers of the mode's wer file, and a
rerun decodes only the utterances its folder does not hold yet. Timings are wall-clock seconds
of this machine; the speed-up of a row is the reference mode's decode seconds over its own.

With an autoregressive model (Whisper-LLaMA) beside it, two more kinds of row: the AR model
alone (`AR_MODE`, decoded with its own config and `AR_DECODE`), and the cascade rows
(`cascade_modes`): the diffusion model deliberating over the AR model's hypotheses of the same
run (decode.first_pass=model). A cascade row's seconds are both stages' (its wer file's "RTF of
both stages"); its passes are kept apart, the AR model's decoder steps beside the diffusion
LLM's passes. The speed-up vs AR of a row is the AR row's decode seconds over its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from whisper_llada.config import Config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.manifest import Utterance
from whisper_llada.decoding.recognize import reads_manifest_first_pass
from whisper_llada.evaluation.cascade import FirstPass, first_pass_config
from whisper_llada.evaluation.results import (
    MERGED_NAME,
    check_same_utterances,
    finished_ids,
    read_records,
)
from whisper_llada.evaluation.transcribe import (
    check_decode_config,
    check_same_run,
    decode_utterances,
    set_statistics,
    summarize,
)
from whisper_llada.utils.atomic_write import write_text_atomically

REFERENCE_MODE = "diffusion"  # the Whisper-LLaDA authors' decoding: the speed-ups are against it
AR_MODE = "autoregressive (greedy, KV cache)"  # the AR model alone: the speed-ups vs AR
AR_DECODE = ("decode.mode=autoregressive", "decode.num_beams=1")  # on the AR model's config
THRESHOLD = 0.9  # dLLM-ASR's tau for confidence-threshold commits
SEMI_AR_BLOCKS = (2, 4)
# Whisper-LLaDA's naive decoding as the paper ran it, whatever the model's own gen_len: the
# setting dLLM-ASR's 27.6x speed-up is measured against.
PAPER_MODE = "diffusion, 128 slots, 128 steps (paper)"
PAPER_DECODE = (
    "decode.mode=decoding",
    "decode.gen_len=128",
    "decode.steps=128",
    "decode.block_length=128",
)
# The two pruning variants (decoding.py): the released dLLM-ASR code's and the per-round one.
PRUNING_ROWS = {"once": "first_pass", "every round": "every_round"}
# Every mode starts from these, so decoding options of the model's own config never leak into a
# row that does not name them (the prefix cache, for one, applies to every mode).
NEUTRAL_DECODE = (
    "decode.threshold=null",
    "decode.prune=none",
    "decode.eot_ends_answer=false",
    "decode.prefix_cache=false",
)

Decoder = Callable[[], tuple]  # () -> `transcribe.load_decoder`'s (model, tokenizer), built once


def standard_modes(gen_len: int) -> dict[str, tuple[str, ...]]:
    """Mode label -> `decode.*` overrides: every decoding mode and dLLM-ASR's ablations.

    The diffusion modes fill `gen_len` slots in `gen_len` steps; the deliberation modes re-mask
    the CTC draft (mask ratio, chunks and steps as the config says); prior-guided decoding
    seeds its canvas with the CTC draft (threshold 0.9, the released code's pruning, early
    exit); both pruning variants have rows.

    Raises:
        ValueError: gen_len does not split into the semi-AR blocks.
    """
    if gen_len < max(SEMI_AR_BLOCKS) or gen_len % max(SEMI_AR_BLOCKS):
        raise ValueError(
            f"decode.gen_len={gen_len} must be a positive multiple of {max(SEMI_AR_BLOCKS)} "
            f"(the semi-AR modes split it into {' and '.join(map(str, SEMI_AR_BLOCKS))} blocks)"
        )
    decoding = ("decode.mode=decoding", f"decode.steps={gen_len}")
    diffusion = (*decoding, f"decode.block_length={gen_len}")
    deliberation = ("decode.mode=diffusion_deliberation", "decode.first_pass=ctc")
    prior = _prior_guided("ctc")
    return {
        "CTC draft": ("decode.mode=ctc",),
        REFERENCE_MODE: diffusion,
        **{
            f"semi-AR, {blocks} blocks": (*decoding, f"decode.block_length={gen_len // blocks}")
            for blocks in SEMI_AR_BLOCKS
        },
        f"diffusion, threshold {THRESHOLD}": (*diffusion, f"decode.threshold={THRESHOLD}"),
        **{
            f"diffusion, threshold {THRESHOLD} + prune {label}": (
                *diffusion,
                f"decode.threshold={THRESHOLD}",
                f"decode.prune={prune}",
            )
            for label, prune in PRUNING_ROWS.items()
        },
        "deliberation, random mask": (*deliberation, "decode.masking_type=random"),
        "deliberation, low-confidence mask": (*deliberation, "decode.masking_type=low_confidence"),
        "semi-AR deliberation": ("decode.mode=semi_ar_deliberation", "decode.first_pass=ctc"),
        "prior-guided": prior,
        "prior-guided, prune every round": (*prior, "decode.prune=every_round"),
        "prior-guided, no pruning": (*prior, "decode.prune=none"),
        "prior-guided + prefix cache": (*prior, "decode.prefix_cache=true"),
        "prior-guided, mask below floor": (*prior, "decode.prior_treatment=mask_below"),
    }


def _prior_guided(first_pass: str) -> tuple[str, ...]:
    """dLLM-ASR's decoding (threshold 0.9, pruning once as released, early exit) from `first_pass`."""
    return (
        "decode.mode=prior_guided",
        f"decode.first_pass={first_pass}",
        f"decode.threshold={THRESHOLD}",
        "decode.prune=first_pass",
        "decode.early_exit=true",
        "decode.prior_treatment=visible",
    )


def cascade_modes(ar_config: str | Path, ar_overrides: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Mode label -> `decode.*` and `inference.*` overrides of the diffusion model's config for
    the cascade rows: its low-confidence deliberation and its prior-guided decoding, each over
    the hypotheses of the AR model that `ar_config` with `ar_overrides` decodes in the same run.
    """
    first_pass = (
        "decode.first_pass=model",
        f"inference.first_pass_config={ar_config}",
        "inference.first_pass_overrides="
        + yaml.safe_dump(list(ar_overrides), default_flow_style=True, width=math.inf).strip(),
    )
    return {
        "AR -> deliberation (low-conf.)": (
            "decode.mode=diffusion_deliberation",
            "decode.masking_type=low_confidence",
            *first_pass,
        ),
        "AR -> prior-guided": (*_prior_guided("model"), *first_pass),
    }


@dataclass(frozen=True)
class ModeRow:
    """One mode's numbers on one test set, as its results.jsonl gives them (unrounded).

    `rtf` and `utterances_per_second` are None when nothing was decoded (no time spent). For a
    cascade row `decode_seconds` (and so `rtf` and the rates) covers both stages, of which
    `first_pass_seconds` the AR first pass; `forward_passes_per_utterance` are the diffusion
    LLM's and `first_pass_forward_passes_per_utterance` the AR decoder steps. Other rows have
    None in both first-pass fields.
    """

    mode: str
    wer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    utterances: int
    failed: int
    forward_passes_per_utterance: float
    decode_seconds: float
    audio_seconds: float
    rtf: float | None
    utterances_per_second: float | None
    results_dir: str
    first_pass_forward_passes_per_utterance: float | None = None
    first_pass_seconds: float | None = None

    def speed_up(self, reference: ModeRow) -> float | None:
        """How many times faster than `reference`: its RTF over this row's (its decode seconds
        over these when both decoded the same set; a row of a subset compares per audio second)."""
        if self.rtf is None or reference.rtf is None or self.rtf == 0:
            return None
        return reference.rtf / self.rtf

    def as_dict(self, reference: ModeRow, ar_reference: ModeRow | None = None) -> dict[str, object]:
        """The fields (the first-pass ones only for a cascade row) and the speed-up against
        `reference`, and against `ar_reference` (as "speed_up_vs_ar") when there is one."""
        fields = asdict(self)
        if self.first_pass_seconds is None:
            del fields["first_pass_forward_passes_per_utterance"], fields["first_pass_seconds"]
        fields["speed_up"] = self.speed_up(reference)
        if ar_reference is not None:
            fields["speed_up_vs_ar"] = self.speed_up(ar_reference)
        return fields


def read_row(mode: str, output_dir: Path) -> ModeRow:
    """The row of a finished mode folder, from its results.jsonl."""
    records = read_records(output_dir / MERGED_NAME)
    statistics, _, _ = set_statistics(records)
    summary = statistics.summary
    # A cascade's records carry its first stage (first_pass_statistics reads them alike).
    first = [r for r in records if not r.failed and r.first_pass_seconds is not None]
    first_seconds = sum(r.first_pass_seconds for r in first) if first else None
    seconds = statistics.decode_seconds + (first_seconds or 0.0)
    return ModeRow(
        mode=mode,
        wer=summary.wer,
        substitutions=summary.substitutions,
        deletions=summary.deletions,
        insertions=summary.insertions,
        reference_words=summary.ref_words,
        utterances=summary.utterances,
        failed=summary.failed,
        forward_passes_per_utterance=statistics.forward_passes_per_utterance,
        decode_seconds=seconds,
        audio_seconds=statistics.audio_seconds,
        rtf=seconds / statistics.audio_seconds if statistics.audio_seconds else None,
        utterances_per_second=statistics.decoded / seconds if seconds else None,
        results_dir=str(output_dir),
        first_pass_forward_passes_per_utterance=(
            sum(r.first_pass_forward_passes for r in first) / len(first) if first else None
        ),
        first_pass_seconds=first_seconds,
    )


def decode_mode(
    decoder: Decoder,
    cfg: Config,
    mode: str,
    utterances: Sequence[Utterance],
    output_dir: Path,
    *,
    desc: str | None = None,
    first_pass_decoder: Decoder | None = None,
    first: int | None = None,
) -> ModeRow:
    """Decode what `output_dir` lacks of `utterances` in `cfg.decode`'s mode; score; its row.

    `first`: decode only what it lacks of the first `first` utterances (the others wait for a
    later call; the folder is still checked against all of `utterances`).

    `decoder` is called only when something is left to decode, so a rerun over finished
    folders never builds the model. `mode` names the row; `desc` labels the progress bar
    (default: the mode). `first_pass_decoder`: for decode.first_pass=model, the first-pass
    model of `cfg`'s inference.first_pass_config, already loaded (e.g. shared with the AR
    row); None: the cascade loads it.

    Raises:
        SystemExit: `output_dir` holds results decoded with other settings, or of utterances
            that are not in `utterances` or had another reference (as inference.py).
    """
    check_decode_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    done = finished_ids(output_dir)
    if done:
        check_same_run(output_dir / "config.yaml", to_dict(cfg))
        check_same_utterances(output_dir, utterances, reads_manifest_first_pass(cfg.decode))
    todo = [u for u in utterances[:first] if u.id not in done]
    write_text_atomically(output_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if todo:
        first_pass = None
        if cfg.decode.first_pass == "model" and first_pass_decoder is not None:
            first_pass = FirstPass(first_pass_config(cfg), *first_pass_decoder())
        model, tokenizer = decoder()
        decode_utterances(
            model, tokenizer, cfg, todo, output_dir, 0, desc=desc or mode, first_pass=first_pass
        )
    summarize(cfg, output_dir)
    return read_row(mode, output_dir)


def markdown_table(
    rows: Sequence[ModeRow], reference: ModeRow, ar_reference: ModeRow | None = None
) -> str:
    """The rows as a Markdown table, speed-ups against `reference` (and `ar_reference`, in a
    column of its own, when given). A cascade row's passes read "AR steps + LLM passes"."""
    vs_ar = ar_reference is not None
    lines = [
        f"| mode | WER % (S/D/I) | LLM passes / utt | RTF | speed-up vs {reference.mode} "
        + ("| speed-up vs AR " if vs_ar else "")
        + "| utt / s |",
        "|---|---|---|---|---|---|" + ("---|" if vs_ar else ""),
    ]
    for row in rows:
        passes = f"{row.forward_passes_per_utterance:.2f}"
        if row.first_pass_forward_passes_per_utterance is not None:
            passes = f"{row.first_pass_forward_passes_per_utterance:.2f} AR + {passes}"
        against_ar = f"| {_number(row.speed_up(ar_reference), '.2f', 'x')} " if vs_ar else ""
        lines.append(
            f"| {row.mode} | {row.wer:.2f} ({row.substitutions}/{row.deletions}/{row.insertions}) "
            f"| {passes} | {_number(row.rtf, '.4f')} "
            f"| {_number(row.speed_up(reference), '.2f', 'x')} {against_ar}"
            f"| {_number(row.utterances_per_second, '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"
