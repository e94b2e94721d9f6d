"""Prepare VoxPopuli's English ASR data into lhotse cut manifests, offline.

    python data/prepare_voxpopuli.py --corpus-dir /data/voxpopuli --output-dir data/manifests/voxpopuli

expects /data/voxpopuli/raw_audios/en/<year>/<session>_original.ogg and
/data/voxpopuli/asr_en.tsv.gz (from https://dl.fbaipublicfiles.com/voxpopuli/annotations/asr/,
which lhotse's recipe would otherwise download), and writes
<output-dir>/voxpopuli_cuts_{train,dev,test}.jsonl.gz (one cut per segment) and
voxpopuli_preparation.json. Texts default to LibriSpeech's style (upper case, no punctuation);
--casing / --punctuation change that. Running it again with the same arguments reuses the
manifests; other arguments prepare them again.
"""

from __future__ import annotations

import argparse
import logging

from whisper_llada.data.corpora import VOXPOPULI_SPLITS, CorpusError, prepare_voxpopuli
from whisper_llada.data.text_policy import CASINGS, LIBRISPEECH_STYLE, PUNCTUATIONS, TextPolicy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-dir", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--splits", nargs="+", choices=VOXPOPULI_SPLITS, default=list(VOXPOPULI_SPLITS)
    )
    parser.add_argument("--casing", choices=CASINGS, default=LIBRISPEECH_STYLE.casing)
    parser.add_argument(
        "--punctuation", choices=PUNCTUATIONS, default=LIBRISPEECH_STYLE.punctuation
    )
    parser.add_argument("--num-jobs", type=int, default=4, help="workers reading audio headers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    policy = TextPolicy(casing=args.casing, punctuation=args.punctuation)
    try:
        paths = prepare_voxpopuli(
            args.corpus_dir, args.output_dir, args.splits, policy, num_jobs=args.num_jobs
        )
    except CorpusError as error:  # the message says what to change
        parser.exit(2, f"error: {error}\n")
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
