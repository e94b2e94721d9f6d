"""Log-mel feature cache: each utterance's features computed once, stored on disk, read back bit for bit.

Training reads the same utterances every epoch, and decoding, resampling and the log-mel
transform of each one cost the DataLoader workers a large share of a CPU core. With
`data.feature_cache` set, `SpeechDataset` takes each utterance's features from a FeatureCache.

What is cached: the row `audio.batch_features` computes for the utterance, which is the row it
computes inside any batch, since batch_features computes every row alone (Whisper's clamp at the
utterance's own maximum - 8 included) and only then pads the batch, each row with its own
minimum. Rows are therefore cached for both settings of `audio.pad_to_30s`: with padding the row
is the log-mel of the 30 s zero-padded wave (its frames near the clip's end see the zeros, so it
is *not* a padded copy of the true-length row, which is why pad_to_30s is part of the key).
`stack_features` pads cached rows exactly as batch_features does, so a batch built from the
cache is `torch.equal` to one computed from the audio.

One safetensors file per utterance, `<folder>/<digest[:2]>/<digest>.safetensors`, the digest a
SHA-256 of a key that holds everything that determines the row: the cut id, the absolute audio path, the file's
size and mtime_ns, the segment (start, duration), every field of AudioConfig, the versions of the
libraries that decode and transform the audio, and FORMAT_VERSION. An edited audio file or a
changed setting is a miss, never a stale hit (a file rewritten with the same size and the same
mtime_ns goes unnoticed, as with make). Trailing frames equal to the row's minimum (most of a
30 s row of a short clip: the zero padding after the clamp) are not stored; the file holds the
frames before them, that minimum and the row's length, which rebuild the row exactly.

Files are written atomically (a temporary file beside the target, then a rename), so workers and
ranks that miss the same utterance at once each write the same bytes and readers never see half
a file. A file that cannot be read, belongs to another key or fails its checksum is recomputed
with a warning; a file that cannot be written costs a warning, not the run. Missing or corrupt
audio raises AudioError exactly as without the cache (no file is written for it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from whisper.version import __version__ as whisper_version

from whisper_llada.config import AudioConfig
from whisper_llada.data.audio import SAMPLE_RATE, batch_features
from whisper_llada.data.manifest import Utterance, load_wave
from whisper_llada.utils.atomic_write import atomic_path

# Bump when what a file holds or how a row is computed changes: every old file becomes a miss.
FORMAT_VERSION = 1
FILE_SUFFIX = ".safetensors"
FAN_OUT_CHARS = 2  # files spread over 256 subfolders named by the key's first hex digits
CHECKSUM_BYTES = 16  # blake2b digest of the stored tensors, against silent corruption


@dataclass(frozen=True)
class UtteranceFeatures:
    """One utterance's log-mel row and the length of the waveform it came from.

    Attributes:
        mel: (n_mels, T_b) float32, the row batch_features computes for this utterance.
        samples: waveform samples at 16 kHz after the too-long policy, before any padding.
    """

    mel: torch.Tensor
    samples: int

    @property
    def seconds(self) -> float:
        """Duration of the loaded audio in seconds (before any padding)."""
        return self.samples / SAMPLE_RATE


def utterance_features(utt: Utterance, audio_cfg: AudioConfig) -> UtteranceFeatures:
    """Compute one utterance's features from its audio with the project's rules.

    Raises:
        AudioError: the audio file is missing, unreadable or too long (too_long="error").
    """
    wave = load_wave(utt, max_seconds=audio_cfg.max_seconds, too_long=audio_cfg.too_long)
    mel, _ = batch_features(
        [wave],
        audio_cfg.n_mels,
        pad_to_30s=audio_cfg.pad_to_30s,
        min_seconds=audio_cfg.min_seconds,
    )  # (1, n_mels, T_b): a batch of one is its row, unpadded
    return UtteranceFeatures(mel[0], len(wave))


def stack_features(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows into a batch exactly as `audio.batch_features` pads its rows.

    Each row is right-padded to the longest with its own minimum (what silence becomes after
    Whisper's max - 8 clamp); tests check the result equals batch_features' bit for bit.

    Args:
        rows: B float32 tensors (n_mels, T_b), as `UtteranceFeatures.mel`.

    Returns:
        mel: (B, n_mels, T) float32, T = max T_b.
        mel_lengths: (B,) int64, T_b per row.
    """
    if len(rows) == 0:
        raise ValueError("rows is empty; stack_features needs at least one row")
    mel_lengths = torch.tensor([row.shape[-1] for row in rows], dtype=torch.int64)  # (B,)
    mel = torch.empty(len(rows), rows[0].shape[0], int(mel_lengths.max()), dtype=torch.float32)
    for index, row in enumerate(rows):
        mel[index, :, : row.shape[-1]] = row
        mel[index, :, row.shape[-1] :] = row.min()
    return mel, mel_lengths


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of what decodes (libsndfile, soxr) and transforms (torch, numpy, whisper's filters)."""
    return {
        "libsndfile": sf.__libsndfile_version__,
        "soxr": soxr.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "whisper": whisper_version,
    }


class CorruptCacheFile(ValueError):
    """A cache file that cannot be used; the message says why."""


class FeatureCache:
    """Per-utterance log-mel rows, read from `folder` or computed and stored there.

    Args:
        folder: the cache folder (created when missing); one cache can hold rows of several
            audio settings, as the settings are part of every key.
        audio_cfg: the audio settings the rows are computed with.
    """

    def __init__(self, folder: str | os.PathLike[str], audio_cfg: AudioConfig) -> None:
        self.folder = Path(folder)
        self.audio_cfg = audio_cfg
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"cannot create the feature cache folder {self.folder} ({error}): set "
                'data.feature_cache to a writable folder, or to "" to compute features every time'
            ) from error

    def features(self, utt: Utterance) -> UtteranceFeatures:
        """The utterance's features: from its cache file, else computed and stored.

        Raises:
            AudioError: as `utterance_features` (missing, unreadable or too long audio).
        """
        try:
            key = self.key(utt)
        except OSError:  # no audio file to stat: load_wave raises the usual AudioError
            return utterance_features(utt, self.audio_cfg)
        path = self.path(key)
        try:
            return self._read(path, key)
        except FileNotFoundError:
            pass  # a miss: computed and stored below
        except CorruptCacheFile as error:
            warnings.warn(f"{path}: {error}; recomputing it", stacklevel=2)
        features = utterance_features(utt, self.audio_cfg)
        self._write(path, key, features)
        return features

    def key(self, utt: Utterance) -> str:
        """The JSON text that names the utterance's row (its SHA-256 names the file).

        Raises:
            OSError: the audio file cannot be stat'ed.
        """
        stat = os.stat(utt.audio)
        fields = {
            "format": FORMAT_VERSION,
            "id": utt.id,
            "audio": os.path.abspath(utt.audio),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "start": utt.start,
            "duration": utt.duration,
            # Every AudioConfig field: a new field that does not change features costs one
            # recomputation, one that does cannot give stale rows.
            "audio_cfg": asdict(self.audio_cfg),
            "libraries": library_versions(),
        }
        return json.dumps(fields, sort_keys=True)

    def path(self, key: str) -> Path:
        """The cache file of `key`."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.folder / digest[:FAN_OUT_CHARS] / f"{digest}{FILE_SUFFIX}"

    def _read(self, path: Path, key: str) -> UtteranceFeatures:
        """Rebuild the row stored in `path`.

        Raises:
            FileNotFoundError: no file (a miss).
            CorruptCacheFile: the file is not a sound cache file of `key`.
        """
        try:
            with safe_open(path, framework="pt") as file:
                header = file.metadata() or {}
                tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
        except FileNotFoundError:
            raise
        except (SafetensorError, OSError) as error:
            raise CorruptCacheFile(f"unreadable feature cache file ({error})") from error
        if header.get("key") != key:
            raise CorruptCacheFile("the feature cache file belongs to another utterance or setting")
        if set(tensors) != {"mel", "fill"} or not {"frames", "samples", "checksum"} <= set(header):
            raise CorruptCacheFile("the feature cache file lacks its tensors or metadata")
        kept, fill = tensors["mel"], tensors["fill"]  # (n_mels, K), ()
        if (
            kept.dtype != torch.float32
            or fill.dtype != torch.float32
            or kept.ndim != 2
            or fill.ndim != 0
            or kept.shape[0] != self.audio_cfg.n_mels
        ):
            raise CorruptCacheFile(
                f"the stored features are {kept.dtype} of shape {tuple(kept.shape)}, not "
                f"float32 rows of {self.audio_cfg.n_mels} mel bins"
            )
        if header["checksum"] != _checksum(kept, fill, header):
            raise CorruptCacheFile("the feature cache file fails its checksum")
        frames = int(header["frames"])  # a number: the checksum covers it
        mel = torch.full((kept.shape[0], frames), fill.item(), dtype=torch.float32)  # (n_mels, T_b)
        mel[:, : kept.shape[1]] = kept
        return UtteranceFeatures(mel, int(header["samples"]))

    def _write(self, path: Path, key: str, features: UtteranceFeatures) -> None:
        """Store the row without its trailing minimum frames, atomically; warn if it fails."""
        mel = features.mel  # (n_mels, T_b)
        fill = mel.min()
        differs = (mel != fill).any(dim=0).nonzero()  # (frames that differ from the minimum, 1)
        kept_frames = int(differs[-1]) + 1 if len(differs) else 0
        kept = mel[:, :kept_frames].contiguous()  # (n_mels, K)
        header = {"key": key, "frames": str(mel.shape[-1]), "samples": str(features.samples)}
        header["checksum"] = _checksum(kept, fill, header)
        try:
            with atomic_path(path) as tmp:
                save_file({"mel": kept, "fill": fill}, tmp, metadata=header)
        except OSError as error:
            warnings.warn(
                f"{path}: cannot write the feature cache file ({error}); training goes on, "
                "computing this utterance's features again next time",
                stacklevel=3,
            )


def _checksum(kept: torch.Tensor, fill: torch.Tensor, header: dict[str, str]) -> str:
    """blake2b hex digest of the stored tensors' bytes and the header's key, frames and samples."""
    digest = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    digest.update(kept.contiguous().numpy().tobytes())
    digest.update(fill.numpy().tobytes())
    digest.update(json.dumps([header["key"], header["frames"], header["samples"]]).encode("utf-8"))
    return digest.hexdigest()
