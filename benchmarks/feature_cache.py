"""Data-loading throughput with the log-mel feature cache: no cache, cold cache, warm cache.

    python benchmarks/feature_cache.py [--utterances 64] [--batch 8] [--repeats 3]

Synthesises a small corpus (espeak-ng speech of random word sequences, 1-5 s, FLAC at 16 kHz,
like the demo's), then builds every batch of it with `SpeechDataset` (read, log-mel, pad,
tokenise) once per case, for true-length and 30 s padded features: without a cache, into an
empty cache folder (cold: compute and store) and from that filled folder (warm: read). One
thread, as in a DataLoader worker; each case is the median of --repeats passes (a fresh cache
folder for every cold pass). Prints one table with ratios to the uncached pass of the same
audio setting and the cache's size on disk, all measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lhotse import CutSet

from whisper_llada.config import AudioConfig, load_config
from whisper_llada.data.manifest import Utterance
from whisper_llada.data.speech_synthesis import DEFAULT_RATES_WPM, DEFAULT_VOICES, synthesize
from whisper_llada.data.training_cuts import utterance_cuts
from whisper_llada.data.training_data import SpeechDataset
from whisper_llada.models.prompt import load_tokenizer
from whisper_llada.smoke import ensure_tiny_models

WORDS = (
    "the", "cat", "sat", "on", "a", "mat", "while", "seven", "purple", "kites", "drift", "over",
    "quiet", "harbour", "rivers", "and", "mountains", "where", "people", "walk", "between",
    "green", "fields", "under", "bright", "morning", "skies",
)  # fmt: skip
MIN_WORDS, MAX_WORDS = 3, 12  # about 1 to 5 s of speech
SETTINGS = (("true length", AudioConfig(pad_to_30s=False)), ("padded to 30 s", AudioConfig()))
CASES = ("no cache", "cold cache", "warm cache")


def synthetic_corpus(folder: Path, count: int, seed: int) -> CutSet:
    """`count` utterances of random words by varied voices and rates, as cuts."""
    rng = random.Random(seed)
    utterances = []
    for index in range(count):
        text = " ".join(rng.choices(WORDS, k=rng.randint(MIN_WORDS, MAX_WORDS)))
        audio = synthesize(
            text,
            folder / f"utt{index:04d}.flac",
            voice=rng.choice(DEFAULT_VOICES),
            rate_wpm=rng.choice(DEFAULT_RATES_WPM),
        )
        utterances.append(Utterance(id=f"utt{index:04d}", audio=str(audio), text=text))
    cuts, _ = utterance_cuts(utterances, skip_bad_audio=False)
    return cuts


def load_all(dataset: SpeechDataset, batches: list[CutSet]) -> float:
    """Seconds to build every batch once."""
    start = time.perf_counter()
    for batch in batches:
        dataset[batch]
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/tiny.yaml"))
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker's setting
    cfg = load_config(args.config)
    ensure_tiny_models(cfg)
    tokenizer = load_tokenizer(cfg.model.llada_path)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cuts = synthetic_corpus(root / "audio", args.utterances, args.seed)
        audio_seconds = sum(cut.duration for cut in cuts)
        ordered = list(cuts)
        batches = [
            CutSet.from_cuts(ordered[i : i + args.batch])
            for i in range(0, len(ordered), args.batch)
        ]
        load = os.getloadavg()[0]
        print(
            f"{len(ordered)} utterances ({audio_seconds:.0f} s of audio, FLAC), batches of "
            f"{args.batch}, 1 thread, median of {args.repeats} passes, load average {load:.1f}"
        )
        print(
            f"| {'features':<15} | {'case':<10} | {'utt / s':>8} | {'ratio':>6} | "
            f"{'cache KiB / utt':>15} |"
        )
        print(f"|{'-' * 17}|{'-' * 12}|{'-' * 10}|{'-' * 8}|{'-' * 17}|")
        for name, audio_cfg in SETTINGS:
            seconds = {case: [] for case in CASES}
            for repeat in range(args.repeats):
                folder = root / f"cache-{name.replace(' ', '_')}-{repeat}"
                plain = SpeechDataset(tokenizer, audio_cfg, skip_bad_audio=False)
                cached = SpeechDataset(
                    tokenizer, audio_cfg, skip_bad_audio=False, feature_cache=str(folder)
                )
                seconds["no cache"].append(load_all(plain, batches))
                seconds["cold cache"].append(load_all(cached, batches))
                seconds["warm cache"].append(load_all(cached, batches))
            size = folder_bytes(folder) / len(ordered) / 1024
            baseline = len(ordered) / statistics.median(seconds["no cache"])
            for case in CASES:
                rate = len(ordered) / statistics.median(seconds[case])
                shown = "" if case == "no cache" else f"{size:.0f}"
                print(
                    f"| {name:<15} | {case:<10} | {rate:>8.1f} | {rate / baseline:>5.2f}x | "
                    f"{shown:>15} |"
                )


if __name__ == "__main__":
    main()
