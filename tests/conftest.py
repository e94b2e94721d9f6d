"""Shared fixtures: tiny model directories in the real formats, synthetic speech, the tiny config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from whisper_llada.config import Config, load_config
from whisper_llada.data.audio import load_audio
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.models.tiny_models import write_tiny_llada, write_tiny_llama, write_tiny_whisper

REPO = Path(__file__).resolve().parent.parent

# (text, espeak voice, words per minute): lengths differ so batches mix short and long audio.
UTTERANCES = (
    ("the quick brown fox jumps over the lazy dog", "en-us", 170),
    ("seven purple kites", "en-gb", 140),
    (
        "a long sentence about rivers and mountains and the people who walk between them",
        "en-us",
        190,
    ),
)


@dataclass(frozen=True)
class TinyModels:
    whisper: Path
    llada: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny_models")
    return TinyModels(write_tiny_whisper(root / "whisper"), write_tiny_llada(root / "llada"))


@pytest.fixture(scope="session")
def tiny_config(tiny_models) -> Callable[..., Config]:
    """configs/tiny.yaml pointed at the session's tiny model directories, plus overrides."""

    def make(*overrides: str) -> Config:
        paths = [
            f"model.whisper_path={tiny_models.whisper}",
            f"model.llada_path={tiny_models.llada}",
        ]
        return load_config(REPO / "configs" / "tiny.yaml", [*paths, *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny random LLaMA directory in Meta-Llama-3-8B-Instruct's format."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "llama")


# configs/tiny.yaml as the causal baseline (model.llm=llama): same encoder and projector, no CTC head.
TINY_AR = ("model.llm=llama", "model.llada_path=''", "model.ctc.enabled=false")


@pytest.fixture(scope="session")
def tiny_ar_config(tiny_models, tiny_llama) -> Callable[..., Config]:
    """configs/tiny.yaml as Whisper-LLaMA on the session's tiny directories, decode.mode=autoregressive."""

    def make(*overrides: str) -> Config:
        paths = [f"model.whisper_path={tiny_models.whisper}", f"model.llama_path={tiny_llama}"]
        ar = [*TINY_AR, "decode.mode=autoregressive"]
        return load_config(REPO / "configs" / "tiny.yaml", [*paths, *ar, *overrides])

    return make


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> list[tuple[object, str]]:
    """Synthesised utterances as (16 kHz waveform, transcript)."""
    root = tmp_path_factory.mktemp("speech")
    return [
        (load_audio(synthesize(text, root / f"u{i}.flac", voice=voice, rate_wpm=rate)), text)
        for i, (text, voice, rate) in enumerate(UTTERANCES)
    ]
