"""whisper_llada: speech recognition with diffusion language models (Whisper-LLaDA, dLLM-ASR).

`load_model(...).transcribe(...)` is the Python API (`whisper_llada.api`), `whisper-llada` the
command (`whisper_llada.cli`); the subpackages are the layers, lowest first: utils, models, data,
decoding, evaluation, training (README, "Layout").

Dimension legend used in every shape comment of the package:
    B batch, T mel frames, F encoder frames, A audio vectors, L text tokens,
    D width, V vocabulary, H heads.
"""

__all__ = ["Recognizer", "Transcript", "load_model"]


def __getattr__(name: str):
    """`from whisper_llada import load_model`: the API (whisper_llada.api), imported when first
    asked for, so that `import whisper_llada.config` does not load torch and the models."""
    if name in __all__:
        from whisper_llada import api

        return getattr(api, name)
    raise AttributeError(f"module 'whisper_llada' has no attribute {name!r}")
