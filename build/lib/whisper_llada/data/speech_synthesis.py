"""Synthetic speech: text to a 16 kHz mono FLAC with Debian's espeak-ng and sox.

No speech corpus can be downloaded where this project is developed and tested, so every path that
reads audio is exercised on speech made here. Voices, speaking rates and pitches vary the signal;
speed perturbation (sox's `speed`: tempo and pitch together, as Kaldi-style 0.9/1.1 perturbation)
and additive white noise at a chosen SNR vary it further.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
DEFAULT_VOICE = "en-us"
DEFAULT_RATE_WPM = 160  # espeak-ng's default speaking rate, words per minute
DEFAULT_PITCH = 50  # espeak-ng's pitch scale, 0..99
UNCHANGED_SPEED = 1.0
# The largest float that 16-bit PCM represents: (2**15 - 1) / 2**15. Noisy audio is clipped to
# [-1, PCM16_MAX] before writing, because libsndfile wraps (not clips) out-of-range floats.
PCM16_MAX = 32767 / 32768


def require_tools() -> None:
    """Raise a clear error when espeak-ng or sox is not installed."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"speech synthesis needs {' and '.join(missing)}: install with "
            f"`apt-get install {' '.join(missing)}` (setup.sh does this)"
        )


def _run(command: list[str | Path]) -> None:
    """Run an espeak-ng or sox command; on failure raise with the tool's own error message."""
    args = [str(part) for part in command]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{args[0]} failed (exit {done.returncode}): {done.stderr.strip()}\n"
            f"command: {' '.join(args)}"
        )


def add_noise(wave: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Add Gaussian white noise at `snr_db` dB below the mean power of the whole `wave` (N,).

    The signal power includes the pauses espeak-ng leaves around speech, so the SNR over the
    speech alone is slightly higher. Returns float64 (N,), clipped to the 16-bit PCM range.
    """
    signal_power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    noise_std = math.sqrt(signal_power / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).standard_normal(wave.shape) * noise_std
    return np.clip(wave + noise, -1.0, PCM16_MAX)


def synthesize(
    text: str,
    out_path: str | Path,
    *,
    voice: str = DEFAULT_VOICE,
    rate_wpm: int = DEFAULT_RATE_WPM,
    pitch: int = DEFAULT_PITCH,
    speed: float = UNCHANGED_SPEED,
    snr_db: float | None = None,
    noise_seed: int = 0,
) -> Path:
    """Speak `text` into `out_path` (FLAC, 16 kHz, mono, 16 bit). Deterministic for its inputs.

    Args:
        text: what to say.
        out_path: the FLAC file to write (parent folders are created; written under a temporary
            name, then renamed, so an interrupted call leaves no half file at `out_path`).
        voice: an espeak-ng voice, optionally with a variant (`en-gb`, `en-us+f3`).
        rate_wpm: speaking rate in words per minute.
        pitch: espeak-ng's pitch, 0..99.
        speed: sox `speed` factor (1.1 = 10 % faster and higher); 1.0 leaves the audio as spoken.
        snr_db: when given, white noise is added at this signal-to-noise ratio (see `add_noise`).
        noise_seed: seed of the noise, so noisy audio is reproducible too.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive (1.0 = unchanged), got {speed}")
    require_tools()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_suffix(".partial.flac")
    speed_effect = [] if speed == UNCHANGED_SPEED else ["speed", str(speed)]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "espeak.wav"
        _run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-w", wav, text])
        # -R: sox seeds its dither with a fixed number, otherwise every run differs in the last bit.
        sox = ["sox", "-R", str(wav), "-r", str(SAMPLE_RATE), "-c", "1"]
        if snr_db is None:
            _run([*sox, "-b", "16", str(partial), *speed_effect])
        else:
            clean = Path(tmp) / "clean.wav"
            _run([*sox, "-e", "floating-point", "-b", "32", str(clean), *speed_effect])
            wave, _ = sf.read(clean, dtype="float64")
            noisy = add_noise(wave, snr_db, noise_seed)
            sf.write(partial, noisy, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        partial.replace(out_path)
    return out_path


DEFAULT_VOICES = (
    "en-us", "en-us+f3", "en-us+m3", "en-gb", "en-gb+f2", "en-gb+m7", "en-gb-scotland",
    "en-gb-scotland+f4", "en-gb-x-rp+m1", "en-029", "en-029+f1", "en-us-nyc+m5",
    "en-gb-x-gbclan+f5", "en-gb-x-gbcwmd+m2",
)  # fmt: skip
DEFAULT_RATES_WPM = (130, 160, 190)
DEFAULT_PITCHES = (35, 50, 65)
PITCH_RANGE = (0, 99)  # espeak-ng's pitch scale
MBROLA_PREFIX = "mb/"  # voices that need the separate mbrola program and voice files
VARIANT_PREFIX = "!v/"
TRAILING_LANGUAGES = re.compile(r"(\s*\([^)]*\))*\s*$")  # "(en-us 5)" after a voice's file


def _espeak_voice_rows(language: str) -> list[list[str]]:
    """`espeak-ng --voices=<language>` as rows: priority, language, age/gender, name, file..."""
    require_tools()
    listing = subprocess.run(
        ["espeak-ng", f"--voices={language}"], capture_output=True, text=True, check=True
    )
    return [line.split(None, 4) for line in listing.stdout.splitlines()[1:]]


@functools.cache
def english_voices() -> tuple[str, ...]:
    """espeak-ng's English voices that work without mbrola, e.g. ('en-029', 'en-gb', ...)."""
    rows = _espeak_voice_rows("en")
    return tuple(
        sorted({r[1] for r in rows if r[1] != "variant" and not r[4].startswith(MBROLA_PREFIX)})
    )


@functools.cache
def voice_variants() -> tuple[str, ...]:
    """espeak-ng's voice variants, used as `<voice>+<variant>` (e.g. 'f3', 'm7', 'klatt')."""
    files = [TRAILING_LANGUAGES.sub("", r[4]) for r in _espeak_voice_rows("variant")]
    return tuple(sorted(f.removeprefix(VARIANT_PREFIX) for f in files))


def check_voice(voice: str) -> None:
    """Raise a clear error for a voice espeak-ng lacks (it silently ignores unknown variants)."""
    base, _, variant = voice.partition("+")
    if base not in english_voices():
        known = ", ".join(english_voices())
        raise ValueError(f"unknown espeak-ng voice {base!r} in {voice!r}; English voices: {known}")
    if variant and variant not in voice_variants():
        known = ", ".join(voice_variants())
        raise ValueError(f"unknown espeak-ng variant {variant!r} in {voice!r}; variants: {known}")
