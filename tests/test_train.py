"""train.py end to end on the tiny models: learning, exact resume, torchrun DDP, NaN guard, stages."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

from whisper_llada.config import load_config
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_trainable_state,
    read_checkpoint,
)
from whisper_llada.training import loop, train_run
from whisper_llada.training.train_state import load_training_state, weights_checksum

REPO = Path(__file__).resolve().parent.parent
SENTENCES = (
    ("the cat sat on the mat", "en-us"),
    ("a dog ran home", "en-gb"),
    ("we go out at night", "en-us"),
    ("she read a good book", "en-gb"),
    ("he can see the river", "en-us"),
    ("they walk back home", "en-gb"),
)
# Tiny, fast and deterministic: true-length audio, fp32 on the CPU, batches of about 2 utterances.
RECIPE = (
    "audio.pad_to_30s=false",
    "train.device=cpu",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.lr=1e-3",
    "train.warmup_steps=2",
    "train.warmup_start_lr=1e-4",
    "train.min_lr=1e-4",
    "train.log_every=2",
    "data.max_duration=4.0",
    "data.num_buckets=2",
    "data.num_workers=0",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """train.jsonl.gz (a lhotse CutSet) and valid.jsonl (JSONL) over six synthetic utterances."""
    folder = tmp_path_factory.mktemp("corpus")
    cuts, lines = [], []
    for i, (text, voice) in enumerate(SENTENCES):
        path = synthesize(text, folder / f"u{i}.flac", voice=voice, rate_wpm=200)
        seconds = sf.info(path).duration
        source = AudioSource(type="file", channels=[0], source=str(path))
        recording = Recording(f"u{i}", [source], 16000, round(seconds * 16000), seconds)
        supervision = SupervisionSegment(f"u{i}", f"u{i}", 0.0, seconds, text=text)
        cuts.append(MonoCut(f"u{i}", 0.0, seconds, 0, [supervision], recording=recording))
        lines.append(json.dumps({"id": f"u{i}", "audio": path.name, "text": text}))
    CutSet.from_cuts(cuts).to_file(folder / "train.jsonl.gz")
    (folder / "valid.jsonl").write_text("\n".join(lines[:4]) + "\n")
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny matrices gain nothing from more, and a busy CPU loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def arguments(
    tiny_models, corpus: Path, out: Path, *overrides: str, valid: bool = True
) -> list[str]:
    manifests = [f"data.train_manifests=[{corpus / 'train.jsonl.gz'}]"]
    if valid:
        manifests.append(f"data.valid_manifests=[{corpus / 'valid.jsonl'}]")
    return [
        str(REPO / "configs" / "tiny.yaml"),
        f"model.whisper_path={tiny_models.whisper}",
        f"model.llada_path={tiny_models.llada}",
        f"train.output_dir={out}",
        *manifests,
        *RECIPE,
        *overrides,
    ]


def log_entries(out: Path, key: str) -> list[tuple[int, float]]:
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(e["step"], e[key]) for e in entries if key in e]


def adam_steps(out: Path) -> set[int]:
    state = torch.load(out / "last" / "train_state.pt", weights_only=True)
    return {int(s["step"]) for s in state["optimizer"]["state"].values()}


def test_a_tiny_run_lowers_the_validation_loss(tiny_models, corpus, tmp_path):
    out = tmp_path / "run"
    args = arguments(
        tiny_models,
        corpus,
        out,
        "train.max_steps=16",
        "train.valid_every=8",
        "train.save_every=8",
        "train.tensorboard=true",
        "train.valid_wer_utterances=2",
    )
    progress = loop.main(args)
    assert (progress.step, progress.bad_steps) == (16, 0)
    valid = log_entries(out, "valid_loss")
    assert [step for step, _ in valid] == [0, 8, 16]
    assert valid[-1][1] < valid[0][1] - 1.0, valid
    assert [step for step, _ in log_entries(out, "valid_wer")] == [0, 8, 16]
    assert [step for step, _ in log_entries(out, "utterances_per_s")] == list(range(2, 17, 2))
    _, _, best = read_checkpoint(out / "best.safetensors")
    assert best == {"step": 16, "valid_loss": valid[-1][1]}
    assert progress.best_valid_loss == valid[-1][1]
    assert os.readlink(out / "last") == "checkpoints/step-00000016"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000016"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(out / "config.yaml") == load_config(args[0], args[1:])


def test_a_resumed_run_reaches_the_uninterrupted_weights(tiny_models, corpus, tmp_path):
    """Six updates straight, or three, a restart and three more: identical weights and state.

    Gradient accumulation, a DataLoader worker that prefetches and Q-Former dropout are on, so
    the data position, the optimizer and every random stream must come back exactly.
    """
    recipe = (
        "train.max_steps=6",
        "train.save_every=2",
        "train.valid_every=3",
        "train.grad_accum=2",
        "data.num_workers=1",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    loop.main(arguments(tiny_models, corpus, straight, *recipe))
    first = loop.main([*arguments(tiny_models, corpus, resumed, *recipe), "--stop-at", "3"])
    assert first.step == 3 and adam_steps(resumed) == {3}
    second = loop.main(arguments(tiny_models, corpus, resumed, *recipe))
    assert second.step == 6 and adam_steps(straight) == adam_steps(resumed) == {6}
    weights, _, meta = read_checkpoint(straight / "last" / "model.safetensors")
    again, _, meta_again = read_checkpoint(resumed / "last" / "model.safetensors")
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert meta == meta_again  # step, checksums and the step-6 validation loss
    finished = loop.main(arguments(tiny_models, corpus, straight, *recipe))  # nothing left to do
    assert (finished.step, finished.best_valid_loss) == (6, second.best_valid_loss)
    with pytest.raises(
        ValueError, match=r"saved by 1 processes, this run has 2: .* --nproc_per_node=1"
    ):
        load_training_state(straight, world_size=2)


def test_two_torchrun_processes_end_with_identical_weights(tiny_models, corpus, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "train.py"),
        *arguments(
            tiny_models, corpus, out, "train.max_steps=3", "train.save_every=3", valid=False
        ),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    weights, _, meta = read_checkpoint(out / "last" / "model.safetensors")
    assert (meta["step"], meta["world_size"]) == (3, 2)
    assert meta["rank_checksums"] == [weights_checksum(weights)] * 2
    state = torch.load(out / "last" / "train_state.pt", weights_only=True)
    first, second = (entry["sampler"] for entry in state["ranks"])
    assert (first["rank"], second["rank"]) == (0, 1)


def nan_at(calls: set[int] | None):
    """A training_loss whose total is NaN on the given call numbers (all calls when None)."""
    real = loop.training_loss
    counter = itertools.count()

    def loss(*args, **kwargs):
        output = real(*args, **kwargs)
        if calls is None or next(counter) in calls:
            return dataclasses.replace(output, total=output.total * math.nan)
        return output

    return loss


def test_a_nan_loss_skips_the_update_and_saves_the_batch(
    tiny_models, corpus, tmp_path, monkeypatch
):
    monkeypatch.setattr(loop, "training_loss", nan_at({1}))
    out = tmp_path / "nan"
    with pytest.warns(UserWarning, match=r"1 update\(s\) in a row .* \(after 1 updates\)"):
        progress = loop.main(arguments(tiny_models, corpus, out, "train.max_steps=3", valid=False))
    assert (progress.step, progress.bad_steps, progress.bad_steps_in_a_row) == (3, 1, 0)
    assert adam_steps(out) == {3}  # three updates from four batches
    (saved,) = (out / "bad_batches").iterdir()
    assert saved.name == "step-00000001-bad1-rank0-micro0.pt"
    batch = torch.load(saved, weights_only=True)
    assert (batch["step"], batch["rank"], math.isnan(batch["loss"])) == (1, 0, True)
    assert batch["mel"].shape[0] == len(batch["ids"]) == len(batch["text_ids"]) >= 1
    assert set(batch["ids"]) <= {f"u{i}" for i in range(len(SENTENCES))}


def test_nan_losses_in_a_row_stop_the_run(tiny_models, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "training_loss", nan_at(None))
    out = tmp_path / "nans"
    args = arguments(
        tiny_models, corpus, out, "train.max_steps=3", "train.max_bad_steps=2", valid=False
    )
    with (
        pytest.warns(UserWarning, match="update skipped"),
        pytest.raises(
            train_run.NonFiniteLossError,
            match=r"2 update\(s\) in a row had a non-finite loss or gradient \(after 0 updates\)",
        ),
    ):
        loop.main(args)
    assert sorted(p.name for p in (out / "bad_batches").iterdir()) == [
        "step-00000000-bad1-rank0-micro0.pt",
        "step-00000000-bad2-rank0-micro0.pt",
    ]


def test_stage_two_starts_from_a_stage_one_checkpoint(tiny_models, corpus, tmp_path, tiny_config):
    stage1 = tmp_path / "stage1"
    loop.main(
        arguments(
            tiny_models,
            corpus,
            stage1,
            "train.trainable=projector",
            "train.max_steps=2",
            valid=False,
        )
    )
    first, _, _ = read_checkpoint(stage1 / "last" / "model.safetensors")
    assert first and not [k for k in first if ".lora_" in k]
    assert {k.split(".")[0] for k in first} == {"projector", "ctc_head"}

    model, _ = build_model(tiny_config().model)  # stage 2 trains LoRA too
    lora = [name for name in model.trainable_parameters() if ".lora_" in name]
    model.set_lora_trainable(False)
    assert set(model.trainable_parameters()) == set(first)
    model.set_lora_trainable(True)
    assert len(lora) == 12 and set(model.trainable_parameters()) == set(first) | set(lora)
    with pytest.raises(CheckpointError, match="12 missing trainable keys: llada"):
        load_checkpoint(model, stage1 / "last" / "model.safetensors")
    without_linear = {k: v for k, v in first.items() if k != "projector.linear_proj.weight"}
    with pytest.raises(
        CheckpointError, match=r"1 missing trainable keys: projector\.linear_proj\.weight"
    ):
        load_trainable_state(model, without_linear, source="partial", allow_missing_lora=True)
    stage2 = tmp_path / "stage2"
    loop.main(
        arguments(
            tiny_models,
            corpus,
            stage2,
            "train.max_steps=1",
            "train.lr=0",  # with a zero learning rate the one update changes nothing
            "train.warmup_start_lr=0",
            "train.min_lr=0",
            f"train.init_checkpoint={stage1 / 'last' / 'model.safetensors'}",
            valid=False,
        )
    )
    second, _, _ = read_checkpoint(stage2 / "last" / "model.safetensors")
    assert len([k for k in second if ".lora_" in k]) == 12
    assert all(torch.equal(second[k], first[k]) for k in first)


def test_a_run_without_training_data_says_what_to_set(tiny_models, corpus, tmp_path):
    args = arguments(tiny_models, corpus, tmp_path / "none", "data.train_manifests=[]")
    with pytest.raises(SystemExit, match=r"set data\.train_manifests"):
        loop.main(args)


@pytest.mark.parametrize(
    "argv",
    [
        ["c.yaml", "--stop-at", "12", "train.lr=1e-3", "data.max_cuts=4"],
        ["c.yaml", "train.lr=1e-3", "--stop-at", "12", "data.max_cuts=4"],
        ["--stop-at", "12", "c.yaml", "train.lr=1e-3", "data.max_cuts=4"],
    ],
)
def test_flags_and_overrides_come_in_any_order(argv):
    args = loop.parse_args(argv)
    assert (args.config, args.stop_at) == (Path("c.yaml"), 12)
    assert args.overrides == ["train.lr=1e-3", "data.max_cuts=4"]


def test_a_resume_after_a_kill_between_log_and_checkpoint_logs_each_step_once(
    tiny_models, corpus, tmp_path
):
    out = tmp_path / "run"
    recipe = ("train.max_steps=4", "train.save_every=2", "train.valid_every=2")
    loop.main([*arguments(tiny_models, corpus, out, *recipe), "--stop-at", "2"])
    kept = tmp_path / "step-2"
    shutil.copytree(out / "checkpoints" / "step-00000002", kept)
    loop.main(arguments(tiny_models, corpus, out, *recipe))
    # As if killed after logging steps 3-4 but before their checkpoint: back to step 2.
    shutil.rmtree(out / "checkpoints")
    shutil.copytree(kept, out / "checkpoints" / "step-00000002")
    (out / "last").unlink()
    (out / "last").symlink_to("checkpoints/step-00000002")
    with (out / "log.jsonl").open("a") as log:
        log.write('{"step": 4, "loss": ')  # and one line torn by the kill
    loop.main(arguments(tiny_models, corpus, out, *recipe))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and [s for s, _ in log_entries(out, "valid_loss")] == [0, 2, 4]
    assert [s for s, _ in log_entries(out, "loss")] == [2, 4]


def test_a_resume_with_another_recipe_is_refused_unless_asked(tiny_models, corpus, tmp_path):
    out = tmp_path / "run"
    recipe = ("train.max_steps=4", "train.save_every=2", "train.valid_every=2")
    loop.main([*arguments(tiny_models, corpus, out, *recipe), "--stop-at", "2"])
    first = (out / "config.yaml").read_text()
    changed = arguments(tiny_models, corpus, out, *recipe, "train.lr=5e-4", "audio.pad_to_30s=true")
    with pytest.raises(
        SystemExit,
        match=r"up to step 2 with another recipe \(audio\.pad_to_30s, train\.lr changed\)",
    ):
        loop.main(changed)
    assert (out / "config.yaml").read_text() == first and adam_steps(out) == {2}
    longer = arguments(
        tiny_models, corpus, out, "train.max_steps=3", "train.save_every=2", "train.valid_every=2"
    )
    assert loop.main([*longer, "--stop-at", "3"]).step == 3  # a longer run is the same recipe
    progress = loop.main([*changed, "--allow-config-change"])
    assert progress.step == 4
    assert (out / "config-step00000003.yaml").read_text() != (out / "config.yaml").read_text()
    assert load_config(out / "config.yaml").train.lr == 5e-4
    assert load_config(out / "config-step00000003.yaml").train.lr == 1e-3
