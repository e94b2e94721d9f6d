"""Seconds per LLM forward pass over a decoding canvas at the real widths, with and without the prefix cache.

    python benchmarks/real_shape_decode.py [--llm-layers 2] [--encoder-layers 1] [--batch 1]
        [--canvas 128] [--dtype bfloat16] [--device cpu]

Random weights at whisper-large-v3 / LLaDA-8B widths (4096 wide, 32 heads, MLP 12288, vocabulary
126464); the layer counts are overridable so it runs on this CPU with 1-2 LLM layers, and at full
depth (32) on a GPU. One "pass" is what every decoding round costs: the whole
[prompt; 352 audio vectors; canvas] sequence without the cache, the canvas alone (attending to
cached prompt + audio keys/values) with it. Prints a table with the ratio measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from whisper_llada.config import load_config
from whisper_llada.models.real_shapes import build_real_shape_model


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def peak_memory_gib(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} (process RSS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/whisper_llada.yaml"))
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--encoder-layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = load_config(args.config, [f"model.dtype={args.dtype}"]).model
    torch.manual_seed(0)
    model = build_real_shape_model(
        cfg, encoder_layers=args.encoder_layers, llm_layers=args.llm_layers, device=device
    ).eval()
    mel = torch.randn(args.batch, 128, 3000, device=device)
    lengths = torch.full((args.batch,), 3000, device=device)
    canvas = torch.full((args.batch, args.canvas), model.special.mask, device=device)
    canvas_lengths = torch.full((args.batch,), args.canvas, device=device)
    with torch.inference_mode():
        audio = model.encode_audio(mel, lengths)
        cache = model.prefix_cache(audio)
        full = timed(
            lambda: model.canvas_logits(audio, canvas, canvas_lengths), args.repeats, device
        )
        cached = timed(
            lambda: model.canvas_logits(audio, canvas, canvas_lengths, cache), args.repeats, device
        )
        build = timed(lambda: model.prefix_cache(audio), args.repeats, device)
    sequence = model.prompt_ids.numel() + int(audio.lengths[0]) + args.canvas
    print(
        f"{args.llm_layers} LLM layers, {args.encoder_layers} encoder layers, {args.dtype} on {device}, "
        f"batch {args.batch}, sequence {sequence} = prompt + {int(audio.lengths[0])} audio + {args.canvas} canvas"
    )
    print(f"| {'pass':<36} | {'seconds':>8} | {'ratio':>6} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 8}|")
    print(f"| {'full sequence (no cache)':<36} | {full:>8.4f} | {1.0:>6.2f} |")
    print(f"| {'canvas only, prefix cached':<36} | {cached:>8.4f} | {cached / full:>6.2f} |")
    print(f"| {'building the prefix cache (once)':<36} | {build:>8.4f} | {build / full:>6.2f} |")
    print(f"peak memory GiB: {peak_memory_gib(device)}")


if __name__ == "__main__":
    main()
