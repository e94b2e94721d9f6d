"""Retraining the demo's autoregressive baseline: Whisper-LLaMA from the LLaDA recipe's stage-1 projector, then its export.

    python -m recipes.demo retrain-ar [--out models/demo_ar] [--work-dir exp/demo]
        [--ar-work-dir exp/demo_ar] [--max-steps N] [--nproc-per-node N]
        [--train-utterances N] [--held-out-utterances N] [section.key=value ...]

The baseline shares the LLaDA recipe's frozen Whisper tiny.en (`retrain`): it starts from stage 1's
last projector (train.init_prefixes), with a random LLaMA of the demo LLaDA's size and tokenizer in
place of the LLaDA, and trains as many steps as stage 1 (configs/demo_ar.yaml). So it needs stage 1
finished in <work>/train, and is refused before. Writes, each step reused when already done:

    <work>/base/llama/                  the random starting LLaMA (`corpus.write_demo_base_llama`)
    <work>/corpus/, <work>/manifests/   reused (built as `retrain` builds them, with the same sizes)
    <ar-work>/train/                    train.py on configs/demo_ar.yaml
    <ar-work>/retrain_sessions.jsonl    wall seconds and steps of each call that trained
    <out>/                              the export of <ar-work>/train/last (whisper/, llama/, ...)

A finished run is skipped and an unfinished one resumes from its `last`, with the number of
processes that saved it; --nproc-per-node N > 1 launches train.py under torchrun, as `retrain`
does. The export's metadata is `retrain`'s kind (the stage's recipe, overrides, steps,
processes and wall time; the corpus, seed and commit), plus the stage-1 checkpoint it started
from (path, step and its weights' checksum).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from recipes.demo.corpus import (
    TRAIN_UTTERANCES,
    write_demo_base_llama,
)
from recipes.demo.retrain import (
    STAGE_DIRS,
    check_arguments,
    export_last,
    provenance,
    training_data,
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
from whisper_llada.models.checkpoint import read_checkpoint
from whisper_llada.training.train_state import LAST_LINK, WEIGHTS_FILE, last_checkpoint

AR_RECIPE = REPO / "configs" / "demo_ar.yaml"
AR_STAGE = "ar"  # the "stage" of its sessions
AR_TRAIN_DIR = "train"  # in the AR work folder
INIT_KEY = "init_checkpoint"  # in the export's metadata: the stage-1 weights it started from
STAGE_KEYS = {  # set by retrain-ar
    "train.output_dir": "--ar-work-dir",
    "train.init_checkpoint": "--work-dir (stage 1's last checkpoint there)",
    "train.max_steps": "--max-steps",
}


def add_retrain_ar_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("models/demo_ar"), help="export folder")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("exp/demo"),
        help="the LLaDA recipe's work folder (`retrain`'s): base models, corpus, stage 1",
    )
    parser.add_argument(
        "--ar-work-dir", type=Path, default=Path("exp/demo_ar"), help="the baseline's training"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="train.max_steps (default: demo_ar.yaml's)"
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="training processes: 1 runs train.py in this process, N > 1 under torchrun (a "
        "run resumes only with the number that saved it)",
    )
    parser.add_argument("--train-utterances", type=int, default=TRAIN_UTTERANCES)
    parser.add_argument(
        "--held-out-utterances",
        type=int,
        default=None,
        help="cap on every held-out split (default: corpus.py's sizes); as given to retrain",
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value for demo_ar.yaml, e.g. train.device=cuda"
    )


def run_retrain_ar(args: argparse.Namespace) -> Path:
    return retrain_ar(
        args.out,
        args.work_dir,
        args.ar_work_dir,
        max_steps=args.max_steps,
        nproc_per_node=args.nproc_per_node,
        train_utterances=args.train_utterances,
        held_out_utterances=args.held_out_utterances,
        overrides=args.overrides,
    )


def retrain_ar(
    out_dir: Path,
    work_dir: Path,
    ar_work_dir: Path,
    *,
    max_steps: int | None = None,
    nproc_per_node: int = 1,
    train_utterances: int = TRAIN_UTTERANCES,
    held_out_utterances: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Everything the module docstring lists; returns the exported config.yaml."""
    check_arguments({"--max-steps": max_steps}, nproc_per_node, overrides, STAGE_KEYS, "retrain-ar")
    stage_one = finished_stage_one(work_dir)
    base = write_base_llama(work_dir / "base")
    corpus, data = training_data(work_dir, train_utterances, held_out_utterances)
    train_dir = ar_work_dir / AR_TRAIN_DIR
    stage = Stage(
        AR_STAGE,
        AR_RECIPE,
        train_dir,
        (
            f"model.llama_path={base / 'llama'}",
            *data,
            f"train.output_dir={train_dir}",
            f"train.init_checkpoint={stage_one}",
            *(() if max_steps is None else (f"train.max_steps={max_steps}",)),
            *overrides,
        ),
        title="the AR stage",
    )
    check_process_count(stage, nproc_per_node)
    ar_work_dir.mkdir(parents=True, exist_ok=True)
    run_stage(stage, ar_work_dir, nproc_per_node)
    record = stage_record(stage, read_sessions(ar_work_dir))
    _, _, started_from = read_checkpoint(stage_one)
    metadata = {
        "stages": [record],
        "train_wall_seconds": record["train_wall_seconds"],
        INIT_KEY: {
            "path": str(stage_one),
            "step": started_from["step"],
            "rank_checksums": started_from["rank_checksums"],
        },
        **provenance(corpus, train_utterances, held_out_utterances),
    }
    return export_last(train_dir, out_dir, metadata)


def finished_stage_one(work_dir: Path) -> Path:
    """The LLaDA recipe's stage-1 last weights in `work_dir`; stops unless stage 1 has finished.

    An unfinished stage 1 would give the baseline another start than the LLaDA model's stage 2.
    """
    stage_dir = work_dir / STAGE_DIRS[0]
    command = f"`python -m recipes.demo retrain --work-dir {work_dir}`"
    if last_checkpoint(stage_dir) is None:
        raise SystemExit(
            f"{stage_dir} has no last checkpoint: the AR baseline starts from stage 1's encoder "
            f"and projector, so train stage 1 of the LLaDA recipe first ({command})"
        )
    done = trained_steps(stage_dir)
    wanted = load_config(stage_dir / "config.yaml").train.max_steps
    if done < wanted:
        raise SystemExit(
            f"stage 1 in {stage_dir} has {done} of its {wanted} steps: the AR baseline starts "
            f"from its final projector, so finish it first ({command})"
        )
    return stage_dir / LAST_LINK / WEIGHTS_FILE


def write_base_llama(base_dir: Path) -> Path:
    """The random starting LLaMA in `base_dir`/llama, written once (staged, then renamed)."""
    target = base_dir / "llama"
    if target.exists():
        if not (target / "config.json").is_file():
            raise SystemExit(f"{target} exists without config.json: delete it to rewrite it")
        return base_dir
    staging = base_dir / ".llama.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted call
    written = write_demo_base_llama(staging)  # staging/llama
    written.rename(target)
    shutil.rmtree(staging)
    return base_dir
