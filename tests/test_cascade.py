"""The cascade through inference.py: the AR first pass feeds Whisper-LLaDA's deliberation in one run, both stages recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import yaml

import inference
from whisper_llada.config import load_config
from whisper_llada.config_strict import ConfigError
from whisper_llada.evaluation.cascade import first_pass_config
from whisper_llada.evaluation.results import MERGED_NAME

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"
AR_DECODE = ("decode.max_new_tokens=8", "decode.num_beams=2")
MODES = {
    "diffusion_deliberation": ("decode.mode=diffusion_deliberation", "decode.steps=4"),
    "semi_ar_deliberation": ("decode.mode=semi_ar_deliberation", "decode.steps=4"),
    "prior_guided": ("decode.mode=prior_guided", "decode.threshold=0.5", "decode.max_rounds=4"),
}


@pytest.fixture(scope="module")
def test_set(tmp_path_factory, speech) -> Path:
    """A JSONL manifest without first passes: the synthetic utterances and one missing file."""
    root = tmp_path_factory.mktemp("cascade_set")
    lines = []
    for i, (wave, text) in enumerate(speech):
        sf.write(root / f"u{i}.flac", wave, 16000)
        lines.append({"id": f"u{i}", "audio": f"u{i}.flac", "text": text})
    lines.append({"id": "missing", "audio": "missing.flac", "text": "never read"})
    manifest = root / "test.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.fixture(scope="module")
def ar_config(tmp_path_factory, tiny_models, tiny_llama) -> Path:
    """The first-pass model's config file: the tiny Whisper-LLaMA, greedy unless overridden."""
    path = tmp_path_factory.mktemp("ar_config") / "ar.yaml"
    path.write_text(
        f"base: {TINY}\n"
        "model:\n"
        "  llm: llama\n"
        "  llada_path: ''\n"
        f"  llama_path: {tiny_llama}\n"
        f"  whisper_path: {tiny_models.whisper}\n"
        "  ctc:\n"
        "    enabled: false\n"
        "audio:\n"
        "  pad_to_30s: false\n"
        "decode:\n"
        "  mode: autoregressive\n"
        "  max_new_tokens: 4\n"
    )
    return path


def records(output_dir: Path) -> dict[str, dict]:
    lines = (output_dir / MERGED_NAME).read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def wer_lines(output_dir: Path, mode: str) -> dict[str, str]:
    text = (output_dir / f"wer-test-{mode}.txt").read_text()
    return dict(line.split(": ", 1) for line in text.splitlines()[2:])


@pytest.fixture(scope="module")
def ar_run(ar_config, test_set, tmp_path_factory) -> Path:
    """A separate AR run of the first-pass model, with the cascade's first-pass overrides."""
    output_dir = tmp_path_factory.mktemp("ar_run")
    overrides = [f"inference.manifest={test_set}", f"inference.output_dir={output_dir}"]
    inference.main([str(ar_config), *overrides, *AR_DECODE])
    return output_dir


@pytest.mark.parametrize("mode", list(MODES))
def test_the_first_pass_field_holds_the_ar_hypotheses(
    mode, ar_run, ar_config, test_set, tiny_models, tmp_path
):
    output_dir = tmp_path / mode
    inference.main(
        [
            str(TINY),
            f"model.whisper_path={tiny_models.whisper}",
            f"model.llada_path={tiny_models.llada}",
            f"inference.manifest={test_set}",
            f"inference.output_dir={output_dir}",
            "decode.first_pass=model",
            f"inference.first_pass_config={ar_config}",
            f"inference.first_pass_overrides=[{', '.join(AR_DECODE)}]",
            *MODES[mode],
        ]
    )
    first, cascade = records(ar_run), records(output_dir)
    assert cascade.keys() == first.keys() == {"u0", "u1", "u2", "missing"}
    for key in ("u0", "u1", "u2"):
        assert cascade[key]["prior"] == first[key]["hypothesis"] != ""
        assert cascade[key]["first_pass_forward_passes"] == first[key]["forward_passes"]
        assert cascade[key]["first_pass_seconds"] > 0 and cascade[key]["decode_seconds"] > 0
        assert cascade[key]["forward_passes"] >= 1  # the deliberation ran on it
    assert "missing.flac" in cascade["missing"]["error"]
    assert cascade["missing"]["first_pass_forward_passes"] is None
    ar_wer = (ar_run / "wer-test-autoregressive.txt").read_text().splitlines()[0]
    lines = wer_lines(output_dir, mode)
    assert f"%WER = {lines['first pass %WER']}" == ar_wer  # the AR run's WER, recomputed
    assert lines["mode"] == mode
    ar_passes = wer_lines(ar_run, "autoregressive")["forward passes per utterance"]
    assert lines["first pass forward passes per utterance"] == ar_passes
    both = float(lines["RTF of both stages"])
    assert both > float(lines["RTF"]) and both > float(lines["first pass RTF"])


def test_cascade_settings_that_cannot_run_are_refused(ar_config, tiny_models):
    base = [f"model.llada_path={tiny_models.llada}", "decode.first_pass=model"]
    deliberation = [*base, "decode.mode=diffusion_deliberation"]
    with pytest.raises(ConfigError, match=r"needs inference\.first_pass_config"):
        first_pass_config(load_config(TINY, deliberation))
    with pytest.raises(ConfigError, match=r"decode\.mode=decoding takes no first pass"):
        first_pass_config(load_config(TINY, [*base, f"inference.first_pass_config={ar_config}"]))
    nested = [
        *deliberation,
        f"inference.first_pass_config={ar_config}",
        "inference.first_pass_overrides=[decode.mode=semi_ar_deliberation]",
    ]
    with pytest.raises(ConfigError, match=r"decode\.mode=semi_ar_deliberation, which needs a"):
        first_pass_config(load_config(TINY, nested))
    cfg = load_config(TINY, [*deliberation, f"inference.first_pass_config={ar_config}"])
    assert first_pass_config(cfg).decode.max_new_tokens == 4


def test_a_resumed_folder_keeps_its_first_pass_and_older_folders_resume(
    ar_run, ar_config, test_set, tmp_path, capsys
):
    """The first pass defines a cascade's results; keys added since a folder was written do not."""
    folder = tmp_path / "resumed"
    shutil.copytree(ar_run, folder)
    run = [str(ar_config), f"inference.manifest={test_set}", f"inference.output_dir={folder}"]
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    for section, key in (
        ("inference", "first_pass_config"),
        ("inference", "first_pass_overrides"),
        ("model", "llada_path"),
    ):
        del saved[section][key]  # as a folder written before the cascade existed
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    inference.main([*run, *AR_DECODE])
    assert "4 already decoded" in capsys.readouterr().out
    saved["inference"]["first_pass_overrides"] = ["inference.checkpoint=other.safetensors"]
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(SystemExit, match=r"changed: inference\.first_pass_overrides\)"):
        inference.main([*run, *AR_DECODE])
