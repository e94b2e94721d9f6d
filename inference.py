"""Batch decoding from YAML, sharded over torchrun ranks and resumable.

    python inference.py configs/decode/<mode>.yaml [section.key=value ...]
    torchrun --nproc_per_node=N inference.py configs/decode/<mode>.yaml [...]

Each rank decodes a disjoint shard of the manifest and appends one JSONL record per utterance to
`<output_dir>/results-rank<R>.jsonl` after every batch; a rerun (after a crash, kill -9 included)
skips what is already there. At the end the main rank merges the shards into `results.jsonl` and
writes icefall-style `recogs-*.txt`, `errs-*.txt` and `wer-*.txt`. An utterance whose audio is
missing or corrupt is recorded as failed, with the reason, and the run goes on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from whisper_llada.atomic_write import write_text_atomically
from whisper_llada.audio import SAMPLE_RATE, AudioError
from whisper_llada.build import build_model, merge_lora
from whisper_llada.checkpoint import load_checkpoint
from whisper_llada.config import Config, load_config, to_dict
from whisper_llada.distributed import barrier, device_for, init_distributed, shutdown
from whisper_llada.manifest import load_wave, make_batches, read_manifest, shard
from whisper_llada.metrics import score, write_errs, write_recogs, write_wer
from whisper_llada.recognize import recognize
from whisper_llada.results import Record, ShardWriter, finished_ids, merge_shards, shard_path


def decode_shard(
    cfg: Config, utterances, output_dir: Path, rank: int, device: torch.device
) -> None:
    """Decode `utterances` batch by batch, appending records to this rank's shard file."""
    torch.manual_seed(
        cfg.decode.seed
    )  # parts a checkpoint does not cover start identical on every rank
    model, tokenizer = build_model(cfg.model, device=device)
    if cfg.inference.checkpoint:
        load_checkpoint(model, cfg.inference.checkpoint)
    if cfg.inference.merge_lora:
        merge_lora(model)
    model.eval()
    limit = cfg.inference.max_duration
    batches = make_batches(
        utterances, batch_size=None if limit else cfg.inference.batch_size, max_duration=limit
    )
    writer = ShardWriter(shard_path(output_dir, rank))
    progress = tqdm(
        total=len(utterances), unit="utt", desc=f"rank {rank}", position=rank, disable=None
    )
    try:
        for batch in batches:
            records, loaded, waves = [], [], []
            for utt in batch:
                try:
                    waves.append(
                        load_wave(
                            utt, max_seconds=cfg.audio.max_seconds, too_long=cfg.audio.too_long
                        )
                    )
                    loaded.append(utt)
                except AudioError as error:
                    records.append(
                        Record(utt.id, utt.text, "", utt.first_pass, 0, 0.0, 0.0, error=str(error))
                    )
            if loaded:
                start = time.perf_counter()
                hypotheses = recognize(
                    model,
                    tokenizer,
                    waves,
                    [u.id for u in loaded],
                    cfg.decode,
                    cfg.audio,
                    first_passes=[u.first_pass for u in loaded],
                )
                share = (time.perf_counter() - start) / len(loaded)
                records += [
                    Record(
                        u.id,
                        u.text,
                        h.text,
                        h.prior if h.prior is not None else u.first_pass,
                        h.forward_passes,
                        share,
                        len(w) / SAMPLE_RATE,
                    )
                    for u, h, w in zip(loaded, hypotheses, waves, strict=True)
                ]
            writer.write(records)
            progress.update(len(batch))
    finally:
        writer.close()
        progress.close()


def summarize(cfg: Config, output_dir: Path) -> str:
    """Merge the shards and write the recogs / errs / wer files; return the WER line."""
    records = merge_shards(output_dir)
    decoded = [r for r in records if not r.failed]
    # A failed utterance is scored as an empty hypothesis (its words count as deletions).
    scored = [(r.id, r.reference, None if r.failed else r.hypothesis) for r in records]
    summary, alignments = score(scored)
    decode_seconds = sum(r.decode_seconds for r in decoded)
    audio_seconds = sum(r.audio_seconds for r in decoded)
    extra = {
        "mode": cfg.decode.mode,
        "utterances decoded": len(decoded),
        "forward passes per utterance": round(
            sum(r.forward_passes for r in decoded) / max(len(decoded), 1), 3
        ),
        "RTF": round(decode_seconds / audio_seconds, 4) if audio_seconds else "n/a",
        "utterances per second": round(len(decoded) / decode_seconds, 3)
        if decode_seconds
        else "n/a",
    }
    tag = f"{Path(cfg.inference.manifest).name.split('.')[0]}-{cfg.decode.mode}"
    write_recogs(output_dir / f"recogs-{tag}.txt", scored)
    write_errs(output_dir / f"errs-{tag}.txt", summary, alignments)
    write_wer(output_dir / f"wer-{tag}.txt", summary, extra)
    details = ", ".join(f"{k} {v}" for k, v in extra.items())
    return f"%WER {summary.wer:.2f} ({summary.errors} errors / {summary.ref_words} words; {summary.failed} failed; {details})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if not cfg.inference.manifest:
        raise SystemExit("set inference.manifest (the test set to decode)")
    info = init_distributed(cfg.inference.device)
    output_dir = Path(cfg.inference.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    utterances = read_manifest(cfg.inference.manifest)
    done = finished_ids(output_dir)
    todo = [u for u in shard(utterances, info.rank, info.world_size) if u.id not in done]
    if info.is_main:
        write_text_atomically(
            output_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False)
        )
        print(
            f"{len(utterances)} utterances, {len(done)} already decoded, {info.world_size} rank(s)"
        )
    if todo:
        decode_shard(cfg, todo, output_dir, info.rank, device_for(cfg.inference.device, info))
    barrier()
    if info.is_main:
        print(summarize(cfg, output_dir))
    shutdown()


if __name__ == "__main__":
    main()
