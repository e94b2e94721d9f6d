"""The demo, the project's main job: the demo model's held-out test sets decoded in every decoding mode, in one table.

    python -m whisper_llada.demo [--model models/demo] [--work-dir exp/demo_run] [--limit N]
        [--threads N]
    python -m whisper_llada.demo retrain [--out models/demo] [--work-dir exp/demo] [--max-steps N]
        [--stage2-max-steps N] [--nproc-per-node N] [--train-utterances N]
        [--held-out-utterances N] [section.key=value ...]

The first command is idempotent and resumable:
1. it synthesises the held-out splits of the model's corpus (`demo_recipe`) into <work>/corpus
   and prepares their lhotse manifests in <work>/manifests, both reused when present;
2. decodes every test set of `demo_recipe.TEST_SETS` in every mode of
   `mode_comparison.standard_modes` into <work>/decode/<set>/<mode>/, as inference.py would (a
   rerun decodes only what is missing there); with --limit N only the first N utterances of
   each set, into <work>/decode-first<N>/;
3. prints the tables and writes <work>/demo_results.{md,json,png} (`demo_table`).

The model directory is what `whisper_llada.export` writes (whisper/, llada/,
checkpoint.safetensors, config.yaml). Its config.yaml gives the decoding settings (gen_len,
steps, mask ratio, batch size, device); the weights are taken from the directory itself, so it
can be moved. `retrain` (see `demo_retrain`) makes such a directory from nothing, in two training
stages (configs/demo.yaml, then configs/demo_stage2.yaml).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from whisper_llada.atomic_write import write_text_atomically
from whisper_llada.checkpoint import read_checkpoint
from whisper_llada.config import load_config
from whisper_llada.demo_recipe import (
    TEST_SETS,
    TRAIN_SPLIT,
    build_demo_corpus,
    prepare_demo_manifests,
)
from whisper_llada.demo_retrain import (
    CORPUS_SPEC_KEY,
    HELD_OUT_KEY,
    add_retrain_arguments,
    run_retrain,
)
from whisper_llada.demo_table import About, SetResult, write_results
from whisper_llada.manifest import read_manifest
from whisper_llada.mode_comparison import NEUTRAL_DECODE, decode_mode, standard_modes
from whisper_llada.synthetic_corpus import MARKER_NAME
from whisper_llada.transcribe import load_decoder

DEFAULT_MODEL = Path("models/demo")
DEFAULT_WORK_DIR = Path("exp/demo_run")
MODEL_FILES = ("config.yaml", "checkpoint.safetensors", "whisper", "llada")
FINGERPRINT_NAME = "model.json"  # in a decode folder: the model its results come from
HASH_CHUNK_BYTES = 1 << 20


def model_paths(model_dir: Path) -> list[str]:
    """Overrides that point the model config at the directory's own weights."""
    return [
        f"model.whisper_path={model_dir / 'whisper'}",
        f"model.llada_path={model_dir / 'llada'}",
        f"inference.checkpoint={model_dir / 'checkpoint.safetensors'}",
    ]


def mode_folder(mode: str) -> str:
    """A mode label as a folder name: "diffusion, threshold 0.9" -> "diffusion-threshold-0-9"."""
    return re.sub(r"[^a-z0-9]+", "-", mode.lower()).strip("-")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_dir(model_dir: Path) -> None:
    missing = [name for name in MODEL_FILES if not (model_dir / name).exists()]
    if missing:
        raise SystemExit(
            f"{model_dir} is not an exported model ({', '.join(missing)} missing): make one with "
            "`python -m whisper_llada.demo retrain --out DIR` or `python -m whisper_llada.export`"
        )


def held_out_part(spec: dict) -> dict:
    """A synthetic corpus's parameters (its synthetic_corpus.json) without the training split."""
    return {
        key: {split: v for split, v in value.items() if split != TRAIN_SPLIT}
        if isinstance(value, dict)
        else value
        for key, value in spec.items()
    }


def check_same_held_out_sets(corpus: Path, trained_spec: dict | None) -> None:
    """Stop when `corpus`'s held-out sets are not those of the corpus the model trained with.

    `trained_spec` is the training corpus's parameters from the export's metadata (`retrain`
    records them; an export without them is not checked): a demo recipe changed since training
    would otherwise evaluate on other sentences, perhaps with words the model never saw.
    """
    if trained_spec is None:
        return
    built, trained = (
        held_out_part(json.loads((corpus / MARKER_NAME).read_text())),
        held_out_part(trained_spec),
    )
    changed = sorted(
        key for key in built.keys() | trained.keys() if built.get(key) != trained.get(key)
    )
    if changed:
        raise SystemExit(
            f"the demo recipe's held-out sets differ from those of the model's training corpus "
            f"(changed: {', '.join(changed)}): decode with the recipe of the commit in the "
            "model's metadata (git_commit), or retrain"
        )


def claim_decode_folder(decode_dir: Path, fingerprint: dict[str, str]) -> None:
    """Record which model `decode_dir` holds results of; refuse to mix in another model's."""
    path = decode_dir / FINGERPRINT_NAME
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded["checkpoint_sha256"] != fingerprint["checkpoint_sha256"]:
            raise SystemExit(
                f"{decode_dir} holds results of another model ({recorded['model']}, checkpoint "
                f"sha256 {recorded['checkpoint_sha256'][:12]}): pass another --work-dir, or "
                f"delete {decode_dir} to decode this one there"
            )
        return
    write_text_atomically(path, json.dumps(fingerprint, indent=2) + "\n")


def run_demo(
    model_dir: Path, work_dir: Path, limit: int | None = None, threads: int | None = None
) -> list[SetResult]:
    """Build the held-out sets, decode them in every mode, write and return the results.

    `threads`: torch's CPU threads (None: torch's default, one per core).
    """
    for name, value in (("--limit", limit), ("--threads", threads)):
        if value is not None and value < 1:
            raise SystemExit(f"{name} must be at least 1, got {value}")
    if threads is not None:
        torch.set_num_threads(threads)
    check_model_dir(model_dir)
    checkpoint = model_dir / "checkpoint.safetensors"
    _, _, metadata = read_checkpoint(checkpoint)
    # A model retrained with capped held-out splits is evaluated on the same capped sets.
    corpus = build_demo_corpus(
        work_dir / "corpus", with_train=False, held_out_utterances=metadata.get(HELD_OUT_KEY)
    )
    check_same_held_out_sets(corpus, metadata.get(CORPUS_SPEC_KEY))
    manifests = prepare_demo_manifests(corpus, work_dir / "manifests")
    model_config = model_dir / "config.yaml"
    cfg = load_config(model_config, model_paths(model_dir))
    modes = standard_modes(cfg.decode.gen_len)
    fingerprint = {"model": str(model_dir), "checkpoint_sha256": file_sha256(checkpoint)}
    decode_dir = work_dir / ("decode" if limit is None else f"decode-first{limit}")
    claim_decode_folder(decode_dir, fingerprint)
    device = torch.device(cfg.inference.device)
    decoder = functools.cache(lambda: load_decoder(cfg, device))
    results = []
    for name, description in TEST_SETS.items():
        utterances = read_manifest(manifests[name])[:limit]
        rows = []
        for mode, overrides in modes.items():
            output_dir = decode_dir / name / mode_folder(mode)
            mode_cfg = load_config(
                model_config,
                [
                    *model_paths(model_dir),
                    *NEUTRAL_DECODE,
                    *overrides,
                    f"inference.manifest={manifests[name]}",
                    f"inference.output_dir={output_dir}",
                ],
            )
            rows.append(
                decode_mode(decoder, mode_cfg, mode, utterances, output_dir, desc=f"{name}: {mode}")
            )
            tqdm.write(f"{name}, {mode}: WER {rows[-1].wer:.2f} %", file=sys.stderr)
        results.append(SetResult(name, description, rows))
    about = About(
        model_dir=str(model_dir),
        checkpoint_sha256=fingerprint["checkpoint_sha256"],
        limit=limit,
        device=f"{device}, {torch.get_num_threads()} CPU thread(s)"
        if device.type == "cpu"
        else str(device),
        modes=modes,
    )
    paths = write_results(work_dir, results, about)
    print(paths["md"].read_text())
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["retrain"]:
        parser = argparse.ArgumentParser(
            prog="python -m whisper_llada.demo retrain",
            description="Retrain the demo model from nothing (resumable) and export it.",
        )
        add_retrain_arguments(parser)
        run_retrain(parser.parse_args(argv[1:]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m whisper_llada.demo",
        description=__doc__.splitlines()[0],
        epilog="`python -m whisper_llada.demo retrain --help`: retraining the model.",
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an exported model")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument(
        "--limit", type=int, default=None, help="decode only the first N utterances of each set"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: one per core; on a busy machine 1 is steadier)",
    )
    args = parser.parse_args(argv)
    run_demo(args.model, args.work_dir, args.limit, args.threads)


if __name__ == "__main__":
    main()
