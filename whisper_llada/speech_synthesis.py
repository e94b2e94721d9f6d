"""Synthetic speech: text to a 16 kHz mono FLAC with Debian's espeak-ng and sox.

No speech corpus can be downloaded where this project is developed and tested, so every path that
reads audio is exercised on speech made here. Voices, speaking rates and pitches vary the signal.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

SAMPLE_RATE = 16000
DEFAULT_VOICE = "en-us"
DEFAULT_RATE_WPM = 160  # espeak-ng's default speaking rate, words per minute
DEFAULT_PITCH = 50  # espeak-ng's pitch scale, 0..99


def require_tools() -> None:
    """Raise a clear error when espeak-ng or sox is not installed."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"speech synthesis needs {' and '.join(missing)}: install with "
            f"`apt-get install {' '.join(missing)}` (setup.sh does this)"
        )


def synthesize(
    text: str,
    out_path: str | Path,
    *,
    voice: str = DEFAULT_VOICE,
    rate_wpm: int = DEFAULT_RATE_WPM,
    pitch: int = DEFAULT_PITCH,
) -> Path:
    """Speak `text` into `out_path` (FLAC, 16 kHz, mono, 16 bit). Deterministic for its inputs."""
    require_tools()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "espeak.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        partial = out_path.with_suffix(".partial.flac")
        subprocess.run(
            ["sox", str(wav), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(partial)],
            check=True,
            capture_output=True,
        )
        partial.replace(out_path)
    return out_path
