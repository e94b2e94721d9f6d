"""Every decoding mode and the dLLM-ASR ablations on one test set: WER, forward passes, RTF and speed-up, in one run.

    python benchmarks/decode_modes.py --config exp/brief/config.yaml \
        --checkpoint exp/brief/checkpoint.safetensors --manifest exp/brief/test.jsonl \
        [--out exp/decode_modes] [--gen-len 32] [--batch-size 8] [--modes decoding prior_guided ...]

Each mode decodes the whole manifest with the same trained model (LoRA merged), through the same
code as inference.py; timings are wall-clock on this machine in this run, so the ratios compare
like with like. Writes `table.md` and `table.json` to --out. The last rows repeat `prior_guided`
and `decoding` at batch 1 to measure what batching buys.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from whisper_llada.config import load_config
from whisper_llada.manifest import read_manifest
from whisper_llada.metrics import score
from whisper_llada.results import merge_shards
from whisper_llada.transcribe import decode_shard


def modes(gen_len: int) -> dict[str, list[str]]:
    """Mode name -> config overrides. `decoding` with steps = gen_len is the reference row."""
    prior = [
        "decode.mode=prior_guided",
        "decode.first_pass=ctc",
        "decode.threshold=0.9",
        "decode.prune=true",
        "decode.early_exit=true",
        "decode.prefix_cache=true",
    ]
    return {
        "decoding": [
            "decode.mode=decoding",
            f"decode.steps={gen_len}",
            f"decode.block_length={gen_len}",
        ],
        "semi_ar_half": [
            "decode.mode=decoding",
            f"decode.steps={gen_len}",
            f"decode.block_length={gen_len // 2}",
        ],
        "semi_ar_quarter": [
            "decode.mode=decoding",
            f"decode.steps={gen_len}",
            f"decode.block_length={gen_len // 4}",
        ],
        "decoding_threshold": [
            "decode.mode=decoding",
            f"decode.steps={gen_len}",
            f"decode.block_length={gen_len}",
            "decode.threshold=0.9",
        ],
        "decoding_threshold_prune (prior off)": [
            "decode.mode=decoding",
            f"decode.steps={gen_len}",
            f"decode.block_length={gen_len}",
            "decode.threshold=0.9",
            "decode.prune=true",
        ],
        "deliberation_random": [
            "decode.mode=diffusion_deliberation",
            "decode.first_pass=ctc",
            "decode.masking_type=random",
            "decode.mask_ratio=0.3",
            "decode.steps=16",
        ],
        "deliberation_low_confidence": [
            "decode.mode=diffusion_deliberation",
            "decode.first_pass=ctc",
            "decode.masking_type=low_confidence",
            "decode.mask_ratio=0.3",
            "decode.steps=16",
        ],
        "semi_ar_deliberation": [
            "decode.mode=semi_ar_deliberation",
            "decode.first_pass=ctc",
            "decode.num_chunks=4",
            "decode.steps=16",
        ],
        "prior_guided": prior,
        "prior_guided_mask_below": [*prior, "decode.prior_treatment=mask_below"],
        "prior_guided_no_prune": [*prior, "decode.prune=false"],
        "prior_guided_no_early_exit": [*prior, "decode.early_exit=false"],
        "prior_guided_no_cache": [*prior, "decode.prefix_cache=false"],
        "ctc_draft": ["decode.mode=ctc"],
    }


def run_mode(
    config: Path, overrides: list[str], manifest: Path, out: Path
) -> dict[str, float | int]:
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(
        config, [*overrides, f"inference.manifest={manifest}", f"inference.output_dir={out}"]
    )
    utterances = read_manifest(manifest)
    decode_shard(cfg, utterances, out, 0, torch.device(cfg.inference.device))
    records = merge_shards(out)
    summary, _ = score((r.id, r.reference, None if r.failed else r.hypothesis) for r in records)
    seconds = sum(r.decode_seconds for r in records)
    return {
        "wer": summary.wer,
        "substitutions": summary.substitutions,
        "deletions": summary.deletions,
        "insertions": summary.insertions,
        "passes_per_utt": sum(r.forward_passes for r in records) / len(records),
        "rtf": seconds / sum(r.audio_seconds for r in records),
        "utt_per_s": len(records) / seconds,
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
    chosen = {name: table[name] for name in (args.modes or table)}
    common = [f"inference.checkpoint={args.checkpoint}", f"decode.gen_len={args.gen_len}"]
    runs = [
        (name, [*common, *o, f"inference.batch_size={args.batch_size}"])
        for name, o in chosen.items()
    ]
    runs += [
        (f"{name} @ batch 1", [*common, *table[name], "inference.batch_size=1"])
        for name in ("decoding", "prior_guided")
        if name in chosen
    ]
    rows = {}
    for name, overrides in runs:
        slug = "".join(c if c.isalnum() else "_" for c in name)
        rows[name] = run_mode(args.config, overrides, args.manifest, args.out / slug)
        print(f"{name}: {rows[name]}", flush=True)
    reference = rows[next(iter(rows))]
    lines = [
        f"| mode | WER % (S/D/I) | passes / utt | RTF | speed-up vs {next(iter(rows))} | utt / s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['wer']:.2f} ({r['substitutions']}/{r['deletions']}/{r['insertions']}) | "
            f"{r['passes_per_utt']:.2f} | {r['rtf']:.4f} | {reference['rtf'] / r['rtf']:.2f}x | {r['utt_per_s']:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
