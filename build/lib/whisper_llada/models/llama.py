"""The LLaMA-family causal LM of the autoregressive baseline: its directory, tokenizer and special tokens.

Whisper-LLaMA (the AR LLM-ASR system both seed papers compare with) decodes with
Llama-3-8B(-Instruct). It is loaded through transformers (`LlamaForCausalLM.from_pretrained`)
from an HF directory: config.json (model_type "llama"), safetensors shards, tokenizer.json and
tokenizer_config.json. Special-token ids come from the tokenizer, looked up by their Llama-3
strings, so the tiny test directory (whose ids differ from the real 128000+) runs through the
same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from whisper_llada.models.prompt import END_HEADER_TOKEN, EOT_TOKEN, START_HEADER_TOKEN

if TYPE_CHECKING:  # transformers is imported only where a model or tokenizer is loaded
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

BEGIN_OF_TEXT_TOKEN = "<|begin_of_text|>"
END_OF_TEXT_TOKEN = "<|end_of_text|>"  # the base model's EOS
RESERVED_SPECIAL_TOKENS = 256  # Llama-3: ids 128000..128255 after the 128000 BPE pieces


def llama3_special_tokens() -> list[str]:
    """Llama-3's 256 special-token strings in id order (128000 = begin_of_text, 128009 = eot)."""
    named = {
        0: BEGIN_OF_TEXT_TOKEN,
        1: END_OF_TEXT_TOKEN,
        6: START_HEADER_TOKEN,
        7: END_HEADER_TOKEN,
        9: EOT_TOKEN,
    }
    tokens, reserved = [], 0
    for offset in range(RESERVED_SPECIAL_TOKENS):
        if offset in named:
            tokens.append(named[offset])
        else:
            tokens.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return tokens


# Meta-Llama-3-8B-Instruct's chat template: BOS before the first message; each message is
# header(role) + "\n\n" + trimmed content + <|eot_id|>; then the assistant header when asked.
# Base Llama-3-8B ships none; it gets this one (its tokenizer has the same header tokens).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


@dataclass(frozen=True)
class CausalTokens:
    """Ids of the special tokens the causal model's prompt, targets and decoding use.

    eot (<|eot_id|>) ends every answer in training and stops decoding; eos (<|end_of_text|>)
    stops decoding too (a base model's habit); pad fills finished rows of a batch (Llama-3 has
    no pad token: end_of_text serves, never seen by a real position).
    """

    bos: int
    eos: int
    eot: int
    pad: int

    @property
    def stop(self) -> tuple[int, ...]:
        return (self.eot, self.eos)


def check_llama_dir(path: str | Path) -> Path:
    """The directory of a LLaMA checkpoint, or a ValueError that says what to pass."""
    directory = Path(path)
    config = directory / "config.json"
    if not str(path) or not config.is_file():
        raise ValueError(
            f"model.llama_path={str(path)!r} is not an HF model directory (no config.json): pass "
            "the Meta-Llama-3-8B-Instruct directory (or a tiny one from whisper_llada.models.tiny_models)"
        )
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "llama":
        raise ValueError(
            f"{config} has model_type {model_type!r}, not 'llama': model.llm=llama needs a "
            "LLaMA-family directory (a LLaDA one goes with model.llm=llada and model.llada_path)"
        )
    return directory


def load_llama(
    path: str | Path, *, dtype: torch.dtype, device: str | torch.device
) -> LlamaForCausalLM:
    """`LlamaForCausalLM.from_pretrained` of the directory, straight into `dtype` on `device`."""
    from transformers import LlamaForCausalLM

    directory = check_llama_dir(path)
    return LlamaForCausalLM.from_pretrained(
        directory, dtype=dtype, device_map={"": torch.device(device)}
    )


def load_llama_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The directory's fast tokenizer, with Llama-3's chat template when it ships none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(check_llama_dir(path))
    if tokenizer.chat_template is None:
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


def causal_tokens(tokenizer: PreTrainedTokenizerFast) -> CausalTokens:
    """Special-token ids by their Llama-3 strings; ValueError for a tokenizer without them."""
    vocab = tokenizer.get_vocab()
    needed = (
        BEGIN_OF_TEXT_TOKEN,
        END_OF_TEXT_TOKEN,
        START_HEADER_TOKEN,
        END_HEADER_TOKEN,
        EOT_TOKEN,
    )
    missing = [token for token in needed if token not in vocab]
    if missing:
        raise ValueError(
            f"the tokenizer has no {', '.join(missing)} token(s): model.llm=llama needs a "
            "Llama-3 tokenizer (Meta-Llama-3-8B(-Instruct), or a tiny one from "
            "whisper_llada.models.tiny_models)"
        )
    eos = vocab[END_OF_TEXT_TOKEN]
    pad = tokenizer.pad_token_id
    return CausalTokens(
        bos=vocab[BEGIN_OF_TEXT_TOKEN],
        eos=eos,
        eot=vocab[EOT_TOKEN],
        pad=eos if pad is None else pad,
    )


def llama_lora_target_regex(targets: tuple[str, ...]) -> str:
    """peft target pattern over the decoder layers' projections (q/k/v/o in self_attn, gate/up/down in mlp)."""
    return rf"model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(targets)})"
