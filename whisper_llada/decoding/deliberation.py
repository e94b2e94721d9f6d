"""Deliberation: the authors' two modes that re-mask part of a first-pass transcript and let the diffusion LLM correct it.

Both start from a first-pass transcript per row (e.g. Whisper-LLaMA's, or a CTC draft) whose
token count fixes the canvas length, mask part of it and unmask with LLaDA's low-confidence
sampler at temperature 0 (`whisper_llada.decoding.diffusion.denoise`):

- `diffusion_deliberation` masks int(len * mask_ratio) positions at once, chosen at random or
  where the model finds the first-pass token least likely;
- `semi_ar_deliberation` masks one chunk at a time, left to right.

The canvas length never changes and no end rule applies: one slot, one word, as in the paper.
Like every decoder the answer is the canvas's non-special tokens (the authors' read-off), so an
EOS committed in a masked slot deletes only that word.

Deliberate differences from the authors' code, which raises ZeroDivisionError in both cases:
a row with int(len * mask_ratio) == 0 masks nothing and returns its first pass (0 passes), and
semi-AR deliberation with steps < num_chunks is a ValueError before anything runs.
Dimensions: B rows, L canvas positions (first-pass tokens), V vocabulary, R active rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from whisper_llada.decoding.canvas import (
    Canvas,
    DecodeResult,
    TokenIds,
    result_of,
)
from whisper_llada.decoding.diffusion import (
    MaskPredictor,
    commit_top_k,
    denoise,
    predict,
    row_generators,
)

MaskingType = Literal["random", "low_confidence"]
MASKING_TYPES: tuple[str, ...] = get_args(MaskingType)


def _random_positions(canvas: Canvas, counts: Tensor, generators: list[torch.Generator]) -> Tensor:
    """(B, L) bool: counts[b] positions per row, uniformly without replacement (row b's generator)."""
    chosen = torch.zeros_like(canvas.pending)
    for row, (count, length) in enumerate(
        zip(counts.tolist(), canvas.lengths.tolist(), strict=True)
    ):
        if count > 0:
            order = torch.randperm(length, generator=generators[row], device=chosen.device)
            chosen[row, order[:count]] = True
    return chosen


def _least_likely_positions(
    predictor: MaskPredictor, canvas: Canvas, counts: Tensor, ids: TokenIds
) -> Tensor:
    """(B, L) bool: the counts[b] positions whose first-pass token is least probable.

    One scoring call (counted as a pass) over the rows with counts > 0; its canvas holds PAD at
    every position, as in the authors' code, and a token's score is its softmax probability.
    """
    chosen = torch.zeros_like(canvas.pending)
    scored = (counts > 0).nonzero().squeeze(1)  # (R,)
    if scored.numel() == 0:
        return chosen
    blank = Canvas(
        torch.full_like(canvas.tokens, ids.pad), canvas.pending, canvas.lengths, canvas.passes
    )
    logits = predict(predictor, blank, scored)  # (R, L', V)
    width = logits.shape[1]
    work = torch.promote_types(logits.dtype, torch.float32)
    first_pass = canvas.tokens[scored, :width]  # (R, L')
    probs = torch.softmax(logits.to(work), dim=-1).gather(-1, first_pass[..., None]).squeeze(-1)
    inside = canvas.positions()[:, :width] < canvas.lengths[scored, None]
    # Lowest probability first = most "confident" under the negated score; padding never chosen.
    score = (-probs).masked_fill(~inside, -torch.inf)
    chosen[scored, :width] = commit_top_k(score, counts[scored])
    return chosen


@dataclass(frozen=True)
class DeliberationOptions:
    """`diffusion_deliberation`'s settings (the decode.* keys of the same names)."""

    mask_ratio: float = 0.3
    masking_type: MaskingType = "random"
    steps: int = 64


def diffusion_deliberation(
    predictor: MaskPredictor,
    first_pass: Sequence[Sequence[int]],
    options: DeliberationOptions = DeliberationOptions(),
    *,
    ids: TokenIds,
    row_seeds: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> DecodeResult:
    """Mask int(len * mask_ratio) first-pass tokens per row, then unmask them with min(steps, #masks) steps.

    "random" masks positions uniformly at random (row b's generator, seeded row_seeds[b]);
    "low_confidence" masks the first-pass tokens with the lowest probability under one extra
    scoring pass whose canvas is all PAD (it counts as a forward pass). Unmasking is LLaDA's
    low-confidence sampler at temperature 0 with the whole canvas as one block and the LLaDA
    schedule over the masks. Rows with no mask (int(len * mask_ratio) == 0, e.g. a short or
    empty first pass) are never sent to the predictor, not even for scoring: they return
    their first pass unchanged (without special tokens) with 0 passes.

    Args:
        predictor: the mask predictor.
        first_pass: B first-pass token lists (no EOS); each fixes its row's canvas length.
        options: mask_ratio (fraction of each row to mask, in [0, 1]), masking_type ("random"
            or "low_confidence"), steps (most unmasking steps per row, >= 1).
        row_seeds: B seeds for "random" masking (0..B-1 when None).
        device: where the canvas lives (the predictor's device).

    Returns:
        DecodeResult: passes = (1 scoring pass if "low_confidence") + min(steps, #masks).
    """
    if not 0.0 <= options.mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1], got {options.mask_ratio}")
    if options.masking_type not in MASKING_TYPES:
        raise ValueError(
            f"unknown masking_type {options.masking_type!r}: choose one of {', '.join(MASKING_TYPES)}"
        )
    if options.steps < 1:
        raise ValueError(f"steps must be >= 1, got {options.steps}")
    generators = row_generators(len(first_pass), row_seeds, device)
    canvas = Canvas.from_rows(first_pass, pad=ids.pad, device=device)
    counts = torch.tensor(
        [int(len(tokens) * options.mask_ratio) for tokens in first_pass],
        dtype=torch.long,
        device=device,
    )
    if options.masking_type == "random":
        to_mask = _random_positions(canvas, counts, generators)
    else:
        to_mask = _least_likely_positions(predictor, canvas, counts, ids)
    canvas.tokens[to_mask] = ids.mask
    canvas.pending = to_mask
    denoise(
        predictor,
        canvas,
        ids=ids,
        block_length=max(canvas.tokens.shape[1], 1),
        steps_per_block=options.steps,
    )
    return result_of(canvas, ids)


@dataclass(frozen=True)
class SemiARDeliberationOptions:
    """`semi_ar_deliberation`'s settings (the decode.* keys of the same names)."""

    num_chunks: int = 4
    steps: int = 64


def semi_ar_deliberation(
    predictor: MaskPredictor,
    first_pass: Sequence[Sequence[int]],
    options: SemiARDeliberationOptions = SemiARDeliberationOptions(),
    *,
    ids: TokenIds,
    device: torch.device | str = "cpu",
) -> DecodeResult:
    """Re-decode the first pass chunk by chunk: mask one chunk, unmask it, keep it, go right.

    A row of n tokens is split into num_chunks chunks of n // num_chunks tokens, the last one
    taking the remainder; chunk c is masked with everything else visible (chunks before it
    already corrected, chunks after it still first-pass) and unmasked with steps // num_chunks
    steps of LLaDA's low-confidence sampler at temperature 0 (LLaDA schedule over the chunk;
    a chunk shorter than that commits one token per step and ends early). All rows denoise
    chunk c together. Rows shorter than num_chunks have empty chunks, which are skipped: the
    last chunk is then the whole row. An empty first pass gives an empty result, 0 passes.

    Args:
        predictor: the mask predictor.
        first_pass: B first-pass token lists; each fixes its row's canvas length.
        options: num_chunks (>= 1), steps (the total step budget, at least num_chunks: each
            chunk gets steps // num_chunks).
        device: where the canvas lives (the predictor's device).

    Returns:
        DecodeResult: passes = sum over chunks of min(steps // num_chunks, chunk size).
    """
    if options.num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {options.num_chunks}")
    if options.steps < options.num_chunks:
        raise ValueError(
            f"steps ({options.steps}) must be at least num_chunks ({options.num_chunks}): each chunk gets "
            "steps // num_chunks steps"
        )
    canvas = Canvas.from_rows(first_pass, pad=ids.pad, device=device)
    chunk_size = (canvas.lengths // options.num_chunks)[:, None]  # (B, 1)
    positions = canvas.positions()
    for chunk in range(options.num_chunks):
        start = chunk * chunk_size
        end = canvas.lengths[:, None] if chunk == options.num_chunks - 1 else start + chunk_size
        in_chunk = (positions >= start) & (positions < end)  # (B, L)
        canvas.tokens[in_chunk] = ids.mask
        canvas.pending = in_chunk
        denoise(
            predictor,
            canvas,
            ids=ids,
            block_length=max(canvas.tokens.shape[1], 1),
            steps_per_block=options.steps // options.num_chunks,
        )
    return result_of(canvas, ids)
