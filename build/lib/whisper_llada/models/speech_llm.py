"""Composite Whisper-LLaDA model: encoder -> projector -> [prompt; audio; answer] -> LLaDA, plus the CTC prior.

`SpeechLLM` holds what Whisper-LLaDA shares with the autoregressive baseline Whisper-LLaMA
(`causal_model.WhisperLLaMA`): parts, freeze policy, audio encoding and the sequence layout.

The model takes already-built modules (see `build.build_model` for the one place that loads
pretrained weights), so tests can assemble it from tiny parts. It owns the freeze policy: the
encoder is frozen and kept in eval mode unless `train_encoder`; the LLM's base weights are frozen
(LoRA factors, when present, are trainable); projector and CTC head are trainable.

Sequence layout, exactly as Whisper-LLaDA: the chat-templated prompt (user turn "Transcribe the
audio:" and the assistant header), then the audio vectors, then the answer. With true-length
audio the rows of a batch have different numbers of audio vectors; each row is packed so that its
real tokens come first and all padding sits at the end, which gives every row the rotary
positions it would have alone (batched equals per-utterance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from whisper_llada.models.encoder import encode, encoder_output_lengths
from whisper_llada.models.llada import PrefixCache
from whisper_llada.models.prompt import SpecialTokens

if TYPE_CHECKING:
    from whisper_llada.models.llama import CausalTokens


@dataclass
class AudioEncoding:
    """Audio vectors of a batch, already at the LLM width."""

    vectors: torch.Tensor  # (B, A, D)
    lengths: torch.Tensor  # (B,) real vectors per row

    def select(self, rows: torch.Tensor) -> AudioEncoding:
        return AudioEncoding(self.vectors[rows], self.lengths[rows])


@dataclass
class PackedInputs:
    embeds: torch.Tensor  # (B, S, D) with S = P + A + L
    key_mask: torch.Tensor  # (B, S) True = real token
    position_ids: torch.Tensor  # (B, S)
    answer_positions: torch.Tensor  # (B, L) where each answer slot sits in the sequence


class SpeechLLM(nn.Module):
    """What both recognisers share: frozen Whisper encoder, trainable projector, an LLM (+ LoRA), CTC head.

    The LLM sits under the attribute `llm_attribute` names (`llada` / `llama`), so checkpoint
    keys say which LLM they belong to; `llm` reaches it either way. The prompt layout
    [prompt; audio; answer] and the freeze policy are the same for both.

    Args:
        encoder: transformers `WhisperEncoder` (see `encoder.load_whisper_encoder`).
        projector: one of the modules of `projector.py` (frames -> LLM-width vectors).
        llm: the LLM, or the peft `PeftModel` wrapping it.
        prompt_ids: token ids of the chat-templated instruction, assistant header included.
        special: special token ids of the tokenizer (`prompt.SpecialTokens` for LLaDA,
            `llama.CausalTokens` for LLaMA).
        ctc_head: optional `ctc.CTCHead` (the dLLM-ASR prior).
        train_encoder: fine-tune the encoder too (default: frozen, eval mode, no autograd graph).
        train_llm: fine-tune every LLM weight (full fine-tuning, e.g. of a model that starts
            random); default: only the LoRA factors, if any, are trainable.
        answer_stride: None (both papers): the answer slots' rotary positions follow the
            audio's; a number s (model.answer_positions=audio_aligned): slot k sits at
            prompt + round((k + 1/2) s), about where its token is spoken (s = audio vectors per
            answer token).
    """

    llm_attribute: ClassVar[str]

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        llm: nn.Module,
        prompt_ids: list[int],
        special: SpecialTokens | CausalTokens,
        *,
        ctc_head: nn.Module | None = None,
        train_encoder: bool = False,
        train_llm: bool = False,
        answer_stride: float | None = None,
    ) -> None:
        super().__init__()
        self.answer_stride = answer_stride
        self.encoder = encoder
        self.projector = projector
        setattr(self, self.llm_attribute, llm)
        self.ctc_head = ctc_head
        self.special = special
        self.train_encoder = train_encoder
        self.register_buffer(
            "prompt_ids", torch.tensor(prompt_ids, dtype=torch.long), persistent=False
        )
        self.encoder.requires_grad_(train_encoder)
        if train_llm:
            llm.requires_grad_(True)
        elif not any("lora_" in name for name, _ in llm.named_parameters()):
            llm.requires_grad_(False)
        self.train(False)

    @property
    def llm(self) -> nn.Module:
        """The LLM (replace it with `setattr(model, model.llm_attribute, new)`)."""
        return getattr(self, self.llm_attribute)

    def train(self, mode: bool = True) -> SpeechLLM:
        super().train(mode)
        if not self.train_encoder:
            self.encoder.eval()
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Every parameter the optimiser, DDP and checkpoints see, by name."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def set_lora_trainable(self, trainable: bool) -> None:
        """Train the LoRA factors (dLLM-ASR stage 2) or freeze them (stage 1: projector + CTC).

        Call it before building the optimiser: `trainable_parameters()` follows it. Frozen
        factors keep their values; freshly initialised, they change nothing (LoRA's B is zero).
        A model without LoRA has nothing to switch.
        """
        for name, parameter in self.llm.named_parameters():
            if ".lora_" in name:
                parameter.requires_grad_(trainable)

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.embedding_weight.dtype

    @property
    def embedding_weight(self) -> torch.Tensor:
        """The LLM's input embedding matrix (V, D)."""
        return self.llm.get_input_embeddings().weight

    def encode_audio(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> AudioEncoding:
        """Log-mel (B, n_mels, T) with valid lengths (B,) -> LLM-width audio vectors."""
        frames, _ = encode(self.encoder, mel, mel_lengths)  # (B, F, D_enc)
        return self.project_frames(frames, mel_lengths)

    def project_frames(self, frames: torch.Tensor, mel_lengths: torch.Tensor) -> AudioEncoding:
        """Encoder frames (B, F, D_enc) of log-mels with valid lengths (B,) -> audio vectors.

        The second half of `encode_audio`, for frames computed earlier (`encoder_cache.py`).
        """
        frame_lengths = encoder_output_lengths(mel_lengths.to(frames.device))
        frame_mask = torch.arange(frames.shape[1], device=frames.device) < frame_lengths[:, None]
        vectors, vector_mask = self.projector(frames, frame_mask)  # (B, A, D)
        lengths = self.projector.output_lengths(frame_lengths)
        assert torch.equal(lengths.to(vector_mask.device), vector_mask.sum(1)), "projector lengths"
        return AudioEncoding(vectors=vectors, lengths=vector_mask.sum(1))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)

    def pack(
        self,
        audio: AudioEncoding,
        answer_ids: torch.Tensor,
        answer_lengths: torch.Tensor | None = None,
    ) -> PackedInputs:
        """Lay out [prompt; audio; answer] per row with all padding moved to the end.

        Args:
            audio: vectors (B, A, D) and their real counts (B,).
            answer_ids: (B, L) answer tokens (MASK where noised).
            answer_lengths: (B,) real answer tokens per row; None = all L.
        """
        batch, num_audio, _ = audio.vectors.shape
        answer_len = answer_ids.shape[1]
        device = answer_ids.device
        prompt = self.embed_tokens(self.prompt_ids).unsqueeze(0).expand(batch, -1, -1)  # (B, P, D)
        answer = self.embed_tokens(answer_ids)  # (B, L, D)
        vectors = audio.vectors.to(answer.dtype)
        stacked = torch.cat([prompt, vectors, answer], dim=1)  # (B, P + A + L, D), pads mid-row
        prefix = self.prompt_ids.numel() + audio.lengths.to(device).unsqueeze(1)  # (B, 1)
        slot = torch.arange(stacked.shape[1], device=device).unsqueeze(0)  # (1, S)
        in_answer = (slot >= prefix) & (slot < prefix + answer_len)
        source = torch.where(slot < prefix, slot, slot - answer_len)  # audio padding moves last
        source = torch.where(in_answer, slot - prefix + self.prompt_ids.numel() + num_audio, source)
        embeds = stacked.gather(1, source.unsqueeze(-1).expand(-1, -1, stacked.shape[2]))
        if answer_lengths is None:
            answer_lengths = torch.full((batch,), answer_len, device=device)
        key_mask = slot < prefix + answer_lengths.to(device).unsqueeze(1)
        answer_positions = prefix + torch.arange(answer_len, device=device).unsqueeze(0)
        position_ids = slot.expand(batch, -1)
        if self.answer_stride is not None and answer_len > 0:
            aligned = self.aligned_positions(batch, answer_len, device)
            position_ids = position_ids.scatter(1, answer_positions, aligned)
        return PackedInputs(embeds, key_mask, position_ids, answer_positions)

    def aligned_positions(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """(B, L) rotary positions of answer slots 0..L-1 under model.answer_positions=audio_aligned."""
        assert self.answer_stride is not None, "the answer follows the audio"
        slots = torch.arange(length, device=device, dtype=torch.float64)
        aligned = self.prompt_ids.numel() + torch.round((slots + 0.5) * self.answer_stride)
        return aligned.long().expand(batch, -1)

    def ctc_logits(self, audio: AudioEncoding) -> torch.Tensor:
        """CTC prior logits (B, A, V + 1), index 0 = blank."""
        if self.ctc_head is None:
            raise ValueError("this model has no CTC head: set model.ctc.enabled=true and retrain")
        return self.ctc_head(audio.vectors, self.embedding_weight)


class WhisperLLaDA(SpeechLLM):
    """Whisper-LLaDA: the speech LLM with LLaDA (bidirectional, a mask predictor over the answer).

    `llada` is `LLaDAModelLM` or the peft `PeftModel` wrapping it (the attribute name keeps the
    released checkpoint's key names `llada.base_model.model.*`).
    """

    llm_attribute = "llada"

    def answer_logits(
        self,
        audio: AudioEncoding,
        answer_ids: torch.Tensor,
        answer_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, V) of the LLM at the answer slots, given audio and a (noisy) answer."""
        packed = self.pack(audio, answer_ids, answer_lengths)
        output = self.llada(
            inputs_embeds=packed.embeds,
            attention_mask=packed.key_mask,
            position_ids=packed.position_ids,
            logits_positions=packed.answer_positions,
        )
        return output.logits

    def prefix_cache(self, audio: AudioEncoding) -> PrefixCache:
        """Keys/values of [prompt; audio] per row, computed once for every decoding round.

        Approximate for a bidirectional LLM: the cached prefix no longer attends to the canvas
        (dLLM-ASR's speech cache); see `LLaDAModelLM.build_prefix_cache`.
        """
        empty = torch.zeros(
            audio.vectors.shape[0], 0, dtype=torch.long, device=audio.vectors.device
        )
        packed = self.pack(audio, empty)
        return self.llada.build_prefix_cache(
            inputs_embeds=packed.embeds,
            attention_mask=packed.key_mask,
            position_ids=packed.position_ids,
        )

    def canvas_logits(
        self,
        audio: AudioEncoding,
        canvas: torch.Tensor,
        lengths: torch.Tensor,
        cache: PrefixCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, V) over a decoding canvas (B, L) whose rows are `lengths` (B,) long.

        With `cache` (from `prefix_cache`, same rows) only the canvas runs through the LLM.
        """
        if cache is None:
            return self.answer_logits(audio, canvas, lengths)
        key_mask = torch.arange(canvas.shape[1], device=canvas.device) < lengths.unsqueeze(1)
        positions = None  # after the cached prefix
        if self.answer_stride is not None:
            positions = self.aligned_positions(*canvas.shape, canvas.device)
        output = self.llada(
            inputs_embeds=self.embed_tokens(canvas),
            attention_mask=key_mask,
            position_ids=positions,
            prefix=cache,
        )
        return output.logits
