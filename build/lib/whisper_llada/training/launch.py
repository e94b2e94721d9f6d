"""Launching the training loop from Python: in this process, or under torchrun with N processes.

`whisper_llada.training.loop.main` runs a training in the calling process (one process, no
process group); `run_torchrun` launches `python -m whisper_llada.training` the way the README's
`torchrun --standalone --nproc_per_node=N train.py ...` does, with this interpreter. A run's
checkpoint resumes only with the number of processes that saved it (the loop checks: data
positions and random streams are per process); `saved_world_size` reads that number so that a
caller can choose, or refuse, before launching.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from whisper_llada.training.train_state import STATE_FILE, last_checkpoint

TRAINING_MODULE = "whisper_llada.training"  # `python -m` runs the training loop
# Threads per training process under torchrun unless the caller's environment sets them:
# several processes share the machine's cores (torchrun's own default, without its warning).
TORCHRUN_OMP_THREADS = "1"


def torchrun_command(nproc_per_node: int, train_args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node=N -m whisper_llada.training ARGS`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "--module",
        TRAINING_MODULE,
        *train_args,
    ]


def run_torchrun(nproc_per_node: int, train_args: list[str]) -> int:
    """Run the training loop with `train_args` under torchrun; its exit code.

    The command is printed first; the processes' output goes straight to this process's
    stdout and stderr. OMP_NUM_THREADS is TORCHRUN_OMP_THREADS unless the environment sets it.
    """
    command = torchrun_command(nproc_per_node, train_args)
    environment = {**os.environ}
    environment.setdefault("OMP_NUM_THREADS", TORCHRUN_OMP_THREADS)
    print(shlex.join(command), flush=True)  # before the child's lines, which bypass our buffer
    return subprocess.run(command, env=environment).returncode


def saved_world_size(output_dir: Path) -> int | None:
    """Processes that saved a train.py run's last checkpoint (None before its first).

    Read from train_state.pt, as the loop's resume check does (`train_state.load_training_state`);
    memory-mapped, so the optimizer state is not read.
    """
    folder = last_checkpoint(output_dir)
    if folder is None:
        return None
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
    return state["world_size"]
