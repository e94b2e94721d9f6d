"""train.py on the causal baseline: a tiny Whisper-LLaMA learns (validation loss falls), logs its next-token loss, and its checkpoint decodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint, read_checkpoint
from whisper_llada.training import loop

REPO = Path(__file__).resolve().parent.parent
SENTENCES = ("the cat sat on the mat", "a dog ran home", "we go out at night", "she read a book")
RECIPE = (
    "audio.pad_to_30s=false",
    "train.device=cpu",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.lr=2e-3",
    "train.warmup_steps=2",
    "train.warmup_start_lr=1e-4",
    "train.min_lr=1e-4",
    "train.log_every=2",
    "train.max_steps=12",
    "train.valid_every=6",
    "train.save_every=6",
    "data.max_duration=4.0",
    "data.num_buckets=2",
    "data.num_workers=0",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One JSONL manifest of four synthetic utterances, for training and validation alike."""
    folder = tmp_path_factory.mktemp("ar_corpus")
    lines = []
    for i, text in enumerate(SENTENCES):
        synthesize(text, folder / f"u{i}.flac", voice="en-us", rate_wpm=200)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"u{i}.flac", "text": text}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_tiny_ar_model_trains_with_train_py(tiny_models, tiny_llama, corpus, tmp_path):
    out = tmp_path / "ar"
    args = [
        str(REPO / "configs" / "tiny.yaml"),
        f"model.whisper_path={tiny_models.whisper}",
        "model.llm=llama",
        "model.llada_path=''",
        f"model.llama_path={tiny_llama}",
        "model.ctc.enabled=false",
        # Every LLM weight trains, as in configs/demo_ar.yaml: through LoRA alone the frozen random
        # 64-wide output head learns too slowly for a dozen steps (0.3 nats, where this gives 1.5).
        "model.train_llm=true",
        "model.lora.r=0",
        f"data.train_manifests=[{corpus}]",
        f"data.valid_manifests=[{corpus}]",
        f"train.output_dir={out}",
        *RECIPE,
    ]
    progress = loop.main(args)
    assert (progress.step, progress.bad_steps) == (12, 0)
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    valid = [(e["step"], e["valid_loss"]) for e in entries if "valid_loss" in e]
    assert [step for step, _ in valid] == [0, 6, 12]
    assert valid[-1][1] < valid[0][1] - 1.0, valid
    logged = [e for e in entries if "loss" in e]
    assert len(logged) == 6
    assert all("next_token" in e and "diffusion" not in e and e["ctc"] is None for e in logged)
    assert all(e["next_token"] == e["loss"] for e in logged)  # no CTC head: the whole loss
    weights, config, meta = read_checkpoint(out / "best.safetensors")
    assert meta == {"step": 12, "valid_loss": valid[-1][1]}
    assert config["model"]["llm"] == "llama"
    assert {k.split(".")[0] for k in weights} == {"projector", "llama"}
    model, _ = build_model(loop.load_config(args[0], args[1:]).model)
    load_checkpoint(model, out / "best.safetensors")
    assert all(torch.equal(p, weights[n]) for n, p in model.trainable_parameters().items())
