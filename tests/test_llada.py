"""Native LLaDA: checkpoint names and shapes, LoRA key names, forward semantics, strict loading."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from whisper_llada.models.llada import LLaDAModelLM
from whisper_llada.models.llada_checkpoint import load_llada, save_llada
from whisper_llada.models.llada_config import LLADA_8B, LLaDAConfig
from whisper_llada.models.tiny_models import write_tiny_llada

# LLaDA-8B-Instruct facts (reference notes): sizes, and the exact parameter count they give.
WIDTH, MLP, ROWS, LAYERS = 4096, 12288, 126464, 32
BLOCK_PARAMETERS = 4 * WIDTH * WIDTH + 3 * MLP * WIDTH + 2 * WIDTH
LLADA_8B_PARAMETERS = 2 * ROWS * WIDTH + LAYERS * BLOCK_PARAMETERS + WIDTH  # 8_015_581_184
QKV_ONLY = r".*\.blocks\.\d+\.(q_proj|k_proj|v_proj)"


def reference_names_and_shapes() -> dict[str, tuple[int, ...]]:
    """The 291 checkpoint tensors, generated from the documented naming rules."""
    shapes = {
        "attn_norm": (WIDTH,),
        "q_proj": (WIDTH, WIDTH),
        "k_proj": (WIDTH, WIDTH),
        "v_proj": (WIDTH, WIDTH),
        "attn_out": (WIDTH, WIDTH),
        "ff_norm": (WIDTH,),
        "ff_proj": (MLP, WIDTH),
        "up_proj": (MLP, WIDTH),
        "ff_out": (WIDTH, MLP),
    }
    names = {
        f"model.transformer.blocks.{i}.{part}.weight": shape
        for i in range(LAYERS)
        for part, shape in shapes.items()
    }
    names["model.transformer.wte.weight"] = (ROWS, WIDTH)
    names["model.transformer.ln_f.weight"] = (WIDTH,)
    names["model.transformer.ff_out.weight"] = (ROWS, WIDTH)
    return names


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory) -> Path:
    return write_tiny_llada(tmp_path_factory.mktemp("tiny") / "llada")


@pytest.fixture(scope="module")
def model(llada_dir) -> LLaDAModelLM:
    return load_llada(llada_dir, dtype=torch.float32)


def random_model(config: LLaDAConfig, seed: int = 0) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


def token_ids(model: LLaDAModelLM, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)


# ---- real-size structure (meta device) ----


def test_llada_8b_has_exactly_the_checkpoint_tensors():
    with torch.device("meta"):
        big = LLaDAModelLM(LLADA_8B)
    state = big.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == reference_names_and_shapes()
    assert len(state) == 291
    assert sum(p.numel() for p in big.parameters()) == LLADA_8B_PARAMETERS == 8_015_581_184
    assert list(big.buffers()) == []
    assert state.keys() == dict(big.named_parameters()).keys()


def test_lora_on_qkv_gives_the_released_checkpoint_keys():
    with torch.device("meta"):
        big = LLaDAModelLM(LLADA_8B)
    wrapped = peft.get_peft_model(
        big, peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=QKV_ONLY)
    )
    lora = {n: tuple(t.shape) for n, t in wrapped.state_dict().items() if ".lora_" in n}
    expected = {}
    for i in range(LAYERS):
        for part in ("q_proj", "k_proj", "v_proj"):
            prefix = f"base_model.model.model.transformer.blocks.{i}.{part}"
            expected[f"{prefix}.lora_A.default.weight"] = (8, WIDTH)
            expected[f"{prefix}.lora_B.default.weight"] = (WIDTH, 8)
    assert lora == expected
    assert len(lora) == 192


def test_block_restricted_targets_never_wrap_the_output_head():
    tiny = random_model(
        dataclasses.replace(
            LLADA_8B,
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=4,
            mlp_hidden_size=48,
            vocab_size=64,
        )
    )
    restricted = r".*\.blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)"
    wrapped = peft.get_peft_model(tiny, peft.LoraConfig(r=2, target_modules=restricted))
    body = wrapped.base_model.model.model.transformer
    assert type(body.ff_out) is nn.Linear
    assert all(isinstance(block.ff_out, peft.tuners.lora.LoraLayer) for block in body.blocks)
    # The trap the regex avoids: the bare name also matches the 126464-row output head.
    plain = peft.get_peft_model(
        random_model(tiny.config), peft.LoraConfig(r=2, target_modules=["ff_out"])
    )
    assert isinstance(plain.base_model.model.model.transformer.ff_out, peft.tuners.lora.LoraLayer)


def test_peft_wrapped_model_forwards_keyword_inputs(model):
    wrapped = peft.get_peft_model(
        random_model(model.config), peft.LoraConfig(r=4, target_modules=QKV_ONLY)
    )
    base = random_model(model.config)  # same seed: same base weights, LoRA B starts at zero
    embeds = base.get_input_embeddings()(token_ids(model, 2, 6))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        expected = base(inputs_embeds=embeds, attention_mask=mask).logits
        got = wrapped(inputs_embeds=embeds, attention_mask=mask).logits
    assert torch.equal(got, expected)


# ---- config.json ----


def test_config_json_round_trip_and_reference_values(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLADA_8B.to_json_dict()))
    assert LLaDAConfig.from_json(path) == LLADA_8B
    written = LLADA_8B.to_json_dict()
    assert written["architectures"] == ["LLaDAModelLM"] and written["model_type"] == "llada"
    assert (written["embedding_size"], written["vocab_size"]) == (126464, 126464)
    assert (written["mask_token_id"], written["eos_token_id"], written["pad_token_id"]) == (
        126336,
        126081,
        126081,
    )
    assert (written["weight_tying"], written["include_bias"], written["block_type"]) == (
        False,
        False,
        "llama",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("weight_tying", True, "unsupported weight_tying=True; .* only weight_tying=False"),
        ("include_bias", True, "unsupported include_bias=True; .* only include_bias=False"),
        ("include_qkv_bias", True, "unsupported include_qkv_bias=True; .*=False"),
        ("block_type", "sequential", "unsupported block_type='sequential'; .*block_type='llama'"),
        ("activation_type", "gelu", "unsupported activation_type='gelu'; .*='silu'"),
        ("layer_norm_type", "default", "unsupported layer_norm_type='default'; .*='rms'"),
        ("rope", False, "unsupported rope=False; .* only rope=True"),
        ("embedding_size", 100, "unsupported embedding_size=100 < vocab_size=126464"),
    ],
)
def test_unsupported_config_values_raise(tmp_path, field, value, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**LLADA_8B.to_json_dict(), field: value}))
    with pytest.raises(ValueError, match=message):
        LLaDAConfig.from_json(path)


# ---- forward semantics on the tiny directory ----


def test_ids_and_embeddings_give_identical_logits(model):
    ids = token_ids(model, 2, 9)
    with torch.no_grad():
        from_ids = model(ids).logits
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    assert from_ids.shape == (2, 9, model.config.vocab_size)
    assert torch.equal(from_ids, from_embeds)


def reference_logits(model: LLaDAModelLM, ids: torch.Tensor) -> torch.Tensor:
    """The documented LLaDA computation written out plainly, in float64, one row at a time."""
    config, weights = model.config, {n: t.double() for n, t in model.state_dict().items()}
    heads, head_dim, length = config.n_heads, config.head_dim, ids.shape[1]

    def rms_norm(x, weight):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.rms_norm_eps) * weight

    def rotate(x):  # x (heads, L, hd); angles for the pair (i, i + hd/2) use inv_freq[i]
        inv_freq = config.rope_theta ** -(torch.arange(0, head_dim, 2).double() / head_dim)
        angles = torch.arange(length).double()[:, None] * inv_freq  # (L, hd / 2)
        cos, sin = angles.cos(), angles.sin()
        first, second = x[..., : head_dim // 2], x[..., head_dim // 2 :]
        return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)

    h = weights["model.transformer.wte.weight"][ids[0]]  # (L, D)
    for i in range(config.n_layers):
        w = {k.split(".")[-2]: v for k, v in weights.items() if f".blocks.{i}." in k}
        a = rms_norm(h, w["attn_norm"])
        q, k, v = (
            (a @ w[name].T).view(length, heads, head_dim).transpose(0, 1)
            for name in ("q_proj", "k_proj", "v_proj")
        )
        scores = rotate(q) @ rotate(k).transpose(1, 2) / head_dim**0.5  # (heads, L, L)
        att = (scores.softmax(-1) @ v).transpose(0, 1).reshape(length, -1)  # (L, D)
        h = h + att @ w["attn_out"].T
        m = rms_norm(h, w["ff_norm"])
        gate, up = m @ w["ff_proj"].T, m @ w["up_proj"].T
        h = h + (gate * torch.sigmoid(gate) * up) @ w["ff_out"].T
    h = rms_norm(h, weights["model.transformer.ln_f.weight"])
    return (h @ weights["model.transformer.ff_out.weight"].T)[None]


def test_forward_matches_the_documented_computation(model):
    ids = token_ids(model, 1, 11, seed=8)
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got.double(), reference_logits(model, ids), rtol=0, atol=1e-4)


def test_attention_is_bidirectional(model):
    ids = token_ids(model, 1, 8)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % model.config.vocab_size
    with torch.no_grad():
        first = model(ids).logits[0, 0]
        second = model(changed).logits[0, 0]
    assert not torch.allclose(first, second)


def assert_padding_invariant(model: LLaDAModelLM) -> None:
    """Left and right padding with the key mask reproduce the unpadded rows' logits."""
    long_ids, short_ids = token_ids(model, 1, 9, seed=1), token_ids(model, 1, 5, seed=2)
    pad = model.config.pad_token_id
    with torch.no_grad():
        alone_long, alone_short = model(long_ids).logits, model(short_ids).logits
        left = torch.cat((torch.full((1, 4), pad), short_ids), dim=1)
        left_mask = torch.arange(9)[None] >= 4
        left_logits = model(left, attention_mask=left_mask).logits
        right = torch.cat((long_ids, torch.cat((short_ids, torch.full((1, 4), pad)), dim=1)))
        right_mask = torch.stack((torch.ones(9, dtype=torch.bool), torch.arange(9) < 5))
        right_logits = model(right, attention_mask=right_mask).logits
    torch.testing.assert_close(left_logits[:, 4:], alone_short, rtol=0, atol=1e-5)
    torch.testing.assert_close(right_logits[0], alone_long[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(right_logits[1, :5], alone_short[0], rtol=0, atol=1e-5)


def test_padded_rows_match_unpadded(model):
    assert_padding_invariant(model)


def test_gqa_equals_repeated_heads_and_ignores_padding(model):
    gqa = random_model(dataclasses.replace(model.config, n_kv_heads=2))
    assert_padding_invariant(gqa)
    # Query head h reads key/value head h // 2: an MHA model with those heads copied agrees.
    mha = random_model(model.config)
    state = gqa.state_dict()
    head_dim = model.config.head_dim
    for name, tensor in state.items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            heads = tensor.view(2, head_dim, -1)  # (H_kv, hd, D)
            state[name] = heads.repeat_interleave(2, dim=0).reshape(-1, tensor.shape[1])  # (D, D)
    mha.load_state_dict(state)
    ids = token_ids(model, 2, 7)
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids).logits, mha(ids).logits, rtol=0, atol=1e-5)


def test_logits_positions_select_the_same_values(model):
    ids = token_ids(model, 2, 10)
    positions = torch.tensor([[9, 0, 3], [2, 2, 7]])
    with torch.no_grad():
        full = model(ids).logits
        selected = model(ids, logits_positions=positions).logits
    assert selected.shape == (2, 3, model.config.vocab_size)
    torch.testing.assert_close(selected, torch.stack([full[b, positions[b]] for b in range(2)]))


def test_hidden_states_are_embeddings_then_each_block(model):
    ids = token_ids(model, 1, 4)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.n_layers + 1
    assert torch.equal(out.hidden_states[0], model.get_input_embeddings()(ids))
    transformer = model.model.transformer
    torch.testing.assert_close(
        out.logits, transformer.ff_out(transformer.ln_f(out.hidden_states[-1]))
    )


# ---- prefix cache ----


def test_prefix_cache_is_exact_for_one_layer(model):
    one_layer = random_model(dataclasses.replace(model.config, n_layers=1))
    prefixes = [token_ids(model, 1, 6, seed=3), token_ids(model, 1, 4, seed=4)]
    canvas = token_ids(model, 2, 5, seed=5)
    padded = torch.cat(
        (prefixes[0], torch.cat((prefixes[1], torch.zeros(1, 2, dtype=torch.long)), 1))
    )
    prefix_mask = torch.stack((torch.ones(6, dtype=torch.bool), torch.arange(6) < 4))
    with torch.no_grad():
        cache = one_layer.build_prefix_cache(padded, attention_mask=prefix_mask)
        cached = one_layer(canvas, prefix=cache).logits
        for row in range(2):
            full = one_layer(torch.cat((prefixes[row][0], canvas[row]))[None]).logits
            torch.testing.assert_close(cached[row], full[0, -5:], rtol=0, atol=1e-5)
    assert cache.lengths.tolist() == [6, 4]
    assert cache.next_positions.tolist() == [6, 4]
    assert cache.keys[0].shape == (2, model.config.n_kv_heads, 6, model.config.head_dim)


def test_prefix_cache_on_two_layers_is_the_documented_approximation(model):
    ids = token_ids(model, 2, 16, seed=6)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        cache = model.build_prefix_cache(ids[:, :10])
        cached = model(ids[:, 10:], prefix=cache, output_hidden_states=True)
    # Exact through block 0 (its keys/values depend only on embeddings) ...
    torch.testing.assert_close(cached.hidden_states[1], full.hidden_states[1][:, 10:])
    # ... approximate after: block 1's cached prefix states never saw the canvas.
    difference = cached.logits - full.logits[:, 10:]
    assert difference.abs().max() > 1e-4
    assert difference.norm() / full.logits[:, 10:].norm() < 0.1


# ---- training ----


def test_gradient_checkpointing_gives_the_same_loss_and_grads(llada_dir):
    ids = torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(7))
    results = []
    for checkpointing in (False, True):
        trained = load_llada(llada_dir, dtype=torch.float32).train()
        trained.enable_gradient_checkpointing(checkpointing)
        logits = trained(ids).logits
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in trained.named_parameters()}))
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
    assert torch.equal(loss_plain, loss_ckpt)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=0, atol=1e-6)


# ---- loading and saving ----


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    save_llada(model, tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert shards == [
        f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)
    ]
    assert index["weight_map"].keys() == model.state_dict().keys()
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in model.state_dict().values()
    )
    reloaded = load_llada(tmp_path, dtype=torch.float32)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    ids = token_ids(model, 2, 6)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_single_file_save_replaces_shards_and_loads(model, tmp_path):
    save_llada(model, tmp_path, max_shard_bytes=200_000)
    save_llada(model, tmp_path, max_shard_bytes=10**9)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["config.json", "model.safetensors"]
    reloaded = load_llada(tmp_path, dtype=torch.float32)
    assert all(torch.equal(reloaded.state_dict()[n], t) for n, t in model.state_dict().items())


def test_load_in_bfloat16(llada_dir, model):
    bf16 = load_llada(llada_dir)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert torch.equal(
        bf16.model.transformer.wte.weight, model.model.transformer.wte.weight.bfloat16()
    )
    assert bf16(token_ids(model, 1, 3)).logits.dtype == torch.bfloat16


def single_file_copy(llada_dir: Path, target: Path, edit) -> Path:
    """A copy of the tiny directory as one model.safetensors, its tensors changed by `edit`."""
    target.mkdir()
    shutil.copy(llada_dir / "config.json", target / "config.json")
    tensors = {}
    for shard in sorted(llada_dir.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    edit(tensors)
    save_file(tensors, target / "model.safetensors")
    return target


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.pop("model.transformer.ln_f.weight"),
            r"1 missing key\(s\): model\.transformer\.ln_f\.weight",
        ),
        (lambda t: t.update(extra=torch.zeros(1)), r"1 unexpected key\(s\): extra"),
        (
            lambda t: t.update({"model.transformer.blocks.1.q_proj.weight": torch.zeros(64, 63)}),
            r"1 shape mismatch\(es\): model\.transformer\.blocks\.1\.q_proj\.weight \[64, 63\] "
            r"\(model: \[64, 64\]\)",
        ),
    ],
)
def test_strict_load_rejects_mismatched_weights(llada_dir, tmp_path, edit, message):
    broken = single_file_copy(llada_dir, tmp_path / "broken", edit)
    with pytest.raises(ValueError, match=f"LLaDA weights in {broken} do not match .*{message}"):
        load_llada(broken)


def test_load_errors_name_the_expected_files(llada_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"LLaDA directory .*nowhere does not exist"):
        load_llada(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        load_llada(tmp_path)
    shutil.copy(llada_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(
        FileNotFoundError,
        match=r"expected model\.safetensors\.index\.json .* or a single model\.safetensors",
    ):
        load_llada(tmp_path)
    config = json.loads((llada_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_type": "gelu"}))
    with pytest.raises(ValueError, match="unsupported activation_type='gelu'"):
        load_llada(tmp_path)


def test_forward_rejects_ambiguous_inputs(model):
    ids = token_ids(model, 1, 3)
    with pytest.raises(ValueError, match="pass exactly one of input_ids"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids))
    with pytest.raises(ValueError, match=r"attention_mask must be bool .*pass mask\.bool\(\)"):
        model(ids, attention_mask=torch.ones(1, 3, dtype=torch.long))
