"""Training entry point (torchrun DDP): arrives with issue #4 (data preparation and train.py).

Until then, `python -m whisper_llada.smoke CONFIG` builds the model from a config and takes one
training step with `whisper_llada.objective.training_loss`.
"""

import sys

if __name__ == "__main__":
    sys.exit(
        "train.py is not available yet (issue #4); see `python -m whisper_llada.smoke --help`."
    )
