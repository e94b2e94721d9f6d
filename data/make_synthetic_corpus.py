"""Build a synthetic speech corpus (espeak-ng + sox) in LibriSpeech's layout.

    python data/make_synthetic_corpus.py --root data/synthetic --seed 0 --train 400 --dev 50 --test 50

writes data/synthetic/{train-clean-100,dev-clean,test-clean}/<speaker>/<chapter>/..., which
data/prepare_librispeech.py (lhotse's LibriSpeech recipe) turns into cut manifests:

    python data/prepare_librispeech.py --corpus-dir data/synthetic --output-dir data/manifests/synthetic

Running it again with the same arguments does nothing; other arguments on an existing root are an
error. Give the test split a voice unseen in training with e.g. `--test-voices en-gb-x-rp+f4`.
"""

from __future__ import annotations

import argparse
import logging

from whisper_llada.data.sentences import (
    DEFAULT_MAX_WORDS,
    DEFAULT_MIN_WORDS,
    DEFAULT_RANDOM_ORDER_SHARE,
    DEFAULT_VOCABULARY_SIZE,
)
from whisper_llada.data.speech_synthesis import DEFAULT_PITCHES, DEFAULT_RATES_WPM, DEFAULT_VOICES
from whisper_llada.data.synthetic_corpus import DEFAULT_WORKERS, build_synthetic_corpus

SPLIT_NAMES = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
CLEAN = "clean"  # in --snrs-db: no noise


def _list(kind):
    """A comma-separated list of `kind` values."""
    return lambda text: [kind(item) for item in text.split(",") if item]


def _snr(text: str) -> float | None:
    return None if text == CLEAN else float(text)


def _join(values) -> str:
    return ",".join(str(v) for v in values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="corpus folder to create")
    parser.add_argument("--seed", type=int, required=True)
    for short, split in SPLIT_NAMES.items():
        parser.add_argument(
            f"--{short}", type=int, default=0, help=f"utterances in {split} (0: no such split)"
        )
        parser.add_argument(
            f"--{short}-voices",
            type=_list(str),
            help=f"espeak-ng voices of {split} (default: --voices)",
        )
    parser.add_argument(
        "--voices",
        type=_list(str),
        default=list(DEFAULT_VOICES),
        help=f"espeak-ng voices, comma-separated (default: {_join(DEFAULT_VOICES)})",
    )
    parser.add_argument(
        "--rates-wpm",
        type=_list(int),
        default=list(DEFAULT_RATES_WPM),
        help=f"speaking rates (default: {_join(DEFAULT_RATES_WPM)})",
    )
    parser.add_argument(
        "--pitches",
        type=_list(int),
        default=list(DEFAULT_PITCHES),
        help=f"espeak-ng pitches 0..99 (default: {_join(DEFAULT_PITCHES)})",
    )
    parser.add_argument(
        "--speeds",
        type=_list(float),
        default=[1.0],
        help="sox speed factors, one drawn per utterance (e.g. 0.9,1.0,1.1)",
    )
    parser.add_argument(
        "--snrs-db",
        type=_list(_snr),
        default=[None],
        help=f"white-noise SNRs in dB, one drawn per utterance; '{CLEAN}' = none (e.g. {CLEAN},20,10)",
    )
    parser.add_argument("--vocabulary-size", type=int, default=DEFAULT_VOCABULARY_SIZE)
    parser.add_argument("--min-words", type=int, default=DEFAULT_MIN_WORDS)
    parser.add_argument("--max-words", type=int, default=DEFAULT_MAX_WORDS)
    parser.add_argument(
        "--random-order-share",
        type=float,
        default=DEFAULT_RANDOM_ORDER_SHARE,
        help="share of random word sequences",
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="espeak-ng + sox pipelines at a time"
    )
    args = parser.parse_args(argv)

    splits, voices = {}, {}
    for short, split in SPLIT_NAMES.items():
        if getattr(args, short) > 0:
            splits[split] = getattr(args, short)
            voices[split] = getattr(args, f"{short}_voices") or args.voices
    if not splits:
        parser.error("give at least one of --train, --dev, --test a positive count")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        build_synthetic_corpus(
            args.root, splits, seed=args.seed, vocabulary_size=args.vocabulary_size,
            min_words=args.min_words, max_words=args.max_words,
            random_order_share=args.random_order_share, voices=voices, rates_wpm=args.rates_wpm,
            pitches=args.pitches, speeds=args.speeds, snrs_db=args.snrs_db, workers=args.workers,
        )  # fmt: skip
    except ValueError as error:  # a bad argument: the message says what to change
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
