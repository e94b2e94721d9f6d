"""Decoding a test set: a rank's shard batch by batch into crash-safe result records, then the merged scoring files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from whisper_llada.config import Config, changed_keys
from whisper_llada.config_strict import to_dict
from whisper_llada.data.audio import SAMPLE_RATE, AudioError
from whisper_llada.data.batching import make_batches
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.data.manifest import Utterance, load_wave, utterance_seconds
from whisper_llada.decoding.recognize import (
    check_decode_settings,
    reads_manifest_first_pass,
    recognize,
)
from whisper_llada.evaluation.cascade import FirstPass, first_pass_config, first_pass_statistics
from whisper_llada.evaluation.metrics import (
    Alignment,
    WerSummary,
    score,
    write_errs,
    write_recogs,
    write_wer,
)
from whisper_llada.evaluation.results import (
    Record,
    ShardWriter,
    merge_shards,
    shard_path,
    with_inputs,
)
from whisper_llada.models.build import build_model, merge_lora
from whisper_llada.models.checkpoint import load_checkpoint, stored_config
from whisper_llada.models.encoder import encoder_weights_sha256
from whisper_llada.models.speech_llm import SpeechLLM

# What a folder's results depend on: resuming with other values would mix two experiments.
RESULT_DEFINING_SECTIONS = ("model", "audio", "decode")
TRUNCATION_TOLERANCE = 0.01  # seconds: header durations and resampling round a little
RESULT_DEFINING_INFERENCE_KEYS = (
    "manifest",
    "checkpoint",
    "merge_lora",
    "first_pass_config",  # the cascade's first-pass model
    "first_pass_overrides",
)


def decode_shard(
    cfg: Config, utterances, output_dir: Path, rank: int, device: torch.device
) -> None:
    """Decode `utterances` batch by batch, appending records to this rank's shard file."""
    first_pass = load_first_pass(cfg, device) if cfg.decode.first_pass == "model" else None
    model, tokenizer = load_decoder(cfg, device)
    decode_utterances(model, tokenizer, cfg, utterances, output_dir, rank, first_pass=first_pass)


def load_first_pass(cfg: Config, device: torch.device) -> FirstPass:
    """The cascade's first-pass decoder (decode.first_pass=model), as its own config describes it."""
    first_cfg = first_pass_config(cfg)
    return FirstPass(first_cfg, *load_decoder(first_cfg, device))


def load_decoder(cfg: Config, device: torch.device) -> tuple[SpeechLLM, PreTrainedTokenizerFast]:
    """The model `cfg.model` and `cfg.inference` describe, checkpoint loaded, ready to decode.

    It does not depend on `cfg.decode` (but its seed), so one model serves every decoding mode.
    """
    torch.manual_seed(
        cfg.decode.seed
    )  # parts a checkpoint does not cover start identical on every rank
    if cfg.inference.checkpoint:
        check_trained_inputs(cfg, stored_config(cfg.inference.checkpoint))
    model, tokenizer = build_model(cfg.model, device=device)
    if cfg.inference.checkpoint:
        metadata = load_checkpoint(model, cfg.inference.checkpoint)
        check_encoder(model, cfg, metadata.get("encoder_sha256"))
    if cfg.inference.merge_lora:
        merge_lora(model)
    model.eval()
    return model, tokenizer


# Settings that change what the model is given: decoding with others than it was trained with
# feeds it inputs it never saw (the demo model, trained at true length, is at 73 % WER with 30 s
# padding instead of 19 %), so they are checked against the config stored in the checkpoint;
# model.ctc.enabled decides whether the checkpoint's CTC head is built at all.
TRAINED_INPUT_KEYS = (
    ("audio", "n_mels"),
    ("audio", "pad_to_30s"),
    ("audio", "min_seconds"),
    ("model", "prompt"),
    ("model", "answer_suffix"),
    ("model", "ctc", "enabled"),
    ("model", "answer_positions"),
    ("model", "audio_vectors_per_token"),
)


def check_decode_config(cfg: Config) -> None:
    """Stop, before any model is built, on decode settings no batch can run with."""
    try:
        check_decode_settings(cfg.model, cfg.decode)
        limit = cfg.inference.max_duration  # the batching's own checks, on no utterances
        make_batches([], batch_size=None if limit else cfg.inference.batch_size, max_duration=limit)
    except ValueError as error:
        raise SystemExit(f"decode settings: {error}") from None


_ABSENT = object()


def _lookup(config: dict, path: tuple[str, ...]):
    """The value at `path` in a nested config dict, or _ABSENT."""
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return _ABSENT
        config = config[key]
    return config


def check_encoder(model: SpeechLLM, cfg: Config, expected: str | None) -> None:
    """Stop unless the encoder loaded from model.whisper_path has the weights the checkpoint was
    trained on (`expected`: the sha256 an export records for a frozen encoder it does not copy)."""
    if expected is None:
        return
    found = encoder_weights_sha256(model.encoder)
    if found != expected:
        raise SystemExit(
            f"{cfg.inference.checkpoint} was trained on another encoder than the one in "
            f"{cfg.model.whisper_path} (weights sha256 {found[:12]}..., expected "
            f"{expected[:12]}...): point model.whisper_path at the encoder it was trained on "
            "(for the demo model: the Whisper tiny.en that `bash setup.sh` converts)"
        )


def check_trained_inputs(cfg: Config, trained: dict) -> None:
    """Stop when `cfg` feeds the model other inputs than `trained` (a checkpoint's stored
    config; an empty one, e.g. a converted release without one, is not checked)."""
    current = to_dict(cfg)
    changed = []
    for path in TRAINED_INPUT_KEYS:
        then, now = _lookup(trained, path), _lookup(current, path)
        if then is not _ABSENT and then != now:
            changed.append(f"{'.'.join(path)}: trained with {then!r}, this run has {now!r}")
    if changed:
        raise SystemExit(
            f"{cfg.inference.checkpoint} was trained with other inputs ({'; '.join(changed)}): "
            "decode with the settings it was trained with (its config is stored in the file)"
        )


def decode_utterances(
    model: SpeechLLM,
    tokenizer: PreTrainedTokenizerFast,
    cfg: Config,
    utterances,
    output_dir: Path,
    rank: int,
    *,
    desc: str | None = None,
    first_pass: FirstPass | None = None,
) -> None:
    """Decode with `load_decoder`'s model in `cfg.decode`'s mode into this rank's shard file.

    `desc` labels the progress bar (default: the rank). `first_pass`: the cascade's first-pass
    decoder for decode.first_pass=model (`load_first_pass`; loaded here when not given). With
    inference.encoder_cache the encoder outputs are read from that folder (computed and stored
    for what it lacks).
    """
    if cfg.decode.first_pass == "model" and first_pass is None:
        first_pass = load_first_pass(cfg, model.prompt_ids.device)
    encoder_cache = None
    if cfg.inference.encoder_cache:
        encoder_cache = EncoderOutputCache(cfg.inference.encoder_cache, model.encoder)
    needs_first_pass = reads_manifest_first_pass(cfg.decode)
    limit = cfg.inference.max_duration
    batches = make_batches(
        utterances, batch_size=None if limit else cfg.inference.batch_size, max_duration=limit
    )
    writer = ShardWriter(shard_path(output_dir, rank))
    progress = tqdm(
        total=len(utterances),
        unit="utt",
        desc=desc or f"rank {rank}",
        position=rank,
        disable=None,
    )
    try:
        for batch in batches:
            records, loaded, waves = [], [], []
            for utt in batch:
                if needs_first_pass and utt.first_pass is None:
                    error = (
                        f"{utt.id}: no first pass in the manifest (origin_transcripts / "
                        f"first_pass) for decode.mode={cfg.decode.mode}; add one, or set "
                        "decode.first_pass=ctc"
                    )
                    records.append(Record(utt.id, utt.text, "", None, 0, 0.0, 0.0, error=error))
                    continue
                try:
                    waves.append(
                        load_wave(
                            utt, max_seconds=cfg.audio.max_seconds, too_long=cfg.audio.too_long
                        )
                    )
                    loaded.append(utt)
                except AudioError as error:
                    records.append(
                        Record(utt.id, utt.text, "", utt.first_pass, 0, 0.0, 0.0, error=str(error))
                    )
            if loaded:
                records += decode_batch(
                    model, tokenizer, cfg, loaded, waves, first_pass, encoder_cache
                )
            writer.write(with_inputs(records, batch, needs_first_pass))
            progress.update(len(batch))
    finally:
        writer.close()
        progress.close()


def decode_batch(
    model: SpeechLLM,
    tokenizer: PreTrainedTokenizerFast,
    cfg: Config,
    utterances: list[Utterance],
    waves: list[np.ndarray],
    first_pass: FirstPass | None,
    encoder_cache: EncoderOutputCache | None = None,
) -> list[Record]:
    """Records of one batch of loaded utterances, each stage timed (the first pass, if any, then the mode)."""
    ids = [u.id for u in utterances]
    first, first_share = [None] * len(ids), None
    if first_pass is not None:
        start = time.perf_counter()
        first = first_pass.transcribe(waves, ids)
        first_share = (time.perf_counter() - start) / len(ids)
    start = time.perf_counter()
    hypotheses = recognize(
        model,
        tokenizer,
        waves,
        ids,
        cfg.decode,
        cfg.audio,
        first_passes=[
            u.first_pass if f is None else f.text for u, f in zip(utterances, first, strict=True)
        ],
        encoder_cache=encoder_cache,
    )
    share = (time.perf_counter() - start) / len(ids)
    return [
        Record(
            u.id,
            u.text,
            h.text,
            # the cascade's first-pass text; else the mode's prior (CTC draft, tokenised first pass)
            f.text if f is not None else (h.prior if h.prior is not None else u.first_pass),
            h.forward_passes,
            share,
            len(w) / SAMPLE_RATE,
            first_pass_forward_passes=None if f is None else f.forward_passes,
            first_pass_seconds=first_share,
            truncated_from_seconds=truncated_from(u, w),
        )
        for u, h, f, w in zip(utterances, hypotheses, first, waves, strict=True)
    ]


def truncated_from(utterance: Utterance, wave: np.ndarray) -> float | None:
    """The utterance's full duration when its loaded `wave` is shorter (cut by max_seconds)."""
    full = utterance_seconds(utterance)
    return (
        full if full is not None and full > len(wave) / SAMPLE_RATE + TRUNCATION_TOLERANCE else None
    )


@dataclass(frozen=True)
class SetStatistics:
    """What the wer file reports about a decoded set, unrounded.

    Rates are over the decoded utterances (failed ones took no time); None when undefined.
    """

    summary: WerSummary
    decoded: int
    forward_passes_per_utterance: float
    decode_seconds: float
    audio_seconds: float

    @property
    def rtf(self) -> float | None:
        """Real-time factor: decode seconds per second of audio."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else None

    @property
    def utterances_per_second(self) -> float | None:
        return self.decoded / self.decode_seconds if self.decode_seconds else None


def set_statistics(
    records: list[Record],
) -> tuple[SetStatistics, list[tuple[str, str, str | None]], list[tuple[str, Alignment]]]:
    """Score a set's records: statistics, the (id, reference, hypothesis) scored, alignments."""
    decoded = [r for r in records if not r.failed]
    # A failed utterance is scored as an empty hypothesis (its words count as deletions).
    scored = [(r.id, r.reference, None if r.failed else r.hypothesis) for r in records]
    summary, alignments = score(scored)
    statistics = SetStatistics(
        summary=summary,
        decoded=len(decoded),
        forward_passes_per_utterance=sum(r.forward_passes for r in decoded) / max(len(decoded), 1),
        decode_seconds=sum(r.decode_seconds for r in decoded),
        audio_seconds=sum(r.audio_seconds for r in decoded),
    )
    return statistics, scored, alignments


def summarize(cfg: Config, output_dir: Path) -> str:
    """Merge the shards and write the recogs / errs / wer files; return the WER line."""
    records = merge_shards(output_dir)
    statistics, scored, alignments = set_statistics(records)
    summary, rtf, rate = statistics.summary, statistics.rtf, statistics.utterances_per_second
    extra = {
        "mode": cfg.decode.mode,
        "utterances decoded": statistics.decoded,
        "forward passes per utterance": round(statistics.forward_passes_per_utterance, 3),
        "RTF": "n/a" if rtf is None else round(rtf, 4),
        "utterances per second": "n/a" if rate is None else round(rate, 3),
        **first_pass_statistics(records),  # a cascade's first stage; nothing otherwise
    }
    truncated = [r for r in records if r.truncated_from_seconds is not None]
    if truncated:  # their reference's words past the cut are deletions
        extra["utterances cut at audio.max_seconds"] = len(truncated)
    tag = f"{Path(cfg.inference.manifest).name.split('.')[0]}-{cfg.decode.mode}"
    write_recogs(output_dir / f"recogs-{tag}.txt", scored)
    write_errs(output_dir / f"errs-{tag}.txt", summary, alignments)
    write_wer(output_dir / f"wer-{tag}.txt", summary, extra)
    details = ", ".join(f"{k} {v}" for k, v in extra.items())
    return f"%WER {summary.wer:.2f} ({summary.errors} errors / {summary.ref_words} words; {summary.failed} failed; {details})"


def check_same_run(saved_config: Path, config: dict) -> None:
    """Stop when the results already in the output folder came from other settings.

    Resuming is only sound with the same model, audio front end, decoding and test set; the batch
    size, device and the like may change (batched decoding equals per-utterance decoding).
    """
    if not saved_config.is_file():
        return
    inference = {f"inference.{key}" for key in RESULT_DEFINING_INFERENCE_KEYS}
    changed = [
        key
        for key in changed_keys(saved_config, config, (*RESULT_DEFINING_SECTIONS, "inference"))
        if not key.startswith("inference.") or key in inference
    ]
    if changed:
        raise SystemExit(
            f"{saved_config.parent} holds results decoded with other settings (changed: "
            f"{', '.join(changed)}); set another inference.output_dir, or delete that folder"
        )
