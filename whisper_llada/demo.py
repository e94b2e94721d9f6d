"""`python -m whisper_llada.demo [retrain | retrain-ar] ...`: the README's main job, as `whisper-llada demo`.

The demo is a recipe of the repository (recipes/demo/), which the library never imports: this
runs `python -m recipes.demo` with the same arguments in the checkout it is started from.
"""

import sys

from whisper_llada.cli import demo

if __name__ == "__main__":
    sys.exit(demo(sys.argv[1:]))
