"""Diffusion decoding: the LLaDA sampler over a mask predictor, with the authors' EOS rule and dLLM-ASR's options.

Every decoder works over a *mask predictor* (`MaskPredictor`), a callable from answer canvases to
logits: no model class, so fake predictors test them and the composite model plugs in through one
closure (which also owns each row's cached prompt + audio prefix). `diffusion_decode` is the
Whisper-LLaDA authors' `decoding` mode (diffusion or semi-AR), batched with per-row schedules,
randomness and ends, plus dLLM-ASR's `threshold` and `prune` as options.
`whisper_llada.decoding.deliberation` and `whisper_llada.decoding.prior_guided` reuse the building
blocks defined here (`predict`, `candidates_and_confidence`, `commit_top_k`, `denoise`); the canvas,
the end rule, pruning and the read-off live in `whisper_llada.decoding.canvas`.

Dimensions: B rows, L canvas positions (answer tokens), V vocabulary, R active rows (<= B).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from whisper_llada.decoding.canvas import (
    Canvas,
    DecodeResult,
    Pruning,
    TokenIds,
    apply_end_rule,
    check_pruning,
    result_of,
)

MaskPredictor = Callable[[Tensor, Tensor, Tensor], Tensor]
"""predictor(rows, canvas, lengths) -> logits.

rows: (R,) long, which rows of the original batch these are (finished rows leave the
    computation; the predictor uses `rows` to pick the matching audio / cached prefix).
canvas: (R, L) long answer tokens, MASK where unknown; positions >= lengths[r] are padding the
    predictor must treat as absent (key padding); their logits are ignored.
lengths: (R,) long real canvas length per row.
Returns (R, L, V) float logits at the canvas positions.
"""

Remasking = Literal["low_confidence", "random"]
REMASKINGS: tuple[str, ...] = get_args(Remasking)
# LLaDA samples with Gumbel-max in float64: in lower precision the noise is too coarse and
# sampling quality drops. Random-remasking confidences are float64 too, so ties cannot happen.
NOISE_DTYPE = torch.float64


def check_threshold(threshold: float | None) -> None:
    """Raise ValueError unless threshold is None or lies in (0, 1]."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"threshold must lie in (0, 1], got {threshold}: it is the confidence (a "
            "probability) a position needs to be committed early, e.g. 0.9"
        )


def row_generators(
    batch_size: int, row_seeds: Sequence[int] | None, device: torch.device | str
) -> list[torch.Generator]:
    """One generator per row, seeded with row_seeds[b] (with b itself when row_seeds is None)."""
    seeds = list(range(batch_size)) if row_seeds is None else list(row_seeds)
    if len(seeds) != batch_size:
        raise ValueError(
            f"row_seeds has {len(seeds)} seeds for {batch_size} rows: pass one stable seed per "
            "utterance (or None for seeds 0..B-1)"
        )
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def predict(predictor: MaskPredictor, canvas: Canvas, active: Tensor) -> Tensor:
    """One call over the rows `active` (R,), trimmed to their longest length L'; counts the pass.

    Returns (R, L', V) logits; raises ValueError for logits of another shape or device.
    """
    lengths = canvas.lengths[active]
    width = int(lengths.max())
    logits = predictor(active, canvas.tokens[active, :width], lengths)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (len(active), width):
        raise ValueError(
            f"the mask predictor returned logits of shape {tuple(logits.shape)} for a canvas of "
            f"shape ({len(active)}, {width}): it must return (R, L, V) logits, one vector per "
            "canvas position"
        )
    if logits.device != canvas.tokens.device:
        raise ValueError(
            f"the mask predictor returned logits on {logits.device} but the canvas lives on "
            f"{canvas.tokens.device}: pass device={str(logits.device)!r} to the decoder"
        )
    canvas.passes[active] += 1
    return logits


def candidates_and_confidence(
    logits: Tensor,
    lengths: Tensor,
    *,
    temperature: float = 0.0,
    remasking: Remasking = "low_confidence",
    generators: Sequence[torch.Generator] | None = None,
) -> tuple[Tensor, Tensor]:
    """The token each position would take and how sure the sampler is of it (LLaDA's step).

    Candidate: argmax of the logits (temperature 0) or Gumbel-max in float64 as LLaDA samples:
    argmax of exp(logits) / (-log U) ** temperature, U ~ U(0, 1) of shape (length, V) per row.
    Confidence: the softmax probability of the candidate ("low_confidence"; softmax in at least
    float32) or U(0, 1) of shape (length,) per row ("random"). Row r draws from generators[r]
    (Gumbel noise first) over its real positions only, so its draws ignore the other rows.

    Args: logits (R, L, V); lengths (R,), positions beyond get arbitrary values; generators, R
    of them, needed for temperature > 0 or "random".
    Returns: candidates (R, L) long, confidence (R, L) float.
    """
    candidates = logits.argmax(dim=-1)  # (R, L)
    needs_noise = temperature > 0 or remasking == "random"
    sizes = lengths.tolist() if needs_noise else []
    if needs_noise and (generators is None or len(generators) != len(sizes)):
        raise ValueError(
            "sampling with temperature > 0 or random remasking needs one generator per row"
        )
    if temperature > 0:
        for row, (generator, size) in enumerate(zip(generators, sizes, strict=True)):
            real = logits[row, :size].to(NOISE_DTYPE)  # (L_r, V)
            noise = torch.rand(
                real.shape, generator=generator, dtype=NOISE_DTYPE, device=real.device
            )
            gumbel = (-torch.log(noise)) ** temperature
            candidates[row, :size] = (real.exp() / gumbel).argmax(dim=-1)
    if remasking == "low_confidence":
        work = torch.promote_types(logits.dtype, torch.float32)
        probs = torch.softmax(logits.to(work), dim=-1)  # (R, L, V)
        confidence = probs.gather(-1, candidates[..., None]).squeeze(-1)  # (R, L)
    else:
        confidence = torch.zeros(candidates.shape, dtype=NOISE_DTYPE, device=logits.device)
        for row, (generator, size) in enumerate(zip(generators, sizes, strict=True)):
            confidence[row, :size] = torch.rand(
                size, generator=generator, dtype=NOISE_DTYPE, device=logits.device
            )
    return candidates, confidence


def commit_top_k(confidence: Tensor, k: Tensor) -> Tensor:
    """(R, L) bool: each row's k[r] most confident positions, by one sort (ties: leftmost first).

    confidence is (R, L), -inf where a position may not be committed (never selected while
    k[r] does not exceed the finite ones); k is (R,) long.
    """
    order = confidence.argsort(dim=1, descending=True, stable=True)  # (R, L)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks < k[:, None]


def scheduled_commits(block_pending: Tensor, steps: int, step: Tensor) -> Tensor:
    """LLaDA's schedule: M pending tokens over s steps commit M // s each, +1 in the first M % s steps.

    block_pending (R,) is M at the start of each row's block, step (R,) the step within it.
    """
    return block_pending // steps + (step < block_pending % steps).long()


def denoise(
    predictor: MaskPredictor,
    canvas: Canvas,
    *,
    ids: TokenIds,
    block_length: int,
    steps_per_block: int,
    temperature: float = 0.0,
    remasking: Remasking = "low_confidence",
    threshold: float | None = None,
    end_rule: bool = False,
    prune: Pruning = "none",
    eot_ends_answer: bool = False,
    generators: Sequence[torch.Generator] | None = None,
) -> None:
    """Commit every pending position of the canvas, block by block, with LLaDA's sampler (in place).

    A row's current block is the block (of block_length absolute positions) holding its first
    pending position; blocks are denoised left to right and a block without pending positions
    is skipped. At the start of a block with M pending positions the row follows the LLaDA
    schedule over s = steps_per_block steps; steps that would commit nothing (M < s) are
    skipped, so a block takes min(s, M) predictor calls. Each step every active row takes part
    in one predictor call and commits its k most confident pending positions of the block.
    With `threshold` it commits max(k, #positions with confidence >= threshold), so a block
    never takes more than its share of steps. With `end_rule` the end rule of `prune`
    (`apply_end_rule`) follows every step; if it empties the block, the row moves on at once.
    A row leaves the computation as soon as nothing is pending.

    Args:
        canvas: state to update; tokens at pending positions are shown to the predictor as is.
        block_length: positions per block (the canvas width for a single block).
        steps_per_block: s >= 1.
        generators: one per canvas row (B), for temperature > 0 or random remasking.
    """
    batch = canvas.tokens.shape[0]
    device = canvas.tokens.device
    current_block = torch.full((batch,), -1, dtype=torch.long, device=device)
    block_pending = torch.zeros(batch, dtype=torch.long, device=device)
    step = torch.zeros(batch, dtype=torch.long, device=device)
    positions = canvas.positions()
    while True:
        active = canvas.pending.any(dim=1).nonzero().squeeze(1)  # (R,)
        if active.numel() == 0:
            return
        pending = canvas.pending[active]  # (R, L)
        block = pending.int().argmax(dim=1) // block_length
        start = (block * block_length)[:, None]
        eligible = pending & (positions >= start) & (positions < start + block_length)
        count = eligible.sum(dim=1)
        fresh = block != current_block[active]
        block_pending[active] = torch.where(fresh, count, block_pending[active])
        step[active] = torch.where(fresh, 0, step[active])
        current_block[active] = block

        logits = predict(predictor, canvas, active)
        width = logits.shape[1]
        active_generators = None if generators is None else [generators[r] for r in active.tolist()]
        candidates, confidence = candidates_and_confidence(
            logits,
            canvas.lengths[active],
            temperature=temperature,
            remasking=remasking,
            generators=active_generators,
        )
        eligible = eligible[:, :width]
        confidence = confidence.masked_fill(~eligible, -math.inf)
        k = scheduled_commits(block_pending[active], steps_per_block, step[active])
        if threshold is not None:
            k = torch.maximum(k, (confidence >= threshold).sum(dim=1))
        commit = commit_top_k(confidence, torch.minimum(k, count).clamp(min=1))
        canvas.tokens[active, :width] = torch.where(
            commit, candidates, canvas.tokens[active, :width]
        )
        canvas.pending[active, :width] = pending[:, :width] & ~commit
        step[active] += 1
        if end_rule:
            apply_end_rule(canvas, active, ids, prune=prune, eot_ends_answer=eot_ends_answer)


def _check_decode_arguments(
    batch_size: int,
    gen_len: int,
    steps: int,
    block_length: int,
    temperature: float,
    remasking: str,
    threshold: float | None,
) -> None:
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if min(gen_len, block_length, steps) < 1:
        raise ValueError(
            f"gen_len, block_length, steps must be >= 1: {gen_len, block_length, steps}"
        )
    if gen_len % block_length != 0:
        raise ValueError(
            f"block_length ({block_length}) must divide gen_len ({gen_len}): use "
            "block_length = gen_len for diffusion decoding or a divisor of it for semi-AR"
        )
    num_blocks = gen_len // block_length
    if steps % num_blocks != 0:
        raise ValueError(
            f"steps ({steps}) must be divisible by the number of blocks, gen_len / block_length "
            f"= {num_blocks}: every block gets the same number of steps"
        )
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if remasking not in REMASKINGS:
        raise ValueError(f"unknown remasking {remasking!r}: choose one of {', '.join(REMASKINGS)}")
    check_threshold(threshold)
    if threshold is not None and remasking != "low_confidence":
        raise ValueError(
            "threshold compares model confidences, so it needs remasking='low_confidence'"
        )


@dataclass(frozen=True)
class DiffusionOptions:
    """The `decoding` mode's settings (the decode.* keys of the same names; defaults: the authors' code)."""

    gen_len: int = 128
    steps: int = 128
    block_length: int = 128
    temperature: float = 0.0
    remasking: Remasking = "low_confidence"
    threshold: float | None = None
    prune: Pruning = "none"
    eot_ends_answer: bool = False


def diffusion_decode(
    predictor: MaskPredictor,
    batch_size: int,
    options: DiffusionOptions = DiffusionOptions(),
    *,
    ids: TokenIds,
    row_seeds: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> DecodeResult:
    """The authors' `decoding` mode: LLaDA's sampler from gen_len MASKs, batched, with their EOS rule.

    Schedule: gen_len is split into blocks of block_length (== gen_len: diffusion; smaller:
    semi-AR), steps evenly over the blocks; a block with M masks and s steps commits M // s
    tokens per step plus one in the first M % s steps (steps that would commit nothing, when
    steps > block_length, are skipped). Each step: candidate = argmax or Gumbel-max, confidence
    = its probability or U(0, 1), the top-k masked positions of the current block are
    committed; committed tokens are never re-masked. So without an early end a row takes
    exactly min(steps, gen_len) predictor calls.

    EOS rule (the authors', prune="none", applied per row after every step): let e be the
    first committed EOS of the row (or EOT, with eot_ends_answer); every position after e
    becomes a committed EOS, even one committed before (so only the context the predictor sees
    changes). Those positions are no longer pending, so all later blocks are skipped; the row
    still finishes its current block (the masks left of e keep the block's schedule, capped at
    what is left) and is done when no MASK remains before e. A later EOS committed left of e
    moves e left.

    Options (`DiffusionOptions`): `threshold` tau commits every masked position of the block whose
    confidence is >= tau, and never fewer than the schedule's k (hence at least the most confident
    one): steps become data dependent and `steps` only an upper bound (with steps == gen_len the
    floor is one token, Fast-dLLM's rule). `prune="first_pass"` is the released dLLM-ASR code (with
    gen_len 256, block_length 128, steps 256, threshold 0.9): after the first step the canvas is cut
    right before e, then every slot left is decoded, no end rule. `prune="every_round"` cuts the
    canvas right after e after every step instead of filling it with EOS. Both make later calls see
    shorter canvases. A block emptied by a cut costs no call (the released code spends one pass on
    it: pass counts only, never tokens).

    Args:
        predictor: the mask predictor, called once per step with all active rows.
        batch_size: B; the predictor gets `rows` in 0..B-1.
        options: gen_len (L, the answer canvas), steps, block_length, temperature (0 = greedy;
            > 0 = Gumbel-max sampling), remasking ("low_confidence" or "random"), threshold,
            prune, eot_ends_answer: the rules above.
        ids: special token ids.
        row_seeds: B seeds, one generator per row (0..B-1 when None): a row decodes the same
            alone as in any batch.
        device: where the canvas, the random draws and the bookkeeping live (the predictor's).

    Returns:
        DecodeResult: B answers (the canvases' non-special tokens), pass counts, canvases.
    """
    _check_decode_arguments(
        batch_size,
        options.gen_len,
        options.steps,
        options.block_length,
        options.temperature,
        options.remasking,
        options.threshold,
    )
    check_pruning(options.prune)
    generators = row_generators(batch_size, row_seeds, device)
    canvas = Canvas.from_rows(
        [[ids.mask] * options.gen_len] * batch_size, pad=ids.pad, device=device
    )
    canvas.pending[:] = True
    denoise(
        predictor,
        canvas,
        ids=ids,
        block_length=options.block_length,
        steps_per_block=options.steps // (options.gen_len // options.block_length),
        temperature=options.temperature,
        remasking=options.remasking,
        threshold=options.threshold,
        end_rule=True,
        prune=options.prune,
        eot_ends_answer=options.eot_ends_answer,
        generators=generators,
    )
    return result_of(canvas, ids)
