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
from pathlib import Path

import yaml

from whisper_llada.config import load_config
from whisper_llada.config_strict import to_dict
from whisper_llada.data.batching import shard
from whisper_llada.data.manifest import read_manifest
from whisper_llada.decoding.recognize import reads_manifest_first_pass
from whisper_llada.evaluation.results import (
    check_same_utterances,
    claim_results_folder,
    finished_ids,
    lock_results_folder,
)
from whisper_llada.evaluation.transcribe import (
    check_decode_config,
    check_same_run,
    decode_shard,
    summarize,
)
from whisper_llada.utils.atomic_write import write_text_atomically
from whisper_llada.utils.distributed import barrier, device_for, init_distributed, shutdown
from whisper_llada.utils.file_hash import file_sha256


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if not cfg.inference.manifest:
        raise SystemExit("set inference.manifest (the test set to decode)")
    check_decode_config(cfg)
    info = init_distributed(cfg.inference.device)
    output_dir = Path(cfg.inference.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_results_folder(output_dir) if info.is_main else None  # noqa: F841 (held open)
    utterances = read_manifest(cfg.inference.manifest)
    if cfg.inference.checkpoint:  # a checkpoint replaced at the same path is another model
        fingerprint = {"model": cfg.inference.checkpoint}
        fingerprint["checkpoint_sha256"] = file_sha256(cfg.inference.checkpoint)
        claim_results_folder(output_dir, fingerprint)
    done = finished_ids(output_dir)
    if done:
        check_same_run(output_dir / "config.yaml", to_dict(cfg))
        check_same_utterances(output_dir, utterances, reads_manifest_first_pass(cfg.decode))
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
    barrier()  # no rank tears the process group down while the main rank still merges
    shutdown()


if __name__ == "__main__":
    main()
