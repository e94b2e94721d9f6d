"""The Python API: load a trained model, transcribe audio files or waveforms in any decoding mode.

    from whisper_llada import load_model

    model = load_model("models/demo")  # an exported model folder, or a config YAML (+ checkpoint)
    for t in model.transcribe(["a.wav", "b.flac"], mode="prior_guided", first_pass="ctc"):
        print(t.source, t.text, t.forward_passes, t.seconds)

`transcribe` decodes batch by batch exactly as inference.py does (`decode_batch`: the same
records, timing and cascade), with the decode section of the model's config and the keyword
overrides of the call (`mode=`, `threshold=`, any `decode.*` key, checked like an override of
the config file). An input that cannot be read comes back with its `error` and no text; the
others are decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from whisper_llada.config import Config, load_config
from whisper_llada.data.audio import AudioError, as_waveform
from whisper_llada.data.batching import make_batches
from whisper_llada.data.manifest import Utterance, load_wave
from whisper_llada.decoding.recognize import (
    FIRST_PASS_MODES,
    check_decode_settings,
    check_mode,
    reads_manifest_first_pass,
)
from whisper_llada.evaluation.cascade import FirstPass
from whisper_llada.evaluation.results import Record
from whisper_llada.evaluation.transcribe import decode_batch, load_decoder, load_first_pass

MODEL_CONFIG = "config.yaml"  # in an exported model folder (`whisper_llada.models.export`)
Audio = str | os.PathLike[str] | np.ndarray  # a file, or a (N,) float waveform at 16 kHz


@dataclass(frozen=True)
class Transcript:
    """One input's transcript and what it cost.

    Attributes:
        source: the file's path as given, or "waveform <i>" for the i-th waveform.
        text: the transcript ("" when the input failed).
        prior: the first pass the mode started from (the CTC draft, a given first pass, a
            cascade's first-pass text); None for the modes without one.
        forward_passes: LLM forward passes that included this input (0 for the CTC draft).
        seconds: wall seconds of decoding, this input's share of its batch.
        audio_seconds: seconds of audio decoded (after audio.max_seconds).
        first_pass_forward_passes, first_pass_seconds: a cascade's first stage
            (decode.first_pass="model"); None otherwise.
        error: why the input was not decoded (unreadable or missing audio); None when decoded.
    """

    source: str
    text: str
    prior: str | None
    forward_passes: int
    seconds: float
    audio_seconds: float
    first_pass_forward_passes: int | None = None
    first_pass_seconds: float | None = None
    error: str | None = None


class Recognizer:
    """A loaded model and its config: `transcribe` decodes in any mode the model supports."""

    def __init__(self, config_path: Path, overrides: Sequence[str], device: str | None) -> None:
        self._config_path = config_path
        self._overrides = (*overrides, *([f"inference.device={device}"] if device else []))
        self.config = load_config(config_path, self._overrides)
        self.device = torch.device(self.config.inference.device)
        self.model, self.tokenizer = load_decoder(self.config, self.device)
        self._first_pass: FirstPass | None = None

    def decode_config(self, **decode: Any) -> Config:
        """The model's config with `decode.<key>=<value>` for each keyword, checked.

        Raises:
            ConfigError: a key that is not a decode setting, or a value of the wrong type.
            ValueError: settings no batch can run with, or a mode this model does not decode.
        """
        overrides = [f"decode.{key}={_yaml_value(value)}" for key, value in decode.items()]
        cfg = load_config(self._config_path, [*self._overrides, *overrides])
        check_decode_settings(cfg.model, cfg.decode)
        check_mode(self.model, cfg.decode)
        return cfg

    def transcribe(
        self,
        audio: Sequence[Audio],
        *,
        first_passes: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        **decode: Any,
    ) -> list[Transcript]:
        """Transcripts of `audio` (files or 16 kHz mono float waveforms), in order.

        Args:
            audio: paths of audio files (any format soundfile reads, resampled to 16 kHz) or
                (N,) float waveforms at 16 kHz.
            first_passes: one first-pass transcript per input, for the deliberation and
                prior-guided modes with decode.first_pass="manifest" (the config's default).
            batch_size: inputs per batch (default: the config's inference.batch_size, or its
                max_duration seconds of audio per batch when that is set).
            progress: show a progress bar (on a terminal).
            **decode: decode settings for this call, e.g. mode="prior_guided",
                first_pass="ctc", threshold=0.9, steps=12.

        Raises:
            ConfigError, ValueError: settings the config or the model refuses (nothing is
                decoded); first_passes missing where the mode reads them, or not one per input.
        """
        cfg = self.decode_config(**decode)
        inputs = {_source(item, i): item for i, item in enumerate(audio)}
        if len(inputs) != len(audio):
            raise ValueError("a file is given twice: give each file once")
        utterances = _utterances(cfg, list(inputs), first_passes)
        first_pass = self._cascade_first_pass(cfg)
        if batch_size is not None:
            batches = make_batches(utterances, batch_size=batch_size)
        else:  # as inference.py batches: by count, or by seconds when max_duration is set
            limit = cfg.inference.max_duration
            batches = make_batches(
                utterances,
                batch_size=None if limit else cfg.inference.batch_size,
                max_duration=limit,
            )
        transcripts: dict[str, Transcript] = {}
        with tqdm(total=len(utterances), unit="utt", disable=not progress or None) as bar:
            for batch in batches:
                loaded, waves = [], []
                for utt in batch:
                    try:
                        waves.append(_wave(inputs[utt.id], utt, cfg))
                        loaded.append(utt)
                    except AudioError as error:
                        transcripts[utt.id] = Transcript(
                            utt.id, "", None, 0, 0.0, 0.0, error=str(error)
                        )
                if loaded:
                    records = decode_batch(
                        self.model, self.tokenizer, cfg, loaded, waves, first_pass
                    )
                    transcripts.update((r.id, _transcript(r)) for r in records)
                bar.update(len(batch))
        return [transcripts[source] for source in inputs]

    def _cascade_first_pass(self, cfg: Config) -> FirstPass | None:
        """The first-pass model of decode.first_pass="model", loaded once."""
        if cfg.decode.first_pass != "model" or cfg.decode.mode not in FIRST_PASS_MODES:
            return None
        if self._first_pass is None:
            self._first_pass = load_first_pass(cfg, self.device)
        return self._first_pass


def load_model(
    path: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    device: str | None = None,
) -> Recognizer:
    """Load a model to transcribe with.

    Args:
        path: an exported model folder (it holds config.yaml: `models/demo`, an export of
            train.py's weights) or a config YAML file (`configs/tiny.yaml`, a decode config).
        checkpoint: trainable weights to load (inference.checkpoint; default: the config's).
        overrides: `section.key=value` overrides of the config, as on the command line.
        device: "cpu", "cuda", ... (default: the config's inference.device).

    Raises:
        FileNotFoundError: no such folder or file, or a folder without config.yaml.
        ConfigError: a config or override that does not match the schema.
    """
    path = Path(path)
    config_path = path / MODEL_CONFIG if path.is_dir() else path
    if not config_path.is_file():
        where = f"{path} holds no {MODEL_CONFIG}" if path.is_dir() else f"no such file: {path}"
        raise FileNotFoundError(f"{where}: give an exported model folder or a config YAML file")
    if checkpoint is not None:
        overrides = [*overrides, f"inference.checkpoint={checkpoint}"]
    return Recognizer(config_path, overrides, device)


def _utterances(
    cfg: Config, sources: list[str], first_passes: Sequence[str] | None
) -> list[Utterance]:
    """One Utterance per input (no reference), with its first pass where the mode reads one."""
    reads = reads_manifest_first_pass(cfg.decode)
    if reads and first_passes is None:
        raise ValueError(
            f"decode.mode={cfg.decode.mode} starts from a first pass: give first_passes= "
            '(one per input), or first_pass="ctc" (the model\'s CTC draft) or "model" '
            "(inference.first_pass_config)"
        )
    if first_passes is not None and len(first_passes) != len(sources):
        raise ValueError(f"{len(first_passes)} first passes for {len(sources)} inputs")
    texts = first_passes if reads else [None] * len(sources)
    return [
        Utterance(source, source, "", first_pass=text)
        for source, text in zip(sources, texts, strict=True)
    ]


def _source(item: Audio, index: int) -> str:
    if isinstance(item, np.ndarray):
        return f"waveform {index}"
    return os.fspath(item)


def _wave(item: Audio, utt: Utterance, cfg: Config) -> np.ndarray:
    """The input's (N,) float32 waveform, through audio.max_seconds and audio.too_long."""
    limits = {"max_seconds": cfg.audio.max_seconds, "too_long": cfg.audio.too_long}
    if isinstance(item, np.ndarray):
        return as_waveform(item, utt.id, **limits)
    return load_wave(utt, **limits)


def _transcript(record: Record) -> Transcript:
    return Transcript(
        record.id,
        record.hypothesis,
        record.prior,
        record.forward_passes,
        record.decode_seconds,
        record.audio_seconds,
        record.first_pass_forward_passes,
        record.first_pass_seconds,
    )


def _yaml_value(value: Any) -> str:
    """`value` as an override's right-hand side (YAML, one line): 0.9, null, true, "ctc"."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
