"""Training steps per second with and without the encoder-output cache, in one run.

    python benchmarks/encoder_cache.py [--config configs/demo.yaml] [--utterances 64] \
        [--batch 8] [--steps 10] [--repeats 5] [overrides ...]

The default is the demo recipe on the frozen Whisper tiny.en that setup.sh converts
(model.whisper_path=pretrained/whisper-tiny.en/hf, 80 mels, model.train_encoder=false). It
synthesises --utterances espeak-ng utterances (the feature_cache benchmark's corpus), computes
their log-mels once, fills an encoder cache once, then times --steps full training steps
(forward, backward, AdamW update) from log-mels (the encoder runs every step) and from the cache
(the projector and the LLM only), alternating the two --repeats times so that machine load hits
both alike. Prints the median steps/s of each and their ratio, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_cache import synthetic_corpus  # a sibling benchmark

from whisper_llada.config import load_config
from whisper_llada.data.audio import batch_features
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.data.manifest import load_wave
from whisper_llada.data.training_cuts import cut_utterance
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model
from whisper_llada.models.prompt import text_ids
from whisper_llada.training.objective import training_loss

TINY_EN = (
    "model.whisper_path=pretrained/whisper-tiny.en/hf",
    "model.train_encoder=false",
    "audio.n_mels=80",
)


def time_steps(model, batches, cfg, optimizer, steps: int) -> float:
    """Seconds for `steps` training steps over `batches` (cycled)."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = training_loss(model, batch, cfg.model, cfg.loss, generator).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="section.key=value (default: tiny.en)")
    args = parser.parse_args()
    cfg = load_config(args.config, list(args.overrides or TINY_EN))
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        cuts = synthetic_corpus(Path(tmp) / "audio", args.utterances, seed=0)
        cache = EncoderOutputCache(Path(tmp) / "encoder_cache", model.encoder)
        plain, cached = [], []
        ordered = [cut_utterance(cut) for cut in cuts]
        for start in range(0, len(ordered), args.batch):
            chunk = ordered[start : start + args.batch]
            waves = [load_wave(u, max_seconds=None, too_long="error") for u in chunk]
            mel, lengths = batch_features(waves, cfg.audio.n_mels, pad_to_30s=cfg.audio.pad_to_30s)
            ids = [text_ids(tokenizer, u.text) for u in chunk]
            plain.append(SpeechBatch(mel, lengths, ids))
            cached.append(SpeechBatch(mel, lengths, ids, cache.frames(mel, lengths)))
        seconds = {"log-mels (encoder every step)": [], "encoder cache": []}
        for _ in range(args.repeats):
            for runs, batches in zip(seconds.values(), (plain, cached), strict=True):
                runs.append(time_steps(model, batches, cfg, optimizer, args.steps))
    load = os.getloadavg()[0]
    print(
        f"{args.config} {' '.join(args.overrides or TINY_EN)}: {len(ordered)} utterances, "
        f"batches of {args.batch}, {torch.get_num_threads()} threads, {args.steps} steps per "
        f"pass, median of {args.repeats} alternating passes, load average {load:.1f}"
    )
    print("| case | steps / s | ratio |")
    print("|---|---|---|")
    baseline = args.steps / statistics.median(next(iter(seconds.values())))
    for case, runs in seconds.items():
        rate = args.steps / statistics.median(runs)
        print(f"| {case} | {rate:.2f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
