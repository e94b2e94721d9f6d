"""LLaDA checkpoint directories: strict loading of sharded safetensors straight into the target dtype, and saving in the official layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from whisper_llada.models.llada import LLaDAModelLM
from whisper_llada.models.llada_config import LLaDAConfig
from whisper_llada.utils.atomic_write import write_atomically, write_text_atomically

CONFIG_FILE = "config.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# huggingface_hub fills {suffix} with "-00001-of-00006" etc.
SHARD_FILE_PATTERN = "model{suffix}.safetensors"
ERROR_LIST_LIMIT = 10  # names shown per kind of mismatch in a strict-load error


def load_llada(
    path: str | Path, *, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"
) -> LLaDAModelLM:
    """Build LLaDA from a checkpoint directory, strictly, without a float32 copy of the model.

    The model is built on the meta device and every tensor goes straight from safetensors into
    `dtype` on `device`. Any missing key, unexpected key or shape mismatch raises.

    Args:
        path: directory with config.json and model.safetensors.index.json + shards (the
            GSAI-ML/LLaDA-8B-Instruct layout) or a single model.safetensors.
    Returns:
        the model in eval mode.
    """
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"LLaDA directory {directory} does not exist: download GSAI-ML/LLaDA-8B-Instruct "
            "there or point the config at the right folder"
        )
    config = LLaDAConfig.from_json(directory / CONFIG_FILE)
    with init_empty_weights():
        model = LLaDAModelLM(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in _weight_files(directory):
        with safe_open(file, framework="pt") as shard:
            for name in shard.keys():  # noqa: SIM118 (safe_open is not a dict)
                found[name] = (tuple(shard.get_slice(name).get_shape()), file)
    _raise_on_mismatch(directory, expected, {name: shape for name, (shape, _) in found.items()})
    files = dict.fromkeys(file for _, file in found.values())
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as shard:
            for name in shard.keys():  # noqa: SIM118
                set_module_tensor_to_device(
                    model, name, device, value=shard.get_tensor(name), dtype=dtype
                )
    return model.eval()


def _weight_files(directory: Path) -> list[Path]:
    """The shard files the index names, else the single model.safetensors."""
    index_path = directory / WEIGHTS_INDEX_FILE
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        absent = [str(file) for file in files if not file.is_file()]
        if absent:
            raise FileNotFoundError(f"{index_path} names shard files that are missing: {absent}")
        return files
    if (directory / SINGLE_WEIGHTS_FILE).is_file():
        return [directory / SINGLE_WEIGHTS_FILE]
    raise FileNotFoundError(
        f"no LLaDA weights in {directory}: expected {WEIGHTS_INDEX_FILE} with its shards "
        f"or a single {SINGLE_WEIGHTS_FILE}"
    )


def _raise_on_mismatch(
    directory: Path, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> None:
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = [
        f"{name} {list(found[name])} (model: {list(shape)})"
        for name, shape in expected.items()
        if name in found and found[name] != shape
    ]
    problems = [
        f"{len(items)} {kind}: {', '.join(items[:ERROR_LIST_LIMIT])}"
        + (" ..." if len(items) > ERROR_LIST_LIMIT else "")
        for kind, items in (
            ("missing key(s)", missing),
            ("unexpected key(s)", unexpected),
            ("shape mismatch(es)", wrong),
        )
        if items
    ]
    if problems:
        raise ValueError(
            f"LLaDA weights in {directory} do not match its config.json: {'; '.join(problems)}. "
            "Use the weights that belong to this config.json."
        )


def save_llada(model: LLaDAModelLM, path: str | Path, *, max_shard_bytes: int) -> Path:
    """Write config.json and the weights in the GSAI-ML/LLaDA-8B-Instruct layout.

    Shards `model-0000k-of-0000n.safetensors` of at most `max_shard_bytes` each (a tensor larger
    than that gets its own shard) plus `model.safetensors.index.json`; a model that fits in one
    shard is written as a single `model.safetensors` (the huggingface_hub convention). Every file
    is written atomically; weight files of an earlier save that are not rewritten are removed.
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    split = split_torch_state_dict_into_shards(
        state, filename_pattern=SHARD_FILE_PATTERN, max_shard_size=max_shard_bytes
    )
    _write_json_atomically(directory / CONFIG_FILE, model.config.to_json_dict())
    written = set(split.filename_to_tensors)
    for filename, names in split.filename_to_tensors.items():
        shard = {name: state[name] for name in names}
        write_atomically(directory / filename, lambda tmp, shard=shard: _save_shard(shard, tmp))
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        _write_json_atomically(directory / WEIGHTS_INDEX_FILE, index)
        written.add(WEIGHTS_INDEX_FILE)
    stale = [*directory.glob("model*.safetensors"), directory / WEIGHTS_INDEX_FILE]
    for file in stale:
        if file.name not in written:
            file.unlink(missing_ok=True)
    return directory


def _save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, path, metadata={"format": "pt"})


def _write_json_atomically(target: Path, content: dict[str, Any]) -> None:
    write_text_atomically(target, json.dumps(content, indent=2, sort_keys=True) + "\n")
