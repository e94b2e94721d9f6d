"""The `whisper-llada` command: transcribe prints and writes what the API returns, fails an
unreadable file alone with exit code 1, refuses bad usage before loading anything; decode, score
and demo reach inference.py, the scorer and the recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import soundfile as sf

from whisper_llada import cli, load_model

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"
DECODE = ("decode.gen_len=16", "decode.steps=8", "decode.block_length=8")


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech) -> list[Path]:
    root = tmp_path_factory.mktemp("cli_audio")
    paths = [root / f"u{i}.flac" for i in range(2)]
    for path, (wave, _) in zip(paths, speech[:2], strict=True):
        sf.write(path, wave, 16000)
    return paths


@pytest.fixture(scope="module")
def overrides(tiny_models) -> list[str]:
    """configs/tiny.yaml on the session's tiny models, a fast decode."""
    paths = [f"model.whisper_path={tiny_models.whisper}", f"model.llada_path={tiny_models.llada}"]
    return [*paths, *DECODE]


@pytest.fixture(scope="module")
def tiny(overrides) -> list[str]:
    """The same as `transcribe` options: --model configs/tiny.yaml --set ..."""
    return ["--model", str(TINY), *(f"--set={o}" for o in overrides)]


def test_transcribe_prints_and_writes_what_the_api_returns(
    tiny, overrides, files, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["--mode", "prior_guided", "--threshold", "0.9", "--output_format", "all"]
    code = cli.main(["transcribe", *map(str, files), *tiny, *args, "--output_dir", str(out)])
    expected = load_model(TINY, overrides=overrides).transcribe(
        files, mode="prior_guided", first_pass="ctc", threshold=0.9
    )
    assert code == 0
    assert capsys.readouterr().out == "".join(f"{t.source}: {t.text}\n" for t in expected)
    assert sorted(p.name for p in out.iterdir()) == ["u0.json", "u0.txt", "u1.json", "u1.txt"]
    for t in expected:
        stem = Path(t.source).stem
        assert (out / f"{stem}.txt").read_text() == t.text + "\n"
        written = json.loads((out / f"{stem}.json").read_text())
        assert {**written, "seconds": None} == {**asdict(t), "seconds": None}


def test_an_unreadable_file_fails_alone_with_exit_code_1(tiny, files, tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    code = cli.main(["transcribe", str(files[0]), str(missing), *tiny, "--mode", "ctc"])
    printed = capsys.readouterr()
    assert code == 1
    assert printed.out.startswith(f"{files[0]}: ") and str(missing) not in printed.out
    assert printed.err.splitlines()[0].startswith(
        f"{missing}: error: {missing}: audio file not found"
    )
    assert printed.err.splitlines()[-1] == "1 of 2 input(s) not decoded"


def test_bad_usage_stops_before_anything_is_written(tiny, files, tmp_path):
    out = tmp_path / "out"
    twins = [str(files[0]), str(tmp_path / "other" / files[0].name)]
    with pytest.raises(SystemExit) as stopped:
        cli.main(["transcribe", *twins, *tiny, "--output_dir", str(out)])
    assert str(stopped.value) == (
        f"whisper-llada transcribe: {twins[0]} and {twins[1]} would both write {out / 'u0'}.*: "
        "give them other names, or leave out --output_dir"
    )
    with pytest.raises(SystemExit) as stopped:
        cli.main(["transcribe", str(files[0]), *tiny, "--set", "decode.stepz=3"])
    assert str(stopped.value).startswith(
        f"whisper-llada transcribe: {TINY}: unknown key 'decode.stepz'"
    )
    with pytest.raises(SystemExit) as stopped:
        cli.main(["transcribe", str(files[0]), *tiny, "--mode", "prior_guided"])
    assert "needs decode.threshold" in str(stopped.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "code"), [([], 2), (["--help"], 0), (["translate"], 2), (["transcribe"], 2)]
)
def test_usage_errors_exit_2_and_help_0(argv, code, capsys):
    try:
        returned = cli.main(argv)
    except SystemExit as stopped:
        returned = stopped.code
    assert returned == code
    assert "usage: whisper-llada" in (printed := capsys.readouterr()).out + printed.err


def test_decode_is_inference_py_and_score_its_scorer(overrides, files, tmp_path, capsys):
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(f), "text": "a b"}) + "\n" for f in files))
    where = [f"inference.manifest={manifest}", "decode.mode=ctc"]
    assert (
        cli.main(
            ["decode", str(TINY), *overrides, *where, f"inference.output_dir={tmp_path / 'a'}"]
        )
        == 0
    )
    import inference

    inference.main([str(TINY), *overrides, *where, f"inference.output_dir={tmp_path / 'b'}"])
    records = [
        [
            {**json.loads(line), "decode_seconds": 0}
            for line in (tmp_path / run / "results.jsonl").open()
        ]
        for run in "ab"
    ]
    assert records[0] == records[1]
    capsys.readouterr()
    assert cli.main(["score", str(tmp_path / "a" / "results.jsonl")]) == 0
    scored = capsys.readouterr().out
    from whisper_llada.evaluation import score

    score.main([str(tmp_path / "a" / "results.jsonl")])
    assert scored == capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["decode", "--help"])
    assert capsys.readouterr().out.startswith("usage: whisper-llada decode ")


def test_demo_runs_the_checkout_s_recipe(monkeypatch, tmp_path):
    launched = []
    monkeypatch.setattr(
        cli.subprocess,
        "run",
        lambda command: launched.append(command) or subprocess.CompletedProcess(command, 3),
    )
    monkeypatch.chdir(REPO)
    assert cli.main(["demo", "retrain", "--max-steps", "2"]) == 3
    assert launched == [[sys.executable, "-m", "recipes.demo", "retrain", "--max-steps", "2"]]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["demo"])
    assert str(stopped.value) == (
        "whisper-llada demo runs the repository's recipe recipes/demo/ (python -m recipes.demo), "
        f"and {tmp_path} holds none: run it from a checkout of whisper-llada"
    )


def test_the_readme_s_first_command_runs_the_recipe():
    """`python -m whisper_llada.demo ...` (the README's main job) is `python -m recipes.demo ...`."""
    done = subprocess.run(
        [sys.executable, "-m", "whisper_llada.demo", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m recipes.demo [-h] [--model MODEL]")


def test_the_console_script_is_installed():
    (script,) = entry_points(group="console_scripts", name="whisper-llada")
    assert script.value == "whisper_llada.cli:main"
    done = subprocess.run(
        [Path(sys.executable).parent / "whisper-llada", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: whisper-llada [-h] COMMAND")


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_outside_the_repository(tmp_path, files):
    """`pip install torch==2.13.0 <repo>` (registries or a warm cache) gives a working command
    on the demo model and a tiny model, run outside the repository."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python, command = venv / "bin" / "python", venv / "bin" / "whisper-llada"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "torch==2.13.0", str(REPO)], check=True, cwd=tmp_path
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [command, "transcribe", *args, "--no_progress"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    examples = [str(REPO / "docs" / "examples" / name) for name in ("sarah.flac", "henry.flac")]
    demo = run(*examples, "--model", str(REPO / "models" / "demo"), "--mode", "ctc")
    expected = load_model(REPO / "models" / "demo").transcribe(examples, mode="ctc")
    assert demo == "".join(f"{t.source}: {t.text}\n" for t in expected)
    subprocess.run(
        [python, "-m", "whisper_llada.models.tiny_models", tmp_path / "tiny"], check=True
    )
    tiny = [f"--set=model.{key}_path={tmp_path / 'tiny' / key}" for key in ("whisper", "llada")]
    printed = run(examples[0], "--model", str(TINY), *tiny, *(f"--set={o}" for o in DECODE))
    assert printed.startswith(f"{examples[0]}: ") and len(printed.splitlines()) == 1
