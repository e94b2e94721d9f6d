"""build_model: the one place that loads pretrained weights, sets special tokens and applies LoRA."""

from __future__ import annotations

import peft
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from whisper_llada.config import ModelConfig
from whisper_llada.ctc import CTCHead
from whisper_llada.encoder import load_whisper_encoder
from whisper_llada.llada_checkpoint import load_llada
from whisper_llada.model import WhisperLLaDA
from whisper_llada.projector import WHISPER_FRAME_RATE, ConvAdapter, FrameStackMLP
from whisper_llada.prompt import load_tokenizer, prompt_ids, special_tokens
from whisper_llada.qformer import WindowQFormer


def lora_target_regex(targets: tuple[str, ...]) -> str:
    """peft target pattern restricted to the transformer blocks.

    A plain name list would also wrap the 126464-row output head, which LLaDA calls `ff_out`
    like the blocks' down projection.
    """
    return rf"model\.transformer\.blocks\.\d+\.({'|'.join(targets)})"


def build_projector(cfg: ModelConfig, encoder_width: int, llm_width: int) -> nn.Module:
    if cfg.projector == "qformer":
        q = cfg.qformer
        return WindowQFormer(
            encoder_width,
            llm_width,
            frame_rate=WHISPER_FRAME_RATE,
            second_per_window=q.second_per_window,
            second_stride=q.second_stride,
            num_queries=q.num_queries,
            num_layers=q.num_layers,
            hidden=q.hidden,
            num_heads=q.num_heads,
            ffn=q.ffn,
            dropout=q.dropout,
        )
    if cfg.projector == "conv_adapter":
        c = cfg.conv_adapter
        return ConvAdapter(
            encoder_width, llm_width, pool=c.pool, kernel=c.kernel, stride=c.stride, hidden=c.hidden
        )
    s = cfg.frame_stack
    return FrameStackMLP(encoder_width, llm_width, stack=s.stack, hidden=s.hidden)


def apply_lora(llada: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Wrap LLaDA with peft LoRA (adapter factors in float32, base frozen)."""
    lora = peft.LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=lora_target_regex(cfg.lora.targets),
        bias="none",
    )
    return peft.get_peft_model(llada, lora, autocast_adapter_dtype=True)


def build_model(
    cfg: ModelConfig, *, device: str | torch.device = "cpu"
) -> tuple[WhisperLLaDA, PreTrainedTokenizerFast]:
    """Load Whisper and LLaDA from their directories and assemble the recogniser.

    Returns the model (eval mode; call `.train()` to train) and the LLaDA tokenizer.
    """
    dtype = getattr(torch, cfg.dtype)
    encoder_dtype = torch.float32 if cfg.train_encoder else dtype
    encoder = load_whisper_encoder(cfg.whisper_path, dtype=encoder_dtype, device=device)
    llada = load_llada(
        cfg.llada_path, dtype=torch.float32 if cfg.train_llm else dtype, device=device
    )
    tokenizer = load_tokenizer(cfg.llada_path)
    special = special_tokens(tokenizer, llada.config)
    if cfg.gradient_checkpointing:
        llada.enable_gradient_checkpointing()
    projector = build_projector(cfg, encoder.config.d_model, llada.config.d_model).to(device)
    ctc_head = None
    if cfg.ctc.enabled:
        ctc_head = CTCHead(llada.config.d_model, bottleneck=cfg.ctc.bottleneck).to(device)
    if cfg.lora.r > 0:
        llada = apply_lora(llada, cfg)
    model = WhisperLLaDA(
        encoder,
        projector,
        llada,
        prompt_ids(tokenizer, cfg.prompt),
        special,
        ctc_head=ctc_head,
        train_encoder=cfg.train_encoder,
        train_llm=cfg.train_llm,
    )
    return model.to(device), tokenizer


def merge_lora(model: WhisperLLaDA) -> WhisperLLaDA:
    """Fold the LoRA factors into the LLM weights for faster inference (no-op without LoRA)."""
    if isinstance(model.llada, peft.PeftModel):
        model.llada = model.llada.merge_and_unload()
    return model
