"""Whisper encoder: load from a transformers directory or an openai-whisper checkpoint; 30 s or true-length encoding.

Two ways in, one module out: `load_whisper_encoder` returns transformers' `WhisperEncoder`
holding only the encoder weights (whisper-large-v3's ~900 M decoder parameters are never read),
built on the meta device and filled tensor by tensor straight into the requested dtype.

`encode` is our own forward over that module's submodules. transformers' `WhisperEncoder.forward`
and openai-whisper's `AudioEncoder` both accept only 30 s (3000 mel frames); `encode` also takes
shorter inputs (adding only the first F positional rows) and a batch of different lengths, where
each row's valid frames equal encoding that row alone. Feeding shorter inputs is a modelling
choice that training and decoding must share; Whisper-LLaDA pads every utterance to 30 s.

Dimensions: B batch, T mel frames, F encoder frames (T / 2, 50 per second), D width.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from safetensors import safe_open
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PYTORCH_BIN_FILE = "pytorch_model.bin"
# Key prefixes of the encoder in transformers checkpoints, most specific first:
# WhisperForConditionalGeneration ("model.encoder.") and WhisperModel ("encoder.").
TRANSFORMERS_ENCODER_PREFIXES = ("model.encoder.", "encoder.")
OPENAI_ENCODER_PREFIX = "encoder."
OPENAI_REQUIRED_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
OPENAI_MLP_MULTIPLIER = 4  # openai-whisper's MLP hidden width is 4 * n_audio_state
# openai-whisper encoder names (after "encoder.") -> transformers WhisperEncoder names.
OPENAI_TO_TRANSFORMERS_NAMES = (
    (r"^positional_embedding$", "embed_positions.weight"),
    (r"^ln_post\.", "layer_norm."),
    (r"^blocks\.(\d+)\.attn\.query\.", r"layers.\1.self_attn.q_proj."),
    (r"^blocks\.(\d+)\.attn\.key\.", r"layers.\1.self_attn.k_proj."),
    (r"^blocks\.(\d+)\.attn\.value\.", r"layers.\1.self_attn.v_proj."),
    (r"^blocks\.(\d+)\.attn\.out\.", r"layers.\1.self_attn.out_proj."),
    (r"^blocks\.(\d+)\.attn_ln\.", r"layers.\1.self_attn_layer_norm."),
    (r"^blocks\.(\d+)\.mlp\.0\.", r"layers.\1.fc1."),
    (r"^blocks\.(\d+)\.mlp\.2\.", r"layers.\1.fc2."),
    (r"^blocks\.(\d+)\.mlp_ln\.", r"layers.\1.final_layer_norm."),
)
MAX_NAMES_IN_ERROR = 10

# Both convolutions have kernel 3 and padding 1; conv1 keeps T, conv2 halves it (stride 2).
CONV_KERNEL_SIZE = 3
CONV_PADDING = 1
CONV2_STRIDE = 2
# Attention implementations that take an additive (B, 1, 1, F) key-padding mask.
ADDITIVE_MASK_ATTENTION = ("eager", "sdpa")

EXPECTED_INPUT = (
    f"a transformers Whisper directory (with {CONFIG_FILE} and {SAFETENSORS_FILE}, "
    f"{SAFETENSORS_INDEX_FILE} or {PYTORCH_BIN_FILE}) or an openai-whisper .pt checkpoint"
)


def load_whisper_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> WhisperEncoder:
    """Load only the encoder of a Whisper checkpoint, in eval mode, without touching requires_grad.

    Args:
        path: a transformers directory (config.json + model.safetensors, a sharded
            model.safetensors.index.json, or pytorch_model.bin; WhisperModel or
            WhisperForConditionalGeneration keys) or an openai-whisper `.pt` file
            ({"dims", "model_state_dict"}). Decoder tensors are never read.
        dtype: parameter dtype; checkpoint tensors are cast to it one by one.
        device: where the parameters live.

    Returns:
        transformers' `WhisperEncoder` whose every parameter comes from the checkpoint.

    Raises:
        FileNotFoundError: `path` does not exist, or a directory lacks config.json or weights.
        ValueError: `path` is not a Whisper checkpoint, or its encoder tensors do not match the
            config (the message lists missing, unexpected and shape-mismatched names).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Whisper checkpoint not found: {path}. Pass {EXPECTED_INPUT}.")
    if path.is_dir():
        config, tensors = _transformers_encoder_tensors(path)
    else:
        config, tensors = _openai_encoder_tensors(path)
    with init_empty_weights():
        encoder = WhisperEncoder(config)
    _fill_parameters(encoder, tensors, path, dtype, torch.device(device))
    return encoder.eval()


def _transformers_encoder_tensors(
    directory: Path,
) -> tuple[WhisperConfig, Iterator[tuple[str, torch.Tensor]]]:
    """Config and (encoder parameter name, tensor) pairs of a transformers Whisper directory."""
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}; expected {EXPECTED_INPUT}.")
    config = WhisperConfig.from_pretrained(directory)
    file_by_key = _checkpoint_file_by_key(directory)
    prefix = next(
        (p for p in TRANSFORMERS_ENCODER_PREFIXES if any(k.startswith(p) for k in file_by_key)),
        None,
    )
    if prefix is None:
        raise ValueError(
            f"No encoder tensors in {directory}: no key starts with "
            f"{' or '.join(TRANSFORMERS_ENCODER_PREFIXES)}. Pass a Whisper checkpoint directory."
        )
    encoder_files = {k: f for k, f in file_by_key.items() if k.startswith(prefix)}
    return config, _read_tensors(encoder_files, prefix)


def _checkpoint_file_by_key(directory: Path) -> dict[str, Path]:
    """Map every tensor key of a transformers checkpoint to the file that holds it."""
    index_path = directory / SAFETENSORS_INDEX_FILE
    if index_path.is_file():
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
        return {key: directory / shard for key, shard in weight_map.items()}
    single_path = directory / SAFETENSORS_FILE
    if single_path.is_file():
        with safe_open(single_path, framework="pt") as shard:
            return dict.fromkeys(shard.keys(), single_path)
    bin_path = directory / PYTORCH_BIN_FILE
    if bin_path.is_file():
        state = torch.load(bin_path, map_location="cpu", weights_only=True, mmap=True)
        return dict.fromkeys(state, bin_path)
    raise FileNotFoundError(
        f"{directory} has {CONFIG_FILE} but no weights: expected {SAFETENSORS_FILE}, "
        f"{SAFETENSORS_INDEX_FILE} (sharded) or {PYTORCH_BIN_FILE}."
    )


def _read_tensors(file_by_key: dict[str, Path], prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (key without prefix, tensor), opening each file once and reading only these keys."""
    keys_by_file: dict[Path, list[str]] = {}
    for key, file in file_by_key.items():
        keys_by_file.setdefault(file, []).append(key)
    for file, keys in keys_by_file.items():
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as shard:
                for key in keys:
                    yield key.removeprefix(prefix), shard.get_tensor(key)
        else:
            # mmap: only the pages of the requested (encoder) tensors are read from disk.
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for key in keys:
                yield key.removeprefix(prefix), state[key]


def _openai_encoder_tensors(path: Path) -> tuple[WhisperConfig, Iterator[tuple[str, torch.Tensor]]]:
    """Config and renamed (encoder parameter name, tensor) pairs of an openai-whisper `.pt` file."""
    try:
        # mmap only works (and only matters) for the zip format every torch.save since 1.6 writes.
        checkpoint = torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(
            f"{path} is not a readable checkpoint ({error}). Pass {EXPECTED_INPUT}."
        ) from error
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise ValueError(
            f"{path} is not an openai-whisper checkpoint: expected a dict with 'dims' and "
            f"'model_state_dict'. Pass {EXPECTED_INPUT}."
        )
    dims = checkpoint["dims"]
    missing_dims = [name for name in OPENAI_REQUIRED_DIMS if name not in dims]
    if missing_dims:
        raise ValueError(f"{path}: 'dims' lacks {missing_dims}; expected {OPENAI_REQUIRED_DIMS}.")
    config = WhisperConfig(
        num_mel_bins=dims["n_mels"],
        max_source_positions=dims["n_audio_ctx"],
        d_model=dims["n_audio_state"],
        encoder_attention_heads=dims["n_audio_head"],
        encoder_layers=dims["n_audio_layer"],
        encoder_ffn_dim=OPENAI_MLP_MULTIPLIER * dims["n_audio_state"],
    )
    state = checkpoint["model_state_dict"]
    tensors = (
        (_openai_to_transformers_name(key.removeprefix(OPENAI_ENCODER_PREFIX)), tensor)
        for key, tensor in state.items()
        if key.startswith(OPENAI_ENCODER_PREFIX)
    )
    return config, tensors


def _openai_to_transformers_name(name: str) -> str:
    """Rename one openai-whisper encoder tensor; conv1/conv2 and unknown names pass unchanged."""
    for pattern, replacement in OPENAI_TO_TRANSFORMERS_NAMES:
        name, count = re.subn(pattern, replacement, name)
        if count:
            break
    return name


def _fill_parameters(
    encoder: nn.Module,
    tensors: Iterable[tuple[str, torch.Tensor]],
    source: Path,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """Move checkpoint tensors into the meta-device encoder; raise unless it matches exactly."""
    expected_shapes = {name: tuple(p.shape) for name, p in encoder.named_parameters()}
    filled: set[str] = set()
    unexpected: list[str] = []
    mismatched: dict[str, str] = {}
    for name, tensor in tensors:
        if name not in expected_shapes:
            unexpected.append(name)
        elif tuple(tensor.shape) != expected_shapes[name]:
            mismatched[name] = (
                f"{name} (checkpoint {tuple(tensor.shape)}, config {expected_shapes[name]})"
            )
        else:
            # clear_cache=False: emptying the device cache after each of ~500 tensors is slow.
            set_module_tensor_to_device(
                encoder, name, device, value=tensor, dtype=dtype, clear_cache=False
            )
            filled.add(name)
    missing = sorted(set(expected_shapes) - filled - mismatched.keys())
    if missing or unexpected or mismatched:
        problems = [
            f"{label} {len(names)}: {_abbreviate(names)}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", list(mismatched.values())),
            )
            if names
        ]
        raise ValueError(
            f"Whisper encoder weights in {source} do not match its config: "
            + "; ".join(problems)
            + ". Check that the config and weights come from the same, complete checkpoint."
        )


def _abbreviate(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES_IN_ERROR])
    hidden = len(names) - MAX_NAMES_IN_ERROR
    return f"{shown}, ... ({hidden} more)" if hidden > 0 else shown


def encoder_output_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
    """Encoder frames per utterance: ceil(T / 2), the length after the stride-2 conv.

    Args:
        mel_lengths: (B,) integer mel frame counts.

    Returns:
        (B,) integer encoder frame counts (same dtype and device).
    """
    return (mel_lengths + 2 * CONV_PADDING - CONV_KERNEL_SIZE) // CONV2_STRIDE + 1


def encode(
    encoder: WhisperEncoder,
    mel: torch.Tensor,
    mel_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode log-mel features, optionally of different true lengths within the batch.

    With T == 3000 and no padding this equals `WhisperEncoder.forward(mel).last_hidden_state`.
    With `mel_lengths`, each row's valid frames equal encoding that row alone: mel frames and
    conv1 outputs past a row's length are zeroed (as the conv's own zero padding would be) and
    padded frames are masked as attention keys. Padded output frames are set to zero.
    Runs under `torch.no_grad()` when no encoder parameter requires grad.

    Args:
        encoder: from `load_whisper_encoder` (any `WhisperEncoder`).
        mel: (B, n_mels, T) log-mel features, T <= 2 * max_source_positions (3000 = 30 s).
            Cast to the encoder's parameter dtype.
        mel_lengths: (B,) valid mel frames per row, 1 <= length <= T; None means all T.

    Returns:
        frames: (B, F, D) encoder output, F = ceil(T / 2).
        frame_mask: (B, F) bool, True for valid frames (the first encoder_output_lengths).
    """
    if mel.dim() != 3 or mel.shape[1] != encoder.config.num_mel_bins:
        raise ValueError(
            f"mel must be (batch, {encoder.config.num_mel_bins} mel bins, frames), got "
            f"{tuple(mel.shape)}; compute features with this encoder's number of mel bins."
        )
    batch, _, n_frames = mel.shape
    max_frames = CONV2_STRIDE * encoder.config.max_source_positions
    if n_frames > max_frames:
        raise ValueError(
            f"mel has {n_frames} frames but the Whisper encoder takes at most {max_frames} "
            f"(2 x {encoder.config.max_source_positions} positions, 30 s); "
            "split longer audio into chunks."
        )
    if mel_lengths is None:
        mel_lengths = torch.full((batch,), n_frames, dtype=torch.long, device=mel.device)
    mel_lengths = mel_lengths.to(device=mel.device, dtype=torch.long)
    if mel_lengths.shape != (batch,) or not bool(
        ((mel_lengths >= 1) & (mel_lengths <= n_frames)).all()
    ):
        raise ValueError(
            f"mel_lengths must be ({batch},) with values in [1, {n_frames}], "
            f"got {mel_lengths.tolist()}."
        )
    trainable = any(p.requires_grad for p in encoder.parameters())
    with nullcontext() if trainable else torch.no_grad():
        return _encode_lengths(encoder, mel.to(encoder.conv1.weight.dtype), mel_lengths)


def _encode_lengths(
    encoder: WhisperEncoder, mel: torch.Tensor, mel_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward pass of `encode` on validated inputs; mel (B, n_mels, T), lengths (B,)."""
    n_frames = mel.shape[-1]
    padded = bool((mel_lengths < n_frames).any())
    mel_valid = torch.arange(n_frames, device=mel.device) < mel_lengths[:, None]  # (B, T)
    if padded:
        mel = mel.masked_fill(~mel_valid[:, None, :], 0.0)  # (B, n_mels, T)
    hidden = nn.functional.gelu(encoder.conv1(mel))  # (B, D, T)
    if padded:
        hidden = hidden.masked_fill(~mel_valid[:, None, :], 0.0)  # (B, D, T)
    hidden = nn.functional.gelu(encoder.conv2(hidden))  # (B, D, F)
    hidden = hidden.permute(0, 2, 1)  # (B, F, D)
    n_encoder_frames = hidden.shape[1]
    hidden = hidden + encoder.embed_positions.weight[:n_encoder_frames]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)

    frame_lengths = encoder_output_lengths(mel_lengths)
    frame_mask = torch.arange(n_encoder_frames, device=mel.device) < frame_lengths[:, None]
    attention_mask = _key_padding_mask(encoder, frame_mask, hidden.dtype) if padded else None
    for layer in encoder.layers:
        # LayerDrop as in WhisperEncoder.forward (whisper-large-v3 sets encoder_layerdrop 0).
        if encoder.training and encoder.layerdrop > 0 and torch.rand([]) < encoder.layerdrop:
            continue
        hidden = layer(hidden, attention_mask)  # (B, F, D)
    hidden = encoder.layer_norm(hidden)
    if padded:
        hidden = hidden.masked_fill(~frame_mask[:, :, None], 0.0)  # (B, F, D)
    return hidden, frame_mask


def _key_padding_mask(
    encoder: WhisperEncoder, frame_mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Additive attention mask (B, 1, 1, F): 0 for valid keys, dtype's minimum for padding.

    WhisperEncoderLayer passes its mask unchanged to the configured attention function; eager
    adds it to the scores and SDPA takes it as `attn_mask`, both broadcasting over heads and
    queries. Flash-attention and flex expect other mask formats, so they are refused here.
    """
    implementation = encoder.config._attn_implementation
    if implementation not in ADDITIVE_MASK_ATTENTION:
        raise ValueError(
            f"encode() with padded rows (mel_lengths < T) needs attention implementation "
            f"{' or '.join(ADDITIVE_MASK_ATTENTION)}, but this encoder uses {implementation!r}. "
            "Call encoder.set_attn_implementation('sdpa'), or pad every row to full length."
        )
    blocked = torch.finfo(dtype).min
    mask = torch.zeros(frame_mask.shape, dtype=dtype, device=frame_mask.device)
    mask = mask.masked_fill(~frame_mask, blocked)  # (B, F)
    return mask[:, None, None, :]  # (B, 1, 1, F)


def encoder_weights_sha256(encoder: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of `encoder` (name, dtype, shape, bytes): which
    weights they are, whatever torch computes with them (an export records it, `load_decoder`
    checks it)."""
    digest = hashlib.sha256()
    hash_tensors(digest, encoder)
    return digest.hexdigest()


def hash_tensors(digest, module: nn.Module) -> None:
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor_bytes(tensor))


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().cpu().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()
