"""`python -m recipes.demo retrain-ar`: the AR baseline from the LLaDA recipe's stage-1 projector, shortened end to end, and its refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from recipes.demo import retrain as demo_retrain
from recipes.demo import run as demo
from recipes.demo import stages as demo_stages
from recipes.demo.corpus import (
    DEMO_SEED,
    TRAIN_SPLIT,
    build_demo_corpus,
    prepare_demo_manifests,
)
from whisper_llada.config import load_config
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint, read_checkpoint
from whisper_llada.models.encoder import encoder_weights_sha256, load_whisper_encoder
from whisper_llada.training import loop

REPO = Path(__file__).resolve().parents[3]
TRAIN_UTTERANCES, HELD_OUT = 16, 3
QUIET = ("train.tensorboard=false",)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory, one_thread) -> Path:
    """A work folder as a shortened `retrain` leaves it after stage 1 (2 steps)."""
    work = tmp_path_factory.mktemp("retrain_ar") / "work"
    base = demo_retrain.write_base_models(work / "base")
    corpus = build_demo_corpus(
        work / "corpus",
        with_train=True,
        train_utterances=TRAIN_UTTERANCES,
        held_out_utterances=HELD_OUT,
    )
    manifests = prepare_demo_manifests(corpus, work / "manifests")
    shared = (
        f"model.llada_path={base / 'llada'}",
        f"data.train_manifests=[{manifests[TRAIN_SPLIT]}]",
        f"data.valid_manifests=[{manifests['dev-clean']}]",
        f"data.feature_cache={work / 'feature_cache'}",
        f"data.encoder_cache={work / 'encoder_cache'}",
    )
    first, _ = demo_retrain.plan_stages(work, shared, (2, None), QUIET)
    demo_stages.run_stage(first, work, 1)
    return work


def retrain_ar(out: Path, work: Path, ar_work: Path, *extra: str) -> None:
    demo.main(
        [
            "retrain-ar", "--out", str(out), "--work-dir", str(work), "--ar-work-dir",
            str(ar_work), "--train-utterances", str(TRAIN_UTTERANCES),
            "--held-out-utterances", str(HELD_OUT), *QUIET, *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def retrained_ar(stage_one) -> dict[str, Path]:
    """retrain-ar for 1 step, then the same command resumed to 2 steps."""
    root = stage_one.parent
    out, ar_work = root / "model_ar", root / "ar_work"
    retrain_ar(out, stage_one, ar_work, "--max-steps", "1")
    retrain_ar(out, stage_one, ar_work, "--max-steps", "2")
    return {"work": stage_one, "out": out, "ar_work": ar_work}


def test_retrain_ar_needs_stage_one(tmp_path):
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as stopped:
        retrain_ar(tmp_path / "out", work, tmp_path / "ar_work")
    assert str(stopped.value) == (
        f"{work / 'train'} has no last checkpoint: the AR baseline starts from stage 1's encoder "
        "and projector, so train stage 1 of the LLaDA recipe first (`python -m "
        f"recipes.demo retrain --work-dir {work}`)"
    )
    assert not work.exists() and not (tmp_path / "ar_work").exists()


def test_retrain_ar_needs_stage_one_finished(stage_one, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(stage_one / "train", work / "train", symlinks=True)
    saved = yaml.safe_load((work / "train" / "config.yaml").read_text())
    saved["train"]["max_steps"] = 5  # as if stage 1 were still training
    (work / "train" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(SystemExit) as stopped:
        retrain_ar(tmp_path / "out", work, tmp_path / "ar_work")
    assert str(stopped.value) == (
        f"stage 1 in {work / 'train'} has 2 of its 5 steps: the AR baseline starts from its "
        "final projector, so finish it first (`python -m recipes.demo "
        f"retrain --work-dir {work}`)"
    )
    assert not (work / "base").exists() and not (tmp_path / "ar_work").exists()


@pytest.mark.parametrize(
    ("override", "use"),
    [
        ("train.output_dir=x", "--ar-work-dir"),
        ("train.init_checkpoint=x", "--work-dir (stage 1's last checkpoint there)"),
        ("train.max_steps=5", "--max-steps"),
    ],
)
def test_retrain_ar_refuses_overrides_of_what_it_sets(tmp_path, override, use):
    with pytest.raises(SystemExit) as stopped:
        retrain_ar(tmp_path / "out", tmp_path / "work", tmp_path / "ar_work", override)
    key = override.partition("=")[0]
    assert str(stopped.value) == f"{key} is set per stage by retrain-ar: use {use}"


def test_retrain_ar_needs_at_least_one_step(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        retrain_ar(tmp_path / "out", tmp_path / "work", tmp_path / "ar_work", "--max-steps", "0")
    assert str(stopped.value) == "--max-steps must be at least 1, got 0"


def test_retrain_ar_resumes_and_exports_with_its_metadata(retrained_ar):
    work, out, ar_work = retrained_ar["work"], retrained_ar["out"], retrained_ar["ar_work"]
    sessions = [
        json.loads(line) for line in (ar_work / "retrain_sessions.jsonl").read_text().splitlines()
    ]
    assert [(s["stage"], s["step"]) for s in sessions] == [("ar", 1), ("ar", 2)]
    # The LLaDA recipe's sessions (the fixture's stage 1) are not the AR run's.
    assert (work / "retrain_sessions.jsonl").read_text().count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.safetensors",
        "config.yaml",
        "llama",
    ]
    tensors, config, metadata = read_checkpoint(out / "checkpoint.safetensors")
    assert {name.split(".")[0] for name in tensors} == {"projector"}
    assert config["model"]["llm"] == "llama"
    assert config["model"]["llama_path"] == "llama"  # relative to the export's folder
    _, _, stage_one = read_checkpoint(work / "train" / "last" / "model.safetensors")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    (stage,) = metadata.pop("stages")
    seconds = stage.pop("train_wall_seconds")
    assert seconds == pytest.approx(sum(s["seconds"] for s in sessions), abs=0.11)
    assert metadata.pop("train_wall_seconds") == seconds
    assert stage == {
        "recipe": "configs/demo_ar.yaml",
        "overrides": [
            f"model.llama_path={work / 'base' / 'llama'}",
            f"data.train_manifests=[{work / 'manifests' / 'librispeech_cuts_train-clean-100.jsonl.gz'}]",
            f"data.valid_manifests=[{work / 'manifests' / 'librispeech_cuts_dev-clean.jsonl.gz'}]",
            f"data.feature_cache={work / 'feature_cache'}",
            f"data.encoder_cache={work / 'encoder_cache'}",
            f"train.output_dir={ar_work / 'train'}",
            f"train.init_checkpoint={work / 'train' / 'last' / 'model.safetensors'}",
            "train.max_steps=2",
            *QUIET,
        ],
        "steps": 2,
        "nproc_per_node": 1,
        "train_sessions": 2,
    }
    spec = metadata.pop("corpus_spec")
    assert spec == json.loads((work / "corpus" / "synthetic_corpus.json").read_text())
    assert metadata.pop("valid_loss") > 0
    assert metadata == {
        "init_checkpoint": {
            "path": str(work / "train" / "last" / "model.safetensors"),
            "step": 2,
            "rank_checksums": stage_one["rank_checksums"],
        },
        "demo_seed": DEMO_SEED,
        "train_utterances": TRAIN_UTTERANCES,
        "held_out_utterances": HELD_OUT,
        "git_commit": commit or "unknown",
        "steps": 2,
        "encoder_sha256": encoder_weights_sha256(
            load_whisper_encoder(out / config["model"]["whisper_path"], dtype=torch.float32)
        ),
    }


def test_the_ar_run_starts_from_stage_one_s_projector(retrained_ar, tmp_path):
    """The AR run's resolved config, one update at learning rate 0: the projector is stage 1's,
    the LLaMA is as built (the frozen encoder is in no checkpoint)."""
    work, ar_work = retrained_ar["work"], retrained_ar["ar_work"]
    saved = load_config(ar_work / "train" / "config.yaml")
    assert saved.train.init_prefixes == ("projector.",)
    assert (saved.train.lr, saved.train.warmup_steps) == (1e-3, 100)
    loop.main(
        [
            str(ar_work / "train" / "config.yaml"),
            f"train.output_dir={tmp_path}",
            "train.max_steps=1",
            "train.lr=0.0",
            "train.warmup_start_lr=0.0",
            "train.min_lr=0.0",
            "data.valid_manifests=[]",
        ]
    )
    started, _, _ = read_checkpoint(tmp_path / "last" / "model.safetensors")
    stage_one, _, _ = read_checkpoint(work / "train" / "last" / "model.safetensors")
    under = [name for name in stage_one if name.startswith("projector.")]
    assert under and all(torch.equal(started[name], stage_one[name]) for name in under)
    torch.manual_seed(saved.train.seed)  # as train.py builds
    fresh = build_model(saved.model)[0].state_dict()
    llama = [name for name in started if name.startswith("llama.")]
    assert llama and all(torch.equal(started[name], fresh[name]) for name in llama)
    assert set(started) == set(under) | set(llama)


def test_the_export_holds_the_ar_run_s_last_weights(retrained_ar):
    out, ar_work = retrained_ar["out"], retrained_ar["ar_work"]
    cfg = load_config(out / "config.yaml")
    model, _ = build_model(cfg.model)
    load_checkpoint(model, out / "checkpoint.safetensors")
    exported = model.state_dict()
    last, _, _ = read_checkpoint(ar_work / "train" / "last" / "model.safetensors")
    assert all(torch.equal(exported[name], tensor) for name, tensor in last.items())


@pytest.mark.slow
def test_retrain_ar_with_two_processes(stage_one, tmp_path, monkeypatch, capfd):
    """The shortened AR run under torchrun, as the demo's baseline is trained (from the root)."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out, ar_work = tmp_path / "model_ar", tmp_path / "ar_work"
    retrain_ar(out, stage_one, ar_work, "--max-steps", "2", "--nproc-per-node", "2")
    printed = capfd.readouterr().out
    assert f"--nproc_per_node=2 {REPO / 'train.py'} {REPO / 'configs' / 'demo_ar.yaml'} " in printed
    assert printed.count("new run: 2 process(es) on cpu, fp32") == 1
    _, _, saved = read_checkpoint(ar_work / "train" / "last" / "model.safetensors")
    assert saved["world_size"] == 2 and len(set(saved["rank_checksums"])) == 1
    _, _, metadata = read_checkpoint(out / "checkpoint.safetensors")
    (stage,) = metadata["stages"]
    assert (stage["steps"], stage["nproc_per_node"], stage["train_sessions"]) == (2, 2, 1)
