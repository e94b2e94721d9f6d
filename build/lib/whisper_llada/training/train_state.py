"""Resumable training state: optimizer, scaler, data position, RNG streams and counters, saved atomically beside the weights.

A checkpoint of a run is a folder `<output_dir>/checkpoints/step-NNNNNNNN/` holding
`model.safetensors` (the trainable weights, `checkpoint.save_checkpoint`) and `train_state.pt`
(everything else a resumed run needs). `<output_dir>/last` is a symbolic link to the newest
complete folder; it is switched atomically (a new link renamed over the old one) only after both
files are written, so a crash at any moment leaves `last` pointing at a consistent pair, and the
older folder is removed afterwards.

Per-rank parts (the data sampler's position, the torch / CUDA / numpy / python RNG states, the
mask generator's, the count of skipped bad utterances) are gathered to rank 0, which writes the file; on resume every rank reads the
file and takes its own entry, so a run resumes with the same number of processes only. The
optimizer and scaler states are the same on every rank under DDP (the same averaged gradients
drive the same updates), so rank 0's are saved.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from whisper_llada.config import changed_keys
from whisper_llada.models.checkpoint import save_checkpoint
from whisper_llada.models.speech_llm import WhisperLLaDA
from whisper_llada.utils.atomic_write import write_atomically

CHECKPOINTS_DIR = "checkpoints"
LAST_LINK = "last"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
STEP_DIGITS = 8
STATE_FORMAT = 1  # bump when the layout of train_state.pt changes


@dataclass
class Progress:
    """Counters of a run, saved with every checkpoint.

    Attributes:
        step: optimizer updates done (skipped non-finite steps do not count).
        best_valid_loss: lowest validation loss so far (None before the first validation).
        bad_steps_in_a_row: consecutive skipped steps (non-finite loss or gradient).
        bad_steps: skipped steps over the whole run.
    """

    step: int = 0
    best_valid_loss: float | None = None
    bad_steps_in_a_row: int = 0
    bad_steps: int = 0


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and every CUDA device) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """This process's random streams: python, numpy, torch CPU, this CUDA device, `generators`.

    Stored with plain types and tensors only, so the file loads with `weights_only=True`.
    """
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached_gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Undo `rng_state`: every stream continues exactly where it was saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state(
        (kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gauss)
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def gather_to_main(value: Any) -> list[Any]:
    """Every rank's `value` on rank 0, in rank order (other ranks get []); [value] alone."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered or []


def weights_checksum(parameters: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the parameters' bytes in name order: equal on two ranks iff equal weights."""
    digest = hashlib.sha256()
    for name in sorted(parameters):
        tensor = parameters[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"step-{step:0{STEP_DIGITS}d}"


def save_training_checkpoint(
    output_dir: Path,
    model: WhisperLLaDA,
    *,
    progress: Progress,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rank_state: dict[str, Any],
    config: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """Save weights + training state as `<output_dir>/last`; every rank calls it, rank 0 writes.

    Args:
        output_dir: the run's folder.
        model: its trainable parameters are saved (and checksummed on every rank).
        progress, optimizer, scaler: the run's counters and optimisation state.
        rank_state: this rank's own state (data position, `rng_state`, ...), plain types only.
        config: stored in the weights file's header.
        metadata: stored there too, with the step, world size and `rank_checksums` added.
    """
    checksum = weights_checksum(model.trainable_parameters())
    per_rank = gather_to_main({**rank_state, "checksum": checksum})
    if not per_rank:
        return  # not rank 0
    checksums = [entry.pop("checksum") for entry in per_rank]
    if len(set(checksums)) > 1:
        warnings.warn(f"the ranks hold different weights: checksums {checksums}", stacklevel=2)
    metadata = {
        **metadata,
        "step": progress.step,
        "world_size": len(per_rank),
        "rank_checksums": checksums,
    }
    state = {
        "format": STATE_FORMAT,
        "progress": asdict(progress),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "world_size": len(per_rank),
        "ranks": per_rank,
    }
    folder = checkpoint_dir(output_dir, progress.step)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, folder / WEIGHTS_FILE, config=config, metadata=metadata)
    write_atomically(folder / STATE_FILE, lambda tmp: torch.save(state, tmp))
    link = output_dir / LAST_LINK
    temporary_link = output_dir / f".{LAST_LINK}.{os.getpid()}.tmp"
    temporary_link.unlink(missing_ok=True)
    temporary_link.symlink_to(folder.relative_to(output_dir), target_is_directory=True)
    os.replace(temporary_link, link)  # atomic: readers see the old folder or the new one
    for other in (output_dir / CHECKPOINTS_DIR).iterdir():
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The folder `<output_dir>/last` points at, or None when the run has no checkpoint yet."""
    link = output_dir / LAST_LINK
    if not link.exists():
        return None
    folder = link.resolve()
    missing = [name for name in (WEIGHTS_FILE, STATE_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{link} -> {folder} lacks {', '.join(missing)}; it was not written by train.py. "
            "Remove the link to start afresh, or point it at a complete checkpoint folder"
        )
    return folder


def load_training_state(output_dir: Path, world_size: int) -> tuple[Path, dict[str, Any]] | None:
    """The run's last checkpoint folder and its train_state.pt, or None for a fresh run.

    Raises ValueError when the state does not fit this run (another format or world size).
    """
    folder = last_checkpoint(output_dir)
    if folder is None:
        return None
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{folder / STATE_FILE} has format {state.get('format')}, this train.py reads "
            f"format {STATE_FORMAT}: resume with the version that wrote it, or start a new run "
            f"from its weights with train.init_checkpoint={folder / WEIGHTS_FILE}"
        )
    if state["world_size"] != world_size:
        raise ValueError(
            f"{folder} was saved by {state['world_size']} processes, this run has {world_size}: "
            "the data position and random streams are per process, so resume with "
            f"--nproc_per_node={state['world_size']} (or start a new run from its weights with "
            f"train.init_checkpoint={folder / WEIGHTS_FILE})"
        )
    return folder, state


# What a resume may change without --allow-config-change: how long and how observably the run
# goes, where it runs, how data is loaded; not what each update computes.
RESUMABLE_CHANGES = frozenset(
    {
        "train.max_steps",
        "train.log_every",
        "train.valid_every",
        "train.save_every",
        "train.valid_wer_utterances",
        "train.max_bad_steps",
        "train.tensorboard",
        "train.wandb",
        "train.device",
        "data.num_workers",
        "data.feature_cache",  # read back bit for bit: where it lives changes nothing
    }
)


def check_resumed_recipe(
    output_dir: Path, config: dict[str, Any], *, step: int, allow_change: bool
) -> None:
    """Stop a resume whose recipe differs from the run's config.yaml, naming the keys.

    With `allow_change` the run continues with the new recipe and the old config.yaml is kept
    as config-step<N>.yaml (N: the step it was used up to), so the record of every step stays.

    Args:
        config: the new run's config, as `config.to_dict` gives it.
    """
    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        return
    changed = [
        key for key in changed_keys(saved_path, config, config) if key not in RESUMABLE_CHANGES
    ]
    if not changed:
        return
    if not allow_change:
        raise SystemExit(
            f"{output_dir} was trained up to step {step} with another recipe ({', '.join(changed)} "
            "changed): resume with the config in its config.yaml, train into another "
            "train.output_dir, or pass --allow-config-change to go on with this one (the old "
            "config is then kept as config-step<N>.yaml)"
        )
    shutil.copyfile(saved_path, output_dir / f"config-step{step:08d}.yaml")
