"""Audio front end: any audio file to 16 kHz mono, and Whisper's log-mel features.

Reading goes through soundfile (no ffmpeg binary needed) and soxr for resampling; the log-mel
features are openai-whisper's own `log_mel_spectrogram`, behind this project's input checks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
import whisper

from whisper_llada.config import CHUNK_SECONDS

SAMPLE_RATE = 16000  # Hz, the only rate Whisper's encoder was trained on
N_FFT = 400  # 25 ms STFT window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop: 16000 / 160 = 100 mel frames per second
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in a 30 s chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30 s chunk
# Float files may clip a little past full scale (resampling, mastering); a peak far beyond it is
# another scale, e.g. int16 values stored as floats (x32768), which decodes to nonsense.
MAX_SAMPLE_PEAK = 2.0

SUPPORTED_N_MELS = (80, 128)  # 80 bins for Whisper v1/v2, 128 for large-v3
# torch.stft(center=True) reflect-pads n_fft // 2 samples on each side, which needs a longer input.
MIN_SAMPLES = N_FFT // 2 + 1  # 201 samples, about 12.6 ms
# The encoder's second conv has stride 2, so true-length inputs carry an even frame count.
ENCODER_CONV_STRIDE = 2
FRAME_PAIR_SAMPLES = ENCODER_CONV_STRIDE * HOP_LENGTH  # 320 samples = 2 mel frames = 20 ms
RESAMPLE_QUALITY = "HQ"  # soxr's high-quality preset

TooLongPolicy = Literal["truncate", "error"]
_TOO_LONG_POLICIES: tuple[TooLongPolicy, ...] = ("truncate", "error")


class AudioError(ValueError):
    """A user-facing audio problem: the message names the file and what is wrong."""


def audio_seconds(wave: np.ndarray) -> float:
    """Duration in seconds of a 16 kHz waveform `wave` (N,)."""
    return len(wave) / SAMPLE_RATE


def load_audio(
    path: str | os.PathLike[str],
    *,
    max_seconds: float | None = CHUNK_SECONDS,
    too_long: TooLongPolicy = "truncate",
) -> np.ndarray:
    """Read any audio file soundfile understands as 16 kHz mono float32.

    Multi-channel audio is averaged over channels; other sample rates are resampled with soxr.

    Args:
        path: wav, flac, ogg, mp3 or any other format libsndfile reads.
        max_seconds: longest duration kept, in seconds; None for no limit. The default, 30 s,
            is Whisper-LLaDA's behaviour: every clip is cut to Whisper's window.
        too_long: what a longer file does: "truncate" keeps the first `max_seconds` and warns,
            "error" raises AudioError.

    Returns:
        wave: (N,) float32 at SAMPLE_RATE, N > 0.

    Raises:
        AudioError: the file is missing, unreadable, empty, holds NaN/inf samples or samples
            beyond +-MAX_SAMPLE_PEAK, or is too long with too_long="error".
    """
    if too_long not in _TOO_LONG_POLICIES:
        raise ValueError(f"too_long must be one of {_TOO_LONG_POLICIES}, got {too_long!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive or None (no limit), got {max_seconds}")
    if not os.path.exists(path):
        raise AudioError(f"{path}: audio file not found; check the path and the data manifest")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: not a regular file; give the path of an audio file")
    try:
        samples, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (N, channels)
    # soundfile raises TypeError (not SoundFileError) for header-less RAW files.
    except (sf.SoundFileError, TypeError) as error:
        raise AudioError(
            f"{path}: cannot read audio ({error}); the file is corrupt or not in a format "
            "libsndfile reads (wav, flac, ogg, mp3): re-encode it, e.g. to 16 kHz mono flac"
        ) from error
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file is empty (0 samples); remove it from the data")
    check_samples(samples, path)
    wave = samples.mean(axis=1, dtype=np.float32)  # (N,)
    if file_rate != SAMPLE_RATE:
        wave = soxr.resample(wave, file_rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    if max_seconds is not None:
        wave = _limit_duration(wave, path, max_seconds, too_long)
    return np.ascontiguousarray(wave, dtype=np.float32)


def check_samples(samples: np.ndarray, source: str | os.PathLike[str]) -> None:
    """Stop on NaN / inf samples, or a peak far beyond the [-1, 1] of float audio.

    Raises:
        AudioError: naming `source` (a file, or how the caller names a waveform).
    """
    if not np.isfinite(samples).all():
        raise AudioError(f"{source}: audio holds NaN or inf samples; re-encode or remove the file")
    peak = float(np.abs(samples).max())
    if peak > MAX_SAMPLE_PEAK:  # only float files can: integer ones read back within [-1, 1]
        raise AudioError(
            f"{source}: samples reach {peak:.4g}, far outside the [-1, 1] of float audio (e.g. "
            "floats written at int16 scale); rescale the file to [-1, 1] or store it as 16-bit PCM"
        )


def as_waveform(
    wave: np.ndarray, source: str, *, max_seconds: float | None, too_long: TooLongPolicy
) -> np.ndarray:
    """A waveform given in memory (16 kHz mono), checked and cut as `load_audio` does a file's.

    Returns:
        wave: (N,) float32, N > 0.

    Raises:
        AudioError: not a non-empty (N,) array, NaN / inf or out-of-range samples, or too long
            with too_long="error"; the message starts with `source`.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise AudioError(f"{source}: a waveform must be a non-empty (N,) array, got {wave.shape}")
    check_samples(wave, source)
    if max_seconds is not None:
        wave = _limit_duration(wave, source, max_seconds, too_long)
    return np.ascontiguousarray(wave)


def _limit_duration(
    wave: np.ndarray, path: str | os.PathLike[str], max_seconds: float, too_long: TooLongPolicy
) -> np.ndarray:
    """Apply the too-long policy to a 16 kHz `wave` (N,); returns (min(N, max samples),)."""
    max_samples = round(max_seconds * SAMPLE_RATE)
    if len(wave) <= max_samples:
        return wave
    message = (
        f"{path}: audio is {audio_seconds(wave):.2f} s, longer than the {max_seconds:g} s limit"
    )
    if too_long == "error":
        raise AudioError(
            f"{message}; split the file into clips of at most {CHUNK_SECONDS} s (the Whisper "
            "encoder's window), lower the limit, or pass too_long='truncate'"
        )
    warnings.warn(f"{message}; keeping the first {max_seconds:g} s", stacklevel=3)
    return wave[:max_samples]


def log_mel_spectrogram(audio: torch.Tensor, n_mels: int = 128) -> torch.Tensor:
    """Whisper's log-mel features of one utterance, equal to `whisper.log_mel_spectrogram`.

    STFT with a Hann window (the last frame dropped), power, mel filterbank, log10 of the
    power floored at 1e-10, clamped to 8 below its maximum (80 dB), then (x + 4) / 4. The
    maximum is this utterance's, so padding a clip changes its features.

    Args:
        audio: (N,) float32 waveform at 16 kHz, N >= MIN_SAMPLES, on any device.
        n_mels: 128 for whisper-large-v3, 80 for earlier Whisper models.

    Returns:
        mel: (n_mels, N // HOP_LENGTH) float32 on audio's device.
    """
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(
            f"n_mels must be one of {SUPPORTED_N_MELS} (128 for whisper-large-v3, 80 for "
            f"earlier Whisper models), got {n_mels}"
        )
    if audio.ndim != 1:
        raise ValueError(
            f"audio must be one mono waveform of shape (N,), got shape {tuple(audio.shape)}; "
            "use batch_features for a batch"
        )
    if audio.shape[0] < MIN_SAMPLES:
        raise ValueError(
            f"audio has {audio.shape[0]} samples, fewer than the {MIN_SAMPLES} the STFT needs; "
            "pad short clips (batch_features(min_seconds=...) does)"
        )
    return whisper.log_mel_spectrogram(audio.to(torch.float32), n_mels)


def batch_features(
    waves: Sequence[np.ndarray],
    n_mels: int = 128,
    *,
    pad_to_30s: bool = True,
    min_seconds: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features of a batch, each row computed alone so it equals a per-utterance call.

    Args:
        waves: B float waveforms (N_b,) at 16 kHz, as load_audio returns them.
        n_mels: 128 for whisper-large-v3, 80 for earlier Whisper models.
        pad_to_30s: True (Whisper-LLaDA, faithful): every wave is zero-padded to 30 s like
            `whisper.pad_or_trim`, so T = N_FRAMES and the padding is part of the input.
            False (true length): every wave is zero-padded to a whole number of encoder
            frames (FRAME_PAIR_SAMPLES), its log-mel computed alone, then right-padded to the
            longest row with that row's minimum (what silence becomes after the max - 8 clamp).
        min_seconds: shorter waves are first zero-padded to this duration (Whisper-LLaDA's
            training pads clips under 1 s); with pad_to_30s it changes nothing, as the
            30 s padding is zeros too.

    Returns:
        mel: (B, n_mels, T) float32.
        mel_lengths: (B,) int64, the number of valid frames per row (all N_FRAMES when
            pad_to_30s; even numbers otherwise).
    """
    if len(waves) == 0:
        raise ValueError("waves is empty; batch_features needs at least one waveform")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
    if pad_to_30s and min_seconds > CHUNK_SECONDS:
        raise ValueError(
            f"min_seconds={min_seconds} exceeds the {CHUNK_SECONDS} s window of pad_to_30s=True"
        )
    rows = []
    for index, wave in enumerate(waves):
        audio = _padded_audio(index, wave, pad_to_30s, round(min_seconds * SAMPLE_RATE))
        rows.append(log_mel_spectrogram(audio, n_mels))  # (n_mels, T_b)
    mel_lengths = torch.tensor([row.shape[-1] for row in rows], dtype=torch.int64)  # (B,)
    mel = torch.empty(len(rows), n_mels, int(mel_lengths.max()), dtype=torch.float32)
    for index, row in enumerate(rows):
        mel[index, :, : row.shape[-1]] = row
        mel[index, :, row.shape[-1] :] = row.min()
    return mel, mel_lengths


def _padded_audio(index: int, wave: np.ndarray, pad_to_30s: bool, min_samples: int) -> torch.Tensor:
    """Check wave `index` (N,) and zero-pad it for batch_features; returns (N',) float32."""
    wave = np.asarray(wave)
    if wave.ndim != 1 or wave.shape[0] == 0:
        raise ValueError(
            f"waves[{index}] has shape {wave.shape}; expected a non-empty mono waveform (N,) "
            "at 16 kHz, as load_audio returns"
        )
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(
            f"waves[{index}] has dtype {wave.dtype}; expected float samples in [-1, 1], "
            "as load_audio returns"
        )
    audio = torch.tensor(wave, dtype=torch.float32)  # (N,) copy: wave may be read-only
    if pad_to_30s:
        if audio.shape[0] > N_SAMPLES:
            raise ValueError(
                f"waves[{index}] is {audio_seconds(wave):.2f} s, longer than the "
                f"{CHUNK_SECONDS} s window; load it with load_audio(max_seconds={CHUNK_SECONDS}) "
                "or use pad_to_30s=False"
            )
        target = N_SAMPLES
    else:
        length = max(audio.shape[0], min_samples)
        target = -(-length // FRAME_PAIR_SAMPLES) * FRAME_PAIR_SAMPLES  # round up
    return F.pad(audio, (0, target - audio.shape[0]))
