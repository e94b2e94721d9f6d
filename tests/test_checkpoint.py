"""Trainable-only checkpoints (round trip, strictness, atomic writes) and the released-checkpoint converter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from whisper_llada.config import load_config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.audio import batch_features
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models import checkpoint as ckpt
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import (
    CheckpointError,
    check_released_settings,
    convert_released_checkpoint,
    convert_released_state_dict,
    load_checkpoint,
    read_checkpoint,
    released_settings,
    save_checkpoint,
)
from whisper_llada.models.prompt import text_ids
from whisper_llada.models.real_shapes import build_real_shape_model
from whisper_llada.training.objective import training_loss


def trained_model(tiny_config, speech, *overrides):
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    mel, lengths = batch_features([speech[0][0]], cfg.audio.n_mels)
    batch = SpeechBatch(mel, lengths, [text_ids(tokenizer, speech[0][1])])
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    model.train()
    training_loss(
        model, batch, cfg.model, cfg.loss, torch.Generator().manual_seed(0)
    ).total.backward()
    optimizer.step()
    return cfg, model.eval(), batch


def logits(model, batch):
    answer = torch.full((1, 5), model.special.mask)
    with torch.no_grad():
        return model.answer_logits(model.encode_audio(batch.mel, batch.mel_lengths), answer)


def test_round_trip_gives_identical_outputs(tiny_config, speech, tmp_path):
    cfg, model, batch = trained_model(tiny_config, speech)
    path = save_checkpoint(
        model, tmp_path / "ckpt.safetensors", config=to_dict(cfg), metadata={"step": 1}
    )
    tensors, config, metadata = read_checkpoint(path)
    assert set(tensors) == set(model.trainable_parameters())
    assert config == to_dict(cfg) and metadata == {"step": 1}
    torch.manual_seed(123)  # a different random init: everything must come from the file
    fresh, _ = build_model(cfg.model)
    assert not torch.equal(logits(fresh, batch), logits(model, batch))
    assert load_checkpoint(fresh, path) == {"step": 1}
    assert torch.equal(logits(fresh, batch), logits(model, batch))
    for name, p in fresh.trainable_parameters().items():
        assert torch.equal(p, model.trainable_parameters()[name]), name


def test_loading_is_strict(tiny_config, speech, tmp_path):
    _, model, _ = trained_model(tiny_config, speech)
    tensors = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    cases = {
        "unexpected keys": {**tensors, "projector.extra.weight": torch.zeros(2)},
        "missing trainable keys": {
            k: v for k, v in tensors.items() if not k.startswith("ctc_head.")
        },
        "shape mismatches": {**tensors, "projector.linear_proj.bias": torch.zeros(3)},
    }
    for problem, state in cases.items():
        path = ckpt.write_checkpoint(
            state, tmp_path / f"{problem}.safetensors", config={}, metadata={}
        )
        with pytest.raises(CheckpointError, match=rf"does not match this model \(\d+ {problem}: "):
            load_checkpoint(model, path)
    other_rank, _ = build_model(tiny_config("model.lora.r=2").model)
    path = save_checkpoint(model, tmp_path / "r4.safetensors", config={})
    with pytest.raises(CheckpointError, match=r"shape mismatches: llada\.base_model.*lora_A"):
        load_checkpoint(other_rank, path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused_and_loads_nothing(
    tiny_config, speech, tmp_path, bad
):
    _, model, _ = trained_model(tiny_config, speech)
    tensors = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    name = next(k for k in tensors if k.startswith("projector."))
    tensors[name].view(-1)[3] = bad
    path = ckpt.write_checkpoint(tensors, tmp_path / "diverged.safetensors", config={}, metadata={})
    before = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    with pytest.raises(
        CheckpointError, match=rf"holds NaN or infinite values in 1 tensor\(s\): {name}\. "
    ):
        load_checkpoint(model, path)
    for key, value in model.trainable_parameters().items():
        assert torch.equal(value, before[key]), key


def test_unreadable_checkpoints_raise_clear_errors(tiny_config, speech, tmp_path):
    _, model, _ = trained_model(tiny_config, speech)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.safetensors"):
        load_checkpoint(model, tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(
        CheckpointError, match=r"bad\.safetensors is not a readable safetensors checkpoint"
    ):
        load_checkpoint(model, bad)


def test_a_failed_write_keeps_the_previous_checkpoint(tiny_config, speech, tmp_path, monkeypatch):
    _, model, _ = trained_model(tiny_config, speech)
    path = save_checkpoint(model, tmp_path / "ckpt.safetensors", config={}, metadata={"step": 1})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path, config={}, metadata={"step": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def released_key_shapes() -> dict[str, tuple[int, ...]]:
    """The 271 keys of the released checkpoint's "model" entry (reference document, section 2)."""
    h, ffn, enc, llm, r, vocab = 768, 3072, 1280, 4096, 8, 30522
    keys = {"speech_query_tokens": (1, 4, h)}
    for i in range(32):
        for proj in ("q_proj", "k_proj", "v_proj"):
            prefix = f"llada.base_model.model.model.transformer.blocks.{i}.{proj}"
            keys[f"{prefix}.lora_A.default.weight"] = (r, llm)
            keys[f"{prefix}.lora_B.default.weight"] = (llm, r)
    bert = "adapter.bert."
    keys[bert + "embeddings.position_ids"] = (1, 512)
    keys[bert + "embeddings.word_embeddings.weight"] = (vocab, h)
    keys[bert + "embeddings.position_embeddings.weight"] = (512, h)
    keys[bert + "embeddings.LayerNorm.weight"] = keys[bert + "embeddings.LayerNorm.bias"] = (h,)

    def linear(name, out, inp):
        keys[name + ".weight"], keys[name + ".bias"] = (out, inp), (out,)

    def norm(name):
        keys[name + ".weight"] = keys[name + ".bias"] = (h,)

    for i in range(2):
        layer = f"{bert}encoder.layer.{i}."
        for part, kv_width in (("attention", h), ("crossattention", enc)):
            linear(layer + part + ".self.query", h, h)
            linear(layer + part + ".self.key", h, kv_width)
            linear(layer + part + ".self.value", h, kv_width)
            linear(layer + part + ".output.dense", h, h)
            norm(layer + part + ".output.LayerNorm")
        for suffix in ("", "_query"):
            linear(layer + f"intermediate{suffix}.dense", ffn, h)
            linear(layer + f"output{suffix}.dense", h, ffn)
            norm(layer + f"output{suffix}.LayerNorm")
    keys["adapter.cls.predictions.bias"] = (vocab,)
    linear("adapter.cls.predictions.transform.dense", h, h)
    norm("adapter.cls.predictions.transform.LayerNorm")
    keys["adapter.cls.predictions.decoder.weight"] = (vocab, h)
    keys["adapter.cls.predictions.decoder.bias"] = (vocab,)
    linear("linear_proj", llm, h)
    return keys


def test_converter_maps_the_released_keys_onto_the_real_model():
    shapes = released_key_shapes()
    assert len(shapes) == 271
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 87_298_932  # as documented
    released = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted = convert_released_state_dict(released)
    assert len(converted) == 249  # the 22 unused tensors are dropped
    cfg = load_config(Path(__file__).parent.parent / "configs" / "whisper_llada.yaml").model
    model = build_real_shape_model(cfg, device="meta")
    trainable = {name: tuple(p.shape) for name, p in model.trainable_parameters().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == trainable


def authors_model_section(cfg) -> dict:
    """The `config["model"]` section the authors' runner saves, with the settings of our `cfg`."""
    return {
        "whisper_path": "/path/to/whisper",
        "llada_path": "/path/to/llada",
        "ckpt": "",
        "second_per_window": cfg.model.qformer.second_per_window,
        "second_stride": cfg.model.qformer.second_stride,
        "lora": cfg.model.lora.r > 0,
        "lora_rank": cfg.model.lora.r,
        "lora_alpha": cfg.model.lora.alpha,
        "lora_dropout": cfg.model.lora.dropout,
        "gen_len": cfg.decode.gen_len,
        "prompt_template": "USER: {}\nASSISTANT:",
        "task_prompt": cfg.model.prompt,
    }


def release_file(path: Path, state: dict, model_section: dict | None) -> Path:
    """A .pth laid out as the release (shared/reference/diffusion_asr_checkpoint_keys.md, section 1)."""
    config = {} if model_section is None else {"model": model_section, "datasets": {}, "run": {}}
    entries = {"model": state, "optimizer": {}, "scheduler": None, "config": config}
    torch.save({**entries, "scaler": None, "epoch": 143}, path)
    return path


def test_converter_round_trip_on_the_tiny_model(tiny_config, speech, tmp_path):
    cfg, model, batch = trained_model(tiny_config, speech, "model.ctc.enabled=false")
    ours = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    released = {}
    for key, value in ours.items():
        key = key.replace("projector.query_tokens", "speech_query_tokens")
        key = key.replace("projector.linear_proj", "linear_proj").replace(
            "projector.bert", "adapter.bert"
        )
        released[key] = value
    word_embeddings = torch.randn(50, 64)
    released["adapter.bert.embeddings.word_embeddings.weight"] = word_embeddings
    released["adapter.cls.predictions.decoder.weight"] = word_embeddings  # tied alias, as released
    released["adapter.bert.encoder.layer.0.intermediate.dense.weight"] = torch.randn(128, 64)
    released["adapter.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    source = release_file(
        tmp_path / "whisper-large-v3-llada-checkpoint_best_epoch_143.pth",
        released,
        authors_model_section(cfg),
    )
    out = convert_released_checkpoint(
        source, tmp_path / "converted.safetensors", config=to_dict(cfg)
    )
    torch.manual_seed(7)
    fresh, _ = build_model(cfg.model)
    settings = {
        "lora_rank": cfg.model.lora.r,
        "lora_alpha": cfg.model.lora.alpha,
        "lora_dropout": cfg.model.lora.dropout,
        "second_per_window": cfg.model.qformer.second_per_window,
        "second_stride": cfg.model.qformer.second_stride,
        "task_prompt": cfg.model.prompt,
        "gen_len": cfg.decode.gen_len,
    }
    assert load_checkpoint(fresh, out) == {
        "converted_from": source.name,
        "epoch": 143,
        "released_settings": settings,
    }
    assert read_checkpoint(out)[1] == to_dict(cfg)
    assert torch.equal(logits(fresh, batch), logits(model, batch))


def test_converter_refuses_a_config_that_differs_from_the_release_settings(tiny_config, tmp_path):
    cfg = tiny_config()
    section = authors_model_section(cfg) | {"lora_alpha": 2 * cfg.model.lora.alpha}
    section |= {"task_prompt": "Transcribe:", "lora": False}
    source = release_file(tmp_path / "release.pth", {}, section)
    with pytest.raises(CheckpointError) as error:
        convert_released_checkpoint(source, tmp_path / "out.safetensors", config=to_dict(cfg))
    assert str(error.value) == (
        "the config does not match the settings the release was trained with: "
        f"model.lora.r: the release has 0 (lora_rank), ours {cfg.model.lora.r}; "
        f"model.lora.alpha: the release has {2 * cfg.model.lora.alpha} (lora_alpha), ours "
        f"{cfg.model.lora.alpha}; model.prompt: the release has 'Transcribe:' (task_prompt), "
        f"ours {cfg.model.prompt!r}. Convert with a config that has the release's settings "
        "(set these keys)."
    )
    assert not (tmp_path / "out.safetensors").exists()


def test_configs_whisper_llada_has_the_settings_of_the_authors_training_config():
    """The authors' configs/config.yaml (liuzhan22/Diffusion-ASR): the settings our config must match."""
    authors = {
        "second_per_window": 0.333333,
        "second_stride": 0.333333,
        "lora": True,
        "lora_rank": 8,
        "lora_alpha": 32,
        "lora_dropout": 0.1,
        "gen_len": 128,
        "task_prompt": "Transcribe the audio:",
    }
    config = to_dict(load_config(Path(__file__).parent.parent / "configs" / "whisper_llada.yaml"))
    check_released_settings(
        released_settings(Path("release.pth"), {"config": {"model": authors}}), config
    )


def test_converter_needs_the_release_training_config(tiny_config, tmp_path):
    config = to_dict(tiny_config())
    source = release_file(tmp_path / "stripped.pth", {}, None)
    with pytest.raises(CheckpointError, match=r"stripped\.pth has no config\['model'\] entry"):
        convert_released_checkpoint(source, tmp_path / "out.safetensors", config=config)
    section = authors_model_section(tiny_config())
    del section["lora_alpha"], section["gen_len"]
    source = release_file(tmp_path / "partial.pth", {}, section)
    with pytest.raises(CheckpointError, match=r"config\['model'\] lacks lora_alpha, gen_len$"):
        convert_released_checkpoint(source, tmp_path / "out.safetensors", config=config)


def test_converter_refuses_foreign_checkpoints(tmp_path):
    with pytest.raises(
        CheckpointError,
        match=r"1 keys are not from the released Whisper-LLaDA checkpoint: encoder\.conv1\.weight",
    ):
        convert_released_state_dict(
            {"encoder.conv1.weight": torch.zeros(1), "linear_proj.bias": torch.zeros(1)}
        )
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="has no 'model' entry"):
        convert_released_checkpoint(path, tmp_path / "x.safetensors", config={})
