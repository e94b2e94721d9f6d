"""Sentences for the synthetic corpus: grammatical templates and random word order over a closed vocabulary.

Grammatical sentences come from simple templates; random word sequences cannot be predicted by
any language model, so a model trained on them has to listen. One generator never repeats a
sentence, so held-out sentences are never seen in training.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import whisper

# ---- Words. Each category is a whitespace-separated list; a word keeps its first category.
DETERMINERS = "the a this that every each my your our their his her some no"
NUMBERS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety"
)
PREPOSITIONS = "in on under over near behind beside across through around after before with without beyond inside outside along against toward"
NAMES = (
    "alice bob carol david emma frank grace henry irene jack kate leo maria nathan olivia peter "
    "quinn rachel samuel tina victor wendy xavier yvonne zach anna ben clara daniel eva felix "
    "george hannah isaac julia kevin laura martin nora oscar paula robert sarah thomas ursula "
    "vincent walter"
)
ADJECTIVES = (
    "red blue green yellow purple orange golden silver black white brown gray pink small large "
    "tiny huge tall short long wide narrow heavy light bright dark quiet loud soft hard warm cold "
    "hot cool wet dry old young new ancient modern fresh clean dirty empty full rich poor happy "
    "sad angry calm brave clever gentle kind proud shy wise wild strange simple plain fancy noisy "
    "busy lazy sleepy hungry thirsty friendly lonely lucky famous secret hidden broken wooden "
    "paper stone glass plastic sweet bitter sour salty spicy smooth rough sharp round square flat "
    "deep shallow distant northern southern eastern western curious careful polite honest silly "
    "serious gloomy cheerful nervous patient quick slow fierce tender humble elegant rusty dusty "
    "shiny muddy sandy snowy rainy windy sunny cloudy frozen"
)
NOUNS = (
    "apple basket bottle bridge candle castle chair cloud coat desk door dragon drum engine "
    "feather field flower forest garden gate guitar hammer hat hill horse house island jacket "
    "kettle key kitchen ladder lamp lantern letter library lion map market mirror monkey "
    "mountain needle notebook ocean orchard painter palace pencil piano pillow planet pocket "
    "pond puppet rabbit radio river robot rocket saddle sailor school shadow ship shoe shovel "
    "singer soldier spoon station statue stone storm street student sword table teacher tent "
    "tiger tower town train tree truck tunnel umbrella valley village violin wagon wall wallet "
    "window wizard wolf worker bakery banner barrel beach blanket boat bucket cabin camera "
    "canyon captain carpet cave cellar circus clock cottage cousin cup doctor dolphin eagle "
    "farmer fence fountain frog ghost giant glove goat hunter jungle king knight lake merchant "
    "miller moon nurse owl parrot pilot pirate poet prince princess queen rope sheep sister "
    "spider squirrel sun tailor thief turtle village vulture whale writer"
)
VERBS = (  # past tense, used transitively
    "painted carried opened closed pushed pulled lifted dropped found lost built broke fixed "
    "washed cleaned cooked baked watched visited followed chased caught threw kicked held "
    "bought sold sent brought took gave showed hid moved turned filled counted measured weighed "
    "tested checked signed wrote drew shared packed wrapped covered folded picked planted "
    "climbed crossed entered guarded borrowed returned admired ignored noticed described "
    "remembered forgot greeted helped called warned invited thanked answered asked praised "
    "blamed trusted feared loved hated liked wanted needed reached touched shook polished "
    "repaired painted stole hunted fed dressed carved stitched sketched traded"
)
ADVERBS = (
    "quickly slowly quietly loudly carefully gently suddenly happily sadly bravely calmly "
    "eagerly easily freely gladly proudly rarely often softly warmly boldly neatly openly "
    "politely honestly badly again today yesterday tomorrow twice nearly almost silently "
    "secretly patiently"
)
# Words from openai-whisper's British -> American spelling table (installed offline) that have a
# clear part of speech by their ending; a few unsuitable ones are left out.
SPELLING_TABLE_CATEGORIES = {"verb": ("ized",), "noun": ("ization", "or"), "adverb": ("ly",)}
SPELLING_TABLE_EXCLUDED = (
    "bastardized sodomized womanized neighborly wooly belabor discolor savor succor disfavor "
    "unauthorized uncivilized unorganized unrecognized"
)
CATEGORIES = ("determiner", "number", "preposition", "name", "adjective", "noun", "verb", "adverb")
HANDWRITTEN = (DETERMINERS, NUMBERS, PREPOSITIONS, NAMES, ADJECTIVES, NOUNS, VERBS, ADVERBS)

# ---- Sentence shapes: subject, verb, object, up to MAX_PREPOSITIONAL_PHRASES "prep NP", adverb
# (hence the 2 + in MAX_TEMPLATE_WORDS: the verb and the adverb).
# A noun phrase is a name, "noun number" (room seven) or "determiner [adjectives] noun".
MAX_ADJECTIVES = 2
MAX_PREPOSITIONAL_PHRASES = 3
LONGEST_PHRASE = 1 + MAX_ADJECTIVES + 1  # determiner, adjectives, noun
MIN_SENTENCE_WORDS = 3  # name verb name
MAX_TEMPLATE_WORDS = 2 + 2 * LONGEST_PHRASE + MAX_PREPOSITIONAL_PHRASES * (1 + LONGEST_PHRASE)  # 25
MAX_DRAWS = 10_000  # attempts at a sentence not used yet before giving up
DEFAULT_VOCABULARY_SIZE = 800
DEFAULT_MIN_WORDS = 4
DEFAULT_MAX_WORDS = 14
DEFAULT_RANDOM_ORDER_SHARE = 0.25
VOWELS = "aeiou"

SentenceKind = Literal["template", "random"]
Phrase = list[str]  # the word categories of one phrase, e.g. ["determiner", "adjective", "noun"]


@functools.cache
def word_pool() -> dict[str, tuple[str, ...]]:
    """Every word the generator may use, by category (sorted, each word in one category only)."""
    table = json.loads((Path(whisper.__file__).parent / "normalizers" / "english.json").read_text())
    spellings = {w for w in table.values() if re.fullmatch("[a-z]+", w)}
    spellings -= set(SPELLING_TABLE_EXCLUDED.split())
    seen: set[str] = set()
    pool = {}
    for category, handwritten in zip(CATEGORIES, HANDWRITTEN, strict=True):
        endings = SPELLING_TABLE_CATEGORIES.get(category)
        extra = {w for w in spellings if w.endswith(endings)} if endings else set()
        pool[category] = tuple(sorted((set(handwritten.split()) | extra) - seen))
        seen.update(pool[category])
    return pool


def _quotas(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Split `total` words over categories in proportion to their sizes, at least one each."""
    rest, spare_total = total - len(sizes), sum(sizes.values()) - len(sizes)
    exact = {c: rest * (n - 1) / spare_total for c, n in sizes.items()}
    quotas = {c: 1 + int(x) for c, x in exact.items()}
    by_remainder = sorted(sizes, key=lambda c: (int(exact[c]) - exact[c], c))
    for category in by_remainder[: total - sum(quotas.values())]:
        quotas[category] += 1  # largest remainders first, so the quotas sum to `total`
    return quotas


@dataclass(frozen=True)
class Sentence:
    """One generated sentence: lower-case words separated by single spaces."""

    text: str
    kind: SentenceKind


class SentenceGenerator:
    """Unique sentences over a fixed vocabulary; deterministic for a seed.

    Args:
        seed: seeds the vocabulary choice and every sentence.
        vocabulary_size: distinct words drawn from `word_pool()`, every category keeping at least
            one; sentences use no word outside `vocabulary` (but "a" becomes "an" before a
            vowel).
        min_words, max_words: sentence length range in words, inclusive.
        random_order_share: share of each `generate` call that is random word sequences (words
            drawn uniformly from the vocabulary) rather than template sentences.
    """

    def __init__(
        self,
        seed: int,
        *,
        vocabulary_size: int = DEFAULT_VOCABULARY_SIZE,
        min_words: int = DEFAULT_MIN_WORDS,
        max_words: int = DEFAULT_MAX_WORDS,
        random_order_share: float = DEFAULT_RANDOM_ORDER_SHARE,
    ) -> None:
        pool = word_pool()
        largest = sum(len(words) for words in pool.values())
        if not len(CATEGORIES) <= vocabulary_size <= largest:
            raise ValueError(
                f"vocabulary_size must be between {len(CATEGORIES)} and {largest} (the words "
                f"available offline), got {vocabulary_size}"
            )
        if not MIN_SENTENCE_WORDS <= min_words <= max_words <= MAX_TEMPLATE_WORDS:
            raise ValueError(
                f"need {MIN_SENTENCE_WORDS} <= min_words <= max_words <= {MAX_TEMPLATE_WORDS} (the "
                f"longest template sentence), got min_words={min_words}, max_words={max_words}"
            )
        if not 0.0 <= random_order_share <= 1.0:
            raise ValueError(f"random_order_share must be in [0, 1], got {random_order_share}")
        self.min_words, self.max_words = min_words, max_words
        self.random_order_share = random_order_share
        self._rng = random.Random(seed)
        quotas = _quotas({c: len(words) for c, words in pool.items()}, vocabulary_size)
        self.words = {c: tuple(sorted(self._rng.sample(pool[c], quotas[c]))) for c in CATEGORIES}
        self.vocabulary = tuple(sorted(itertools.chain(*self.words.values())))
        self._used: set[str] = set()

    def generate(self, count: int) -> list[Sentence]:
        """`count` sentences, none equal to a sentence this generator returned before.

        Exactly round(count * random_order_share) of them, at seeded positions, are random.
        """
        n_random = round(count * self.random_order_share)
        kinds: list[SentenceKind] = ["random"] * n_random + ["template"] * (count - n_random)
        self._rng.shuffle(kinds)
        return [self._new_sentence(kind) for kind in kinds]

    def _new_sentence(self, kind: SentenceKind) -> Sentence:
        for _ in range(MAX_DRAWS):
            n_words = self._rng.randint(self.min_words, self.max_words)
            if kind == "random":
                words = [self._rng.choice(self.vocabulary) for _ in range(n_words)]
            else:
                words = self._template_sentence(n_words)
            text = " ".join(words)
            if text not in self._used:
                self._used.add(text)
                return Sentence(text, kind)
        raise ValueError(
            f"no new {kind} sentence in {MAX_DRAWS} draws: the {len(self._used)} sentences made "
            "so far use up what this vocabulary allows; raise vocabulary_size or max_words"
        )

    def _template_sentence(self, n_words: int) -> list[str]:
        """Grow "name verb name" by random expansions until it has exactly `n_words` words."""
        while True:  # a dead end (one word to go, no one-word expansion left) starts over
            phrases: list[Phrase] = [["name"], ["verb"], ["name"]]
            budget = n_words - MIN_SENTENCE_WORDS
            while budget > 0 and (options := _expansions(phrases, budget)):
                phrases = self._rng.choice(options)
                budget = n_words - sum(len(phrase) for phrase in phrases)
            if budget == 0:
                words = [self._rng.choice(self.words[c]) for phrase in phrases for c in phrase]
                return [
                    "an" if w == "a" and n[0] in VOWELS else w
                    for w, n in itertools.pairwise([*words, "."])
                ]


def _expansions(phrases: list[Phrase], budget: int) -> list[list[Phrase]]:
    """Every sentence one expansion away from `phrases` that adds at most `budget` words."""
    options = []
    for i, phrase in enumerate(phrases):
        if phrase == ["name"]:
            options += [
                [*phrases[:i], new, *phrases[i + 1 :]]
                for new in (["determiner", "noun"], ["noun", "number"])
            ]
        elif phrase[0] == "determiner" and phrase.count("adjective") < MAX_ADJECTIVES:
            options.append(
                [*phrases[:i], ["determiner", "adjective", *phrase[1:]], *phrases[i + 1 :]]
            )
    end = len(phrases) - (["adverb"] in phrases)  # the adverb stays last
    if ["adverb"] not in phrases:
        options.append([*phrases, ["adverb"]])
    if budget >= 2 and phrases.count(["preposition"]) < MAX_PREPOSITIONAL_PHRASES:
        options.append([*phrases[:end], ["preposition"], ["name"], *phrases[end:]])
    return options
