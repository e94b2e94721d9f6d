"""Export a cut manifest of whole-file utterances to the authors' JSON annotation format.

    python data/export_authors_json.py data/manifests/librispeech/librispeech_cuts_test-clean.jsonl.gz data/test_clean.json

writes {"annotation": [{"path": <audio file>, "text": <transcript>}, ...]}, the format the
Whisper-LLaDA authors' code reads. Segments of longer recordings (VoxPopuli) cannot be expressed
in it and are an error.
"""

from __future__ import annotations

import argparse

from whisper_llada.data.authors_json import export_authors_json
from whisper_llada.data.corpora import CorpusError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("cuts", help="a lhotse CutSet (.jsonl.gz)")
    parser.add_argument("out_json", help="the JSON file to write")
    args = parser.parse_args(argv)
    try:
        print(export_authors_json(args.cuts, args.out_json))
    except CorpusError as error:  # the message says what to change
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
