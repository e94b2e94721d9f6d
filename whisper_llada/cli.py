"""The `whisper-llada` command: transcribe files, decode a manifest, score results, run the demo.

    whisper-llada transcribe a.wav b.flac --model models/demo --mode prior_guided --threshold 0.9
    whisper-llada decode configs/decode/decoding.yaml inference.manifest=test.jsonl
    whisper-llada score exp/decode/results.jsonl
    whisper-llada demo [retrain | retrain-ar] ...

`transcribe` is the Python API (`whisper_llada.load_model(...).transcribe`) on the command line:
one line `<file>: <text>` per input on stdout, in order; with --output_dir also <stem>.txt and /
or <stem>.json per input. An input that cannot be read is reported on stderr and the others are
decoded; the exit code is then 1. `decode` is inference.py, `score` is
`whisper_llada.evaluation.score`; `demo` runs the repository's recipe (`python -m recipes.demo`),
so it needs a checkout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import get_args, get_type_hints

from whisper_llada.config import DecodeConfig
from whisper_llada.config_strict import ConfigError
from whisper_llada.utils.atomic_write import write_text_atomically

PROG = "whisper-llada"
MODES = get_args(get_type_hints(DecodeConfig)["mode"])
OUTPUT_FORMATS = {"txt": ("txt",), "json": ("json",), "all": ("txt", "json")}
DEMO_RECIPE = Path("recipes") / "demo"  # under the working directory: a checkout
# Options of `transcribe` that set a decode key (whisper's names where whisper has the setting).
DECODE_OPTIONS = {
    "steps": ("steps", int, "denoising steps (diffusion modes)"),
    "gen_len": ("gen_len", int, "answer slots of the diffusion canvas"),
    "threshold": ("threshold", float, "confidence-threshold commits (dLLM-ASR's tau)"),
    "temperature": ("temperature", float, "sampling temperature (0: greedy)"),
    "beam_size": ("num_beams", int, "beams of the autoregressive mode (1: greedy)"),
}


def transcribe_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} transcribe",
        description="Transcribe audio files with a trained model, in any decoding mode.",
    )
    parser.add_argument("audio", nargs="+", help="audio files (any format soundfile reads)")
    parser.add_argument(
        "--model",
        required=True,
        help="an exported model folder (models/demo) or a config YAML (configs/tiny.yaml)",
    )
    parser.add_argument("--checkpoint", help="trainable weights (default: the config's)")
    parser.add_argument("--mode", choices=MODES, help="decoding mode (default: the config's)")
    parser.add_argument(
        "--first_pass",
        choices=("ctc", "model"),
        help="where deliberation and prior-guided decoding get their first pass: the model's "
        "CTC draft, or a first-pass model (inference.first_pass_config); default: ctc where "
        "the config reads it from a manifest",
    )
    for option, (_, kind, help_text) in DECODE_OPTIONS.items():
        parser.add_argument(f"--{option}", type=kind, help=f"{help_text} (default: the config's)")
    parser.add_argument("--device", help='"cpu", "cuda", ... (default: the config\'s)')
    parser.add_argument("--batch_size", type=int, help="inputs per batch (default: the config's)")
    parser.add_argument("--output_dir", type=Path, help="also write one file per input here")
    parser.add_argument(
        "--output_format", choices=OUTPUT_FORMATS, default="txt", help="(default: txt)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set decode.prune=first_pass (repeatable)",
    )
    parser.add_argument(
        "--no_progress", action="store_true", help="no progress bar (shown on a terminal)"
    )
    return parser


def transcribe(argv: Sequence[str]) -> int:
    """`whisper-llada transcribe`; its exit code (1 when an input could not be decoded)."""
    args = transcribe_parser().parse_args(argv)
    outputs = output_paths(args.audio, args.output_dir, OUTPUT_FORMATS[args.output_format])
    # torch and the models only past the usage checks
    from whisper_llada.api import load_model
    from whisper_llada.decoding.recognize import reads_manifest_first_pass

    decode = {key: getattr(args, option) for option, (key, _, _) in DECODE_OPTIONS.items()}
    decode = {key: value for key, value in decode.items() if value is not None}
    if args.mode is not None:
        decode["mode"] = args.mode
    try:
        model = load_model(
            args.model, args.checkpoint, overrides=args.overrides, device=args.device
        )
        cfg = model.decode_config(**decode)
        if args.first_pass is not None:
            decode["first_pass"] = args.first_pass
        elif reads_manifest_first_pass(cfg.decode):  # a command line has no manifest
            decode["first_pass"] = "ctc"
        transcripts = model.transcribe(
            args.audio, batch_size=args.batch_size, progress=not args.no_progress, **decode
        )
    except (ConfigError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"{PROG} transcribe: {error}") from None
    failed = 0
    for transcript, paths in zip(transcripts, outputs, strict=True):
        if transcript.error is not None:
            failed += 1
            print(f"{transcript.source}: error: {transcript.error}", file=sys.stderr)
            continue
        print(f"{transcript.source}: {transcript.text}", flush=True)
        for path in paths:
            text = (
                json.dumps(asdict(transcript), indent=2)
                if path.suffix == ".json"
                else transcript.text
            )
            write_text_atomically(path, text + "\n")
    if failed:
        print(f"{failed} of {len(transcripts)} input(s) not decoded", file=sys.stderr)
    return 1 if failed else 0


def output_paths(
    audio: Sequence[str], output_dir: Path | None, formats: Sequence[str]
) -> list[list[Path]]:
    """Per input, the files --output_dir gets (<stem>.<format>); none without it.

    Raises:
        SystemExit: two inputs with one stem (they would write the same file).
    """
    if output_dir is None:
        return [[] for _ in audio]
    stems: dict[str, str] = {}
    for source in audio:
        stem = Path(source).stem
        if stem in stems:
            raise SystemExit(
                f"{PROG} transcribe: {stems[stem]} and {source} would both write "
                f"{output_dir / stem}.*: give them other names, or leave out --output_dir"
            )
        stems[stem] = source
    return [[output_dir / f"{Path(source).stem}.{f}" for f in formats] for source in audio]


def demo(argv: Sequence[str]) -> int:
    """`whisper-llada demo ...`: `python -m recipes.demo ...` in this checkout; its exit code."""
    if not (Path.cwd() / DEMO_RECIPE / "__main__.py").is_file():
        raise SystemExit(
            f"{PROG} demo runs the repository's recipe {DEMO_RECIPE}/ (python -m recipes.demo), "
            f"and {Path.cwd()} holds none: run it from a checkout of whisper-llada"
        )
    return subprocess.run([sys.executable, "-m", "recipes.demo", *argv]).returncode


def decode(argv: list[str]) -> int:
    """`whisper-llada decode CONFIG [overrides]`: inference.py."""
    from whisper_llada.evaluation import inference

    inference.main(argv, prog=f"{PROG} decode")
    return 0


def score(argv: list[str]) -> int:
    """`whisper-llada score RESULTS ...`: `whisper_llada.evaluation.score`."""
    from whisper_llada.evaluation import score as scoring

    scoring.main(argv, prog=f"{PROG} score")
    return 0


# name -> (what it does, its function: arguments -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "transcribe": ("transcribe audio files with a trained model", transcribe),
    "decode": ("decode a test-set manifest from a YAML config, resumable (inference.py)", decode),
    "score": ("score results files: WER with S/D/I per test set", score),
    "demo": ("the README's main job, in a checkout (python -m recipes.demo)", demo),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]][1](argv[1:])
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Speech recognition with diffusion language models (Whisper-LLaDA, dLLM-ASR).",
        epilog=f"`{PROG} COMMAND --help` describes a command.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        commands.add_parser(name, help=help_text)
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    parser.parse_args(argv)  # --help, or an unknown command: exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
