"""Running the checkout's train.py from Python: in this process, or under torchrun with N processes.

train.py is a script at the repository root, not part of the package: `train_module` loads it by
path, so its `main` runs in the calling process (one process, no process group). `run_torchrun`
launches it the way the README's `torchrun --standalone --nproc_per_node=N train.py ...` does,
with this interpreter. A run's checkpoint resumes only with the number of processes that saved
it (train.py checks: data positions and random streams are per process); `saved_world_size`
reads that number so that a caller can choose, or refuse, before launching.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

from whisper_llada.train_state import STATE_FILE, last_checkpoint

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "train.py"
TRAIN_MODULE = "whisper_llada_train_script"  # the name train.py is loaded under
# Threads per training process under torchrun unless the caller's environment sets them:
# several processes share the machine's cores (torchrun's own default, without its warning).
TORCHRUN_OMP_THREADS = "1"


def check_train_script() -> None:
    if not TRAIN_SCRIPT.is_file():
        raise SystemExit(f"{TRAIN_SCRIPT} not found: training runs from a checkout of the project")


def train_module() -> ModuleType:
    """train.py of this checkout, loaded by path (loaded once per process)."""
    check_train_script()
    if TRAIN_MODULE in sys.modules:
        return sys.modules[TRAIN_MODULE]
    spec = importlib.util.spec_from_file_location(TRAIN_MODULE, TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[TRAIN_MODULE] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def torchrun_command(nproc_per_node: int, train_args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node=N <repo>/train.py ARGS`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        str(TRAIN_SCRIPT),
        *train_args,
    ]


def run_torchrun(nproc_per_node: int, train_args: list[str]) -> int:
    """Run train.py with `train_args` under torchrun from the repository root; its exit code.

    The command is printed first; the processes' output goes straight to this process's
    stdout and stderr. OMP_NUM_THREADS is TORCHRUN_OMP_THREADS unless the environment sets it.
    """
    check_train_script()
    command = torchrun_command(nproc_per_node, train_args)
    environment = {**os.environ}
    environment.setdefault("OMP_NUM_THREADS", TORCHRUN_OMP_THREADS)
    print(shlex.join(command), flush=True)  # before the child's lines, which bypass our buffer
    return subprocess.run(command, cwd=REPO, env=environment).returncode


def saved_world_size(output_dir: Path) -> int | None:
    """Processes that saved a train.py run's last checkpoint (None before its first).

    Read from train_state.pt, as train.py's resume check does (`train_state.load_training_state`);
    memory-mapped, so the optimizer state is not read.
    """
    folder = last_checkpoint(output_dir)
    if folder is None:
        return None
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
    return state["world_size"]
