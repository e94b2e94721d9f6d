"""Tests of the decoding strategies (diffusion, deliberation, prior-guided) over a fake mask predictor."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor, nn

from whisper_llada.decoding.canvas import DecodeResult, TokenIds
from whisper_llada.decoding.deliberation import (
    DeliberationOptions,
    SemiARDeliberationOptions,
    diffusion_deliberation,
    semi_ar_deliberation,
)
from whisper_llada.decoding.diffusion import DiffusionOptions, MaskPredictor, diffusion_decode
from whisper_llada.decoding.prior_guided import PriorGuidedOptions, prior_guided_decode

VOCAB = 20
IDS = TokenIds(mask=3, eos=1, pad=0, eot=2)
WIDTH = 16
HEADS = 2
MAX_POSITIONS = 64
NUM_AUDIO = 6
SUPPRESSED = -1e4  # logit of tokens the fake never predicts (exp() of it is exactly 0)
END_PENALTY = 3.0  # subtracted from EOS / EOT everywhere, so random rows rarely end by chance
END_BONUS = 8.0  # added to the end token's logit where a row's fake transcript ends
CONFIDENT = 1000.0  # logit scale that makes the fake sure (probability > 0.9) of every position
GEN_LEN = 16
# Audio row -> (position, token): from that position on the fake favours ending with that token.
ENDS = {0: (3, IDS.eos), 1: (9, IDS.eot), 3: (5, IDS.eos)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and idle threads spin on a busy machine (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyPredictor(nn.Module):
    """A deterministic tiny bidirectional mask predictor in float64 (ties are impossible).

    Embedding + learned positions + a per-row "audio" vector picked by `rows`, one bidirectional
    attention layer with a key-padding mask, an output head; MASK and PAD are never predicted.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        scale: float = 1.0,
        ends: dict[int, tuple[int, int]] | None = None,
        no_end: bool = False,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)

        def weight(*shape: int, fan_in: int = 1) -> nn.Parameter:
            values = torch.randn(*shape, generator=generator, dtype=torch.float64)
            return nn.Parameter(values / math.sqrt(fan_in), requires_grad=False)

        self.embedding = weight(VOCAB, WIDTH)
        self.positions = weight(MAX_POSITIONS, WIDTH)
        self.audio = weight(NUM_AUDIO, WIDTH)
        self.qkv = weight(WIDTH, 3 * WIDTH, fan_in=WIDTH)
        self.out = weight(WIDTH, WIDTH, fan_in=WIDTH)
        self.head = weight(WIDTH, VOCAB, fan_in=WIDTH)
        self.scale = scale
        self.ends = ENDS if ends is None else ends
        self.no_end = no_end

    @torch.no_grad()
    def forward(self, rows: Tensor, canvas: Tensor, lengths: Tensor) -> Tensor:
        batch, length = canvas.shape
        hidden = self.embedding[canvas] + self.positions[:length] + self.audio[rows][:, None]
        q, k, v = (hidden @ self.qkv).chunk(3, dim=-1)
        q, k, v = (
            t.view(batch, length, HEADS, -1).transpose(1, 2) for t in (q, k, v)
        )  # (B, H, L, D/H)
        scores = q @ k.transpose(-1, -2) / math.sqrt(WIDTH // HEADS)  # (B, H, L, L)
        padding = torch.arange(length)[None] >= lengths[:, None]  # (B, L)
        scores = scores.masked_fill(padding[:, None, None, :], -math.inf)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, WIDTH)
        logits = (hidden + attended @ self.out) @ self.head  # (B, L, V)
        logits[..., [IDS.eos, IDS.eot]] -= END_PENALTY
        for row_index, row in enumerate(rows.tolist()):
            if row in self.ends and not self.no_end:
                position, token = self.ends[row]
                logits[row_index, position:, token] += END_BONUS
        logits = logits * self.scale
        logits[..., [IDS.mask, IDS.pad]] = SUPPRESSED
        if self.no_end:
            logits[..., [IDS.eos, IDS.eot]] = SUPPRESSED
        return logits


class Recorder:
    """Wraps a predictor and keeps every call: (rows, canvas, lengths, logits)."""

    def __init__(self, predictor: MaskPredictor) -> None:
        self.predictor = predictor
        self.calls: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def __call__(self, rows: Tensor, canvas: Tensor, lengths: Tensor) -> Tensor:
        logits = self.predictor(rows, canvas, lengths)
        self.calls.append((rows.clone(), canvas.clone(), lengths.clone(), logits))
        return logits


def only_rows(predictor: MaskPredictor, selection: Sequence[int]) -> MaskPredictor:
    """A predictor for a sub-batch: local row i is row selection[i] of the full batch."""
    lookup = torch.tensor(list(selection), dtype=torch.long)

    def sub_predictor(rows: Tensor, canvas: Tensor, lengths: Tensor) -> Tensor:
        return predictor(lookup[rows], canvas, lengths)

    return sub_predictor


Run = Callable[[MaskPredictor, list[int]], DecodeResult]


def assert_batched_equals_per_row(run: Run, predictor: MaskPredictor, batch: int) -> DecodeResult:
    """run(predictor, selection) decodes the given rows; the batch must equal a per-row loop."""
    batched = run(predictor, list(range(batch)))
    for row in range(batch):
        alone = run(only_rows(predictor, [row]), [row])
        assert alone.tokens == [batched.tokens[row]], f"row {row}"
        assert alone.forward_passes == [batched.forward_passes[row]], f"row {row}"
        assert alone.canvases == [batched.canvases[row]], f"row {row}"
    return batched


def is_end(token: int, eot_ends_answer: bool = False) -> bool:
    """The authors' end: EOS only (EOT too with our option)."""
    return token == IDS.eos or (eot_ends_answer and token == IDS.eot)


def read_off(canvas: Sequence[int]) -> list[int]:
    """The authors' read-off: batch_decode(skip_special_tokens=True) of the whole canvas."""
    return [token for token in canvas if token not in (IDS.mask, IDS.eos, IDS.pad, IDS.eot)]


def decode(predictor: MaskPredictor, batch_size: int, **options: object) -> DecodeResult:
    """diffusion_decode on a GEN_LEN canvas; plain diffusion with GEN_LEN steps unless overridden."""
    row_seeds = options.pop("row_seeds", None)
    options = {"gen_len": GEN_LEN, "steps": GEN_LEN, "block_length": GEN_LEN, **options}
    return diffusion_decode(
        predictor, batch_size, DiffusionOptions(**options), ids=IDS, row_seeds=row_seeds
    )


# ----------------------------------------------------------------------------- reference sampler


def reference_decode(
    predictor: MaskPredictor,
    row: int,
    *,
    gen_len: int,
    steps: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    threshold: float | None = None,
    seed: int = 0,
    eot_ends_answer: bool = False,
) -> tuple[list[int], int]:
    """The authors' `decoding` for one row, written as plainly as possible: (answer, passes)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.full((gen_len,), IDS.mask)
    committed = torch.zeros(gen_len, dtype=torch.bool)
    passes = 0
    steps_per_block = steps // (gen_len // block_length)
    for block in range(gen_len // block_length):
        low, high = block * block_length, (block + 1) * block_length
        masks = int((~committed[low:high]).sum())
        schedule = [
            masks // steps_per_block + (1 if i < masks % steps_per_block else 0)
            for i in range(steps_per_block)
        ]
        for k in schedule:
            remaining = int((~committed[low:high]).sum())
            if remaining == 0:
                break
            logits = predictor(torch.tensor([row]), x[None].clone(), torch.tensor([gen_len]))[0]
            passes += 1
            if temperature > 0:
                noise = torch.rand((gen_len, VOCAB), generator=generator, dtype=torch.float64)
                candidate = (logits.double().exp() / (-noise.log()) ** temperature).argmax(-1)
            else:
                candidate = logits.argmax(-1)
            if remasking == "low_confidence":
                confidence = logits.softmax(-1)[torch.arange(gen_len), candidate]
            else:
                confidence = torch.rand(gen_len, generator=generator, dtype=torch.float64)
            confidence[high:] = -math.inf
            confidence[committed] = -math.inf
            if threshold is not None:
                k = max(k, int((confidence >= threshold).sum()))
            for position in torch.topk(confidence, min(k, remaining)).indices.tolist():
                x[position] = candidate[position]
                committed[position] = True
            ends = [
                p for p in range(gen_len) if committed[p] and is_end(int(x[p]), eot_ends_answer)
            ]
            if ends:
                for p in range(ends[0] + 1, gen_len):
                    x[p] = IDS.eos
                    committed[p] = True
    return read_off(x.tolist()), passes


@pytest.mark.parametrize("block_length", [16, 8, 4])
@pytest.mark.parametrize(
    ("steps", "temperature", "remasking"),
    [(16, 0.0, "low_confidence"), (8, 0.0, "low_confidence"), (8, 0.0, "random"),
     (8, 0.8, "low_confidence"), (16, 1.3, "random")],
)  # fmt: skip
def test_decode_equals_reference_sampler(
    block_length: int, steps: int, temperature: float, remasking: str
) -> None:
    predictor = TinyPredictor()
    seeds = [11, 12, 13, 14]
    result = diffusion_decode(
        predictor,
        4,
        DiffusionOptions(
            gen_len=GEN_LEN,
            steps=steps,
            block_length=block_length,
            temperature=temperature,
            remasking=remasking,
        ),
        ids=IDS,
        row_seeds=seeds,
    )
    for row, seed in enumerate(seeds):
        tokens, passes = reference_decode(
            predictor, row, gen_len=GEN_LEN, steps=steps, block_length=block_length,
            temperature=temperature, remasking=remasking, seed=seed,
        )  # fmt: skip
        assert result.tokens[row] == tokens
        assert result.forward_passes[row] == passes
    # The fake ends rows 0 and 3 early, so the EOS rule and skipped blocks are exercised.
    assert len(result.tokens[0]) < 16 and min(result.forward_passes) < max(result.forward_passes)


@pytest.mark.parametrize("block_length", [16, 4])
def test_decode_with_eot_ending_the_answer_equals_reference(block_length: int) -> None:
    predictor = TinyPredictor()
    result = decode(predictor, 4, block_length=block_length, eot_ends_answer=True)
    for row in range(4):
        expected = reference_decode(
            predictor, row, gen_len=GEN_LEN, steps=GEN_LEN, block_length=block_length,
            eot_ends_answer=True,
        )  # fmt: skip
        assert (result.tokens[row], result.forward_passes[row]) == expected
    # Row 1 ends with EOT: only the option fills what follows it with EOS.
    authors = decode(predictor, 4, block_length=block_length)
    assert authors.canvases[1] != result.canvases[1]


@pytest.mark.parametrize("block_length", [16, 4])
def test_decode_with_threshold_equals_reference(block_length: int) -> None:
    predictor = TinyPredictor(scale=4.0)
    result = diffusion_decode(
        predictor,
        4,
        DiffusionOptions(gen_len=GEN_LEN, steps=16, block_length=block_length, threshold=0.6),
        ids=IDS,
    )
    for row in range(4):
        expected = reference_decode(
            predictor, row, gen_len=GEN_LEN, steps=16, block_length=block_length, threshold=0.6
        )
        assert (result.tokens[row], result.forward_passes[row]) == expected
    assert min(result.forward_passes) < 16


# ----------------------------------------------------------------------------- diffusion_decode


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"block_length": 4},
        {"temperature": 0.7, "block_length": 8},
        {"remasking": "random", "block_length": 8},
        {"threshold": 0.5, "scale": 4.0},
        {"prune": "first_pass"},
        {"prune": "every_round", "eot_ends_answer": True},
        {"prune": "first_pass", "threshold": 0.5, "block_length": 8, "scale": 4.0},
        {"prune": "every_round", "threshold": 0.5, "block_length": 8, "scale": 4.0},
        {"prune": "every_round", "temperature": 1.0, "remasking": "random", "block_length": 4},
        {"eot_ends_answer": True, "block_length": 4},
    ],
)
def test_decode_batched_equals_per_row(options: dict) -> None:
    options = dict(options)
    predictor = TinyPredictor(scale=options.pop("scale", 1.0))
    seeds = [5, 6, 7, 8, 9]

    def run(predictor: MaskPredictor, selection: list[int]) -> DecodeResult:
        options.setdefault("block_length", 16)
        return diffusion_decode(
            predictor,
            len(selection),
            DiffusionOptions(gen_len=GEN_LEN, steps=16, **options),
            ids=IDS,
            row_seeds=[seeds[r] for r in selection],
        )

    batched = assert_batched_equals_per_row(run, predictor, len(seeds))
    assert len(set(batched.forward_passes)) > 1  # rows finished at different times


@pytest.mark.parametrize(
    ("steps", "block_length", "passes"), [(16, 16, 16), (8, 4, 8), (4, 8, 4), (32, 16, 16)]
)
def test_decode_without_an_end_takes_exactly_steps_passes(
    steps: int, block_length: int, passes: int
) -> None:
    # steps > gen_len: the steps that would commit nothing are skipped (32 -> 16 passes).
    result = diffusion_decode(
        TinyPredictor(no_end=True),
        3,
        DiffusionOptions(gen_len=GEN_LEN, steps=steps, block_length=block_length),
        ids=IDS,
    )
    assert result.forward_passes == [passes] * 3
    assert [len(tokens) for tokens in result.tokens] == [16] * 3


@pytest.mark.parametrize(("block_length", "passes"), [(16, 1), (4, 4)])
def test_threshold_with_a_confident_predictor_needs_far_fewer_passes(
    block_length: int, passes: int
) -> None:
    predictor = TinyPredictor(scale=CONFIDENT, no_end=True)
    recorder = Recorder(predictor)
    fast = decode(recorder, 3, block_length=block_length, threshold=0.9)
    assert decode(predictor, 3, block_length=block_length).forward_passes == [16] * 3
    assert fast.forward_passes == [passes] * 3  # each block is committed in one pass
    _, _, _, logits = recorder.calls[0]
    assert fast.tokens[0][:block_length] == logits[0, :block_length].argmax(-1).tolist()


def test_unreachable_threshold_follows_the_plain_schedule() -> None:
    recorder = Recorder(TinyPredictor())
    plain = decode(recorder, 4, steps=8, block_length=8)
    top = max(float(logits.softmax(-1).max()) for *_, logits in recorder.calls)
    assert top < 0.99  # so no position ever reaches the threshold below
    thresholded = decode(TinyPredictor(), 4, steps=8, block_length=8, threshold=0.99)
    assert thresholded == plain


def test_eos_rule_fills_the_rest_with_eos_and_skips_later_blocks() -> None:
    recorder = Recorder(TinyPredictor())
    result = decode(recorder, 4, block_length=4)  # 4 blocks of 4 positions, 4 steps each
    first_ends: dict[int, list[int]] = {}
    for rows, canvas, lengths, _ in recorder.calls:
        assert lengths.tolist() == [GEN_LEN] * len(rows)  # without pruning the size stays
        for row, tokens in zip(rows.tolist(), canvas.tolist(), strict=True):
            ends = [p for p, t in enumerate(tokens) if t == IDS.eos]
            if ends:  # everything after the first committed EOS is EOS
                assert tokens[ends[0] + 1 :] == [IDS.eos] * (GEN_LEN - 1 - ends[0])
                first_ends.setdefault(row, []).append(ends[0])
    # Row 0 commits EOS at position 6 in the first step of block 1: the rule fills 7..15, block
    # 1 needs two more steps (positions 4, 5) and blocks 2, 3 are skipped: 4 + 3 passes.
    assert first_ends[0][0] == 6 and result.canvases[0][6:] == [IDS.eos] * 10
    assert result.tokens[0] == result.canvases[0][:6]
    assert result.forward_passes == [7, 16, 16, 7]
    # Row 1 commits EOT at 10 and 11: no end for the authors, so the slots after them stay MASK
    # and are decoded; the read-off drops only the two EOTs.
    t = IDS.eot
    assert 1 not in first_ends
    assert result.canvases[1] == [5, 7, 5, 18, 5, 18, 13, 18, 5, 5, t, t, 5, 18, 18, 18]
    assert result.tokens[1] == [5, 7, 5, 18, 5, 18, 13, 18, 5, 5, 5, 18, 18, 18]
    assert len(result.tokens[2]) == GEN_LEN and 2 not in first_ends


def test_prune_every_round_shows_shorter_canvases() -> None:
    recorder = Recorder(TinyPredictor())
    pruned = decode(recorder, 4, prune="every_round", eot_ends_answer=True)
    seen = {}
    for rows, canvas, lengths, _ in recorder.calls:
        for row, tokens, length in zip(
            rows.tolist(), canvas.tolist(), lengths.tolist(), strict=True
        ):
            seen.setdefault(row, []).append(length)
            if length < 16:  # cut right after a committed end token
                assert is_end(tokens[length - 1], True)
                assert not any(is_end(t, True) for t in tokens[: length - 1])
                assert tokens[length:] == [IDS.pad] * (len(tokens) - length)
    # Each newly committed end left of the old one cuts the canvas further; a row without an
    # end keeps its full canvas.
    assert seen[0] == [16, 7, 5, 4, 4, 4] and seen[3] == [16, 13, 9, 7, 6, 6, 6, 6, 6]
    assert seen[2] == [16] * 16
    assert [len(tokens) for tokens in pruned.tokens] == [3, 10, 16, 5]


# ------------------------------------------------- the authors' end handling, forced case by case

SURE = 12.0  # logit that makes the scripted fake sure of a token (probability > 0.99)


class Scripted:
    """A fake whose call i is sure of script[i]'s {position: token} (the last entry repeats);
    elsewhere it leans to token 4 + position with probability ~0.13, more at the left (no ties).
    Keeps the canvases and lengths it was shown."""

    def __init__(self, script: list[dict[int, int]]) -> None:
        self.script = script
        self.canvases: list[list[list[int]]] = []
        self.lengths: list[list[int]] = []

    def __call__(self, rows: Tensor, canvas: Tensor, lengths: Tensor) -> Tensor:
        plan = self.script[min(len(self.canvases), len(self.script) - 1)]
        self.canvases.append(canvas.tolist())
        self.lengths.append(lengths.tolist())
        batch, length = canvas.shape
        logits = torch.zeros(batch, length, VOCAB, dtype=torch.float64)
        for position in range(length):
            logits[:, position, 4 + position] = 1.0 - 0.01 * position
            if position in plan:
                logits[:, position, plan[position]] = SURE
        return logits


M, E, T = IDS.mask, IDS.eos, IDS.eot


def test_deliberation_keeps_the_words_after_an_eos_committed_in_a_masked_slot() -> None:
    first = FIRST_PASS[0]  # 10 tokens, int(10 * 0.3) = 3 masked at random
    masked = masks_in(_first_canvas(first), 10)
    script = {masked[0]: E, **{p: 19 for p in masked[1:]}}
    fake = Scripted([script])
    result = diffusion_deliberation(
        fake, [first], DeliberationOptions(mask_ratio=0.3, steps=64), ids=IDS, row_seeds=[7]
    )
    canvas = [E if p == masked[0] else 19 if p in masked else t for p, t in enumerate(first)]
    assert result.canvases == [canvas]
    assert result.tokens == [[t for t in canvas if t != E]]  # one slot, one word: 9 words left
    assert fake.canvases[0][0] == [M if p in masked else t for p, t in enumerate(first)]


def _first_canvas(first: list[int]) -> list[int]:
    """The first deliberation canvas of `first` (ratio 0.3, seed 7), as the decoder shows it."""
    recorder = Recorder(TinyPredictor(no_end=True))
    diffusion_deliberation(
        recorder, [first], DeliberationOptions(mask_ratio=0.3, steps=1), ids=IDS, row_seeds=[7]
    )
    return recorder.calls[0][1][0].tolist()


def test_an_eot_committed_mid_canvas_ends_nothing_unless_asked() -> None:
    # Step 1 commits EOT at position 2 (the surest); later steps fill the rest, one per step.
    authors, option = Scripted([{2: T}]), Scripted([{2: T}])
    kept = decode(authors, 1, gen_len=8, steps=8, block_length=8)
    ended = decode(option, 1, gen_len=8, steps=8, block_length=8, eot_ends_answer=True)
    assert authors.canvases[1] == [[M, M, T, M, M, M, M, M]]  # the authors keep MASK after EOT
    assert kept.canvases == [[4, 5, T, 7, 8, 9, 10, 11]] and kept.forward_passes == [8]
    assert kept.tokens == [[4, 5, 7, 8, 9, 10, 11]]
    assert option.canvases[1] == [[M, M, T, E, E, E, E, E]]
    assert ended.canvases == [[4, 5, T, E, E, E, E, E]] and ended.tokens == [[4, 5]]
    assert ended.forward_passes == [3]


RELEASED = {"gen_len": 8, "steps": 8, "block_length": 4, "threshold": 0.9}  # 2 blocks of 4


def test_first_pass_pruning_without_an_eos_prunes_nothing_and_decodes_every_slot() -> None:
    # Call 1 commits only position 0 (no EOS); call 2 commits EOS at 3; then 1, 2 and block 2.
    script = [{0: 4}, {3: E}, {1: 5, 2: 6}, {4: 8, 5: 9, 6: 10, 7: 11}]
    fake = Scripted(script)
    result = decode(fake, 1, prune="first_pass", **RELEASED)
    assert fake.lengths == [[8]] * 4  # never cut: the only pruning chance was call 1
    assert fake.canvases[2] == [[4, M, M, E, M, M, M, M]]  # no end rule after the EOS
    assert result.canvases == [[4, 5, 6, E, 8, 9, 10, 11]] and result.forward_passes == [4]
    assert result.tokens == [[4, 5, 6, 8, 9, 10, 11]]
    # The other two rules on the same logits: the per-round cut and the Whisper-LLaDA fill.
    every_round = Scripted(script)
    assert decode(every_round, 1, prune="every_round", **RELEASED).canvases == [[4, 5, 6, E]]
    assert every_round.lengths == [[8], [8], [4]]
    filled = decode(Scripted(script), 1, **RELEASED)
    assert filled.canvases == [[4, 5, 6, E, E, E, E, E]] and filled.forward_passes == [3]


def test_first_pass_pruning_cuts_before_the_first_eos_of_the_first_call_only() -> None:
    # Call 1 commits 0 and EOS at 2 (cut: length 2, the EOS dropped, block 2 gone); call 2
    # commits an EOS at 1, which only loses its own slot.
    fake = Scripted([{0: 4, 2: E, 3: E}, {1: E}])
    result = decode(fake, 1, prune="first_pass", **RELEASED)
    assert fake.lengths == [[8], [2]]
    assert result.canvases == [[4, E]] and result.tokens == [[4]]
    assert result.forward_passes == [2]  # the released code spends a third on the empty block


def reference_released_generate(
    predictor: MaskPredictor, row: int, *, gen_len: int, block_length: int, threshold: float
) -> tuple[list[int], list[int], int]:
    """The released dLLM-ASR `generate` for one row, as plainly as possible (systems.md).

    Returns (canvas, answer, passes), passes not counting the call the released code makes on
    a block that the cut emptied (it commits nothing).
    """
    x = [IDS.mask] * gen_len
    passes = calls = 0
    for block in range(gen_len // block_length):
        low, high = block * block_length, (block + 1) * block_length
        while True:
            calls += 1
            has_mask = IDS.mask in x[low:high]
            logits = predictor(torch.tensor([row]), torch.tensor([x]), torch.tensor([len(x)]))[0]
            passes += has_mask
            probs = logits.double().softmax(-1)
            confidence = [
                float(probs[p].max()) if x[p] == IDS.mask and p < high else -math.inf
                for p in range(len(x))
            ]
            chosen = {p for p, c in enumerate(confidence) if c >= threshold}
            chosen.add(max(range(len(x)), key=lambda p: (confidence[p], -p)))
            for p in chosen:
                if x[p] == IDS.mask:
                    x[p] = int(logits[p].argmax())
            if calls == 1 and IDS.eos in x:  # prune once, right before the first EOS
                x = x[: x.index(IDS.eos)]
            if IDS.mask not in x[low:high]:
                break
    return x, read_off(x), passes


@pytest.mark.parametrize("scale", [1.0, 4.0, 8.0])
def test_first_pass_pruning_equals_the_released_code(scale: float) -> None:
    predictor = TinyPredictor(scale=scale, ends={0: (2, IDS.eos), 1: (9, IDS.eot), 3: (5, IDS.eos)})
    options = DiffusionOptions(
        gen_len=GEN_LEN, steps=GEN_LEN, block_length=GEN_LEN // 2, threshold=0.9, prune="first_pass"
    )
    result = diffusion_decode(predictor, 4, options, ids=IDS)
    for row in range(4):
        canvas, answer, passes = reference_released_generate(
            predictor, row, gen_len=GEN_LEN, block_length=GEN_LEN // 2, threshold=0.9
        )
        assert result.canvases[row] == canvas and result.tokens[row] == answer
        assert result.forward_passes[row] == passes


def test_decode_rejects_bad_arguments() -> None:
    predictor = TinyPredictor()
    with pytest.raises(ValueError, match=r"steps \(6\) must be divisible by the number of blocks"):
        diffusion_decode(
            predictor, 1, DiffusionOptions(gen_len=GEN_LEN, steps=6, block_length=4), ids=IDS
        )
    with pytest.raises(ValueError, match=r"block_length \(5\) must divide gen_len \(16\)"):
        diffusion_decode(
            predictor, 1, DiffusionOptions(gen_len=GEN_LEN, steps=16, block_length=5), ids=IDS
        )
    for threshold in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\], got"):
            decode(predictor, 1, threshold=threshold)
    with pytest.raises(ValueError, match="threshold compares model confidences"):
        decode(predictor, 1, threshold=0.9, remasking="random")
    with pytest.raises(ValueError, match="unknown remasking 'lowest'"):
        decode(predictor, 1, remasking="lowest")
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        decode(predictor, 1, temperature=-1.0)
    with pytest.raises(ValueError, match="row_seeds has 1 seeds for 2 rows"):
        decode(predictor, 2, row_seeds=[0])
    with pytest.raises(ValueError, match=r"returned logits of shape \(1, 3, 20\)"):
        decode(lambda rows, canvas, lengths: predictor(rows, canvas, lengths)[:, :3], 1)
    with pytest.raises(ValueError, match="returned logits on meta but the canvas lives on cpu"):
        decode(lambda rows, canvas, lengths: predictor(rows, canvas, lengths).to("meta"), 1)


# ----------------------------------------------------------------------------- deliberation

FIRST_PASS = [
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
    [4, 5],
    [],
    [15, 16, 17, 18, 19, 4, 5],
    [9, 8, 7, 6, 5, 4, 19, 18, 17, 16, 15, 14, 13],
]


def masks_in(canvas_row: list[int], length: int) -> list[int]:
    return [p for p in range(length) if canvas_row[p] == IDS.mask]


@pytest.mark.parametrize("masking_type", ["random", "low_confidence"])
@pytest.mark.parametrize("steps", [64, 2])
def test_deliberation_batched_equals_per_row(masking_type: str, steps: int) -> None:
    seeds = [3, 1, 4, 1, 5]

    def run(predictor: MaskPredictor, selection: list[int]) -> DecodeResult:
        return diffusion_deliberation(
            predictor,
            [FIRST_PASS[r] for r in selection],
            DeliberationOptions(mask_ratio=0.4, masking_type=masking_type, steps=steps),
            ids=IDS,
            row_seeds=[seeds[r] for r in selection],
        )

    batched = assert_batched_equals_per_row(run, TinyPredictor(no_end=True), len(FIRST_PASS))
    scoring = 1 if masking_type == "low_confidence" else 0
    # int(len * 0.4) masks: 4, 0, 0, 2, 5 -> scoring pass + min(steps, masks)
    expected = [0 if m == 0 else scoring + min(steps, m) for m in (4, 0, 0, 2, 5)]
    assert batched.forward_passes == expected


def test_random_deliberation_masks_int_len_times_ratio_and_keeps_the_rest() -> None:
    recorder = Recorder(TinyPredictor(no_end=True))
    result = diffusion_deliberation(
        recorder, FIRST_PASS, DeliberationOptions(mask_ratio=0.3, steps=2), ids=IDS
    )
    rows, canvas, lengths, _ = recorder.calls[0]
    assert rows.tolist() == [0, 3, 4]  # the other rows get int(len * 0.3) == 0 masks
    for local, row in enumerate(rows.tolist()):
        tokens, length = canvas[local].tolist(), int(lengths[local])
        masked = masks_in(tokens, length)
        assert len(masked) == int(len(FIRST_PASS[row]) * 0.3)
        kept = [p for p in range(length) if p not in masked]
        assert [tokens[p] for p in kept] == [FIRST_PASS[row][p] for p in kept]
        assert [result.tokens[row][p] for p in kept] == [FIRST_PASS[row][p] for p in kept]
    assert result.tokens[1:3] == [[4, 5], []]
    assert result.forward_passes == [2, 0, 0, 2, 2]


def test_low_confidence_deliberation_masks_the_least_likely_first_pass_tokens() -> None:
    recorder = Recorder(TinyPredictor(no_end=True))
    result = diffusion_deliberation(
        recorder,
        FIRST_PASS,
        DeliberationOptions(mask_ratio=0.3, masking_type="low_confidence", steps=64),
        ids=IDS,
    )
    (score_rows, score_canvas, score_lengths, score_logits), (rows, canvas, *_) = recorder.calls[:2]
    assert score_rows.tolist() == rows.tolist() == [0, 3, 4]
    assert torch.equal(score_canvas, torch.full_like(score_canvas, IDS.pad))
    assert score_lengths.tolist() == [10, 7, 13]
    for local, row in enumerate(rows.tolist()):
        first = torch.tensor(FIRST_PASS[row])
        probs = score_logits[local, : len(first)].softmax(-1)[torch.arange(len(first)), first]
        lowest = sorted(probs.argsort()[: int(len(first) * 0.3)].tolist())
        assert masks_in(canvas[local].tolist(), len(first)) == lowest
    assert result.forward_passes == [1 + 3, 0, 0, 1 + 2, 1 + 3]


def test_deliberation_rejects_bad_arguments() -> None:
    for ratio in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"mask_ratio must lie in \[0, 1\], got"):
            diffusion_deliberation(
                TinyPredictor(), [[4]], DeliberationOptions(mask_ratio=ratio), ids=IDS
            )
    with pytest.raises(ValueError, match="unknown masking_type 'lowest'"):
        diffusion_deliberation(
            TinyPredictor(), [[4]], DeliberationOptions(masking_type="lowest"), ids=IDS
        )
    with pytest.raises(ValueError, match="num_chunks must be >= 1, got 0"):
        semi_ar_deliberation(
            TinyPredictor(), [[4]], SemiARDeliberationOptions(num_chunks=0), ids=IDS
        )
    with pytest.raises(ValueError, match=r"steps \(3\) must be at least num_chunks \(4\)"):
        semi_ar_deliberation(
            TinyPredictor(), [[4]], SemiARDeliberationOptions(num_chunks=4, steps=3), ids=IDS
        )


def test_semi_ar_deliberation_touches_only_the_current_chunk() -> None:
    recorder = Recorder(TinyPredictor(no_end=True))
    first = FIRST_PASS[0]  # 10 tokens in 3 chunks: 3, 3, 4
    result = semi_ar_deliberation(
        recorder, [first], SemiARDeliberationOptions(num_chunks=3, steps=9), ids=IDS
    )
    final = result.tokens[0]
    assert len(final) == 10 and result.forward_passes == [9]  # 3 + 3 + min(3, 4)
    chunks = [(0, 3), (3, 6), (6, 10)]
    for index, (_, canvas, *_) in enumerate(recorder.calls):
        start, end = chunks[index // 3]
        tokens = canvas[0].tolist()
        assert tokens[:start] == final[:start]  # corrected chunks, as written back
        assert tokens[end:] == first[end:]  # first-pass chunks still to come
        if index % 3 == 0:
            assert tokens[start:end] == [IDS.mask] * (end - start)
        assert all(tokens[p] == final[p] for p in range(start, end) if tokens[p] != IDS.mask)


@pytest.mark.parametrize("num_chunks", [1, 3, 4])
def test_semi_ar_batched_equals_per_row(num_chunks: int) -> None:
    def run(predictor: MaskPredictor, selection: list[int]) -> DecodeResult:
        return semi_ar_deliberation(
            predictor,
            [FIRST_PASS[r] for r in selection],
            SemiARDeliberationOptions(num_chunks=num_chunks, steps=12),
            ids=IDS,
        )

    batched = assert_batched_equals_per_row(run, TinyPredictor(), len(FIRST_PASS))
    per_chunk = 12 // num_chunks
    for row, tokens in enumerate(FIRST_PASS):  # passes = sum over chunks of min(steps, size)
        size = len(tokens) // num_chunks
        sizes = [size] * (num_chunks - 1) + [len(tokens) - size * (num_chunks - 1)]
        assert batched.forward_passes[row] == sum(min(per_chunk, s) for s in sizes)
    assert batched.forward_passes[1] == min(per_chunk, 2)  # 2 tokens: empty chunks + one of 2


# ----------------------------------------------------------------------------- prior_guided

PRIORS = [[5, 6, 7, 8, 9, 10], [4, 5], [], [11, 12, 13, 14, 15, 16, 17, 18, 19, 4], [7, 8, 9]]
PRIOR_CONFIDENCES = [
    [0.9, 0.2, 0.8, 0.1, 0.95, 0.6],
    [0.3, 0.7],
    [],
    [0.9] * 5 + [0.4] * 5,
    [0.5, 0.49, 1.0],
]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"prune": "none"},
        {"prune": "every_round", "eot_ends_answer": True},
        {"prior_treatment": "mask_below", "prior_confidences": PRIOR_CONFIDENCES},
        {"early_exit": False, "max_rounds": 8},
        {"threshold": 0.3, "margin": 2, "prune": "none", "max_rounds": 3},
        {"scale": 4.0, "margin": 0, "prune": "every_round"},
    ],
)
def test_prior_guided_batched_equals_per_row(options: dict) -> None:
    options = dict(options)
    predictor = TinyPredictor(scale=options.pop("scale", 1.0))
    confidences = options.pop("prior_confidences", None)

    def run(predictor: MaskPredictor, selection: list[int]) -> DecodeResult:
        chosen = None if confidences is None else [confidences[r] for r in selection]
        return prior_guided_decode(
            predictor,
            [PRIORS[r] for r in selection],
            PriorGuidedOptions(**options),
            ids=IDS,
            prior_confidences=chosen,
        )

    batched = assert_batched_equals_per_row(run, predictor, len(PRIORS))
    assert len(set(batched.forward_passes)) > 1


def test_prior_guided_with_a_confident_predictor_takes_one_round() -> None:
    recorder = Recorder(TinyPredictor(scale=CONFIDENT, no_end=True))
    result = prior_guided_decode(recorder, PRIORS, PriorGuidedOptions(margin=3), ids=IDS)
    assert result.forward_passes == [1] * len(PRIORS)
    _, _, lengths, logits = recorder.calls[0]
    assert lengths.tolist() == [len(p) + 3 + 1 for p in PRIORS]
    for row, length in enumerate(lengths.tolist()):
        assert float(logits[row, : length - 1].softmax(-1).amax(-1).min()) >= 0.9
        assert result.tokens[row] == logits[row, : length - 1].argmax(-1).tolist()


def test_prior_guided_rounds_are_capped_and_leftovers_take_the_latest_argmax() -> None:
    recorder = Recorder(TinyPredictor(no_end=True))
    result = prior_guided_decode(recorder, PRIORS[:1], PriorGuidedOptions(max_rounds=1), ids=IDS)
    (_, canvas, _, logits) = recorder.calls[0]
    assert canvas[0].tolist() == [*PRIORS[0], *[IDS.mask] * 4, IDS.eos]
    assert result.forward_passes == [1]
    assert result.tokens[0] == logits[0, :10].argmax(-1).tolist()
    capped = prior_guided_decode(TinyPredictor(), PRIORS, PriorGuidedOptions(max_rounds=3), ids=IDS)
    assert max(capped.forward_passes) == 3


def test_visible_and_mask_below_differ_in_the_first_canvas() -> None:
    first_canvases = []
    for treatment in ("visible", "mask_below"):
        recorder = Recorder(TinyPredictor())
        prior_guided_decode(
            recorder,
            PRIORS[:2],
            PriorGuidedOptions(margin=2, prior_treatment=treatment, prior_confidence_floor=0.5),
            ids=IDS,
            prior_confidences=PRIOR_CONFIDENCES[:2],
        )
        first_canvases.append(recorder.calls[0][1].tolist())
    m, e, p = IDS.mask, IDS.eos, IDS.pad
    assert first_canvases[0] == [[5, 6, 7, 8, 9, 10, m, m, e], [4, 5, m, m, e, p, p, p, p]]
    assert first_canvases[1] == [[5, m, 7, m, 9, 10, m, m, e], [m, 5, m, m, e, p, p, p, p]]
    # Without prior confidences every prior token counts as confident.
    recorder = Recorder(TinyPredictor())
    prior_guided_decode(
        recorder, PRIORS[:2], PriorGuidedOptions(margin=2, prior_treatment="mask_below"), ids=IDS
    )
    assert recorder.calls[0][1].tolist() == first_canvases[0]


def test_early_exit_off_commits_exactly_one_position_per_round() -> None:
    recorder = Recorder(TinyPredictor(scale=CONFIDENT, no_end=True))
    result = prior_guided_decode(
        recorder, PRIORS, PriorGuidedOptions(margin=2, early_exit=False), ids=IDS
    )
    # At least one commit per round and one round per pending position: exactly one per round,
    # although this predictor is sure of every position (early exit would take one round).
    assert result.forward_passes == [len(prior) + 2 for prior in PRIORS]
    row_0 = [canvas[0] for rows, canvas, *_ in recorder.calls if rows[0] == 0]
    masks_per_round = [int((canvas == IDS.mask).sum()) for canvas in row_0]
    assert masks_per_round[0] == 2 and len(masks_per_round) == len(PRIORS[0]) + 2
    assert all(a - b in (0, 1) for a, b in itertools.pairwise(masks_per_round))
    assert (
        prior_guided_decode(recorder, PRIORS, PriorGuidedOptions(margin=2), ids=IDS).forward_passes
        == [1] * 5
    )


def test_prune_cuts_the_canvas_after_a_committed_end() -> None:
    # Row 0 commits EOS at position 2 in round 1, row 1 commits EOT at position 1 and is done.
    ends = {0: (2, IDS.eos), 1: (1, IDS.eot)}
    seen = {}
    for prune in ("every_round", "none"):
        recorder = Recorder(TinyPredictor(scale=4.0, ends=ends))
        result = prior_guided_decode(
            recorder, PRIORS[:2], PriorGuidedOptions(prune=prune, eot_ends_answer=True), ids=IDS
        )
        assert result.tokens == [[4, 9], [5]] and result.forward_passes == [2, 1]
        seen[prune] = [
            (lengths.tolist(), canvas.tolist()) for _, canvas, lengths, _ in recorder.calls
        ]
    assert [lengths for lengths, _ in seen["every_round"]] == [[11, 7], [3]]
    assert seen["every_round"][1][1] == [[13, 10, IDS.eos]]
    assert [lengths for lengths, _ in seen["none"]] == [[11, 7], [11]]
    assert seen["none"][1][1] == [[13, 10, *[IDS.eos] * 9]]


def test_prior_guided_prunes_once_before_the_first_eos_by_default() -> None:
    # Round 1 commits EOS at 2 of a canvas of 6 + 4 + 1 slots: cut to 2, the EOS dropped.
    script = [{0: 9, 2: E}, {1: 8, 5: E}, {}]
    fake = Scripted(script)
    result = prior_guided_decode(fake, PRIORS[:1], PriorGuidedOptions(margin=4), ids=IDS)
    assert fake.lengths == [[11], [2]] and result.canvases == [[9, 8]]
    # Without an EOS in round 1 the cut drops the trailing EOS (7 -> 6 slots); an EOS committed
    # later at 5 ends nothing: every slot is decoded and the read-off drops only the EOS.
    fake = Scripted([{0: 9}, *script[1:]])
    result = prior_guided_decode(fake, PRIORS[1:2], PriorGuidedOptions(margin=4), ids=IDS)
    assert fake.canvases[0] == [[4, 5, M, M, M, M, E]]
    assert fake.lengths == [[7], [6], [6], [6], [6]]
    assert result.canvases == [[9, 8, 6, 7, 8, E]] and result.tokens == [[9, 8, 6, 7, 8]]


def test_prior_guided_empty_prior() -> None:
    recorder = Recorder(TinyPredictor(no_end=True))
    result = prior_guided_decode(recorder, [[], []], PriorGuidedOptions(margin=2), ids=IDS)
    assert recorder.calls[0][1].tolist() == [[IDS.mask, IDS.mask, IDS.eos]] * 2
    assert [len(tokens) for tokens in result.tokens] == [2, 2]
    nothing = prior_guided_decode(
        Recorder(TinyPredictor()), [[]], PriorGuidedOptions(margin=0), ids=IDS
    )
    assert nothing == DecodeResult(tokens=[[]], forward_passes=[0], canvases=[[IDS.eos]])


def test_prior_guided_rejects_bad_arguments() -> None:
    predictor = TinyPredictor()
    for threshold in (0.0, 1.01):
        with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\]"):
            prior_guided_decode(predictor, [[4]], PriorGuidedOptions(threshold=threshold), ids=IDS)
    with pytest.raises(ValueError, match=r"prior_confidences\[0\] has 1 values for a prior of 2"):
        prior_guided_decode(predictor, [[4, 5]], ids=IDS, prior_confidences=[[0.5]])
    with pytest.raises(ValueError, match="unknown prior_treatment 'hidden'"):
        prior_guided_decode(predictor, [[4]], PriorGuidedOptions(prior_treatment="hidden"), ids=IDS)
    with pytest.raises(ValueError, match="max_rounds must be >= 1, got 0"):
        prior_guided_decode(predictor, [[4]], PriorGuidedOptions(max_rounds=0), ids=IDS)
