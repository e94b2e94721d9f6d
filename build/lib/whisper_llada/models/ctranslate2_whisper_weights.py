"""CTranslate2 Whisper weights: which CTranslate2 variable becomes which transformers / openai-whisper tensor, and the model's dims.

CTranslate2's WhisperSpec fuses self-attention q/k/v and cross-attention k/v into one matrix
each, stores layer norms as gamma / beta and ties the output projection to the token
embeddings (an alias); each target tensor is a `_Piece`: a row block of one variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from whisper_llada.models.ctranslate2_model_bin import ModelBin
from whisper_llada.models.encoder import OPENAI_MLP_MULTIPLIER

WHISPER_SPEC = "WhisperSpec"
WHISPER_SPEC_REVISION = 3
GELU = 3  # CTranslate2's Activation enum: RELU 0, GELUTanh 1, SWISH 2, GELU 3
# Architecture flags a Whisper model.bin must hold for the conversion to be exact.
EXPECTED_FLAGS = {
    "decoder/activation": GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Read by CTranslate2's word alignment only, which neither target format stores in its weights.
ALIGNMENT_FLAGS = ("decoder/alignment_layer", "decoder/alignment_heads")
PROJECTION = "decoder/projection/weight"
EMBEDDINGS = "decoder/embeddings/weight"


@dataclass(frozen=True)
class _Piece:
    """A target tensor: row block `part` of `parts` of a CTranslate2 variable (fused q/k/v)."""

    source: str
    transformers: str
    openai: str
    part: int = 0
    parts: int = 1


def _linear(
    source: str, transformers: str, openai: str, *, bias: bool = True, part: int = 0, parts: int = 1
) -> list[_Piece]:
    pieces = [_Piece(f"{source}/weight", f"{transformers}.weight", f"{openai}.weight", part, parts)]
    if bias:
        pieces.append(
            _Piece(f"{source}/bias", f"{transformers}.bias", f"{openai}.bias", part, parts)
        )
    return pieces


def _layer_norm(source: str, transformers: str, openai: str) -> list[_Piece]:
    return [
        _Piece(f"{source}/gamma", f"{transformers}.weight", f"{openai}.weight"),
        _Piece(f"{source}/beta", f"{transformers}.bias", f"{openai}.bias"),
    ]


# Row blocks of CTranslate2's fused projections: (transformers name, openai name, has a bias).
# Whisper's key projection has no bias; CTranslate2 stores zeros there. Dropping a key bias is
# exact even if it were not zero: it adds the same q.b to every score of a query, which softmax
# cancels.
QUERY_KEY_VALUE = (("q_proj", "query", True), ("k_proj", "key", False), ("v_proj", "value", True))


def _fused(
    source: str, transformers: str, openai: str, projections: tuple[tuple[str, str, bool], ...]
) -> list[_Piece]:
    """The row blocks of one fused CTranslate2 projection, one linear per entry of `projections`."""
    pieces = []
    for part, (hf_proj, oa_proj, bias) in enumerate(projections):
        pieces += _linear(
            source,
            f"{transformers}.{hf_proj}",
            f"{openai}.{oa_proj}",
            bias=bias,
            part=part,
            parts=len(projections),
        )
    return pieces


def _layer_pieces(side: str, index: int) -> list[_Piece]:
    """Pieces of encoder or decoder layer `index` (`side` is "encoder" or "decoder")."""
    ct2, hf, oa = f"{side}/layer_{index}", f"model.{side}.layers.{index}", f"{side}.blocks.{index}"
    pieces = _fused(
        f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", f"{oa}.attn", QUERY_KEY_VALUE
    )
    pieces += _linear(
        f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj", f"{oa}.attn.out"
    )
    pieces += _layer_norm(
        f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", f"{oa}.attn_ln"
    )
    if side == "decoder":
        cross, cross_hf, cross_oa = f"{ct2}/attention", f"{hf}.encoder_attn", f"{oa}.cross_attn"
        pieces += _linear(f"{cross}/linear_0", f"{cross_hf}.q_proj", f"{cross_oa}.query")
        pieces += _fused(f"{cross}/linear_1", cross_hf, cross_oa, QUERY_KEY_VALUE[1:])
        pieces += _linear(f"{cross}/linear_2", f"{cross_hf}.out_proj", f"{cross_oa}.out")
        pieces += _layer_norm(
            f"{cross}/layer_norm", f"{hf}.encoder_attn_layer_norm", f"{oa}.cross_attn_ln"
        )
    pieces += _linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1", f"{oa}.mlp.0")
    pieces += _linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2", f"{oa}.mlp.2")
    pieces += _layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", f"{oa}.mlp_ln")
    return pieces


def _whisper_pieces(n_encoder_layers: int, n_decoder_layers: int) -> list[_Piece]:
    """Every tensor of both target formats; the output projection is tied to the embeddings."""
    pieces = [
        *_linear("encoder/conv1", "model.encoder.conv1", "encoder.conv1"),
        *_linear("encoder/conv2", "model.encoder.conv2", "encoder.conv2"),
        _Piece(
            "encoder/position_encodings/encodings",
            "model.encoder.embed_positions.weight",
            "encoder.positional_embedding",
        ),
        *_layer_norm("encoder/layer_norm", "model.encoder.layer_norm", "encoder.ln_post"),
        _Piece(EMBEDDINGS, "model.decoder.embed_tokens.weight", "decoder.token_embedding.weight"),
        _Piece(
            "decoder/position_encodings/encodings",
            "model.decoder.embed_positions.weight",
            "decoder.positional_embedding",
        ),
        *_layer_norm("decoder/layer_norm", "model.decoder.layer_norm", "decoder.ln"),
    ]
    for index in range(n_encoder_layers):
        pieces += _layer_pieces("encoder", index)
    for index in range(n_decoder_layers):
        pieces += _layer_pieces("decoder", index)
    return pieces


def _check_whisper_spec(model: ModelBin, source: Path) -> None:
    """Raise unless `model` is a WhisperSpec revision 3 with Whisper's architecture flags."""
    if (model.spec_name, model.spec_revision) != (WHISPER_SPEC, WHISPER_SPEC_REVISION):
        raise ValueError(
            f"{source} holds {model.spec_name} revision {model.spec_revision}; this converter "
            f"reads {WHISPER_SPEC} revision {WHISPER_SPEC_REVISION}. Pass a CTranslate2 Whisper model."
        )
    for name, expected in EXPECTED_FLAGS.items():
        if name not in model.variables or int(model.array(name)) != expected:
            found = int(model.array(name)) if name in model.variables else "missing"
            raise ValueError(
                f"{source}: {name} is {found}, Whisper has {expected}; this model is not a plain "
                "Whisper and cannot be converted exactly."
            )
    if model.aliases.get(PROJECTION) != EMBEDDINGS:
        raise ValueError(
            f"{source}: {PROJECTION} is not an alias of {EMBEDDINGS}; openai-whisper ties the "
            "output projection to the token embeddings, so an untied projection cannot be converted."
        )


def _layer_count(model: ModelBin, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in model.variables if (m := pattern.match(name))}
    return max(indices, default=-1) + 1


def whisper_dims(model: ModelBin) -> dict[str, int]:
    """openai-whisper's `ModelDimensions` fields, read from the variables' shapes and head counts."""
    width, n_mels, _ = model.variables["encoder/conv1/weight"].shape  # (D, n_mels, kernel)
    n_vocab, text_width = model.variables[EMBEDDINGS].shape  # (V, D)
    for name, variable in model.variables.items():
        if (
            name.endswith("/ffn/linear_0/weight")
            and variable.shape[0] != OPENAI_MLP_MULTIPLIER * width
        ):
            raise ValueError(
                f"{name} has {variable.shape[0]} rows; openai-whisper's MLP has "
                f"{OPENAI_MLP_MULTIPLIER} x {width}, so this model cannot be converted to it."
            )
    return {
        "n_mels": n_mels,
        "n_audio_ctx": model.variables["encoder/position_encodings/encodings"].shape[0],
        "n_audio_state": width,
        "n_audio_head": int(model.array("encoder/num_heads")),
        "n_audio_layer": _layer_count(model, "encoder"),
        "n_vocab": n_vocab,
        "n_text_ctx": model.variables["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": text_width,
        "n_text_head": int(model.array("decoder/num_heads")),
        "n_text_layer": _layer_count(model, "decoder"),
    }


def whisper_state_dicts(
    model: ModelBin, source: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The weights as (transformers WhisperForConditionalGeneration, openai-whisper) state dicts.

    Tensors are float32: CTranslate2 stores float16, widening it is exact, and the reference
    runtime is compared in float32. Both dicts share the same tensors. transformers' dict omits
    `proj_out.weight`, tied to the embeddings (tie_word_embeddings).

    Raises:
        ValueError: not a Whisper CTranslate2 model, a variable missing, or variables left over.
    """
    _check_whisper_spec(model, source)
    dims = whisper_dims(model)
    pieces = _whisper_pieces(dims["n_audio_layer"], dims["n_text_layer"])
    missing = sorted({p.source for p in pieces} - model.variables.keys())
    leftover = sorted(
        model.variables.keys()
        - {p.source for p in pieces}
        - EXPECTED_FLAGS.keys()
        - {*ALIGNMENT_FLAGS, "encoder/num_heads", "decoder/num_heads"}
    )
    if missing or leftover:
        raise ValueError(
            f"{source} does not have the variables of a Whisper model: missing {missing}, "
            f"not converted {leftover}. Pass a {WHISPER_SPEC} revision {WHISPER_SPEC_REVISION} model."
        )
    widened: dict[str, np.ndarray] = {}
    transformers_state, openai_state = {}, {}
    for piece in pieces:
        if piece.source not in widened:
            widened[piece.source] = model.array(piece.source).astype(np.float32)
        rows = widened[piece.source].shape[0] // piece.parts
        block = widened[piece.source][piece.part * rows : (piece.part + 1) * rows]
        # A copy for fused blocks: safetensors refuses tensors that share memory.
        tensor = torch.from_numpy(block.copy() if piece.parts > 1 else block)
        transformers_state[piece.transformers] = tensor
        openai_state[piece.openai] = tensor
    return transformers_state, openai_state
