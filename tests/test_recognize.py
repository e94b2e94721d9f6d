"""Every decoding mode on the tiny model: a batch gives exactly what each utterance gives alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from whisper_llada.config import DecodeConfig
from whisper_llada.decoding.deliberation import DeliberationOptions, SemiARDeliberationOptions
from whisper_llada.decoding.diffusion import DiffusionOptions
from whisper_llada.decoding.prior_guided import PriorGuidedOptions
from whisper_llada.decoding.recognize import options_from, recognize
from whisper_llada.models.build import build_model

FAST = {"gen_len": 16, "steps": 8, "block_length": 16, "max_rounds": 6}
MODES = {
    "diffusion": {},
    "semi_ar": {"block_length": 8},
    "random_remasking_sampled": {"remasking": "random", "temperature": 0.7},
    "threshold_prune_first_pass": {"threshold": 0.05, "prune": "first_pass"},
    "threshold_prune_every_round": {
        "threshold": 0.05,
        "prune": "every_round",
        "eot_ends_answer": True,
    },
    "diffusion_deliberation_random": {
        "mode": "diffusion_deliberation",
        "masking_type": "random",
        "mask_ratio": 0.5,
    },
    "diffusion_deliberation_low_confidence": {
        "mode": "diffusion_deliberation",
        "masking_type": "low_confidence",
    },
    "semi_ar_deliberation": {"mode": "semi_ar_deliberation", "num_chunks": 3},
    "prior_guided_visible": {
        "mode": "prior_guided",
        "first_pass": "ctc",
        "threshold": 0.05,
        "prune": "every_round",
    },
    "prior_guided_mask_below": {
        "mode": "prior_guided",
        "first_pass": "ctc",
        "threshold": 0.05,
        "prior_treatment": "mask_below",
        "prior_confidence_floor": 0.5,
        "prune": "first_pass",
    },
    "prior_guided_no_early_exit": {
        "mode": "prior_guided",
        "first_pass": "ctc",
        "threshold": 0.9,
        "early_exit": False,
    },
    "ctc": {"mode": "ctc"},
}


def build(tiny_config, pad_to_30s: bool):
    cfg = tiny_config(f"audio.pad_to_30s={str(pad_to_30s).lower()}")
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model)
    return cfg, model.eval(), tokenizer


@pytest.fixture(scope="module")
def setup(tiny_config):
    """True-length audio: the rows of a batch have different numbers of audio vectors."""
    return build(tiny_config, pad_to_30s=False)


def assert_batched_equals_alone(setup, speech, decode):
    cfg, model, tokenizer = setup
    waves = [wave for wave, _ in speech]
    ids = [f"utt{i}" for i in range(len(speech))]
    first_passes = [text for _, text in speech]
    batched = recognize(model, tokenizer, waves, ids, decode, cfg.audio, first_passes=first_passes)
    alone = [
        recognize(model, tokenizer, [w], [i], decode, cfg.audio, first_passes=[f])[0]
        for w, i, f in zip(waves, ids, first_passes, strict=True)
    ]
    assert batched == alone
    return batched


@pytest.mark.parametrize("prefix_cache", [False, True], ids=["no_cache", "cache"])
@pytest.mark.parametrize("mode", list(MODES))
def test_batched_equals_per_utterance(setup, speech, mode, prefix_cache):
    decode = dataclasses.replace(DecodeConfig(**FAST), **MODES[mode], prefix_cache=prefix_cache)
    batched = assert_batched_equals_alone(setup, speech, decode)
    if mode != "ctc":
        assert all(h.forward_passes >= 1 for h in batched)


@pytest.mark.parametrize("mode", ["diffusion", "prior_guided_visible"])
def test_batched_equals_per_utterance_with_30s_padding(tiny_config, speech, mode):
    decode = dataclasses.replace(DecodeConfig(**FAST), **MODES[mode], prefix_cache=True)
    assert_batched_equals_alone(build(tiny_config, pad_to_30s=True), speech, decode)


def test_the_prefix_cache_costs_one_pass_and_changes_the_input_layout(setup, speech):
    cfg, model, tokenizer = setup
    decode = DecodeConfig(**FAST)
    wave = [speech[0][0]]
    plain = recognize(model, tokenizer, wave, ["u"], decode, cfg.audio)[0]
    cached = recognize(
        model, tokenizer, wave, ["u"], dataclasses.replace(decode, prefix_cache=True), cfg.audio
    )[0]
    assert plain.forward_passes == 8 and cached.forward_passes == 9  # 8 steps (+1 prefix pass)


def test_deliberation_from_the_manifest_needs_a_first_pass(setup, speech):
    cfg, model, tokenizer = setup
    decode = DecodeConfig(mode="diffusion_deliberation", **FAST)
    with pytest.raises(ValueError, match="needs a first-pass hypothesis for every utterance"):
        recognize(model, tokenizer, [speech[0][0]], ["u"], decode, cfg.audio, first_passes=[None])


@pytest.mark.parametrize(
    "options",
    [DiffusionOptions, DeliberationOptions, SemiARDeliberationOptions, PriorGuidedOptions],
)
def test_every_sampler_option_is_the_decode_key_of_its_name(options):
    cfg = DecodeConfig(
        steps=24, gen_len=48, block_length=16, mask_ratio=0.4, num_chunks=3,
        masking_type="low_confidence", remasking="random", temperature=0.5, threshold=0.7,
        prune="every_round", eot_ends_answer=True, early_exit=False, prior_treatment="mask_below",
        prior_confidence_floor=0.3, margin=2, max_rounds=7,
    )  # fmt: skip
    built = options_from(cfg, options)
    assert {field.name: getattr(built, field.name) for field in dataclasses.fields(options)} == {
        field.name: getattr(cfg, field.name) for field in dataclasses.fields(options)
    }
    assert all(
        getattr(built, f.name) != f.default for f in dataclasses.fields(options)
    )  # each one set
