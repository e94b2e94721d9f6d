"""Training from a YAML recipe, on one device or under torchrun DDP, resumable with its full state.

    python train.py configs/tiny_train.yaml [section.key=value ...] [--stop-at STEP]
    torchrun --nproc_per_node=8 train.py configs/whisper_llada.yaml train.output_dir=exp/wl

The loop is `whisper_llada.training.loop` (also `python -m whisper_llada.training`); this file is
its entry point at the repository root.
"""

from whisper_llada.training.loop import main

if __name__ == "__main__":
    main()
