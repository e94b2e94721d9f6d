"""Export a trained model as standalone directories: fine-tuned weights baked into the real formats.

A training checkpoint holds only the trainable tensors; the rest comes from the pretrained
directories. When training changed the encoder (`train_encoder`) or the LLM (`train_llm`, or LoRA),
`export_model` writes those back in their own formats, so the result loads like any pretrained
model and its checkpoint shrinks to the projector and CTC head (if any):

    <out>/whisper/            transformers Whisper layout, the trained encoder (a frozen one is
                              not copied: the config keeps its model.whisper_path and the
                              metadata its weights' sha256, `encoder_sha256`, checked on load)
    <out>/llada/              LLaDA-8B-Instruct layout (LoRA merged), tokenizer files copied
    <out>/llama/              instead, for the causal baseline (model.llm=llama): transformers layout
    <out>/checkpoint.safetensors   projector + CTC head, the export config and metadata
    <out>/config.yaml         the config that decodes it (paths relative to <out>, so it moves)

    python -m whisper_llada.models.export TRAIN_CONFIG CHECKPOINT OUT_DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import yaml

from whisper_llada.config import PATH_KEYS, Config, load_config
from whisper_llada.config_paths import absolute_under, map_paths, relative_to
from whisper_llada.config_strict import to_dict
from whisper_llada.model_parts_config import LoraConfig
from whisper_llada.models.build import build_model, merge_lora
from whisper_llada.models.checkpoint import load_checkpoint, save_checkpoint
from whisper_llada.models.encoder import encoder_weights_sha256
from whisper_llada.models.llada_checkpoint import save_llada
from whisper_llada.models.speech_llm import SpeechLLM
from whisper_llada.utils.atomic_write import write_text_atomically

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
MAX_SHARD_BYTES = 5 * 1024**3  # LLaDA-8B-Instruct's shard size


def export_model(
    model: SpeechLLM, cfg: Config, out_dir: str | Path, *, metadata: dict[str, Any]
) -> Path:
    """Write `model` (trained under `cfg`) to `out_dir` as described in the module docstring.

    Returns the written config.yaml. Its model section points at the exported directories with
    the encoder and LLM frozen and no LoRA, so the checkpoint's strict load expects exactly the
    projector and CTC head. Everything is written beside `out_dir` first, then replaces it as a
    whole: nothing of an earlier export there (e.g. its whisper/) survives.
    """
    from transformers import WhisperForConditionalGeneration

    final = Path(out_dir).absolute()
    out_dir = final.parent / f".{final.name}.partial"  # written here, then renamed to `final`
    shutil.rmtree(out_dir, ignore_errors=True)  # left by an interrupted export
    model = merge_lora(model)
    whisper_path = cfg.model.whisper_path
    if cfg.model.train_encoder:
        whisper = WhisperForConditionalGeneration.from_pretrained(whisper_path)
        whisper.model.encoder.load_state_dict(model.encoder.state_dict())
        whisper.save_pretrained(out_dir / "whisper")
        shutil.copy(Path(whisper_path) / "preprocessor_config.json", out_dir / "whisper")
        whisper_path = str(final / "whisper")
    else:
        metadata = {**metadata, "encoder_sha256": encoder_weights_sha256(model.encoder)}
    llm_dir = out_dir / cfg.model.llm
    if cfg.model.llm == "llama":
        model.llm.save_pretrained(llm_dir)
        source, paths = Path(cfg.model.llama_path), {"llama_path": str(final / "llama")}
    else:
        save_llada(model.llm, llm_dir, max_shard_bytes=MAX_SHARD_BYTES)
        source, paths = Path(cfg.model.llada_path), {"llada_path": str(final / "llada")}
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, llm_dir / name)
    model_cfg = dataclasses.replace(
        cfg.model,
        whisper_path=whisper_path,
        **paths,
        train_encoder=False,
        train_llm=False,
        lora=LoraConfig(r=0),
    )
    exported = dataclasses.replace(
        cfg,
        model=model_cfg,
        inference=dataclasses.replace(
            cfg.inference, checkpoint=str(final / "checkpoint.safetensors")
        ),
    )
    written = to_dict(exported)  # its paths relative to the export (config_paths), defaults too
    map_paths(written, PATH_KEYS, absolute_under(Path.cwd()))
    map_paths(written, PATH_KEYS, relative_to(final))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(("projector.", "ctc_head.")))
    save_checkpoint(model, out_dir / "checkpoint.safetensors", config=written, metadata=metadata)
    write_text_atomically(out_dir / "config.yaml", yaml.safe_dump(written, sort_keys=False))
    shutil.rmtree(final, ignore_errors=True)
    out_dir.rename(final)
    return final / "config.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the training config (e.g. <train output>/config.yaml)")
    parser.add_argument("checkpoint", help="a checkpoint train.py wrote under that config")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    cfg = load_config(args.config)
    model, _ = build_model(cfg.model)
    metadata = load_checkpoint(model, args.checkpoint)
    print(export_model(model, cfg, args.out_dir, metadata=metadata))


if __name__ == "__main__":
    main()
