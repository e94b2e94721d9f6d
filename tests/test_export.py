"""Export: fine-tuned encoder and LLM weights baked into the real directory formats, reloaded identically."""

from __future__ import annotations

import pytest
import torch
import yaml

from whisper_llada.config import load_config
from whisper_llada.data.audio import batch_features
from whisper_llada.evaluation.transcribe import load_decoder
from whisper_llada.models.build import build_model
from whisper_llada.models.checkpoint import load_checkpoint, read_checkpoint
from whisper_llada.models.encoder import encoder_weights_sha256
from whisper_llada.models.export import export_model
from whisper_llada.models.prompt import text_ids
from whisper_llada.models.tiny_models import write_tiny_whisper


@pytest.mark.parametrize("llm", ["llada", "llama"])
def test_an_exported_model_reloads_with_every_weight_identical(
    llm, tiny_config, tiny_ar_config, speech, tmp_path
):
    make = tiny_config if llm == "llada" else tiny_ar_config
    cfg = make("model.train_encoder=true", "model.train_llm=true", "model.lora.r=0")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    trained = model.trainable_parameters()
    assert any(n.startswith("encoder.") for n in trained) and any(
        n.startswith(f"{llm}.") for n in trained
    )
    with torch.no_grad():  # stands in for training: every trainable weight moves
        for parameter in trained.values():
            parameter.add_(0.01 * torch.randn_like(parameter))
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    config_path = export_model(model, cfg, tmp_path / "exported", metadata={"steps": 7})
    written = yaml.safe_load(config_path.read_text())
    assert (written["model"]["whisper_path"], written["model"][f"{llm}_path"]) == ("whisper", llm)
    moved = tmp_path / "elsewhere" / "moved"  # its paths are relative to it: the folder moves
    moved.parent.mkdir()
    config_path.parent.rename(moved)
    exported = load_config(moved / "config.yaml")
    assert (exported.model.train_encoder, exported.model.train_llm) == (False, False)
    assert getattr(exported.model, f"{llm}_path") == str(moved / llm)
    tensors, _, metadata = read_checkpoint(exported.inference.checkpoint)
    assert metadata == {"steps": 7}
    heads = {"projector", "ctc_head"} if llm == "llada" else {"projector"}
    assert {name.split(".")[0] for name in tensors} == heads

    fresh, fresh_tokenizer = build_model(exported.model)
    load_checkpoint(fresh, exported.inference.checkpoint)  # strict: exactly projector + CTC head
    state = fresh.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[name], expected[name]) for name in expected)
    assert fresh_tokenizer.get_vocab() == tokenizer.get_vocab()

    mel, lengths = batch_features([speech[0][0]], cfg.audio.n_mels, pad_to_30s=cfg.audio.pad_to_30s)
    answer = torch.tensor([text_ids(tokenizer, speech[0][1])])
    logits = "answer_logits" if llm == "llada" else "next_token_logits"
    with torch.no_grad():
        ours = getattr(model, logits)(model.encode_audio(mel, lengths), answer)
        theirs = getattr(fresh, logits)(fresh.encode_audio(mel, lengths), answer)
    assert torch.equal(ours, theirs)


def test_a_frozen_encoder_is_referenced_by_path_and_checked_by_hash_on_load(
    tiny_config, tiny_models, tmp_path
):
    cfg = tiny_config("model.train_llm=true", "model.lora.r=0")
    torch.manual_seed(0)
    model, _ = build_model(cfg.model)
    (tmp_path / "exported" / "whisper").mkdir(parents=True)  # an earlier export's
    config_path = export_model(model, cfg, tmp_path / "exported", metadata={"steps": 7})
    assert not (tmp_path / "exported" / "whisper").exists()  # replaced as a whole, not copied
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no staging left
    exported = load_config(config_path)
    assert exported.model.whisper_path == str(tiny_models.whisper)
    _, _, metadata = read_checkpoint(exported.inference.checkpoint)
    assert metadata == {"steps": 7, "encoder_sha256": encoder_weights_sha256(model.encoder)}
    decoder, _ = load_decoder(exported, torch.device("cpu"))
    loaded = decoder.encoder.state_dict()
    assert all(torch.equal(loaded[name], t) for name, t in model.encoder.state_dict().items())

    other = write_tiny_whisper(tmp_path / "other_whisper", seed=1)
    elsewhere = load_config(config_path, [f"model.whisper_path={other}"])
    with pytest.raises(
        SystemExit, match=r"was trained on another encoder than the one in .*other_whisper"
    ):
        load_decoder(elsewhere, torch.device("cpu"))
