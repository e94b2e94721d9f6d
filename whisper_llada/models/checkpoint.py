"""Checkpoints: trainable weights (+ config and metadata) saved atomically and loaded strictly, and the converter for the released Whisper-LLaDA checkpoint.

A checkpoint is one safetensors file holding only the trainable tensors (projector, LoRA factors,
CTC head: the frozen Whisper and LLaDA weights come from their own directories), with the config
and metadata as JSON in the safetensors header.

    python -m whisper_llada.models.checkpoint convert RELEASED.pth OUT.safetensors --config YAML
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from whisper_llada.models.speech_llm import SpeechLLM
from whisper_llada.utils.atomic_write import write_atomically

# Released `whisper-large-v3-llada-checkpoint_best_epoch_143.pth` key -> our key. The 22 keys the
# ASR forward never uses (the Q-Former's word/position embeddings, text-token FFN and MLM head)
# are dropped; see shared/reference/diffusion_asr_checkpoint_keys.md, section 3.
RELEASED_KEY_RULES: tuple[tuple[str, str | None], ...] = (
    (r"speech_query_tokens", "projector.query_tokens"),
    (r"linear_proj\.(weight|bias)", r"projector.linear_proj.\1"),
    (
        r"adapter\.bert\.embeddings\.LayerNorm\.(weight|bias)",
        r"projector.bert.embeddings.LayerNorm.\1",
    ),
    (
        r"adapter\.bert\.encoder\.layer\.(\d+)\.((attention|crossattention|intermediate_query|output_query)\..+)",
        r"projector.bert.encoder.layer.\1.\2",
    ),
    (
        r"(llada\.base_model\.model\.model\.transformer\.blocks\.\d+\.\w+\.lora_[AB]\.default\.weight)",
        r"\1",
    ),
    (r"adapter\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight", None),
    (r"adapter\.bert\.embeddings\.position_ids", None),
    (r"adapter\.bert\.encoder\.layer\.\d+\.(intermediate|output)\..+", None),
    (r"adapter\.cls\..+", None),
)


class CheckpointError(ValueError):
    """A checkpoint that does not match the model it is loaded into."""


def save_checkpoint(
    model: SpeechLLM,
    path: str | Path,
    *,
    config: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the trainable tensors of `model` to `path` atomically (temp file, then rename)."""
    tensors = {name: p.detach().to("cpu") for name, p in model.trainable_parameters().items()}
    return write_checkpoint(tensors, path, config=config, metadata=metadata or {})


def write_checkpoint(
    tensors: dict[str, torch.Tensor],
    path: str | Path,
    *,
    config: dict[str, Any],
    metadata: dict[str, Any],
) -> Path:
    """Write tensors with JSON config/metadata as one safetensors file, atomically."""
    header = {"config": json.dumps(config), "metadata": json.dumps(metadata)}
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    return write_atomically(path, lambda tmp: save_file(contiguous, tmp, metadata=header))


def read_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Return (tensors, config, metadata) of a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # safetensors raises several types for a damaged file
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint: {error}"
        ) from error
    return tensors, json.loads(header.get("config", "{}")), json.loads(header.get("metadata", "{}"))


def stored_config(path: str | Path) -> dict[str, Any]:
    """The config stored in a checkpoint written by `save_checkpoint` (its header only; {} if none)."""
    try:
        with safe_open(Path(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("config", "{}"))
    except Exception as error:  # safetensors raises several types for a damaged file
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint: {error}"
        ) from error


def load_checkpoint(
    model: SpeechLLM, path: str | Path, *, allow_missing_lora: bool = False
) -> dict[str, Any]:
    """Load trainable weights strictly into `model`; return the stored metadata.

    Every tensor in the file must match a parameter of the model by name and shape, and every
    trainable parameter of the model must be in the file; parameters absent from the file must
    be frozen ones (they come from the pretrained directories). The one exception is
    `allow_missing_lora=True`, for starting dLLM-ASR's stage 2 (projector + LoRA) from a stage-1
    checkpoint (projector only): LoRA factors absent from the file keep their initial values;
    every other trainable parameter must still be there.
    """
    tensors, _, metadata = read_checkpoint(path)
    load_trainable_state(model, tensors, source=str(path), allow_missing_lora=allow_missing_lora)
    return metadata


def load_trainable_state(
    model: SpeechLLM,
    tensors: dict[str, torch.Tensor],
    *,
    source: str,
    allow_missing_lora: bool = False,
) -> None:
    params = dict(model.named_parameters())
    trainable = model.trainable_parameters()
    unexpected = sorted(set(tensors) - set(params))
    missing = sorted(
        name
        for name in set(trainable) - set(tensors)
        if not (allow_missing_lora and ".lora_" in name)
    )
    mismatched = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(params[k].shape)}"
        for k in set(tensors) & set(params)
        if tensors[k].shape != params[k].shape
    )
    problems = [
        (f"{len(names)} {what}: " + ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
        for what, names in (
            ("unexpected keys", unexpected),
            ("missing trainable keys", missing),
            ("shape mismatches", mismatched),
        )
        if names
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not match this model ({'; '.join(problems)}). Build the model with the "
            "config the checkpoint was trained with (it is stored in the file)."
        )
    nonfinite = sorted(
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    )
    if nonfinite:
        raise CheckpointError(
            f"{source} holds NaN or infinite values in {len(nonfinite)} tensor(s): "
            + ", ".join(nonfinite[:10])
            + (" ..." if len(nonfinite) > 10 else "")
            + ". The run that wrote it diverged or the file is damaged: load an earlier "
            "checkpoint (train.py keeps best.safetensors and checkpoints/step-*)."
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].dtype))


def load_prefixed_state(
    model: SpeechLLM, tensors: dict[str, torch.Tensor], prefixes: Sequence[str], *, source: str
) -> list[str]:
    """Load the tensors whose names start with one of `prefixes` into `model`; the rest are ignored.

    For starting a run from part of another model's checkpoint (train.init_prefixes), e.g. the
    encoder and projector of a Whisper-LLaDA run into a Whisper-LLaMA one. Strict inside the
    prefixes: every prefix must match a tensor of the checkpoint, and every matched tensor a
    trainable parameter of `model` of the same shape. A frozen parameter is refused because the
    run's checkpoints hold only trainable tensors: a resumed run would lose what was loaded.

    Returns:
        The loaded tensors' names, sorted.

    Raises:
        CheckpointError: naming every prefix and tensor that breaks these rules.
    """
    if not prefixes:
        raise ValueError("load_prefixed_state needs at least one prefix")
    selected = {name: t for name, t in tensors.items() if name.startswith(tuple(prefixes))}
    params = dict(model.named_parameters())
    trainable = model.trainable_parameters()
    unmatched = [p for p in prefixes if not any(name.startswith(p) for name in tensors)]
    lacking = sorted(set(selected) - set(params))
    frozen = sorted(name for name in set(selected) & set(params) if name not in trainable)
    mismatched = sorted(
        f"{k}: file {tuple(selected[k].shape)} vs model {tuple(params[k].shape)}"
        for k in set(selected) & set(params)
        if selected[k].shape != params[k].shape
    )
    problems = [
        (f"{len(names)} {what}: " + ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
        for what, names in (
            ("prefixes matching no tensor of the checkpoint", unmatched),
            ("tensors this model lacks", lacking),
            ("tensors frozen in this model (its checkpoints would not keep them)", frozen),
            ("shape mismatches", mismatched),
        )
        if names
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not fit train.init_prefixes={list(prefixes)} ({'; '.join(problems)})"
        )
    with torch.no_grad():
        for name, tensor in selected.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return sorted(selected)


def convert_released_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the released Whisper-LLaDA "model" entry to this project's names.

    Raises CheckpointError for a key no rule knows (a different checkpoint).
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        for pattern, target in RELEASED_KEY_RULES:
            if re.fullmatch(pattern, key):
                if target is not None:
                    converted[re.sub(pattern, target, key)] = tensor.clone()
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} keys are not from the released Whisper-LLaDA checkpoint: "
            + ", ".join(unknown[:10])
        )
    return converted


# The settings of the release's own training config (its `config["model"]` section, read by the
# authors' `WhisperLLaDA.__init__`) and the keys of ours that must agree with them.
RELEASED_SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lora_rank", ("model", "lora", "r")),  # 0 when the release's `lora` is false
    ("lora_alpha", ("model", "lora", "alpha")),
    ("lora_dropout", ("model", "lora", "dropout")),
    ("second_per_window", ("model", "qformer", "second_per_window")),
    ("second_stride", ("model", "qformer", "second_stride")),
    ("task_prompt", ("model", "prompt")),
    ("gen_len", ("decode", "gen_len")),
)


def released_settings(source: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """The release's settings that ours must match, from its `config["model"]` section."""
    model = (payload.get("config") or {}).get("model")
    if not isinstance(model, dict):
        raise CheckpointError(
            f"{source} has no config['model'] entry (the training config the authors' runner "
            "saves with the weights): its LoRA, window and prompt settings cannot be checked"
        )
    needed = ["lora", *(name for name, _ in RELEASED_SETTINGS)]
    absent = [name for name in needed if name not in model]
    if absent:
        raise CheckpointError(f"{source}'s config['model'] lacks {', '.join(absent)}")
    settings = {name: model[name] for name, _ in RELEASED_SETTINGS}
    settings["lora_rank"] = settings["lora_rank"] if model["lora"] else 0
    return settings


def check_released_settings(settings: dict[str, Any], config: dict[str, Any]) -> None:
    """CheckpointError naming every key of `config` that differs from the release's setting."""
    problems = []
    for name, path in RELEASED_SETTINGS:
        ours: Any = config
        for key in path:
            ours = ours[key]
        theirs = settings[name]
        same = ours == theirs if isinstance(theirs, str) else abs(float(ours) - theirs) < 1e-6
        if not same:
            problems.append(f"{'.'.join(path)}: the release has {theirs!r} ({name}), ours {ours!r}")
    if problems:
        raise CheckpointError(
            "the config does not match the settings the release was trained with: "
            + "; ".join(problems)
            + ". Convert with a config that has the release's settings (set these keys)."
        )


def convert_released_checkpoint(
    source: str | Path, out: str | Path, *, config: dict[str, Any]
) -> Path:
    """Convert `whisper-large-v3-llada-checkpoint_best_epoch_143.pth` to a checkpoint of ours.

    `config` (the project config the weights will be decoded with, as `config.to_dict` gives it)
    is checked against the release's own training settings (LoRA rank, alpha and dropout, the
    Q-Former's windows, the task prompt, gen_len) and stored with the weights; the release's
    settings are recorded in the metadata.
    """
    source = Path(source)
    if not source.is_file():
        raise CheckpointError(f"released checkpoint not found: {source}")
    payload = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(
            f"{source} has no 'model' entry: not a released Whisper-LLaDA checkpoint"
        )
    settings = released_settings(source, payload)
    check_released_settings(settings, config)
    return write_checkpoint(
        convert_released_state_dict(payload["model"]),
        out,
        config=config,
        metadata={
            "converted_from": source.name,
            "epoch": payload.get("epoch"),
            "released_settings": settings,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Whisper-LLaDA checkpoint tools")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="convert the released .pth checkpoint")
    convert.add_argument("source", type=Path)
    convert.add_argument("out", type=Path)
    convert.add_argument(
        "--config",
        type=Path,
        required=True,
        help="the YAML config to decode with (e.g. configs/whisper_llada.yaml): checked against "
        "the release's training settings and stored with the weights",
    )
    convert.add_argument("overrides", nargs="*", help="section.key=value for the config")
    args = parser.parse_args()
    from whisper_llada.config import load_config
    from whisper_llada.config_strict import to_dict

    config = to_dict(load_config(args.config, args.overrides))
    try:
        out = convert_released_checkpoint(args.source, args.out, config=config)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    tensors, _, _ = read_checkpoint(out)
    print(
        f"wrote {out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values()):,} values"
    )


if __name__ == "__main__":
    main()
