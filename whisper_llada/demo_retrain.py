"""Retraining the demo model from nothing: base models, corpus, train.py's loop on configs/demo.yaml, export.

    python -m whisper_llada.demo retrain [--out models/demo] [--work-dir exp/demo] [--max-steps N]
        [--train-utterances N] [--held-out-utterances N] [section.key=value ...]

Writes, each step reused when already done:

    <work>/base/{whisper,llada}/        the random starting models (`demo_recipe`)
    <work>/corpus/, <work>/manifests/   the synthetic corpus with its training split; lhotse cuts
    <work>/train/                       train.py's output; a rerun resumes from <work>/train/last
    <work>/retrain_sessions.jsonl       per `retrain` call: its training wall seconds and steps
    <out>/                              the export (`whisper_llada.export`) of <work>/train/last

The last checkpoint is exported, not the best: the best one is chosen by a validation loss of
random masks, a weak guide to decoding quality, and the schedule ends at its minimum learning
rate. The export's metadata records the recipe, its overrides, DEMO_SEED, the corpus sizes and
parameters (the demo checks that it rebuilds the same held-out sets), the git commit, the steps and the training wall time summed over the sessions of this work folder
(training run outside `retrain` is not counted). --train-utterances and --held-out-utterances
change the corpus: give such a run its own --work-dir.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from whisper_llada.build import build_model
from whisper_llada.checkpoint import load_checkpoint
from whisper_llada.config import load_config
from whisper_llada.demo_recipe import (
    DEMO_SEED,
    TRAIN_SPLIT,
    TRAIN_UTTERANCES,
    build_demo_corpus,
    prepare_demo_manifests,
    write_demo_base_models,
)
from whisper_llada.export import export_model
from whisper_llada.synthetic_corpus import MARKER_NAME
from whisper_llada.train_state import WEIGHTS_FILE, last_checkpoint

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "configs" / "demo.yaml"
TRAIN_SCRIPT = REPO / "train.py"
TRAIN_MODULE = "whisper_llada_train_script"  # the name train.py is loaded under
VALID_SPLIT = "dev-clean"
SESSIONS_NAME = "retrain_sessions.jsonl"
HELD_OUT_KEY = "held_out_utterances"  # in the export's metadata: the demo rebuilds those sets
CORPUS_SPEC_KEY = "corpus_spec"  # in the export's metadata: the training corpus's parameters
UNKNOWN_COMMIT = "unknown"


def add_retrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("models/demo"), help="export folder")
    parser.add_argument("--work-dir", type=Path, default=Path("exp/demo"))
    parser.add_argument(
        "--max-steps", type=int, default=None, help="train.max_steps (default: the recipe's)"
    )
    parser.add_argument("--train-utterances", type=int, default=TRAIN_UTTERANCES)
    parser.add_argument(
        "--held-out-utterances",
        type=int,
        default=None,
        help="cap on every held-out split (default: demo_recipe's sizes)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value for the recipe, e.g. train.device=cuda"
    )


def run_retrain(args: argparse.Namespace) -> Path:
    return retrain(
        args.out,
        args.work_dir,
        max_steps=args.max_steps,
        train_utterances=args.train_utterances,
        held_out_utterances=args.held_out_utterances,
        overrides=args.overrides,
    )


def retrain(
    out_dir: Path,
    work_dir: Path,
    *,
    max_steps: int | None = None,
    train_utterances: int = TRAIN_UTTERANCES,
    held_out_utterances: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Everything the module docstring lists; returns the exported config.yaml."""
    if max_steps is not None and max_steps < 1:
        raise SystemExit(f"--max-steps must be at least 1, got {max_steps}")
    base = write_base_models(work_dir / "base")
    corpus = build_demo_corpus(
        work_dir / "corpus",
        with_train=True,
        train_utterances=train_utterances,
        held_out_utterances=held_out_utterances,
    )
    manifests = prepare_demo_manifests(corpus, work_dir / "manifests")
    train_dir = work_dir / "train"
    recipe_overrides = [
        f"model.whisper_path={base / 'whisper'}",
        f"model.llada_path={base / 'llada'}",
        f"data.train_manifests=[{manifests[TRAIN_SPLIT]}]",
        f"data.valid_manifests=[{manifests[VALID_SPLIT]}]",
        f"train.output_dir={train_dir}",
        *([f"train.max_steps={max_steps}"] if max_steps is not None else []),
        *overrides,
    ]
    started = time.perf_counter()
    progress = train_module().main([str(RECIPE), *recipe_overrides])
    sessions = record_session(work_dir, time.perf_counter() - started, progress.step)
    metadata = {
        "recipe": str(RECIPE.relative_to(REPO)),
        "overrides": recipe_overrides,
        "demo_seed": DEMO_SEED,
        "train_utterances": train_utterances,
        HELD_OUT_KEY: held_out_utterances,
        CORPUS_SPEC_KEY: json.loads((corpus / MARKER_NAME).read_text()),
        "git_commit": git_commit(),
        "train_wall_seconds": round(sum(s["seconds"] for s in sessions), 1),
        "train_sessions": len(sessions),
    }
    return export_last(train_dir, out_dir, metadata)


def write_base_models(base_dir: Path) -> Path:
    """The random starting models in `base_dir`, written once (staged, then renamed)."""
    if base_dir.exists():
        missing = [n for n in ("whisper", "llada") if not (base_dir / n / "config.json").is_file()]
        if missing:
            raise SystemExit(
                f"{base_dir} exists without {' and '.join(missing)}: delete it to rewrite it"
            )
        return base_dir
    staging = base_dir.parent / f".{base_dir.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted call
    write_demo_base_models(staging)
    staging.rename(base_dir)
    return base_dir


def train_module() -> ModuleType:
    """train.py of this checkout, loaded by path (it is a script, not part of the package)."""
    if not TRAIN_SCRIPT.is_file():
        raise SystemExit(f"{TRAIN_SCRIPT} not found: retrain runs from a checkout of the project")
    if TRAIN_MODULE in sys.modules:
        return sys.modules[TRAIN_MODULE]
    spec = importlib.util.spec_from_file_location(TRAIN_MODULE, TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[TRAIN_MODULE] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def record_session(work_dir: Path, seconds: float, step: int) -> list[dict[str, Any]]:
    """Append this call's training time to the work folder's sessions; return them all."""
    path = work_dir / SESSIONS_NAME
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"seconds": round(seconds, 1), "step": step}) + "\n")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


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
