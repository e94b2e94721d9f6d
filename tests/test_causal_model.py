"""The causal baseline Whisper-LLaMA: the tiny LLaMA directory, the build, the next-token loss, checkpoints, config errors."""

from __future__ import annotations

import json

import pytest
import torch

from whisper_llada.config_strict import to_dict
from whisper_llada.data.audio import batch_features
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model, merge_lora
from whisper_llada.models.causal_model import WhisperLLaMA
from whisper_llada.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from whisper_llada.models.llama import causal_tokens, load_llama_tokenizer
from whisper_llada.models.prompt import load_tokenizer, text_ids
from whisper_llada.training.objective import training_loss

TINY_BPE = 1000  # tiny_models.TINY_BPE_VOCAB: Llama-3's 256 special tokens follow


@pytest.fixture(scope="module")
def built(tiny_ar_config):
    cfg = tiny_ar_config("audio.pad_to_30s=false")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    return cfg, model, tokenizer


def make_batch(speech, tokenizer, cfg) -> SpeechBatch:
    mel, lengths = batch_features([w for w, _ in speech], cfg.audio.n_mels, pad_to_30s=False)
    return SpeechBatch(mel, lengths, [text_ids(tokenizer, text) for _, text in speech])


def test_the_tiny_llama_has_the_real_layout(tiny_llama):
    names = sorted(p.name for p in tiny_llama.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((tiny_llama / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("llama", ["LlamaForCausalLM"])
    assert config["vocab_size"] == TINY_BPE + 256
    assert (config["bos_token_id"], config["eos_token_id"]) == (TINY_BPE, TINY_BPE + 9)
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # GQA, as Llama-3-8B
    generation = json.loads((tiny_llama / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [TINY_BPE + 1, TINY_BPE + 9]
    tokenizer = load_llama_tokenizer(tiny_llama)
    ids = causal_tokens(tokenizer)
    assert (ids.bos, ids.eos, ids.eot, ids.pad) == (
        TINY_BPE,
        TINY_BPE + 1,
        TINY_BPE + 9,
        TINY_BPE + 1,
    )
    assert tokenizer("hello").input_ids[0] == ids.bos  # the post-processor adds BOS, as Llama-3's
    assert text_ids(tokenizer, "hello")[0] != ids.bos


def test_the_prompt_is_the_llama3_chat_turn(built):
    _, model, tokenizer = built
    assert tokenizer.decode(model.prompt_ids.tolist()) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTranscribe the audio:"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_trainable_parameters_are_projector_and_lora(built):
    _, model, _ = built
    assert isinstance(model, WhisperLLaMA) and model.llm is model.llama
    names = set(model.trainable_parameters())
    lora = sorted(n for n in names if ".lora_" in n)
    assert names - set(lora) == {n for n in names if n.startswith("projector.")}
    assert lora[0] == "llama.base_model.model.model.layers.0.self_attn.k_proj.lora_A.default.weight"
    assert len(lora) == 2 * 3 * 2  # 2 layers x q/k/v x A/B
    assert model.ctc_head is None
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    try:
        assert model.projector.training and not model.encoder.training
    finally:
        model.eval()


def test_the_loss_is_transformers_causal_lm_loss_on_the_answer(built, speech):
    """next_token_loss against LlamaForCausalLM's own loss, labels -100 outside the answers."""
    cfg, model, tokenizer = built
    batch = make_batch(speech, tokenizer, cfg)
    with torch.no_grad():
        ours = training_loss(model, batch, cfg.model, cfg.loss)
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
        targets = [[*ids, model.special.eot] for ids in batch.text_ids]
        width = max(map(len, targets))
        answers = torch.tensor([t + [model.special.pad] * (width - len(t)) for t in targets])
        lengths = torch.tensor([len(t) for t in targets])
        packed = model.pack(audio, answers, lengths)
        labels = torch.full(packed.key_mask.shape, -100)
        for row, target in enumerate(targets):
            start = int(packed.answer_positions[row, 0])
            labels[row, start : start + len(target)] = torch.tensor(target)
        reference = model.causal_lm(
            inputs_embeds=packed.embeds,
            attention_mask=packed.key_mask.long(),
            position_ids=packed.position_ids,
            labels=labels,
        ).loss
    assert ours.diffusion is None and ours.ctc is None
    assert torch.allclose(ours.total, reference, atol=1e-5)
    assert torch.equal(ours.next_token, ours.total)
    assert ours.masked_tokens == sum(map(len, targets))


def test_only_trainable_parameters_get_gradients(built, speech):
    cfg, model, tokenizer = built
    model.train()
    try:
        training_loss(
            model, make_batch(speech, tokenizer, cfg), cfg.model, cfg.loss
        ).total.backward()
    finally:
        model.eval()
    trainable = model.trainable_parameters()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(trainable)
    assert all(trainable[n].grad.abs().sum() > 0 for n in trainable if ".lora_A." not in n)
    model.zero_grad(set_to_none=True)


def test_checkpoint_round_trip_gives_identical_outputs(built, speech, tiny_ar_config, tmp_path):
    cfg, model, tokenizer = built
    trained = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.trainable_parameters().values():  # LoRA B != 0: LoRA matters
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    batch = make_batch(speech, tokenizer, cfg)
    answers = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    try:
        path = save_checkpoint(model, tmp_path / "ar.safetensors", config=to_dict(cfg))
        torch.manual_seed(123)  # another random projector and LoRA before loading
        fresh, _ = build_model(cfg.model)
        load_checkpoint(fresh, path)
        with torch.no_grad():
            before = model.next_token_logits(
                model.encode_audio(batch.mel, batch.mel_lengths), answers
            )
            audio = fresh.encode_audio(batch.mel, batch.mel_lengths)
            after = fresh.next_token_logits(audio, answers)
            merged = merge_lora(fresh).next_token_logits(audio, answers)
        assert torch.equal(before, after)
        assert torch.allclose(merged, after, atol=1e-5) and not torch.equal(merged, after)
        rank_eight, _ = build_model(tiny_ar_config("model.lora.r=8").model)
        with pytest.raises(CheckpointError, match="shape mismatches"):
            load_checkpoint(rank_eight, path)
    finally:
        with torch.no_grad():
            for name, value in trained.items():
                model.trainable_parameters()[name].copy_(value)


def test_config_errors_say_what_to_set(tiny_ar_config, tiny_models):
    with pytest.raises(ValueError, match=r"model\.llama_path='' is not an HF model directory"):
        build_model(tiny_ar_config("model.llama_path=''").model)
    with pytest.raises(ValueError, match=r"model_type 'llada', not 'llama'"):
        build_model(tiny_ar_config(f"model.llama_path={tiny_models.llada}").model)
    with pytest.raises(ValueError, match=r"no config\.json"):
        build_model(tiny_ar_config(f"model.llama_path={tiny_models.llada}/missing").model)
    with pytest.raises(ValueError, match=r"no <\|begin_of_text\|>, <\|end_of_text\|> token\(s\)"):
        causal_tokens(load_tokenizer(tiny_models.llada))
