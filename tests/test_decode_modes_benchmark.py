"""benchmarks/decode_modes.py with --ar-config/--ar-checkpoint: the AR rows beside the diffusion modes and the speed-up vs AR."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from whisper_llada.config_strict import to_dict
from whisper_llada.evaluation.mode_comparison import AR_MODE
from whisper_llada.evaluation.results import MERGED_NAME, read_records
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "decode_modes.py"
CASCADE = "AR -> deliberation (low-conf.)"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_models, tiny_llama, tiny_config, tiny_ar_config, speech):
    """Config files and checkpoints of a tiny Whisper-LLaDA and a tiny Whisper-LLaMA; a manifest."""
    root = tmp_path_factory.mktemp("decode_modes")
    lines = []
    for i, (wave, text) in enumerate(speech):
        sf.write(root / f"u{i}.flac", wave, 16000)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"u{i}.flac", "text": text}) + "\n")
    (root / "test.jsonl").write_text("".join(lines))
    files = {"manifest": root / "test.jsonl"}
    models = {
        "llada": (
            tiny_config("audio.pad_to_30s=false"),
            f"  llada_path: {tiny_models.llada}\n",
            "",
        ),
        "llama": (
            tiny_ar_config("audio.pad_to_30s=false"),
            f"  llm: llama\n  llada_path: ''\n  llama_path: {tiny_llama}\n  ctc:\n"
            "    enabled: false\n",
            "decode:\n  mode: autoregressive\n  max_new_tokens: 6\n",
        ),
    }
    for name, (cfg, model_keys, decode) in models.items():
        torch.manual_seed(0)
        model, _ = build_model(cfg.model)
        files[f"{name}_checkpoint"] = save_checkpoint(
            model, root / f"{name}.safetensors", config=to_dict(cfg)
        )
        files[f"{name}_config"] = root / f"{name}.yaml"
        files[f"{name}_config"].write_text(
            f"base: {REPO / 'configs' / 'tiny.yaml'}\nmodel:\n  whisper_path: {tiny_models.whisper}\n"
            f"{model_keys}audio:\n  pad_to_30s: false\n{decode}"
        )
    return files


def run_benchmark(monkeypatch, *arguments: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *arguments])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_the_ar_rows_and_the_speed_up_vs_ar(inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_benchmark(
        monkeypatch,
        "--config", str(inputs["llada_config"]), "--checkpoint", str(inputs["llada_checkpoint"]),
        "--manifest", str(inputs["manifest"]), "--ar-config", str(inputs["llama_config"]),
        "--ar-checkpoint", str(inputs["llama_checkpoint"]), "--out", str(out), "--gen-len", "4",
        "--batch-size", "2", "--modes", "diffusion", AR_MODE, CASCADE,
    )  # fmt: skip
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0] == (
        "| mode | WER % (S/D/I) | LLM passes / utt | RTF | speed-up vs diffusion "
        "| speed-up vs AR | utt / s |"
    )
    labels = ["diffusion", AR_MODE, CASCADE, "diffusion @ batch 1"]
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {label}" for label in labels]
    table = json.loads((out / "table.json").read_text())
    assert list(table) == labels
    ar = table[AR_MODE]
    for entry in table.values():
        assert entry["speed_up_vs_ar"] == ar["rtf"] / entry["rtf"]
        assert entry["speed_up"] == table["diffusion"]["rtf"] / entry["rtf"]
    first = {r.id: r for r in read_records(Path(ar["results_dir"]) / MERGED_NAME)}
    assert sorted(first) == ["u0", "u1", "u2"]
    cascade = read_records(Path(table[CASCADE]["results_dir"]) / MERGED_NAME)
    assert [(r.id, r.prior) for r in cascade] == [(k, first[k].hypothesis) for k in sorted(first)]
    seconds = sum(r.decode_seconds + r.first_pass_seconds for r in cascade)
    assert table[CASCADE]["decode_seconds"] == pytest.approx(seconds, rel=1e-12)
    assert (
        table[CASCADE]["first_pass_forward_passes_per_utterance"]
        == (ar["forward_passes_per_utterance"])
    )
    assert "first_pass_seconds" not in ar


def test_the_ar_config_needs_its_checkpoint(inputs, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_benchmark(
            monkeypatch,
            "--config", str(inputs["llada_config"]), "--checkpoint", str(inputs["llada_checkpoint"]),
            "--manifest", str(inputs["manifest"]), "--ar-config", str(inputs["llama_config"]),
            "--out", str(tmp_path / "out"),
        )  # fmt: skip
    assert stopped.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --ar-config and --ar-checkpoint go together: the AR model and its weights\n"
    )
    assert not (tmp_path / "out").exists()
