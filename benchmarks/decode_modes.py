"""Every decoding mode and the dLLM-ASR ablations on one test set: WER, forward passes, RTF and speed-up, in one run.

    python benchmarks/decode_modes.py --config exp/brief/config.yaml \
        --checkpoint exp/brief/checkpoint.safetensors --manifest exp/brief/test.jsonl \
        [--out exp/decode_modes] [--gen-len 32] [--batch-size 8] [--modes diffusion "CTC draft" ...]

The modes are the demo's (`whisper_llada.mode_comparison.standard_modes`) plus prior-guided
decoding without early exit. Each mode decodes the whole manifest with the same trained model
(built once, LoRA merged), through the same code as inference.py, into a fresh folder under
--out: timings are wall-clock on this machine in this run, so the ratios compare like with
like. Writes `table.md` and `table.json` to --out. The last rows repeat `diffusion` and
`prior-guided` at batch 1 to measure what batching buys.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from pathlib import Path

import torch

from whisper_llada.atomic_write import write_text_atomically
from whisper_llada.config import load_config
from whisper_llada.manifest import read_manifest
from whisper_llada.mode_comparison import (
    NEUTRAL_DECODE,
    REFERENCE_MODE,
    decode_mode,
    markdown_table,
    standard_modes,
)
from whisper_llada.transcribe import load_decoder

BATCH_ONE_MODES = ("diffusion", "prior-guided")  # repeated at batch 1: what batching buys


def modes(gen_len: int) -> dict[str, tuple[str, ...]]:
    """The demo's modes (`standard_modes`) and one more ablation: prior-guided without early exit."""
    table = standard_modes(gen_len)
    return {
        **table,
        "prior-guided, no early exit": (*table["prior-guided"], "decode.early_exit=false"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("exp/decode_modes"))
    parser.add_argument("--gen-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--modes", nargs="*", help="subset of mode names (default: all)")
    args = parser.parse_args()
    table = modes(args.gen_len)
    unknown = sorted(set(args.modes or ()) - set(table))
    if unknown:
        parser.error(f"unknown modes {unknown}; modes: {list(table)}")
    chosen = {name: table[name] for name in (args.modes or table)}
    common = [
        f"inference.checkpoint={args.checkpoint}",
        f"inference.manifest={args.manifest}",
        f"decode.gen_len={args.gen_len}",
        *NEUTRAL_DECODE,
    ]
    runs = [
        (name, [*common, *overrides, f"inference.batch_size={args.batch_size}"])
        for name, overrides in chosen.items()
    ]
    runs += [
        (f"{name} @ batch 1", [*common, *table[name], "inference.batch_size=1"])
        for name in BATCH_ONE_MODES
        if name in chosen
    ]
    base_cfg = load_config(args.config, common)
    decoder = functools.cache(
        lambda: load_decoder(base_cfg, torch.device(base_cfg.inference.device))
    )
    utterances = read_manifest(args.manifest)
    rows = []
    for name, overrides in runs:
        out = args.out / "".join(c if c.isalnum() else "_" for c in name)
        shutil.rmtree(out, ignore_errors=True)  # timings of this run only
        cfg = load_config(args.config, [*overrides, f"inference.output_dir={out}"])
        rows.append(decode_mode(decoder, cfg, name, utterances, out))
        print(f"{name}: {rows[-1]}", flush=True)
    reference = next((row for row in rows if row.mode == REFERENCE_MODE), rows[0])
    text = markdown_table(rows, reference)
    write_text_atomically(args.out / "table.md", text)
    write_text_atomically(
        args.out / "table.json",
        json.dumps({row.mode: row.as_dict(reference) for row in rows}, indent=2) + "\n",
    )
    print(text)


if __name__ == "__main__":
    main()
