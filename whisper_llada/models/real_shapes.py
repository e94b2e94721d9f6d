"""Real-shape models with random weights: whisper-large-v3, LLaDA-8B and Llama-3-8B widths, layer counts overridable.

For parameter counts and shape checks on the meta device (no memory), and for benchmarks at the
true widths with fewer layers on a CPU, or at full depth on a GPU. No pretrained file is read.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from whisper_llada.config import ModelConfig
from whisper_llada.models.build import apply_lora, build_projector
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.ctc import CTCHead
from whisper_llada.models.llada import LLaDAModelLM
from whisper_llada.models.llada_config import LLADA_8B
from whisper_llada.models.llama import CausalTokens, llama_lora_target_regex
from whisper_llada.models.prompt import SpecialTokens
from whisper_llada.models.speech_llm import WhisperLLaDA

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
# Special token ids of Meta-Llama-3-8B-Instruct's tokenizer: <|begin_of_text|>, <|end_of_text|>
# (also the padding, Llama-3 has none), <|eot_id|>.
LLAMA_3_8B_SPECIAL_TOKENS = CausalTokens(bos=128000, eos=128001, eot=128009, pad=128001)
LLAMA_3_START_HEADER, LLAMA_3_END_HEADER = 128006, 128007
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


def llama_3_8b_config(layers: int = 32) -> LlamaConfig:
    """transformers' config of Meta-Llama-3-8B(-Instruct): 4096 wide, 32 heads of which 8 key/value, MLP 14336."""
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=LLAMA_3_8B_SPECIAL_TOKENS.bos,
        eos_token_id=LLAMA_3_8B_SPECIAL_TOKENS.eos,
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
        llada = LLaDAModelLM(llm_config).to(dtype)
    if cfg.lora.r > 0:
        llada = apply_lora(llada, cfg)
    special = LLADA_8B_SPECIAL_TOKENS
    prompt = [special.bos] + [special.start_header] * (PROMPT_LENGTH - 2) + [special.end_header]
    encoder, projector, ctc_head = _audio_parts(cfg, encoder_layers, llm_config.d_model, device)
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


def build_real_shape_llama_model(
    cfg: ModelConfig,
    *,
    encoder_layers: int = 32,
    llm_layers: int = 32,
    device: str | torch.device = "meta",
) -> WhisperLLaMA:
    """The autoregressive baseline of `cfg` (model.llm=llama) with a Llama-3-8B-shaped LLM, random weights."""
    dtype = getattr(torch, cfg.dtype)
    with torch.device(device):
        llama = LlamaForCausalLM(llama_3_8b_config(llm_layers)).to(dtype)
    if cfg.lora.r > 0:
        llama = apply_lora(llama, cfg, llama_lora_target_regex(cfg.lora.targets))
    special = LLAMA_3_8B_SPECIAL_TOKENS
    prompt = [special.bos] + [LLAMA_3_START_HEADER] * (PROMPT_LENGTH - 2) + [LLAMA_3_END_HEADER]
    encoder, projector, ctc_head = _audio_parts(cfg, encoder_layers, 4096, device)
    model = WhisperLLaMA(
        encoder,
        projector,
        llama,
        prompt,
        special,
        ctc_head=ctc_head,
        train_encoder=cfg.train_encoder,
    )
    return model.to(device)


def _audio_parts(
    cfg: ModelConfig, encoder_layers: int, width: int, device: str | torch.device
) -> tuple[WhisperEncoder, nn.Module, CTCHead | None]:
    """The whisper-large-v3 encoder (in cfg.dtype), the projector to `width` and the CTC head of `cfg`."""
    with torch.device(device):
        encoder = WhisperEncoder(whisper_large_v3_config(encoder_layers)).to(
            getattr(torch, cfg.dtype)
        )
        projector = build_projector(cfg, encoder.config.d_model, width)
        ctc_head = (
            CTCHead(width, bottleneck=cfg.ctc.bottleneck, head_only=cfg.ctc.gradient == "head_only")
            if cfg.ctc.enabled
            else None
        )
    return encoder, projector, ctc_head
