"""Prepare LibriSpeech (or the synthetic corpus, which shares its layout) into lhotse cut manifests.

    python data/prepare_librispeech.py --corpus-dir /data/LibriSpeech --output-dir data/manifests/librispeech
    python data/prepare_librispeech.py --corpus-dir data/synthetic --output-dir data/manifests/synthetic

writes <output-dir>/librispeech_cuts_<part>.jsonl.gz for every part found (or those given with
--parts dev-clean test-clean ...) and librispeech_preparation.json, the record of what they were
made from. Offline: nothing is downloaded. The transcripts stay as they are by default (upper case
without punctuation, what Whisper-LLaDA trained on); --casing / --punctuation change that. Running
it again with the same arguments reuses the manifests; other arguments prepare them again.
"""

from __future__ import annotations

import argparse
import logging

from whisper_llada.data.corpora import LIBRISPEECH_PARTS, CorpusError, prepare_librispeech
from whisper_llada.data.text_policy import (
    CASINGS,
    LIBRISPEECH_TEXT_POLICY,
    PUNCTUATIONS,
    TextPolicy,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-dir", required=True, help="the folder holding the part folders")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--parts", nargs="+", choices=LIBRISPEECH_PARTS, help="default: all found")
    parser.add_argument("--casing", choices=CASINGS, default=LIBRISPEECH_TEXT_POLICY.casing)
    parser.add_argument(
        "--punctuation", choices=PUNCTUATIONS, default=LIBRISPEECH_TEXT_POLICY.punctuation
    )
    parser.add_argument("--num-jobs", type=int, default=4, help="threads reading audio headers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    policy = TextPolicy(casing=args.casing, punctuation=args.punctuation)
    try:
        paths = prepare_librispeech(
            args.corpus_dir, args.output_dir, args.parts, policy, num_jobs=args.num_jobs
        )
    except CorpusError as error:  # the message says what to change
        parser.exit(2, f"error: {error}\n")
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
