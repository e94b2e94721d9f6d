"""Tiny random models written to disk in the exact formats of the real checkpoints.

Every test and the demo build their models from these directories through the same loading
code that real users run on whisper-large-v3 and LLaDA-8B-Instruct.

    python -m whisper_llada.tiny_models OUT_DIR
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

TINY_WHISPER_WIDTH = 64
TINY_WHISPER_LAYERS = 2
TINY_WHISPER_HEADS = 4
TINY_N_MELS = 128
WHISPER_AUDIO_CONTEXT = 1500  # encoder frames for 30 s: 3000 mel frames / conv stride 2


def write_tiny_whisper(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random Whisper model in transformers' layout (WhisperForConditionalGeneration).

    The directory holds config.json, generation_config.json, model.safetensors and
    preprocessor_config.json, as a real `openai/whisper-large-v3` download does.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=128,
        num_mel_bins=TINY_N_MELS,
        d_model=TINY_WHISPER_WIDTH,
        encoder_layers=TINY_WHISPER_LAYERS,
        encoder_attention_heads=TINY_WHISPER_HEADS,
        encoder_ffn_dim=4 * TINY_WHISPER_WIDTH,
        decoder_layers=1,
        decoder_attention_heads=TINY_WHISPER_HEADS,
        decoder_ffn_dim=4 * TINY_WHISPER_WIDTH,
        max_source_positions=WHISPER_AUDIO_CONTEXT,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
    )
    model = WhisperForConditionalGeneration(config)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=TINY_N_MELS).save_pretrained(out_dir)
    return out_dir


def write_tiny_openai_whisper(path: str | Path, seed: int = 0) -> Path:
    """Write a random Whisper model as an openai-whisper `.pt` checkpoint ({dims, model_state_dict})."""
    from whisper.model import ModelDimensions, Whisper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dims = ModelDimensions(
        n_mels=TINY_N_MELS,
        n_audio_ctx=WHISPER_AUDIO_CONTEXT,
        n_audio_state=TINY_WHISPER_WIDTH,
        n_audio_head=TINY_WHISPER_HEADS,
        n_audio_layer=TINY_WHISPER_LAYERS,
        n_vocab=128,
        n_text_ctx=32,
        n_text_state=TINY_WHISPER_WIDTH,
        n_text_head=TINY_WHISPER_HEADS,
        n_text_layer=1,
    )
    model = Whisper(dims)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("whisper (transformers):", write_tiny_whisper(args.out_dir / "whisper", args.seed))
    print("whisper (openai .pt):", write_tiny_openai_whisper(args.out_dir / "whisper.pt", args.seed))


if __name__ == "__main__":
    main()
