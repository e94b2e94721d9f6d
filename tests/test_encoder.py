"""Tests for the Whisper encoder: every checkpoint layout, faithful and true-length encoding."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import WhisperConfig, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import whisper_llada.models.encoder as encoder_module
from whisper_llada.models.encoder import encode, encoder_output_lengths, load_whisper_encoder
from whisper_llada.models.tiny_models import (
    TINY_N_MELS,
    TINY_WHISPER_WIDTH,
    WHISPER_AUDIO_CONTEXT,
    write_tiny_openai_whisper,
    write_tiny_whisper,
)

FULL_MEL_FRAMES = 2 * WHISPER_AUDIO_CONTEXT  # 3000 frames = 30 s
ATOL = 1e-5
# whisper-large-v3 encoder: conv1 492_800 + conv2 4_916_480 + positions 1_920_000
# + 32 layers x 19_676_160 + final LayerNorm 2_560.
LARGE_V3_ENCODER_PARAMETERS = 636_968_960
DOCUMENTED_LARGE_V3_ENCODER_PARAMETERS = 635e6
ENCODER_PARAMETER_PREFIXES = ("conv1.", "conv2.", "embed_positions.", "layers.", "layer_norm.")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_whisper(tmp_path_factory.mktemp("whisper"), seed=0)


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_openai_whisper(tmp_path_factory.mktemp("openai") / "tiny.pt", seed=1)


def random_mel(batch: int, frames: int = FULL_MEL_FRAMES, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, TINY_N_MELS, frames, generator=torch.Generator().manual_seed(seed))


def copy_with_edited_weights(tiny_dir: Path, out_dir: Path, edit) -> Path:
    """Copy the tiny directory, applying `edit(state_dict)` to its model.safetensors."""
    shutil.copytree(tiny_dir, out_dir)
    state = load_file(out_dir / "model.safetensors")
    edit(state)
    save_file(state, out_dir / "model.safetensors", metadata={"format": "pt"})
    return out_dir


def test_transformers_directory_encode_equals_transformers_forward(tiny_dir: Path) -> None:
    reference_model = WhisperForConditionalGeneration.from_pretrained(tiny_dir)
    encoder = load_whisper_encoder(tiny_dir)
    mel = random_mel(2)

    frames, frame_mask = encode(encoder, mel)
    with torch.no_grad():
        expected = reference_model.model.encoder(mel).last_hidden_state

    assert frames.shape == (2, WHISPER_AUDIO_CONTEXT, TINY_WHISPER_WIDTH)
    torch.testing.assert_close(frames, expected, atol=ATOL, rtol=0)
    assert frame_mask.dtype == torch.bool and frame_mask.shape == (2, WHISPER_AUDIO_CONTEXT)
    assert bool(frame_mask.all())
    # Only the encoder: no decoder attribute, the encoder's exact parameters, eval mode, and
    # requires_grad exactly as WhisperEncoder's constructor sets it (the model owns freezing;
    # the constructor freezes only the positional table).
    assert isinstance(encoder, WhisperEncoder) and not hasattr(encoder, "decoder")
    names = [name for name, _ in encoder.named_parameters()]
    assert all(name.startswith(ENCODER_PARAMETER_PREFIXES) for name in names)
    assert names == [name for name, _ in reference_model.model.encoder.named_parameters()]
    assert not encoder.training
    frozen = [name for name, p in encoder.named_parameters() if not p.requires_grad]
    assert frozen == ["embed_positions.weight"]


def test_loading_reads_no_decoder_tensor(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_keys: list[str] = []

    class RecordingSafeOpen:
        def __init__(self, *args, **kwargs) -> None:
            self._opener = safe_open(*args, **kwargs)

        def __enter__(self) -> RecordingSafeOpen:
            self._handle = self._opener.__enter__()
            return self

        def __exit__(self, *exc_info) -> None:
            self._opener.__exit__(*exc_info)

        def keys(self) -> list[str]:
            return self._handle.keys()

        def get_tensor(self, key: str) -> torch.Tensor:
            read_keys.append(key)
            return self._handle.get_tensor(key)

    monkeypatch.setattr(encoder_module, "safe_open", RecordingSafeOpen)
    encoder = load_whisper_encoder(tiny_dir)

    assert sorted(read_keys) == sorted(f"model.encoder.{n}" for n, _ in encoder.named_parameters())


def test_whisper_model_sharded_and_bin_layouts_load_identical_weights(
    tiny_dir: Path, tmp_path: Path
) -> None:
    full_model = WhisperForConditionalGeneration.from_pretrained(tiny_dir)
    full_model.model.save_pretrained(tmp_path / "whisper_model")
    full_model.save_pretrained(tmp_path / "sharded", max_shard_size="300KB")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(tiny_dir / "config.json", bin_dir)
    torch.save(load_file(tiny_dir / "model.safetensors"), bin_dir / "pytorch_model.bin")

    with safe_open(tmp_path / "whisper_model" / "model.safetensors", framework="pt") as f:
        whisper_model_keys = list(f.keys())
    assert "encoder.conv1.weight" in whisper_model_keys
    weight_map = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    encoder_shards = {s for k, s in weight_map["weight_map"].items() if ".encoder." in k}
    assert len(encoder_shards) >= 2 and not (tmp_path / "sharded" / "model.safetensors").exists()

    reference = load_whisper_encoder(tiny_dir).state_dict()
    for directory in ("whisper_model", "sharded", "bin"):
        loaded = load_whisper_encoder(tmp_path / directory).state_dict()
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), directory


def test_openai_checkpoint_encode_equals_openai_whisper(tiny_pt: Path) -> None:
    from whisper.model import ModelDimensions, Whisper

    checkpoint = torch.load(tiny_pt, weights_only=True)
    reference = Whisper(ModelDimensions(**checkpoint["dims"]))
    reference.load_state_dict(checkpoint["model_state_dict"])
    reference.eval()
    encoder = load_whisper_encoder(tiny_pt)
    mel = random_mel(2, seed=1)

    frames, frame_mask = encode(encoder, mel)
    with torch.no_grad():
        expected = reference.encoder(mel)

    torch.testing.assert_close(frames, expected, atol=ATOL, rtol=0)
    assert bool(frame_mask.all())


@pytest.mark.parametrize("lengths", [[3000, 1200, 400], [2999, 1201, 1]])
def test_padded_rows_equal_rows_encoded_alone(tiny_dir: Path, lengths: list[int]) -> None:
    encoder = load_whisper_encoder(tiny_dir)
    mel = random_mel(len(lengths), seed=2)
    mel_lengths = torch.tensor(lengths)

    frames, frame_mask = encode(encoder, mel, mel_lengths)

    frame_lengths = encoder_output_lengths(mel_lengths)
    positions = torch.arange(frames.shape[1])
    assert torch.equal(frame_mask, positions[None, :] < frame_lengths[:, None])
    for row, (length, n_valid) in enumerate(zip(lengths, frame_lengths.tolist(), strict=True)):
        alone, alone_mask = encode(encoder, mel[row : row + 1, :, :length])
        assert alone.shape[1] == n_valid and bool(alone_mask.all())
        torch.testing.assert_close(frames[row, :n_valid], alone[0], atol=ATOL, rtol=0)
        assert not frames[row, n_valid:].any()  # padded frames are zero


def test_encoder_output_lengths_is_ceil_half() -> None:
    lengths = torch.tensor([3000, 2999, 1200, 401, 2, 1])
    assert encoder_output_lengths(lengths).tolist() == [1500, 1500, 600, 201, 1, 1]


def test_frozen_encoder_builds_no_graph_and_trainable_one_gets_gradients(tiny_dir: Path) -> None:
    encoder = load_whisper_encoder(tiny_dir).requires_grad_(False)
    # Even an input that requires grad builds no graph through a frozen encoder.
    mel = random_mel(1, frames=200).requires_grad_(True)
    with torch.enable_grad():
        frozen_frames, _ = encode(encoder, mel)
        encoder.layer_norm.weight.requires_grad_(True)
        trainable_frames, _ = encode(encoder, mel)
        trainable_frames.sum().backward()

    assert frozen_frames.requires_grad is False and frozen_frames.grad_fn is None
    assert trainable_frames.requires_grad is True
    assert encoder.layer_norm.weight.grad is not None
    assert bool(encoder.layer_norm.weight.grad.abs().sum() > 0)
    assert encoder.conv1.weight.grad is None


def test_bfloat16_load_casts_parameters_and_mel(tiny_dir: Path) -> None:
    encoder32 = load_whisper_encoder(tiny_dir)
    encoder16 = load_whisper_encoder(tiny_dir, dtype=torch.bfloat16)
    mel = random_mel(1, frames=400)

    frames16, _ = encode(encoder16, mel)  # float32 mel is cast to bfloat16
    frames32, _ = encode(encoder32, mel)

    assert {p.dtype for p in encoder16.parameters()} == {torch.bfloat16}
    assert frames16.dtype == torch.bfloat16
    torch.testing.assert_close(frames16.float(), frames32, atol=0.1, rtol=0)


def test_missing_encoder_tensor_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    def drop_fc2(state: dict[str, torch.Tensor]) -> None:
        del state["model.encoder.layers.1.fc2.weight"]

    broken = copy_with_edited_weights(tiny_dir, tmp_path / "broken", drop_fc2)
    with pytest.raises(
        ValueError, match=r"broken do not match .*: missing 1: layers\.1\.fc2\.weight\."
    ):
        load_whisper_encoder(broken)


def test_shape_mismatch_and_unexpected_tensor_are_named(tiny_dir: Path, tmp_path: Path) -> None:
    def corrupt(state: dict[str, torch.Tensor]) -> None:
        state["model.encoder.conv1.bias"] = torch.zeros(TINY_WHISPER_WIDTH + 1)
        state["model.encoder.extra.weight"] = torch.zeros(1)

    broken = copy_with_edited_weights(tiny_dir, tmp_path / "broken", corrupt)
    message = (
        "do not match its config: unexpected 1: extra.weight; shape mismatch 1: conv1.bias "
        f"(checkpoint ({TINY_WHISPER_WIDTH + 1},), config ({TINY_WHISPER_WIDTH},)). Check"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_whisper_encoder(broken)


def test_openai_checkpoint_names_are_renamed_strictly(tiny_pt: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(tiny_pt, weights_only=True)
    del checkpoint["model_state_dict"]["encoder.blocks.0.attn.key.weight"]
    torch.save(checkpoint, tmp_path / "broken.pt")

    with pytest.raises(ValueError, match=r"missing 1: layers\.0\.self_attn\.k_proj\.weight\."):
        load_whisper_encoder(tmp_path / "broken.pt")


def test_unusable_paths_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Whisper checkpoint not found: .*nowhere\. Pass"):
        load_whisper_encoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"empty has no config\.json; expected a transformers"
    ):
        load_whisper_encoder(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(WhisperConfig().to_json_string())
    with pytest.raises(FileNotFoundError, match=r"has config\.json but no weights: expected"):
        load_whisper_encoder(tmp_path / "empty")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt is not a readable checkpoint"):
        load_whisper_encoder(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(
        ValueError, match=r"other\.pt is not an openai-whisper checkpoint: expected"
    ):
        load_whisper_encoder(tmp_path / "other.pt")


def test_bad_mel_inputs_are_refused(tiny_dir: Path) -> None:
    encoder = load_whisper_encoder(tiny_dir)
    with pytest.raises(
        ValueError, match="mel has 3002 frames but the Whisper encoder takes at most 3000"
    ):
        encode(encoder, random_mel(1, frames=FULL_MEL_FRAMES + 2))
    with pytest.raises(
        ValueError, match=re.escape("mel must be (batch, 128 mel bins, frames), got (1, 80, 10)")
    ):
        encode(encoder, torch.zeros(1, 80, 10))
    with pytest.raises(ValueError, match=re.escape("values in [1, 10], got [10, 11]")):
        encode(encoder, torch.zeros(2, TINY_N_MELS, 10), torch.tensor([10, 11]))


def test_padding_needs_an_additive_mask_attention(tiny_dir: Path) -> None:
    encoder = load_whisper_encoder(tiny_dir)
    encoder.config._attn_implementation = "flex_attention"
    mel = torch.zeros(2, TINY_N_MELS, 10)

    with pytest.raises(ValueError, match="needs attention implementation eager or sdpa, but this"):
        encode(encoder, mel, torch.tensor([10, 6]))


def test_eager_attention_gives_the_same_padded_result(tiny_dir: Path) -> None:
    encoder = load_whisper_encoder(tiny_dir)
    mel, mel_lengths = random_mel(2, frames=600, seed=3), torch.tensor([600, 250])
    sdpa_frames, _ = encode(encoder, mel, mel_lengths)
    encoder.config._attn_implementation = "eager"

    eager_frames, _ = encode(encoder, mel, mel_lengths)

    torch.testing.assert_close(eager_frames, sdpa_frames, atol=ATOL, rtol=0)


def test_large_v3_encoder_on_meta_has_documented_size() -> None:
    config = WhisperConfig(
        num_mel_bins=128,
        d_model=1280,
        encoder_layers=32,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
        max_source_positions=1500,
    )
    with torch.device("meta"):
        encoder = WhisperEncoder(config)

    n_parameters = sum(p.numel() for p in encoder.parameters())
    assert n_parameters == LARGE_V3_ENCODER_PARAMETERS
    assert abs(n_parameters / DOCUMENTED_LARGE_V3_ENCODER_PARAMETERS - 1) < 0.01
    assert encoder.embed_positions.weight.shape == (1500, 1280)
    assert encoder_output_lengths(torch.tensor([3000])).item() == config.max_source_positions


@pytest.mark.real_weights
def test_real_whisper_large_v3_encoder() -> None:
    """Set WHISPER_LARGE_V3 to an openai/whisper-large-v3 directory or large-v3.pt to run."""
    path = os.environ.get("WHISPER_LARGE_V3")
    if not path:
        pytest.skip("WHISPER_LARGE_V3 is not set")
    encoder = load_whisper_encoder(path).requires_grad_(False)
    mel = random_mel(1)

    frames, _ = encode(encoder, mel)
    with torch.no_grad():
        expected = encoder(mel).last_hidden_state

    assert sum(p.numel() for p in encoder.parameters()) == LARGE_V3_ENCODER_PARAMETERS
    torch.testing.assert_close(frames, expected, atol=ATOL, rtol=0)
