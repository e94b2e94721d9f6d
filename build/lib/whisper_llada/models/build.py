"""build_model: the one place that loads pretrained weights, sets special tokens and applies LoRA."""

from __future__ import annotations

import peft
import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from whisper_llada.config import ModelConfig
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.ctc import CTCHead
from whisper_llada.models.encoder import load_whisper_encoder
from whisper_llada.models.llada_checkpoint import load_llada
from whisper_llada.models.llama import (
    causal_tokens,
    check_llama_dir,
    llama_lora_target_regex,
    load_llama,
    load_llama_tokenizer,
)
from whisper_llada.models.projector import (
    WHISPER_FRAME_RATE,
    ConvAdapter,
    FrameStackMLP,
    RMSNormedProjector,
)
from whisper_llada.models.prompt import load_tokenizer, prompt_ids, special_tokens
from whisper_llada.models.qformer import WindowQFormer
from whisper_llada.models.speech_llm import SpeechLLM, WhisperLLaDA


def lora_target_regex(targets: tuple[str, ...]) -> str:
    """peft target pattern restricted to the transformer blocks.

    A plain name list would also wrap the 126464-row output head, which LLaDA calls `ff_out`
    like the blocks' down projection.
    """
    return rf"model\.transformer\.blocks\.\d+\.({'|'.join(targets)})"


def build_projector(
    cfg: ModelConfig, encoder_width: int, llm_width: int, *, token_rms: float = 1.0
) -> nn.Module:
    """The projector of `cfg.projector`, wrapped by `cfg.audio_norm` ("rms": gain starts at token_rms)."""
    projector = _bare_projector(cfg, encoder_width, llm_width)
    if cfg.audio_norm == "none":
        return projector
    return RMSNormedProjector(projector, llm_width, token_rms)


def token_embedding_rms(llm: nn.Module) -> float:
    """RMS of the LLM's input token embeddings, the scale audio_norm=rms starts at."""
    return float(llm.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())


def _bare_projector(cfg: ModelConfig, encoder_width: int, llm_width: int) -> nn.Module:
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


def apply_lora(llm: nn.Module, cfg: ModelConfig, target_regex: str | None = None) -> nn.Module:
    """Wrap the LLM with peft LoRA (adapter factors in float32, base frozen).

    `target_regex`: the modules to adapt; default: LLaDA's blocks (`lora_target_regex`).
    """
    lora = peft.LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=target_regex or lora_target_regex(cfg.lora.targets),
        bias="none",
    )
    return peft.get_peft_model(llm, lora, autocast_adapter_dtype=True)


def build_model(
    cfg: ModelConfig, *, device: str | torch.device = "cpu"
) -> tuple[SpeechLLM, PreTrainedTokenizerFast]:
    """Load Whisper and the LLM of `cfg.llm` from their directories and assemble the recogniser.

    Returns the model (eval mode; call `.train()` to train): `WhisperLLaDA` for model.llm=llada,
    `WhisperLLaMA` for model.llm=llama; and the LLM's tokenizer.
    """
    dtype = getattr(torch, cfg.dtype)
    encoder_dtype = torch.float32 if cfg.train_encoder else dtype
    llm_dtype = torch.float32 if cfg.train_llm else dtype
    if cfg.llm == "llama":
        check_llama_dir(cfg.llama_path)  # a wrong path stops before the slow encoder load
    encoder = load_whisper_encoder(cfg.whisper_path, dtype=encoder_dtype, device=device)
    if cfg.llm == "llama":
        return _build_whisper_llama(cfg, encoder, llm_dtype, device)
    llada = load_llada(cfg.llada_path, dtype=llm_dtype, device=device)
    tokenizer = load_tokenizer(cfg.llada_path)
    special = special_tokens(tokenizer, llada.config)
    if cfg.gradient_checkpointing:
        llada.enable_gradient_checkpointing()
    projector = build_projector(
        cfg, encoder.config.d_model, llada.config.d_model, token_rms=token_embedding_rms(llada)
    ).to(device)
    ctc_head = None
    if cfg.ctc.enabled:
        ctc_head = CTCHead(
            llada.config.d_model,
            bottleneck=cfg.ctc.bottleneck,
            head_only=cfg.ctc.gradient == "head_only",
        ).to(device)
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
        answer_stride=(
            cfg.audio_vectors_per_token if cfg.answer_positions == "audio_aligned" else None
        ),
    )
    return model.to(device), tokenizer


def _build_whisper_llama(
    cfg: ModelConfig, encoder: nn.Module, llm_dtype: torch.dtype, device: str | torch.device
) -> tuple[WhisperLLaMA, PreTrainedTokenizerFast]:
    """The causal baseline: `LlamaForCausalLM` from model.llama_path, its tokenizer, LoRA."""
    llama = load_llama(cfg.llama_path, dtype=llm_dtype, device=device)
    tokenizer = load_llama_tokenizer(cfg.llama_path)
    special = causal_tokens(tokenizer)
    if cfg.gradient_checkpointing:
        llama.gradient_checkpointing_enable()
    width = llama.config.hidden_size
    projector = build_projector(
        cfg, encoder.config.d_model, width, token_rms=token_embedding_rms(llama)
    ).to(device)
    ctc_head = None
    if cfg.ctc.enabled:
        ctc_head = CTCHead(
            width, bottleneck=cfg.ctc.bottleneck, head_only=cfg.ctc.gradient == "head_only"
        ).to(device)
    if cfg.lora.r > 0:
        llama = apply_lora(llama, cfg, llama_lora_target_regex(cfg.lora.targets))
    model = WhisperLLaMA(
        encoder,
        projector,
        llama,
        prompt_ids(tokenizer, cfg.prompt),
        special,
        ctc_head=ctc_head,
        train_encoder=cfg.train_encoder,
        train_llm=cfg.train_llm,
    )
    return model.to(device), tokenizer


def merge_lora(model: SpeechLLM) -> SpeechLLM:
    """Fold the LoRA factors into the LLM weights for faster inference (no-op without LoRA)."""
    if isinstance(model.llm, peft.PeftModel):
        setattr(model, model.llm_attribute, model.llm.merge_and_unload())
    return model
