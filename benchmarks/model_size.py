"""Parameter counts of the real-shape recognisers (whisper-large-v3 + LLaDA-8B), built on the meta device.

    python benchmarks/model_size.py [configs/whisper_llada.yaml configs/dllm_asr.yaml]

No memory is allocated and no checkpoint is read: the counts come from the module definitions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from whisper_llada.config import load_config
from whisper_llada.models.real_shapes import build_real_shape_model

FP32_BYTES = 4


def count_parts(model) -> list[tuple[str, int, int]]:
    """(part, parameters, trainable) rows; LoRA factors are reported apart from the LLM base."""
    rows = []
    for part in ("encoder", "projector", "llada", "ctc_head"):
        module = getattr(model, part)
        if module is None:
            continue
        named = list(module.named_parameters())
        base = [p for name, p in named if ".lora_" not in name]
        lora = [p for name, p in named if ".lora_" in name]
        rows.append(
            (part, sum(p.numel() for p in base), sum(p.numel() for p in base if p.requires_grad))
        )
        if lora:
            rows.append(("  LoRA", sum(p.numel() for p in lora), sum(p.numel() for p in lora)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "configs",
        nargs="*",
        type=Path,
        default=[Path("configs/whisper_llada.yaml"), Path("configs/dllm_asr.yaml")],
    )
    args = parser.parse_args()
    for path in args.configs:
        cfg = load_config(path).model
        model = build_real_shape_model(cfg, device="meta")
        rows = count_parts(model)
        trainable = sum(row[2] for row in rows)
        print(
            f"\n{path} (projector {cfg.projector}, LoRA r={cfg.lora.r} on {', '.join(cfg.lora.targets)})"
        )
        print(f"| {'part':<10} | {'parameters':>15} | {'trainable':>12} |")
        print(f"|{'-' * 12}|{'-' * 17}|{'-' * 14}|")
        for part, total, train in rows:
            print(f"| {part:<10} | {total:>15,} | {train:>12,} |")
        print(f"| {'total':<10} | {sum(r[1] for r in rows):>15,} | {trainable:>12,} |")
        print(f"trainable weights in float32: {trainable * FP32_BYTES / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
