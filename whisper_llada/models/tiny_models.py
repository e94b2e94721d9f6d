"""Tiny random models written to disk in the exact formats of the real checkpoints.

Every test and the demo build their models from these directories through the same loading
code that real users run on whisper-large-v3, LLaDA-8B-Instruct and Meta-Llama-3-8B-Instruct.

    python -m whisper_llada.models.tiny_models OUT_DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import string
from collections.abc import Sequence
from pathlib import Path

import torch

from whisper_llada.models.llada import LLaDAModelLM
from whisper_llada.models.llada_checkpoint import save_llada
from whisper_llada.models.llada_config import LLADA_8B
from whisper_llada.models.llama import (
    BEGIN_OF_TEXT_TOKEN,
    END_OF_TEXT_TOKEN,
    LLAMA3_CHAT_TEMPLATE,
    llama3_special_tokens,
)
from whisper_llada.models.prompt import (
    BOS_TOKEN,
    CHAT_TEMPLATE,
    END_HEADER_TOKEN,
    EOS_TOKEN,
    EOT_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
)

TINY_WHISPER_WIDTH = 64
TINY_WHISPER_LAYERS = 2
TINY_WHISPER_HEADS = 4
TINY_N_MELS = 128
WHISPER_AUDIO_CONTEXT = 1500  # encoder frames for 30 s: 3000 mel frames / conv stride 2

TINY_BPE_VOCAB = 1000  # byte-level BPE pieces (256 bytes + merges) before the special tokens
EMBEDDING_ROWS_MULTIPLE = 64  # LLaDA-8B: 126464 = 1976 * 64 rows, beyond its last id 126348
TINY_NORM_WEIGHT_STD = 0.1  # random RMSNorm gains, so a forward that ignores them is caught
WORD_LEVEL_VOCAB_LIMIT = 100_000  # more than any closed vocabulary's merges need
TINY_NUMBERS = 1000  # "0" .. "999" join the tokenizer's training text
LLAMA3_CONTEXT = 8192  # Meta-Llama-3-8B: max_position_embeddings
LLAMA3_ROPE_THETA = 500000.0
# In the order of their ids in LLaDA-8B-Instruct (126080, 126081, 126336, 126346, 126347, 126348).
LLADA_SPECIAL_TOKENS = (
    BOS_TOKEN,
    EOS_TOKEN,
    MASK_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
)
COMMON_ENGLISH_WORDS = """
the be to of and a in that have i it for not on with he as you do at this but his by from they
we say her she or an will my one all would there their what so up out if about who get which go
me when make can like time no just him know take people into year your good some could them see
other than then now look only come its over think also back after use two how our work first
well way even new want because any these give day most us is are was were been has had did said
says made went gone got audio speech transcribe sound voice word words sentence chapter book
read reading man woman child children house home room door window hand hands head eyes face
little great old young long small large big high low left right end part place case point world
life thing things night morning evening water fire light dark king queen lord lady sir mister
mrs miss father mother brother sister son daughter friend heart mind soul love death never
always often again once upon still yet here where why while through before under between around
down off away very much many more less every each both few such own same another last next
early late true false yes ok okay thank thanks please sorry hello goodbye question answer
number numbers zero three four five six seven eight nine ten hundred thousand million first
second third half quarter o'clock don't can't won't isn't aren't wasn't weren't it's i'm you're
they're we're that's there's what's let's i've i'd i'll he's she's shall should might must may
upon whom whose whether though although however therefore city country road street river sea
land sky sun moon star tree flower horse dog cat bird money gold silver paper letter name
"""  # split on whitespace


def _tokenizer_training_text() -> list[str]:
    """Offline English text: common words, British/American spellings, numbers, punctuation."""
    # find_spec locates openai-whisper without importing it (its import is slow).
    whisper_dir = Path(importlib.util.find_spec("whisper").origin).parent
    spellings_path = whisper_dir / "normalizers" / "english.json"
    spellings = json.loads(spellings_path.read_text())
    spelled = sorted(set(spellings) | set(spellings.values()))
    common = COMMON_ENGLISH_WORDS.split()
    return [
        " ".join(common),
        " ".join(word.capitalize() for word in common),
        " ".join(word.upper() for word in common),
        " ".join(spelled),
        " ".join(str(number) for number in range(TINY_NUMBERS)),
        " ".join(string.ascii_letters + string.digits),
        " ".join(string.punctuation),
        " ".join(f"{word}{mark}" for word in common for mark in ".,?!;:"),
    ]


def _train_tiny_tokenizer(
    words: Sequence[str] | None = None, special_tokens: Sequence[str] = LLADA_SPECIAL_TOKENS
):
    """Byte-level BPE, then `special_tokens` (ids after the BPE; LLaDA's by default).

    Without `words`: TINY_BPE_VOCAB pieces learnt from the offline English text. With `words`
    (a closed vocabulary): merges run until every word, alone or after a space, is one token.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if words is None:
        text, vocab_size = _tokenizer_training_text(), TINY_BPE_VOCAB
    else:  # "w w" holds w at the start of a text and after a space ("Ġw")
        text, vocab_size = [f"{word} {word}" for word in words], WORD_LEVEL_VOCAB_LIMIT
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text, trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in special_tokens]
    )
    return tokenizer


def _added_tokens(tokenizer, tokens) -> dict[str, dict]:
    """tokenizer_config.json's added_tokens_decoder entries of the special `tokens`, by id."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    return {str(vocab[t]): {"content": t, **flags, "special": True} for t in tokens}


def _write_json_files(out_dir: Path, files: dict[str, dict]) -> None:
    for filename, content in files.items():
        (out_dir / filename).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _tokenizer_config(tokenizer) -> dict:
    """tokenizer_config.json in the LLaDA-8B-Instruct layout."""
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": _added_tokens(tokenizer, LLADA_SPECIAL_TOKENS),
        "bos_token": BOS_TOKEN,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "model_max_length": LLADA_8B.max_sequence_length,
        "pad_token": EOS_TOKEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def _shard_limit(state_dict: dict[str, torch.Tensor], num_shards: int) -> int:
    """Smallest byte limit for which huggingface_hub's greedy split gives at most `num_shards`."""
    from huggingface_hub import split_torch_state_dict_into_shards

    low, high = 1, sum(t.numel() * t.element_size() for t in state_dict.values())
    while low < high:
        middle = (low + high) // 2
        split = split_torch_state_dict_into_shards(state_dict, max_shard_size=middle)
        if len(split.filename_to_tensors) <= num_shards:
            high = middle
        else:
            low = middle + 1
    return low


def write_tiny_llada(
    out_dir: str | Path,
    *,
    seed: int = 0,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 4,
    mlp_hidden_size: int = 192,
    num_shards: int = 2,
    words: Sequence[str] | None = None,
) -> Path:
    """Write a random LLaDA in the exact layout of GSAI-ML/LLaDA-8B-Instruct.

    config.json, generation_config.json, `num_shards` float32 safetensors shards with
    model.safetensors.index.json, tokenizer.json (a byte-level BPE trained here, with the real
    special-token strings), tokenizer_config.json (chat template) and special_tokens_map.json.
    The same seed gives byte-identical files. `words`: a closed vocabulary the tokenizer spells
    with one token per word (the demo's corpus vocabulary).
    """
    out_dir = Path(out_dir)
    tokenizer = _train_tiny_tokenizer(words)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    rows = -(-len(vocab) // EMBEDDING_ROWS_MULTIPLE) * EMBEDDING_ROWS_MULTIPLE
    config = dataclasses.replace(
        LLADA_8B,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        mlp_hidden_size=mlp_hidden_size,
        vocab_size=rows,
        mask_token_id=vocab[MASK_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
    )
    torch.manual_seed(seed)
    model = LLaDAModelLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                parameter.normal_(1.0, TINY_NORM_WEIGHT_STD)
    save_llada(model, out_dir, max_shard_bytes=_shard_limit(model.state_dict(), num_shards))
    tokenizer.save(str(out_dir / "tokenizer.json"))
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    ids = {"bos_token_id": vocab[BOS_TOKEN], "eos_token_id": config.eos_token_id}
    files = {
        "tokenizer_config.json": _tokenizer_config(tokenizer),
        "special_tokens_map.json": special,
        "generation_config.json": {**ids, "pad_token_id": config.pad_token_id},
    }
    _write_json_files(out_dir, files)
    return out_dir


def write_tiny_llama(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    intermediate_size: int = 192,
    num_shards: int = 2,
    words: Sequence[str] | None = None,
) -> Path:
    """Write a random LLaMA in the layout of Meta-Llama-3-8B-Instruct's HF directory.

    config.json (LlamaConfig: GQA, rope theta 500000, untied head, EOS <|eot_id|>),
    generation_config.json (EOS [<|end_of_text|>, <|eot_id|>], the release's sampling
    defaults), `num_shards` float32 safetensors shards with model.safetensors.index.json,
    tokenizer.json (a byte-level BPE trained here, then Llama-3's 256 special tokens in their
    order, BOS added by the post-processor), tokenizer_config.json (chat template) and
    special_tokens_map.json. The same seed gives byte-identical files. `words`: a closed
    vocabulary the tokenizer spells with one token per word (the demo's corpus vocabulary).
    """
    from tokenizers import processors
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = _train_tiny_tokenizer(words, llama3_special_tokens())
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    bos, end_of_text, eot = (vocab[t] for t in (BEGIN_OF_TEXT_TOKEN, END_OF_TEXT_TOKEN, EOT_TOKEN))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BEGIN_OF_TEXT_TOKEN} $A",
        pair=f"{BEGIN_OF_TEXT_TOKEN} $A {BEGIN_OF_TEXT_TOKEN} $B",
        special_tokens=[(BEGIN_OF_TEXT_TOKEN, bos)],
    )
    config = LlamaConfig(
        vocab_size=len(vocab),  # Llama-3: 128256, exactly its token count
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=LLAMA3_CONTEXT,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": LLAMA3_ROPE_THETA},
        bos_token_id=bos,
        eos_token_id=eot,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.normal_(1.0, TINY_NORM_WEIGHT_STD)
    model.generation_config = GenerationConfig(
        bos_token_id=bos,
        eos_token_id=[end_of_text, eot],
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )
    shard_bytes = _shard_limit(model.state_dict(), num_shards)
    model.save_pretrained(out_dir, max_shard_size=shard_bytes)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    files = {
        "tokenizer_config.json": {
            "added_tokens_decoder": _added_tokens(tokenizer, llama3_special_tokens()),
            "bos_token": BEGIN_OF_TEXT_TOKEN,
            "chat_template": LLAMA3_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": True,
            "eos_token": EOT_TOKEN,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": LLAMA3_CONTEXT,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
        "special_tokens_map.json": {"bos_token": BEGIN_OF_TEXT_TOKEN, "eos_token": EOT_TOKEN},
    }
    _write_json_files(out_dir, files)
    return out_dir


def write_tiny_whisper(
    out_dir: str | Path,
    seed: int = 0,
    *,
    width: int = TINY_WHISPER_WIDTH,
    layers: int = TINY_WHISPER_LAYERS,
    heads: int = TINY_WHISPER_HEADS,
) -> Path:
    """Write a random Whisper model in transformers' layout (WhisperForConditionalGeneration).

    The directory holds config.json, generation_config.json, model.safetensors and
    preprocessor_config.json, as a real `openai/whisper-large-v3` download does.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=128,
        num_mel_bins=TINY_N_MELS,
        d_model=width,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=4 * width,
        decoder_layers=1,
        decoder_attention_heads=heads,
        decoder_ffn_dim=4 * width,
        max_source_positions=WHISPER_AUDIO_CONTEXT,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
    )
    model = WhisperForConditionalGeneration(config)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=TINY_N_MELS).save_pretrained(out_dir)
    return out_dir


def write_tiny_openai_whisper(path: str | Path, seed: int = 0) -> Path:
    """Write a random Whisper model as an openai-whisper `.pt` checkpoint ({dims, model_state_dict})."""
    from whisper.model import ModelDimensions, Whisper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dims = ModelDimensions(
        n_mels=TINY_N_MELS,
        n_audio_ctx=WHISPER_AUDIO_CONTEXT,
        n_audio_state=TINY_WHISPER_WIDTH,
        n_audio_head=TINY_WHISPER_HEADS,
        n_audio_layer=TINY_WHISPER_LAYERS,
        n_vocab=128,
        n_text_ctx=32,
        n_text_state=TINY_WHISPER_WIDTH,
        n_text_head=TINY_WHISPER_HEADS,
        n_text_layer=1,
    )
    model = Whisper(dims)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("whisper (transformers):", write_tiny_whisper(args.out_dir / "whisper", args.seed))
    print(
        "whisper (openai .pt):", write_tiny_openai_whisper(args.out_dir / "whisper.pt", args.seed)
    )
    print("llada:", write_tiny_llada(args.out_dir / "llada", seed=args.seed))
    print("llama:", write_tiny_llama(args.out_dir / "llama", seed=args.seed))


if __name__ == "__main__":
    main()
