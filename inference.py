"""Batch decoding from YAML, sharded over torchrun ranks and resumable.

    python inference.py configs/decode/<mode>.yaml [section.key=value ...]
    torchrun --nproc_per_node=N inference.py configs/decode/<mode>.yaml [...]

The command is `whisper_llada.evaluation.inference` (also `whisper-llada decode`); this file is
its entry point at the repository root.
"""

from whisper_llada.evaluation.inference import main

if __name__ == "__main__":
    main()
