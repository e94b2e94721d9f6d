"""LLaDA's hyper-parameters as its official config.json names them: `LLaDAConfig` (read, checked, written) and LLaDA-8B-Instruct's values (`LLADA_8B`).

Fields whose other values would change the computation `llada` does not implement are checked
against the only supported value (`REQUIRED_FIXED_FIELDS` must be present,
`OPTIONAL_FIXED_FIELDS` are checked if so).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# config.json fields whose other values change the computation this module does not implement:
# field -> the only supported value. REQUIRED ones must be present, OPTIONAL ones are checked if so.
REQUIRED_FIXED_FIELDS: dict[str, Any] = {
    "weight_tying": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "block_type": "llama",
    "activation_type": "silu",
    "layer_norm_type": "rms",
    "rope": True,
}
OPTIONAL_FIXED_FIELDS: dict[str, Any] = {
    "rope_full_precision": True,
    "alibi": False,
    "input_emb_norm": False,
    "attention_layer_norm": False,
    "scale_logits": False,
    "layer_norm_with_affine": True,
    "bias_for_layer_norm": False,
}


@dataclass(frozen=True)
class LLaDAConfig:
    """The LLaDA hyper-parameters this implementation computes with (official config.json names).

    `vocab_size` is the number of embedding / output rows (official `embedding_size`, which may
    exceed the tokenizer's vocabulary: LLaDA-8B has 126464 rows, its last special id is 126348).
    """

    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    max_sequence_length: int
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} (GQA)"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_json(cls, path: str | Path) -> LLaDAConfig:
        """Read an official LLaDA config.json, refusing values this module does not compute."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a LLaDA directory needs the config.json of "
                "GSAI-ML/LLaDA-8B-Instruct (or one written by save_llada)"
            )
        raw = json.loads(path.read_text())
        for field, supported in REQUIRED_FIXED_FIELDS.items():
            if field not in raw:
                raise ValueError(
                    f"{path} has no field {field!r}; LLaDA needs {field}={supported!r}"
                )
        for field, supported in {**REQUIRED_FIXED_FIELDS, **OPTIONAL_FIXED_FIELDS}.items():
            if field in raw and raw[field] != supported:
                raise ValueError(
                    f"{path}: unsupported {field}={raw[field]!r}; this implementation supports "
                    f"only {field}={supported!r}"
                )
        try:
            rows = raw.get("embedding_size") or raw["vocab_size"]
            if rows < raw["vocab_size"]:
                raise ValueError(
                    f"{path}: unsupported embedding_size={rows} < vocab_size={raw['vocab_size']}; "
                    "this implementation supports only embedding_size >= vocab_size"
                )
            derived = {"vocab_size": rows, "n_kv_heads": raw.get("n_kv_heads") or raw["n_heads"]}
            same_name = {f.name: raw[f.name] for f in fields(cls) if f.name not in derived}
        except KeyError as missing:
            raise ValueError(f"{path} has no field {missing}; is it a LLaDA config.json?") from None
        return cls(**same_name, **derived)

    def to_json_dict(self) -> dict[str, Any]:
        """The official-looking config.json content (field names of GSAI-ML/LLaDA-8B-Instruct)."""
        return {
            "architectures": ["LLaDAModelLM"],
            "model_type": "llada",
            **REQUIRED_FIXED_FIELDS,
            "rope_full_precision": True,
            **asdict(self),
            "embedding_size": self.vocab_size,
        }

    def to_dict(self) -> dict[str, Any]:
        """What peft reads as `model.config`: model_type, and tie_word_embeddings (never tied)."""
        return {**self.to_json_dict(), "tie_word_embeddings": False}


LLADA_8B = LLaDAConfig(
    d_model=4096,
    n_layers=32,
    n_heads=32,
    n_kv_heads=32,
    mlp_hidden_size=12288,
    vocab_size=126464,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_sequence_length=4096,
    mask_token_id=126336,
    eos_token_id=126081,
    pad_token_id=126081,
)
