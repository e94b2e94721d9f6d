"""Config loading: every shipped YAML loads, strictness, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from whisper_llada.config import PATH_KEYS, Config, load_config
from whisper_llada.config_strict import ConfigError, to_dict

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"whisper_llada.yaml", "dllm_asr.yaml", "tiny.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_names_its_command(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    header = path.read_text().splitlines()[:8]
    assert any("python" in line and path.name in line for line in header if line.startswith("#"))


def test_paper_configs_hold_the_published_numbers():
    paper = load_config("configs/whisper_llada.yaml").model
    assert (paper.projector, paper.lora.r, paper.lora.alpha, paper.lora.dropout) == (
        "qformer",
        8,
        32,
        0.1,
    )
    assert paper.lora.targets == ("q_proj", "k_proj", "v_proj")
    assert paper.prompt == "Transcribe the audio:"
    fast = load_config("configs/dllm_asr.yaml")
    assert (fast.model.projector, fast.model.lora.r, fast.model.lora.dropout) == (
        "conv_adapter",
        16,
        0.05,
    )
    assert fast.model.lora.targets == ("q_proj", "k_proj", "v_proj", "up_proj")
    assert (fast.loss.kind, fast.loss.eps, fast.loss.full_mask_prob) == ("llada_sft", 1e-3, 0.2)


def test_decode_configs_end_answers_as_their_authors_code_does():
    decode = {
        name: load_config(f"configs/decode/{name}.yaml").decode
        for name in ("decoding", "semi_ar", "diffusion_deliberation", "prior_guided")
    }
    assert all(not cfg.eot_ends_answer for cfg in decode.values())  # EOS alone ends an answer
    assert [decode[name].prune for name in ("decoding", "semi_ar")] == ["none", "none"]
    assert decode["prior_guided"].prune == "first_pass"
    released = load_config("configs/decode/dllm_asr_released.yaml").decode
    assert (released.gen_len, released.block_length, released.steps) == (256, 128, 256)
    assert (released.threshold, released.prune) == (0.9, "first_pass")


def test_a_boolean_prune_names_the_pruning_variants(tmp_path):
    path = write(tmp_path, "decode:\n  prune: true\n")
    with pytest.raises(
        ConfigError, match=r"decode\.prune: True is not one of \['none', 'first_pass'"
    ):
        load_config(path)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    path = write(tmp_path, "model:\n  lora:\n    rank: 4\n")
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'model\.lora\.rank'; valid keys of model\.lora: r, alpha, dropout, targets",
    ):
        load_config(path)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'modle'; valid keys: model, audio, loss"):
        load_config(write(tmp_path, "modle: {}\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  lora:\n    r: eight\n", r"model\.lora\.r: expected int, got 'eight'"),
        ("audio:\n  pad_to_30s: 1\n", r"audio\.pad_to_30s: expected bool, got 1"),
        (
            "model:\n  projector: linear\n",
            r"model\.projector: 'linear' is not one of \['qformer', 'conv_adapter', 'frame_stack'\]",
        ),
        ("model:\n  lora:\n    targets: q_proj\n", r"model\.lora\.targets: expected a list"),
        ("loss: 3\n", r"loss: expected a mapping"),
    ],
)
def test_wrong_types_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_overrides_use_the_same_checks(tmp_path):
    path = write(tmp_path, "model:\n  lora:\n    r: 8\n")
    cfg = load_config(
        path,
        [
            "model.lora.r=16",
            "audio.pad_to_30s=false",
            "loss.eps=1e-5",
            "model.lora.targets=[q_proj, up_proj]",
            "model.ctc.bottleneck=256",
        ],
    )
    assert cfg.model.lora.r == 16
    assert cfg.audio.pad_to_30s is False
    assert cfg.loss.eps == 1e-5
    assert cfg.model.lora.targets == ("q_proj", "up_proj")
    assert cfg.model.ctc.bottleneck == 256
    with pytest.raises(ConfigError, match=r"unknown key 'model\.lora\.rnk'"):
        load_config(path, ["model.lora.rnk=4"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(path, ["model.lora.r"])


def test_configs_are_frozen_and_serialisable():
    cfg = load_config("configs/dllm_asr.yaml")
    with pytest.raises(AttributeError):
        cfg.model.lora.r = 4
    data = to_dict(cfg)
    assert data["model"]["lora"]["targets"] == ["q_proj", "k_proj", "v_proj", "up_proj"]
    assert data["loss"]["full_mask_prob"] == 0.2


def test_missing_file():
    with pytest.raises(ConfigError, match=r"config file not found: nowhere\.yaml"):
        load_config("nowhere.yaml")


def test_a_config_can_start_from_a_base(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model:\n  lora:\n    r: 8\n    alpha: 32\ndecode:\n  steps: 64\n"
    )
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(
        "base: ../base.yaml\nmodel:\n  lora:\n    r: 16\ndecode:\n  mode: prior_guided\n"
    )
    cfg = load_config(child, ["decode.steps=32"])
    assert (cfg.model.lora.r, cfg.model.lora.alpha) == (16, 32)
    assert (cfg.decode.mode, cfg.decode.steps) == ("prior_guided", 32)
    (tmp_path / "base.yaml").write_text("base: sub/child.yaml\n")
    with pytest.raises(ConfigError, match="include each other in a cycle"):
        load_config(child)


def test_decode_configs_keep_the_authors_keys():
    cfg = load_config(Path(__file__).parent.parent / "configs" / "decode" / "semi_ar.yaml")
    assert (cfg.decode.mode, cfg.decode.gen_len, cfg.decode.block_length, cfg.decode.steps) == (
        "decoding",
        128,
        32,
        128,
    )
    assert cfg.model.projector == "qformer"  # from the base file


@pytest.mark.parametrize("betas", ["[0.9]", "[0.9, 0.99, 0.9]"])
def test_a_fixed_length_list_of_another_length_names_the_key(betas):
    count = len(yaml.safe_load(betas))
    with pytest.raises(
        ConfigError, match=rf"train\.betas: expected a list of 2 values, got {count}"
    ):
        load_config("configs/tiny.yaml", [f"train.betas={betas}"])
    assert load_config("configs/tiny.yaml", ["train.betas=[0.8, 0.9]"]).train.betas == (0.8, 0.9)


def test_an_override_that_is_not_yaml_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'decode\.steps=\[1': its value is not valid"):
        load_config("configs/tiny.yaml", ["decode.steps=[1"])


@pytest.mark.parametrize("value", ["nan", ".nan", ".inf", "-.inf"])
def test_a_non_finite_number_is_refused(value):
    with pytest.raises(ConfigError, match=r"decode\.temperature: expected a finite number"):
        load_config("configs/tiny.yaml", [f"decode.temperature={value}"])


@pytest.mark.parametrize("seconds", ["60", "0", "-1"])
def test_max_seconds_beyond_the_whisper_window_is_refused_at_load(seconds):
    with pytest.raises(ConfigError, match=r"audio\.max_seconds: .* is outside \(0, 30\]"):
        load_config("configs/tiny.yaml", [f"audio.max_seconds={seconds}"])
    assert load_config("configs/tiny.yaml", ["audio.max_seconds=30"]).audio.max_seconds == 30.0


def test_audio_aligned_answer_positions_need_llada_and_a_stride():
    aligned = "model.answer_positions=audio_aligned"
    with pytest.raises(ConfigError, match=r"needs model\.audio_vectors_per_token > 0 \(got 0\.0\)"):
        load_config("configs/tiny.yaml", [aligned])
    with pytest.raises(ConfigError, match=r"audio_aligned is for LLaDA \(model\.llm=llada\)"):
        load_config(
            "configs/tiny.yaml", [aligned, "model.audio_vectors_per_token=8", "model.llm=llama"]
        )
    cfg = load_config("configs/tiny.yaml", [aligned, "model.audio_vectors_per_token=8"])
    assert (cfg.model.answer_positions, cfg.model.audio_vectors_per_token) == ("audio_aligned", 8.0)


def test_paths_in_a_file_are_relative_to_it_in_an_override_to_the_working_directory(
    tmp_path, monkeypatch
):
    (tmp_path / "recipe" / "decode").mkdir(parents=True)
    (tmp_path / "recipe" / "base.yaml").write_text(
        "model:\n  whisper_path: ../models/whisper\n  llada_path: /abs/llada\n"
        "data:\n  train_manifests: [manifests/a.jsonl, /abs/b.jsonl]\n"
    )
    child = tmp_path / "recipe" / "decode" / "child.yaml"
    child.write_text(
        "base: ../base.yaml\ninference:\n  manifest: ../test.jsonl\n  output_dir: ''\n"
        "  first_pass_config: first.yaml\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(
        Path("..") / "recipe" / "decode" / "child.yaml", ["inference.checkpoint=c.st"]
    )
    assert cfg.model.whisper_path == str(tmp_path / "models" / "whisper")  # beside recipe/
    assert cfg.model.llada_path == "/abs/llada"
    assert cfg.data.train_manifests == (str(tmp_path / "recipe/manifests/a.jsonl"), "/abs/b.jsonl")
    assert cfg.inference.manifest == str(tmp_path / "recipe" / "test.jsonl")
    assert cfg.inference.first_pass_config == str(tmp_path / "recipe/decode/first.yaml")
    assert cfg.inference.checkpoint == str(elsewhere / "c.st")  # the override: the working dir
    assert cfg.inference.output_dir == ""  # unset stays unset
    assert cfg.train.output_dir == str(elsewhere / "exp" / "train")  # a default: the working dir
    saved = tmp_path / "saved.yaml"
    saved.write_text(yaml.safe_dump(to_dict(cfg)))
    monkeypatch.chdir(tmp_path)
    assert load_config(saved) == cfg  # what a run saves names the same files from anywhere


def test_every_path_field_of_the_schema_is_resolved():
    """A new path field must be marked PathStr (or it would keep the working-directory meaning)."""
    names = ("_path", "_dir", "manifest", "manifests", "checkpoint", "cache", "_config")
    path_like = {
        (section, name)
        for section, schema in get_type_hints(Config).items()
        for name, hint in get_type_hints(schema).items()
        if name.endswith(names) and hint in (str, tuple[str, ...])
    }
    assert path_like == set(PATH_KEYS)
