"""What one train.py process carries between steps, and how it reports and saves it.

`Run` holds the process's model, optimizer, scaler, random stream, progress and data position;
`build_trainable_model` gives the model its starting weights (a resumed run's, a previous
stage's, or a part of another model's); `MetricsLog` is rank 0's log.jsonl / TensorBoard /
wandb / console output; `window_metrics` averages a log window over every rank; `save` writes
the full state as `<output_dir>/last`; `skip_bad_step` handles an update with a non-finite
loss or gradient (counted, its batches saved, the run stopped after train.max_bad_steps).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from whisper_llada.config import Config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.data.training_data import SpeechBatch, TrainingBatch
from whisper_llada.models.build import build_model
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.checkpoint import (
    load_prefixed_state,
    load_trainable_state,
    read_checkpoint,
)
from whisper_llada.models.speech_llm import SpeechLLM
from whisper_llada.training.train_state import (
    WEIGHTS_FILE,
    Progress,
    gather_to_main,
    rng_state,
    save_training_checkpoint,
)
from whisper_llada.utils.atomic_write import write_atomically
from whisper_llada.utils.distributed import DistInfo

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
ANSWER_LOSSES = ("diffusion", "next_token")  # Whisper-LLaDA's / the causal baseline's (LossOutput)
SECONDS_PER_HOUR = 3600.0
WANDB_PROJECT = "whisper-llada"
BAD_BATCHES_DIR = "bad_batches"


def _logged_step(line: str) -> float:
    """The step of a log.jsonl line; infinity for a line torn by a kill (it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


class MetricsLog:
    """Rank 0's outputs: log.jsonl, TensorBoard and wandb when enabled, and the console."""

    def __init__(self, cfg: Config, output_dir: Path, resumed_step: int | None = None):
        self.path = output_dir / "log.jsonl"
        if resumed_step is not None and self.path.is_file():
            self._forget_after(resumed_step)
        self.tensorboard = self.wandb = None
        if cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # a slow import: only when asked

            self.tensorboard = SummaryWriter(output_dir / "tensorboard")
        if cfg.train.wandb:
            try:
                import wandb
            except ImportError:
                raise SystemExit("train.wandb=true needs wandb: pip install wandb") from None
            self.wandb = wandb.init(
                project=WANDB_PROJECT, name=output_dir.name, config=to_dict(cfg), dir=output_dir
            )

    def _forget_after(self, step: int) -> None:
        """Drop the entries of steps after `step`: a run stopped between writing them and its
        next checkpoint redoes those steps, and would log them twice."""
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= step]
        if len(kept) < len(lines):
            write_atomically(self.path, lambda tmp: tmp.write_text("".join(kept), encoding="utf-8"))

    def write(self, step: int, metrics: dict[str, float | None]) -> None:
        with self.path.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"step": step, **metrics}) + "\n")
        values = {k: v for k, v in metrics.items() if v is not None}
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


@dataclass
class Run:
    """What the steps of one training process share."""

    cfg: Config
    info: DistInfo
    device: torch.device
    output_dir: Path
    model: SpeechLLM  # WhisperLLaDA, or WhisperLLaMA for model.llm=llama
    tokenizer: Any
    loss_module: nn.Module  # LossModule, wrapped in DDP when there are several processes
    optimizer: torch.optim.AdamW
    scaler: torch.amp.GradScaler
    mask_generator: torch.Generator
    progress: Progress
    log: MetricsLog | None  # rank 0 only
    sampler_state: dict[str, Any] | None  # the data position after the last consumed batch
    bad_utterances: int  # this rank's, over the whole run
    encoder_cache: EncoderOutputCache | None = None  # data.encoder_cache, frozen encoders only

    def cached_frames(self, speech: SpeechBatch) -> SpeechBatch:
        """`speech` with its encoder frames from the encoder cache (as it is without one)."""
        if self.encoder_cache is None:
            return speech
        frames = self.encoder_cache.frames(speech.mel, speech.mel_lengths)
        return replace(speech, encoder_frames=frames)

    def autocast(self) -> torch.autocast:
        dtype = AUTOCAST_DTYPES[self.cfg.train.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)


def build_trainable_model(
    cfg: Config, device: torch.device, resume: Path | None, *, announce: bool
) -> tuple[SpeechLLM, Any]:
    """The model with this stage's freeze policy and its starting weights.

    Weights come from the run's last checkpoint when resuming, else from train.init_checkpoint
    (a stage-1 checkpoint may lack the LoRA factors of stage 2: they start fresh; with
    train.init_prefixes only the tensors under those prefixes), else from the build, seeded
    alike on every rank.
    """
    torch.manual_seed(cfg.train.seed)
    model, tokenizer = build_model(cfg.model, device=device)
    model.set_lora_trainable(cfg.train.trainable == "projector_lora")
    source = resume / WEIGHTS_FILE if resume else cfg.train.init_checkpoint
    if not source:
        return model, tokenizer
    tensors, _, _ = read_checkpoint(source)
    if not resume and cfg.train.init_prefixes:
        prefixes = cfg.train.init_prefixes
        loaded = load_prefixed_state(model, tensors, prefixes, source=str(source))
        built = len(set(model.trainable_parameters()) - set(loaded))
        if announce:
            print(
                f"weights under {', '.join(prefixes)} from {source} ({len(loaded)} tensors); "
                f"{built} trainable tensors start as built"
            )
        return model, tokenizer
    stage_two = not resume and cfg.train.trainable == "projector_lora"
    load_trainable_state(model, tensors, source=str(source), allow_missing_lora=stage_two)
    fresh = len(set(model.trainable_parameters()) - set(tensors))
    if announce:
        print(f"weights from {source}" + (f"; {fresh} LoRA factors start fresh" * bool(fresh)))
    return model, tokenizer


def save(run: Run, valid_loss: float | None) -> None:
    """Weights and the full training state of every rank as `<output_dir>/last`."""
    rank_state = {
        "sampler": run.sampler_state,
        "rng": rng_state({"mask": run.mask_generator}),
        "bad_utterances": run.bad_utterances,
    }
    save_training_checkpoint(
        run.output_dir,
        run.model,
        progress=run.progress,
        optimizer=run.optimizer,
        scaler=run.scaler,
        rank_state=rank_state,
        config=to_dict(run.cfg),
        metadata={"valid_loss": valid_loss},
    )


def window_metrics(run: Run, sums: Counter, seconds: float, grad_norm: float) -> dict[str, float]:
    """Averages and rates of a log window over every rank (one all-reduce)."""
    keys = ("loss", *ANSWER_LOSSES, "ctc", "micro_batches", "utterances", "audio_seconds")
    local = [sums[k] for k in keys] + [run.bad_utterances]
    totals = torch.tensor(local, dtype=torch.float64).to(run.device)
    if dist.is_initialized():
        dist.all_reduce(totals)
    total = dict(zip((*keys, "bad_utterances"), totals.tolist(), strict=True))
    micro = max(total["micro_batches"], 1.0)
    answer_loss = "next_token" if isinstance(run.model, WhisperLLaMA) else "diffusion"
    return {
        "loss": total["loss"] / micro,
        answer_loss: total[answer_loss] / micro,
        "ctc": total["ctc"] / micro if run.model.ctc_head is not None else None,
        "lr": run.optimizer.param_groups[0]["lr"],
        "grad_norm": grad_norm,
        "utterances_per_s": total["utterances"] / seconds,
        "audio_hours_per_s": total["audio_seconds"] / SECONDS_PER_HOUR / seconds,
        "bad_utterances": int(total["bad_utterances"]),
        "bad_steps": run.progress.bad_steps,
    }


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row had a NaN / inf loss or gradient."""


def skip_bad_step(
    run: Run, micro_batches: list[TrainingBatch], losses: list[float], cause: str
) -> None:
    """Count a skipped update, save its batches, and stop after train.max_bad_steps in a row.

    Saved are the batches whose loss was not finite (for a non-finite gradient, all of the
    step's); every rank's go to rank 0, which writes them.
    """
    progress = run.progress
    progress.bad_steps += 1
    progress.bad_steps_in_a_row += 1
    suspects = [
        i for i, loss in enumerate(losses) if cause == "gradient" or not math.isfinite(loss)
    ]
    records = [
        {"step": progress.step, "rank": run.info.rank, "micro_batch": i, "loss": losses[i]}
        | micro_batches[i].contents()
        for i in suspects
    ]
    folder = run.output_dir / BAD_BATCHES_DIR
    prefix = f"step-{progress.step:08d}-bad{progress.bad_steps}"
    for rank_records in gather_to_main(records):
        for record in rank_records:
            name = f"{prefix}-rank{record['rank']}-micro{record['micro_batch']}.pt"
            write_atomically(folder / name, partial(torch.save, record))
    message = (
        f"{progress.bad_steps_in_a_row} update(s) in a row had a non-finite loss or gradient "
        f"(after {progress.step} updates); the offending batches are in {folder}"
    )
    if progress.bad_steps_in_a_row >= run.cfg.train.max_bad_steps:
        raise NonFiniteLossError(
            f"{message}. Check those utterances, lower train.lr, or train in bf16 / fp32 "
            "(train.precision); train.max_bad_steps sets how many in a row are tolerated"
        )
    if run.info.is_main:
        warnings.warn(f"{message}; update skipped", stacklevel=1)


def check_config(cfg: Config) -> None:
    """Stop early, saying what to change, on settings the loop cannot run with."""
    if not cfg.data.train_manifests:
        raise SystemExit("set data.train_manifests (lhotse CutSets or the authors' JSON / JSONL)")
    for key in ("max_steps", "grad_accum", "valid_every", "log_every", "save_every"):
        if getattr(cfg.train, key) < 1:
            raise SystemExit(f"train.{key} must be >= 1, got {getattr(cfg.train, key)}")
    if cfg.data.encoder_cache and cfg.model.train_encoder:
        raise SystemExit(
            "data.encoder_cache stores a frozen encoder's outputs, but model.train_encoder is "
            "true: set data.encoder_cache='' or freeze the encoder"
        )
    if cfg.train.init_prefixes and not cfg.train.init_checkpoint:
        raise SystemExit(
            "train.init_prefixes selects tensors of train.init_checkpoint: set that too, or "
            "leave train.init_prefixes empty"
        )
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("train.device=cuda but no CUDA device is visible: use train.device=cpu")
