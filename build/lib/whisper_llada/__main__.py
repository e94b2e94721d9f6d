"""`python -m whisper_llada ...`: the `whisper-llada` command (see whisper_llada/cli.py)."""

import sys

from whisper_llada.cli import main

sys.exit(main())
