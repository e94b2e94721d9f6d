"""Training: the objectives and losses, optimiser and schedule, resumable train state, the training loop (`python -m whisper_llada.training`) and its launcher."""
