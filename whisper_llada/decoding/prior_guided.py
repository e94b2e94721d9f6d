"""Prior-guided adaptive denoising (dLLM-ASR): a draft seeds and sizes the canvas, confident positions commit early.

One row's canvas is its prior (the CTC draft, `whisper_llada.models.ctc`), then `margin` MASK slots,
then one EOS: its size follows the draft instead of a fixed 128. Each round is one predictor call
over the active rows; every pending position whose top probability is >= threshold is committed to
its argmax, and always at least the most confident one (early exit). Length-adaptive pruning
(`prune`, see whisper_llada.decoding.diffusion): "first_pass", as the released dLLM-ASR code prunes,
cuts the canvas once, after the first round, right before the first committed EOS (the trailing EOS
at the latest), then decodes every slot left; "every_round" cuts it after every round right after
the first committed end; "none" fills what follows the first committed end with EOS. The answer is
the canvas's non-special tokens. The prompt + audio prefix is the same every round; caching its keys
and values is the predictor's business (it knows the rows through `rows`).

Choices made here where the dLLM-ASR paper is silent (systems.md):
- The trailing EOS is committed from the start: it bounds the answer at prior + margin
  tokens; the model ends earlier by committing an EOS / EOT at any earlier position.
- margin defaults to 4 MASK slots: room for tokens the draft missed; a slot the model does not
  need should be committed as EOS / EOT, which ends the answer there.
- "visible": every prior token stays in the canvas as the current guess and is re-predicted
  every round; until committed it shows the latest argmax (the prior before the first round);
  it commits, to the argmax and not to the prior, only once the confidence in that argmax
  reaches the threshold. MASK slots show MASK until committed (a visible guess there would
  echo the model's own weakest predictions back to it).
- "mask_below": prior tokens whose prior confidence is below prior_confidence_floor start as
  MASK and, like margin slots, show MASK until committed; the others behave as "visible".
  Without prior_confidences every prior token counts as confident (same as "visible").
- Only a committed EOS (or EOT, with eot_ends_answer) ends a row; an uncommitted guess of EOS
  does not prune anything.
- After max_rounds rounds every still-pending position takes its latest argmax. With
  early_exit off exactly one position commits per round (committed tokens never change except
  that the end rule overwrites what lies after a committed end), so a canvas of n pending
  positions needs n rounds.
- Greedy only (argmax, no sampling), so there are no seeds.
Dimensions: B rows, L canvas positions, V vocabulary, R active rows.
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
    Pruning,
    TokenIds,
    apply_end_rule,
    check_pruning,
    result_of,
)
from whisper_llada.decoding.diffusion import (
    MaskPredictor,
    candidates_and_confidence,
    check_threshold,
    commit_top_k,
    predict,
)

PriorTreatment = Literal["visible", "mask_below"]
PRIOR_TREATMENTS: tuple[str, ...] = get_args(PriorTreatment)


def _check_arguments(
    priors: Sequence[Sequence[int]],
    prior_confidences: Sequence[Sequence[float]] | None,
    margin: int,
    threshold: float,
    max_rounds: int,
    prior_treatment: str,
    prior_confidence_floor: float,
) -> None:
    if margin < 0:
        raise ValueError(f"margin must be >= 0 MASK slots, got {margin}")
    if threshold is None:
        raise ValueError("threshold must be a probability in (0, 1], e.g. 0.9, not None")
    check_threshold(threshold)
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if prior_treatment not in PRIOR_TREATMENTS:
        raise ValueError(
            f"unknown prior_treatment {prior_treatment!r}: choose one of "
            f"{', '.join(PRIOR_TREATMENTS)}"
        )
    if not 0.0 <= prior_confidence_floor <= 1.0:
        raise ValueError(f"prior_confidence_floor must lie in [0, 1], got {prior_confidence_floor}")
    if prior_confidences is None:
        return
    if len(prior_confidences) != len(priors):
        raise ValueError(
            f"prior_confidences has {len(prior_confidences)} rows for {len(priors)} priors: "
            "give one list of confidences per prior"
        )
    for row, (prior, confidences) in enumerate(zip(priors, prior_confidences, strict=True)):
        if len(confidences) != len(prior):
            raise ValueError(
                f"prior_confidences[{row}] has {len(confidences)} values for a prior of "
                f"{len(prior)} tokens: give one confidence per prior token"
            )


def _initial_canvas(
    priors: Sequence[Sequence[int]],
    prior_confidences: Sequence[Sequence[float]] | None,
    *,
    ids: TokenIds,
    margin: int,
    mask_unsure: bool,
    floor: float,
    device: torch.device | str,
) -> tuple[Canvas, Tensor]:
    """Canvas prior + margin MASKs + committed EOS, and (B, L) bool `hidden`: shows MASK until committed."""
    rows = [[*prior, *[ids.mask] * margin, ids.eos] for prior in priors]
    canvas = Canvas.from_rows(rows, pad=ids.pad, device=device)
    positions = canvas.positions()
    prior_lengths = torch.tensor([len(p) for p in priors], dtype=torch.long, device=device)
    canvas.pending = positions < (canvas.lengths - 1)[:, None]  # all but the trailing EOS
    hidden = canvas.pending & (positions >= prior_lengths[:, None])  # the margin slots
    if mask_unsure and prior_confidences is not None:
        confidence = torch.ones(canvas.tokens.shape, dtype=torch.float64, device=device)
        for row, values in enumerate(prior_confidences):
            confidence[row, : len(values)] = torch.as_tensor(list(values), dtype=torch.float64)
        hidden |= canvas.pending & (confidence < floor)
    canvas.tokens[hidden] = ids.mask
    return canvas, hidden


@dataclass(frozen=True)
class PriorGuidedOptions:
    """dLLM-ASR's prior-guided decoding settings (the decode.* keys of the same names; defaults: the released code).

    Attributes:
        margin: MASK slots after the prior, >= 0.
        threshold: tau in (0, 1]; a pending position commits once its top probability >= tau.
        prune: "first_pass", "every_round" or "none" (module docstring).
        eot_ends_answer: EOT ends the answer as EOS does.
        max_rounds: most predictor calls per row, >= 1.
        prior_treatment: "visible" or "mask_below".
        prior_confidence_floor: prior tokens below it start as MASK under "mask_below".
        early_exit: False commits exactly one position per round (no threshold commits).
    """

    margin: int = 4
    threshold: float = 0.9
    prune: Pruning = "first_pass"
    eot_ends_answer: bool = False
    max_rounds: int = 32
    prior_treatment: PriorTreatment = "visible"
    prior_confidence_floor: float = 0.5
    early_exit: bool = True


def prior_guided_decode(
    predictor: MaskPredictor,
    priors: Sequence[Sequence[int]],
    options: PriorGuidedOptions = PriorGuidedOptions(),
    *,
    ids: TokenIds,
    prior_confidences: Sequence[Sequence[float]] | None = None,
    device: torch.device | str = "cpu",
) -> DecodeResult:
    """dLLM-ASR's decoding: canvas = prior + margin MASKs + EOS, confidence-threshold commits, pruning.

    See the module docstring for the rules and the choices made where the paper is silent.

    Args:
        predictor: the mask predictor, called once per round with all active rows.
        priors: B draft token lists (no EOS), e.g. CTC greedy hypotheses; may be empty.
        ids: special token ids.
        prior_confidences: B lists, one confidence per prior token (for "mask_below").
        options: the settings (`PriorGuidedOptions`).
        device: where the canvas lives (the predictor's device).

    Returns:
        DecodeResult: the canvases' non-special tokens; passes <= max_rounds per row.
    """
    _check_arguments(
        priors,
        prior_confidences,
        options.margin,
        options.threshold,
        options.max_rounds,
        options.prior_treatment,
        options.prior_confidence_floor,
    )
    check_pruning(options.prune)
    canvas, hidden = _initial_canvas(
        priors,
        prior_confidences,
        ids=ids,
        margin=options.margin,
        mask_unsure=options.prior_treatment == "mask_below",
        floor=options.prior_confidence_floor,
        device=device,
    )
    guesses = canvas.tokens.clone()  # (B, L) latest argmax at every pending position
    for _ in range(options.max_rounds):
        active = canvas.pending.any(dim=1).nonzero().squeeze(1)  # (R,)
        if active.numel() == 0:
            break
        logits = predict(predictor, canvas, active)  # (R, L', V)
        width = logits.shape[1]
        candidates, confidence = candidates_and_confidence(logits, canvas.lengths[active])
        pending = canvas.pending[active, :width]
        confidence = confidence.masked_fill(~pending, -torch.inf)
        if options.early_exit:
            k = (confidence >= options.threshold).sum(dim=1).clamp(min=1)
        else:
            k = torch.ones(len(active), dtype=torch.long, device=confidence.device)
        commit = commit_top_k(confidence, k)
        guesses[active, :width] = torch.where(pending, candidates, guesses[active, :width])
        shown = commit | (pending & ~hidden[active, :width])
        canvas.tokens[active, :width] = torch.where(
            shown, candidates, canvas.tokens[active, :width]
        )
        canvas.pending[active, :width] = pending & ~commit
        apply_end_rule(
            canvas, active, ids, prune=options.prune, eot_ends_answer=options.eot_ends_answer
        )
    canvas.tokens = torch.where(canvas.pending, guesses, canvas.tokens)
    return result_of(canvas, ids)
