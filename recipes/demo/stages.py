"""The demo recipes' training stages: one train.py run each, resumed or skipped, timed per session.

`retrain` (stages 1 and 2 of the LLaDA model) and `retrain_ar` (the AR baseline) plan
their stages as `Stage`s and run them here: a stage trains up to its recipe's train.max_steps
from its last checkpoint (in this process, or under torchrun for more processes), a finished one
is skipped, and each call that trained appends its wall seconds and reached step to the work
folder's retrain_sessions.jsonl, which the export's metadata sums per stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_llada.config import load_config
from whisper_llada.models.checkpoint import read_checkpoint
from whisper_llada.training import loop
from whisper_llada.training.launch import run_torchrun, saved_world_size
from whisper_llada.training.train_state import WEIGHTS_FILE, last_checkpoint

REPO = Path(__file__).resolve().parents[2]  # the checkout: its configs/ and its git commit
SESSIONS_NAME = "retrain_sessions.jsonl"


@dataclass(frozen=True)
class Stage:
    """One train.py run of a recipe: its YAML, the overrides retrain gives it, its output.

    `number` keys its sessions (1 and 2 here, "ar" for `retrain_ar`'s baseline); `title`
    names it in messages (default "stage <number>").
    """

    number: int | str
    recipe: Path
    output_dir: Path
    overrides: tuple[str, ...]
    title: str | None = None

    @property
    def name(self) -> str:
        return self.title or f"stage {self.number}"

    def max_steps(self) -> int:
        return load_config(self.recipe, self.overrides).train.max_steps


def trained_steps(output_dir: Path) -> int:
    """Updates of a train.py run's last checkpoint (0 before its first)."""
    folder = last_checkpoint(output_dir)
    if folder is None:
        return 0
    _, _, metadata = read_checkpoint(folder / WEIGHTS_FILE)
    return metadata["step"]


def check_process_count(stage: Stage, nproc_per_node: int) -> None:
    """Stop before `stage` resumes with other processes than those that saved its checkpoint."""
    saved = saved_world_size(stage.output_dir)
    if saved in (None, nproc_per_node) or trained_steps(stage.output_dir) >= stage.max_steps():
        return  # nothing to resume, the same processes, or finished (skipped)
    raise SystemExit(
        f"{stage.name}'s last checkpoint in {stage.output_dir} was saved by {saved} "
        f"process(es), and train.py resumes it only with as many (their data positions and "
        f"random streams are per process): run the same command with --nproc-per-node {saved}, or "
        f"delete {stage.output_dir} to train {stage.name} again"
    )


def run_stage(stage: Stage, work_dir: Path, nproc_per_node: int) -> None:
    """Train `stage` up to its train.max_steps (resuming its `last`), or skip it if it is there.

    One process runs train.py's main here; more are launched under torchrun. Either way the
    session records the step of the checkpoint the stage left in its output folder.
    """
    done, wanted = trained_steps(stage.output_dir), stage.max_steps()
    if done >= wanted:
        print(f"{stage.name} ({stage.output_dir}) has {done} of {wanted} steps: skipped")
        return
    train_args = [str(stage.recipe), *stage.overrides]
    started = time.perf_counter()
    if nproc_per_node == 1:
        loop.main(train_args)
    else:
        print(f"{stage.name}: {nproc_per_node} processes under torchrun", flush=True)
        code = run_torchrun(nproc_per_node, train_args)
        if code != 0:
            raise SystemExit(
                f"{stage.name} failed: torchrun exited with code {code} (its output is "
                "above); once the cause is fixed, the same retrain command goes on from the "
                f"stage's last checkpoint in {stage.output_dir}, if it has one"
            )
    seconds = time.perf_counter() - started
    record_session(work_dir, stage.number, seconds, trained_steps(stage.output_dir))


def stage_record(stage: Stage, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """A stage's part of the export's metadata: recipe, overrides, steps, processes, time."""
    # Lines written before stage 2 existed have no "stage": they were stage 1's.
    mine = [s for s in sessions if s.get("stage", 1) == stage.number]
    return {
        "recipe": str(stage.recipe.relative_to(REPO)),
        "overrides": list(stage.overrides),
        "steps": trained_steps(stage.output_dir),
        "nproc_per_node": saved_world_size(stage.output_dir),
        "train_wall_seconds": round(sum(s["seconds"] for s in mine), 1),
        "train_sessions": len(mine),
    }


def record_session(work_dir: Path, stage: int | str, seconds: float, step: int) -> None:
    """Append one stage's training time in this call to the work folder's sessions."""
    entry = {"stage": stage, "seconds": round(seconds, 1), "step": step}
    with (work_dir / SESSIONS_NAME).open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def read_sessions(work_dir: Path) -> list[dict[str, Any]]:
    """Every session recorded in the work folder (none when no stage trained here)."""
    path = work_dir / SESSIONS_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
