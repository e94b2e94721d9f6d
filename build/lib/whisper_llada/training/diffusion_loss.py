"""Masked-diffusion training losses: Whisper-LLaDA's plain masked CE and LLaDA SFT's 1/p-weighted CE.

One training step on the answer region of a batch (B rows, L answer tokens):

    answer_ids = pad_answers(token_lists, eos_id, end="batch_padding")      # (B, L)
    masked, p_mask = sample_mask(answer_ids, kind="whisper_llada")          # (B, L), (B,)
    noisy = apply_mask(answer_ids, masked, mask_id)                         # (B, L)
    logits = <model over prompt + audio + noisy answer>[:, -L:]             # (B, L, V)
    loss = diffusion_loss(logits, answer_ids, masked, p_mask, kind="whisper_llada")

The two kinds (the LLaDA SFT guideline and the Whisper-LLaDA authors' code):
- "whisper_llada": t ~ U(0, 1) per row, each answer token masked with probability t, loss =
  plain mean cross-entropy over the masked tokens of the batch (no 1/p weighting).
- "llada_sft": p = (1 - eps) t + eps, loss = sum over masked tokens of CE / p, divided by the
  answer length L and the batch size B (LLaDA's SFT guideline; an unbiased ELBO estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F

LossKind = Literal["whisper_llada", "llada_sft"]
AnswerEnd = Literal["batch_padding", "eos"]

LOSS_KINDS: tuple[str, ...] = get_args(LossKind)
ANSWER_ENDS: tuple[str, ...] = get_args(AnswerEnd)
DEFAULT_EPS = 1e-3  # LLaDA SFT and dLLM-ASR: smallest mask probability
FULL_MASK_P = 1.0  # p_mask reported for a batch whose every answer token is masked


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}: choose one of {', '.join(LOSS_KINDS)}")


def pad_answers(
    token_lists: Sequence[Sequence[int]], eos_id: int, *, end: AnswerEnd
) -> torch.Tensor:
    """Right-pad every answer with EOS into one (B, L) long tensor; the padding is a target.

    Args:
        token_lists: B answers as token ids (already ending with an end-of-turn token if the
            caller wants one, as dLLM-ASR does).
        eos_id: the EOS / PAD token id (from the tokenizer).
        end: "batch_padding" pads to the longest answer, so that answer gets no EOS at all
            (the Whisper-LLaDA authors' behaviour); "eos" pads to the longest answer + 1, so
            every row ends with at least one EOS and the model always sees where text ends.

    Returns:
        (B, L) long tensor on the CPU.
    """
    if end not in ANSWER_ENDS:
        raise ValueError(f"unknown answer end {end!r}: choose one of {', '.join(ANSWER_ENDS)}")
    if len(token_lists) == 0:
        raise ValueError("pad_answers got an empty batch: pass at least one answer")
    longest = max(len(tokens) for tokens in token_lists)
    length = longest + 1 if end == "eos" else longest
    if length == 0:
        raise ValueError(
            "every answer is empty, so end='batch_padding' leaves no token to train on: "
            "use end='eos' or drop the empty answers"
        )
    answer_ids = torch.full((len(token_lists), length), eos_id, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        answer_ids[row, : len(tokens)] = torch.as_tensor(list(tokens), dtype=torch.long)
    return answer_ids


def sample_mask(
    answer_ids: torch.Tensor,
    *,
    kind: LossKind,
    eps: float = DEFAULT_EPS,
    full_mask_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw which answer tokens to mask, one noise level per row.

    "whisper_llada" masks each token with probability t ~ U(0, 1) (eps is ignored);
    "llada_sft" with p = (1 - eps) t + eps. With probability `full_mask_prob` the whole batch
    is masked instead and p_mask is 1 (dLLM-ASR uses 0.2). A row that drew no masked token gets
    one uniformly chosen masked position, so the loss is never empty. All randomness comes from
    `generator` (which must live on answer_ids' device), and nothing syncs with the host.

    Args:
        answer_ids: (B, L) answer token ids; only the shape and device are used.
        kind: which objective the mask is for.
        eps: smallest mask probability for "llada_sft", in (0, 1).
        full_mask_prob: probability, per call, of masking every answer token, in [0, 1].
        generator: random source for reproducible runs; the global one when None.

    Returns:
        masked: (B, L) bool, True where the answer token is replaced by MASK.
        p_mask: (B,) float32, the mask probability each row was drawn with.
    """
    _check_kind(kind)
    if answer_ids.dim() != 2 or answer_ids.shape[1] == 0:
        raise ValueError(
            f"answer_ids must be (B, L) with L >= 1, got shape {tuple(answer_ids.shape)}: "
            "build it with pad_answers"
        )
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    if not 0.0 <= full_mask_prob <= 1.0:
        raise ValueError(f"full_mask_prob must lie in [0, 1], got {full_mask_prob}")
    batch, length = answer_ids.shape
    device = answer_ids.device

    # Every draw is made unconditionally so the random stream does not depend on the data.
    t = torch.rand(batch, generator=generator, device=device)
    p_mask = t if kind == "whisper_llada" else (1.0 - eps) * t + eps
    masked = torch.rand(batch, length, generator=generator, device=device) < p_mask[:, None]

    fallback = torch.randint(length, (batch,), generator=generator, device=device)
    rows = torch.arange(batch, device=device)
    masked[rows, fallback] |= ~masked.any(dim=1)

    mask_all = torch.rand((), generator=generator, device=device) < full_mask_prob
    masked = masked | mask_all
    p_mask = torch.where(mask_all, torch.full_like(p_mask, FULL_MASK_P), p_mask)
    return masked, p_mask.float()


def apply_mask(answer_ids: torch.Tensor, masked: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The noisy answer: (B, L) ids with every masked position replaced by `mask_id`."""
    if masked.shape != answer_ids.shape:
        raise ValueError(
            f"masked has shape {tuple(masked.shape)} but answer_ids has "
            f"{tuple(answer_ids.shape)}: draw the mask from the same answer_ids"
        )
    return torch.where(masked, torch.full_like(answer_ids, mask_id), answer_ids)


def diffusion_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    masked: torch.Tensor,
    p_mask: torch.Tensor,
    *,
    kind: LossKind,
) -> torch.Tensor:
    """Masked-diffusion cross-entropy over the answer region, accumulated in float32.

    Only the masked positions are gathered before the softmax, so memory grows with the number
    of masked tokens, not with B x L x V.

    Args:
        logits: (B, L, V) model outputs at the answer positions, any float dtype.
        targets: (B, L) the clean answer ids (EOS padding included).
        masked: (B, L) bool, from sample_mask.
        p_mask: (B,) the rows' mask probabilities, from sample_mask (used by "llada_sft").
        kind: "whisper_llada" (mean CE over masked tokens) or "llada_sft"
            (sum of CE / p_mask over masked tokens, divided by L and by B).

    Returns:
        Scalar float32 loss.
    """
    _check_kind(kind)
    if logits.dim() != 3 or logits.shape[:2] != targets.shape or masked.shape != targets.shape:
        raise ValueError(
            f"expected logits (B, L, V), targets (B, L) and masked (B, L), got "
            f"{tuple(logits.shape)}, {tuple(targets.shape)} and {tuple(masked.shape)}: "
            "slice the logits to the answer positions"
        )
    if p_mask.shape != targets.shape[:1]:
        raise ValueError(
            f"p_mask must be (B,) = {tuple(targets.shape[:1])}, got {tuple(p_mask.shape)}"
        )
    batch, length = targets.shape
    rows, cols = masked.nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise ValueError(
            "masked selects no position: draw it with sample_mask, which masks >= 1 per row"
        )
    # float32 before the log-softmax: bf16's 8-bit mantissa is too coarse for a log-sum-exp
    # over the whole vocabulary and for summing many token losses.
    token_ce = F.cross_entropy(logits[rows, cols].float(), targets[rows, cols], reduction="none")
    if kind == "whisper_llada":
        return token_ce.mean()
    return (token_ce / p_mask[rows].float()).sum() / (length * batch)
