"""The models: Whisper encoder, projectors, LLaDA and LLaMA, the composite speech LLMs, their builders, checkpoints, exports and weight converters."""
