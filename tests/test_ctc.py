"""Tests of the CTC prior: the head over a frozen embedding table, its loss and greedy decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from whisper_llada.models.ctc import CTCHead, ctc_greedy_decode, ctc_loss

WIDTH = 16
VOCAB = 37  # differs from WIDTH and every other size, so a V-sized tensor is recognisable


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _frozen_embedding(seed: int = 0) -> torch.Tensor:
    return torch.randn(VOCAB, WIDTH, generator=_generator(seed))


# ----------------------------------------------------------------------------- CTCHead


@pytest.mark.parametrize("bottleneck", [None, 4])
def test_head_holds_no_vocabulary_sized_tensor(bottleneck: int | None) -> None:
    head = CTCHead(WIDTH, bottleneck=bottleneck)
    state = head.state_dict()
    assert all(VOCAB not in tensor.shape for tensor in state.values())
    assert state["blank"].shape == (WIDTH,)
    assert sum(p.numel() for p in head.parameters()) == sum(t.numel() for t in state.values())


def test_bottleneck_head_is_smaller() -> None:
    full = sum(p.numel() for p in CTCHead(WIDTH).parameters())
    small = sum(p.numel() for p in CTCHead(WIDTH, bottleneck=2).parameters())
    # LayerNorm 2D + blank D, plus D*D + D (one linear) or 2*D*2 + 2 + D (two linears).
    assert full == 3 * WIDTH + WIDTH * WIDTH + WIDTH
    assert small == 3 * WIDTH + 4 * WIDTH + 2 + WIDTH


def test_head_logits_shape_and_class_layout() -> None:
    head = CTCHead(WIDTH)
    vectors = torch.randn(3, 5, WIDTH, generator=_generator(1))  # (B, A, D)
    embedding = _frozen_embedding()
    embedding[6] = head.blank.detach()  # token 6 now has the blank's vector
    logits = head(vectors, embedding)
    assert logits.shape == (3, 5, VOCAB + 1)
    # Index 0 is the blank and index 1 + v is token v.
    torch.testing.assert_close(logits[..., 0], logits[..., 1 + 6])
    assert not torch.allclose(logits[..., 0], logits[..., 1 + 5])


def test_no_gradient_reaches_a_frozen_embedding() -> None:
    head = CTCHead(WIDTH)
    embedding = _frozen_embedding().requires_grad_(False)
    vectors = torch.randn(2, 6, WIDTH, generator=_generator(2))
    logits = head(vectors, embedding)
    ctc_loss(logits, torch.tensor([6, 4]), [[1, 2], [3]]).backward()
    assert embedding.grad is None
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in head.parameters())


@pytest.mark.parametrize("head_only", [False, True])
def test_a_head_only_ctc_loss_trains_the_head_and_nothing_below_it(head_only: bool) -> None:
    head = CTCHead(WIDTH, head_only=head_only)
    embedding = _frozen_embedding().requires_grad_(True)
    vectors = torch.randn(2, 6, WIDTH, generator=_generator(2), requires_grad=True)
    ctc_loss(head(vectors, embedding), torch.tensor([6, 4]), [[1, 2], [3]]).backward()
    assert (embedding.grad is None, vectors.grad is None) == (head_only, head_only)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in head.parameters())


def test_head_runs_in_the_embedding_dtype() -> None:
    head = CTCHead(WIDTH)
    vectors = torch.randn(1, 4, WIDTH, generator=_generator(3))
    logits = head(vectors, _frozen_embedding().bfloat16())
    assert logits.dtype == torch.bfloat16


def test_head_rejects_a_wrong_width() -> None:
    head = CTCHead(WIDTH)
    with pytest.raises(ValueError, match="build the head with the LLM's hidden size"):
        head(torch.randn(1, 4, WIDTH), torch.randn(VOCAB, WIDTH + 1))


# ----------------------------------------------------------------------------- greedy decode


def _one_hot_logits(paths: list[list[int]]) -> torch.Tensor:
    """(B, A, VOCAB + 1) logits whose argmax per vector follows the given class paths."""
    return F.one_hot(torch.tensor(paths), VOCAB + 1).float()


def test_greedy_decode_collapses_repeats_drops_blanks_and_respects_lengths() -> None:
    logits = _one_hot_logits(
        [
            [0, 3, 3, 0, 3, 5, 5, 0],  # "3 3" merge, the blank splits the second 3
            [1, 1, 2, 0, 7, 7, 9, 9],  # only the first 4 vectors are valid
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    hypotheses = ctc_greedy_decode(logits, torch.tensor([8, 4, 8]))
    assert hypotheses == [[2, 2, 4], [0, 1], []]


def test_greedy_decode_of_zero_length_row_is_empty() -> None:
    logits = _one_hot_logits([[4, 4, 4]])
    assert ctc_greedy_decode(logits, torch.tensor([0])) == [[]]


def test_lengths_are_checked() -> None:
    logits = _one_hot_logits([[4, 4, 4]])
    with pytest.raises(ValueError, match=r"vector_lengths must lie in \[0, 3\]"):
        ctc_greedy_decode(logits, torch.tensor([4]))
    with pytest.raises(ValueError, match=r"vector_lengths must be \(B,\) = \(1,\)"):
        ctc_loss(logits, torch.tensor([3, 3]), [[1]])


# ----------------------------------------------------------------------------- ctc_loss


def test_ctc_loss_equals_torch_ctc_loss_with_shifted_targets() -> None:
    logits = torch.randn(2, 6, VOCAB + 1, generator=_generator(4))
    targets = [[4, 4, 10], [0]]
    lengths = torch.tensor([6, 3])
    # By hand: padded (B, S) targets shifted past the blank, per-row loss / target length, mean.
    padded = torch.tensor([[5, 5, 11], [1, 0, 0]])
    per_row = F.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1),
        padded,
        lengths,
        torch.tensor([3, 1]),
        blank=0,
        reduction="none",
    )
    expected = (per_row[0] / 3 + per_row[1] / 1) / 2
    torch.testing.assert_close(ctc_loss(logits, lengths, targets), expected)


def test_impossible_target_is_zeroed_not_infinite() -> None:
    logits = torch.randn(2, 3, VOCAB + 1, generator=_generator(5))
    # Row 0: 5 tokens (with a repeat needing a blank) cannot be emitted by 3 vectors.
    targets = [[1, 2, 2, 3, 4], [7]]
    loss = ctc_loss(logits, torch.tensor([3, 3]), targets)
    row1 = F.ctc_loss(
        logits[1:].log_softmax(-1).transpose(0, 1),
        torch.tensor([[8]]),
        torch.tensor([3]),
        torch.tensor([1]),
        reduction="sum",
    )
    assert bool(torch.isfinite(loss))
    torch.testing.assert_close(loss, row1 / 2)


def test_empty_target_costs_all_blanks() -> None:
    logits = torch.randn(1, 4, VOCAB + 1, generator=_generator(6))
    loss = ctc_loss(logits, torch.tensor([3]), [[]])
    expected = -logits[0, :3].log_softmax(-1)[:, 0].sum()
    torch.testing.assert_close(loss, expected)


def test_ctc_loss_rejects_bad_targets() -> None:
    logits = torch.randn(2, 4, VOCAB + 1)
    with pytest.raises(ValueError, match="got 1 target sequences for a batch of 2"):
        ctc_loss(logits, torch.tensor([4, 4]), [[1]])
    with pytest.raises(ValueError, match=rf"outside \[0, {VOCAB}\)"):
        ctc_loss(logits, torch.tensor([4, 4]), [[1], [VOCAB]])


def test_tiny_head_learns_two_sequences() -> None:
    torch.manual_seed(0)
    head = CTCHead(WIDTH)
    embedding = _frozen_embedding(seed=8)
    vectors = torch.randn(2, 12, WIDTH, generator=_generator(9))
    lengths = torch.tensor([12, 9])
    targets = [[1, 3, 3, 7], [2, 30, 8]]
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        ctc_loss(head(vectors, embedding), lengths, targets).backward()
        optimizer.step()
    assert ctc_greedy_decode(head(vectors, embedding), lengths) == targets
