"""Tests for the projectors: window Q-Former, conv adapter and frame stacking."""

from __future__ import annotations

import pytest
import torch

from whisper_llada.models.projector import ConvAdapter, FrameStackMLP, RMSNormedProjector
from whisper_llada.models.qformer import WindowQFormer

ENC = 16  # tiny encoder width
LLM = 8  # tiny LLM width
FULL_CLIP_FRAMES = 1500  # whisper-large-v3 frames for 30 s
LENGTHS = [1500, 701, 33, 5]
# Expected audio vectors for LENGTHS, computed by hand from each system's geometry:
# Q-Former 4 * max(1, (F_b - 17) // 17 + 1); conv P = ceil(F_b / 2) pooled -> (P - 1) // 2 + 1;
# frame stacking ceil(F_b / 5).
EXPECTED_VECTORS = {
    "qformer": [352, 164, 4, 4],
    "conv": [375, 176, 9, 2],
    "stack": [300, 141, 7, 1],
}


def tiny_qformer(**overrides: float) -> WindowQFormer:
    return WindowQFormer(ENC, LLM, hidden=32, num_heads=4, ffn=64, **overrides)


BUILDERS = {
    "qformer": tiny_qformer,
    "qformer_overlap": lambda: tiny_qformer(second_stride=0.16),  # window 17, stride 8
    "conv": lambda: ConvAdapter(ENC, LLM, hidden=24),
    "stack": lambda: FrameStackMLP(ENC, LLM, hidden=24),
    "conv_rms": lambda: RMSNormedProjector(ConvAdapter(ENC, LLM, hidden=24), LLM, 0.05),
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[name]().eval()


def padded_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frames; the padding holds huge values so that any leak shows."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(len(lengths), max(lengths), ENC, generator=generator)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    noise = 1e3 * torch.randn(frames.shape, generator=generator)
    return torch.where(mask[..., None], frames, noise), mask


# ---------------------------------------------------------------- window Q-Former geometry


def test_qformer_full_clip_gives_352_vectors() -> None:
    qformer = build("qformer")
    frames, mask = padded_batch([FULL_CLIP_FRAMES, FULL_CLIP_FRAMES])
    with torch.no_grad():
        vectors, vector_mask = qformer(frames, mask)
    assert (qformer.window, qformer.stride) == (17, 17)
    assert vectors.shape == (2, 352, LLM)
    assert vector_mask.all()
    assert qformer.output_lengths(torch.tensor([FULL_CLIP_FRAMES])).tolist() == [352]


def test_qformer_window_geometry() -> None:
    qformer = build("qformer")
    frames, mask = padded_batch([FULL_CLIP_FRAMES])
    with torch.no_grad():
        base, _ = qformer(frames, mask)
        inside = frames.clone()
        inside[0, 17 * 3 + 5] += 1.0
        changed = (qformer(inside, mask)[0] - base).abs().amax(-1)[0] > 0
        dropped = frames.clone()
        dropped[0, 1496:] += 1.0
        after_dropped, _ = qformer(dropped, mask)
    assert changed.nonzero().flatten().tolist() == [12, 13, 14, 15]
    assert torch.equal(after_dropped, base)


def rename_for_transformers(name: str) -> str:
    """Our `bert.*` names -> transformers' Blip2QFormerModel names."""
    name = name.replace("embeddings.LayerNorm", "layernorm")
    return name.replace("attention.self.", "attention.attention.")


def test_qformer_agrees_with_transformers_blip2_qformer() -> None:
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    qformer = build("qformer")
    config = Blip2QFormerConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        cross_attention_frequency=1,
        encoder_hidden_size=ENC,
        use_qformer_text_input=False,
    )
    reference = Blip2QFormerModel(config).eval()
    state = {rename_for_transformers(k): v for k, v in qformer.bert.state_dict().items()}
    reference.load_state_dict(state, strict=True)

    frames, mask = padded_batch([FULL_CLIP_FRAMES, 5])
    # The authors' windowing: cut to 88 * 17 = 1496 frames, one Q-Former item per window.
    windows = torch.cat([frames[0, :1496].reshape(88, 17, ENC), frames[1:, :17]])
    window_mask = torch.cat([torch.ones(88, 17, dtype=torch.long), mask[1:, :17].long()])
    with torch.no_grad():
        hidden = reference(
            query_embeds=qformer.query_tokens.expand(89, -1, -1),
            encoder_hidden_states=windows,
            encoder_attention_mask=window_mask,
        ).last_hidden_state  # (89, 4, 32)
        expected = qformer.linear_proj(hidden).reshape(-1, LLM)  # window-major, query-minor
        vectors, vector_mask = qformer(frames, mask)
    torch.testing.assert_close(vectors[vector_mask], expected, atol=1e-5, rtol=0)


# Reference sections 2a and 2c: the used keys of the released checkpoint, renamed
# (`speech_query_tokens` -> `query_tokens`, `adapter.bert.` -> `bert.`), with their shapes.
REFERENCE_LAYER_TABLE = [
    ("attention.self.query.weight", (768, 768)),
    ("attention.self.query.bias", (768,)),
    ("attention.self.key.weight", (768, 768)),
    ("attention.self.key.bias", (768,)),
    ("attention.self.value.weight", (768, 768)),
    ("attention.self.value.bias", (768,)),
    ("attention.output.dense.weight", (768, 768)),
    ("attention.output.dense.bias", (768,)),
    ("attention.output.LayerNorm.weight", (768,)),
    ("attention.output.LayerNorm.bias", (768,)),
    ("crossattention.self.query.weight", (768, 768)),
    ("crossattention.self.query.bias", (768,)),
    ("crossattention.self.key.weight", (768, 1280)),
    ("crossattention.self.key.bias", (768,)),
    ("crossattention.self.value.weight", (768, 1280)),
    ("crossattention.self.value.bias", (768,)),
    ("crossattention.output.dense.weight", (768, 768)),
    ("crossattention.output.dense.bias", (768,)),
    ("crossattention.output.LayerNorm.weight", (768,)),
    ("crossattention.output.LayerNorm.bias", (768,)),
    ("intermediate_query.dense.weight", (3072, 768)),
    ("intermediate_query.dense.bias", (3072,)),
    ("output_query.dense.weight", (768, 3072)),
    ("output_query.dense.bias", (768,)),
    ("output_query.LayerNorm.weight", (768,)),
    ("output_query.LayerNorm.bias", (768,)),
]
REFERENCE_TABLE = {
    "query_tokens": (1, 4, 768),
    "bert.embeddings.LayerNorm.weight": (768,),
    "bert.embeddings.LayerNorm.bias": (768,),
    **{
        f"bert.encoder.layer.{i}.{name}": shape
        for i in range(2)
        for name, shape in REFERENCE_LAYER_TABLE
    },
    "linear_proj.weight": (4096, 768),
    "linear_proj.bias": (4096,),
}
# Section 1: 63,827,002 distinct trainable elements, minus the LoRA factors (192 of 8 x 4096)
# and minus the unused Q-Former tensors of section 3 (word and position embeddings, the text
# FFN of both layers, the MLM head's bias, transform dense and LayerNorm).
RELEASED_TRAINABLE = 63_827_002
LORA = 192 * 8 * 4096
UNUSED = (
    30522 * 768
    + 512 * 768
    + 2 * (3072 * 768 + 3072 + 768 * 3072 + 768 + 2 * 768)
    + (30522 + 768 * 768 + 768 + 2 * 768)
)
QFORMER_PARAMETERS = 23_630_848


def test_qformer_real_size_matches_released_checkpoint() -> None:
    with torch.device("meta"):
        qformer = WindowQFormer(1280, 4096)
    shapes = {name: tuple(t.shape) for name, t in qformer.state_dict().items()}
    assert len(REFERENCE_TABLE) == 54 + 3
    assert shapes == REFERENCE_TABLE
    assert list(shapes) == WindowQFormer.parameter_names()
    count = sum(p.numel() for p in qformer.parameters())
    assert count == QFORMER_PARAMETERS == RELEASED_TRAINABLE - LORA - UNUSED
    assert all(p.dtype == torch.float32 and p.requires_grad for p in qformer.parameters())


# ---------------------------------------------------------------- all projectors


@pytest.mark.parametrize("name", ["qformer", "conv", "stack"])
def test_output_lengths_agree_with_vector_mask(name: str) -> None:
    projector = build(name)
    frames, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        vectors, vector_mask = projector(frames, mask)
    assert projector.output_lengths(torch.tensor(LENGTHS)).tolist() == EXPECTED_VECTORS[name]
    assert vector_mask.sum(1).tolist() == EXPECTED_VECTORS[name]
    assert vectors.shape == (len(LENGTHS), EXPECTED_VECTORS[name][0], LLM)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_batched_equals_per_utterance(name: str) -> None:
    projector = build(name)
    lengths = [1500, 701, 33, 5]
    frames, mask = padded_batch(lengths)
    with torch.no_grad():
        vectors, vector_mask = projector(frames, mask)
        for row, length in enumerate(lengths):
            alone, alone_mask = projector(
                frames[row : row + 1, :length], mask[row : row + 1, :length]
            )
            count = int(projector.output_lengths(torch.tensor([length])))
            assert alone.shape == (1, count, LLM) and alone_mask.all()
            torch.testing.assert_close(vectors[row, :count], alone[0], atol=1e-5, rtol=0)
            assert not vector_mask[row, count:].any()
            assert not vectors[row, count:].any()  # padded vectors are exactly zero


@pytest.mark.parametrize("name", ["qformer", "conv", "stack"])
def test_half_precision_frames_give_float32_vectors(name: str) -> None:
    projector = build(name)
    frames, mask = padded_batch([40, 23])
    frames = frames.to(torch.bfloat16)
    with torch.no_grad():
        vectors, _ = projector(frames, mask)
        from_float, _ = projector(frames.float(), mask)
    assert vectors.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in projector.parameters())
    assert torch.equal(vectors, from_float)


@pytest.mark.parametrize("name", ["qformer", "conv", "stack"])
def test_gradients_reach_every_parameter(name: str) -> None:
    projector = build(name).train()
    frames, mask = padded_batch([120, 40])
    vectors, _ = projector(frames, mask)
    (vectors * torch.randn(vectors.shape)).sum().backward()
    no_grad = [n for n, p in projector.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    if name == "qformer":
        assert [n for n, _ in projector.named_parameters()] == WindowQFormer.parameter_names()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["qformer", "conv", "stack"])
def test_errors_name_the_problem(name: str) -> None:
    projector = build(name)
    frames, mask = padded_batch([30, 20])
    with pytest.raises(ValueError, match=r"frames must have shape \(B, F, 16\), got \(2, 30, 7\)"):
        projector(frames[..., :7], mask)
    with pytest.raises(ValueError, match=r"frame_mask must be a bool tensor of shape \(2, 30\)"):
        projector(frames, mask.long())
    with pytest.raises(ValueError, match=r"rows \[1\] of frame_mask have no valid encoder frame"):
        projector(frames, torch.stack([mask[0], torch.zeros(30, dtype=torch.bool)]))
    with pytest.raises(ValueError, match="frame_mask must be True on a prefix of each row"):
        projector(frames, mask.flip(1))


def test_qformer_constructor_errors() -> None:
    with pytest.raises(ValueError, match="hidden=30 is not divisible by num_heads=4"):
        WindowQFormer(ENC, LLM, hidden=30, num_heads=4)
    with pytest.raises(ValueError, match="give a window of 0 and a stride of 0 frames"):
        WindowQFormer(ENC, LLM, second_per_window=0.001, second_stride=0.001)


def test_rms_norm_puts_every_audio_vector_at_the_gain_s_scale() -> None:
    projector = build("conv_rms")
    frames, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        vectors, vector_mask = projector(frames, mask)
        bare, bare_mask = projector.projector(frames, mask)
    assert torch.equal(vector_mask, bare_mask)
    assert projector.output_lengths(torch.tensor(LENGTHS)).tolist() == EXPECTED_VECTORS["conv"]
    rms = vectors[vector_mask].pow(2).mean(-1).sqrt()  # every real vector at RMS 0.05
    torch.testing.assert_close(rms, torch.full_like(rms, 0.05), atol=0, rtol=1e-3)  # eps 1e-6
    assert float(bare[bare_mask].pow(2).mean().sqrt()) > 0.1  # what the adapter alone gives
    # The direction is the adapter's: normalising changes only each vector's length.
    cosine = torch.nn.functional.cosine_similarity(vectors[vector_mask], bare[bare_mask], dim=-1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine), atol=1e-5, rtol=0)
