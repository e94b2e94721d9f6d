"""Training objective of the composite model: masked-diffusion loss on the answer plus the joint CTC prior loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from whisper_llada.config import LossConfig, ModelConfig
from whisper_llada.ctc import ctc_loss
from whisper_llada.diffusion_loss import apply_mask, diffusion_loss, pad_answers, sample_mask
from whisper_llada.model import WhisperLLaDA


@dataclass
class SpeechBatch:
    """What one training or validation step consumes."""

    mel: torch.Tensor  # (B, n_mels, T)
    mel_lengths: torch.Tensor  # (B,)
    text_ids: list[list[int]]  # transcript tokens per utterance, no special tokens


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar that is back-propagated
    diffusion: torch.Tensor
    ctc: torch.Tensor | None
    masked_tokens: int


def answer_token_lists(
    text_ids: Sequence[Sequence[int]], model_cfg: ModelConfig, eot_id: int
) -> list[list[int]]:
    """Answer targets before EOS padding: the transcript, plus <|eot_id|> for dLLM-ASR."""
    suffix = [eot_id] if model_cfg.answer_suffix == "eot" else []
    return [list(ids) + suffix for ids in text_ids]


def training_loss(
    model: WhisperLLaDA,
    batch: SpeechBatch,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """Noise the answers, predict them from audio, and score (Whisper-LLaDA / LLaDA SFT / + CTC)."""
    special = model.special
    device = batch.mel.device
    answers = pad_answers(
        answer_token_lists(batch.text_ids, model_cfg, special.eot),
        special.eos,
        end=loss_cfg.answer_end,
    ).to(device)  # (B, L)
    masked, p_mask = sample_mask(
        answers,
        kind=loss_cfg.kind,
        eps=loss_cfg.eps,
        full_mask_prob=loss_cfg.full_mask_prob,
        generator=generator,
    )
    audio = model.encode_audio(batch.mel, batch.mel_lengths)
    logits = model.answer_logits(audio, apply_mask(answers, masked, special.mask))  # (B, L, V)
    loss = diffusion_loss(logits, answers, masked, p_mask, kind=loss_cfg.kind)
    ctc = None
    total = loss
    if model.ctc_head is not None:
        ctc = ctc_loss(model.ctc_logits(audio), audio.lengths, batch.text_ids)
        total = loss + model_cfg.ctc.weight * ctc
    return LossOutput(
        total=total,
        diffusion=loss.detach(),
        ctc=None if ctc is None else ctc.detach(),
        masked_tokens=int(masked.sum()),
    )
