"""Synthetic speech corpus in LibriSpeech's layout, written with espeak-ng voices.

`build_synthetic_corpus` writes `<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`
and one `<speaker>-<chapter>.trans.txt` per chapter (`<utt id> UPPER CASE TEXT` lines), so lhotse's
LibriSpeech recipe prepares it like the real corpus. A "speaker" is one voice setting (espeak-ng
voice, speaking rate, pitch) with one chapter; speed perturbation and noise vary per utterance.
Beside the splits, `utterances.jsonl` records how each utterance was made and
`synthetic_corpus.json` records the parameters: its presence marks a finished corpus.

Sentences come from `sentences.SentenceGenerator`; voices are checked with
`speech_synthesis.check_voice`. No two sentences of one corpus are equal, so test sentences are
never seen in training.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH

from whisper_llada.data.sentences import (
    DEFAULT_MAX_WORDS,
    DEFAULT_MIN_WORDS,
    DEFAULT_RANDOM_ORDER_SHARE,
    DEFAULT_VOCABULARY_SIZE,
    SentenceGenerator,
    SentenceKind,
)
from whisper_llada.data.speech_synthesis import (
    DEFAULT_PITCHES,
    DEFAULT_RATES_WPM,
    DEFAULT_VOICES,
    PITCH_RANGE,
    check_voice,
    synthesize,
)

logger = logging.getLogger(__name__)

# ---- The corpus
LIBRISPEECH_SPLITS = (*LIBRISPEECH, *MINI_LIBRISPEECH)  # the names lhotse's recipe looks for
MARKER_NAME = "synthetic_corpus.json"
UTTERANCES_NAME = "utterances.jsonl"
MARKER_FORMAT = 2  # bump when the same parameters would produce a different corpus
FIRST_SPEAKER_ID = 100
CHAPTER_ID_OFFSET = 10_000  # chapter id = speaker id + offset: one chapter per speaker
DEFAULT_WORKERS = 2  # espeak-ng + sox pipelines at a time


@dataclass(frozen=True)
class CorpusSpec:
    """Everything a synthetic corpus follows from; its JSON form is the marker file."""

    splits: dict[str, int]
    seed: int
    vocabulary_size: int
    min_words: int
    max_words: int
    random_order_share: float
    voices: dict[str, list[str]]
    rates_wpm: list[int]
    pitches: list[int]
    speeds: dict[str, list[float]]
    snrs_db: dict[str, list[float | None]]
    format: int = MARKER_FORMAT

    def check(self) -> None:
        """Raise a clear error for a setting espeak-ng, sox or the LibriSpeech recipe rejects."""
        if not self.splits or not set(self.splits) <= set(LIBRISPEECH_SPLITS):
            raise ValueError(
                f"split names must be LibriSpeech's ({', '.join(LIBRISPEECH_SPLITS)}) for its "
                f"recipe to find them; got {sorted(self.splits)}"
            )
        if min(self.splits.values()) < 1:
            raise ValueError(f"every split needs at least one utterance, got {self.splits}")
        if not self.rates_wpm or min(self.rates_wpm) <= 0:
            raise ValueError(f"rates_wpm must be positive words per minute, got {self.rates_wpm}")
        low, high = PITCH_RANGE
        if not self.pitches or not low <= min(self.pitches) <= max(self.pitches) <= high:
            raise ValueError(f"pitches must lie in espeak-ng's {low}..{high}, got {self.pitches}")
        for split in self.splits:
            speeds, snrs_db = self.speeds[split], self.snrs_db[split]
            if not speeds or min(speeds) <= 0:
                raise ValueError(
                    f"speeds must be positive factors (1.0 = unchanged), got {speeds} for {split}"
                )
            if not snrs_db:
                raise ValueError(
                    f"snrs_db needs at least one value (None = clean audio), got none for {split}"
                )
        for voice in itertools.chain(*self.voices.values()):
            check_voice(voice)


@dataclass(frozen=True)
class PlannedUtterance:
    """How one utterance is made; `path` is relative to the corpus root."""

    id: str
    split: str
    path: str
    text: str
    kind: SentenceKind
    voice: str
    rate_wpm: int
    pitch: int
    speed: float
    snr_db: float | None
    noise_seed: int


def corpus_spec(
    splits: Mapping[str, int],
    *,
    seed: int,
    vocabulary_size: int = DEFAULT_VOCABULARY_SIZE,
    min_words: int = DEFAULT_MIN_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    random_order_share: float = DEFAULT_RANDOM_ORDER_SHARE,
    voices: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_VOICES,
    rates_wpm: Sequence[int] = DEFAULT_RATES_WPM,
    pitches: Sequence[int] = DEFAULT_PITCHES,
    speeds: Sequence[float] | Mapping[str, Sequence[float]] = (1.0,),
    snrs_db: Sequence[float | None] | Mapping[str, Sequence[float | None]] = (None,),
) -> CorpusSpec:
    """The parameters of a synthetic corpus (`plan_utterances` turns them into utterances).

    Args:
        splits: utterances per split, e.g. {"train-clean-100": 400, "dev-clean": 50}, with
            LibriSpeech's split names. Splits are made in sorted order, so the mapping's order
            does not matter, and a corpus of the first splits of another (same seed and
            settings) holds exactly its utterances: "train-*" sorts after "dev-*" and "test-*",
            so held-out sets can be rebuilt without synthesising the training audio.
        seed: the vocabulary, sentences, voice settings and noise all follow from it.
        vocabulary_size, min_words, max_words, random_order_share: see `SentenceGenerator`.
        voices: espeak-ng voices for every split, or a mapping from each split to its own voices
            (e.g. a test split with a voice unseen in training).
        rates_wpm, pitches: a speaker is one (voice, rate, pitch) combination of these.
        speeds: sox speed factors, one drawn per utterance; for every split, or per split.
        snrs_db: white-noise SNRs in dB, one drawn per utterance, None is clean audio; for every
            split, or per split (e.g. a noisy test split).
    """
    if isinstance(voices, str):
        raise TypeError(f"voices must be a list of voices or a mapping per split, got {voices!r}")
    voices, speeds, snrs_db = (
        _per_split(name, values, splits)
        for name, values in [("voices", voices), ("speeds", speeds), ("snrs_db", snrs_db)]
    )
    return CorpusSpec(
        splits={s: splits[s] for s in sorted(splits)}, seed=seed, vocabulary_size=vocabulary_size,
        min_words=min_words, max_words=max_words, random_order_share=random_order_share,
        voices=voices, rates_wpm=list(rates_wpm), pitches=list(pitches), speeds=speeds,
        snrs_db=snrs_db,
    )  # fmt: skip


def build_synthetic_corpus(
    root: str | Path, splits: Mapping[str, int], *, workers: int = DEFAULT_WORKERS, **settings
) -> Path:
    """Build, or find already built, a synthetic corpus in LibriSpeech's layout under `root`.

    Args:
        root: the corpus folder (what lhotse's `prepare_librispeech` takes as `corpus_dir`).
        splits, settings: the corpus parameters, see `corpus_spec` (`seed` is required).
        workers: espeak-ng + sox pipelines run at a time (threads).

    Returns:
        `root`. A finished corpus with the same parameters is returned untouched; one with other
        parameters raises. The corpus is built in a hidden sibling folder, renamed to `root` only
        when complete, so an interrupted build is started over, never half used.
    """
    spec = corpus_spec(splits, **settings)
    root = Path(root)
    if _is_finished(root, spec):
        logger.info("synthetic corpus already built in %s", root)
        return root
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    spec.check()
    plan = plan_utterances(spec)
    staging = root.parent / f".{root.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted build
    staging.mkdir(parents=True)
    _write_corpus(staging, plan, workers)
    (staging / MARKER_NAME).write_text(json.dumps(asdict(spec), indent=2) + "\n")
    if root.exists():
        root.rmdir()  # _is_finished lets through an empty folder only
    staging.rename(root)
    logger.info("built a synthetic corpus of %d utterances in %s", len(plan), root)
    return root


def _per_split(name: str, values: Sequence | Mapping[str, Sequence], splits) -> dict[str, list]:
    """One list of `values` per split, in sorted split order (a plain sequence serves every split)."""
    per_split = values if isinstance(values, Mapping) else dict.fromkeys(splits, values)
    if set(per_split) != set(splits):
        raise ValueError(
            f"{name} must name exactly the splits {sorted(splits)}, got {sorted(per_split)}"
        )
    return {split: list(per_split[split]) for split in sorted(splits)}


def _is_finished(root: Path, spec: CorpusSpec) -> bool:
    """True when `root` holds a corpus built from `spec`; raises when it holds something else."""
    marker = root / MARKER_NAME
    if marker.is_file():
        built, wanted = json.loads(marker.read_text()), json.loads(json.dumps(asdict(spec)))
        if built == wanted:
            return True
        changed = ", ".join(
            sorted(k for k in built.keys() | wanted.keys() if built.get(k) != wanted.get(k))
        )
        raise ValueError(
            f"{root} holds a synthetic corpus built with other parameters (changed: {changed}); "
            f"pass another root, or delete {root} to rebuild it"
        )
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"{root} exists but is not a finished synthetic corpus (it has no {MARKER_NAME}); "
            "pass a new or empty folder as the root"
        )
    return False


def plan_utterances(spec: CorpusSpec) -> list[PlannedUtterance]:
    """Decide every utterance: its id, sentence, speaker (voice setting), speed and noise.

    A split with n utterances and k voice settings has min(n, k) speakers, taking turns; speaker
    ids are unique across splits, as in LibriSpeech.
    """
    generator = SentenceGenerator(
        spec.seed, vocabulary_size=spec.vocabulary_size, min_words=spec.min_words,
        max_words=spec.max_words, random_order_share=spec.random_order_share,
    )  # fmt: skip
    plan = []
    first_speaker = FIRST_SPEAKER_ID
    for split, count in spec.splits.items():
        sentences = generator.generate(count)
        rng = random.Random(f"{spec.seed}/{split}")
        settings = list(itertools.product(spec.voices[split], spec.rates_wpm, spec.pitches))
        rng.shuffle(settings)
        n_speakers = min(len(settings), count)
        for index, sentence in enumerate(sentences):
            speaker = first_speaker + index % n_speakers
            chapter = speaker + CHAPTER_ID_OFFSET
            utterance_id = f"{speaker}-{chapter}-{index // n_speakers:04d}"
            voice, rate_wpm, pitch = settings[index % n_speakers]
            plan.append(PlannedUtterance(
                id=utterance_id, split=split, path=f"{split}/{speaker}/{chapter}/{utterance_id}.flac",
                text=sentence.text, kind=sentence.kind, voice=voice, rate_wpm=rate_wpm, pitch=pitch,
                speed=rng.choice(spec.speeds[split]), snr_db=rng.choice(spec.snrs_db[split]),
                noise_seed=rng.getrandbits(32),
            ))  # fmt: skip
        first_speaker += n_speakers
    return plan


def _write_corpus(folder: Path, plan: list[PlannedUtterance], workers: int) -> None:
    """Audio, one trans.txt per chapter, and utterances.jsonl, into `folder`."""

    def speak(u: PlannedUtterance) -> Path:
        return synthesize(
            u.text, folder / u.path, voice=u.voice, rate_wpm=u.rate_wpm, pitch=u.pitch,
            speed=u.speed, snr_db=u.snr_db, noise_seed=u.noise_seed,
        )  # fmt: skip

    with ThreadPoolExecutor(workers) as pool:  # threads suffice: espeak-ng and sox do the work
        list(pool.map(speak, plan))
    chapters: dict[Path, list[str]] = {}
    for u in plan:
        chapters.setdefault((folder / u.path).parent, []).append(f"{u.id} {u.text.upper()}\n")
    for chapter_dir, lines in chapters.items():
        name = f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt"
        (chapter_dir / name).write_text("".join(sorted(lines)))
    (folder / UTTERANCES_NAME).write_text("".join(json.dumps(asdict(u)) + "\n" for u in plan))


def read_planned_utterances(root: str | Path) -> list[PlannedUtterance]:
    """The utterances of a built corpus, as `build_synthetic_corpus` recorded them."""
    lines = (Path(root) / UTTERANCES_NAME).read_text().splitlines()
    return [PlannedUtterance(**json.loads(line)) for line in lines]
