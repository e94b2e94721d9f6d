"""The demo's AR rows: the AR model alone and the cascade beside the diffusion modes, the speed-up vs AR, refusals of the wrong AR model."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from recipes.demo import run as demo
from recipes.demo.corpus import TEST_SETS
from whisper_llada.config import load_config
from whisper_llada.evaluation.mode_comparison import (
    AR_MODE,
    PAPER_MODE,
    ModeRow,
    cascade_modes,
    markdown_table,
    standard_modes,
)
from whisper_llada.evaluation.results import MERGED_NAME, read_records
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import read_checkpoint, write_checkpoint
from whisper_llada.models.export import export_model
from whisper_llada.utils.file_hash import file_sha256

REPO = Path(__file__).resolve().parents[3]
HELD_OUT, LIMIT, GEN_LEN = 3, 2, 4
CASCADE = ["AR -> deliberation (low-conf.)", "AR -> prior-guided"]
LABELS = [*standard_modes(GEN_LEN), AR_MODE, *CASCADE]


def set_labels(name: str) -> list[str]:
    """The rows of a set: every mode and the AR rows; test-clean also the paper's decoding."""
    paper = [f"{PAPER_MODE}, first {LIMIT}"] if name == demo.PEER_SET else []
    return [*standard_modes(GEN_LEN), AR_MODE, *CASCADE, *paper]


HEADER = (
    "| mode | WER % (S/D/I) | LLM passes / utt | RTF | speed-up vs diffusion | speed-up vs AR "
    "| utt / s |"
)
PRIOR_GUIDED = (
    "decode.mode=prior_guided",
    "decode.first_pass=model",
    "decode.threshold=0.9",
    "decode.prune=first_pass",
    "decode.early_exit=true",
    "decode.prior_treatment=visible",
)


# ---- The modes, the table (no model needed)


def test_cascade_modes_feed_the_ar_model_to_the_diffusion_model():
    overrides = ["model.whisper_path=/a b/c: d, e", "decode.num_beams=1"]
    first_pass = (
        "decode.first_pass=model",
        "inference.first_pass_config=ar/config.yaml",
        "inference.first_pass_overrides=['model.whisper_path=/a b/c: d, e', decode.num_beams=1]",
    )
    modes = cascade_modes("ar/config.yaml", overrides)
    assert modes == {
        "AR -> deliberation (low-conf.)": (
            "decode.mode=diffusion_deliberation",
            "decode.masking_type=low_confidence",
            *first_pass,
        ),
        "AR -> prior-guided": (*PRIOR_GUIDED, *first_pass),
    }
    cfg = load_config(REPO / "configs" / "tiny.yaml", modes["AR -> prior-guided"])
    assert cfg.inference.first_pass_overrides == tuple(overrides)
    assert cfg.inference.first_pass_config == str(Path.cwd() / "ar" / "config.yaml")  # override
    assert (cfg.decode.mode, cfg.decode.first_pass) == ("prior_guided", "model")


def row(mode: str, decode_seconds: float, **changes) -> ModeRow:
    fields = dict(
        mode=mode, wer=12.5, substitutions=1, deletions=2, insertions=0, reference_words=24,
        utterances=4, failed=0, forward_passes_per_utterance=7.25, decode_seconds=decode_seconds,
        audio_seconds=10.0, rtf=decode_seconds / 10.0, utterances_per_second=4 / decode_seconds,
        results_dir="x",
    )  # fmt: skip
    return ModeRow(**{**fields, **changes})


def test_the_table_gains_a_speed_up_vs_ar_column():
    reference, ar = row("diffusion", 4.0), row(AR_MODE, 1.0, forward_passes_per_utterance=5.5)
    cascade = row(
        "AR -> prior-guided",
        2.0,
        first_pass_forward_passes_per_utterance=5.5,
        first_pass_seconds=1.0,
    )
    assert markdown_table([reference, ar, cascade], reference, ar) == (
        f"{HEADER}\n"
        "|---|---|---|---|---|---|---|\n"
        "| diffusion | 12.50 (1/2/0) | 7.25 | 0.4000 | 1.00x | 0.25x | 1.00 |\n"
        f"| {AR_MODE} | 12.50 (1/2/0) | 5.50 | 0.1000 | 4.00x | 1.00x | 4.00 |\n"
        "| AR -> prior-guided | 12.50 (1/2/0) | 5.50 AR + 7.25 | 0.2000 | 2.00x | 0.50x | 2.00 |\n"
    )
    assert cascade.as_dict(reference, ar) == {
        **{key: getattr(cascade, key) for key in cascade.__dataclass_fields__},
        "speed_up": 2.0,
        "speed_up_vs_ar": 0.5,
    }
    assert list(reference.as_dict(reference, ar))[-3:] == [
        "results_dir",
        "speed_up",
        "speed_up_vs_ar",
    ]
    assert list(reference.as_dict(reference))[-2:] == ["results_dir", "speed_up"]


def test_the_default_ar_model_is_the_folder_beside_the_model(tmp_path):
    assert demo.default_ar_model(tmp_path / "demo") is None
    (tmp_path / "demo_ar").mkdir()
    assert demo.default_ar_model(tmp_path / "demo") == tmp_path / "demo_ar"
    assert demo.default_ar_model(Path("models/demo")) in (None, Path("models/demo_ar"))


# ---- The demo with an AR model: tiny models exported untrained (random weights decode too)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_config, tiny_ar_config, one_thread) -> dict[str, Path]:
    """root/model (Whisper-LLaDA) and root/model_ar (Whisper-LLaMA) as retrain and retrain-ar
    export them, trained with held-out sets of HELD_OUT utterances."""
    root = tmp_path_factory.mktemp("demo_ar")
    metadata = {"held_out_utterances": HELD_OUT}
    short = ("audio.pad_to_30s=false", "inference.batch_size=2")
    llada = tiny_config(
        *short,
        f"decode.gen_len={GEN_LEN}",
        f"decode.steps={GEN_LEN}",
        f"decode.block_length={GEN_LEN}",
        f"decode.max_rounds={GEN_LEN}",
    )
    llama = tiny_ar_config(*short, "decode.max_new_tokens=6")
    for cfg, name in ((llada, "model"), (llama, "model_ar")):
        torch.manual_seed(0)
        export_model(build_model(cfg.model)[0], cfg, root / name, metadata=metadata)
    return {"root": root, "model": root / "model", "ar": root / "model_ar"}


def run_demo(model: Path, work: Path, *extra: str) -> str:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        demo.main(["--model", str(model), "--work-dir", str(work), "--limit", str(LIMIT), *extra])
    return stdout.getvalue()


@pytest.fixture(scope="module")
def ar_run(exported) -> Path:
    """The demo on root/model: its AR model is the default one, root/model_ar."""
    run = exported["root"] / "run"
    printed = run_demo(exported["model"], run, "--threads", "1")
    assert printed.startswith((run / "demo_results.md").read_text())
    return run


def test_every_set_has_the_ar_rows_and_the_speed_up_vs_ar(ar_run, exported):
    markdown = (ar_run / "demo_results.md").read_text()
    sha = file_sha256(exported["ar"] / "checkpoint.safetensors")
    assert f"from the AR model `{exported['ar']}` (checkpoint sha256 {sha[:12]})" in markdown
    for name, description in TEST_SETS.items():
        section = markdown.split(f"## {name}: {description} ({LIMIT} utterances)\n\n")[1]
        lines = section.split("\n\n")[0].splitlines()
        assert lines[:2] == [HEADER, "|---|---|---|---|---|---|---|"]
        assert [line.split(" | ")[0] for line in lines[2:]] == [
            f"| {label}" for label in set_labels(name)
        ]
        assert lines[2 + LABELS.index(AR_MODE)].split(" | ")[5] == "1.00x"
    document = json.loads((ar_run / "demo_results.json").read_text())
    assert list(document)[:5] == [
        "model",
        "checkpoint_sha256",
        "ar_model",
        "ar_checkpoint_sha256",
        "ar_reference_mode",
    ]
    assert (document["ar_model"], document["ar_checkpoint_sha256"]) == (str(exported["ar"]), sha)
    assert document["ar_reference_mode"] == AR_MODE
    assert list(document["modes"]) == LABELS
    assert document["modes"][AR_MODE] == ["decode.mode=autoregressive", "decode.num_beams=1"]
    first_pass = json.loads(json.dumps(list(cascade_modes(
        exported["ar"] / "config.yaml",
        [*demo.model_paths(exported["ar"], "llama"), *demo.NEUTRAL_DECODE,
         "decode.mode=autoregressive", "decode.num_beams=1"],
    ).values())))  # fmt: skip
    assert [document["modes"][label] for label in CASCADE] == first_pass
    assert json.loads((ar_run / f"decode-first{LIMIT}" / "ar_model.json").read_text()) == {
        "model": str(exported["ar"]),
        "checkpoint_sha256": sha,
    }
    png = (ar_run / "demo_results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


def test_the_cascade_rows_deliberate_over_the_ar_row_s_hypotheses(ar_run):
    document = json.loads((ar_run / "demo_results.json").read_text())
    markdown = (ar_run / "demo_results.md").read_text()
    for name, result in document["test_sets"].items():
        entries = {entry["mode"]: entry for entry in result["rows"]}
        ar = entries[AR_MODE]
        assert Path(ar["results_dir"]) == ar_run / f"decode-first{LIMIT}" / name / (
            "autoregressive-greedy-kv-cache"
        )
        first = {r.id: r for r in read_records(Path(ar["results_dir"]) / MERGED_NAME)}
        assert len(first) == LIMIT and all(r.first_pass_seconds is None for r in first.values())
        for entry in entries.values():
            assert entry["speed_up_vs_ar"] == ar["rtf"] / entry["rtf"]
            cascade = entry["mode"] in CASCADE
            assert ("first_pass_seconds" in entry) == cascade
        for label in CASCADE:
            entry = entries[label]
            records = read_records(Path(entry["results_dir"]) / MERGED_NAME)
            assert [r.id for r in records] == sorted(first)
            for record in records:  # the first pass is the AR row's, decoded again in this run
                assert record.prior == first[record.id].hypothesis
                assert record.first_pass_forward_passes == first[record.id].forward_passes
            first_seconds = sum(r.first_pass_seconds for r in records)
            assert entry["first_pass_seconds"] == first_seconds
            assert entry["decode_seconds"] == sum(r.decode_seconds for r in records) + first_seconds
            assert (
                entry["first_pass_forward_passes_per_utterance"]
                == ar["forward_passes_per_utterance"]
            )
            (wer_file,) = Path(entry["results_dir"]).glob("wer-*.txt")
            both = wer_file.read_text().split("RTF of both stages: ")[1].splitlines()[0]
            assert float(both) == round(entry["rtf"], 4)
            passes = (
                f"| {entry['first_pass_forward_passes_per_utterance']:.2f} AR + "
                f"{entry['forward_passes_per_utterance']:.2f} | {entry['rtf']:.4f} "
                f"| {entry['speed_up']:.2f}x | {entry['speed_up_vs_ar']:.2f}x |"
            )
            assert f"| {label} | " in markdown and passes in markdown


def test_a_rerun_with_the_ar_model_reuses_every_result(ar_run, exported, monkeypatch):
    shards = sorted(ar_run.glob(f"decode-first{LIMIT}/*/*/results-rank0.jsonl"))
    assert len(shards) == sum(len(set_labels(name)) for name in TEST_SETS)
    before = {path: path.read_bytes() for path in shards}
    document = json.loads((ar_run / "demo_results.json").read_text())

    def no_model(*args):
        raise AssertionError("a rerun must not build a model")

    monkeypatch.setattr(demo, "load_decoder", no_model)
    run_demo(exported["model"], ar_run, "--ar-model", str(exported["ar"]), "--threads", "1")
    assert {path: path.read_bytes() for path in shards} == before
    rerun = json.loads((ar_run / "demo_results.json").read_text())
    for run in (rerun, document):
        del run["load_average"], run["encoding"]  # each run's own (a rerun encodes nothing)
    assert rerun == document


def copy_ar_model(exported: dict[str, Path], name: str, **metadata) -> Path:
    """A copy of the AR model with another projector and `metadata` changes."""
    copy = exported["root"] / name
    shutil.copytree(exported["ar"], copy)
    tensors, config, saved = read_checkpoint(copy / "checkpoint.safetensors")
    tensors = {key: tensor + 1.0 for key, tensor in tensors.items()}
    write_checkpoint(
        tensors, copy / "checkpoint.safetensors", config=config, metadata={**saved, **metadata}
    )
    return copy


def test_results_of_another_ar_model_are_refused(ar_run, exported):
    other = copy_ar_model(exported, "other_ar")
    folders = sorted(ar_run.glob(f"decode-first{LIMIT}/*/*"))
    sha = file_sha256(exported["ar"] / "checkpoint.safetensors")
    with pytest.raises(SystemExit) as stopped:
        run_demo(exported["model"], ar_run, "--ar-model", str(other))
    decode_dir = ar_run / f"decode-first{LIMIT}"
    assert str(stopped.value) == (
        f"{decode_dir} holds results of another AR model ({exported['ar']}, checkpoint sha256 "
        f"{sha[:12]}): pass another --work-dir, or delete {decode_dir} to decode this one there"
    )
    assert sorted(ar_run.glob(f"decode-first{LIMIT}/*/*")) == folders


def test_an_ar_model_of_other_held_out_sets_is_refused(exported, tmp_path):
    other = copy_ar_model(exported, "capped_ar", held_out_utterances=HELD_OUT - 1)
    with pytest.raises(SystemExit) as stopped:
        run_demo(exported["model"], tmp_path / "run", "--ar-model", str(other))
    assert str(stopped.value) == (
        f"the AR model {other} was trained with held-out sets of {HELD_OUT - 1} each and the "
        f"model {exported['model']} with held-out sets of {HELD_OUT} each: the demo decodes "
        "both on the model's, so make the AR model with retrain-ar's --held-out-utterances as "
        "the model was (retrain's)"
    )
    assert not (tmp_path / "run").exists()


def test_a_given_ar_model_must_be_an_exported_ar_model(exported, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        run_demo(exported["model"], tmp_path / "run", "--ar-model", str(exported["model"]))
    assert str(stopped.value) == (
        f"{exported['model']} is not an exported AR model (llama missing): make one with "
        "`python -m recipes.demo retrain-ar --out DIR` or `python -m whisper_llada.models.export`"
    )
    with pytest.raises(
        SystemExit, match=re.escape("(config.yaml, checkpoint.safetensors, llama missing)")
    ):
        run_demo(exported["model"], tmp_path / "run", "--ar-model", str(tmp_path / "none"))
    assert not (tmp_path / "run").exists()
