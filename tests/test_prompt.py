"""LLaDA tokenizer, special tokens and chat prompt, on the tiny directory; the tiny writer itself."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from whisper_llada.models.llada_config import LLaDAConfig
from whisper_llada.models.prompt import (
    BOS_TOKEN,
    END_HEADER_TOKEN,
    EOS_TOKEN,
    EOT_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
    SpecialTokens,
    decode_text,
    load_tokenizer,
    prompt_ids,
    special_tokens,
    text_ids,
)
from whisper_llada.models.tiny_models import write_tiny_llada

# The real LLaDA-8B-Instruct ids: the tiny model must not reuse them (nothing hard-coded).
REAL_SPECIAL_IDS = {126080, 126081, 126336, 126346, 126347, 126348}
ENGLISH = [
    "the quick brown fox jumps over the lazy dog",
    "It's 3:45 p.m. on May 7th, 2024; we're 100% sure (really?)!",
    'She said "don\'t" -- twice... and left at 10:30.',
    "CHAPTER XII. Mr. O'Brien's colour/color & flavour: $1,250.99 #42 [draft] {v2}",
    "naïve café résumé, Zürich 😀",
    "  leading and trailing spaces  \n and a newline\ttab ",
]


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory) -> Path:
    return write_tiny_llada(tmp_path_factory.mktemp("tiny") / "llada")


@pytest.fixture(scope="module")
def tokenizer(llada_dir) -> PreTrainedTokenizerFast:
    return load_tokenizer(llada_dir)


@pytest.fixture(scope="module")
def config(llada_dir) -> LLaDAConfig:
    return LLaDAConfig.from_json(llada_dir / "config.json")


def test_special_ids_come_from_the_tokenizer_and_config(tokenizer, config):
    vocab = tokenizer.get_vocab()
    special = special_tokens(tokenizer, config)
    assert special == SpecialTokens(
        bos=vocab[BOS_TOKEN],
        eos=vocab[EOS_TOKEN],
        pad=vocab[EOS_TOKEN],
        mask=vocab[MASK_TOKEN],
        eot=vocab[EOT_TOKEN],
        start_header=vocab[START_HEADER_TOKEN],
        end_header=vocab[END_HEADER_TOKEN],
    )
    assert (special.mask, special.eos, special.pad) == (
        config.mask_token_id,
        config.eos_token_id,
        config.pad_token_id,
    )
    ids = set(dataclasses.astuple(special))
    assert len(ids) == 6  # eos and pad share one id
    assert ids.isdisjoint(REAL_SPECIAL_IDS)
    assert max(ids) < config.vocab_size


def test_prompt_ids_follow_the_reference_template(tokenizer, config):
    s = special_tokens(tokenizer, config)
    expected = [
        s.bos,
        s.start_header,
        *text_ids(tokenizer, "user"),
        s.end_header,
        *text_ids(tokenizer, "\n\nTranscribe the audio:"),
        s.eot,
        s.start_header,
        *text_ids(tokenizer, "assistant"),
        s.end_header,
        *text_ids(tokenizer, "\n\n"),
    ]
    assert prompt_ids(tokenizer, "  Transcribe the audio:\n ") == expected
    assert tokenizer.decode(expected) == (
        f"{BOS_TOKEN}{START_HEADER_TOKEN}user{END_HEADER_TOKEN}\n\nTranscribe the audio:"
        f"{EOT_TOKEN}{START_HEADER_TOKEN}assistant{END_HEADER_TOKEN}\n\n"
    )


@pytest.mark.parametrize("text", ENGLISH)
def test_english_round_trips_exactly(tokenizer, config, text):
    ids = text_ids(tokenizer, text)
    special = set(dataclasses.astuple(special_tokens(tokenizer, config)))
    assert tokenizer.unk_token_id is None
    assert special.isdisjoint(ids)
    assert tokenizer.decode(ids) == text
    s = special_tokens(tokenizer, config)
    noisy = [s.mask, *ids, s.eot, s.eos, s.eos]
    assert decode_text(tokenizer, noisy) == " ".join(text.split())


def test_special_token_disagreements_raise(tokenizer, config):
    with pytest.raises(ValueError, match=r"tokenizer eos id \d+ differs from config\.json's 7"):
        special_tokens(tokenizer, dataclasses.replace(config, eos_token_id=7))
    with pytest.raises(
        ValueError, match=re.escape(f"tokenizer {MASK_TOKEN} id {config.mask_token_id} differs")
    ):
        special_tokens(tokenizer, dataclasses.replace(config, mask_token_id=7))
    bare = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0, EOS_TOKEN: 1}, unk_token="a")),
        eos_token=EOS_TOKEN,
    )
    with pytest.raises(ValueError, match=r"the tokenizer has no '<\|startoftext\|>' token"):
        special_tokens(bare, config)


def test_load_tokenizer_without_files_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no tokenizer files \(tokenizer\.json, "):
        load_tokenizer(tmp_path)


def test_tiny_directory_has_the_llada_layout(llada_dir, tokenizer, config):
    assert sorted(p.name for p in llada_dir.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert config.vocab_size % 64 == 0 and 0 <= config.vocab_size - len(tokenizer) < 64
    tokenizer_config = json.loads((llada_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["add_bos_token"] is False
    assert tokenizer_config["add_eos_token"] is False
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        BOS_TOKEN,
        EOS_TOKEN,
        EOS_TOKEN,
    )


def test_tiny_writer_is_deterministic(llada_dir, tmp_path):
    again = write_tiny_llada(tmp_path / "again")
    other_seed = write_tiny_llada(tmp_path / "other", seed=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (again / name).read_bytes() == (llada_dir / name).read_bytes(), name
    assert (other_seed / "tokenizer.json").read_bytes() == (
        llada_dir / "tokenizer.json"
    ).read_bytes()
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        first, second = load_file(llada_dir / shard), load_file(again / shard)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)
        different = load_file(other_seed / shard)
        assert not all(torch.equal(first[k], different[k]) for k in first)
