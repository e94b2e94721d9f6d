"""The cascade: a first-pass model transcribes each batch, and its hypotheses seed Whisper-LLaDA's deliberation in the same run.

Whisper-LLaDA's best result (2.25 / 4.94 % WER on LibriSpeech) deliberates over the transcripts
of an autoregressive Whisper-LLaMA. With `decode.first_pass=model` the decoding config names the
first-pass model's own config (`inference.first_pass_config`, e.g.
configs/decode/autoregressive.yaml, plus `inference.first_pass_overrides`); every batch is
decoded by that model first (its model, checkpoint, audio and decode sections), then by the
configured mode (diffusion_deliberation, semi_ar_deliberation or prior_guided) starting from
its hypotheses. No intermediate file is written: each result record keeps the first-pass text
(`prior`) and the cost of both stages, and the wer file reports both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerFast

from whisper_llada.config import Config, load_config
from whisper_llada.config_strict import ConfigError
from whisper_llada.decoding.recognize import Hypothesis, recognize
from whisper_llada.evaluation.metrics import score
from whisper_llada.evaluation.results import Record
from whisper_llada.models.speech_llm import SpeechLLM

FIRST_PASS_CONSUMERS = ("diffusion_deliberation", "semi_ar_deliberation", "prior_guided")
FIRST_PASS_MODES = ("autoregressive", "decoding", "ctc")  # modes that need no first pass


def first_pass_config(cfg: Config) -> Config:
    """The first-pass model's config: inference.first_pass_config with inference.first_pass_overrides.

    Raises ConfigError when the cascade is not set up or cannot run: no first-pass config, a
    mode that takes no first pass, or a first-pass mode that needs one itself.
    """
    if cfg.decode.mode not in FIRST_PASS_CONSUMERS:
        raise ConfigError(
            f"decode.first_pass=model feeds {' / '.join(FIRST_PASS_CONSUMERS)}; "
            f"decode.mode={cfg.decode.mode} takes no first pass"
        )
    if not cfg.inference.first_pass_config:
        raise ConfigError(
            "decode.first_pass=model needs inference.first_pass_config: the config of the "
            "first-pass model (e.g. configs/decode/autoregressive.yaml, with "
            "inference.first_pass_overrides=[inference.checkpoint=...] for its weights)"
        )
    first = load_config(cfg.inference.first_pass_config, cfg.inference.first_pass_overrides)
    if first.decode.mode not in FIRST_PASS_MODES:
        raise ConfigError(
            f"{cfg.inference.first_pass_config}: the first pass decodes with "
            f"decode.mode={first.decode.mode}, which needs a first pass itself; use one of "
            f"{', '.join(FIRST_PASS_MODES)}"
        )
    return first


@dataclass
class FirstPass:
    """A loaded first-pass decoder: its config, model (checkpoint loaded, eval mode) and tokenizer."""

    cfg: Config
    model: SpeechLLM
    tokenizer: PreTrainedTokenizerFast

    def transcribe(
        self, waves: Sequence[np.ndarray], utterance_ids: Sequence[str]
    ) -> list[Hypothesis]:
        """Hypotheses of one batch in the first-pass config's decoding mode and audio front end."""
        return recognize(
            self.model, self.tokenizer, waves, utterance_ids, self.cfg.decode, self.cfg.audio
        )


def first_pass_statistics(records: Sequence[Record]) -> dict[str, float | int | str]:
    """The wer file's lines about the first pass of a cascade's records (empty for other runs).

    WER of the first-pass texts (the `prior` field; a failed utterance scores as an empty
    hypothesis, as in the set's WER), its forward passes per utterance, its RTF, and the RTF of
    both stages together (rates over the decoded utterances).
    """
    decoded = [r for r in records if not r.failed and r.first_pass_seconds is not None]
    if not decoded:
        return {}
    summary, _ = score([(r.id, r.reference, None if r.failed else r.prior) for r in records])
    first_seconds = sum(r.first_pass_seconds for r in decoded)
    both_seconds = first_seconds + sum(r.decode_seconds for r in decoded)
    audio_seconds = sum(r.audio_seconds for r in decoded)
    passes = sum(r.first_pass_forward_passes for r in decoded) / len(decoded)

    def rtf(seconds: float) -> float | str:
        return round(seconds / audio_seconds, 4) if audio_seconds else "n/a"

    return {
        "first pass %WER": f"{summary.wer:.2f}",
        "first pass errors": f"{summary.errors} / {summary.ref_words} words",
        "first pass forward passes per utterance": round(passes, 3),
        "first pass RTF": rtf(first_seconds),
        "RTF of both stages": rtf(both_seconds),
    }
