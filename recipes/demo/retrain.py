"""Retraining the demo model from nothing: base models, corpus, train.py's two stages, export.

    python -m recipes.demo retrain [--out models/demo] [--work-dir exp/demo] [--max-steps N]
        [--stage2-max-steps N] [--nproc-per-node N] [--train-utterances N]
        [--held-out-utterances N] [section.key=value ...]

Writes, each step reused when already done:

    <work>/base/llada/                  the random starting LLM (`corpus`)
    <work>/corpus/, <work>/manifests/   the synthetic corpus with its training split; lhotse cuts
    <work>/train/                       stage 1, train.py on configs/demo.yaml
    <work>/train_stage2/                stage 2, train.py on configs/demo_stage2.yaml, starting
                                        from stage 1's last weights (<work>/train/last)
    <work>/retrain_sessions.jsonl       per stage trained by a `retrain` call: wall seconds, steps
    <out>/                              the export (`whisper_llada.models.export`) of <work>/train_stage2/last

The encoder is Whisper tiny.en as `setup.sh` converts it, frozen (its outputs cached in
<work>/encoder_cache). Stage 1 trains the LLM from random, the adapter and the CTC head with MASK
canvases; stage 2 fine-tunes them with the model's own CTC draft in half of the rows' masked slots
(loss.draft_prob), the canvas prior-guided decoding starts from. A stage whose last checkpoint has
reached its train.max_steps is skipped; an unfinished one resumes from its `last`. Stage 1 cannot
train further once stage 2 has started from it. --max-steps sets stage 1's train.max_steps,
--stage2-max-steps stage 2's; the section.key=value overrides apply to both.

With --nproc-per-node 1 (the default) a stage runs the training loop in this process. With
N > 1 each stage with steps to run is launched as `python -m torch.distributed.run --standalone
--nproc_per_node=N --module whisper_llada.training <recipe> <overrides>` in this folder
(`whisper_llada.training.launch`), with OMP_NUM_THREADS=1 unless it is set.
train.py resumes a checkpoint only with the number of processes that saved it (data positions
and random streams are per process): a stage to resume with another number is refused before
any stage trains.

The last checkpoint is exported, not the best: the best one is chosen by a validation loss of
random masks, a weak guide to decoding quality, and the schedule ends at its minimum learning
rate. The export's metadata records each stage's recipe, overrides, steps, processes
(nproc_per_node: those that saved its last checkpoint) and training wall time summed over the
sessions of this work folder (training run outside `retrain` is not counted), DEMO_SEED, the
corpus sizes and parameters (the demo checks that it rebuilds the same held-out sets) and the
git commit. --train-utterances and --held-out-utterances change the corpus: give such a run its
own --work-dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipes.demo.corpus import (
    DEMO_SEED,
    TRAIN_SPLIT,
    TRAIN_UTTERANCES,
    build_demo_corpus,
    prepare_demo_manifests,
    write_demo_base_llada,
)
from recipes.demo.stages import (
    REPO,
    Stage,
    check_process_count,
    read_sessions,
    run_stage,
    stage_record,
    trained_steps,
)
from whisper_llada.config import load_config
from whisper_llada.data.synthetic_corpus import MARKER_NAME
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint
from whisper_llada.models.export import export_model
from whisper_llada.training.train_state import LAST_LINK, WEIGHTS_FILE, last_checkpoint

RECIPE = REPO / "configs" / "demo.yaml"
STAGE2_RECIPE = REPO / "configs" / "demo_stage2.yaml"
STAGE_DIRS = ("train", "train_stage2")  # in the work folder: stage 1's and stage 2's output
VALID_SPLIT = "dev-clean"
HELD_OUT_KEY = "held_out_utterances"  # in the export's metadata: the demo rebuilds those sets
CORPUS_SPEC_KEY = "corpus_spec"  # in the export's metadata: the training corpus's parameters
UNKNOWN_COMMIT = "unknown"
# Set by `retrain` per stage: an override of theirs would apply to both stages.
STAGE_KEYS = {
    "train.output_dir": "--work-dir",
    "train.init_checkpoint": "stage 1's last checkpoint",
    "train.max_steps": "--max-steps and --stage2-max-steps",
}


def add_retrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("models/demo"), help="export folder")
    parser.add_argument("--work-dir", type=Path, default=Path("exp/demo"))
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stage 1's train.max_steps (default: demo.yaml's)",
    )
    parser.add_argument(
        "--stage2-max-steps",
        type=int,
        default=None,
        help="stage 2's train.max_steps (default: demo_stage2.yaml's)",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="training processes per stage: 1 runs train.py in this process, N > 1 under "
        "torchrun (a stage resumes only with the number that saved it)",
    )
    parser.add_argument("--train-utterances", type=int, default=TRAIN_UTTERANCES)
    parser.add_argument(
        "--held-out-utterances",
        type=int,
        default=None,
        help="cap on every held-out split (default: corpus.py's sizes)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="section.key=value for both stages' recipes, e.g. train.device=cuda",
    )


def run_retrain(args: argparse.Namespace) -> Path:
    return retrain(
        args.out,
        args.work_dir,
        max_steps=args.max_steps,
        stage2_max_steps=args.stage2_max_steps,
        nproc_per_node=args.nproc_per_node,
        train_utterances=args.train_utterances,
        held_out_utterances=args.held_out_utterances,
        overrides=args.overrides,
    )


def retrain(
    out_dir: Path,
    work_dir: Path,
    *,
    max_steps: int | None = None,
    stage2_max_steps: int | None = None,
    nproc_per_node: int = 1,
    train_utterances: int = TRAIN_UTTERANCES,
    held_out_utterances: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Everything the module docstring lists; returns the exported config.yaml."""
    check_arguments(
        {"--max-steps": max_steps, "--stage2-max-steps": stage2_max_steps},
        nproc_per_node,
        overrides,
        STAGE_KEYS,
    )
    base = write_base_models(work_dir / "base")
    corpus, data = training_data(work_dir, train_utterances, held_out_utterances)
    shared = (f"model.llada_path={base / 'llada'}", *data)  # the encoder: the recipe's
    stages = plan_stages(work_dir, shared, (max_steps, stage2_max_steps), tuple(overrides))
    check_stage_order(*stages)
    for stage in stages:
        check_process_count(stage, nproc_per_node)
    for stage in stages:
        run_stage(stage, work_dir, nproc_per_node)
    sessions = read_sessions(work_dir)
    records = [stage_record(stage, sessions) for stage in stages]
    metadata = {
        "stages": records,
        "train_wall_seconds": round(sum(r["train_wall_seconds"] for r in records), 1),
        **provenance(corpus, train_utterances, held_out_utterances),
    }
    return export_last(stages[-1].output_dir, out_dir, metadata)


def training_data(
    work_dir: Path, train_utterances: int, held_out_utterances: int | None
) -> tuple[Path, tuple[str, ...]]:
    """The work folder's corpus (built once) and the overrides pointing a recipe at its data."""
    corpus = build_demo_corpus(
        work_dir / "corpus",
        with_train=True,
        train_utterances=train_utterances,
        held_out_utterances=held_out_utterances,
    )
    manifests = prepare_demo_manifests(corpus, work_dir / "manifests")
    return corpus, (
        f"data.train_manifests=[{manifests[TRAIN_SPLIT]}]",
        f"data.valid_manifests=[{manifests[VALID_SPLIT]}]",
        f"data.feature_cache={work_dir / 'feature_cache'}",  # the recipe's are exp/demo's
        f"data.encoder_cache={work_dir / 'encoder_cache'}",
    )


def provenance(
    corpus: Path, train_utterances: int, held_out_utterances: int | None
) -> dict[str, Any]:
    """What an export's metadata records of its data and code: seed, corpus, commit."""
    return {
        "demo_seed": DEMO_SEED,
        "train_utterances": train_utterances,
        HELD_OUT_KEY: held_out_utterances,
        CORPUS_SPEC_KEY: json.loads((corpus / MARKER_NAME).read_text()),
        "git_commit": git_commit(),
    }


def check_arguments(
    counts: dict[str, int | None],
    nproc_per_node: int,
    overrides: Sequence[str],
    stage_keys: dict[str, str],
    command: str = "retrain",
) -> None:
    """Stop before any work on a count below 1 (None: not given) or on an override of a key in
    `stage_keys` (key -> the option that sets it); `command` names the subcommand in the
    messages."""
    for name, value in {**counts, "--nproc-per-node": nproc_per_node}.items():
        if value is not None and value < 1:
            raise SystemExit(f"{name} must be at least 1, got {value}")
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in stage_keys:
            raise SystemExit(f"{key} is set per stage by {command}: use {stage_keys[key]}")


def plan_stages(
    work_dir: Path,
    shared: tuple[str, ...],
    max_steps: tuple[int | None, int | None],
    overrides: tuple[str, ...],
) -> tuple[Stage, Stage]:
    """Stage 1 on demo.yaml, stage 2 on demo_stage2.yaml from stage 1's last weights.

    `shared`: the overrides pointing both recipes at the work folder's models and manifests;
    `max_steps`: each stage's train.max_steps (None: its recipe's); `overrides`: the user's, last.
    """
    first_dir, second_dir = (work_dir / name for name in STAGE_DIRS)
    first_steps, second_steps = (
        () if steps is None else (f"train.max_steps={steps}",) for steps in max_steps
    )
    first = Stage(
        1,
        RECIPE,
        first_dir,
        (*shared, f"train.output_dir={first_dir}", *first_steps, *overrides),
    )
    second = Stage(
        2,
        STAGE2_RECIPE,
        second_dir,
        (
            *shared,
            f"train.output_dir={second_dir}",
            f"train.init_checkpoint={first_dir / LAST_LINK / WEIGHTS_FILE}",
            *second_steps,
            *overrides,
        ),
    )
    return first, second


def check_stage_order(first: Stage, second: Stage) -> None:
    """Stop before stage 1 trains further under a stage 2 that has started from its weights."""
    if last_checkpoint(second.output_dir) is None:
        return
    done, wanted = trained_steps(first.output_dir), first.max_steps()
    if done < wanted:
        keep = f"keep --max-steps {done}, or " if done else ""
        raise SystemExit(
            f"{second.output_dir} has started from stage 1's weights at step {done}, and stage 1 "
            f"is asked for {wanted} steps: {keep}delete {second.output_dir} to train stage 2 "
            "again after stage 1"
        )


def write_base_models(base_dir: Path) -> Path:
    """The random starting LLM in `base_dir`, written once (staged, then renamed)."""
    if base_dir.exists():
        if not (base_dir / "llada" / "config.json").is_file():
            raise SystemExit(f"{base_dir} exists without llada: delete it to rewrite it")
        return base_dir
    staging = base_dir.parent / f".{base_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted call
    write_demo_base_llada(staging)
    staging.rename(base_dir)
    return base_dir


def git_commit() -> str:
    """HEAD of the checkout this code runs from, or "unknown" outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN_COMMIT
    return result.stdout.strip()


def export_last(train_dir: Path, out_dir: Path, metadata: dict[str, Any]) -> Path:
    """Export `<train_dir>/last` to `out_dir`; the metadata gains its step and validation loss."""
    folder = last_checkpoint(train_dir)
    if folder is None:
        raise SystemExit(f"{train_dir} has no checkpoint to export (no `last`)")
    cfg = load_config(train_dir / "config.yaml")
    model, _ = build_model(cfg.model)
    trained = load_checkpoint(model, folder / WEIGHTS_FILE)
    metadata = {**metadata, "steps": trained["step"], "valid_loss": trained["valid_loss"]}
    config_path = export_model(model, cfg, out_dir, metadata=metadata)
    print(f"exported {folder} (step {trained['step']}) to {out_dir}")
    return config_path
