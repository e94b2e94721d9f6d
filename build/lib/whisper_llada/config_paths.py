"""The one rule for the paths in a config: a relative path means relative to where it was written.

- In a YAML file: relative to that file's folder (as its `base:` is, and as a manifest's audio
  paths are relative to the manifest), so a config works from any working directory.
- In a command-line override (`section.key=value`): relative to the working directory, as any
  path typed in a shell.
- A default of the schema (`exp/train`, `exp/decode`) is relative to the working directory.

`load_config` makes every path it resolves absolute, so the loaded config (and what is saved from
it: a training run's config.yaml, a checkpoint's stored config) names the same files from any
directory. An export writes its config.yaml with paths relative to the export's own folder
(`relative_to`), so the exported model can be moved or cloned with the repository.

The schema marks its path fields with `PathStr` (a string, or an item of a tuple of strings);
"" means unset and stays "".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

PATH_MARK = "config path"
PathStr = Annotated[str, PATH_MARK]


def path_keys(schema: type) -> list[tuple[str, ...]]:
    """The dotted key paths, e.g. ("model", "whisper_path"), of every PathStr field of `schema`."""
    keys = []
    for name, hint in get_type_hints(schema, include_extras=True).items():
        if dataclasses.is_dataclass(hint):
            keys += [(name, *key) for key in path_keys(hint)]
        elif _is_path(hint) or any(_is_path(arg) for arg in get_args(hint)):
            keys.append((name,))
    return keys


def _is_path(hint: Any) -> bool:
    return get_origin(hint) is Annotated and PATH_MARK in hint.__metadata__


def absolute_under(folder: Path) -> Callable[[str], str]:
    """A function that makes a relative path absolute under `folder` ("" and absolute paths unchanged)."""

    def resolve(path: str) -> str:
        if not path or Path(path).is_absolute():
            return path
        return os.path.abspath(folder / Path(path).expanduser())

    return resolve


def relative_to(folder: Path) -> Callable[[str], str]:
    """A function that writes an absolute path relative to `folder` ("" and relative paths unchanged)."""

    def relative(path: str) -> str:
        if not path or not Path(path).is_absolute():
            return path
        return os.path.relpath(path, os.path.abspath(folder))

    return relative


def map_paths(
    data: dict[str, Any], keys: list[tuple[str, ...]], change: Callable[[str], str]
) -> None:
    """Apply `change` in place to the value (or each list item) at every key of `keys` present in `data`."""
    for node, leaf in _present(data, keys):
        value = node[leaf]
        if isinstance(value, str):
            node[leaf] = change(value)
        elif isinstance(value, list | tuple):
            node[leaf] = [change(item) if isinstance(item, str) else item for item in value]


def _present(
    data: dict[str, Any], keys: list[tuple[str, ...]]
) -> Iterator[tuple[dict[str, Any], str]]:
    for *parents, leaf in keys:
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            yield node, leaf
