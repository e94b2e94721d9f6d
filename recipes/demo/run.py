"""The demo, the project's main job: the demo model's held-out test sets decoded in every decoding mode, in one table.

    python -m recipes.demo [--model models/demo] [--ar-model models/demo_ar]
        [--work-dir exp/demo_run] [--limit N] [--threads N]
    python -m recipes.demo retrain [--out models/demo] [--work-dir exp/demo] [--max-steps N]
        [--stage2-max-steps N] [--nproc-per-node N] [--train-utterances N]
        [--held-out-utterances N] [section.key=value ...]
    python -m recipes.demo retrain-ar [--out models/demo_ar] [--work-dir exp/demo]
        [--ar-work-dir exp/demo_ar] [--max-steps N] [--nproc-per-node N] [--train-utterances N]
        [--held-out-utterances N] [section.key=value ...]

The first command is idempotent and resumable:
1. it synthesises the held-out splits of the model's corpus (`corpus`) into <work>/corpus
   and prepares their lhotse manifests in <work>/manifests, both reused when present;
2. decodes every test set of `corpus.TEST_SETS` in every mode of
   `mode_comparison.standard_modes` into <work>/decode/<set>/<mode>/, as inference.py would (a
   rerun decodes only what is missing there); with --limit N only the first N utterances of
   each set, into <work>/decode-first<N>/;
3. prints the tables and writes <work>/demo_results.{md,json,png} (`table`).

The model directory is what `whisper_llada.models.export` writes (whisper/, llada/,
checkpoint.safetensors, config.yaml). Its config.yaml gives the decoding settings (gen_len,
steps, mask ratio, batch size, device); the weights are taken from the directory itself, so it
can be moved. `retrain` (see `retrain`) makes such a directory from nothing, in two training
stages (configs/demo.yaml, then configs/demo_stage2.yaml).

With an autoregressive model (an export with llama/ instead of llada/, as `retrain-ar` makes: see
`retrain_ar`), each set gains three rows (`mode_comparison`): the AR model alone (greedy, KV cache),
and the cascade, the model's low-confidence deliberation and its prior-guided decoding over the AR
model's hypotheses of the same run; and the tables a speed-up vs AR column. --ar-model defaults to
the folder beside --model named <model>_ar (models/demo_ar) when it exists; without one there are no
AR rows. Like the model, the AR model's results in a decode folder are recorded (ar_model.json), and
another's refused. With Whisper tiny.en converted (setup.sh; --whisper), test-clean has a peer row:
Whisper itself, greedy at 30 s padding, on its first --whisper-utterances (`whisper_peer`; ~1 s a
clip), and a row of the paper's naive Whisper-LLaDA decoding (128 slots, 128 steps: the setting
dLLM-ASR's 27.6x is against) on its first PAPER_UTTERANCES.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from recipes.demo import whisper_peer
from recipes.demo.corpus import (
    TEST_SETS,
    build_demo_corpus,
    check_same_held_out_sets,
    prepare_demo_manifests,
)
from recipes.demo.retrain import (
    CORPUS_SPEC_KEY,
    HELD_OUT_KEY,
    add_retrain_arguments,
    run_retrain,
)
from recipes.demo.retrain_ar import add_retrain_ar_arguments, run_retrain_ar
from recipes.demo.table import About, SetResult, write_results
from whisper_llada.config import load_config
from whisper_llada.data.encoder_cache import fill_encoder_cache
from whisper_llada.data.manifest import read_manifest
from whisper_llada.evaluation.mode_comparison import (
    AR_DECODE,
    AR_MODE,
    NEUTRAL_DECODE,
    PAPER_DECODE,
    PAPER_MODE,
    REFERENCE_MODE,
    cascade_modes,
    decode_mode,
    standard_modes,
)
from whisper_llada.evaluation.results import claim_results_folder, finished_ids
from whisper_llada.evaluation.transcribe import load_decoder
from whisper_llada.models.checkpoint import read_checkpoint
from whisper_llada.utils.file_hash import file_sha256

DEFAULT_MODEL = Path("models/demo")
DEFAULT_WORK_DIR = Path("exp/demo_run")
AR_SUFFIX = "_ar"  # the default AR model: models/demo -> models/demo_ar
PEER_SET = "test-clean"  # the set with the Whisper peer row and the paper's naive setting
PAPER_UTTERANCES = 50
# Each set is decoded in this many interleaved rounds: every mode decodes its next share of the
# utterances before any mode goes on, so a change of the machine's load hits every mode alike.
TIMING_ROUNDS = 4
ENCODER_CACHE = "encoder_cache"  # under the decode folder: the encoder outputs, once
MODEL_FILES = ("config.yaml", "checkpoint.safetensors")  # and the LLM's folder
ANOTHER_WORK_DIR = "pass another --work-dir"
AR_FINGERPRINT_NAME = "ar_model.json"  # and the AR model the AR and cascade rows come from
MAKE_MODEL = {  # how to make an exported model, by its LLM
    "llada": "`python -m recipes.demo retrain --out DIR`",
    "llama": "`python -m recipes.demo retrain-ar --out DIR`",
}


def model_paths(model_dir: Path, llm: str = "llada") -> list[str]:
    """Overrides that point the model config at the directory's own weights (`llm`: its LLM).

    An export without whisper/ was trained on a frozen encoder it does not copy: its config's
    model.whisper_path stays (the demo's: Whisper tiny.en as `setup.sh` converts it).
    """
    encoder = [f"model.whisper_path={model_dir / 'whisper'}"]
    return [
        *(encoder if (model_dir / "whisper").is_dir() else []),
        f"model.{llm}_path={model_dir / llm}",
        f"inference.checkpoint={model_dir / 'checkpoint.safetensors'}",
    ]


def mode_folder(mode: str) -> str:
    """A mode label as a folder name: "diffusion, threshold 0.9" -> "diffusion-threshold-0-9"."""
    return re.sub(r"[^a-z0-9]+", "-", mode.lower()).strip("-")


def check_model_dir(model_dir: Path, llm: str = "llada") -> None:
    """Stop unless `model_dir` is an export of a model with this LLM ("llada" or "llama")."""
    missing = [name for name in (*MODEL_FILES, llm) if not (model_dir / name).exists()]
    if missing:
        kind = "an exported model" if llm == "llada" else "an exported AR model"
        raise SystemExit(
            f"{model_dir} is not {kind} ({', '.join(missing)} missing): make one with "
            f"{MAKE_MODEL[llm]} or `python -m whisper_llada.models.export`"
        )


@dataclass(frozen=True)
class ArModel:
    """An exported AR model as the demo decodes it: its config, the overrides every AR decode
    starts from (its own weights, neutral decoding), its checkpoint's fingerprint, metadata."""

    model_dir: Path
    config: Path
    base_overrides: tuple[str, ...]
    fingerprint: dict[str, str]
    metadata: dict


def open_ar_model(ar_dir: Path, model_dir: Path, metadata: dict) -> ArModel:
    """Check `ar_dir` (an exported AR model, trained with the held-out sets of `model_dir`,
    whose checkpoint metadata is `metadata`) and open it."""
    check_model_dir(ar_dir, "llama")
    checkpoint = ar_dir / "checkpoint.safetensors"
    _, _, ar_metadata = read_checkpoint(checkpoint)
    theirs, ours = ar_metadata.get(HELD_OUT_KEY), metadata.get(HELD_OUT_KEY)
    if theirs != ours:

        def sets(cap: int | None) -> str:
            return "the full held-out sets" if cap is None else f"held-out sets of {cap} each"

        raise SystemExit(
            f"the AR model {ar_dir} was trained with {sets(theirs)} and the model {model_dir} "
            f"with {sets(ours)}: the demo decodes both on the model's, so make the AR model "
            "with retrain-ar's --held-out-utterances as the model was (retrain's)"
        )
    return ArModel(
        model_dir=ar_dir,
        config=ar_dir / "config.yaml",
        base_overrides=(*model_paths(ar_dir, "llama"), *NEUTRAL_DECODE),
        fingerprint={"model": str(ar_dir), "checkpoint_sha256": file_sha256(checkpoint)},
        metadata=ar_metadata,
    )


def run_demo(
    model_dir: Path,
    work_dir: Path,
    limit: int | None = None,
    threads: int | None = None,
    ar_model_dir: Path | None = None,
    whisper_checkpoint: Path | None = None,
    whisper_utterances: int = whisper_peer.DEMO_UTTERANCES,
) -> list[SetResult]:
    """Build the held-out sets, decode them in every mode, write and return the results.

    `threads`: torch's CPU threads (None: torch's default, one per core). `ar_model_dir`: an
    exported AR model, for the AR and cascade rows (None: no such rows). `whisper_checkpoint`:
    an openai-whisper checkpoint for the peer row, decoded on the first `whisper_utterances`
    of test-clean (None: no such row).
    """
    for name, value in (("--limit", limit), ("--threads", threads)):
        if value is not None and value < 1:
            raise SystemExit(f"{name} must be at least 1, got {value}")
    if threads is not None:
        torch.set_num_threads(threads)
    check_model_dir(model_dir)
    checkpoint = model_dir / "checkpoint.safetensors"
    _, _, metadata = read_checkpoint(checkpoint)
    ar = None if ar_model_dir is None else open_ar_model(ar_model_dir, model_dir, metadata)
    # A model retrained with capped held-out splits is evaluated on the same capped sets.
    corpus = build_demo_corpus(
        work_dir / "corpus", with_train=False, held_out_utterances=metadata.get(HELD_OUT_KEY)
    )
    check_same_held_out_sets(corpus, metadata.get(CORPUS_SPEC_KEY))
    if ar is not None:
        check_same_held_out_sets(corpus, ar.metadata.get(CORPUS_SPEC_KEY), "the AR model")
    manifests = prepare_demo_manifests(corpus, work_dir / "manifests")
    model_config = model_dir / "config.yaml"
    cfg = load_config(model_config, model_paths(model_dir))
    modes = standard_modes(cfg.decode.gen_len)
    fingerprint = {"model": str(model_dir), "checkpoint_sha256": file_sha256(checkpoint)}
    decode_dir = work_dir / ("decode" if limit is None else f"decode-first{limit}")
    claim_results_folder(decode_dir, fingerprint, elsewhere=ANOTHER_WORK_DIR)
    device = torch.device(cfg.inference.device)
    decoder = functools.cache(lambda: load_decoder(cfg, device))
    # Every mode reads the encoder outputs from one cache, filled before the timed decoding
    # (`fill_encoder_cache`), so the RTF columns compare the modes' own work (the AR model has the
    # same frozen encoder; the cascade's first pass and the Whisper peer encode for themselves).
    cache = f"inference.encoder_cache={decode_dir / ENCODER_CACHE}"
    # Per mode: the config it decodes with, the overrides before the mode's, the model.
    runs = dict.fromkeys(
        modes, (model_config, (*model_paths(model_dir), *NEUTRAL_DECODE, cache), decoder)
    )
    ar_decoder = None
    if ar is not None:
        claim_results_folder(
            decode_dir, ar.fingerprint, AR_FINGERPRINT_NAME, "AR model", ANOTHER_WORK_DIR
        )
        # The cascade's first pass decodes exactly as the AR row: the same config, overrides.
        first_pass = (*ar.base_overrides, *AR_DECODE)
        ar_cfg = load_config(ar.config, first_pass)
        ar_decoder = functools.cache(lambda: load_decoder(ar_cfg, device))
        cascade = cascade_modes(ar.config, first_pass)
        modes = {**modes, AR_MODE: AR_DECODE, **cascade}
        runs |= {AR_MODE: (ar.config, (*ar.base_overrides, cache), ar_decoder)}  # same encoder
        runs |= dict.fromkeys(cascade, runs[REFERENCE_MODE])
    results, encoding = [], {}
    load_before = os.getloadavg()[0]
    for name, description in TEST_SETS.items():
        utterances = read_manifest(manifests[name])[:limit]
        rows = {}
        plan = [(mode, overrides, utterances) for mode, overrides in modes.items()]
        if name == PEER_SET:  # the paper's naive setting, on a subset: 128 slots cost more
            paper = utterances[:PAPER_UTTERANCES]
            plan.append((f"{PAPER_MODE}, first {len(paper)}", PAPER_DECODE, paper))
        folders = [decode_dir / name / mode_folder(mode) for mode, _, _ in plan]
        if any(len(finished_ids(f)) < len(c) for f, (_, _, c) in zip(folders, plan, strict=True)):
            encoding[name] = fill_encoder_cache(
                decoder()[0], cfg, utterances, decode_dir / ENCODER_CACHE
            )
        for round_ in range(1, TIMING_ROUNDS + 1):  # every mode decodes its next share first
            for mode, overrides, chosen in plan:
                output_dir = decode_dir / name / mode_folder(mode)
                config, base, mode_decoder = runs.get(mode, runs[REFERENCE_MODE])
                where = [
                    f"inference.manifest={manifests[name]}",
                    f"inference.output_dir={output_dir}",
                ]
                mode_cfg = load_config(config, [*base, *overrides, *where])
                rows[mode] = decode_mode(
                    mode_decoder,
                    mode_cfg,
                    mode,
                    chosen,
                    output_dir,
                    desc=f"{name}: {mode} ({round_}/{TIMING_ROUNDS})",
                    first_pass_decoder=ar_decoder,
                    first=math.ceil(len(chosen) * round_ / TIMING_ROUNDS),
                )
        rows = list(rows.values())
        for row in rows:
            tqdm.write(f"{name}, {row.mode}: WER {row.wer:.2f} %", file=sys.stderr)
        if whisper_checkpoint is not None and name == PEER_SET:
            peer_fingerprint = {"checkpoint_sha256": file_sha256(whisper_checkpoint)}
            peer = utterances[:whisper_utterances]
            rows.append(
                whisper_peer.table_row(
                    whisper_checkpoint, peer, decode_dir / name, peer_fingerprint
                )
            )
            tqdm.write(f"{name}, {rows[-1].mode}: WER {rows[-1].wer:.2f} %", file=sys.stderr)
        results.append(SetResult(name, description, rows))
    about = About(
        model_dir=str(model_dir),
        checkpoint_sha256=fingerprint["checkpoint_sha256"],
        limit=limit,
        device=f"{device}, {torch.get_num_threads()} CPU thread(s)"
        if device.type == "cpu"
        else str(device),
        modes=modes,
        timing_rounds=TIMING_ROUNDS,
        encoder_cached=True,
        encoding=encoding,
        load_average=(load_before, os.getloadavg()[0]),
        ar_model_dir=None if ar is None else str(ar.model_dir),
        ar_checkpoint_sha256=None if ar is None else ar.fingerprint["checkpoint_sha256"],
    )
    paths = write_results(work_dir, results, about)
    print(paths["md"].read_text())
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return results


def default_ar_model(model_dir: Path) -> Path | None:
    """The folder beside `model_dir` named <model>_ar (models/demo_ar), None if there is none."""
    candidate = model_dir.parent / f"{model_dir.name}{AR_SUFFIX}"
    return candidate if candidate.exists() else None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    retraining = {
        "retrain": (
            "Retrain the demo model from nothing (resumable) and export it.",
            add_retrain_arguments,
            run_retrain,
        ),
        "retrain-ar": (
            "Train the demo's AR baseline from stage 1's projector (resumable) and export it.",
            add_retrain_ar_arguments,
            run_retrain_ar,
        ),
    }
    if argv[:1] and argv[0] in retraining:
        description, add_arguments, run = retraining[argv[0]]
        parser = argparse.ArgumentParser(
            prog=f"python -m recipes.demo {argv[0]}", description=description
        )
        add_arguments(parser)
        run(parser.parse_args(argv[1:]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m recipes.demo",
        description=__doc__.splitlines()[0],
        epilog="`python -m recipes.demo retrain --help`: retraining the model; "
        "`... retrain-ar --help`: training the AR baseline.",
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an exported model")
    parser.add_argument(
        "--ar-model",
        type=Path,
        default=None,
        help="an exported AR model for the AR and cascade rows (default: <model>_ar beside "
        "--model, e.g. models/demo_ar, when it exists; else no AR rows)",
    )
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
    parser.add_argument(
        "--whisper",
        type=Path,
        default=None,
        help="an openai-whisper checkpoint for the peer row (default: the Whisper tiny.en "
        f"setup.sh converts, {whisper_peer.DEFAULT_CHECKPOINT}, when it exists)",
    )
    parser.add_argument(
        "--whisper-utterances",
        type=int,
        default=whisper_peer.DEMO_UTTERANCES,
        help="the peer row decodes the first N utterances of test-clean (30 s padding costs "
        "about 1 s per clip here)",
    )
    args = parser.parse_args(argv)
    ar_model = args.ar_model if args.ar_model is not None else default_ar_model(args.model)
    whisper = args.whisper
    if whisper is None and whisper_peer.DEFAULT_CHECKPOINT.is_file():
        whisper = whisper_peer.DEFAULT_CHECKPOINT
    run_demo(
        args.model, args.work_dir, args.limit, args.threads, ar_model, whisper,
        args.whisper_utterances,
    )  # fmt: skip


if __name__ == "__main__":
    main()
