"""train.init_prefixes: a run starts from part of another model's checkpoint (a Whisper-LLaDA encoder and projector in a Whisper-LLaMA), strictly inside the prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from whisper_llada.config_strict import to_dict
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import (
    CheckpointError,
    read_checkpoint,
    save_checkpoint,
    write_checkpoint,
)
from whisper_llada.training import loop

SEED = 3
TRAIN_ALL = ("model.train_encoder=true", "model.train_llm=true", "model.lora.r=0")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def llada_checkpoint(tiny_config, tmp_path_factory) -> Path:
    """A Whisper-LLaDA checkpoint with encoder, projector, CTC head and LoRA factors, all moved."""
    cfg = tiny_config("model.train_encoder=true")
    torch.manual_seed(0)
    model, _ = build_model(cfg.model)
    with torch.no_grad():  # stands in for training: every trainable weight moves
        for parameter in model.trainable_parameters().values():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("llada_run") / "model.safetensors"
    return save_checkpoint(model, path, config=to_dict(cfg))


def build(cfg):
    return loop.build_trainable_model(cfg, CPU, None, announce=True)[0]


def test_only_the_tensors_under_the_prefixes_are_loaded(llada_checkpoint, tiny_ar_config, capsys):
    tensors, _, _ = read_checkpoint(llada_checkpoint)
    assert {name.split(".")[0] for name in tensors} == {"encoder", "projector", "ctc_head", "llada"}
    cfg = tiny_ar_config(
        *TRAIN_ALL,
        f"train.seed={SEED}",
        f"train.init_checkpoint={llada_checkpoint}",
        "train.init_prefixes=[encoder., projector.]",
    )
    model = build(cfg)
    torch.manual_seed(SEED)  # as train.py builds: what the model holds without a checkpoint
    fresh = build_model(cfg.model)[0].state_dict()
    state = model.state_dict()
    loaded = sorted(name for name in tensors if name.startswith(("encoder.", "projector.")))
    assert loaded and all(torch.equal(state[name], tensors[name]) for name in loaded)
    assert not any(torch.equal(fresh[name], tensors[name]) for name in loaded)
    as_built = sorted(set(state) - set(loaded))
    assert any(name.startswith("llama.") for name in as_built)
    assert all(torch.equal(state[name], fresh[name]) for name in as_built)
    trainable = len(model.trainable_parameters())
    assert capsys.readouterr().out == (
        f"weights under encoder., projector. from {llada_checkpoint} ({len(loaded)} tensors); "
        f"{trainable - len(loaded)} trainable tensors start as built\n"
    )


def test_without_prefixes_every_tensor_must_fit(llada_checkpoint, tiny_ar_config):
    cfg = tiny_ar_config(*TRAIN_ALL, f"train.init_checkpoint={llada_checkpoint}")
    with pytest.raises(CheckpointError, match=r"unexpected keys: ctc_head\."):
        build(cfg)


def test_a_prefix_that_matches_nothing_is_named(llada_checkpoint, tiny_ar_config):
    cfg = tiny_ar_config(
        *TRAIN_ALL,
        f"train.init_checkpoint={llada_checkpoint}",
        "train.init_prefixes=[encoder., decoder., projector]",
    )
    with pytest.raises(CheckpointError) as raised:
        build(cfg)
    assert str(raised.value) == (
        f"{llada_checkpoint} does not fit train.init_prefixes=['encoder.', 'decoder.', "
        "'projector'] (1 prefixes matching no tensor of the checkpoint: decoder.)"
    )


def test_tensors_the_model_lacks_are_named(llada_checkpoint, tiny_ar_config):
    tensors, _, _ = read_checkpoint(llada_checkpoint)
    lora = sorted(name for name in tensors if name.startswith("llada."))
    cfg = tiny_ar_config(
        *TRAIN_ALL,
        f"train.init_checkpoint={llada_checkpoint}",
        "train.init_prefixes=[projector., llada.]",
    )
    shown = ", ".join(lora[:10]) + (" ..." if len(lora) > 10 else "")
    with pytest.raises(CheckpointError) as raised:
        build(cfg)
    assert str(raised.value) == (
        f"{llada_checkpoint} does not fit train.init_prefixes=['projector.', 'llada.'] "
        f"({len(lora)} tensors this model lacks: {shown})"
    )


def test_a_frozen_target_and_another_shape_are_named(llada_checkpoint, tiny_ar_config, tmp_path):
    tensors, config, metadata = read_checkpoint(llada_checkpoint)
    name = "projector.linear_proj.weight"
    rows, columns = tensors[name].shape
    tensors[name] = torch.zeros(rows + 1, columns)
    changed = write_checkpoint(
        tensors, tmp_path / "changed.safetensors", config=config, metadata=metadata
    )
    frozen_encoder = tiny_ar_config(  # the encoder frozen: its checkpoints would not keep it
        "model.train_llm=true",
        "model.lora.r=0",
        f"train.init_checkpoint={changed}",
        "train.init_prefixes=[encoder.conv1., projector.linear_proj.]",
    )
    with pytest.raises(CheckpointError) as raised:
        build(frozen_encoder)
    assert str(raised.value) == (
        f"{changed} does not fit train.init_prefixes=['encoder.conv1.', "
        "'projector.linear_proj.'] (2 tensors frozen in this model (its checkpoints would not "
        "keep them): encoder.conv1.bias, encoder.conv1.weight; 1 shape mismatches: "
        f"{name}: file ({rows + 1}, {columns}) vs model ({rows}, {columns}))"
    )


def test_prefixes_need_a_checkpoint(tiny_ar_config):
    with pytest.raises(SystemExit) as stopped:
        loop.check_config(
            tiny_ar_config("data.train_manifests=[x.jsonl]", "train.init_prefixes=[encoder.]")
        )
    assert str(stopped.value) == (
        "train.init_prefixes selects tensors of train.init_checkpoint: set that too, or leave "
        "train.init_prefixes empty"
    )
