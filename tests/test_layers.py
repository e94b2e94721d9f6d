"""The library's import graph has layers: a subpackage imports only its own layer and those below,
nothing imports a recipe or a script, and no module is loaded from a file path."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "whisper_llada"
# Lowest first. The top-level modules (config, ...) sit above utils; the commands (smoke, the
# API, the CLI) above every subpackage.
LAYERS = ("utils", "config", "models", "data", "decoding", "evaluation", "training", "commands")
CONFIG_MODULES = {"config", "config_paths", "config_strict", "model_parts_config"}
# Ways to run code from a file path instead of importing a module of the package.
FILE_LOADERS = {"spec_from_file_location", "SourceFileLoader", "run_path", "exec"}


def layer(module: str) -> str:
    """`whisper_llada.<sub>.<leaf>` -> <sub>; a top-level module -> config or commands."""
    parts = module.split(".")
    if len(parts) > 2 or (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "config" if parts[1] in CONFIG_MODULES else "commands"


def library_modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_text(), filename=str(path))
    return modules


def imported(tree: ast.Module) -> set[str]:
    """Every module an import statement names, at any depth (function-level imports too);
    `from whisper_llada.data import audio` names whisper_llada.data.audio."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module.count(".") == 1 and (PACKAGE / node.module.split(".")[1]).is_dir():
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_library_module_has_a_layer():
    for name in library_modules():
        if name != "whisper_llada":
            assert layer(name) in LAYERS, name


def test_no_library_module_imports_a_recipe_or_a_script():
    scripts = {"recipes", "train", "inference", "benchmarks", "data", "tests"}
    offending = {
        name: sorted(found)
        for name, tree in library_modules().items()
        if (found := {m for m in imported(tree) if m.split(".")[0] in scripts})
    }
    assert offending == {}


def test_a_layer_imports_only_its_own_and_lower_layers():
    upward = []
    for name, tree in library_modules().items():
        if name == "whisper_llada":
            continue
        rank = LAYERS.index(layer(name))
        for target in imported(tree):
            if target.startswith("whisper_llada.") and LAYERS.index(layer(target)) > rank:
                upward.append(f"{name} ({layer(name)}) imports {target} ({layer(target)})")
    assert upward == []


def test_no_module_is_loaded_from_a_file_path():
    loaders = []
    for name, tree in library_modules().items():
        for node in ast.walk(tree):
            called = node.func if isinstance(node, ast.Call) else None
            called_name = getattr(called, "attr", None) or getattr(called, "id", None)
            if called_name in FILE_LOADERS:
                loaders.append(f"{name}:{node.lineno} {called_name}")
    assert loaders == []


@pytest.mark.parametrize("script", ["train.py", "inference.py"])
def test_the_entry_points_import_only_the_library(script):
    found = imported(ast.parse((REPO / script).read_text()))
    assert {m.split(".")[0] for m in found} & {"recipes", "benchmarks", "train"} == set()
