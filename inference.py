"""Batch decoding from YAML: arrives with issue #3 (decoding modes and inference.py)."""

import sys

if __name__ == "__main__":
    sys.exit("inference.py is not available yet (issue #3).")
