"""`python -m whisper_llada.training CONFIG [section.key=value ...] [--stop-at STEP]`: see loop.py."""

from whisper_llada.training.loop import main

main()
