"""Real-shape models with random weights: whisper-large-v3 and LLaDA-8B widths, layer counts overridable.

For parameter counts and shape checks on the meta device (no memory), and for benchmarks at the
true widths with fewer layers on a CPU, or at full depth on a GPU. No pretrained file is read.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from whisper_llada.build import apply_lora, build_projector
from whisper_llada.config import ModelConfig
from whisper_llada.ctc import CTCHead
from whisper_llada.llada import LLADA_8B, LLaDAModelLM
from whisper_llada.model import WhisperLLaDA
from whisper_llada.prompt import SpecialTokens

# Special token ids of GSAI-ML/LLaDA-8B-Instruct's tokenizer (shared/reference/llada_8b.md).
LLADA_8B_SPECIAL_TOKENS = SpecialTokens(
    bos=126080,
    eos=126081,
    pad=126081,
    mask=126336,
    eot=126348,
    start_header=126346,
    end_header=126347,
)
# Length of the chat-templated "Transcribe the audio:" prompt; the ids are placeholders with the
# right special tokens at the ends (only the length matters for shapes and timings).
PROMPT_LENGTH = 16


def whisper_large_v3_config(layers: int = 32) -> WhisperConfig:
    """transformers' config of the whisper-large-v3 encoder (128 mels, 1280 wide, 20 heads)."""
    return WhisperConfig(
        num_mel_bins=128,
        d_model=1280,
        encoder_layers=layers,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
        max_source_positions=1500,
        decoder_layers=1,
    )


def build_real_shape_model(
    cfg: ModelConfig,
    *,
    encoder_layers: int = 32,
    llm_layers: int = LLADA_8B.n_layers,
    device: str | torch.device = "meta",
) -> WhisperLLaDA:
    """The recogniser of `cfg` at the real widths with random weights (frozen parts in cfg.dtype)."""
    dtype = getattr(torch, cfg.dtype)
    llm_config = dataclasses.replace(LLADA_8B, n_layers=llm_layers)
    with torch.device(device):
        encoder = WhisperEncoder(whisper_large_v3_config(encoder_layers)).to(dtype)
        llada = LLaDAModelLM(llm_config).to(dtype)
        projector = build_projector(cfg, encoder.config.d_model, llm_config.d_model)
        ctc_head = (
            CTCHead(llm_config.d_model, bottleneck=cfg.ctc.bottleneck) if cfg.ctc.enabled else None
        )
    if cfg.lora.r > 0:
        llada = apply_lora(llada, cfg)
    special = LLADA_8B_SPECIAL_TOKENS
    prompt = [special.bos] + [special.start_header] * (PROMPT_LENGTH - 2) + [special.end_header]
    model = WhisperLLaDA(
        encoder,
        projector,
        llada,
        prompt,
        special,
        ctc_head=ctc_head,
        train_encoder=cfg.train_encoder,
    )
    return model.to(device)
