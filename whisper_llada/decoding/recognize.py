"""Recognition of one batch: waveforms to transcripts with the decoding mode chosen in the config.

This is where the composite model becomes the "mask predictor" that the decoding functions
(decoding.py, deliberation.py, prior_guided.py) run over, and where the first pass / prior of a
mode comes from: the manifest's field, the model's own CTC head, or the hypotheses of a
first-pass model (`cascade.py`). The causal baseline decodes with `autoregressive.py`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from whisper_llada.config import AudioConfig, DecodeConfig, ModelConfig
from whisper_llada.data.audio import batch_features
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.decoding.autoregressive import autoregressive_decode
from whisper_llada.decoding.canvas import DecodeResult, TokenIds
from whisper_llada.decoding.deliberation import (
    DeliberationOptions,
    SemiARDeliberationOptions,
    diffusion_deliberation,
    semi_ar_deliberation,
)
from whisper_llada.decoding.diffusion import DiffusionOptions, diffusion_decode
from whisper_llada.decoding.prior_guided import PriorGuidedOptions, prior_guided_decode
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.ctc import ctc_greedy_decode_with_confidence
from whisper_llada.models.prompt import decode_text, text_ids
from whisper_llada.models.speech_llm import SpeechLLM, WhisperLLaDA

Options = TypeVar(
    "Options", DiffusionOptions, DeliberationOptions, SemiARDeliberationOptions, PriorGuidedOptions
)

# The modes that start from a first pass (decode.first_pass: manifest, ctc or model).
FIRST_PASS_MODES = ("diffusion_deliberation", "semi_ar_deliberation", "prior_guided")


def reads_manifest_first_pass(cfg: DecodeConfig) -> bool:
    """Whether the mode starts from the manifest's first pass (origin_transcripts / first_pass)."""
    return cfg.first_pass == "manifest" and cfg.mode in FIRST_PASS_MODES


@dataclass
class Hypothesis:
    text: str
    prior: str | None  # the first pass / prior the mode started from, if any
    forward_passes: int  # LLM forward passes that included this utterance


def row_seed(utterance_id: str, seed: int) -> int:
    """A stable per-utterance seed, so random modes give the same result in any batch."""
    return zlib.crc32(utterance_id.encode()) ^ seed


def recognize(
    model: SpeechLLM,
    tokenizer: PreTrainedTokenizerFast,
    waves: Sequence[np.ndarray],
    utterance_ids: Sequence[str],
    cfg: DecodeConfig,
    audio_cfg: AudioConfig,
    *,
    first_passes: Sequence[str | None] | None = None,
    encoder_cache: EncoderOutputCache | None = None,
) -> list[Hypothesis]:
    """Decode one batch of 16 kHz waveforms with `cfg.mode`.

    Args:
        model: `WhisperLLaDA` for the diffusion modes, `WhisperLLaMA` for "autoregressive";
            either for "ctc" (with a CTC head).
        first_passes: per utterance, a first-pass hypothesis (used when cfg.first_pass is
            "manifest" or "model" by the deliberation and prior-guided modes).
        encoder_cache: the model's encoder outputs, read or computed and stored per utterance
            (None: the batch is encoded).
    """
    check_mode(model, cfg)
    device = model.prompt_ids.device
    mel, mel_lengths = batch_features(
        list(waves),
        audio_cfg.n_mels,
        pad_to_30s=audio_cfg.pad_to_30s,
        min_seconds=audio_cfg.min_seconds,
    )
    with torch.inference_mode():
        mel, mel_lengths = mel.to(device), mel_lengths.to(device)
        if encoder_cache is None:
            audio = model.encode_audio(mel, mel_lengths)
        else:
            audio = model.project_frames(encoder_cache.frames(mel, mel_lengths), mel_lengths)
        if cfg.mode == "ctc":
            drafts, _ = ctc_greedy_decode_with_confidence(model.ctc_logits(audio), audio.lengths)
            return [Hypothesis(decode_text(tokenizer, d), None, 0) for d in drafts]
        if cfg.mode == "autoregressive":
            result = autoregressive_decode(
                model, audio, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens
            )
            return [
                Hypothesis(decode_text(tokenizer, tokens), None, steps)
                for tokens, steps in zip(result.tokens, result.forward_passes, strict=True)
            ]
        cache = model.prefix_cache(audio) if cfg.prefix_cache else None

        def predictor(
            rows: torch.Tensor, canvas: torch.Tensor, lengths: torch.Tensor
        ) -> torch.Tensor:
            rows = rows.to(device)
            subset = None if cache is None else cache.select(rows)
            return model.canvas_logits(
                audio.select(rows), canvas.to(device), lengths.to(device), subset
            )

        priors, confidences = first_pass_tokens(
            model, tokenizer, audio, cfg, first_passes, len(waves)
        )
        seeds = [row_seed(u, cfg.seed) for u in utterance_ids]
        ids = token_ids(model, tokenizer)
        result = run_mode(predictor, cfg, ids, priors, confidences, seeds, device)
    cache_passes = 0 if cache is None else 1
    return [
        Hypothesis(
            decode_text(tokenizer, tokens),
            None if priors is None else decode_text(tokenizer, priors[row]),
            passes + cache_passes,
        )
        for row, (tokens, passes) in enumerate(
            zip(result.tokens, result.forward_passes, strict=True)
        )
    ]


def check_mode(model: SpeechLLM, cfg: DecodeConfig) -> None:
    """ValueError when `cfg.mode` cannot run on this kind of model."""
    check_mode_for(isinstance(model, WhisperLLaMA), cfg)


def check_mode_for(causal: bool, cfg: DecodeConfig) -> None:
    """ValueError when `cfg.mode` cannot run on a causal (Whisper-LLaMA) or diffusion model."""
    if cfg.mode == "autoregressive" and not causal:
        raise ValueError(
            "decode.mode=autoregressive decodes the causal baseline (model.llm=llama); "
            "Whisper-LLaDA decodes with decoding / diffusion_deliberation / "
            "semi_ar_deliberation / prior_guided / ctc"
        )
    if causal and cfg.mode not in ("autoregressive", "ctc"):
        raise ValueError(
            f"decode.mode={cfg.mode} needs Whisper-LLaDA (model.llm=llada); the causal model "
            "(model.llm=llama) decodes with decode.mode=autoregressive (or ctc with a CTC head)"
        )


def check_decode_settings(model_cfg: ModelConfig, cfg: DecodeConfig) -> None:
    """ValueError for decode settings no batch can run with, before any model is built.

    The mode must fit the model kind and the CTC head, and the decoder's own argument checks
    run on an empty batch (so the messages are the decoders' and nothing is decoded).
    """
    check_mode_for(model_cfg.llm == "llama", cfg)
    uses_ctc = cfg.mode == "ctc" or (cfg.mode in FIRST_PASS_MODES and cfg.first_pass == "ctc")
    if uses_ctc and not model_cfg.ctc.enabled:
        raise ValueError(
            f"decode.mode={cfg.mode} with the CTC draft needs the CTC head: set "
            "model.ctc.enabled=true (a model trained with one), or another decode.first_pass"
        )
    if cfg.mode in ("ctc", "autoregressive"):
        return

    def never(rows, canvas, lengths):
        raise AssertionError("an empty batch calls no predictor")

    run_mode(never, cfg, TokenIds(mask=0, eos=1, pad=2, eot=3), [], None, [], "cpu")


def token_ids(model: WhisperLLaDA, tokenizer: PreTrainedTokenizerFast) -> TokenIds:
    """The decoders' token ids; `special` is every token the tokenizer's skip_special_tokens drops."""
    special = model.special
    skipped = {index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    return TokenIds(
        mask=special.mask,
        eos=special.eos,
        pad=special.pad,
        eot=special.eot,
        special=frozenset(skipped | set(tokenizer.all_special_ids)),
    )


def first_pass_tokens(model, tokenizer, audio, cfg: DecodeConfig, first_passes, batch: int):
    """(token lists, confidences or None) the mode starts from; (None, None) for `decoding`."""
    if cfg.mode == "decoding":
        return None, None
    if cfg.first_pass == "ctc":
        return ctc_greedy_decode_with_confidence(model.ctc_logits(audio), audio.lengths)
    if first_passes is None or any(text is None for text in first_passes):
        source = {
            "manifest": "the manifest's origin_transcripts / first_pass field",
            "model": "the first-pass model's hypotheses, see inference.first_pass_config",
        }[cfg.first_pass]
        raise ValueError(
            f"decode.mode={cfg.mode} with decode.first_pass={cfg.first_pass} needs a first-pass "
            f"hypothesis for every utterance ({source}); "
            "or set decode.first_pass=ctc to use the model's CTC head"
        )
    return [text_ids(tokenizer, text) for text in first_passes], None


def options_from(cfg: DecodeConfig, options: type[Options]) -> Options:
    """A sampler's options object from the decode section: each field is the decode key of its name."""
    return options(**{field.name: getattr(cfg, field.name) for field in fields(options)})


def run_mode(
    predictor, cfg: DecodeConfig, ids: TokenIds, priors, confidences, seeds, device
) -> DecodeResult:
    """Dispatch to the decoding function of `cfg.mode` (all but "ctc")."""
    if cfg.mode == "decoding":
        options = options_from(cfg, DiffusionOptions)
        return diffusion_decode(
            predictor, len(seeds), options, ids=ids, row_seeds=seeds, device=device
        )
    if cfg.mode == "diffusion_deliberation":
        options = options_from(cfg, DeliberationOptions)
        return diffusion_deliberation(
            predictor, priors, options, ids=ids, row_seeds=seeds, device=device
        )
    if cfg.mode == "semi_ar_deliberation":
        options = options_from(cfg, SemiARDeliberationOptions)
        return semi_ar_deliberation(predictor, priors, options, ids=ids, device=device)
    if cfg.threshold is None:
        raise ValueError("decode.mode=prior_guided needs decode.threshold (dLLM-ASR uses 0.9)")
    options = options_from(cfg, PriorGuidedOptions)
    return prior_guided_decode(
        predictor, priors, options, ids=ids, prior_confidences=confidences, device=device
    )
