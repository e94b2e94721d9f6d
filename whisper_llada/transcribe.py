"""Decoding a test set: a rank's shard batch by batch into crash-safe result records, then the merged scoring files."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from whisper_llada.audio import SAMPLE_RATE, AudioError
from whisper_llada.build import build_model, merge_lora
from whisper_llada.checkpoint import load_checkpoint
from whisper_llada.config import Config
from whisper_llada.manifest import load_wave, make_batches
from whisper_llada.metrics import score, write_errs, write_recogs, write_wer
from whisper_llada.recognize import recognize
from whisper_llada.results import Record, ShardWriter, merge_shards, shard_path


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
