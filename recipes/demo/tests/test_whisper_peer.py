"""The Whisper peer row: openai-whisper greedy decoding into a results folder, batched equal to alone, resumable, refusing another checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import whisper
from whisper.model import ModelDimensions

from recipes.demo import run as demo
from recipes.demo import whisper_peer
from whisper_llada.data.manifest import Utterance, load_wave
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.evaluation.results import MERGED_NAME, read_records

TEXTS = ("the cat sat", "seven purple kites", "a quiet harbour at night")
# A random English-vocabulary Whisper, as small as openai-whisper allows.
DIMS = ModelDimensions(
    n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
    n_vocab=51864, n_text_ctx=32, n_text_state=16, n_text_head=2, n_text_layer=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = whisper.model.Whisper(DIMS)
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save({"dims": dataclasses.asdict(DIMS), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    found = [
        Utterance(f"u{i}", str(synthesize(text, folder / f"u{i}.flac")), text)
        for i, text in enumerate(TEXTS)
    ]
    return [*found, Utterance("missing", str(folder / "missing.flac"), "gone")]


def test_the_row_holds_every_utterance_and_batched_equals_alone(checkpoint, utterances, tmp_path):
    row = whisper_peer.table_row(checkpoint, utterances, tmp_path, {"checkpoint_sha256": "a"})
    assert row.mode == "Whisper tiny.en (greedy, 30 s), first 4"
    assert (row.utterances, row.failed) == (4, 1)
    records = {r.id: r for r in read_records(tmp_path / "whisper-tiny-en-first4" / MERGED_NAME)}
    assert "missing.flac" in records["missing"].error
    model = whisper.load_model(str(checkpoint), device="cpu")
    for utt in utterances[:3]:
        wave = torch.from_numpy(load_wave(utt, max_seconds=30.0, too_long="truncate"))
        ((text, steps),) = whisper_peer.transcribe(model, [wave])
        assert (records[utt.id].hypothesis, records[utt.id].forward_passes) == (text, steps)
        assert 1 <= steps <= DIMS.n_text_ctx // 2 + 1


def test_a_rerun_decodes_nothing_and_another_checkpoint_is_refused(
    checkpoint, utterances, tmp_path, monkeypatch
):
    first = whisper_peer.table_row(checkpoint, utterances[:2], tmp_path, {"checkpoint_sha256": "a"})
    monkeypatch.setattr(whisper, "load_model", lambda *a, **k: pytest.fail("decoded again"))
    assert (
        whisper_peer.table_row(checkpoint, utterances[:2], tmp_path, {"checkpoint_sha256": "a"})
        == first
    )
    with pytest.raises(SystemExit, match="holds results of another Whisper checkpoint"):
        whisper_peer.table_row(checkpoint, utterances[:2], tmp_path, {"checkpoint_sha256": "b"})


def test_the_demo_decodes_the_peer_with_the_converted_tiny_en_by_default(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(whisper_peer, "DEFAULT_CHECKPOINT", tmp_path / "tiny.en.pt")
    monkeypatch.setattr(demo, "run_demo", lambda *args: calls.append(args))
    demo.main(["--limit", "1"])
    (tmp_path / "tiny.en.pt").write_bytes(b"")
    demo.main(["--limit", "1", "--whisper-utterances", "7"])
    assert [call[5:] for call in calls] == [(None, 100), (tmp_path / "tiny.en.pt", 7)]


def test_a_rerun_on_changed_utterances_is_refused(checkpoint, utterances, tmp_path):
    """The folder is named by the utterance count only: a rerun with other references or
    audio under the same ids must not reuse it (as inference.py)."""
    fingerprint = {"checkpoint_sha256": "a"}
    whisper_peer.table_row(checkpoint, utterances[:2], tmp_path, fingerprint)
    edited = [utterances[0], dataclasses.replace(utterances[1], text="edited")]
    with pytest.raises(SystemExit, match=r"1 utterance\(s\) that have another reference now"):
        whisper_peer.table_row(checkpoint, edited, tmp_path, fingerprint)
    swapped = [utterances[0], dataclasses.replace(utterances[1], audio=utterances[2].audio)]
    with pytest.raises(SystemExit, match=r"1 utterance\(s\) that have other audio or another"):
        whisper_peer.table_row(checkpoint, swapped, tmp_path, fingerprint)
