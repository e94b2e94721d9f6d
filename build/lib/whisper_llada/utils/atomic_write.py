"""Atomic file writes: a temporary file beside the target, then a rename, so readers never see half a file.

A crash mid-write leaves the previous version of the target (or none) and no temporary file.
The result is readable like any downloaded file (0644), not private as `mkstemp` makes it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644  # rw-r--r--


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(FILE_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` and move the result over `target`."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def write_text_atomically(target: str | Path, text: str) -> Path:
    return write_atomically(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
