"""Step time and peak memory of one real-shape training step, with and without gradient checkpointing, against the activation-memory estimate.

    python benchmarks/train_memory.py [--layers 1 2] [--batch 4] [--answer 100] [--device cpu]

Random weights at the real widths (Whisper-large-v3 encoder with 1 layer, Q-Former, LLaDA 4096 x
12288 with a 126464 vocabulary, LoRA r8 on q/k/v, bf16 frozen parts, fp32 trainable parts), one
forward + backward of the Whisper-LLaDA loss per configuration, each in a fresh process so the
peak (CUDA: max allocated; CPU: the process's peak RSS) belongs to that configuration alone.

Activation estimate per LLaDA block, per token, bf16 (what autograd keeps for backward when the
base weights are frozen, so frozen linears keep no inputs; LoRA keeps its input):
    2 D  (inputs of the two RMSNorms)   + 4 D (q, k, v and the output kept by SDPA)
  + 1 D  (LoRA's input, shared by q/k/v) + 3 F (SwiGLU: the gate, silu(gate) and the up branch)
  = 7 D + 3 F elements = 7 * 4096 + 3 * 12288 = 65,536 elements = 128 KiB per token and block.
For batch B and sequence S = prompt + 352 audio vectors + answer: B * S * n_layers * 128 KiB;
LLaDA-8B (32 blocks), B = 4, S = 16 + 352 + 100 = 468: 4 * 468 * 32 * 128 KiB = 7.3 GiB.
With gradient checkpointing only each block's input is kept (1 D = 8 KiB per token and block,
0.46 GiB for the same batch) plus one block recomputed at a time.
The per-block difference between the 1- and 2-layer runs below measures the same quantity.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

D, F = 4096, 12288
BYTES_BF16 = 2
PROMPT_TOKENS = 16  # real_shapes.PROMPT_LENGTH
AUDIO_VECTORS = 352


def estimate_gib(batch: int, answer: int, layers: int, checkpointing: bool) -> float:
    per_token = (D if checkpointing else 7 * D + 3 * F) * BYTES_BF16
    return batch * (PROMPT_TOKENS + AUDIO_VECTORS + answer) * layers * per_token / 2**30


def worker(layers: int, checkpointing: bool, batch: int, answer: int, device_name: str) -> dict:
    from whisper_llada.config import load_config
    from whisper_llada.data.training_data import SpeechBatch
    from whisper_llada.models.real_shapes import build_real_shape_model
    from whisper_llada.training.objective import training_loss

    device = torch.device(device_name)
    cfg = load_config(Path(__file__).parent.parent / "configs" / "whisper_llada.yaml")
    torch.manual_seed(0)
    model = build_real_shape_model(cfg.model, encoder_layers=1, llm_layers=layers, device=device)
    if checkpointing:
        model.llada.enable_gradient_checkpointing()
    model.train()
    mel = torch.randn(batch, 128, 3000, device=device)
    lengths = torch.full((batch,), 3000, device=device)
    texts = [torch.randint(0, 100_000, (answer,)).tolist() for _ in range(batch)]
    speech = SpeechBatch(mel, lengths, texts)
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = training_loss(
            model, speech, cfg.model, cfg.loss, torch.Generator(device).manual_seed(0)
        )
    loss.total.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"seconds": time.perf_counter() - start, "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--answer", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--worker", nargs=2, metavar=("LAYERS", "CHECKPOINTING"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        layers, checkpointing = int(args.worker[0]), args.worker[1] == "1"
        print(json.dumps(worker(layers, checkpointing, args.batch, args.answer, args.device)))
        return
    what = "peak RSS of the process" if args.device == "cpu" else "max allocated"
    print(f"batch {args.batch}, answer {args.answer} tokens, {args.device}; peak = {what} (GiB)")
    print("| LLaDA layers | checkpointing | s / step | peak GiB | estimated activations GiB |")
    print("|---|---|---|---|---|")
    for layers in args.layers:
        for checkpointing in (False, True):
            command = [
                sys.executable,
                __file__,
                "--worker",
                str(layers),
                str(int(checkpointing)),
                "--batch",
                str(args.batch),
                "--answer",
                str(args.answer),
                "--device",
                args.device,
            ]
            result = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True).stdout
            )
            estimate = estimate_gib(args.batch, args.answer, layers, checkpointing)
            print(
                f"| {layers} | {'on' if checkpointing else 'off'} | {result['seconds']:.2f} | "
                f"{result['peak_gib']:.2f} | {estimate:.3f} |",
                flush=True,
            )
    full = estimate_gib(args.batch, args.answer, 32, False)
    print(
        f"LLaDA-8B, 32 blocks, batch {args.batch}: estimated activations {full:.1f} GiB without, "
        f"{estimate_gib(args.batch, args.answer, 32, True):.2f} GiB with gradient checkpointing"
    )


if __name__ == "__main__":
    main()
