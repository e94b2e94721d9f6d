"""Prepare Common Voice (English) into lhotse cut manifests, offline; older releases work too.

    python data/prepare_commonvoice.py --corpus-dir /data/cv-corpus-13.0-2023-03-09 --output-dir data/manifests/commonvoice

expects <corpus-dir>/en/clips/ and <corpus-dir>/en/{train,dev,test}.tsv, and writes
<output-dir>/commonvoice_cuts_<split>.jsonl.gz and commonvoice_preparation.json. Releases before
13.0 lack the `variant` column lhotse's recipe reads: it gets patched copies of the TSVs, the
corpus is never modified. Texts default to LibriSpeech's style (upper case, no punctuation);
--casing / --punctuation change that. The recipe spawns worker processes, hence the __main__ guard.
"""

from __future__ import annotations

import argparse
import logging

from whisper_llada.data.corpora import (
    COMMONVOICE_DEFAULT_SPLITS,
    COMMONVOICE_SPLITS,
    CorpusError,
    prepare_commonvoice,
)
from whisper_llada.data.text_policy import CASINGS, LIBRISPEECH_STYLE, PUNCTUATIONS, TextPolicy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-dir", required=True, help="a release folder holding en/")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--splits", nargs="+", choices=COMMONVOICE_SPLITS, default=list(COMMONVOICE_DEFAULT_SPLITS)
    )
    parser.add_argument("--casing", choices=CASINGS, default=LIBRISPEECH_STYLE.casing)
    parser.add_argument(
        "--punctuation", choices=PUNCTUATIONS, default=LIBRISPEECH_STYLE.punctuation
    )
    parser.add_argument("--num-jobs", type=int, default=4, help="processes reading audio headers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    policy = TextPolicy(casing=args.casing, punctuation=args.punctuation)
    try:
        paths = prepare_commonvoice(
            args.corpus_dir, args.output_dir, args.splits, policy, num_jobs=args.num_jobs
        )
    except CorpusError as error:  # the message says what to change
        parser.exit(2, f"error: {error}\n")
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
