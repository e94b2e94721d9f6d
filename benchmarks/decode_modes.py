"""Every decoding mode and the dLLM-ASR ablations on one test set: WER, forward passes, RTF and speed-up, in one run.

    python benchmarks/decode_modes.py --config exp/brief/config.yaml \
        --checkpoint exp/brief/checkpoint.safetensors --manifest exp/brief/test.jsonl \
        [--ar-config configs/decode/autoregressive.yaml --ar-checkpoint exp/whisper_llama/best.safetensors] \
        [--out exp/decode_modes] [--gen-len 32] [--batch-size 8] [--modes diffusion "CTC draft" ...]

The modes are the demo's (`whisper_llada.evaluation.mode_comparison.standard_modes`) plus
prior-guided decoding without early exit. Each mode decodes the whole manifest with the same trained
model (built once, LoRA merged), through the same code as inference.py, into a fresh folder under
--out: timings are wall-clock on this machine in this run, so the ratios compare like with like.
Writes `table.md` and `table.json` to --out. The last rows repeat `diffusion` and `prior-guided` at
batch 1 to measure what batching buys.

With --ar-config and --ar-checkpoint (a Whisper-LLaMA config and its weights) the demo's AR rows
come too: the AR model alone (greedy, KV cache) and the cascade rows, the model's low-confidence
deliberation and prior-guided decoding over the AR hypotheses of the same run (both stages'
seconds); the table gains a speed-up vs AR column.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from pathlib import Path

import torch

from whisper_llada.config import load_config
from whisper_llada.data.manifest import read_manifest
from whisper_llada.evaluation.mode_comparison import (
    AR_DECODE,
    AR_MODE,
    NEUTRAL_DECODE,
    REFERENCE_MODE,
    cascade_modes,
    decode_mode,
    markdown_table,
    standard_modes,
)
from whisper_llada.evaluation.transcribe import load_decoder
from whisper_llada.utils.atomic_write import write_text_atomically

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
    parser.add_argument("--ar-config", type=Path, help="a Whisper-LLaMA config: the AR rows")
    parser.add_argument("--ar-checkpoint", type=Path, help="its weights (with --ar-config)")
    parser.add_argument("--out", type=Path, default=Path("exp/decode_modes"))
    parser.add_argument("--gen-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--modes", nargs="*", help="subset of mode names (default: all)")
    args = parser.parse_args()
    if (args.ar_config is None) != (args.ar_checkpoint is None):
        parser.error("--ar-config and --ar-checkpoint go together: the AR model and its weights")
    table = modes(args.gen_len)
    # The AR row decodes with the AR config and these; the cascade's first pass exactly so.
    ar_overrides = (f"inference.checkpoint={args.ar_checkpoint}", *NEUTRAL_DECODE, *AR_DECODE)
    if args.ar_config is not None:
        table |= {AR_MODE: AR_DECODE, **cascade_modes(args.ar_config, ar_overrides)}
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
    ar_common = [*ar_overrides, f"inference.manifest={args.manifest}"]
    runs = [
        (
            name,
            args.ar_config if name == AR_MODE else args.config,
            [
                *(ar_common if name == AR_MODE else common),
                *overrides,
                f"inference.batch_size={args.batch_size}",
            ],
        )
        for name, overrides in chosen.items()
    ]
    runs += [
        (f"{name} @ batch 1", args.config, [*common, *table[name], "inference.batch_size=1"])
        for name in BATCH_ONE_MODES
        if name in chosen
    ]
    base_cfg = load_config(args.config, common)
    device = torch.device(base_cfg.inference.device)
    decoder = functools.cache(lambda: load_decoder(base_cfg, device))
    ar_decoder = None
    if args.ar_config is not None:
        ar_cfg = load_config(args.ar_config, ar_common)
        ar_decoder = functools.cache(lambda: load_decoder(ar_cfg, device))
    utterances = read_manifest(args.manifest)
    rows = []
    for name, config, overrides in runs:
        out = args.out / "".join(c if c.isalnum() else "_" for c in name)
        shutil.rmtree(out, ignore_errors=True)  # timings of this run only
        cfg = load_config(config, [*overrides, f"inference.output_dir={out}"])
        model = ar_decoder if name == AR_MODE else decoder
        rows.append(decode_mode(model, cfg, name, utterances, out, first_pass_decoder=ar_decoder))
        print(f"{name}: {rows[-1]}", flush=True)
    reference = next((row for row in rows if row.mode == REFERENCE_MODE), rows[0])
    ar_reference = next((row for row in rows if row.mode == AR_MODE), None)
    text = markdown_table(rows, reference, ar_reference)
    write_text_atomically(args.out / "table.md", text)
    document = {row.mode: row.as_dict(reference, ar_reference) for row in rows}
    write_text_atomically(args.out / "table.json", json.dumps(document, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
