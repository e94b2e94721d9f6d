"""Tests of the masked-diffusion losses: answer padding, mask sampling and the two objectives."""

from __future__ import annotations

import math

import pytest
import torch

from whisper_llada.training.diffusion_loss import (
    apply_mask,
    diffusion_loss,
    pad_answers,
    sample_mask,
)

EOS = 9
MASK = 8


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- pad_answers


def test_pad_answers_batch_padding_leaves_longest_without_eos() -> None:
    answer_ids = pad_answers([[1, 2, 3], [4], []], EOS, end="batch_padding")
    expected = torch.tensor([[1, 2, 3], [4, EOS, EOS], [EOS, EOS, EOS]])
    assert answer_ids.dtype == torch.long
    assert torch.equal(answer_ids, expected)


def test_pad_answers_eos_gives_every_row_an_eos() -> None:
    answer_ids = pad_answers([[1, 2, 3], [4]], EOS, end="eos")
    assert torch.equal(answer_ids, torch.tensor([[1, 2, 3, EOS], [4, EOS, EOS, EOS]]))


def test_pad_answers_rejects_empty_batch_and_all_empty_answers() -> None:
    with pytest.raises(ValueError, match="empty batch: pass at least one answer"):
        pad_answers([], EOS, end="eos")
    with pytest.raises(ValueError, match="every answer is empty"):
        pad_answers([[], []], EOS, end="batch_padding")
    assert torch.equal(pad_answers([[], []], EOS, end="eos"), torch.tensor([[EOS], [EOS]]))
    with pytest.raises(ValueError, match="unknown answer end 'none'"):
        pad_answers([[1]], EOS, end="none")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- sample_mask


def test_sample_mask_is_reproducible_with_a_seed() -> None:
    answer_ids = torch.zeros(16, 20, dtype=torch.long)
    first = sample_mask(answer_ids, kind="llada_sft", full_mask_prob=0.2, generator=_generator(3))
    second = sample_mask(answer_ids, kind="llada_sft", full_mask_prob=0.2, generator=_generator(3))
    other = sample_mask(answer_ids, kind="llada_sft", full_mask_prob=0.2, generator=_generator(4))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    assert first[0].dtype == torch.bool and first[1].dtype == torch.float32


def test_llada_sft_p_is_whisper_llada_t_shifted_by_eps() -> None:
    answer_ids = torch.zeros(64, 5, dtype=torch.long)
    eps = 0.05
    _, t = sample_mask(answer_ids, kind="whisper_llada", eps=eps, generator=_generator(1))
    _, p = sample_mask(answer_ids, kind="llada_sft", eps=eps, generator=_generator(1))
    torch.testing.assert_close(p, (1 - eps) * t + eps)
    assert float(p.min()) >= eps


@pytest.mark.parametrize("kind", ["whisper_llada", "llada_sft"])
def test_every_row_has_a_masked_token(kind: str) -> None:
    # Without the fallback a row of 3 tokens stays unmasked with probability E[(1 - t)^3] = 1/4,
    # i.e. about 500 of these 2000 rows.
    answer_ids = torch.zeros(2000, 3, dtype=torch.long)
    masked, _ = sample_mask(answer_ids, kind=kind, generator=_generator(0))
    assert int(masked.sum(dim=1).min()) >= 1


def test_single_token_rows_are_always_masked() -> None:
    masked, _ = sample_mask(torch.zeros(500, 1, dtype=torch.long), kind="whisper_llada")
    assert bool(masked.all())


def test_whisper_llada_mask_rate_is_half_on_average() -> None:
    rows, length = 20_000, 16
    masked, t = sample_mask(
        torch.zeros(rows, length, dtype=torch.long), kind="whisper_llada", generator=_generator(5)
    )
    fraction = masked.float().mean(dim=1)
    # E[fraction] = E[t] + (1 / L) * P(no token drawn) = 1/2 + (1/L) * 1/(L + 1) (the fallback).
    expected = 0.5 + 1 / (length * (length + 1))
    # Var[fraction] = Var[t] + E[t (1 - t)] / L = 1/12 + 1/(6 L); tolerance = 5 standard errors.
    tolerance = 5 * math.sqrt((1 / 12 + 1 / (6 * length)) / rows)
    assert abs(float(fraction.mean()) - expected) < tolerance
    # And the per-row rate follows that row's t: the rows drawn with t < 0.1 mask few tokens.
    assert float(fraction[t < 0.1].mean()) < 0.15


def test_full_mask_prob_one_masks_everything() -> None:
    masked, p_mask = sample_mask(
        torch.zeros(4, 7, dtype=torch.long), kind="llada_sft", full_mask_prob=1.0
    )
    assert bool(masked.all())
    assert torch.equal(p_mask, torch.ones(4))


def test_full_mask_prob_is_a_per_batch_rate() -> None:
    generator = _generator(2)
    answer_ids = torch.zeros(2, 8, dtype=torch.long)
    calls = 1000
    fully_masked = 0
    for _ in range(calls):
        masked, p_mask = sample_mask(
            answer_ids, kind="whisper_llada", full_mask_prob=0.2, generator=generator
        )
        batch_full = bool((p_mask == 1.0).all())
        assert not batch_full or bool(masked.all())
        fully_masked += batch_full
    # Binomial(1000, 0.2): standard error 0.0126, tolerance about 4 of them.
    assert abs(fully_masked / calls - 0.2) < 0.05


def test_sample_mask_rejects_bad_arguments() -> None:
    answer_ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown loss kind 'mdlm'"):
        sample_mask(answer_ids, kind="mdlm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"answer_ids must be \(B, L\) with L >= 1"):
        sample_mask(torch.zeros(2, 0, dtype=torch.long), kind="llada_sft")
    with pytest.raises(ValueError, match=r"full_mask_prob must lie in \[0, 1\]"):
        sample_mask(answer_ids, kind="llada_sft", full_mask_prob=1.5)
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\)"):
        sample_mask(answer_ids, kind="llada_sft", eps=0.0)


def test_apply_mask_replaces_only_masked_positions() -> None:
    answer_ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    masked = torch.tensor([[True, False, True], [False, False, True]])
    assert torch.equal(apply_mask(answer_ids, masked, MASK), torch.tensor([[8, 2, 8], [4, 5, 8]]))
    with pytest.raises(ValueError, match="draw the mask from the same answer_ids"):
        apply_mask(answer_ids, masked[:, :2], MASK)


# ----------------------------------------------------------------------------- diffusion_loss


def _tiny_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = _generator(7)
    logits = torch.randn(2, 3, 5, generator=generator)
    targets = torch.tensor([[1, 4, 0], [2, 2, 3]])
    masked = torch.tensor([[True, False, True], [False, True, False]])
    p_mask = torch.tensor([0.25, 0.8])
    return logits, targets, masked, p_mask


def test_whisper_llada_loss_is_mean_masked_ce() -> None:
    logits, targets, masked, p_mask = _tiny_case()
    log_probs = logits.log_softmax(dim=-1)
    positions = [(0, 0), (0, 2), (1, 1)]
    expected = -sum(log_probs[b, i, targets[b, i]] for b, i in positions) / len(positions)
    loss = diffusion_loss(logits, targets, masked, p_mask, kind="whisper_llada")
    torch.testing.assert_close(loss, expected)


def test_llada_sft_loss_is_inverse_p_weighted_and_length_normalised() -> None:
    logits, targets, masked, p_mask = _tiny_case()
    log_probs = logits.log_softmax(dim=-1)
    batch, length = targets.shape
    total = -(log_probs[0, 0, 1] + log_probs[0, 2, 0]) / 0.25 - log_probs[1, 1, 2] / 0.8
    expected = total / length / batch
    loss = diffusion_loss(logits, targets, masked, p_mask, kind="llada_sft")
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("kind", ["whisper_llada", "llada_sft"])
def test_unmasked_positions_do_not_affect_loss_or_gradient(kind: str) -> None:
    logits, targets, masked, p_mask = _tiny_case()
    changed = torch.where(masked[..., None], logits, logits * 10 + 3)
    assert torch.equal(
        diffusion_loss(logits, targets, masked, p_mask, kind=kind),
        diffusion_loss(changed, targets, masked, p_mask, kind=kind),
    )
    logits.requires_grad_(True)
    diffusion_loss(logits, targets, masked, p_mask, kind=kind).backward()
    grad = logits.grad
    assert grad is not None
    assert bool((grad[~masked] == 0).all())
    assert bool((grad[masked].abs().sum(dim=-1) > 0).all())


def test_bf16_logits_give_the_float32_loss() -> None:
    logits, targets, masked, p_mask = _tiny_case()
    low = logits.bfloat16()
    loss = diffusion_loss(low, targets, masked, p_mask, kind="llada_sft")
    assert loss.dtype == torch.float32
    assert torch.equal(loss, diffusion_loss(low.float(), targets, masked, p_mask, kind="llada_sft"))


@pytest.mark.parametrize("kind", ["whisper_llada", "llada_sft"])
@pytest.mark.parametrize("answers", [[[3], [5], [1]], [list(range(300)), [4, 2]]])
def test_loss_is_finite_for_short_and_long_answers(kind: str, answers: list[list[int]]) -> None:
    vocab = 301
    answer_ids = pad_answers(answers, vocab - 1, end="batch_padding")
    masked, p_mask = sample_mask(answer_ids, kind=kind, generator=_generator(11))
    logits = torch.randn(*answer_ids.shape, vocab, generator=_generator(12))
    loss = diffusion_loss(logits, answer_ids, masked, p_mask, kind=kind)
    assert loss.dim() == 0 and bool(torch.isfinite(loss))


def test_diffusion_loss_rejects_bad_inputs() -> None:
    logits, targets, masked, p_mask = _tiny_case()
    with pytest.raises(ValueError, match="slice the logits to the answer positions"):
        diffusion_loss(logits[:, :2], targets, masked, p_mask, kind="whisper_llada")
    with pytest.raises(ValueError, match=r"p_mask must be \(B,\)"):
        diffusion_loss(logits, targets, masked, p_mask[:1], kind="llada_sft")
    with pytest.raises(ValueError, match="masked selects no position"):
        diffusion_loss(logits, targets, torch.zeros_like(masked), p_mask, kind="whisper_llada")
    with pytest.raises(ValueError, match="unknown loss kind 'ce'"):
        diffusion_loss(logits, targets, masked, p_mask, kind="ce")  # type: ignore[arg-type]
