"""The demo end to end: a shortened retraining run, its export, every mode decoded into one table, reruns that reuse."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from recipes.demo import corpus as demo_recipe
from recipes.demo import run as demo
from recipes.demo import stages as demo_stages
from recipes.demo.corpus import (
    DEMO_SEED,
    TEST_SETS,
    TRAIN_SPLIT,
    build_demo_corpus,
)
from whisper_llada.config import load_config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.synthetic_corpus import read_planned_utterances
from whisper_llada.evaluation.mode_comparison import (
    PAPER_MODE,
    ModeRow,
    decode_mode,
    markdown_table,
    standard_modes,
)
from whisper_llada.evaluation.results import MERGED_NAME, claim_results_folder, read_records
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint, read_checkpoint
from whisper_llada.models.encoder import encoder_weights_sha256, load_whisper_encoder
from whisper_llada.training import launch as train_launch
from whisper_llada.training import loop
from whisper_llada.utils.file_hash import file_sha256

REPO = Path(__file__).resolve().parents[3]
TRAIN_UTTERANCES, HELD_OUT, LIMIT = 16, 3, 2
# Short canvases keep the 39 decodes quick (4 slots: the semi-AR modes' 4 blocks of one); `retrain` passes them to the recipe, the export keeps them.
GEN_LEN = 4
RECIPE_OVERRIDES = [
    "train.tensorboard=false",
    f"decode.gen_len={GEN_LEN}",
    f"decode.steps={GEN_LEN}",
    f"decode.block_length={GEN_LEN}",
    f"decode.max_rounds={GEN_LEN}",
]
LABELS = [
    "CTC draft",
    "diffusion",
    "semi-AR, 2 blocks",
    "semi-AR, 4 blocks",
    "diffusion, threshold 0.9",
    "diffusion, threshold 0.9 + prune once",
    "diffusion, threshold 0.9 + prune every round",
    "deliberation, random mask",
    "deliberation, low-confidence mask",
    "semi-AR deliberation",
    "prior-guided",
    "prior-guided, prune every round",
    "prior-guided, no pruning",
    "prior-guided + prefix cache",
    "prior-guided, mask below floor",
]


def set_labels(name: str) -> list[str]:
    """The rows of a set: every mode; test-clean also the paper's 128-slot decoding."""
    paper = [f"{PAPER_MODE}, first {LIMIT}"] if name == demo.PEER_SET else []
    return [*LABELS, *paper]


TABLE_HEADER = "| mode | WER % (S/D/I) | LLM passes / utt | RTF | speed-up vs diffusion | utt / s |"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- The mode list, the table, the guards (no model needed)


def test_standard_modes_are_every_mode_with_its_overrides():
    prior = (
        "decode.mode=prior_guided",
        "decode.first_pass=ctc",
        "decode.threshold=0.9",
        "decode.prune=first_pass",
        "decode.early_exit=true",
        "decode.prior_treatment=visible",
    )
    assert standard_modes(16) == {
        "CTC draft": ("decode.mode=ctc",),
        "diffusion": ("decode.mode=decoding", "decode.steps=16", "decode.block_length=16"),
        "semi-AR, 2 blocks": ("decode.mode=decoding", "decode.steps=16", "decode.block_length=8"),
        "semi-AR, 4 blocks": ("decode.mode=decoding", "decode.steps=16", "decode.block_length=4"),
        "diffusion, threshold 0.9": (
            "decode.mode=decoding",
            "decode.steps=16",
            "decode.block_length=16",
            "decode.threshold=0.9",
        ),
        "diffusion, threshold 0.9 + prune once": (
            "decode.mode=decoding",
            "decode.steps=16",
            "decode.block_length=16",
            "decode.threshold=0.9",
            "decode.prune=first_pass",
        ),
        "diffusion, threshold 0.9 + prune every round": (
            "decode.mode=decoding",
            "decode.steps=16",
            "decode.block_length=16",
            "decode.threshold=0.9",
            "decode.prune=every_round",
        ),
        "deliberation, random mask": (
            "decode.mode=diffusion_deliberation",
            "decode.first_pass=ctc",
            "decode.masking_type=random",
        ),
        "deliberation, low-confidence mask": (
            "decode.mode=diffusion_deliberation",
            "decode.first_pass=ctc",
            "decode.masking_type=low_confidence",
        ),
        "semi-AR deliberation": ("decode.mode=semi_ar_deliberation", "decode.first_pass=ctc"),
        "prior-guided": prior,
        "prior-guided, prune every round": (*prior, "decode.prune=every_round"),
        "prior-guided, no pruning": (*prior, "decode.prune=none"),
        "prior-guided + prefix cache": (*prior, "decode.prefix_cache=true"),
        "prior-guided, mask below floor": (*prior, "decode.prior_treatment=mask_below"),
    }


@pytest.mark.parametrize("gen_len", [0, 2, 6])
def test_standard_modes_need_a_gen_len_that_splits_into_four_blocks(gen_len):
    with pytest.raises(
        ValueError, match=f"decode.gen_len={gen_len} must be a positive multiple of 4"
    ):
        standard_modes(gen_len)


def test_mode_folders():
    assert [demo.mode_folder(label) for label in LABELS] == [
        "ctc-draft",
        "diffusion",
        "semi-ar-2-blocks",
        "semi-ar-4-blocks",
        "diffusion-threshold-0-9",
        "diffusion-threshold-0-9-prune-once",
        "diffusion-threshold-0-9-prune-every-round",
        "deliberation-random-mask",
        "deliberation-low-confidence-mask",
        "semi-ar-deliberation",
        "prior-guided",
        "prior-guided-prune-every-round",
        "prior-guided-no-pruning",
        "prior-guided-prefix-cache",
        "prior-guided-mask-below-floor",
    ]


def row(mode: str, decode_seconds: float, **changes) -> ModeRow:
    fields = dict(
        mode=mode, wer=12.5, substitutions=1, deletions=2, insertions=0, reference_words=24,
        utterances=4, failed=0, forward_passes_per_utterance=7.25, decode_seconds=decode_seconds,
        audio_seconds=10.0, rtf=decode_seconds / 10.0, utterances_per_second=4 / decode_seconds if decode_seconds else None,
        results_dir="x",
    )  # fmt: skip
    return ModeRow(**{**fields, **changes})


def test_markdown_table_rows_and_speed_up():
    reference = row("diffusion", 4.0)
    rows = [
        reference,
        row("fast", 0.5, wer=100 / 3),
        row("failed", 0.0, rtf=None, utterances_per_second=None, failed=4),
    ]
    assert markdown_table(rows, reference) == (
        f"{TABLE_HEADER}\n"
        "|---|---|---|---|---|---|\n"
        "| diffusion | 12.50 (1/2/0) | 7.25 | 0.4000 | 1.00x | 1.00 |\n"
        "| fast | 33.33 (1/2/0) | 7.25 | 0.0500 | 8.00x | 8.00 |\n"
        "| failed | 12.50 (1/2/0) | 7.25 | n/a | n/a | n/a |\n"
    )


def test_a_decode_folder_keeps_to_one_model(tmp_path):
    claim_results_folder(tmp_path, {"model": "a", "checkpoint_sha256": "1" * 64})
    claim_results_folder(tmp_path, {"model": "a", "checkpoint_sha256": "1" * 64})
    with pytest.raises(
        SystemExit,
        match=re.escape("holds results of another model (a, checkpoint sha256 111111111111)"),
    ):
        claim_results_folder(tmp_path, {"model": "b", "checkpoint_sha256": "2" * 64})


def test_a_mode_folder_with_other_results_is_refused(tmp_path):
    (tmp_path / "results-rank0.jsonl").write_text(
        json.dumps({"id": "other", "reference": "a", "hypothesis": "a", "prior": None,
                    "forward_passes": 1, "decode_seconds": 0.1, "audio_seconds": 1.0}) + "\n"
    )  # fmt: skip

    def never():
        raise AssertionError("nothing may be decoded")

    cfg = load_config(REPO / "configs" / "demo.yaml")
    with pytest.raises(
        SystemExit,
        match=re.escape(
            "holds results of 1 utterance(s) that are not in this test set (e.g. other)"
        ),
    ):
        decode_mode(never, cfg, "diffusion", [], tmp_path)
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(to_dict(load_config(REPO / "configs" / "demo.yaml", ["decode.steps=8"])))
    )
    with pytest.raises(SystemExit, match=re.escape("other settings (changed: decode.steps)")):
        decode_mode(never, cfg, "diffusion", [], tmp_path)


def test_demo_refuses_what_is_not_an_exported_model(tmp_path):
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(
        SystemExit,
        match=re.escape("is not an exported model (checkpoint.safetensors, llada missing)"),
    ):
        demo.main(["--model", str(tmp_path), "--work-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="--limit must be at least 1, got 0"):
        demo.main(["--model", str(tmp_path), "--limit", "0"])


@pytest.mark.parametrize("sizes", [{"train_utterances": 0}, {"held_out_utterances": -1}])
def test_demo_corpus_sizes_must_be_positive(tmp_path, sizes):
    name, value = next(iter(sizes.items()))
    with pytest.raises(ValueError, match=f"{name} must be at least 1, got {value}"):
        build_demo_corpus(tmp_path / "corpus", with_train=True, **sizes)


# ---- Retraining, export and the demo on the result


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the test machine's cores are shared, and timings need not be fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def retrain_command(out: Path, work: Path) -> list[str]:
    """The shortened `retrain` of these tests, without the stages' step counts."""
    return [
        "retrain", "--out", str(out), "--work-dir", str(work),
        "--train-utterances", str(TRAIN_UTTERANCES), "--held-out-utterances", str(HELD_OUT),
        *RECIPE_OVERRIDES,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, one_thread) -> dict[str, Path]:
    """A shortened `retrain` (stage 1: 2 steps, stage 2: 1), then a rerun that skips the
    finished stage 1 and resumes stage 2 to 2 steps."""
    root = tmp_path_factory.mktemp("demo")
    out, work = root / "model", root / "work"
    demo.main([*retrain_command(out, work), "--max-steps", "2", "--stage2-max-steps", "1"])
    demo.main([*retrain_command(out, work), "--max-steps", "2", "--stage2-max-steps", "2"])
    return {"root": root, "out": out, "work": work}


@pytest.fixture(scope="module")
def demo_run(retrained) -> Path:
    """`python -m recipes.demo --limit 2` on the retrained model (in this process)."""
    run = retrained["root"] / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        demo.main(
            [
                "--model",
                str(retrained["out"]),
                "--work-dir",
                str(run),
                "--limit",
                str(LIMIT),
                "--threads",
                "1",
            ]
        )
    assert stdout.getvalue().startswith((run / "demo_results.md").read_text())
    return run


def test_retrain_resumes_and_exports_with_its_metadata(retrained):
    work, out = retrained["work"], retrained["out"]
    sessions = [
        json.loads(line) for line in (work / "retrain_sessions.jsonl").read_text().splitlines()
    ]
    # The rerun skipped the finished stage 1 and went on with stage 2 from its step 1.
    assert [(s["stage"], s["step"]) for s in sessions] == [(1, 2), (2, 1), (2, 2)]
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.safetensors",
        "config.yaml",
        "llada",
    ]
    _, config, metadata = read_checkpoint(out / "checkpoint.safetensors")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert metadata["steps"] == 2
    assert metadata["demo_seed"] == DEMO_SEED
    assert metadata["git_commit"] == (commit or "unknown")
    assert metadata["train_utterances"] == TRAIN_UTTERANCES
    assert metadata["held_out_utterances"] == HELD_OUT
    # the frozen Whisper tiny.en is not copied: referenced by path, its weights' hash recorded
    whisper = out / config["model"]["whisper_path"]  # relative to the export's folder
    assert whisper.resolve() == (REPO / "pretrained" / "whisper-tiny.en" / "hf").resolve()
    encoder = load_whisper_encoder(whisper, dtype=torch.float32)
    assert metadata["encoder_sha256"] == encoder_weights_sha256(encoder)
    shared = [
        f"model.llada_path={work / 'base' / 'llada'}",
        f"data.train_manifests=[{work / 'manifests' / 'librispeech_cuts_train-clean-100.jsonl.gz'}]",
        f"data.valid_manifests=[{work / 'manifests' / 'librispeech_cuts_dev-clean.jsonl.gz'}]",
        f"data.feature_cache={work / 'feature_cache'}",
        f"data.encoder_cache={work / 'encoder_cache'}",
    ]
    first, second = metadata["stages"]
    assert {k: v for k, v in first.items() if k != "train_wall_seconds"} == {
        "recipe": "configs/demo.yaml",
        "overrides": [
            *shared, f"train.output_dir={work / 'train'}", "train.max_steps=2", *RECIPE_OVERRIDES
        ],
        "steps": 2,
        "nproc_per_node": 1,
        "train_sessions": 1,
    }  # fmt: skip
    assert {k: v for k, v in second.items() if k != "train_wall_seconds"} == {
        "recipe": "configs/demo_stage2.yaml",
        "overrides": [
            *shared,
            f"train.output_dir={work / 'train_stage2'}",
            f"train.init_checkpoint={work / 'train' / 'last' / 'model.safetensors'}",
            "train.max_steps=2",
            *RECIPE_OVERRIDES,
        ],
        "steps": 2,
        "nproc_per_node": 1,
        "train_sessions": 2,
    }
    for stage, record in ((1, first), (2, second)):
        seconds = sum(s["seconds"] for s in sessions if s["stage"] == stage)
        assert record["train_wall_seconds"] == pytest.approx(seconds, abs=0.11)
    assert metadata["train_wall_seconds"] == pytest.approx(
        first["train_wall_seconds"] + second["train_wall_seconds"], abs=0.11
    )
    spec = metadata["corpus_spec"]
    assert spec["seed"] == DEMO_SEED
    assert spec["splits"] == {
        "dev-clean": HELD_OUT, "dev-other": HELD_OUT, "test-clean": HELD_OUT, "test-other": HELD_OUT,
        TRAIN_SPLIT: TRAIN_UTTERANCES,
    }  # fmt: skip
    assert config["model"]["llada_path"] == "llada"  # relative to the export's folder
    assert config["decode"]["gen_len"] == GEN_LEN
    assert config["loss"]["draft_prob"] == 0.5  # stage 2's recipe


def test_the_export_holds_stage_two_s_last_weights(retrained):
    work, out = retrained["work"], retrained["out"]
    cfg = load_config(out / "config.yaml")
    model, _ = build_model(cfg.model)
    load_checkpoint(model, out / "checkpoint.safetensors")
    exported = model.state_dict()
    stage_two, _, _ = read_checkpoint(work / "train_stage2" / "last" / "model.safetensors")
    stage_one, _, _ = read_checkpoint(work / "train" / "last" / "model.safetensors")
    assert stage_two.keys() == stage_one.keys()
    assert stage_two.keys() <= exported.keys()
    assert all(torch.equal(exported[name], tensor) for name, tensor in stage_two.items())
    assert not all(torch.equal(stage_one[name], tensor) for name, tensor in stage_two.items())


def test_stage_two_starts_from_stage_one_s_last_weights(retrained, tmp_path):
    """Stage 2's resolved config, one update at learning rate 0: its weights are stage 1's."""
    work = retrained["work"]
    loop.main(
        [
            str(work / "train_stage2" / "config.yaml"),
            f"train.output_dir={tmp_path}",
            "train.max_steps=1",
            "train.lr=0.0",
            "train.warmup_start_lr=0.0",
            "train.min_lr=0.0",
            "data.valid_manifests=[]",
        ]
    )
    started, _, metadata = read_checkpoint(tmp_path / "last" / "model.safetensors")
    stage_one, _, _ = read_checkpoint(work / "train" / "last" / "model.safetensors")
    assert metadata["step"] == 1
    assert started.keys() == stage_one.keys()
    assert all(torch.equal(started[name], tensor) for name, tensor in stage_one.items())
    cfg = load_config(tmp_path / "config.yaml")
    torch.manual_seed(cfg.train.seed)  # as train.py builds: without init_checkpoint, these
    fresh = build_model(cfg.model)[0].state_dict()
    assert not all(torch.equal(fresh[name], tensor) for name, tensor in stage_one.items())


def test_stage_one_cannot_go_on_under_a_started_stage_two(retrained):
    work, out = retrained["work"], retrained["out"]
    sessions = (work / "retrain_sessions.jsonl").read_text()
    with pytest.raises(SystemExit) as stopped:
        demo.main([*retrain_command(out, work), "--max-steps", "3", "--stage2-max-steps", "2"])
    assert str(stopped.value) == (
        f"{work / 'train_stage2'} has started from stage 1's weights at step 2, and stage 1 is "
        f"asked for 3 steps: keep --max-steps 2, or delete {work / 'train_stage2'} to train "
        "stage 2 again after stage 1"
    )
    assert (work / "retrain_sessions.jsonl").read_text() == sessions


@pytest.mark.parametrize(
    ("override", "use"),
    [
        ("train.output_dir=x", "--work-dir"),
        ("train.init_checkpoint=x", "stage 1's last checkpoint"),
        ("train.max_steps=5", "--max-steps and --stage2-max-steps"),
    ],
)
def test_retrain_refuses_overrides_of_what_it_sets_per_stage(tmp_path, override, use):
    with pytest.raises(SystemExit) as stopped:
        demo.main(["retrain", "--work-dir", str(tmp_path / "work"), override])
    key = override.partition("=")[0]
    assert str(stopped.value) == f"{key} is set per stage by retrain: use {use}"
    assert not (tmp_path / "work").exists()


# ---- Stages under torchrun (--nproc-per-node)


def set_saved_world_size(output_dir: Path, world_size: int) -> None:
    """Rewrite the world size in a run's last train_state.pt, as if that many processes saved it."""
    path = output_dir / "last" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "world_size": world_size}, path)


def test_retrain_refuses_to_resume_a_stage_saved_by_other_processes(retrained, tmp_path):
    work, out = tmp_path / "work", tmp_path / "model"
    shutil.copytree(retrained["work"], work, symlinks=True)
    for stage in ("train", "train_stage2"):
        set_saved_world_size(work / stage, 2)
    sessions = (work / "retrain_sessions.jsonl").read_text()
    with pytest.raises(SystemExit) as stopped:
        demo.main([*retrain_command(out, work), "--max-steps", "2", "--stage2-max-steps", "3"])
    # Stage 1 has its 2 steps: skipped, whoever saved it. Stage 2 would resume.
    assert str(stopped.value) == (
        f"stage 2's last checkpoint in {work / 'train_stage2'} was saved by 2 process(es), and "
        "train.py resumes it only with as many (their data positions and random streams are per "
        "process): run the same command with --nproc-per-node 2, or delete "
        f"{work / 'train_stage2'} to train stage 2 again"
    )
    assert (work / "retrain_sessions.jsonl").read_text() == sessions
    assert demo_stages.trained_steps(work / "train_stage2") == 2
    assert not out.exists()
    # Both finished: exported, with the processes that saved them.
    demo.main([*retrain_command(out, work), "--max-steps", "2", "--stage2-max-steps", "2"])
    _, _, metadata = read_checkpoint(out / "checkpoint.safetensors")
    assert [stage["nproc_per_node"] for stage in metadata["stages"]] == [2, 2]
    assert (work / "retrain_sessions.jsonl").read_text() == sessions


def test_retrain_needs_at_least_one_process(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        demo.main(["retrain", "--work-dir", str(tmp_path / "work"), "--nproc-per-node", "0"])
    assert str(stopped.value) == "--nproc-per-node must be at least 1, got 0"
    assert not (tmp_path / "work").exists()


def test_torchrun_command_and_environment(monkeypatch, capsys):
    """The training module under torchrun, in the caller's folder, one thread per process."""
    launched = []

    def run(command, *, env):
        launched.append((command, env["OMP_NUM_THREADS"]))
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(train_launch.subprocess, "run", run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert train_launch.run_torchrun(2, ["configs/demo.yaml", "train.seed=1"]) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert train_launch.run_torchrun(3, ["configs/demo.yaml"]) == 3
    python = train_launch.sys.executable
    command = [python, "-m", "torch.distributed.run", "--standalone"]
    module = ["--module", "whisper_llada.training"]
    assert launched == [
        ([*command, "--nproc_per_node=2", *module, "configs/demo.yaml", "train.seed=1"], "1"),
        ([*command, "--nproc_per_node=3", *module, "configs/demo.yaml"], "4"),
    ]
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{python} -m torch.distributed.run --standalone --nproc_per_node=2 "
        "--module whisper_llada.training configs/demo.yaml train.seed=1"
    )


def copy_corpus(retrained: dict[str, Path], work: Path) -> None:
    """The retrained work folder's base models and corpus in `work` (nothing to synthesise)."""
    for part in ("base", "corpus"):
        shutil.copytree(retrained["work"] / part, work / part)


@pytest.mark.slow
def test_retrain_with_two_processes_per_stage(retrained, tmp_path, monkeypatch, capfd):
    """The shortened retrain under torchrun: the same metadata as in-process, but 2 processes."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    work, out = tmp_path / "work", tmp_path / "model"
    copy_corpus(retrained, work)
    steps = ["--max-steps", "2", "--stage2-max-steps", "2"]
    demo.main([*retrain_command(out, work), *steps, "--nproc-per-node", "2"])
    printed = capfd.readouterr()
    for recipe in ("demo.yaml", "demo_stage2.yaml"):
        launched = (
            f"--nproc_per_node=2 --module whisper_llada.training {REPO / 'configs' / recipe} "
        )
        assert launched in printed.out
    assert printed.out.count("new run: 2 process(es) on cpu, fp32") == 2  # streamed from rank 0
    assert "Setting OMP_NUM_THREADS" not in printed.err  # torchrun's warning: retrain set it
    sessions = [
        json.loads(line) for line in (work / "retrain_sessions.jsonl").read_text().splitlines()
    ]
    assert [(s["stage"], s["step"]) for s in sessions] == [(1, 2), (2, 2)]
    for stage in ("train", "train_stage2"):
        _, _, saved = read_checkpoint(work / stage / "last" / "model.safetensors")
        assert saved["world_size"] == 2
        assert len(saved["rank_checksums"]) == 2
    _, _, metadata = read_checkpoint(out / "checkpoint.safetensors")
    _, _, in_process = read_checkpoint(retrained["out"] / "checkpoint.safetensors")
    in_process = json.loads(json.dumps(in_process).replace(str(retrained["work"]), str(work)))
    assert list(metadata) == list(in_process)
    differ = ("nproc_per_node", "train_wall_seconds", "train_sessions")
    for mine, theirs in zip(metadata["stages"], in_process["stages"], strict=True):
        assert list(mine) == list(theirs)
        assert {k: v for k, v in mine.items() if k not in differ} == {
            k: v for k, v in theirs.items() if k not in differ
        }
        assert (mine["nproc_per_node"], mine["train_sessions"]) == (2, 1)
    for key in ("stages", "train_wall_seconds", "valid_loss"):  # valid_loss: other batches
        del metadata[key], in_process[key]
    assert metadata == in_process


@pytest.mark.slow
def test_retrain_stops_when_torchrun_fails(retrained, tmp_path):
    work, out = tmp_path / "work", tmp_path / "model"
    copy_corpus(retrained, work)
    with pytest.raises(SystemExit) as stopped:
        # train.py's own check stops both processes
        demo.main([*retrain_command(out, work), "train.log_every=0", "--nproc-per-node", "2"])
    assert str(stopped.value) == (
        "stage 1 failed: torchrun exited with code 1 (its output is above); once the cause is "
        f"fixed, the same retrain command goes on from the stage's last checkpoint in "
        f"{work / 'train'}, if it has one"
    )
    assert not (work / "retrain_sessions.jsonl").exists()


def test_demo_rebuilds_exactly_the_held_out_sets_of_training(retrained, demo_run):
    trained_on = read_planned_utterances(retrained["work"] / "corpus")
    assert [u.split for u in trained_on].count(TRAIN_SPLIT) == TRAIN_UTTERANCES
    held_out = [u for u in trained_on if u.split != TRAIN_SPLIT]
    assert len(held_out) == 4 * HELD_OUT
    assert read_planned_utterances(demo_run / "corpus") == held_out


def test_demo_refuses_held_out_sets_of_another_recipe(retrained, monkeypatch):
    monkeypatch.setattr(demo_recipe, "VOCABULARY_SIZE", demo_recipe.VOCABULARY_SIZE + 1)
    run = retrained["root"] / "changed_recipe"
    with pytest.raises(SystemExit, match=re.escape("(changed: vocabulary_size): decode with")):
        demo.main(["--model", str(retrained["out"]), "--work-dir", str(run), "--limit", "1"])
    assert not (run / "decode-first1").exists()


def test_demo_table_has_every_mode_and_set(retrained, demo_run):
    markdown = (demo_run / "demo_results.md").read_text()
    for name, description in TEST_SETS.items():
        section = markdown.split(f"## {name}: {description} ({LIMIT} utterances)\n\n")[1]
        lines = section.split("\n\n")[0].splitlines()
        assert lines[:2] == [TABLE_HEADER, "|---|---|---|---|---|---|"]
        assert [line.split(" | ")[0] for line in lines[2:]] == [
            f"| {label}" for label in set_labels(name)
        ]
        assert lines[3].split(" | ")[4] == "1.00x"  # diffusion, the reference
    document = json.loads((demo_run / "demo_results.json").read_text())
    assert list(document) == [
        "model",
        "checkpoint_sha256",
        "limit",
        "device",
        "timing_rounds",
        "load_average",
        "encoding",
        "reference_mode",
        "modes",
        "test_sets",
    ]
    assert document["timing_rounds"] == demo.TIMING_ROUNDS
    assert len(document["load_average"]) == 2
    # each set encoded once, before the timed decoding: (seconds, audio seconds)
    assert list(document["encoding"]) == list(TEST_SETS)
    assert all(seconds > 0 and audio > 0 for seconds, audio in document["encoding"].values())
    assert (
        f"decoded in {demo.TIMING_ROUNDS} interleaved rounds"
        in (demo_run / "demo_results.md").read_text()
    )
    assert document["limit"] == LIMIT
    assert document["model"] == str(retrained["out"])
    assert document["checkpoint_sha256"] == file_sha256(retrained["out"] / "checkpoint.safetensors")
    assert document["device"] == "cpu, 1 CPU thread(s)"
    assert document["reference_mode"] == "diffusion"
    assert document["modes"] == {k: list(v) for k, v in standard_modes(GEN_LEN).items()}
    assert list(document["test_sets"]) == list(TEST_SETS)
    for name, result in document["test_sets"].items():
        assert result["utterances"] == LIMIT
        assert [r["mode"] for r in result["rows"]] == set_labels(name)
        assert list(result["rows"][0]) == [
            "mode", "wer", "substitutions", "deletions", "insertions", "reference_words",
            "utterances", "failed", "forward_passes_per_utterance", "decode_seconds",
            "audio_seconds", "rtf", "utterances_per_second", "results_dir", "speed_up",
        ]  # fmt: skip
    png = (demo_run / "demo_results.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000


def wer_file(folder: Path) -> dict[str, str]:
    (path,) = folder.glob("wer-*.txt")
    lines = path.read_text().splitlines()
    values = {"%WER": lines[0].removeprefix("%WER = "), "errors": lines[1]}
    values.update(line.split(": ", 1) for line in lines[2:])
    return values


def test_table_numbers_are_those_of_the_results_files(demo_run):
    document = json.loads((demo_run / "demo_results.json").read_text())
    markdown = (demo_run / "demo_results.md").read_text()
    for name, result in document["test_sets"].items():
        for entry in result["rows"]:
            folder = Path(entry["results_dir"])
            assert folder == demo_run / f"decode-first{LIMIT}" / name / demo.mode_folder(
                entry["mode"]
            )
            records = read_records(folder / MERGED_NAME)
            assert len(records) == LIMIT
            file = wer_file(folder)
            assert file["%WER"] == f"{entry['wer']:.2f}"
            counts = re.match(
                r"Errors: (\d+) insertions, (\d+) deletions, (\d+) substitutions, over (\d+) reference words",
                file["errors"],
            )
            assert [int(n) for n in counts.groups()] == [
                entry["insertions"], entry["deletions"], entry["substitutions"], entry["reference_words"]
            ]  # fmt: skip
            assert float(file["forward passes per utterance"]) == round(
                entry["forward_passes_per_utterance"], 3
            )
            assert float(file["RTF"]) == round(entry["rtf"], 4)
            assert entry["decode_seconds"] == sum(r.decode_seconds for r in records)
            reference = next(r for r in result["rows"] if r["mode"] == "diffusion")
            assert entry["speed_up"] == reference["rtf"] / entry["rtf"]
            cells = f"| {entry['mode']} | {entry['wer']:.2f} ({entry['substitutions']}/{entry['deletions']}/{entry['insertions']}) | {entry['forward_passes_per_utterance']:.2f} | {entry['rtf']:.4f} | {entry['speed_up']:.2f}x |"
            assert cells in markdown


def test_rerunning_the_demo_reuses_every_result(retrained, demo_run, monkeypatch, capsys):
    shards = sorted(demo_run.glob(f"decode-first{LIMIT}/*/*/results-rank0.jsonl"))
    assert len(shards) == sum(len(set_labels(name)) for name in TEST_SETS)
    before = {path: (os.stat(path).st_mtime_ns, path.read_bytes()) for path in shards}
    document = json.loads((demo_run / "demo_results.json").read_text())

    def no_model(*args):
        raise AssertionError("a rerun must not build the model")

    calls = []

    def spy(decoder, cfg, mode, utterances, output_dir, **kwargs):
        calls.append((output_dir.parent.name, mode, kwargs["first"]))
        return decode_mode(decoder, cfg, mode, utterances, output_dir, **kwargs)

    monkeypatch.setattr(demo, "load_decoder", no_model)
    monkeypatch.setattr(demo, "decode_mode", spy)
    demo.main(
        [
            "--model",
            str(retrained["out"]),
            "--work-dir",
            str(demo_run),
            "--limit",
            str(LIMIT),
            "--threads",
            "1",
        ]
    )
    assert {path: (os.stat(path).st_mtime_ns, path.read_bytes()) for path in shards} == before
    rerun = json.loads((demo_run / "demo_results.json").read_text())
    for run in (rerun, document):
        del run["load_average"], run["encoding"]  # each run's own (a rerun encodes nothing)
    assert rerun == document
    # Interleaved: every mode gets its next share of a set before any mode goes on.
    shares = [math.ceil(LIMIT * r / demo.TIMING_ROUNDS) for r in range(1, demo.TIMING_ROUNDS + 1)]
    for name in TEST_SETS:
        labels = [label for label in set_labels(name) if not label.startswith(PAPER_MODE)]
        made = [(mode, n) for set_name, mode, n in calls if set_name == name and mode in labels]
        assert made == [(mode, n) for n in shares for mode in labels]
    assert capsys.readouterr().out.startswith("# Demo results\n")


@pytest.mark.slow
def test_demo_without_limit_decodes_every_held_out_utterance(retrained, demo_run):
    demo.main(["--model", str(retrained["out"]), "--work-dir", str(demo_run), "--threads", "1"])
    document = json.loads((demo_run / "demo_results.json").read_text())
    assert document["limit"] is None
    for name, result in document["test_sets"].items():
        assert result["utterances"] == HELD_OUT
        for entry in result["rows"]:
            assert Path(entry["results_dir"]).parent == demo_run / "decode" / name
