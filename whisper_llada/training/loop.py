"""Training from a YAML recipe, on one device or under torchrun DDP, resumable with its full state.

    python train.py configs/tiny_train.yaml [section.key=value ...] [--stop-at STEP]
    torchrun --nproc_per_node=8 train.py configs/whisper_llada.yaml train.output_dir=exp/wl
    torchrun --nproc_per_node=8 train.py configs/dllm_asr_stage1.yaml   # then dllm_asr.yaml

Running the same command again resumes from `<output_dir>/last` (weights, optimizer, scaler,
data position, random streams, counters): the resumed run reaches the weights an uninterrupted
run would have. `--stop-at STEP` ends a run after STEP updates with a checkpoint (for time-limited
job slots); the schedule still runs to train.max_steps. Only rank 0 writes:

    <output_dir>/config.yaml        the resolved config
    <output_dir>/log.jsonl          one JSON object per log / validation entry
    <output_dir>/tensorboard/       when train.tensorboard
    <output_dir>/best.safetensors   weights with the lowest validation loss
    <output_dir>/last -> checkpoints/step-N/{model.safetensors, train_state.pt}
    <output_dir>/bad_batches/       step-N-badK-rankR-microI.pt: batches of a skipped update
                                    (NaN / inf loss or gradient): ids, texts, features, tokens

Any checkpoint's model.safetensors decodes with inference.py (inference.checkpoint=...); its
metadata records the SHA-256 of every rank's weights (`rank_checksums`), which DDP keeps equal.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from whisper_llada.config import Config, LossConfig, ModelConfig, load_config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.data.training_cuts import read_cuts
from whisper_llada.data.training_data import (
    ResumableSampler,
    SpeechBatch,
    SpeechDataset,
    TrainingBatch,
    bucketing_sampler,
    data_loader,
    validation_batches,
)
from whisper_llada.models.speech_llm import SpeechLLM
from whisper_llada.training.objective import LossOutput, training_loss
from whisper_llada.training.optim import build_optimizer, lr_at, set_lr
from whisper_llada.training.train_run import (
    ANSWER_LOSSES,
    MetricsLog,
    Run,
    build_trainable_model,
    check_config,
    save,
    skip_bad_step,
    window_metrics,
)
from whisper_llada.training.train_state import (
    Progress,
    check_resumed_recipe,
    load_training_state,
    restore_rng_state,
    seed_everything,
)
from whisper_llada.training.validation import evaluate
from whisper_llada.utils.atomic_write import write_text_atomically
from whisper_llada.utils.distributed import (
    DistInfo,
    barrier,
    device_for,
    init_distributed,
    shutdown,
)

if TYPE_CHECKING:
    from lhotse import CutSet


class LossModule(nn.Module):
    """The training objective as a module: DDP synchronises the gradients of what its forward ran."""

    def __init__(self, model: SpeechLLM, model_cfg: ModelConfig, loss_cfg: LossConfig):
        super().__init__()
        self.model = model
        self.model_cfg = model_cfg
        self.loss_cfg = loss_cfg

    def forward(self, speech: SpeechBatch, generator: torch.Generator) -> LossOutput:
        return training_loss(self.model, speech, self.model_cfg, self.loss_cfg, generator)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument(
        "--stop-at", type=int, default=None, help="end after this many updates, with a checkpoint"
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume although the recipe changed (the old config.yaml is kept as config-step<N>.yaml)",
    )
    return parser.parse_intermixed_args(argv)  # flags and overrides in any order


def setup(
    cfg: Config, info: DistInfo, device: torch.device, allow_config_change: bool = False
) -> tuple[Run, ResumableSampler]:
    """Model, optimizer, scaler, random streams and data position: fresh, or as last saved."""
    output_dir = Path(cfg.train.output_dir)
    resume, state = load_training_state(output_dir, info.world_size) or (None, None)
    if state is not None:
        step = state["progress"]["step"]
        check_resumed_recipe(output_dir, to_dict(cfg), step=step, allow_change=allow_config_change)
    model, tokenizer = build_trainable_model(cfg, device, resume, announce=info.is_main)
    optimizer = build_optimizer(model.trainable_parameters(), cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    mine = state["ranks"][info.rank] if state else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    mask_generator = torch.Generator(device)  # seeded below
    loss_module: nn.Module = LossModule(model, cfg.model, cfg.loss)
    if info.world_size > 1:
        loss_module = DistributedDataParallel(
            loss_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # no running statistics: the buffers are constants
        )
    cuts, dropped = read_cuts(
        cfg.data.train_manifests, skip_bad_audio=cfg.data.skip_bad_audio, seed=cfg.train.seed
    )
    for message in dropped:
        warnings.warn(f"left out of training: {message}", stacklevel=1)
    run = Run(
        cfg=cfg,
        info=info,
        device=device,
        output_dir=output_dir,
        model=model,
        tokenizer=tokenizer,
        loss_module=loss_module,
        optimizer=optimizer,
        scaler=scaler,
        mask_generator=mask_generator,
        progress=Progress(**state["progress"]) if state else Progress(),
        log=MetricsLog(cfg, output_dir, state["progress"]["step"] if state else None)
        if info.is_main
        else None,
        sampler_state=mine["sampler"] if mine else None,
        bad_utterances=mine["bad_utterances"] if mine else len(dropped) * info.is_main,
        encoder_cache=(
            EncoderOutputCache(cfg.data.encoder_cache, model.encoder)
            if cfg.data.encoder_cache
            else None
        ),
    )
    sampler = ResumableSampler(
        bucketing_sampler(
            cuts, cfg.data, seed=cfg.train.seed, rank=info.rank, world_size=info.world_size
        ),
        run.sampler_state,
    )
    # Last, so that nothing above shifts them: per-rank streams (dropout, masks), or the saved.
    seed_everything(cfg.train.seed + info.rank)
    mask_generator.manual_seed(cfg.train.seed + info.rank)
    if mine is not None:
        restore_rng_state(mine["rng"], {"mask": mask_generator})
    if info.is_main:
        where = f"resuming from {resume} after {run.progress.step} updates" if resume else "new run"
        print(f"{where}: {info.world_size} process(es) on {device}, {cfg.train.precision}")
    return run, sampler


def next_batch(run: Run, batches: Iterator[TrainingBatch]) -> TrainingBatch:
    """The next batch with at least one good utterance; bad ones are counted and reported."""
    while True:
        batch: TrainingBatch = next(batches)
        run.sampler_state = batch.sampler_state
        for message in batch.bad:
            run.bad_utterances += 1
            warnings.warn(
                f"skipped bad audio ({run.bad_utterances} on rank {run.info.rank}): {message}",
                stacklevel=1,
            )
        if batch.speech is not None:
            return batch


def all_ranks(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on every rank (one all-reduce)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor(int(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def train_step(run: Run, batches: Iterator[TrainingBatch]) -> tuple[Counter, float]:
    """One update over train.grad_accum micro-batches, skipped when not finite.

    Returns the sums the logs average (losses, micro-batches, utterances, audio seconds) and
    the gradient norm (NaN for a skipped update).
    """
    cfg = run.cfg.train
    set_lr(run.optimizer, lr_at(run.progress.step, cfg))
    run.optimizer.zero_grad(set_to_none=True)
    ddp = isinstance(run.loss_module, DistributedDataParallel)
    sums, micro_batches, losses = Counter(), [], []
    for micro in range(cfg.grad_accum):
        batch = next_batch(run, batches)
        micro_batches.append(batch)
        syncs = not ddp or micro == cfg.grad_accum - 1  # all-reduce gradients once per update
        with nullcontext() if syncs else run.loss_module.no_sync():
            with run.autocast():
                speech = run.cached_frames(batch.to(run.device, non_blocking=True).speech)
                output = run.loss_module(speech, run.mask_generator)
            # Each loss is a batch mean already: the update follows their mean.
            run.scaler.scale(output.total / cfg.grad_accum).backward()
        losses.append(output.total.item())
        if math.isfinite(losses[-1]):
            sums["loss"] += losses[-1]
            for part in (*ANSWER_LOSSES, "ctc"):
                value = getattr(output, part)
                sums[part] += 0.0 if value is None else value.item()
            sums["micro_batches"] += 1
        sums["utterances"] += len(batch.ids)
        sums["audio_seconds"] += batch.audio_seconds
    if not all_ranks(all(map(math.isfinite, losses)), run.device):
        skip_bad_step(run, micro_batches, losses, cause="loss")
        return sums, math.nan
    run.scaler.unscale_(run.optimizer)
    parameters = list(run.model.trainable_parameters().values())
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, cfg.clip_grad_norm or math.inf))
    # fp16: the scaler itself skips updates with inf gradients and lowers its scale.
    if not math.isfinite(grad_norm) and cfg.precision != "fp16":
        skip_bad_step(run, micro_batches, losses, cause="gradient")
        return sums, grad_norm
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.progress.step += 1
    run.progress.bad_steps_in_a_row = 0
    return sums, grad_norm


def train(run: Run, sampler: ResumableSampler, valid: list[CutSet], stop_at: int | None) -> None:
    """The loop: update; then log, validate and checkpoint when their step counts come."""
    cfg, progress = run.cfg.train, run.progress
    dataset = SpeechDataset(
        run.tokenizer,
        run.cfg.audio,
        skip_bad_audio=run.cfg.data.skip_bad_audio,
        feature_cache=run.cfg.data.feature_cache,
    )
    loader = data_loader(
        dataset,
        sampler,
        num_workers=run.cfg.data.num_workers,
        seed=cfg.seed,
        pin_memory=run.device.type == "cuda",
    )
    batches = iter(loader)
    if valid and run.sampler_state is None:
        evaluate(run, valid)  # the baseline of a new run
    last_step = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    last_seen = progress.step
    bar = tqdm(
        total=cfg.max_steps, initial=progress.step, unit="step", disable=None if run.log else True
    )
    run.model.train()
    window, started, rates = Counter(), time.perf_counter(), {}
    while progress.step < last_step:
        sums, grad_norm = train_step(run, batches)
        window.update(sums)
        if progress.step == last_seen:
            continue  # skipped: no update
        step = last_seen = progress.step
        if step % cfg.log_every == 0:
            metrics = window_metrics(run, window, time.perf_counter() - started, grad_norm)
            rates = {k: f"{metrics[k]:.3g}" for k in ("utterances_per_s", "audio_hours_per_s")}
            if run.log is not None:
                run.log.write(step, metrics)
            window, started = Counter(), time.perf_counter()
        loss = sums["loss"] / max(sums["micro_batches"], 1)
        lr = run.optimizer.param_groups[0]["lr"]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", **rates)
        valid_loss = None
        if valid and (step % cfg.valid_every == 0 or step == cfg.max_steps):
            valid_loss = evaluate(run, valid)
        if step % cfg.save_every == 0 or step == last_step:
            save(run, valid_loss)
    bar.close()


def main(argv: list[str] | None = None) -> Progress:
    """Train as the config says; returns the run's counters (updates, best loss, bad steps)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    check_config(cfg)
    # The tokenizer runs in DataLoader workers; its own threads do not survive a fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    info = init_distributed(cfg.train.device)
    run = None
    try:
        device = device_for(cfg.train.device, info)
        run, sampler = setup(cfg, info, device, args.allow_config_change)
        if run.log is not None:
            config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
            write_text_atomically(run.output_dir / "config.yaml", config_yaml)
        valid: list[CutSet] = []
        if cfg.data.valid_manifests:
            valid_cuts, _ = read_cuts(
                cfg.data.valid_manifests,
                skip_bad_audio=cfg.data.skip_bad_audio,
                seed=cfg.train.seed,
            )
            valid = validation_batches(
                valid_cuts, cfg.data, rank=info.rank, world_size=info.world_size
            )
        train(run, sampler, valid, args.stop_at)
        barrier()  # no rank leaves while rank 0 still writes (an early exit can hang gloo)
        return run.progress
    finally:
        if run is not None and run.log is not None:
            run.log.close()
        shutdown()


if __name__ == "__main__":
    main()
