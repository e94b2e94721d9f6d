"""AdamW parameter groups (the authors' decay rule) and the warm-up + cosine learning rate."""

from __future__ import annotations

import pytest
import torch

from whisper_llada.config import TrainConfig
from whisper_llada.models.build import build_model
from whisper_llada.training.optim import build_optimizer, decays, lr_at, parameter_groups

QFORMER_LAYER_MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "crossattention.self.query",
    "crossattention.self.key",
    "crossattention.self.value",
    "crossattention.output.dense",
    "intermediate_query.dense",
    "output_query.dense",
)
# Per Q-Former layer, in registration order: what never decays (biases, LayerNorm gains).
QFORMER_LAYER_VECTORS = (
    "attention.self.query.bias",
    "attention.self.key.bias",
    "attention.self.value.bias",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "crossattention.self.query.bias",
    "crossattention.self.key.bias",
    "crossattention.self.value.bias",
    "crossattention.output.dense.bias",
    "crossattention.output.LayerNorm.weight",
    "crossattention.output.LayerNorm.bias",
    "intermediate_query.dense.bias",
    "output_query.dense.bias",
    "output_query.LayerNorm.weight",
    "output_query.LayerNorm.bias",
)
LORA_PREFIX = "llada.base_model.model.model.transformer.blocks"


def tiny_decayed_names() -> list[str]:
    """Every matrix of the tiny model of configs/tiny.yaml (2 Q-Former layers, 2 LLaDA blocks)."""
    qformer = [
        f"projector.bert.encoder.layer.{layer}.{module}.weight"
        for layer in range(2)
        for module in QFORMER_LAYER_MATRICES
    ]
    lora = [
        f"{LORA_PREFIX}.{block}.{target}.lora_{factor}.default.weight"
        for block in range(2)
        for target in ("q_proj", "k_proj", "v_proj")
        for factor in ("A", "B")
    ]
    return [
        "projector.query_tokens",
        *qformer,
        "projector.linear_proj.weight",
        *lora,
        "ctc_head.proj.weight",
    ]


def tiny_kept_names() -> list[str]:
    """Biases, LayerNorm gains and the CTC blank vector of the tiny model."""
    qformer = [
        f"projector.bert.encoder.layer.{layer}.{name}"
        for layer in range(2)
        for name in QFORMER_LAYER_VECTORS
    ]
    return [
        "projector.bert.embeddings.LayerNorm.weight",
        "projector.bert.embeddings.LayerNorm.bias",
        *qformer,
        "projector.linear_proj.bias",
        "ctc_head.blank",
        "ctc_head.norm.weight",
        "ctc_head.norm.bias",
        "ctc_head.proj.bias",
    ]


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    model, _ = build_model(tiny_config().model)
    return model


def test_parameter_groups_of_the_tiny_model(tiny_model):
    groups = parameter_groups(tiny_model.trainable_parameters(), weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert [name for name, _ in groups[0]["params"]] == tiny_decayed_names()
    assert [name for name, _ in groups[1]["params"]] == tiny_kept_names()


def test_optimizer_keeps_the_groups_names_and_recipe(tiny_model):
    cfg = TrainConfig(lr=3e-5, warmup_start_lr=1e-6, weight_decay=0.05, betas=(0.9, 0.98))
    optimizer = build_optimizer(tiny_model.trainable_parameters(), cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    first, second = optimizer.state_dict()["param_groups"]
    assert first["param_names"] == tiny_decayed_names()
    assert second["param_names"] == tiny_kept_names()
    assert (first["weight_decay"], second["weight_decay"]) == (0.05, 0.0)
    assert first["betas"] == (0.9, 0.98)
    assert first["lr"] == second["lr"] == 1e-6  # the warm-up's first value


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("encoder.blocks.0.attn.query.weight", (4, 4), True),
        ("projector.query_tokens", (1, 4, 8), True),
        ("adapter.conv.weight", (8, 8, 3), True),
        ("kiln.weight", (4, 4), True),  # "ln" only counts as a whole name component
        ("encoder.ln_post.weight", (4, 4), False),
        ("blocks.0.ln1.weight", (4, 4), False),
        ("x.LayerNorm.weight", (4, 4), False),
        ("x.attn_norm.weight", (4, 4), False),
        ("x.dense.bias", (4, 4), False),
        ("x.dense.weight", (4,), False),  # 1-D never decays
    ],
)
def test_decay_rule(name, shape, expected):
    assert decays(name, torch.empty(shape)) is expected


def test_nothing_to_train_is_refused():
    with pytest.raises(ValueError, match=r"there is nothing to train.*train\.trainable"):
        build_optimizer({}, TrainConfig())


def test_lr_schedule_at_its_landmarks():
    cfg = TrainConfig(
        lr=3e-5, warmup_start_lr=1e-6, warmup_steps=3000, min_lr=1e-5, max_steps=363000
    )
    assert lr_at(0, cfg) == 1e-6
    assert lr_at(1500, cfg) == pytest.approx(1.55e-5, rel=1e-12)
    assert lr_at(3000, cfg) == 3e-5
    assert lr_at(183000, cfg) == pytest.approx(2e-5, rel=1e-12)  # half-way down the cosine
    assert lr_at(363000, cfg) == 1e-5
    assert lr_at(400000, cfg) == 1e-5
    assert lr_at(1, cfg) > lr_at(0, cfg) and lr_at(3001, cfg) < lr_at(3000, cfg)


def test_lr_without_warm_up_starts_at_the_peak():
    cfg = TrainConfig(lr=1e-3, warmup_steps=0, min_lr=0.0, max_steps=10)
    assert [round(lr_at(s, cfg), 12) for s in (0, 5, 10)] == [1e-3, 5e-4, 0.0]
    with pytest.raises(ValueError, match="step must be >= 0"):
        lr_at(-1, cfg)
