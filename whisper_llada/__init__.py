"""whisper_llada: speech recognition with diffusion language models (Whisper-LLaDA, dLLM-ASR).

Dimension legend used in every shape comment of the package:
    B batch, T mel frames, F encoder frames, A audio vectors, L text tokens,
    D width, V vocabulary, H heads.
"""
