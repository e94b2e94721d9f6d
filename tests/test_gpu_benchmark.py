"""benchmarks/gpu.py at 1 layer on the CPU: every row of the GPU table runs, with the pass counts its configuration fixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# canvas 8, answers of 4 tokens: diffusion and semi-AR 8 passes; diffusion deliberation one
# scoring pass and one for its single re-masked token (30 % of 4); semi-AR deliberation one per
# chunk; prior-guided at most 8 / 4 = 2 rounds (random weights commit little), + 1 for the prefix
# cache; the AR baseline its 4 tokens + the end token.
EXPECTED_PASSES = {
    "diffusion 8/8 (Whisper-LLaDA)": "8.0",
    "semi-AR 8 steps, blocks of 2": "8.0",
    "diffusion deliberation, 4 steps": "2.0",
    "semi-AR deliberation, 4 chunks, 4 steps": "4.0",
    "prior-guided (dLLM-ASR), at most 2 rounds, no prefix cache": "2.0",
    "prior-guided (dLLM-ASR), at most 2 rounds, prefix cache": "3.0",
    "autoregressive (Whisper-LLaMA), KV cache": "5.0",
}


@pytest.mark.slow
def test_one_layer_run_writes_every_row_at_both_batches(tmp_path):
    out = tmp_path / "gpu_benchmark.md"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu.py"),
        *("--device", "cpu", "--encoder-layers", "1", "--llm-layers", "1"),
        *("--batches", "1", "2", "--repeats", "1", "--seconds", "2", "--answer-tokens", "4"),
        *("--canvas", "8", "--train-batch", "1", "--true-length", "--out", str(out)),
    ]
    subprocess.run(command, check=True, cwd=tmp_path, capture_output=True, text=True)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("1 encoder / 1 LLM layers, bfloat16 on ")
    training = [line for line in lines if line.startswith("| forward + backward + AdamW")]
    assert len(training) == 1 and training[0].split("|")[2].strip() == "1"
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in lines
        if line.startswith("| ") and line.split("|")[1].strip() in EXPECTED_PASSES
    ]
    assert [(row[0], row[1]) for row in rows] == [
        (name, batch) for batch in ("1", "2") for name in EXPECTED_PASSES
    ]
    for name, _, passes, per_pass, rtf, _ in rows:
        assert passes == EXPECTED_PASSES[name], name
        assert float(per_pass) > 0 and float(rtf) > 0, name
    assert [row[5] for row in rows if row[0].startswith("autoregressive")] == ["1.00x", "1.00x"]


def test_canvas_must_split_into_four_blocks(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--canvas", "6"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--canvas must be a positive multiple of 4, got 6" in result.stderr
