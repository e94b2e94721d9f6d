"""Autoregressive decoding of the causal baseline on the tiny LLaMA: batched equals alone, the cache changes nothing, rows stop on their own."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from whisper_llada.config import DecodeConfig
from whisper_llada.data.audio import batch_features
from whisper_llada.decoding.autoregressive import autoregressive_decode
from whisper_llada.decoding.recognize import recognize
from whisper_llada.models.build import build_model
from whisper_llada.models.speech_llm import AudioEncoding

MAX_NEW_TOKENS = 10
GREEDY = DecodeConfig(mode="autoregressive", num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
BEAM = dataclasses.replace(GREEDY, num_beams=3)


def build(tiny_ar_config, pad_to_30s: bool):
    cfg = tiny_ar_config(f"audio.pad_to_30s={str(pad_to_30s).lower()}")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    return cfg, model.eval(), tokenizer


@pytest.fixture(scope="module")
def setup(tiny_ar_config):
    """True-length audio: the rows' [prompt; audio] prefixes differ in length (left padding)."""
    return build(tiny_ar_config, pad_to_30s=False)


@pytest.fixture(scope="module")
def audio(setup, speech) -> AudioEncoding:
    cfg, model, _ = setup
    mel, lengths = batch_features([w for w, _ in speech], cfg.audio.n_mels, pad_to_30s=False)
    with torch.inference_mode():
        return model.encode_audio(mel, lengths)


def assert_batched_equals_alone(model, tokenizer, cfg, speech, decode):
    waves = [wave for wave, _ in speech]
    ids = [f"utt{i}" for i in range(len(speech))]
    batched = recognize(model, tokenizer, waves, ids, decode, cfg.audio)
    alone = [
        recognize(model, tokenizer, [w], [i], decode, cfg.audio)[0]
        for w, i in zip(waves, ids, strict=True)
    ]
    assert batched == alone
    return batched


@pytest.mark.parametrize("decode", [GREEDY, BEAM], ids=["greedy", "beam3"])
def test_batched_equals_per_utterance(setup, speech, decode):
    cfg, model, tokenizer = setup
    batched = assert_batched_equals_alone(model, tokenizer, cfg, speech, decode)
    assert all(h.prior is None and h.text for h in batched)
    assert all(1 <= h.forward_passes <= MAX_NEW_TOKENS for h in batched)


def test_batched_equals_per_utterance_with_30s_padding(tiny_ar_config, speech):
    cfg, model, tokenizer = build(tiny_ar_config, pad_to_30s=True)
    assert_batched_equals_alone(model, tokenizer, cfg, speech, GREEDY)


@torch.no_grad()
def greedy_without_cache(model, audio: AudioEncoding, max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding the slow, obviously correct way: one row at a time, no padding, no cache,
    every step re-running the whole sequence through the teacher-forcing path of training."""
    results = []
    for row in range(audio.vectors.shape[0]):
        count = int(audio.lengths[row])
        alone = AudioEncoding(audio.vectors[row : row + 1, :count], audio.lengths[row : row + 1])
        answer: list[int] = []
        while len(answer) < max_new_tokens:
            slot = torch.tensor([[*answer, model.special.pad]])  # the last slot is predicted
            token = int(model.next_token_logits(alone, slot)[0, -1].argmax())
            if token in model.special.stop:
                break
            answer.append(token)
        results.append(answer)
    return results


def test_greedy_with_the_cache_equals_full_recomputation(setup, audio):
    _, model, _ = setup
    with torch.inference_mode():
        cached = autoregressive_decode(model, audio, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
    assert cached.tokens == greedy_without_cache(model, audio, MAX_NEW_TOKENS)
    # The random model never says <|eot_id|> here: every row runs to the limit.
    assert cached.forward_passes == [MAX_NEW_TOKENS] * 3
    assert [len(t) for t in cached.tokens] == [MAX_NEW_TOKENS] * 3


def test_each_row_stops_at_its_own_end_token(setup, audio, speech):
    """Swap the output-head rows of <|eot_id|> and a token row 0 emits third: every row then
    ends exactly where it used to emit that token, and keeps everything before it."""
    cfg, model, tokenizer = setup
    with torch.inference_mode():
        before = autoregressive_decode(model, audio, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
    token = before.tokens[0][2]
    assert token not in before.tokens[0][:2]
    stopping = copy.deepcopy(model)
    head = stopping.causal_lm.lm_head.weight
    eot = stopping.special.eot
    with torch.no_grad():
        head[[token, eot]] = head[[eot, token]]
    with torch.inference_mode():
        after = autoregressive_decode(stopping, audio, num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
    for row, tokens in enumerate(before.tokens):
        end = tokens.index(token) if token in tokens else len(tokens)
        assert after.tokens[row] == tokens[:end]
        assert after.forward_passes[row] == min(end + 1, MAX_NEW_TOKENS)
    assert after.tokens[0] == before.tokens[0][:2] and after.forward_passes[0] == 3
    for decode in (GREEDY, BEAM):
        assert_batched_equals_alone(stopping, tokenizer, cfg, speech, decode)


def test_max_new_tokens_caps_greedy_and_beam_search(setup, audio):
    _, model, _ = setup
    with torch.inference_mode():
        greedy = autoregressive_decode(model, audio, num_beams=1, max_new_tokens=4)
        beams = autoregressive_decode(model, audio, num_beams=3, max_new_tokens=4)
    assert greedy.tokens == greedy_without_cache(model, audio, 4)
    assert greedy.forward_passes == beams.forward_passes == [4] * 3
    assert all(len(t) == 4 for t in beams.tokens)


@pytest.mark.parametrize(
    ("num_beams", "max_new_tokens", "message"),
    [
        (0, 4, "decode.num_beams must be at least 1, got 0"),
        (1, 0, "decode.max_new_tokens must be at least 1, got 0"),
    ],
)
def test_bad_settings_are_refused(setup, audio, num_beams, max_new_tokens, message):
    _, model, _ = setup
    with pytest.raises(ValueError, match=message):
        autoregressive_decode(model, audio, num_beams=num_beams, max_new_tokens=max_new_tokens)


def test_modes_and_model_kinds_must_match(setup, tiny_config, speech):
    cfg, model, tokenizer = setup
    wave = [speech[0][0]]
    with pytest.raises(ValueError, match=r"decode\.mode=decoding needs Whisper-LLaDA"):
        recognize(model, tokenizer, wave, ["u"], DecodeConfig(mode="decoding"), cfg.audio)
    llada_cfg = tiny_config()
    llada, llada_tokenizer = build_model(llada_cfg.model)
    with pytest.raises(ValueError, match=r"decode\.mode=autoregressive decodes the causal"):
        recognize(llada, llada_tokenizer, wave, ["u"], GREEDY, llada_cfg.audio)
