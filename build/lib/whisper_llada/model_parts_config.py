"""Settings of the recogniser's parts: the three projectors, LoRA and the CTC prior head (`ModelConfig`'s sections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class QFormerConfig:
    second_per_window: float = 0.333333
    second_stride: float = 0.333333
    num_queries: int = 4
    num_layers: int = 2
    hidden: int = 768
    num_heads: int = 12
    ffn: int = 3072
    dropout: float = 0.1


@dataclass(frozen=True)
class ConvAdapterConfig:
    pool: int = 2  # Whisper's 50 Hz -> 25 Hz, the rate dLLM-ASR's encoder runs at
    kernel: int = 3
    stride: int = 2  # 25 Hz -> 12.5 Hz
    hidden: int = 2048


@dataclass(frozen=True)
class FrameStackConfig:
    stack: int = 5
    hidden: int = 2048


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8  # 0 disables LoRA (the LLM stays fully frozen)
    alpha: int = 32
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class CTCConfig:
    enabled: bool = False
    weight: float = 0.3  # joint loss = diffusion + weight * CTC
    bottleneck: int | None = None
    # What the CTC loss trains. "shared" (dLLM-ASR): the head and everything below it, the
    # projector (and the encoder and token embeddings, when they are trainable). Ours,
    # "head_only": the head alone; the audio vectors and the embeddings it scores against are
    # constants to it, so only the LLM's loss shapes the projector (with a small LLM trained from
    # random, a shared CTC loss keeps it from listening: docs/demo_results.md).
    gradient: Literal["shared", "head_only"] = "shared"
