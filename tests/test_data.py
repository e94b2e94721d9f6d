"""Training data: manifests to cuts, resumable DDP-aware bucketing, speech batches, bad audio."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

from whisper_llada.config import AudioConfig, DataConfig
from whisper_llada.data.audio import AudioError, batch_features, load_audio
from whisper_llada.data.manifest import ManifestError
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.data.training_cuts import read_cuts
from whisper_llada.data.training_data import (
    ResumableSampler,
    SpeechDataset,
    bucketing_sampler,
    data_loader,
    validation_batches,
)
from whisper_llada.models.prompt import load_tokenizer, text_ids

TEXTS = ("the cat sat on the mat", "a dog ran home", "we go out at night", "she read a book")
TRUE_LENGTH = AudioConfig(pad_to_30s=False)
FAKE_CUTS = 20


def cut(cut_id: str, audio: str, seconds: float, text: str = "hello") -> MonoCut:
    """A MonoCut of one audio file, as lhotse's recipes write them."""
    recording = Recording(
        id=cut_id,
        sources=[AudioSource(type="file", channels=[0], source=audio)],
        sampling_rate=16000,
        num_samples=round(seconds * 16000),
        duration=seconds,
    )
    supervision = SupervisionSegment(cut_id, cut_id, start=0.0, duration=seconds, text=text)
    return MonoCut(cut_id, 0.0, seconds, 0, supervisions=[supervision], recording=recording)


def fake_cuts(count: int = FAKE_CUTS) -> CutSet:
    """Cuts of 1 to 5 s over files that need not exist (the samplers never read audio)."""
    return CutSet.from_cuts(
        cut(f"u{i:02d}", f"/nowhere/u{i}.flac", 1.0 + i % 5) for i in range(count)
    )


def sampled_ids(cuts: CutSet, count: int, state=None, rank=0, world_size=1) -> list[list[str]]:
    sampler = bucketing_sampler(
        cuts, DataConfig(max_duration=8.0, num_buckets=2), seed=3, rank=rank, world_size=world_size
    )
    requests = itertools.islice(iter(ResumableSampler(sampler, state)), count)
    return [[c.id for c in request.cuts] for request in requests]


def flat(batches: list[list[str]]) -> list[str]:
    return [cut_id for batch in batches for cut_id in batch]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder with u0..u3.flac (synthetic speech of TEXTS)."""
    folder = tmp_path_factory.mktemp("clips")
    for i, text in enumerate(TEXTS):
        synthesize(text, folder / f"u{i}.flac", voice=("en-us", "en-gb")[i % 2], rate_wpm=190)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(tiny_models.llada)


def test_a_restored_sampler_continues_with_the_same_batches():
    cuts = fake_cuts()
    uninterrupted = sampled_ids(cuts, 16)
    sampler = bucketing_sampler(
        cuts, DataConfig(max_duration=8.0, num_buckets=2), seed=3, rank=0, world_size=1
    )
    requests = list(itertools.islice(iter(ResumableSampler(sampler)), 16))
    assert [r.sampler_state["epoch"] for r in requests[::15]] == [0, 1]  # across an epoch's end
    for done in range(1, 16):
        state = requests[done - 1].sampler_state
        assert sampled_ids(cuts, 16 - done, state) == uninterrupted[done:], done


def test_every_epoch_holds_every_cut_once():
    batches = sampled_ids(fake_cuts(), 40)
    epochs, seen = [], []
    for batch in batches:
        seen += batch
        if len(seen) >= FAKE_CUTS:
            epochs.append(sorted(seen[:FAKE_CUTS]))
            seen = seen[FAKE_CUTS:]
    assert epochs[0] == epochs[1] == [f"u{i:02d}" for i in range(FAKE_CUTS)]


def test_ddp_ranks_see_disjoint_cuts():
    cuts = fake_cuts(16)
    first = sampled_ids(cuts, 4, rank=0, world_size=2)
    second = sampled_ids(cuts, 4, rank=1, world_size=2)
    rank0, rank1 = flat(first), flat(second)
    assert not set(rank0) & set(rank1)
    assert sorted(rank0 + rank1) == [f"u{i:02d}" for i in range(16)]  # one epoch, split in two


def test_a_restored_sampler_refuses_another_world_size():
    state = next(
        iter(
            ResumableSampler(
                bucketing_sampler(
                    fake_cuts(),
                    DataConfig(max_duration=8.0, num_buckets=2),
                    seed=3,
                    rank=0,
                    world_size=2,
                )
            )
        )
    ).sampler_state
    with pytest.raises(ValueError, match="saved data position is for world_size 2, this run has 1"):
        sampled_ids(fake_cuts(), 1, state)


def test_too_many_buckets_for_the_corpus_is_explained():
    with pytest.raises(ValueError, match=r"data\.num_buckets=30 exceeds the 20 cuts"):
        bucketing_sampler(fake_cuts(), DataConfig(num_buckets=30), seed=0, rank=0, world_size=1)


def test_validation_batches_score_every_cut_once_over_the_ranks():
    """Longest first, dealt to the ranks in turn, then cut at 8 s or 2 cuts: u0k lasts 1 + k % 5 s."""
    config = DataConfig(max_duration=8.0, max_cuts=2)
    shards = [
        [
            [c.id for c in batch]
            for batch in validation_batches(fake_cuts(9), config, rank=r, world_size=2)
        ]
        for r in range(2)
    ]
    assert shards == [
        [["u04"], ["u08", "u07"], ["u06", "u05"]],
        [["u03", "u02"], ["u01", "u00"]],
    ]


def test_a_batch_holds_the_features_and_tokens_of_its_cuts(clips, tokenizer):
    cuts = CutSet.from_cuts(
        cut(f"u{i}", str(clips / f"u{i}.flac"), sf.info(clips / f"u{i}.flac").duration, text)
        for i, text in enumerate(TEXTS[:3])
    )
    batch = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=False)[cuts]
    waves = [load_audio(clips / f"u{i}.flac") for i in range(3)]
    mel, mel_lengths = batch_features(waves, 128, pad_to_30s=False)
    assert batch.ids == ["u0", "u1", "u2"]
    assert torch.equal(batch.speech.mel, mel) and torch.equal(batch.speech.mel_lengths, mel_lengths)
    assert batch.speech.text_ids == [text_ids(tokenizer, t) for t in TEXTS[:3]]
    assert batch.audio_seconds == pytest.approx(sum(len(w) for w in waves) / 16000)
    assert batch.bad == [] and batch.sampler_state is None


def test_bad_audio_is_dropped_and_reported(clips, tokenizer, tmp_path):
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all")
    good = str(clips / "u0.flac")
    cuts = CutSet.from_cuts(
        [
            cut("good", good, 1.0),
            cut("corrupt", str(corrupt), 1.0),
            cut("missing", str(tmp_path / "missing.flac"), 1.0),
        ]
    )
    batch = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=True)[cuts]
    assert batch.ids == ["good"] and batch.speech.mel.shape[0] == 1
    assert len(batch.bad) == 2
    assert batch.bad[0].startswith(f"{corrupt}: cannot read audio")
    assert batch.bad[1].startswith(f"{tmp_path / 'missing.flac'}: audio file not found")
    all_bad = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=True)[cuts.subset(last=2)]
    assert all_bad.speech is None and all_bad.ids == [] and len(all_bad.bad) == 2
    with pytest.raises(AudioError, match=re.escape(f"{corrupt}: cannot read audio")):
        SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=False)[cuts]


def test_authors_json_becomes_cuts(clips, tokenizer, tmp_path):
    annotation = [
        {"path": str(clips / f"u{i}.flac"), "text": text, "origin_transcripts": "x"}
        for i, text in enumerate(TEXTS)
    ]
    annotation.append({"path": str(tmp_path / "gone.flac"), "text": "lost"})
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps({"annotation": annotation}))
    cuts, dropped = read_cuts([str(manifest)], skip_bad_audio=True, seed=0)
    assert [c.id for c in cuts] == ["u0", "u1", "u2", "u3"]
    assert [c.duration for c in cuts] == [sf.info(clips / f"u{i}.flac").duration for i in range(4)]
    assert dropped == [
        f"{tmp_path / 'gone.flac'}: cannot read the audio file's header (utterance 'gone')"
    ]
    batch = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=False)[cuts]
    assert batch.texts == list(TEXTS)
    assert batch.speech.text_ids == [text_ids(tokenizer, t) for t in TEXTS]
    with pytest.raises(AudioError, match=r"gone\.flac: cannot read the audio file's header"):
        read_cuts([str(manifest)], skip_bad_audio=False, seed=0)


def test_lhotse_cuts_with_relative_paths_and_several_manifests(clips, tokenizer, tmp_path):
    """Relative audio paths count from the manifest's folder; two manifests are multiplexed."""
    folder = clips.parent
    for name, indices in (("a.jsonl.gz", (0, 1)), ("b.jsonl.gz", (2, 3))):
        CutSet.from_cuts(
            cut(f"u{i}", f"{clips.name}/u{i}.flac", sf.info(clips / f"u{i}.flac").duration)
            for i in indices
        ).to_file(folder / name)
    cuts, dropped = read_cuts(
        [str(folder / "a.jsonl.gz"), str(folder / "b.jsonl.gz")], skip_bad_audio=False, seed=0
    )
    assert dropped == [] and cuts.is_lazy
    assert sorted(c.id for c in cuts) == ["u0", "u1", "u2", "u3"]
    batch = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=False)[cuts]
    assert sorted(batch.ids) == ["u0", "u1", "u2", "u3"]


def test_loader_workers_prefetching_does_not_shift_the_saved_position(clips, tokenizer):
    """The state stamped on a consumed batch resumes right after it, though workers ran ahead."""
    cuts = CutSet.from_cuts(
        cut(f"u{i}", str(clips / f"u{i}.flac"), sf.info(clips / f"u{i}.flac").duration)
        for i in range(4)
    )
    dataset = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=False)
    config = DataConfig(max_duration=3.0, num_buckets=2)

    def batches(state, count):
        sampler = ResumableSampler(
            bucketing_sampler(cuts, config, seed=1, rank=0, world_size=1), state
        )
        loader = data_loader(dataset, sampler, num_workers=1, seed=0)
        return list(itertools.islice(iter(loader), count))

    uninterrupted = [b.ids for b in batches(None, 6)]
    first = batches(None, 2)
    resumed = batches(first[-1].sampler_state, 4)
    assert [b.ids for b in first + resumed] == uninterrupted


def test_a_cut_whose_audio_lhotse_would_transform_is_refused_in_training(clips, tokenizer):
    audio = str(clips / "u0.flac")
    seconds = sf.info(audio).duration
    plain = cut("plain", audio, seconds)
    dataset = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=True)
    assert dataset[CutSet.from_cuts([plain])].speech is not None
    sped_up = plain.perturb_speed(1.1)  # training used to read the unperturbed file, cut short
    with pytest.raises(
        ManifestError, match=r"cut 'plain_sp1\.1' has lhotse audio transforms .* \(training\)"
    ):
        dataset[CutSet.from_cuts([sped_up])]
