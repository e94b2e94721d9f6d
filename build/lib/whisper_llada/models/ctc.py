"""CTC prior (dLLM-ASR): a light head on the audio vectors that predicts LLM token ids, its loss and greedy decoding.

The head projects each audio vector into the LLM's frozen input-embedding space and scores it
against every embedding row plus one learned blank vector, so the vocabulary costs no new
parameters. Class index 0 is the CTC blank and index 1 + v is LLM token v.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLANK_INDEX = 0  # CTC class of the blank; LLM token v is class v + TOKEN_OFFSET
TOKEN_OFFSET = 1
BLANK_INIT_STD = 0.02  # same scale as the other freshly initialised vectors of the model


class CTCHead(nn.Module):
    """LayerNorm + projection of audio vectors into the embedding space, plus a blank vector.

    The LLM's embedding matrix is an argument of `forward`, never a parameter or buffer, so the
    126464 x 4096 table is neither duplicated in state dicts nor handed to an optimiser.

    Args:
        width: D, the width of the audio vectors and of the LLM embeddings.
        bottleneck: if given, project D -> bottleneck -> D with a GELU between (fewer
            parameters than one D x D linear when bottleneck < D / 2).
        head_only: no gradient flows from the head into its inputs (the audio vectors and
            the embedding matrix are constants to it).
    """

    def __init__(
        self, width: int, *, bottleneck: int | None = None, head_only: bool = False
    ) -> None:
        super().__init__()
        self.head_only = head_only
        if bottleneck is not None and bottleneck < 1:
            raise ValueError(f"bottleneck must be a positive width or None, got {bottleneck}")
        self.width = width
        self.norm = nn.LayerNorm(width)
        self.proj: nn.Module
        if bottleneck is None:
            self.proj = nn.Linear(width, width)
        else:
            self.proj = nn.Sequential(
                nn.Linear(width, bottleneck), nn.GELU(), nn.Linear(bottleneck, width)
            )
        self.blank = nn.Parameter(torch.randn(width) * BLANK_INIT_STD)

    def forward(self, vectors: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """Score every audio vector against [blank; embedding rows].

        The product runs in the embedding's dtype (bf16 for the real LLM: on GPU it accumulates
        in float32, and it halves the (B, A, V + 1) activation); ctc_loss upcasts to float32
        before the log-softmax.

        Args:
            vectors: (B, A, D) audio vectors (the projector's output).
            embedding_weight: (V, D) the LLM's input-embedding matrix, usually frozen.

        Returns:
            (B, A, V + 1) logits, in embedding_weight's dtype; index 0 is the blank.
        """
        if vectors.shape[-1] != self.width or embedding_weight.shape[-1] != self.width:
            raise ValueError(
                f"CTCHead was built for width {self.width} but got vectors "
                f"{tuple(vectors.shape)} and embedding_weight {tuple(embedding_weight.shape)}: "
                "build the head with the LLM's hidden size"
            )
        if self.head_only:
            vectors, embedding_weight = vectors.detach(), embedding_weight.detach()
        projected = self.proj(self.norm(vectors)).to(embedding_weight.dtype)  # (B, A, D)
        blank_logits = projected @ self.blank.to(embedding_weight.dtype)  # (B, A)
        # Two products and a concat of logits avoid copying the (V, D) table into [blank; E].
        token_logits = projected @ embedding_weight.T  # (B, A, V)
        return torch.cat([blank_logits.unsqueeze(-1), token_logits], dim=-1)  # (B, A, V + 1)


def ctc_loss(
    logits: torch.Tensor, vector_lengths: torch.Tensor, targets: Sequence[Sequence[int]]
) -> torch.Tensor:
    """CTC loss of LLM token targets, per utterance divided by target length, then batch mean.

    A target longer than its row can emit gives an infinite loss that is zeroed
    (zero_infinity), so one bad utterance does not poison the batch; empty targets are allowed.

    Args:
        logits: (B, A, V + 1) from CTCHead; index 0 is the blank.
        vector_lengths: (B,) number of valid audio vectors per row, each <= A.
        targets: B sequences of LLM token ids in [0, V).

    Returns:
        Scalar float32 loss.
    """
    batch, num_vectors, num_classes = logits.shape
    _check_lengths(vector_lengths, batch, num_vectors)
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} target sequences for a batch of {batch}")
    flat_targets = [token for tokens in targets for token in tokens]
    vocab = num_classes - TOKEN_OFFSET
    if any(not 0 <= token < vocab for token in flat_targets):
        raise ValueError(
            f"a target token id lies outside [0, {vocab}): targets must be LLM token ids of "
            "the same vocabulary as the embedding matrix"
        )
    device = logits.device
    concatenated = torch.tensor(flat_targets, dtype=torch.long, device=device) + TOKEN_OFFSET
    target_lengths = torch.tensor([len(tokens) for tokens in targets], dtype=torch.long)
    log_probs = logits.float().log_softmax(dim=-1).transpose(0, 1)  # (A, B, V + 1)
    return F.ctc_loss(
        log_probs,
        concatenated,
        vector_lengths.to(device=device, dtype=torch.long),
        target_lengths.to(device),
        blank=BLANK_INDEX,
        reduction="mean",
        zero_infinity=True,
    )


def ctc_greedy_decode(logits: torch.Tensor, vector_lengths: torch.Tensor) -> list[list[int]]:
    """Best-path decoding: argmax per vector, collapse repeats, drop blanks.

    Args:
        logits: (B, A, V + 1) from CTCHead; index 0 is the blank.
        vector_lengths: (B,) number of valid audio vectors per row; later vectors are ignored.

    Returns:
        B lists of LLM token ids.
    """
    return ctc_greedy_decode_with_confidence(logits, vector_lengths)[0]


def ctc_greedy_decode_with_confidence(
    logits: torch.Tensor, vector_lengths: torch.Tensor
) -> tuple[list[list[int]], list[list[float]]]:
    """Best-path decoding, plus each emitted token's confidence.

    A token's confidence is the highest posterior among the vectors of its run (the run that
    the repeat-collapse merges into it); dLLM-ASR-style decoding masks prior tokens below a floor.

    Returns:
        (B lists of LLM token ids, B lists of confidences in [0, 1] of the same lengths).
    """
    batch, num_vectors, _ = logits.shape
    _check_lengths(vector_lengths, batch, num_vectors)
    best_prob, best = logits.float().softmax(dim=-1).max(dim=-1)  # (B, A) each
    hypotheses, confidences = [], []
    for row, probs, length in zip(
        best.cpu(), best_prob.cpu(), vector_lengths.tolist(), strict=True
    ):
        runs, counts = torch.unique_consecutive(row[:length], return_counts=True)
        run_confidence = (
            torch.stack([p.max() for p in probs[:length].split(counts.tolist())])
            if length
            else probs[:0]
        )
        keep = runs != BLANK_INDEX
        hypotheses.append((runs[keep] - TOKEN_OFFSET).tolist())
        confidences.append(run_confidence[keep].tolist())
    return hypotheses, confidences


def _check_lengths(vector_lengths: torch.Tensor, batch: int, num_vectors: int) -> None:
    if vector_lengths.shape != (batch,):
        raise ValueError(
            f"vector_lengths must be (B,) = ({batch},), got {tuple(vector_lengths.shape)}"
        )
    if bool((vector_lengths < 0).any()) or bool((vector_lengths > num_vectors).any()):
        raise ValueError(
            f"vector_lengths must lie in [0, {num_vectors}] (the number of audio vectors A), "
            f"got {vector_lengths.tolist()}"
        )
