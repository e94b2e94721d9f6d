"""The composite model built from tiny on-disk models: freeze policy, sequence layout, batching, loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from whisper_llada.data.audio import batch_features
from whisper_llada.data.training_data import SpeechBatch
from whisper_llada.models.build import build_model, merge_lora
from whisper_llada.models.prompt import text_ids
from whisper_llada.training.objective import training_loss

ALIGNED = ("model.answer_positions=audio_aligned", "model.audio_vectors_per_token=2.5")


@pytest.fixture(scope="module")
def built(tiny_config):
    cfg = tiny_config()
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    return cfg, model, tokenizer


def make_batch(speech, tokenizer, cfg, rows=None):
    rows = rows if rows is not None else range(len(speech))
    waves = [speech[i][0] for i in rows]
    mel, lengths = batch_features(waves, cfg.audio.n_mels, pad_to_30s=cfg.audio.pad_to_30s)
    return SpeechBatch(mel, lengths, [text_ids(tokenizer, speech[i][1]) for i in rows])


def test_trainable_parameters_are_projector_lora_and_ctc(built):
    _, model, _ = built
    names = set(model.trainable_parameters())
    assert names == {n for n in names if n.startswith(("projector.", "ctc_head.")) or ".lora_" in n}
    assert any(n.startswith("projector.") for n in names)
    assert any(n.startswith("ctc_head.") for n in names)
    lora = sorted(n for n in names if ".lora_" in n)
    assert (
        lora[0] == "llada.base_model.model.model.transformer.blocks.0.k_proj.lora_A.default.weight"
    )
    assert len(lora) == 2 * 3 * 2  # 2 blocks x q/k/v x A/B
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters().values())


def test_train_mode_keeps_the_frozen_encoder_in_eval(built):
    _, model, _ = built
    model.train()
    try:
        assert model.projector.training and model.llada.training
        assert not model.encoder.training
        assert not any(m.training for m in model.encoder.modules())
    finally:
        model.eval()


def test_sequence_layout_is_prompt_audio_answer(built, speech):
    cfg, model, tokenizer = built
    batch = make_batch(speech, tokenizer, cfg, rows=[0])
    with torch.no_grad():
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
        answer = torch.tensor([batch.text_ids[0]])
        packed = model.pack(audio, answer)
    prompt = model.prompt_ids.numel()
    assert audio.vectors.shape[1] == 352  # 30 s padding -> 88 windows x 4 queries
    torch.testing.assert_close(
        packed.embeds[0, :prompt], model.embed_tokens(model.prompt_ids), rtol=0, atol=0
    )
    torch.testing.assert_close(
        packed.embeds[0, prompt : prompt + 352], audio.vectors[0], rtol=0, atol=0
    )
    torch.testing.assert_close(
        packed.embeds[0, prompt + 352 :], model.embed_tokens(answer[0]), rtol=0, atol=0
    )
    assert packed.answer_positions.tolist() == [
        list(range(prompt + 352, prompt + 352 + answer.shape[1]))
    ]
    assert packed.key_mask.all()
    text = tokenizer.decode(model.prompt_ids.tolist())
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nTranscribe the audio:<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize(
    "pad_to_30s, positions",
    [(True, ()), (False, ()), (False, ALIGNED)],
    ids=["30s", "true_length", "true_length_aligned"],
)
def test_batched_logits_equal_per_utterance(tiny_config, speech, pad_to_30s, positions):
    cfg = tiny_config(f"audio.pad_to_30s={str(pad_to_30s).lower()}", *positions)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    batch = make_batch(speech, tokenizer, cfg)
    answers = torch.full((len(speech), 6), model.special.mask)
    answers[:, 0] = torch.tensor([ids[0] for ids in batch.text_ids])
    with torch.no_grad():
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
        if not pad_to_30s:
            assert len(set(audio.lengths.tolist())) == len(speech)  # really mixed lengths
        batched = model.answer_logits(audio, answers)
        for row in range(len(speech)):
            alone = make_batch(speech, tokenizer, cfg, rows=[row])
            single = model.answer_logits(
                model.encode_audio(alone.mel, alone.mel_lengths), answers[row : row + 1]
            )
            torch.testing.assert_close(batched[row], single[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["whisper_llada", "llada_sft"])
@pytest.mark.parametrize("answer_len", [1, 120])
def test_loss_is_finite_for_all_short_and_all_long_answers(built, speech, kind, answer_len):
    cfg, model, tokenizer = built
    batch = make_batch(speech, tokenizer, cfg, rows=[0, 1])
    batch.text_ids = [[batch.text_ids[0][0]] * answer_len, [batch.text_ids[1][0]] * answer_len]
    loss_cfg = type(cfg.loss)(kind=kind, answer_end="batch_padding")
    out = training_loss(model, batch, cfg.model, loss_cfg, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.total) and torch.isfinite(out.diffusion) and torch.isfinite(out.ctc)
    assert out.masked_tokens >= 2  # at least one masked token per row


def test_gradients_reach_only_trainable_parts(built, speech):
    cfg, model, tokenizer = built
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        out = training_loss(
            model,
            make_batch(speech, tokenizer, cfg, rows=[0]),
            cfg.model,
            cfg.loss,
            torch.Generator().manual_seed(0),
        )
        out.total.backward()
    finally:
        model.eval()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    model.zero_grad(set_to_none=True)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_config, speech):
    cfg = tiny_config("audio.pad_to_30s=false")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    batch = make_batch(speech, tokenizer, cfg, rows=[0, 1])
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        out = training_loss(model, batch, cfg.model, cfg.loss, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(out.total.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("projector", ["qformer", "conv_adapter", "frame_stack"])
def test_every_projector_trains_with_the_dllm_asr_objective(tiny_config, speech, projector):
    cfg = tiny_config(
        f"model.projector={projector}",
        "model.conv_adapter.hidden=64",
        "model.frame_stack.hidden=64",
        "model.answer_suffix=eot",
        "audio.pad_to_30s=false",
        "loss.kind=llada_sft",
        "loss.full_mask_prob=0.2",
    )
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    batch = make_batch(speech, tokenizer, cfg)
    model.train()
    out = training_loss(model, batch, cfg.model, cfg.loss, torch.Generator().manual_seed(1))
    out.total.backward()
    assert torch.isfinite(out.total)
    assert all(p.grad is not None for p in model.projector.parameters())


def test_trainable_encoder_is_fine_tuned_in_float32(tiny_config):
    cfg = tiny_config("model.train_encoder=true", "model.dtype=bfloat16")
    model, _ = build_model(cfg.model)
    encoder_params = [n for n in model.trainable_parameters() if n.startswith("encoder.")]
    assert len(encoder_params) == sum(1 for p in model.encoder.parameters() if p.requires_grad) > 0
    assert all(p.dtype == torch.float32 for p in model.encoder.parameters())
    assert model.embedding_weight.dtype == torch.bfloat16
    assert model.train().encoder.training


def test_merged_lora_gives_the_same_logits(built, speech):
    cfg, _, tokenizer = built
    torch.manual_seed(0)
    model, _ = build_model(cfg.model)
    with torch.no_grad():  # non-zero LoRA factors, so merging has something to fold in
        for name, p in model.trainable_parameters().items():
            if "lora_B" in name:
                p.normal_(std=0.1)
    batch = make_batch(speech, tokenizer, cfg, rows=[1])
    answer = torch.full((1, 4), model.special.mask)
    with torch.no_grad():
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
        before = model.answer_logits(audio, answer)
        merge_lora(model)
        after = model.answer_logits(audio, answer)
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_show_drafts_fills_masked_slots_of_chosen_rows_with_the_draft():
    from whisper_llada.training.objective import show_drafts

    mask = 9
    noisy = torch.tensor([[1, mask, mask, mask], [5, mask, 7, mask]])
    masked = noisy == mask
    drafts = [[11, 12], [13, 14, 15, 16, 17]]  # row 0 ends early; row 1 is longer than L
    shown = show_drafts(noisy, masked, drafts, 1.0, mask)
    assert torch.equal(shown, torch.tensor([[1, 12, mask, mask], [5, 14, 7, 16]]))
    assert torch.equal(show_drafts(noisy, masked, drafts, 0.0, mask), noisy)


def test_align_drafts_lays_each_draft_token_on_the_transcript_slot_it_aligns_with():
    from whisper_llada.training.objective import align_drafts

    mask = 9
    drafts = [[1, 3, 4], [5, 6, 7, 8], [], [2, 2]]
    targets = [[1, 2, 3], [5, 7, 8], [2, 2], [2, 2]]
    # row 0: 2 deleted, 4 inserted; row 1: 6 inserted; row 2: all deleted; row 3: exact
    assert align_drafts(drafts, targets, mask) == [[1, mask, 3], [5, 7, 8], [mask, mask], [2, 2]]


def test_edit_distance_drafts_show_the_aligned_token_where_position_drafts_shift(
    tiny_config, speech
):
    cfg = tiny_config("model.lora.r=0")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    batch = make_batch(speech, tokenizer, cfg)
    batch.text_ids[0] = [7, 8, 9]
    draft = [6, 7, 8, 9]  # one inserted token shifts every position-shown slot
    seen = []
    original = model.answer_logits
    model.answer_logits = lambda audio, noisy: seen.append(noisy) or original(audio, noisy)
    ctc_decode = "whisper_llada.training.objective.ctc_greedy_decode"
    drafts = [draft] + [[] for _ in batch.text_ids[1:]]
    loss_cfg = dataclasses.replace(cfg.loss, draft_prob=1.0, full_mask_prob=1.0)
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(ctc_decode, lambda logits, lengths: drafts)
        for alignment in ("position", "edit_distance"):
            loss_cfg = dataclasses.replace(loss_cfg, draft_alignment=alignment)
            training_loss(model, batch, cfg.model, loss_cfg, torch.Generator().manual_seed(0))
    mask = model.special.mask
    assert seen[0][0, :4].tolist() == [6, 7, 8, 9]
    assert seen[1][0, :4].tolist() == [7, 8, 9, mask]


def test_training_with_drafts_visible_changes_the_canvas_and_needs_the_ctc_head(
    tiny_config, speech
):
    cfg = tiny_config("model.lora.r=0")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    batch = make_batch(speech, tokenizer, cfg)
    seen = []
    original = model.answer_logits
    model.answer_logits = lambda audio, noisy: seen.append(noisy) or original(audio, noisy)
    for share in (0.0, 1.0):
        loss_cfg = dataclasses.replace(cfg.loss, draft_prob=share)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            training_loss(model, batch, cfg.model, loss_cfg, generator)
    without, with_drafts = seen
    assert (without == model.special.mask).any()
    assert not torch.equal(without, with_drafts)  # masked slots now show draft tokens
    assert torch.equal(
        with_drafts[without != model.special.mask], without[without != model.special.mask]
    )
    model.ctc_head = None
    with pytest.raises(ValueError, match=r"^loss\.draft_prob > 0 shows the CTC draft"):
        training_loss(model, batch, cfg.model, dataclasses.replace(cfg.loss, draft_prob=0.5))


def test_audio_norm_rms_starts_audio_vectors_at_the_token_embeddings_scale(tiny_config, speech):
    cfg = tiny_config("model.projector=conv_adapter", "model.audio_norm=rms")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    token_rms = float(model.embedding_weight.pow(2).mean().sqrt())
    assert "projector.gain" in model.trainable_parameters()
    batch = make_batch(speech, tokenizer, cfg)
    with torch.no_grad():
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
    real = torch.arange(audio.vectors.shape[1]) < audio.lengths[:, None]
    rms = audio.vectors[real].pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, token_rms), atol=0, rtol=1e-3)


def test_audio_aligned_answer_slots_sit_where_their_tokens_are_spoken_whatever_the_length(
    tiny_config, speech
):
    cfg = tiny_config("audio.pad_to_30s=false", *ALIGNED)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    batch = make_batch(speech, tokenizer, cfg)
    answers = torch.full((len(speech), 5), model.special.mask)
    with torch.no_grad():
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
    packed = model.pack(audio, answers)
    prompt = model.prompt_ids.numel()
    answer = packed.position_ids.gather(1, packed.answer_positions)
    # round((k + 1/2) x 2.5) for k = 0..4 (half to even), the same in every row
    assert answer.tolist() == [[prompt + p for p in (1, 4, 6, 9, 11)]] * len(speech)
    assert len(set(audio.lengths.tolist())) == len(speech)  # though the clips' lengths differ
    for row, length in enumerate(audio.lengths.tolist()):  # prompt and audio keep theirs
        assert packed.position_ids[row, : prompt + length].tolist() == list(range(prompt + length))
    with torch.no_grad():
        follow = build_model(tiny_config("audio.pad_to_30s=false").model)[0]
        follow.load_state_dict(model.state_dict())
        assert not torch.allclose(
            model.answer_logits(audio, answers), follow.answer_logits(audio, answers)
        )


def test_audio_aligned_positions_are_the_same_with_the_prefix_cache(tiny_config, speech):
    """On a one-block LLaDA the prefix cache is exact, so cached = uncached only if the canvas
    gets the same aligned positions both ways."""
    cfg = tiny_config("audio.pad_to_30s=false", *ALIGNED)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    blocks = model.llada.base_model.model.model.transformer.blocks
    del blocks[1:]
    batch = make_batch(speech, tokenizer, cfg)
    canvas = torch.full((len(speech), 6), model.special.mask)
    canvas[:, 0] = torch.tensor([ids[0] for ids in batch.text_ids])
    lengths = torch.tensor([6, 4, 5][: len(speech)])
    with torch.no_grad():
        audio = model.encode_audio(batch.mel, batch.mel_lengths)
        full = model.canvas_logits(audio, canvas, lengths)
        cached = model.canvas_logits(audio, canvas, lengths, model.prefix_cache(audio))
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(cached[row, :length], full[row, :length], rtol=1e-4, atol=1e-5)
