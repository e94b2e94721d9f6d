"""CTranslate2 model.bin: the variables and aliases of a CTranslate2 model file, read with numpy and struct only.

The `model.bin` format, as ctranslate2's `ModelSpec._serialize` writes it (little-endian, no
padding; strings are a uint16 byte count including a trailing NUL, then UTF-8 and the NUL):

    uint32 binary version (6), string spec name, uint32 spec revision,
    uint32 variable count, per variable: string name, uint8 rank, rank x uint32 dims,
        uint8 dtype id, uint32 byte count, raw row-major data,
    uint32 alias count, per alias: string alias, string target variable name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BINARY_VERSION = 6
# Type ids 0..5, in the order of CTranslate2's DataType enum (include/ctranslate2/types.h).
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
NUMPY_DTYPES = {"float32": "<f4", "int8": "<i1", "int16": "<i2", "int32": "<i4", "float16": "<f2"}
BFLOAT16_BYTES = 2
BFLOAT16_SHIFT = 16  # a bfloat16 is the upper half of the float32 with the same bits


@dataclass(frozen=True)
class Variable:
    """One stored CTranslate2 variable: row-major `data` of `shape` in `dtype` (a DTYPES name)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes

    def to_numpy(self) -> np.ndarray:
        """The variable as an array of `shape`; bfloat16 is widened (exactly) to float32."""
        if self.dtype == "bfloat16":
            halves = np.frombuffer(self.data, dtype="<u2").astype("<u4")
            return (halves << BFLOAT16_SHIFT).view("<f4").reshape(self.shape)
        return np.frombuffer(self.data, dtype=NUMPY_DTYPES[self.dtype]).reshape(self.shape)


@dataclass(frozen=True)
class ModelBin:
    """The content of a CTranslate2 `model.bin`: header, variables by name, aliases to them."""

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, Variable]
    aliases: dict[str, str]

    def array(self, name: str) -> np.ndarray:
        """The array of variable `name`, following an alias to the variable it names."""
        return self.variables[self.aliases.get(name, name)].to_numpy()


class _Cursor:
    """Little-endian reads from a `model.bin`'s bytes that name the file when it ends early."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, n_bytes: int, what: str) -> bytes:
        end = self.offset + n_bytes
        if end > len(self.data):
            raise ValueError(
                f"{self.path} ends at byte {len(self.data)} inside {what} (needs {end}): the "
                "file is truncated or not a CTranslate2 model.bin; re-download or re-convert it."
            )
        chunk, self.offset = self.data[self.offset : end], end
        return chunk

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n_bytes = self.uint("H", f"the length of {what}")
        return self.take(n_bytes, what)[:-1].decode("utf-8")


def read_model_bin(path: str | Path) -> ModelBin:
    """Parse a CTranslate2 `model.bin` (binary version 6; format in the module docstring).

    Raises:
        ValueError: another binary version, an unknown dtype id, a byte count that does not match
            the shape, a truncated file or trailing bytes (the message says which and where).
    """
    path = Path(path)
    cursor = _Cursor(path.read_bytes(), path)
    version = cursor.uint("I", "the binary version")
    if version != BINARY_VERSION:
        raise ValueError(
            f"{path} is CTranslate2 model.bin version {version}; this reader reads version "
            f"{BINARY_VERSION} (what ctranslate2 4.x converters write). Re-convert the model "
            "with a current ctranslate2 converter."
        )
    spec_name = cursor.string("the spec name")
    spec_revision = cursor.uint("I", "the spec revision")
    variables: dict[str, Variable] = {}
    for index in range(cursor.uint("I", "the variable count")):
        name = cursor.string(f"the name of variable {index}")
        shape = tuple(cursor.uint("I", f"{name}'s shape") for _ in range(cursor.uint("B", name)))
        type_id = cursor.uint("B", f"{name}'s dtype")
        if type_id >= len(DTYPES):
            raise ValueError(
                f"{path}: variable {name} has dtype id {type_id}; known ids are 0..{len(DTYPES) - 1} "
                f"({', '.join(DTYPES)}). The file is corrupt or from a newer ctranslate2."
            )
        dtype = DTYPES[type_id]
        n_bytes = cursor.uint("I", f"{name}'s byte count")
        item_bytes = (
            BFLOAT16_BYTES if dtype == "bfloat16" else np.dtype(NUMPY_DTYPES[dtype]).itemsize
        )
        expected = int(np.prod(shape, dtype=np.int64)) * item_bytes
        if n_bytes != expected:
            raise ValueError(
                f"{path}: variable {name} {shape} {dtype} declares {n_bytes} bytes, its shape "
                f"needs {expected}; the file is corrupt, re-download or re-convert it."
            )
        variables[name] = Variable(name, shape, dtype, cursor.take(n_bytes, f"{name}'s data"))
    aliases = {}
    for index in range(cursor.uint("I", "the alias count")):
        alias = cursor.string(f"alias {index}")
        aliases[alias] = cursor.string(f"the target of alias {alias}")
    if cursor.offset != len(cursor.data):
        raise ValueError(
            f"{path} has {len(cursor.data) - cursor.offset} bytes after its last alias; "
            "the file is corrupt or not a CTranslate2 model.bin."
        )
    dangling = [f"{a} -> {target}" for a, target in aliases.items() if target not in variables]
    if dangling:
        raise ValueError(
            f"{path}: aliases name variables the file does not hold ({', '.join(dangling)}); "
            "the file is corrupt, re-download or re-convert it."
        )
    return ModelBin(version, spec_name, spec_revision, variables, aliases)
