"""Composite Whisper-LLaMA model: the autoregressive baseline, encoder -> projector -> [prompt; audio; answer] -> a causal LLaMA.

The same parts, freeze policy and sequence layout as Whisper-LLaDA (`model.SpeechLLM`), with a
LLaMA-family causal LM (transformers' `LlamaForCausalLM`, + LoRA) in place of LLaDA. Training
reads the logits that predict each answer token from everything before it (teacher forcing);
decoding (`autoregressive.py`) continues [prompt; audio] token by token with a key/value cache.

Two paddings, one per use: for training the packed rows keep their real tokens first and the
padding last (`SpeechLLM.pack`), as Whisper-LLaDA; for generation the [prompt; audio] prefixes
are left-padded, the layout transformers' `generate` extends, and its position ids (the
cumulative sum of the attention mask) give every row the positions it has alone.
"""

from __future__ import annotations

import peft
import torch
from torch import nn

from whisper_llada.models.speech_llm import AudioEncoding, SpeechLLM


class WhisperLLaMA(SpeechLLM):
    """Whisper-LLaMA: the speech LLM with a causal LLaMA (`llama`: `LlamaForCausalLM` or its peft wrapper).

    `special` is a `llama.CausalTokens`.
    """

    llm_attribute = "llama"

    @property
    def causal_lm(self) -> nn.Module:
        """The `LlamaForCausalLM` itself (inside the peft wrapper, LoRA layers in place)."""
        llm = self.llm
        return llm.get_base_model() if isinstance(llm, peft.PeftModel) else llm

    def next_token_logits(
        self,
        audio: AudioEncoding,
        answer_ids: torch.Tensor,
        answer_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher forcing: logits (B, L, V) whose slot j predicts answer_ids[:, j] from the tokens before it.

        Args:
            audio: vectors (B, A, D) and their real counts (B,).
            answer_ids: (B, L) answer tokens, the end token included.
            answer_lengths: (B,) real answer tokens per row; None = all L.
        """
        packed = self.pack(audio, answer_ids, answer_lengths)
        lm = self.causal_lm
        hidden = lm.model(
            inputs_embeds=packed.embeds,
            attention_mask=packed.key_mask.long(),
            position_ids=packed.position_ids,
            use_cache=False,
        ).last_hidden_state  # (B, S, D)
        before = packed.answer_positions - 1  # the slot whose output predicts each answer token
        picked = hidden.gather(1, before.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return lm.lm_head(picked)  # (B, L, V): only the answer's logits, never (B, S, V)

    def generation_inputs(self, audio: AudioEncoding) -> tuple[torch.Tensor, torch.Tensor]:
        """[prompt; audio] per row, left-padded: embeddings (B, S, D) and attention mask (B, S), 1 = real."""
        empty = torch.zeros(
            audio.vectors.shape[0], 0, dtype=torch.long, device=audio.vectors.device
        )
        packed = self.pack(audio, empty)  # real tokens first, padding last
        width = packed.embeds.shape[1]
        shift = width - packed.key_mask.sum(1, keepdim=True)  # (B, 1) padding slots per row
        slot = torch.arange(width, device=shift.device).unsqueeze(0)  # (1, S)
        source = (slot - shift) % width  # left-padded slot s holds packed slot s - shift
        embeds = packed.embeds.gather(
            1, source.unsqueeze(-1).expand(-1, -1, packed.embeds.shape[2])
        )
        return embeds, (slot >= shift).long()
