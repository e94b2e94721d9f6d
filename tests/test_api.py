"""The Python API (`whisper_llada.load_model(...).transcribe`) on the tiny models: it decodes as
inference.py does, files and waveforms alike, in any batch; bad inputs fail alone; bad settings
stop before anything is decoded. The README's example runs as written on the demo model."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import inference
from whisper_llada import load_model
from whisper_llada.config_strict import ConfigError
from whisper_llada.evaluation.results import MERGED_NAME

REPO = Path(__file__).resolve().parent.parent
DECODE = ("decode.gen_len=16", "decode.steps=8", "decode.block_length=8")  # fast semi-AR
# Each mode as keywords of transcribe and as overrides of inference.py.
MODES = {
    "decoding": {},
    "ctc": {"mode": "ctc"},
    "prior_guided": {"mode": "prior_guided", "first_pass": "ctc", "threshold": 0.9},
    "diffusion_deliberation": {"mode": "diffusion_deliberation", "first_pass": "ctc"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech) -> list[Path]:
    root = tmp_path_factory.mktemp("api_audio")
    paths = [root / f"u{i}.flac" for i in range(len(speech))]
    for path, (wave, _) in zip(paths, speech, strict=True):
        sf.write(path, wave, 16000)
    return paths


@pytest.fixture(scope="module")
def overrides(tiny_models) -> list[str]:
    return [
        f"model.whisper_path={tiny_models.whisper}",
        f"model.llada_path={tiny_models.llada}",
        *DECODE,
    ]


@pytest.fixture(scope="module")
def model(overrides):
    return load_model(REPO / "configs" / "tiny.yaml", overrides=overrides)


@pytest.mark.parametrize("mode", MODES)
def test_transcribe_decodes_as_inference_does(model, overrides, files, tmp_path, mode):
    manifest = tmp_path / "test.jsonl"
    # named as transcribe names them: the random modes seed each row by its name
    lines = [json.dumps({"id": str(f), "audio": str(f), "text": ""}) + "\n" for f in files]
    manifest.write_text("".join(lines))
    inference.main(
        [
            str(REPO / "configs" / "tiny.yaml"),
            *overrides,
            *(f"decode.{key}={value}" for key, value in MODES[mode].items()),
            f"inference.manifest={manifest}",
            f"inference.output_dir={tmp_path / 'out'}",
        ]
    )
    lines = [json.loads(line) for line in (tmp_path / "out" / MERGED_NAME).read_text().splitlines()]
    expected = {r["id"]: (r["hypothesis"], r["prior"], r["forward_passes"]) for r in lines}
    transcripts = model.transcribe(files, **MODES[mode])
    assert [t.source for t in transcripts] == [str(f) for f in files]
    assert {t.source: (t.text, t.prior, t.forward_passes) for t in transcripts} == expected
    assert all(t.error is None and t.seconds > 0 and t.audio_seconds > 0 for t in transcripts)


def test_waveforms_and_any_batch_size_give_the_same_transcripts(model, files, speech):
    by_file = model.transcribe(files, batch_size=3)
    one_by_one = model.transcribe(files, batch_size=1)
    waveforms = model.transcribe([wave for wave, _ in speech])
    assert [t.source for t in waveforms] == ["waveform 0", "waveform 1", "waveform 2"]
    texts = [(t.text, t.forward_passes) for t in by_file]
    assert [(t.text, t.forward_passes) for t in one_by_one] == texts
    assert [(t.text, t.forward_passes) for t in waveforms] == texts


def test_an_unreadable_input_fails_alone(model, files, tmp_path):
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all" * 20)
    missing = tmp_path / "missing.wav"
    transcripts = model.transcribe([files[0], corrupt, missing, np.zeros((2, 5)), files[1]])
    alone = model.transcribe([files[0], files[1]])
    decoded = [transcripts[0], transcripts[4]]
    assert decoded == [replace(t, seconds=d.seconds) for t, d in zip(alone, decoded, strict=True)]
    failed = transcripts[1:4]
    assert [(t.text, t.forward_passes) for t in failed] == [("", 0)] * 3
    assert str(corrupt) in failed[0].error and str(missing) in failed[1].error
    assert failed[2].error == "waveform 3: a waveform must be a non-empty (N,) array, got (2, 5)"


def test_first_passes_are_what_deliberation_starts_from(model, files):
    texts = ["seven purple kites", "a b c", "rivers"]
    given = model.transcribe(files, mode="diffusion_deliberation", first_passes=texts)
    assert all(t.prior is not None for t in given)
    with pytest.raises(ValueError) as refused:
        model.transcribe(files, mode="prior_guided", threshold=0.9)
    assert str(refused.value) == (
        "decode.mode=prior_guided starts from a first pass: give first_passes= (one per input), "
        'or first_pass="ctc" (the model\'s CTC draft) or "model" (inference.first_pass_config)'
    )
    with pytest.raises(ValueError, match=r"^2 first passes for 3 inputs$"):
        model.transcribe(files, mode="diffusion_deliberation", first_passes=texts[:2])


def test_bad_settings_stop_before_anything_is_decoded(model, files):
    with pytest.raises(ConfigError, match=r"unknown key 'decode\.stepz'"):
        model.transcribe(files, stepz=3)
    with pytest.raises(ConfigError, match=r"decode\.threshold"):
        model.transcribe(files, threshold="high")
    with pytest.raises(ValueError, match=r"needs decode\.threshold"):
        model.transcribe(files, mode="prior_guided", first_pass="ctc")
    with pytest.raises(ValueError, match=r"^a file is given twice: give each file once$"):
        model.transcribe([files[0], files[0]])


def test_load_model_names_what_it_cannot_load(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        load_model(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path} holds no config.yaml: give an exported model folder or a config YAML file"
    )
    with pytest.raises(FileNotFoundError, match=r"^no such file: .*nothing\.yaml: give"):
        load_model(tmp_path / "nothing.yaml")


def readme_python_example() -> tuple[str, str]:
    """The README's Python example and the output it shows (its `# prints:` comment block)."""
    readme = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(from whisper_llada import .*?)```", readme, re.S).group(1)
    shown = re.search(r"```\n(# prints:\n.*?)```", readme[readme.index(code) :], re.S).group(1)
    return code, "".join(line.removeprefix("# ") + "\n" for line in shown.splitlines()[1:])


def test_the_readme_python_example_runs_as_written(monkeypatch):
    """On the shipped demo model and the example files in docs/examples/."""
    monkeypatch.chdir(REPO)
    code, shown = readme_python_example()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue() == shown


def test_a_config_batching_by_seconds_gives_the_same_transcripts(model, overrides, files):
    by_seconds = load_model(
        REPO / "configs" / "tiny.yaml",
        overrides=[*overrides, "inference.batch_size=null", "inference.max_duration=4.0"],
    )
    expected = [(t.text, t.forward_passes) for t in model.transcribe(files)]
    assert [(t.text, t.forward_passes) for t in by_seconds.transcribe(files)] == expected
