"""The decoding canvas and how an answer ends: rows of answer tokens, the end rule, pruning, the read-off.

Every decoder (decoding.py, deliberation.py, prior_guided.py) keeps its state in a `Canvas` and
returns a `DecodeResult` read off it here.

How an answer ends, as both authors code it (systems.md):
- Read-off: every decoder returns the non-special tokens of its whole final canvas, what the
  authors' `batch_decode(..., skip_special_tokens=True)` keeps, so an EOS committed in one slot
  of a deliberation canvas removes only that slot.
- End token: only EOS ends an answer (the Whisper-LLaDA EOS rule and dLLM-ASR's pruning test
  the tokenizer's EOS / pad id, which are one id in LLaDA). `eot_ends_answer=True` also ends it
  at `<|eot_id|>`: our option, for recipes whose targets end with it (`model.answer_suffix`).
- Pruning (`Pruning`): "none" is Whisper-LLaDA's EOS rule (everything after the first committed
  EOS becomes a committed EOS); "first_pass" is the released dLLM-ASR code (after the first
  predictor call the canvas is cut right before the first committed EOS, which is dropped,
  then every remaining slot is decoded with no end rule); "every_round" is our reading of the
  paper's "dynamically": after every call the canvas is cut right after the first committed end.
Dimensions: B rows, L canvas positions (answer tokens), R active rows (<= B).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

Pruning = Literal["none", "first_pass", "every_round"]
PRUNINGS: tuple[str, ...] = get_args(Pruning)


@dataclass(frozen=True)
class TokenIds:
    """Special token ids the decoders need (from the tokenizer / config, never hard-coded).

    `special` holds the tokenizer's other special tokens (BOS, headers, ...): the read-off drops
    them with mask / eos / pad / eot, as `skip_special_tokens` does.
    """

    mask: int
    eos: int
    pad: int
    eot: int
    special: frozenset[int] = frozenset()

    def dropped(self) -> frozenset[int]:
        """Every id the read-off drops."""
        return self.special | {self.mask, self.eos, self.pad, self.eot}


@dataclass
class DecodeResult:
    """Per row: the answer (non-special tokens of the final canvas), the predictor calls it took
    part in, and the final canvas itself (within the row's length, special tokens kept; empty
    for autoregressive decoding, which has no canvas)."""

    tokens: list[list[int]]
    forward_passes: list[int]
    canvases: list[list[int]] = field(default_factory=list)


@dataclass
class Canvas:
    """Decoding state of B rows, updated in place: tokens (B, L) long, PAD beyond each length;
    pending (B, L) bool, True where not committed yet (MASK, or a guess in prior-guided
    decoding; never beyond the length); lengths (B,) long; passes (B,) long predictor calls.
    """

    tokens: Tensor
    pending: Tensor
    lengths: Tensor
    passes: Tensor

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence[int]], *, pad: int, device: torch.device | str
    ) -> Canvas:
        """Right-pad B token lists with PAD into a canvas with nothing pending and no passes."""
        width = max((len(row) for row in rows), default=0)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
        for index, row in enumerate(rows):
            tokens[index, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long, device=device)
        zeros = torch.zeros(len(rows), dtype=torch.long, device=device)
        return cls(tokens, torch.zeros_like(tokens, dtype=torch.bool), lengths, zeros)

    def positions(self) -> Tensor:
        """(1, L) position index, to compare with per-row (R, 1) bounds."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device)[None]


def check_pruning(prune: str) -> None:
    """Raise ValueError unless prune is one of PRUNINGS."""
    if prune not in PRUNINGS:
        raise ValueError(f"unknown prune {prune!r}: choose one of {', '.join(PRUNINGS)}")


def is_end_token(tokens: Tensor, ids: TokenIds, *, eot_ends_answer: bool) -> Tensor:
    """Elementwise: does this token end an answer (EOS, and EOT with eot_ends_answer)?"""
    ends = tokens == ids.eos
    return ends | (tokens == ids.eot) if eot_ends_answer else ends


def first_true(mask: Tensor, fallback: Tensor) -> Tensor:
    """(R,) index of the first True of each row of an (R, L) bool mask, fallback[r] if none."""
    if mask.shape[1] == 0:
        return fallback.clone()
    return torch.where(mask.any(dim=1), mask.int().argmax(dim=1), fallback)


def apply_end_rule(
    canvas: Canvas, rows: Tensor, ids: TokenIds, *, prune: Pruning, eot_ends_answer: bool
) -> None:
    """After a predictor call over `rows`, the end rule of `prune` (module docstring), in place.

    Let e be a row's first committed end token. "none": every position after e becomes a
    committed EOS (it stays in the canvas). "every_round": the canvas is cut right after e
    (length e + 1, the cut positions become PAD). "first_pass": only after the row's first
    call, the canvas is cut right before e (length e); later calls change nothing.
    """
    if prune == "first_pass":
        rows = rows[canvas.passes[rows] == 1]
    lengths = canvas.lengths[rows]
    tokens = canvas.tokens[rows]
    positions = canvas.positions()
    inside = positions < lengths[:, None]
    committed_end = is_end_token(tokens, ids, eot_ends_answer=eot_ends_answer)
    first_end = first_true(committed_end & ~canvas.pending[rows] & inside, lengths)
    keep = first_end if prune == "first_pass" else first_end + 1
    after = inside & (positions >= keep[:, None])  # (R, L)
    tokens[after] = ids.eos if prune == "none" else ids.pad
    canvas.tokens[rows] = tokens
    canvas.pending[rows] = canvas.pending[rows] & ~after
    if prune != "none":
        canvas.lengths[rows] = torch.minimum(lengths, keep)


def answer_tokens(canvas: Canvas, ids: TokenIds) -> list[list[int]]:
    """Each row's canvas without special tokens (the authors' skip_special_tokens read-off)."""
    dropped = ids.dropped()
    return [[token for token in row if token not in dropped] for row in final_canvases(canvas)]


def final_canvases(canvas: Canvas) -> list[list[int]]:
    """Each row's canvas within its length, as Python lists."""
    tokens = canvas.tokens.cpu()
    return [tokens[row, :length].tolist() for row, length in enumerate(canvas.lengths.tolist())]


def result_of(canvas: Canvas, ids: TokenIds) -> DecodeResult:
    """The DecodeResult of a finished canvas."""
    return DecodeResult(answer_tokens(canvas, ids), canvas.passes.tolist(), final_canvases(canvas))
