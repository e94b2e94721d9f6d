"""The demo's tests: the library tests' fixtures (tests/conftest.py), and no Whisper peer row
unless a test asks for one."""

from __future__ import annotations

import pytest

from recipes.demo import whisper_peer
from tests.conftest import (  # noqa: F401 (fixtures)
    speech,
    tiny_ar_config,
    tiny_config,
    tiny_llama,
    tiny_models,
)


@pytest.fixture(autouse=True, scope="session")
def no_default_whisper_peer(tmp_path_factory):
    """The demo's peer row only where a test asks for it (setup.sh converts tiny.en in the
    repository, which the demo would otherwise pick up by default)."""
    with pytest.MonkeyPatch.context() as patch:
        missing = tmp_path_factory.mktemp("no_whisper") / "tiny.en.pt"
        patch.setattr(whisper_peer, "DEFAULT_CHECKPOINT", missing)
        yield
