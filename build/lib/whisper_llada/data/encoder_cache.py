"""Encoder-output cache: a frozen encoder's frames of each utterance computed once, stored on disk, read back.

With a frozen encoder (`model.train_encoder: false`) the encoder is a fixed function of each
log-mel row, so training need not run it every epoch: with `data.encoder_cache` set, train.py
takes every training and validation batch's encoder frames from an `EncoderOutputCache`, and a
step costs the projector and the LLM only (`benchmarks/encoder_cache.py` measures the gain).

Key: a SHA-256 of the encoder's fingerprint (`encoder_fingerprint`: every parameter's name,
dtype, shape and bytes, and the torch version) and of the log-mel row itself (its valid frames,
so every feature setting is in the key through the values), so another encoder, dtype or
feature setting is a miss, never a stale hit.

What a file holds is the row encoded alone (a batch of one), and a miss computes it the same way,
so a hit equals a miss bit for bit and a batch does not depend on which of its rows were cached.
The batched encoding of the same row agrees within float rounding, not bit for bit: with the
cache on, training sees per-row encodings (equal to `encode`'s batched frames within 1e-5, tested).

One safetensors file per row, `<folder>/<digest[:2]>/<digest>.safetensors`: the valid frames
(F_b, D) in the encoder's dtype and a blake2b checksum of them; written atomically (a temporary
file, then a rename), so ranks that miss the same row at once write the same bytes. A file that
cannot be read, has another shape or dtype, or fails its checksum is recomputed with a warning; a
file that cannot be written costs a warning, not the run. Frames of whisper-large-v3 at 30 s
take 3.8 MB per utterance in bf16: the cache is meant for small encoders and corpora (the demo).
Decoding uses it too (`inference.encoder_cache`): `fill_encoder_cache` fills one for a test set
before timed decoding.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from whisper_llada.config import Config
from whisper_llada.data.audio import SAMPLE_RATE, AudioError, batch_features
from whisper_llada.data.batching import make_batches
from whisper_llada.data.manifest import Utterance, load_wave
from whisper_llada.models.encoder import encode, encoder_output_lengths, hash_tensors, tensor_bytes
from whisper_llada.utils.atomic_write import atomic_path

FORMAT_VERSION = 1  # bump when what a file holds changes: every old file becomes a miss
FILE_SUFFIX = ".safetensors"
FAN_OUT_CHARS = 2  # files spread over 256 subfolders named by the key's first hex digits
CHECKSUM_BYTES = 16


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of `encoder` (name, dtype, shape, bytes) and torch's version."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION} torch {torch.__version__}".encode())
    hash_tensors(digest, encoder)
    return digest.hexdigest()


def _checksum(frames: torch.Tensor) -> str:
    return hashlib.blake2b(tensor_bytes(frames), digest_size=CHECKSUM_BYTES).hexdigest()


class EncoderOutputCache:
    """Per-utterance frames of one frozen encoder, read from `folder` or computed and stored there.

    Args:
        folder: the cache folder (created when missing); several encoders can share it.
        encoder: the frozen encoder of the model being trained (`SpeechLLM.encoder`).

    Raises:
        ValueError: some encoder parameter requires grad (a trained encoder changes every step).
    """

    def __init__(self, folder: str | Path, encoder: nn.Module) -> None:
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError(
                "data.encoder_cache needs a frozen encoder, but this one is trained "
                "(model.train_encoder: true): turn one of them off"
            )
        self.folder = Path(folder)
        self.encoder = encoder
        self.fingerprint = encoder_fingerprint(encoder)
        self.width = encoder.config.d_model
        self.dtype = next(encoder.parameters()).dtype
        self.hits = self.misses = 0

    def frames(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Encoder frames of a batch, each row from the cache or encoded alone.

        Args:
            mel: (B, n_mels, T) log-mel features, as `encode` takes them.
            mel_lengths: (B,) valid mel frames per row.

        Returns:
            (B, F, D) frames on mel's device, F = ceil(T / 2), zero past each row's
            `encoder_output_lengths`: what `encode(encoder, mel, mel_lengths)[0]` gives, up to
            float rounding.
        """
        frame_lengths = encoder_output_lengths(mel_lengths.cpu()).tolist()
        width = int(encoder_output_lengths(torch.tensor(mel.shape[-1])))
        batch = torch.zeros(mel.shape[0], width, self.width, dtype=self.dtype, device=mel.device)
        for row, (length, frame_length) in enumerate(
            zip(mel_lengths.tolist(), frame_lengths, strict=True)
        ):
            batch[row, :frame_length] = self._row(mel[row : row + 1, :, :length], frame_length)
        return batch

    def _row(self, mel: torch.Tensor, frame_length: int) -> torch.Tensor:
        """(F_b, D) frames of one row (1, n_mels, T_b)."""
        digest = hashlib.sha256(self.fingerprint.encode())
        digest.update(f"{tuple(mel.shape)} {mel.dtype}".encode())
        digest.update(tensor_bytes(mel))
        key = digest.hexdigest()
        path = self.folder / key[:FAN_OUT_CHARS] / f"{key}{FILE_SUFFIX}"
        frames = self._read(path, frame_length) if path.is_file() else None
        if frames is not None:
            self.hits += 1
            return frames.to(mel.device)
        self.misses += 1
        with torch.no_grad():
            frames = encode(self.encoder, mel)[0][0]  # (F_b, D): the row alone, all valid
        self._write(path, frames)
        return frames

    def _read(self, path: Path, frame_length: int) -> torch.Tensor | None:
        """The stored frames, or None (with a warning) when the file cannot be used."""
        try:
            with safe_open(path, framework="pt") as handle:
                frames = handle.get_tensor("frames")
                checksum = (handle.metadata() or {}).get("checksum")
        except (OSError, SafetensorError) as error:
            problem = f"cannot be read ({error})"
        else:
            if frames.shape != (frame_length, self.width) or frames.dtype != self.dtype:
                problem = f"holds {tuple(frames.shape)} {frames.dtype} frames"
            elif checksum != _checksum(frames):
                problem = "fails its checksum"
            else:
                return frames
        warnings.warn(f"encoder cache file {path} {problem}: recomputing it", stacklevel=3)
        return None

    def _write(self, path: Path, frames: torch.Tensor) -> None:
        frames = frames.detach().contiguous().cpu()
        try:
            with atomic_path(path) as temporary:
                save_file({"frames": frames}, str(temporary), {"checksum": _checksum(frames)})
        except OSError as error:
            warnings.warn(f"cannot write encoder cache file {path}: {error}", stacklevel=3)


def fill_encoder_cache(
    model: nn.Module, cfg: Config, utterances: Sequence[Utterance], folder: str | Path
) -> tuple[float, float]:
    """Store in `folder` what it lacks of the frames of `model.encoder` (a `SpeechLLM`'s) for
    every loadable utterance, read as `cfg.audio` says (an utterance whose audio fails is left
    to the decoding, which records it); returns (seconds taken, seconds of audio)."""
    cache = EncoderOutputCache(folder, model.encoder)
    start, audio_seconds = time.perf_counter(), 0.0
    for batch in make_batches(utterances, batch_size=cfg.inference.batch_size, max_duration=None):
        waves = []
        for utterance in batch:
            try:
                waves.append(
                    load_wave(
                        utterance, max_seconds=cfg.audio.max_seconds, too_long=cfg.audio.too_long
                    )
                )
            except AudioError:
                continue  # the mode records it as failed
        if not waves:
            continue
        mel, mel_lengths = batch_features(
            waves,
            cfg.audio.n_mels,
            pad_to_30s=cfg.audio.pad_to_30s,
            min_seconds=cfg.audio.min_seconds,
        )
        with torch.inference_mode():
            cache.frames(mel.to(model.prompt_ids.device), mel_lengths)
        audio_seconds += sum(len(wave) for wave in waves) / SAMPLE_RATE
    return time.perf_counter() - start, audio_seconds
