"""Native LLaDA: the bidirectional masked-diffusion transformer with the official parameter names.

transformers has no LLaDA and the checkpoint's remote code does not run on transformers 5, so this
module re-implements the GSAI-ML/LLaDA-8B-Instruct forward pass with the checkpoint's parameter
names (its config.json: `llada_config.py`; loading and saving checkpoint directories:
`llada_checkpoint.py`).

Dimensions: B batch, L text tokens (positions run through this call), P prefix tokens held in a
`PrefixCache`, K positions whose logits are asked for, D width, V vocabulary rows, H query heads,
H_kv key/value heads, hd head width (D / H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from whisper_llada.models.llada_config import LLaDAConfig


@dataclass(frozen=True)
class LLaDAOutput:
    """logits (B, L or K, V); hidden_states: embeddings then every block output, each (B, L, D)."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass(frozen=True)
class PrefixCache:
    """Per-layer keys/values of a fixed prefix (e.g. prompt + speech), computed once.

    keys / values: one (B, H_kv, P, hd) tensor per layer, rotary already applied.
    mask: (B, P) bool, True = real token. lengths: (B,) real tokens per row.
    next_positions: (B,) rotary position that follows each row's last real prefix token.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    mask: torch.Tensor
    lengths: torch.Tensor
    next_positions: torch.Tensor

    def select(self, rows: torch.Tensor) -> PrefixCache:
        """The cache of a subset of rows (R,) of the batch, e.g. the rows still decoding."""
        return PrefixCache(
            keys=tuple(k[rows] for k in self.keys),
            values=tuple(v[rows] for v in self.values),
            mask=self.mask[rows],
            lengths=self.lengths[rows],
            next_positions=self.next_positions[rows],
        )


class RMSNorm(nn.Module):
    """LLaDA's RMSNorm: normalise in float32, cast back to the input dtype, then scale."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def rotary_tables(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (B, 1, L, hd) in float32 for positions (B, L); angles duplicated."""
    exponents = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponents / head_dim))
    angles = position_ids.float()[..., None] * inv_freq  # (B, L, hd / 2)
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # (B, 1, L, hd)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, L, hd) the "rotate half" way, in float32 (rope_full_precision)."""
    x32 = x.float()
    first, second = x32.chunk(2, dim=-1)
    rotated_half = torch.cat((-second, first), dim=-1)
    return (x32 * cos + rotated_half * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """One pre-norm llama-style block: bidirectional attention, then a SwiGLU feed-forward."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        width, kv_width = config.d_model, config.n_kv_heads * config.head_dim
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.attn_norm = RMSNorm(width, config.rms_norm_eps)
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, kv_width, bias=False)
        self.v_proj = nn.Linear(width, kv_width, bias=False)
        self.attn_out = nn.Linear(width, width, bias=False)
        self.ff_norm = RMSNorm(width, config.rms_norm_eps)
        self.ff_proj = nn.Linear(width, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(width, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, width, bias=False)

    def forward(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        prefix_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (B, L, D) -> (new h (B, L, D), own keys and values (B, H_kv, L, hd) after rotary).

        key_mask: (B, 1, 1, P + L) or (B, 1, 1, L) bool, True = attend; None = attend to all.
        """
        batch, length, width = h.shape
        a = self.attn_norm(h)
        q = self.q_proj(a).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(a).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(a).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, H or H_kv, L, hd)
        keys, values = k, v
        if prefix_kv is not None:
            keys = torch.cat((prefix_kv[0], k), dim=2)  # (B, H_kv, P + L, hd)
            values = torch.cat((prefix_kv[1], v), dim=2)
        if self.n_kv_heads < self.n_heads:
            group = self.n_heads // self.n_kv_heads  # query heads sharing one key/value head
            keys = keys.repeat_interleave(group, dim=1)  # (B, H, P + L, hd)
            values = values.repeat_interleave(group, dim=1)
        att = F.scaled_dot_product_attention(q, keys, values, attn_mask=key_mask)  # no causal mask
        att = att.transpose(1, 2).reshape(batch, length, width)  # (B, L, D)
        h = h + self.attn_out(att)
        m = self.ff_norm(h)
        h = h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))
        return h, k, v


class LLaDAModel(nn.Module):
    """The LLaDA body; exists so parameter names read `model.transformer.*` as in the checkpoint."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
                "ff_out": nn.Linear(config.d_model, config.vocab_size, bias=False),
            }
        )


class LLaDAModelLM(nn.Module):
    """LLaDA mask predictor: token ids or embeddings (B, L) in, logits (B, L, V) out.

    Attention is fully bidirectional. Rotary tables are computed per call (never buffers), so the
    state dict holds exactly the checkpoint's 9 * n_layers + 3 weights. `config` is the
    `LLaDAConfig`; its `to_dict()` is what peft reads.
    """

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LLaDAModel(config)
        self.gradient_checkpointing = False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward while training (activation memory for compute)."""
        self.gradient_checkpointing = enabled

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        prefix: PrefixCache | None = None,
        logits_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> LLaDAOutput:
        """Logits for a canvas.

        Args:
            input_ids: (B, L) long, or inputs_embeds: (B, L, D) in the model dtype (exactly one).
            attention_mask: (B, L) bool key-padding mask, True = real token; None = all real.
            position_ids: (B, L) long rotary positions; default 0..L-1, or after a prefix
                `prefix.next_positions + 0..L-1`.
            prefix: a cache from `build_prefix_cache`; the L new positions attend to
                [prefix keys ; own keys]. Exact for a 1-layer model; with more layers it is an
                approximation, because the cached prefix states never saw these new tokens.
            logits_positions: (B, K) long; logits only at these positions (None = all L).
            output_hidden_states: also return the embeddings and each block output (B, L, D).

        Returns:
            LLaDAOutput with logits (B, L or K, V).
        """
        h = self._embed(input_ids, inputs_embeds)  # (B, L, D)
        batch, length = h.shape[:2]
        if position_ids is None:
            offset = prefix.next_positions[:, None] if prefix is not None else 0
            position_ids = offset + torch.arange(length, device=h.device).expand(batch, length)
        _check_shape("position_ids", position_ids, (batch, length))
        key_mask = _key_mask(attention_mask, prefix, batch, length, h.device)
        h, hidden, _ = self._run_blocks(
            h, position_ids, key_mask, prefix, keep_hidden=output_hidden_states
        )
        if logits_positions is not None:
            _check_shape("logits_positions", logits_positions, (batch, logits_positions.shape[1]))
            index = logits_positions[..., None].expand(-1, -1, h.shape[-1])  # (B, K, D)
            h = h.gather(1, index)  # (B, K, D)
        transformer = self.model.transformer
        logits = transformer.ff_out(transformer.ln_f(h))  # (B, L or K, V)
        return LLaDAOutput(logits=logits, hidden_states=tuple(hidden) if hidden else None)

    def build_prefix_cache(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> PrefixCache:
        """Run a prefix (B, P) alone and keep every layer's keys and values (dLLM-ASR's cache).

        Arguments as in `forward` (P in place of L). Later `forward(..., prefix=cache)` calls
        reuse them: exact for a 1-layer model (layer-0 keys/values depend only on the prefix
        embeddings), an approximation for deeper ones (see `forward`).
        """
        h = self._embed(input_ids, inputs_embeds)  # (B, P, D)
        batch, length = h.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(length, device=h.device).expand(batch, length)
        _check_shape("position_ids", position_ids, (batch, length))
        real = attention_mask
        if real is None:
            real = torch.ones(batch, length, dtype=torch.bool, device=h.device)
        key_mask = _key_mask(real, None, batch, length, h.device)
        _, _, kv = self._run_blocks(h, position_ids, key_mask, None, keep_kv=True)
        last_position = torch.where(real, position_ids, position_ids.new_tensor(-1)).amax(dim=1)
        return PrefixCache(
            keys=tuple(k for k, _ in kv),
            values=tuple(v for _, v in kv),
            mask=real,
            lengths=real.sum(dim=1),
            next_positions=last_position + 1,
        )

    def _embed(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, L) or inputs_embeds (B, L, D)")
        if input_ids is not None:
            return self.model.transformer.wte(input_ids)  # (B, L, D)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.d_model:
            shape = tuple(inputs_embeds.shape)
            raise ValueError(f"inputs_embeds must be (B, L, {self.config.d_model}); got {shape}")
        return inputs_embeds

    def _run_blocks(self, h, position_ids, key_mask, prefix, keep_hidden=False, keep_kv=False):
        """Run every block: (h, [embeddings, block outputs] or [], [(k, v) per layer] or [])."""
        cos, sin = rotary_tables(position_ids, self.config.head_dim, self.config.rope_theta)
        hidden, kv = [h] if keep_hidden else [], []
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.model.transformer.blocks):
            prefix_kv = None if prefix is None else (prefix.keys[index], prefix.values[index])
            if checkpointing:
                h, k, v = checkpoint(block, h, cos, sin, key_mask, prefix_kv, use_reentrant=False)
            else:
                h, k, v = block(h, cos, sin, key_mask, prefix_kv)
            if keep_kv:
                kv.append((k, v))
            if keep_hidden:
                hidden.append(h)
        return h, hidden, kv


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}; got {tuple(tensor.shape)}")


def _key_mask(attention_mask, prefix, batch, length, device) -> torch.Tensor | None:
    """(B, L) bool padding mask (+ the prefix's) -> SDPA mask (B, 1, 1, P + L), or None."""
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool:
            raise ValueError(
                f"attention_mask must be bool (True = real token); got {attention_mask.dtype}: "
                "pass mask.bool()"
            )
        _check_shape("attention_mask", attention_mask, (batch, length))
    if prefix is None:
        return None if attention_mask is None else attention_mask[:, None, None, :]
    if prefix.mask.shape[0] != batch:
        raise ValueError(f"prefix cache has batch {prefix.mask.shape[0]}; the canvas has {batch}")
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    return torch.cat((prefix.mask, attention_mask), dim=1)[:, None, None, :]  # (B, 1, 1, P + L)
