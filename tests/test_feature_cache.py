"""Feature cache: cached batches equal computed ones bit for bit; changes miss; damage is recomputed."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment
from safetensors import safe_open

from whisper_llada.config import AudioConfig
from whisper_llada.data import feature_cache
from whisper_llada.data.audio import AudioError, batch_features
from whisper_llada.data.feature_cache import FeatureCache, stack_features, utterance_features
from whisper_llada.data.manifest import Utterance, load_wave
from whisper_llada.data.speech_synthesis import synthesize
from whisper_llada.data.training_cuts import cut_utterance
from whisper_llada.data.training_data import SpeechDataset
from whisper_llada.models.checkpoint import read_checkpoint
from whisper_llada.models.prompt import load_tokenizer
from whisper_llada.training import loop

PADDED = AudioConfig(pad_to_30s=True)
TRUE_LENGTH = AudioConfig(pad_to_30s=False, min_seconds=1.0)  # the short clips get padded
HOP_LENGTH = 160  # samples per mel frame
REPO = Path(__file__).resolve().parent.parent
# Four updates of the tiny models on three clips, validation at 0, 2 and 4, a DataLoader worker.
TINY_RECIPE = (
    "audio.pad_to_30s=false",
    "train.device=cpu",
    "train.precision=fp32",
    "train.tensorboard=false",
    "train.max_steps=4",
    "train.valid_every=2",
    "train.save_every=4",
    "train.warmup_steps=1",
    "data.max_duration=10.0",
    "data.num_buckets=2",
    "data.num_workers=1",
)
HALF_WINDOW = 200  # N_FFT // 2: a frame sees samples up to 200 either side of its centre


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """speech.flac, noisy.flac (white noise at 10 dB SNR), short.flac (~0.4 s), silence.flac."""
    folder = tmp_path_factory.mktemp("clips")
    synthesize("the cat sat on the mat", folder / "speech.flac", voice="en-us", rate_wpm=190)
    synthesize("a dog ran home at night", folder / "noisy.flac", voice="en-gb", snr_db=10.0)
    synthesize("yes", folder / "short.flac", rate_wpm=260)
    sf.write(folder / "silence.flac", np.zeros(8000, dtype=np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(tiny_models.llada)


def cut(
    cut_id: str,
    audio: Path,
    start: float = 0.0,
    duration: float | None = None,
    seconds: float | None = None,
) -> MonoCut:
    """A MonoCut of `audio` from `start` for `duration` seconds (to the end when None).

    `seconds` is the recording's length; None reads it from the file.
    """
    seconds = sf.info(audio).duration if seconds is None else seconds
    duration = seconds - start if duration is None else duration
    recording = Recording(
        id=cut_id,
        sources=[AudioSource(type="file", channels=[0], source=str(audio))],
        sampling_rate=16000,
        num_samples=round(seconds * 16000),
        duration=seconds,
    )
    supervision = SupervisionSegment(cut_id, cut_id, start=0.0, duration=duration, text=cut_id)
    return MonoCut(cut_id, start, duration, 0, supervisions=[supervision], recording=recording)


def clip_cuts(clips: Path) -> CutSet:
    """Speech, noise, a short word, digital silence and a segment from inside a file."""
    return CutSet.from_cuts(
        [
            cut("speech", clips / "speech.flac"),
            cut("noisy", clips / "noisy.flac"),
            cut("short", clips / "short.flac"),
            cut("silence", clips / "silence.flac"),
            cut("segment", clips / "speech.flac", start=0.25, duration=0.5),
        ]
    )


def stored(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """The kept frames (n_mels, K) and the header of a cache file."""
    with safe_open(path, framework="pt") as file:
        return file.get_tensor("mel"), file.metadata()


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.safetensors"))


@pytest.mark.parametrize("audio_cfg", [PADDED, TRUE_LENGTH], ids=["pad_to_30s", "true_length"])
def test_cached_batches_equal_computed_batches(clips, tokenizer, tmp_path, monkeypatch, audio_cfg):
    """Without cache, filling it, reading it: one batch, equal to batch_features bit for bit."""
    cuts = clip_cuts(clips)
    waves = [
        load_wave(cut_utterance(c), max_seconds=audio_cfg.max_seconds, too_long="truncate")
        for c in cuts
    ]
    mel, mel_lengths = batch_features(
        waves, 128, pad_to_30s=audio_cfg.pad_to_30s, min_seconds=audio_cfg.min_seconds
    )
    computed = SpeechDataset(tokenizer, audio_cfg, skip_bad_audio=False)[cuts]
    folder = tmp_path / "cache"
    cold = SpeechDataset(tokenizer, audio_cfg, skip_bad_audio=False, feature_cache=str(folder))[
        cuts
    ]
    assert len(cache_files(folder)) == len(cuts)

    def no_computing(*args, **kwargs):
        raise AssertionError("a warm cache computed features")

    monkeypatch.setattr(feature_cache, "utterance_features", no_computing)
    warm = SpeechDataset(tokenizer, audio_cfg, skip_bad_audio=False, feature_cache=str(folder))[
        cuts
    ]
    for batch in (computed, cold, warm):
        assert batch.speech.mel.dtype == torch.float32
        assert torch.equal(batch.speech.mel, mel)
        assert torch.equal(batch.speech.mel_lengths, mel_lengths)
        assert batch.ids == ["speech", "noisy", "short", "silence", "segment"]
        assert batch.speech.text_ids == computed.speech.text_ids
        assert batch.audio_seconds == sum(len(wave) for wave in waves) / 16000
    if audio_cfg.pad_to_30s:
        assert mel_lengths.tolist() == [3000] * 5
    else:  # at least 1 s (min_seconds), rounded up to whole 320-sample frame pairs
        assert mel_lengths.tolist() == [-(-max(len(w), 16000) // 320) * 2 for w in waves]
        assert mel_lengths.tolist()[2:] == [100, 100, 100]


def test_trailing_minimum_frames_are_left_out_of_the_file(clips, tmp_path):
    """A 30 s row keeps only the frames its audio reaches; silence keeps none; rows rebuild."""
    cache = FeatureCache(tmp_path, PADDED)
    for name in ("speech", "noisy", "silence"):
        utt = Utterance(id=name, audio=str(clips / f"{name}.flac"), text="")
        row = cache.features(utt)
        kept, header = stored(cache.path(cache.key(utt)))
        samples = sf.info(clips / f"{name}.flac").frames
        assert header["frames"] == "3000" and header["samples"] == str(samples)
        reached = (samples - 1 + HALF_WINDOW) // HOP_LENGTH + 1  # frames whose window sees audio
        if name == "silence":
            assert kept.shape == (128, 0)
        else:
            assert 0 < kept.shape[1] <= reached < 3000
        assert torch.equal(cache.features(utt).mel, row.mel)
        assert torch.equal(row.mel, utterance_features(utt, PADDED).mel)


def test_a_changed_audio_file_is_a_miss(clips, tmp_path, monkeypatch):
    audio = tmp_path / "u.flac"
    shutil.copy(clips / "speech.flac", audio)
    utt = Utterance(id="u", audio=str(audio), text="")
    cache = FeatureCache(tmp_path / "cache", TRUE_LENGTH)
    first = cache.features(utt)
    computed = []

    def counting(utt, audio_cfg):
        computed.append(utt.id)
        return utterance_features(utt, audio_cfg)

    monkeypatch.setattr(feature_cache, "utterance_features", counting)
    assert torch.equal(cache.features(utt).mel, first.mel) and computed == []
    stat = audio.stat()
    shutil.copy(clips / "speech.flac", audio)  # same bytes, new mtime
    audio.touch()
    assert audio.stat().st_mtime_ns != stat.st_mtime_ns and audio.stat().st_size == stat.st_size
    assert torch.equal(cache.features(utt).mel, first.mel) and computed == ["u"]
    shutil.copy(clips / "noisy.flac", audio)  # other audio, other size
    changed = cache.features(utt)
    assert computed == ["u", "u"] and len(cache_files(tmp_path / "cache")) == 3
    assert torch.equal(changed.mel, utterance_features(utt, TRUE_LENGTH).mel)
    assert changed.mel.shape != first.mel.shape


def test_a_changed_audio_setting_or_segment_is_a_miss(clips, tmp_path):
    audio = str(clips / "speech.flac")
    whole = Utterance(id="u", audio=audio, text="")
    settings = [
        TRUE_LENGTH,
        AudioConfig(pad_to_30s=False, min_seconds=1.0, n_mels=80),
        AudioConfig(pad_to_30s=True, min_seconds=1.0),
        AudioConfig(pad_to_30s=False, min_seconds=2.0),
        AudioConfig(pad_to_30s=False, min_seconds=1.0, max_seconds=0.5),
        AudioConfig(pad_to_30s=False, min_seconds=1.0, too_long="error"),
    ]
    folder = tmp_path / "cache"
    paths = {FeatureCache(folder, s).path(FeatureCache(folder, s).key(whole)) for s in settings}
    cache = FeatureCache(folder, TRUE_LENGTH)
    for other in (
        Utterance(id="v", audio=audio, text=""),
        Utterance(id="u", audio=audio, text="", start=0.25),
        Utterance(id="u", audio=audio, text="", duration=0.5),
    ):
        paths.add(cache.path(cache.key(other)))
    assert len(paths) == len(settings) + 3
    for setting in settings[:4]:
        row = FeatureCache(folder, setting).features(whole)
        assert torch.equal(row.mel, utterance_features(whole, setting).mel)
    assert FeatureCache(folder, settings[1]).features(whole).mel.shape[0] == 80
    with pytest.warns(UserWarning, match="longer than the 0.5 s limit; keeping the first 0.5 s"):
        assert FeatureCache(folder, settings[4]).features(whole).samples == 8000
    assert len(cache_files(folder)) == 5


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data, other: data[: len(data) // 2], r"unreadable feature cache file \(.*\)"),
        (lambda data, other: b"", r"unreadable feature cache file \(.*header too small\)"),
        (lambda data, other: b"not a safetensors file", r"unreadable feature cache file \(.*\)"),
        (lambda data, other: flip_last_byte(data), "the feature cache file fails its checksum"),
        (
            lambda data, other: other,
            "the feature cache file belongs to another utterance or setting",
        ),
    ],
    ids=["truncated", "empty", "garbage", "flipped_byte", "another_key"],
)
def test_a_corrupt_cache_file_is_recomputed_with_a_warning(clips, tmp_path, damage, message):
    cache = FeatureCache(tmp_path, PADDED)
    utt = Utterance(id="speech", audio=str(clips / "speech.flac"), text="")
    other = Utterance(id="short", audio=str(clips / "short.flac"), text="")
    expected = cache.features(utt)
    cache.features(other)
    path = cache.path(cache.key(utt))
    path.write_bytes(damage(path.read_bytes(), cache.path(cache.key(other)).read_bytes()))
    with pytest.warns(UserWarning, match=f"^{re.escape(str(path))}: {message}; recomputing it$"):
        recomputed = cache.features(utt)
    assert torch.equal(recomputed.mel, expected.mel) and recomputed.samples == expected.samples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cache.features(utt).mel, expected.mel)  # rewritten, read cleanly


def test_bad_audio_is_skipped_as_without_the_cache(clips, tokenizer, tmp_path):
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all")
    missing = tmp_path / "missing.flac"
    cuts = CutSet.from_cuts(
        [
            cut("good", clips / "speech.flac"),
            cut("corrupt", corrupt, seconds=1.0),
            cut("missing", missing, seconds=1.0),
        ]
    )
    folder = tmp_path / "cache"
    plain = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=True)[cuts]
    cached = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=True, feature_cache=str(folder))[
        cuts
    ]
    assert cached.ids == plain.ids == ["good"]
    assert cached.bad == plain.bad
    assert cached.bad[0].startswith(f"{corrupt}: cannot read audio")
    assert cached.bad[1].startswith(f"{missing}: audio file not found")
    assert torch.equal(cached.speech.mel, plain.speech.mel)
    assert len(cache_files(folder)) == 1
    strict = SpeechDataset(tokenizer, TRUE_LENGTH, skip_bad_audio=False, feature_cache=str(folder))
    with pytest.raises(AudioError, match=re.escape(f"{corrupt}: cannot read audio")):
        strict[cuts]


def test_an_unwritable_cache_warns_and_goes_on(clips, tmp_path):
    cache = FeatureCache(tmp_path, TRUE_LENGTH)
    utt = Utterance(id="speech", audio=str(clips / "speech.flac"), text="")
    path = cache.path(cache.key(utt))
    path.parent.write_bytes(b"")  # a file where the fan-out folder should be
    with pytest.warns(UserWarning, match=f"^{re.escape(str(path))}: cannot write the feature"):
        row = cache.features(utt)
    assert torch.equal(row.mel, utterance_features(utt, TRUE_LENGTH).mel)


def test_a_writer_racing_another_for_one_key(clips, tmp_path, monkeypatch):
    """Another worker stores the same key while this one is writing it: both succeed.

    This writer's file is invisible at the target until complete (a temporary name beside it,
    then a rename), the two temporary names differ, and nothing else is left in the folder.
    """
    cache, other = FeatureCache(tmp_path, PADDED), FeatureCache(tmp_path, PADDED)
    utt = Utterance(id="speech", audio=str(clips / "speech.flac"), text="")
    target = cache.path(cache.key(utt))
    written: list[Path] = []
    save_file = feature_cache.save_file

    def racing_save(tensors, filename, metadata):
        save_file(tensors, filename, metadata=metadata)
        written.append(Path(filename))
        if len(written) == 1:  # mid-write, the other worker misses, computes and stores the key
            assert not target.exists()
            other.features(utt)
            assert target.is_file()

    monkeypatch.setattr(feature_cache, "save_file", racing_save)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = cache.features(utt)
    assert len(written) == 2 and written[0] != written[1] and target not in written
    assert {path.parent for path in written} == {target.parent}
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == [target]
    assert torch.equal(cache.features(utt).mel, row.mel)
    assert torch.equal(row.mel, utterance_features(utt, PADDED).mel)


def test_stack_features_needs_a_row():
    with pytest.raises(ValueError, match="rows is empty"):
        stack_features([])


def test_training_with_the_cache_ends_with_the_same_weights(clips, tiny_models, tmp_path):
    """train.py with data.feature_cache (training and validation read it) equals a run without."""
    cuts = CutSet.from_cuts(
        cut(name, clips / f"{name}.flac") for name in ("speech", "noisy", "short")
    )
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    folder = tmp_path / "cache"

    def run(out: str, *overrides: str) -> dict[str, torch.Tensor]:
        loop.main(
            [
                str(REPO / "configs" / "tiny.yaml"),
                f"model.whisper_path={tiny_models.whisper}",
                f"model.llada_path={tiny_models.llada}",
                f"train.output_dir={tmp_path / out}",
                f"data.train_manifests=[{tmp_path / 'cuts.jsonl.gz'}]",
                f"data.valid_manifests=[{tmp_path / 'cuts.jsonl.gz'}]",
                *TINY_RECIPE,
                *overrides,
            ]
        )
        return read_checkpoint(tmp_path / out / "last" / "model.safetensors")[0]

    plain = run("plain")
    cached = run("cached", f"data.feature_cache={folder}")
    assert plain.keys() == cached.keys()
    assert all(torch.equal(plain[name], cached[name]) for name in plain)
    assert len(cache_files(folder)) == 3  # training and validation share the files


def test_a_cache_folder_that_cannot_be_made_is_explained(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"cannot create the feature cache folder .*taken.*: set"):
        FeatureCache(tmp_path / "taken", TRUE_LENGTH)
