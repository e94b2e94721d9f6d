"""Training throughput of the tiny model on CPU: 5 s vs 30 s of audio, 30 s padding vs true-length encoding.

    python benchmarks/train_step.py [--config configs/tiny.yaml] [--batch 4] [--steps 5]

Writes the tiny models to tiny_models/ if missing, synthesises speech, and times forward +
backward + AdamW step (median over --steps after one warm-up step), printing a table with ratios
to the first row, all measured in this one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from whisper_llada.config import load_config
from whisper_llada.data.audio import SAMPLE_RATE, batch_features, load_audio
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model
from whisper_llada.models.prompt import text_ids
from whisper_llada.smoke import ensure_tiny_models
from whisper_llada.training.objective import training_loss

TEXT = "the quick brown fox jumps over the lazy dog while seven purple kites drift over the harbour"
CASES = (
    ("5 s, padded to 30 s (faithful)", 5.0, True),
    ("5 s, true length", 5.0, False),
    ("30 s, true length", 30.0, False),
)


def speech_of_length(seconds: float, workdir: Path) -> np.ndarray:
    """Synthesised speech repeated and cut to exactly `seconds`."""
    wave = load_audio(synthesize(TEXT, workdir / "speech.flac"))
    repeats = int(np.ceil(seconds * SAMPLE_RATE / len(wave)))
    return np.tile(wave, repeats)[: int(seconds * SAMPLE_RATE)]


def time_steps(cfg, model, tokenizer, waves, pad_to_30s: bool, steps: int) -> float:
    mel, lengths = batch_features(waves, cfg.audio.n_mels, pad_to_30s=pad_to_30s)
    batch = SpeechBatch(mel, lengths, [text_ids(tokenizer, TEXT)] * len(waves))
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = training_loss(model, batch, cfg.model, cfg.loss, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    cfg = load_config(args.config)
    ensure_tiny_models(cfg)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    model.train()
    print(
        f"{args.config}, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.steps} steps"
    )
    print(
        f"| {'audio':<32} | {'s / step':>9} | {'ratio':>6} | {'utt / s':>8} | {'audio s / s':>11} |"
    )
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 8}|{'-' * 10}|{'-' * 13}|")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, seconds, pad in CASES:
            waves = [speech_of_length(seconds, Path(tmp))] * args.batch
            elapsed = time_steps(cfg, model, tokenizer, waves, pad, args.steps)
            first = first or elapsed
            rate = args.batch / elapsed
            print(
                f"| {name:<32} | {elapsed:>9.3f} | {elapsed / first:>6.2f} | {rate:>8.2f} | {rate * seconds:>11.2f} |"
            )


if __name__ == "__main__":
    main()
