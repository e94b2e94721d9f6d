"""The encoder-output cache: a hit equals a miss, frames equal the batched encoding, keys follow the encoder, training runs on it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_train import arguments, corpus, log_entries, one_thread  # noqa: F401 (fixtures)
from whisper_llada.config import load_config
from whisper_llada.data.audio import batch_features
from whisper_llada.data.encoder_cache import EncoderOutputCache
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model
from whisper_llada.models.encoder import encode
from whisper_llada.models.prompt import text_ids
from whisper_llada.training import loop
from whisper_llada.training.objective import training_loss

MELS = 128  # configs/tiny.yaml's


@pytest.fixture(scope="module")
def built(tiny_config):
    cfg = tiny_config("audio.pad_to_30s=false")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    return cfg, model.eval(), tokenizer


def features(speech, rows=None):
    waves = [speech[i][0] for i in (rows if rows is not None else range(len(speech)))]
    return batch_features(waves, MELS, pad_to_30s=False)


def cache_files(folder):
    return sorted(folder.rglob("*.safetensors"))


def test_a_hit_equals_a_miss_and_the_batched_encoding(built, speech, tmp_path):
    _, model, _ = built
    mel, lengths = features(speech)
    cache = EncoderOutputCache(tmp_path, model.encoder)
    missed = cache.frames(mel, lengths)
    assert (cache.misses, cache.hits) == (len(speech), 0)
    assert len(cache_files(tmp_path)) == len(speech)
    hit = cache.frames(mel, lengths)
    assert (cache.misses, cache.hits) == (len(speech), len(speech))
    assert torch.equal(hit, missed)
    batched, frame_mask = encode(model.encoder, mel, lengths)
    assert hit.shape == batched.shape
    torch.testing.assert_close(hit, batched, atol=1e-5, rtol=0)
    assert not hit[~frame_mask].any()  # zero past each row's frames, as encode pads
    # A row cached inside one batch is the same row in another batch (and alone).
    alone_mel, alone_lengths = features(speech, [1])
    assert torch.equal(
        cache.frames(alone_mel, alone_lengths)[0, : int(frame_mask[1].sum())],
        hit[1, : int(frame_mask[1].sum())],
    )


def test_another_encoder_misses(built, speech, tiny_config, tmp_path):
    _, model, _ = built
    mel, lengths = features(speech, [0])
    EncoderOutputCache(tmp_path, model.encoder).frames(mel, lengths)
    torch.manual_seed(0)
    other, _ = build_model(tiny_config("audio.pad_to_30s=false").model)
    with torch.no_grad():
        other.encoder.layer_norm.bias.add_(0.5)  # another encoder, same shapes
    cache = EncoderOutputCache(tmp_path, other.encoder)
    frames = cache.frames(mel, lengths)
    assert cache.misses == 1 and len(cache_files(tmp_path)) == 2
    torch.testing.assert_close(frames, encode(other.encoder, mel, lengths)[0], atol=1e-5, rtol=0)


def test_a_corrupt_or_foreign_file_is_recomputed_with_a_warning(built, speech, tmp_path):
    _, model, _ = built
    mel, lengths = features(speech, [0])
    cache = EncoderOutputCache(tmp_path, model.encoder)
    good = cache.frames(mel, lengths)
    (path,) = cache_files(tmp_path)
    stored = load_file(path)["frames"]
    save_file({"frames": stored + 1.0}, str(path), {"checksum": "0" * 32})
    with pytest.warns(UserWarning, match="fails its checksum: recomputing it"):
        assert torch.equal(cache.frames(mel, lengths), good)
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="cannot be read"):
        assert torch.equal(cache.frames(mel, lengths), good)
    save_file({"frames": stored[:3]}, str(path))
    with pytest.warns(UserWarning, match=r"holds \(3, \d+\) torch.float32 frames"):
        assert torch.equal(cache.frames(mel, lengths), good)
    assert torch.equal(load_file(path)["frames"], stored)  # rewritten


def test_a_trained_encoder_is_refused(tiny_config, tmp_path):
    torch.manual_seed(0)
    model, _ = build_model(tiny_config("model.train_encoder=true").model)
    with pytest.raises(ValueError, match=r"data\.encoder_cache needs a frozen encoder"):
        EncoderOutputCache(tmp_path, model.encoder)


def test_the_loss_on_cached_frames_equals_the_loss_on_log_mels(built, speech, tmp_path):
    cfg, model, tokenizer = built
    mel, lengths = features(speech)
    ids = [text_ids(tokenizer, text) for _, text in speech]
    frames = EncoderOutputCache(tmp_path, model.encoder).frames(mel, lengths)
    losses = []
    for cached in (None, frames):
        generator = torch.Generator().manual_seed(3)
        batch = SpeechBatch(mel, lengths, ids, encoder_frames=cached)
        with torch.no_grad():
            losses.append(training_loss(model, batch, cfg.model, cfg.loss, generator))
    torch.testing.assert_close(losses[1].total, losses[0].total, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(losses[1].ctc, losses[0].ctc, atol=1e-4, rtol=1e-5)


def test_train_py_trains_on_the_cache_and_refuses_a_trained_encoder(tiny_models, corpus, tmp_path):  # noqa: F811
    folder = tmp_path / "encoder_cache"
    out = tmp_path / "run"
    args = arguments(
        tiny_models, corpus, out, "train.max_steps=4", "train.valid_every=4",
        "train.save_every=4", f"data.encoder_cache={folder}",
    )  # fmt: skip
    progress = loop.main(args)
    assert (progress.step, progress.bad_steps) == (4, 0)
    assert cache_files(folder)  # training and validation rows, one file each
    assert len(log_entries(out, "valid_loss")) == 2
    assert load_config(out / "config.yaml").data.encoder_cache == str(folder)
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == 4
    refused = arguments(tiny_models, corpus, tmp_path / "r", "model.train_encoder=true",
                        f"data.encoder_cache={folder}")  # fmt: skip
    with pytest.raises(SystemExit, match=r"data\.encoder_cache stores a frozen encoder's outputs"):
        loop.main(refused)
