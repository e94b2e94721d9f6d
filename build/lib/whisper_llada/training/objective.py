"""Training objective of the composite model: masked-diffusion loss on the answer plus the joint CTC prior loss.

The causal baseline (`WhisperLLaMA`) trains with the next-token cross-entropy on its answer and
end token instead (plus the same CTC loss when it has the head); `training_loss` picks by model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kaldialign
import torch
import torch.nn.functional as F

from whisper_llada.config import LossConfig, ModelConfig
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.ctc import ctc_greedy_decode, ctc_loss
from whisper_llada.models.speech_llm import AudioEncoding, SpeechLLM, WhisperLLaDA
from whisper_llada.training.diffusion_loss import (
    apply_mask,
    diffusion_loss,
    pad_answers,
    sample_mask,
)

ALIGN_GAP = -1  # kaldialign's filler for an unpaired token (token ids are never negative)


@dataclass
class LossOutput:
    """The loss of one batch and its parts (detached), by model kind."""

    total: torch.Tensor  # scalar that is back-propagated
    diffusion: torch.Tensor | None  # Whisper-LLaDA's answer loss; None for the causal model
    ctc: torch.Tensor | None
    masked_tokens: (
        int  # answer tokens the loss scored (all of them, end tokens included, for next_token)
    )
    next_token: torch.Tensor | None = None  # the causal model's answer loss


def answer_token_lists(
    text_ids: Sequence[Sequence[int]], model_cfg: ModelConfig, eot_id: int
) -> list[list[int]]:
    """Answer targets before EOS padding: the transcript, plus <|eot_id|> for dLLM-ASR."""
    suffix = [eot_id] if model_cfg.answer_suffix == "eot" else []
    return [list(ids) + suffix for ids in text_ids]


def batch_audio(model: SpeechLLM, batch: SpeechBatch) -> AudioEncoding:
    """The batch's audio vectors: from its cached encoder frames when it has them, else its log-mels."""
    if batch.encoder_frames is None:
        return model.encode_audio(batch.mel, batch.mel_lengths)
    return model.project_frames(batch.encoder_frames, batch.mel_lengths)


def training_loss(
    model: SpeechLLM,
    batch: SpeechBatch,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """Noise the answers, predict them from audio, and score (Whisper-LLaDA / LLaDA SFT / + CTC).

    For the causal model: `next_token_loss` (`loss_cfg` and `generator` do not apply).
    """
    if isinstance(model, WhisperLLaMA):
        return next_token_loss(model, batch, model_cfg)
    assert isinstance(model, WhisperLLaDA), type(model)
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
    audio = batch_audio(model, batch)
    ctc_logits = model.ctc_logits(audio) if model.ctc_head is not None else None
    noisy = apply_mask(answers, masked, special.mask)
    if loss_cfg.draft_prob > 0:
        if ctc_logits is None:
            raise ValueError("loss.draft_prob > 0 shows the CTC draft: set model.ctc.enabled")
        drafts = ctc_greedy_decode(ctc_logits.detach(), audio.lengths)
        if loss_cfg.draft_alignment == "edit_distance":
            targets = answer_token_lists(batch.text_ids, model_cfg, special.eot)
            drafts = align_drafts(drafts, targets, special.mask)
        noisy = show_drafts(noisy, masked, drafts, loss_cfg.draft_prob, special.mask, generator)
    logits = model.answer_logits(audio, noisy)  # (B, L, V)
    loss = diffusion_loss(logits, answers, masked, p_mask, kind=loss_cfg.kind)
    total, ctc = with_ctc(model, audio, batch, loss, model_cfg, ctc_logits)
    return LossOutput(
        total=total, diffusion=loss.detach(), ctc=ctc, masked_tokens=int(masked.sum())
    )


def show_drafts(
    noisy: torch.Tensor,
    masked: torch.Tensor,
    drafts: Sequence[Sequence[int]],
    share: float,
    mask_id: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masked slots of a random `share` of rows show the row's draft token at that position.

    Slot i of a chosen row shows draft token i; slots past the draft's end keep MASK, as do
    unmasked slots (they show the transcript). Rows are drawn with `generator`.

    Args:
        noisy: (B, L) the answer with masked slots set to `mask_id`.
        masked: (B, L) True where the loss scores the slot.
        drafts: B token lists (the CTC greedy drafts).
    """
    rows, length = noisy.shape
    canvas = torch.full_like(noisy, mask_id)  # (B, L) the drafts, MASK past their ends
    for row, draft in enumerate(drafts):
        tokens = list(draft)[:length]
        canvas[row, : len(tokens)] = torch.tensor(tokens, dtype=noisy.dtype)
    chosen = torch.rand(rows, generator=generator, device=noisy.device) < share  # (B,)
    return torch.where(masked & chosen.unsqueeze(1), canvas, noisy)


def align_drafts(
    drafts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], mask_id: int
) -> list[list[int]]:
    """Each draft laid onto its target's slots by a minimum edit-distance alignment.

    Slot i gets the draft token aligned with target token i (the same word or a substitution),
    or `mask_id` where the draft deleted it; tokens the draft inserted are dropped. So slot i
    never shows a neighbour's word because the draft gained or lost one before it.
    """
    aligned = []
    for draft, target in zip(drafts, targets, strict=True):
        pairs = kaldialign.align(list(target), list(draft), ALIGN_GAP)
        aligned.append(
            [mask_id if hyp == ALIGN_GAP else hyp for ref, hyp in pairs if ref != ALIGN_GAP]
        )
    return aligned


def next_token_loss(model: WhisperLLaMA, batch: SpeechBatch, model_cfg: ModelConfig) -> LossOutput:
    """The causal baseline's loss: cross-entropy of each answer token given audio and the tokens before it.

    The targets are the transcript and <|eot_id|> (so decoding learns to stop), the mean is
    over every target token of the batch.
    """
    eot, pad = model.special.eot, model.special.pad
    device = batch.mel.device
    targets = [[*ids, eot] for ids in batch.text_ids]
    lengths = torch.tensor([len(t) for t in targets], device=device)  # (B,)
    answers = torch.full((len(targets), int(lengths.max())), pad, dtype=torch.long, device=device)
    for row, tokens in enumerate(targets):
        answers[row, : len(tokens)] = torch.tensor(tokens, device=device)  # (B, L)
    audio = batch_audio(model, batch)
    logits = model.next_token_logits(audio, answers, lengths)  # (B, L, V)
    scored = torch.arange(answers.shape[1], device=device) < lengths.unsqueeze(1)  # (B, L)
    # float32 log-softmax, as the diffusion loss and transformers' causal-LM loss compute it
    loss = F.cross_entropy(logits[scored].float(), answers[scored])
    total, ctc = with_ctc(model, audio, batch, loss, model_cfg)
    return LossOutput(
        total=total,
        diffusion=None,
        ctc=ctc,
        masked_tokens=int(scored.sum()),
        next_token=loss.detach(),
    )


def with_ctc(
    model: SpeechLLM,
    audio: AudioEncoding,
    batch: SpeechBatch,
    loss: torch.Tensor,
    model_cfg: ModelConfig,
    ctc_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss + weight x CTC loss, the CTC loss detached) with a CTC head; (loss, None) without.

    `ctc_logits`: the head's output on `audio` when the caller has it already.
    """
    if model.ctc_head is None:
        return loss, None
    if ctc_logits is None:
        ctc_logits = model.ctc_logits(audio)
    ctc = ctc_loss(ctc_logits, audio.lengths, batch.text_ids)
    return loss + model_cfg.ctc.weight * ctc, ctc.detach()
