"""The demo model's recipe: its synthetic corpus, its held-out test sets and its starting models.

The demo model (models/demo) is trained by `python -m recipes.demo retrain` in two stages
(configs/demo.yaml, then configs/demo_stage2.yaml) on the corpus of this module;
`python -m recipes.demo` rebuilds only the held-out sets and decodes them. Everything follows
from DEMO_SEED, so the rebuilt test sets are exactly those the model was evaluated on during
development, and their sentences never occur in training.

The corpus, in LibriSpeech's layout (so lhotse's recipe prepares it):
- train-clean-100: TRAIN_UTTERANCES sentences by the seen voices, lightly perturbed (speed and
  white noise, as data augmentation);
- dev-clean: validation during training (seen voices, clean);
- test-clean: seen voices, clean;
- test-other: one voice never heard in training, clean;
- dev-other: seen voices with strong speed and noise perturbation.
Half of all sentences are random word sequences, which no language model can predict: the model
has to listen. Splits are synthesised in sorted order ("train-*" last), so a corpus of the
held-out splits alone holds exactly the held-out utterances of the full corpus.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from whisper_llada.data.corpora import prepare_librispeech
from whisper_llada.data.sentences import SentenceGenerator
from whisper_llada.data.speech_synthesis import DEFAULT_VOICES
from whisper_llada.data.synthetic_corpus import (
    MARKER_NAME,
    CorpusSpec,
    build_synthetic_corpus,
    corpus_spec,
)
from whisper_llada.data.text_policy import LIBRISPEECH_TEXT_POLICY
from whisper_llada.models.tiny_models import write_tiny_llada, write_tiny_llama

DEMO_SEED = 2026
VOCABULARY_SIZE = 120
MIN_WORDS, MAX_WORDS = 3, 8
RANDOM_ORDER_SHARE = 0.5
TRAIN_UTTERANCES = 6000
UNSEEN_VOICE = "en-gb-x-rp+f4"  # no voice of DEFAULT_VOICES uses this accent with this variant

CLEAN = None  # an SNR entry: no noise
TRAIN_SPLIT = "train-clean-100"
HELD_OUT_SPLITS = {  # split -> (utterances, voices, speeds, SNRs in dB)
    "dev-clean": (100, DEFAULT_VOICES, (1.0,), (CLEAN,)),
    "dev-other": (100, DEFAULT_VOICES, (0.85, 1.15), (15.0, 10.0)),
    "test-clean": (200, DEFAULT_VOICES, (1.0,), (CLEAN,)),
    "test-other": (100, (UNSEEN_VOICE,), (1.0,), (CLEAN,)),
}
TRAIN_PERTURBATION = ((0.9, 1.0, 1.1), (CLEAN, CLEAN, 20.0))  # speeds, SNRs in dB
TEST_SETS = {  # what the demo reports, by the split that holds it
    "test-clean": "seen voices",
    "test-other": "unseen voice",
    "dev-other": "seen voices, speed 0.85/1.15 + noise 10-15 dB",
}

# The LLM's starting point: random, in LLaDA-8B's format; the recipe trains all of it (the
# encoder is the converted Whisper tiny.en, frozen).
LLADA_WIDTH, LLADA_LAYERS, LLADA_HEADS, LLADA_MLP = 256, 4, 4, 512


def demo_corpus_spec(
    *,
    with_train: bool,
    train_utterances: int = TRAIN_UTTERANCES,
    held_out_utterances: int | None = None,
) -> CorpusSpec:
    """The demo corpus's parameters: the held-out splits, and training when asked.

    Args:
        train_utterances: size of the training split (with_train only); a shortened run's
            corpus is another corpus, so it needs its own root.
        held_out_utterances: cap on every held-out split (None: the counts of HELD_OUT_SPLITS),
            for quick runs. The held-out sets of a corpus depend on it, so a model is evaluated
            on the sets rebuilt with the cap it was trained with.
    """
    for name, value in (
        ("train_utterances", train_utterances),
        ("held_out_utterances", held_out_utterances),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    splits = {
        split: min(count, held_out_utterances or count)
        for split, (count, *_) in HELD_OUT_SPLITS.items()
    }
    voices = {split: voices for split, (_, voices, *_) in HELD_OUT_SPLITS.items()}
    speeds = {split: speeds for split, (*_, speeds, _) in HELD_OUT_SPLITS.items()}
    snrs_db = {split: snrs for split, (*_, snrs) in HELD_OUT_SPLITS.items()}
    if with_train:
        splits[TRAIN_SPLIT] = train_utterances
        voices[TRAIN_SPLIT] = DEFAULT_VOICES
        speeds[TRAIN_SPLIT], snrs_db[TRAIN_SPLIT] = TRAIN_PERTURBATION
    return corpus_spec(
        splits, seed=DEMO_SEED, vocabulary_size=VOCABULARY_SIZE, min_words=MIN_WORDS,
        max_words=MAX_WORDS, random_order_share=RANDOM_ORDER_SHARE, voices=voices,
        speeds=speeds, snrs_db=snrs_db,
    )  # fmt: skip


def build_demo_corpus(
    root: str | Path,
    *,
    with_train: bool,
    train_utterances: int = TRAIN_UTTERANCES,
    held_out_utterances: int | None = None,
    workers: int = 2,
) -> Path:
    """Synthesise the demo corpus of `demo_corpus_spec` under `root`."""
    spec = demo_corpus_spec(
        with_train=with_train,
        train_utterances=train_utterances,
        held_out_utterances=held_out_utterances,
    )
    settings = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("splits", "format")}
    return build_synthetic_corpus(root, spec.splits, workers=workers, **settings)


def prepare_demo_manifests(corpus_root: str | Path, manifest_dir: str | Path) -> dict[str, Path]:
    """lhotse cut manifests of every split found under `corpus_root`, by split name."""
    return prepare_librispeech(corpus_root, manifest_dir, None, LIBRISPEECH_TEXT_POLICY)


def demo_words() -> list[str]:
    """The corpus vocabulary as the transcripts spell it (upper case), "AN" included."""
    vocabulary = SentenceGenerator(DEMO_SEED, vocabulary_size=VOCABULARY_SIZE).vocabulary
    return sorted({word.upper() for word in (*vocabulary, "an")})


def write_demo_base_llada(out_dir: str | Path, seed: int = DEMO_SEED) -> Path:
    """The random starting LLM: llada/ (LLaDA-8B layout); its tokenizer spells every corpus word
    with one token. (The encoder is the converted Whisper tiny.en, frozen.)"""
    return write_tiny_llada(
        Path(out_dir) / "llada", seed=seed, d_model=LLADA_WIDTH, n_layers=LLADA_LAYERS,
        n_heads=LLADA_HEADS, n_kv_heads=LLADA_HEADS, mlp_hidden_size=LLADA_MLP, words=demo_words(),
    )  # fmt: skip


def write_demo_base_llama(out_dir: str | Path, seed: int = DEMO_SEED) -> Path:
    """The autoregressive baseline's random starting LLM: llama/ (Meta-Llama-3-8B-Instruct layout).

    The same widths, depth and corpus tokenizer as the demo LLaDA of `write_demo_base_llada`,
    so the two recognisers differ only in the LLM's kind.
    """
    return write_tiny_llama(
        Path(out_dir) / "llama", seed=seed, hidden_size=LLADA_WIDTH, n_layers=LLADA_LAYERS,
        n_heads=LLADA_HEADS, n_kv_heads=LLADA_HEADS, intermediate_size=LLADA_MLP,
        words=demo_words(),
    )  # fmt: skip


def held_out_part(spec: dict) -> dict:
    """A synthetic corpus's parameters (its synthetic_corpus.json) without the training split."""
    return {
        key: {split: v for split, v in value.items() if split != TRAIN_SPLIT}
        if isinstance(value, dict)
        else value
        for key, value in spec.items()
    }


def check_same_held_out_sets(
    corpus: Path, trained_spec: dict | None, model: str = "the model"
) -> None:
    """Stop when `corpus`'s held-out sets are not those of the corpus `model` trained with.

    `trained_spec` is the training corpus's parameters from the export's metadata (`retrain`
    records them; an export without them is not checked): a demo recipe changed since training
    would otherwise evaluate on other sentences, perhaps with words the model never saw.
    """
    if trained_spec is None:
        return
    built, trained = (
        held_out_part(json.loads((corpus / MARKER_NAME).read_text())),
        held_out_part(trained_spec),
    )
    changed = sorted(
        key for key in built.keys() | trained.keys() if built.get(key) != trained.get(key)
    )
    if changed:
        raise SystemExit(
            f"the demo recipe's held-out sets differ from those of {model}'s training corpus "
            f"(changed: {', '.join(changed)}): decode with the recipe of the commit in "
            f"{model}'s metadata (git_commit), or retrain"
        )
