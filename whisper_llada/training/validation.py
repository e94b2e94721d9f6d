"""Validation during training: the loss over the validation set with fixed masks, a quick CTC greedy WER, and best.safetensors when the loss is the lowest so far."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from whisper_llada.config_strict import to_dict
from whisper_llada.data.training_data import (
    SpeechDataset,
    data_loader,
)
from whisper_llada.evaluation.metrics import score
from whisper_llada.models.checkpoint import save_checkpoint
from whisper_llada.models.ctc import ctc_greedy_decode
from whisper_llada.models.prompt import decode_text
from whisper_llada.training.objective import batch_audio, training_loss
from whisper_llada.training.train_run import Run

if TYPE_CHECKING:
    from lhotse import CutSet


@torch.no_grad()
def validate(run: Run, valid: list[CutSet]) -> dict[str, float | None]:
    """Loss over the validation set with fixed masks, and CTC greedy WER on a few utterances.

    Every call draws the same masks (a generator seeded with train.seed), so two validations
    differ only by the weights. The WER (rank 0's first valid_wer_utterances, greedy CTC) needs
    a CTC head; without one it is None: diffusion decoding is too slow for a quick check.
    """
    cfg = run.cfg
    run.model.eval()
    generator = torch.Generator(run.device).manual_seed(cfg.train.seed)
    dataset = SpeechDataset(
        run.tokenizer,
        cfg.audio,
        skip_bad_audio=cfg.data.skip_bad_audio,
        feature_cache=cfg.data.feature_cache,
    )
    loader = data_loader(dataset, valid, num_workers=cfg.data.num_workers, seed=cfg.train.seed)
    loss_sum, count = 0.0, 0
    wanted = cfg.train.valid_wer_utterances if run.info.is_main and run.model.ctc_head else 0
    scored: list[tuple[str, str, str]] = []
    for batch in (b for b in loader if b.speech is not None):
        with run.autocast():
            speech = run.cached_frames(batch.to(run.device).speech)
            loss_sum += training_loss(
                run.model, speech, cfg.model, cfg.loss, generator
            ).total.item() * len(batch.ids)
            count += len(batch.ids)
            if len(scored) < wanted:
                audio = batch_audio(run.model, speech)
                drafts = ctc_greedy_decode(run.model.ctc_logits(audio), audio.lengths)
                texts = [decode_text(run.tokenizer, ids) for ids in drafts]
                scored += list(zip(batch.ids, batch.texts, texts, strict=True))
    totals = torch.tensor([loss_sum, count], dtype=torch.float64).to(run.device)
    if dist.is_initialized():
        dist.all_reduce(totals)
    run.model.train()
    loss = (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan
    return {"valid_loss": loss, "valid_wer": score(scored[:wanted])[0].wer if scored else None}


def evaluate(run: Run, valid: list[CutSet]) -> float:
    """Validate, log, and write best.safetensors when the loss is the lowest so far."""
    metrics = validate(run, valid)
    loss, best = metrics["valid_loss"], run.progress.best_valid_loss
    improved = math.isfinite(loss) and (best is None or loss < best)
    if improved:
        run.progress.best_valid_loss = loss  # the same on every rank: the loss is all-reduced
    if run.log is not None:
        run.log.write(run.progress.step, metrics)
        if improved:
            save_checkpoint(
                run.model,
                run.output_dir / "best.safetensors",
                config=to_dict(run.cfg),
                metadata={"step": run.progress.step, "valid_loss": loss},
            )
    return loss
