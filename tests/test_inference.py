"""inference.py end to end on the tiny models: result files, failed utterances, resume after kill -9, torchrun shards."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import inference
from whisper_llada.evaluation.results import MERGED_NAME

REPO = Path(__file__).resolve().parent.parent
# A fast decode: 16 MASK slots in two semi-AR blocks.
DECODE = ["decode.gen_len=16", "decode.steps=8", "decode.block_length=8"]
DELIBERATION = ("decode.mode=diffusion_deliberation", "decode.first_pass=manifest")


@pytest.fixture(scope="module")
def test_set(tmp_path_factory, speech):
    """A JSONL manifest: the synthetic utterances twice over, one missing and one corrupt file."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("test_set")
    lines = []
    for copy in range(2):
        for i, (wave, text) in enumerate(speech):
            path = root / f"utt{copy}{i}.flac"
            sf.write(path, wave, 16000)
            lines.append(
                {"id": f"utt{copy}{i}", "audio": path.name, "text": text, "first_pass": text}
            )
    (root / "corrupt.flac").write_bytes(b"not audio at all" * 20)
    lines.append(
        {"id": "corrupt", "audio": "corrupt.flac", "text": "never read", "first_pass": "x"}
    )
    lines.append(
        {"id": "missing", "audio": "missing.flac", "text": "never read", "first_pass": "x"}
    )
    manifest = root / "test.jsonl"
    write_lines(manifest, lines)
    return manifest


def arguments(tiny_models, manifest, output_dir, *extra):
    return [
        str(REPO / "configs" / "tiny.yaml"),
        f"model.whisper_path={tiny_models.whisper}",
        f"model.llada_path={tiny_models.llada}",
        f"inference.manifest={manifest}",
        f"inference.output_dir={output_dir}",
        "inference.batch_size=2",
        *DECODE,
        *extra,
    ]


def first_lines(manifest: Path, count: int) -> list[dict]:
    """The first `count` lines of the test set's manifest, audio paths made absolute."""
    lines = [json.loads(line) for line in manifest.read_text().splitlines()][:count]
    return [{**line, "audio": str(manifest.parent / line["audio"])} for line in lines]


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def decoded(output_dir: Path) -> dict[str, tuple[str, int, str | None]]:
    records = [json.loads(line) for line in (output_dir / MERGED_NAME).read_text().splitlines()]
    return {r["id"]: (r["hypothesis"], r["forward_passes"], r["error"]) for r in records}


@pytest.fixture(scope="module")
def uninterrupted(tiny_models, test_set, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    inference.main(arguments(tiny_models, test_set, output_dir))
    return output_dir


def test_a_run_writes_records_and_scoring_files(uninterrupted):
    results = decoded(uninterrupted)
    assert len(results) == 8
    assert "corrupt.flac" in results["corrupt"][2] and "missing.flac" in results["missing"][2]
    assert all(error is None for key, (_, _, error) in results.items() if key.startswith("utt"))
    passes = [p for key, (_, p, _) in results.items() if key.startswith("utt")]
    assert all(1 <= p <= 8 for p in passes)  # 8 steps at most; a committed EOS may end a row early
    assert results["missing"][1] == 0
    wer = (uninterrupted / "wer-test-decoding.txt").read_text().splitlines()
    assert wer[0].startswith("%WER = ")
    assert "(8 utterances, 2 failed)" in wer[1]
    assert any(line.startswith("forward passes per utterance: ") for line in wer)
    assert (uninterrupted / "errs-test-decoding.txt").read_text().startswith("%WER ")
    recogs = (uninterrupted / "recogs-test-decoding.txt").read_text()
    assert "utt00:\tref=" in recogs and "utt00:\thyp=" in recogs
    assert (uninterrupted / "config.yaml").is_file()


def test_an_encoder_cache_encodes_each_utterance_once_for_every_run(
    tiny_models, test_set, uninterrupted, tmp_path
):
    cache = tmp_path / "encoder_cache"
    first, second = tmp_path / "first", tmp_path / "second"
    inference.main(arguments(tiny_models, test_set, first, f"inference.encoder_cache={cache}"))
    files = sorted(cache.rglob("*.safetensors"))
    assert len(files) == 3  # keyed by content: 6 decodable utterances, each clip twice over
    stamps = [f.stat().st_mtime_ns for f in files]
    inference.main(arguments(tiny_models, test_set, second, f"inference.encoder_cache={cache}"))
    assert sorted(cache.rglob("*.safetensors")) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not written again
    assert decoded(first) == decoded(second) == decoded(uninterrupted)


def test_a_rerun_decodes_nothing_again(tiny_models, test_set, uninterrupted, tmp_path, capsys):
    copy = tmp_path / "again"
    shutil.copytree(uninterrupted, copy)
    inference.main(arguments(tiny_models, test_set, copy))
    assert "8 already decoded" in capsys.readouterr().out
    assert decoded(copy) == decoded(uninterrupted)


def test_a_rerun_with_other_settings_is_refused_and_keeps_the_results(
    tiny_models, test_set, uninterrupted, tmp_path
):
    copy = tmp_path / "copy"
    shutil.copytree(uninterrupted, copy)
    before = (copy / MERGED_NAME).read_text()
    extra = ("decode.steps=16", f"inference.manifest={test_set}", "inference.batch_size=4")
    with pytest.raises(SystemExit) as error:
        inference.main(arguments(tiny_models, test_set, copy, *extra))
    assert str(error.value) == (
        f"{copy} holds results decoded with other settings (changed: decode.steps); set another "
        "inference.output_dir, or delete that folder"
    )
    assert (copy / MERGED_NAME).read_text() == before


def test_resume_after_kill_9_gives_the_uninterrupted_results(
    tiny_models, test_set, uninterrupted, tmp_path
):
    output_dir = tmp_path / "killed"
    shard = output_dir / "results-rank0.jsonl"
    command = [
        sys.executable,
        str(REPO / "inference.py"),
        *arguments(tiny_models, test_set, output_dir),
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if shard.exists() and shard.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = shard.read_text().count("\n")
    assert 2 <= done_before < 8, "the kill must land mid-run"
    with shard.open("a") as f:
        f.write('{"id": "utt1')  # a torn line, as a kill during a write leaves
    inference.main(arguments(tiny_models, test_set, output_dir))
    assert decoded(output_dir) == decoded(uninterrupted)


def test_torchrun_shards_are_disjoint_and_merged(tiny_models, test_set, uninterrupted, tmp_path):
    output_dir = tmp_path / "two_ranks"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "inference.py"),
        *arguments(tiny_models, test_set, output_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=REPO, check=True, env=env, capture_output=True, timeout=300)
    ranks = [
        {
            json.loads(line)["id"]
            for line in (output_dir / f"results-rank{r}.jsonl").read_text().splitlines()
        }
        for r in range(2)
    ]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert decoded(output_dir) == decoded(uninterrupted)


def test_an_utterance_without_a_first_pass_fails_alone(tiny_models, test_set, tmp_path):
    lines = first_lines(test_set, 4)
    del lines[1]["first_pass"]
    manifest = write_lines(tmp_path / "test.jsonl", lines)
    out = tmp_path / "out"
    inference.main(arguments(tiny_models, manifest, out, *DELIBERATION))
    results = decoded(out)
    assert set(results) == {line["id"] for line in lines}
    failed = {k: v[2] for k, v in results.items() if v[2] is not None}
    assert list(failed) == [lines[1]["id"]]
    assert "no first pass in the manifest" in failed[lines[1]["id"]]
    assert all(results[line["id"]][0] for line in lines if line is not lines[1])


@pytest.mark.parametrize(
    ("change", "mode"),
    [
        ("edited reference", ()),
        ("dropped lines", ()),
        ("another utterance's audio", ()),
        ("the audio file rewritten", ()),
        ("another segment", ()),
        ("edited first pass", DELIBERATION),
    ],
)
def test_a_rerun_on_a_changed_test_set_is_refused_and_keeps_the_results(
    tiny_models, test_set, tmp_path, change, mode
):
    lines = first_lines(test_set, 6)
    for line in lines:  # copies, so that one can be rewritten
        copy = tmp_path / Path(line["audio"]).name
        shutil.copy(line["audio"], copy)
        line["audio"] = str(copy)
    manifest = write_lines(tmp_path / "test.jsonl", lines)
    out = tmp_path / "out"
    inference.main(arguments(tiny_models, manifest, out, *mode))
    before = (out / MERGED_NAME).read_text()
    expected = "that have other audio or another first pass now"
    if change == "edited reference":
        lines[2]["text"] = "an edited reference"
        expected = "that have another reference now"
    elif change == "dropped lines":
        del lines[5:]
        expected = "that are not in this test set"
    elif change == "another utterance's audio":
        lines[2]["audio"] = lines[4]["audio"]
    elif change == "the audio file rewritten":
        shutil.copy(lines[4]["audio"], lines[2]["audio"])
    elif change == "another segment":
        lines[2]["duration"] = 0.5
    else:
        lines[2]["first_pass"] = "an edited first pass"
    write_lines(manifest, lines)
    with pytest.raises(SystemExit, match=rf"holds results of 1 utterance\(s\) {expected}"):
        inference.main(arguments(tiny_models, manifest, out, *mode))
    assert (out / MERGED_NAME).read_text() == before


def test_a_moved_test_set_resumes_and_a_first_pass_the_mode_ignores_may_change(
    tiny_models, test_set, tmp_path, capsys
):
    lines = first_lines(test_set, 4)
    manifest = write_lines(tmp_path / "test.jsonl", lines)
    out = tmp_path / "out"
    inference.main(arguments(tiny_models, manifest, out))
    moved = tmp_path / "moved"
    moved.mkdir()
    for line in lines:
        line["audio"] = shutil.copy(line["audio"], moved)
        line["first_pass"] = "not read by decode.mode=decoding"
    before = (out / MERGED_NAME).read_text()
    capsys.readouterr()
    inference.main(arguments(tiny_models, write_lines(manifest, lines), out))
    assert "4 utterances, 4 already decoded" in capsys.readouterr().out
    assert (out / MERGED_NAME).read_text() == before


def test_a_checkpoint_replaced_at_the_same_path_is_refused(
    tiny_models, test_set, tiny_config, tmp_path
):
    from whisper_llada.models.build import build_model
    from whisper_llada.models.checkpoint import save_checkpoint

    lines = first_lines(test_set, 2)
    manifest = write_lines(tmp_path / "test.jsonl", lines)
    checkpoint, out = tmp_path / "ckpt.safetensors", tmp_path / "out"
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, _ = build_model(tiny_config().model)
        save_checkpoint(model, checkpoint, config={})
        run = arguments(tiny_models, manifest, out, f"inference.checkpoint={checkpoint}")
        if seed == 0:
            inference.main(run)
            before = (out / MERGED_NAME).read_text()
            inference.main(run)  # the same checkpoint resumes (nothing left to do)
        else:
            with pytest.raises(SystemExit, match="holds results of another model"):
                inference.main(run)
    assert (out / MERGED_NAME).read_text() == before


def test_decoding_with_other_inputs_than_the_checkpoint_was_trained_with_is_refused(
    tiny_models, test_set, tiny_config, tmp_path
):
    from whisper_llada.config_strict import to_dict
    from whisper_llada.models.build import build_model
    from whisper_llada.models.checkpoint import save_checkpoint

    cfg = tiny_config("audio.pad_to_30s=false")
    torch.manual_seed(0)
    model, _ = build_model(cfg.model)
    checkpoint = save_checkpoint(model, tmp_path / "ckpt.safetensors", config=to_dict(cfg))
    run = arguments(tiny_models, test_set, tmp_path / "out", f"inference.checkpoint={checkpoint}")
    for override, key in (("audio.pad_to_30s=true", "audio.pad_to_30s: trained with False"),
                          ("model.prompt=Hello", "model.prompt: trained with 'Transcribe"),
                          ("model.ctc.enabled=false", "model.ctc.enabled: trained with True")):  # fmt: skip
        with pytest.raises(SystemExit, match=re.escape(key)):
            inference.main([*run, "audio.pad_to_30s=false", override])
    assert not (tmp_path / "out" / MERGED_NAME).exists()


def test_a_clip_cut_at_max_seconds_is_recorded_and_counted(tiny_models, test_set, tmp_path):
    import soundfile as sf

    lines = first_lines(test_set, 2)
    manifest = write_lines(tmp_path / "test.jsonl", lines)
    seconds = {line["id"]: sf.info(line["audio"]).duration for line in lines}
    limit = (min(seconds.values()) + max(seconds.values())) / 2  # cuts the longer one only
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="longer than the"):
        inference.main(arguments(tiny_models, manifest, out, f"audio.max_seconds={limit}"))
    records = {r["id"]: r for r in map(json.loads, (out / MERGED_NAME).read_text().splitlines())}
    longer = max(seconds, key=seconds.get)
    assert records[longer]["truncated_from_seconds"] == pytest.approx(seconds[longer])
    assert records[longer]["audio_seconds"] == pytest.approx(limit, abs=1e-3)
    assert [r["truncated_from_seconds"] for k, r in records.items() if k != longer] == [None]
    assert "utterances cut at audio.max_seconds: 1" in (out / "wer-test-decoding.txt").read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["decode.threshold=-0.5"], r"threshold must lie in \(0, 1\], got -0\.5"),
        (["decode.block_length=5"], r"block_length \(5\) must divide gen_len \(16\)"),
        (["decode.mode=diffusion_deliberation", "decode.mask_ratio=1.5"], "mask_ratio must lie"),
        (["decode.mode=prior_guided", "decode.first_pass=ctc"], "needs decode.threshold"),
        (["decode.mode=autoregressive"], "decodes the causal baseline"),
        (["decode.mode=ctc", "model.ctc.enabled=false"], "needs the CTC head"),
        (["inference.batch_size=0"], "batch_size must be >= 1, got 0"),
        (["inference.batch_size=-3"], "batch_size must be >= 1, got -3"),
        (["inference.batch_size=null"], "give exactly one of batch_size"),
    ],
)
def test_bad_decode_settings_stop_before_the_model_is_built(
    tiny_models, test_set, tmp_path, monkeypatch, overrides, message
):
    from whisper_llada.evaluation import transcribe

    monkeypatch.setattr(transcribe, "build_model", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(SystemExit, match=f"decode settings: .*{message}"):
        inference.main(arguments(tiny_models, test_set, tmp_path / "out", *overrides))


def test_a_second_run_into_a_folder_in_use_is_refused(tiny_models, test_set, tmp_path):
    from whisper_llada.evaluation.results import lock_results_folder

    out = tmp_path / "out"
    held = lock_results_folder(out)  # as the first run's main process holds it
    with pytest.raises(SystemExit, match="another run is decoding into"):
        inference.main(arguments(tiny_models, test_set, out))
    held.close()  # the first run ended (a kill -9 drops it the same way)
    inference.main(arguments(tiny_models, test_set, out))
    assert len(decoded(out)) == 8


def test_a_folder_decoded_twice_merges_once_or_says_how_to_recover(uninterrupted, tmp_path):
    from whisper_llada.evaluation.results import merge_shards

    folder = tmp_path / "twice"
    folder.mkdir()
    shard = (uninterrupted / "results-rank0.jsonl").read_text()
    (folder / "results-rank0.jsonl").write_text(shard)
    (folder / "results-rank1.jsonl").write_text(shard)  # the same results, written twice
    assert len(merge_shards(folder)) == 8
    record = json.loads(shard.splitlines()[0])
    (folder / "results-rank2.jsonl").write_text(
        json.dumps({**record, "hypothesis": "other"}) + "\n"
    )
    with pytest.raises(SystemExit, match=rf"utterance {record['id']} was decoded twice .* delete"):
        merge_shards(folder)


def test_a_config_with_relative_paths_runs_from_another_directory(
    tiny_models, test_set, uninterrupted, tmp_path
):
    """Paths in a config file are relative to it: the same results from any working directory."""
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "run.yaml").write_text(
        f"base: {os.path.relpath(REPO / 'configs' / 'tiny.yaml', recipe)}\n"
        "model:\n"
        f"  whisper_path: {os.path.relpath(tiny_models.whisper, recipe)}\n"
        f"  llada_path: {os.path.relpath(tiny_models.llada, recipe)}\n"
        "inference:\n"
        f"  manifest: {os.path.relpath(test_set, recipe)}\n"
        "  output_dir: out\n"
        "  batch_size: 2\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, str(REPO / "inference.py"), "../recipe/run.yaml", *DECODE]
    subprocess.run(command, cwd=elsewhere, check=True, capture_output=True, timeout=300)
    assert decoded(recipe / "out") == decoded(uninterrupted)
    assert list(elsewhere.iterdir()) == []
