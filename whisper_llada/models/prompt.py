"""Tokenizer, special tokens and the chat-templated ASR prompt of LLaDA.

Special-token ids are never written inline: they come from the tokenizer (looked up by their
strings) and from config.json (mask / eos / pad), so the tiny test tokenizer, whose ids differ
from the real 126xxx ones, runs through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported only where a tokenizer is loaded
    from transformers import PreTrainedTokenizerFast

    from whisper_llada.models.llada_config import LLaDAConfig

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"  # also the padding token
MASK_TOKEN = "<|mdm_mask|>"  # not registered as mask_token in tokenizer_config.json
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# The LLaDA-8B-Instruct chat template in Jinja: BOS before the first message only; each message
# is header(role) + "\n\n" + trimmed content + EOT; the assistant header always follows. The
# newlines live inside Jinja string literals because transformers renders with trim_blocks.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '" + START_HEADER_TOKEN + "' + message['role'] + '" + END_HEADER_TOKEN + "\\n\\n' }}"
    "{{ message['content'] | trim }}"
    "{{ '" + EOT_TOKEN + "' }}"
    "{% endfor %}"
    "{{ '" + START_HEADER_TOKEN + "assistant" + END_HEADER_TOKEN + "\\n\\n' }}"
)


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens the prompt, the canvas and the decoders use."""

    bos: int
    eos: int
    pad: int
    mask: int
    eot: int
    start_header: int
    end_header: int


def special_tokens(tokenizer: PreTrainedTokenizerFast, config: LLaDAConfig) -> SpecialTokens:
    """mask / eos / pad from config.json; the others by their strings in the tokenizer.

    Raises ValueError when a token string is missing from the tokenizer or when tokenizer and
    config.json disagree (a tokenizer from another model).
    """
    vocab = tokenizer.get_vocab()
    ids = {}
    for name, token in (
        ("bos", BOS_TOKEN),
        ("eot", EOT_TOKEN),
        ("start_header", START_HEADER_TOKEN),
        ("end_header", END_HEADER_TOKEN),
        ("mask", MASK_TOKEN),
    ):
        if token not in vocab:
            raise ValueError(
                f"the tokenizer has no {token!r} token; load the tokenizer of LLaDA-8B-Instruct "
                "(or of a tiny model from whisper_llada.models.tiny_models)"
            )
        ids[name] = vocab[token]
    checks = (
        ("eos", tokenizer.eos_token_id, config.eos_token_id),
        (MASK_TOKEN, ids["mask"], config.mask_token_id),
    )
    for what, from_tokenizer, from_config in checks:
        if from_tokenizer != from_config:
            raise ValueError(
                f"tokenizer {what} id {from_tokenizer} differs from config.json's {from_config}; "
                "load the tokenizer and the model from the same LLaDA directory"
            )
    return SpecialTokens(
        bos=ids["bos"],
        eos=config.eos_token_id,
        pad=config.pad_token_id,
        mask=config.mask_token_id,
        eot=ids["eot"],
        start_header=ids["start_header"],
        end_header=ids["end_header"],
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The fast BPE tokenizer of a LLaDA directory (tokenizer.json + tokenizer_config.json)."""
    directory = Path(path)
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {directory}: pass the "
            "GSAI-ML/LLaDA-8B-Instruct directory (or a tiny one from whisper_llada.models.tiny_models)"
        )
    from transformers import AutoTokenizer, PretrainedConfig

    # config.json is LLaDA's own format, unknown to transformers (it would warn); the tokenizer
    # class comes from tokenizer_config.json, so a neutral config is passed instead.
    return AutoTokenizer.from_pretrained(directory, config=PretrainedConfig())


def prompt_ids(tokenizer: PreTrainedTokenizerFast, instruction: str) -> list[int]:
    """The chat-templated user turn with `instruction` and the assistant header, as ids.

    BOS, header("user"), "\\n\\n", instruction.strip(), EOT, header("assistant"), "\\n\\n".
    """
    messages = [{"role": "user", "content": instruction}]
    return list(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


def text_ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of plain text, no special tokens added."""
    return tokenizer.encode(text, add_special_tokens=False)


def decode_text(tokenizer: PreTrainedTokenizerFast, ids: list[int]) -> str:
    """Text of `ids` with special tokens (EOS, EOT, MASK, ...) dropped and whitespace collapsed."""
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return " ".join(text.split())
