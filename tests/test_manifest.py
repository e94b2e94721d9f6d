"""Tests for test-set manifests (authors' JSON, JSONL, lhotse CutSets), wave loading and batching."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

from whisper_llada.data.audio import SAMPLE_RATE, AudioError, load_audio
from whisper_llada.data.batching import make_batches, shard
from whisper_llada.data.manifest import (
    ManifestError,
    Utterance,
    load_wave,
    read_manifest,
    utterance_seconds,
)

FLAC_ID = "1089-134686-0000"  # LibriSpeech-style file stem
RECORDING_SECONDS = 3.0


def write_noise(path: Path, seconds: float, seed: int) -> Path:
    """A 16 kHz float32 wav/flac of Gaussian noise at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE)
    return path


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    """tmp_path/wavs with a 1 s flac, a 0.5 s wav and a 3 s wav recording."""
    write_noise(tmp_path / "wavs" / f"{FLAC_ID}.flac", 1.0, seed=0)
    write_noise(tmp_path / "wavs" / "short.wav", 0.5, seed=1)
    write_noise(tmp_path / "wavs" / "long.wav", RECORDING_SECONDS, seed=2)
    return tmp_path / "wavs"


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def test_reads_the_authors_json(tmp_path: Path, audio_dir: Path) -> None:
    absolute = str(audio_dir / "short.wav")
    annotation = [
        {"path": f"wavs/{FLAC_ID}.flac", "text": "HELLO WORLD", "origin_transcripts": ["a", "b"]},
        {"path": absolute, "text": "SHORT", "origin_transcripts": "shirt", "task": "asr"},
        {"path": "wavs/long.wav", "text": ""},
    ]
    manifest = write_text(tmp_path / "test_clean.json", json.dumps({"annotation": annotation}))
    assert read_manifest(manifest) == [
        Utterance(FLAC_ID, str(audio_dir / f"{FLAC_ID}.flac"), "HELLO WORLD", first_pass="a"),
        Utterance("short", absolute, "SHORT", first_pass="shirt"),
        Utterance("long", str(audio_dir / "long.wav"), ""),
    ]


def test_reads_jsonl_with_aliases_and_blank_lines(tmp_path: Path, audio_dir: Path) -> None:
    text = jsonl(
        {"audio": "wavs/short.wav", "text": "one", "id": "utt-1", "duration": 0.5},
        {"path": f"wavs/{FLAC_ID}.flac", "text": "two", "first_pass": "too"},
    )
    text += "\n" + jsonl({"audio": "x.wav", "text": "three", "origin_transcripts": ["tree"]})
    manifest = write_text(tmp_path / "set.jsonl", text)
    assert read_manifest(manifest) == [
        Utterance("utt-1", str(audio_dir / "short.wav"), "one", duration=0.5),
        Utterance(FLAC_ID, str(audio_dir / f"{FLAC_ID}.flac"), "two", first_pass="too"),
        Utterance("x", str(tmp_path / "x.wav"), "three", first_pass="tree"),
    ]


def test_a_one_line_jsonl_is_one_utterance(tmp_path: Path) -> None:
    manifest = write_text(tmp_path / "one.jsonl", '{"audio": "a.wav", "text": "hi"}')
    assert read_manifest(manifest) == [Utterance("a", str(tmp_path / "a.wav"), "hi")]


@pytest.mark.parametrize("name", ["cuts.jsonl", "cuts.jsonl.gz", "cuts.json"])
def test_reads_a_lhotse_cutset(
    tmp_path: Path, audio_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)  # relative source paths, resolved against the manifest's folder
    flac = Recording.from_file(f"wavs/{FLAC_ID}.flac")
    whole = MonoCut(
        id="whole",
        start=0.0,
        duration=flac.duration,
        channel=0,
        recording=flac,
        supervisions=[SupervisionSegment("s0", flac.id, 0.0, flac.duration, text="HELLO")],
    )
    long = Recording.from_file("wavs/long.wav")
    # Supervisions are stored out of order: their texts are joined in time order.
    segment = MonoCut(
        id="segment",
        start=0.5,
        duration=1.25,
        channel=0,
        recording=long,
        supervisions=[
            SupervisionSegment("s2", long.id, 0.75, 0.5, text="WORLD"),
            SupervisionSegment("s1", long.id, 0.0, 0.5, text="BIG"),
        ],
        custom={"first_pass": "big word"},
    )
    CutSet.from_cuts([whole, segment]).to_file(tmp_path / name)
    monkeypatch.chdir(audio_dir)  # reading must not depend on the working directory
    assert read_manifest(tmp_path / name) == [
        Utterance("whole", str(audio_dir / f"{FLAC_ID}.flac"), "HELLO", 0.0, 1.0),
        Utterance("segment", str(audio_dir / "long.wav"), "BIG WORLD", 0.5, 1.25, "big word"),
    ]


GOOD = {"audio": "a.wav", "text": "a"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (jsonl(GOOD) + '{"audio": "b.wav", "text": }\n', "m.jsonl: line 2: invalid JSON"),
        (jsonl(GOOD, {"audio": "b.wav"}), "m.jsonl: line 2: missing key 'text'"),
        (jsonl({"text": "a"}), "line 1: missing key 'audio' (or 'path')"),
        (jsonl({**GOOD, "path": "b.wav"}), "line 1: give one of ['audio', 'path'], not both"),
        (
            json.dumps({"annotation": [{"path": "a.wav", "text": "a"}, {"path": "b.wav"}]}),
            "m.jsonl: annotation[1]: missing key 'text'",
        ),
        ('{\n  "data": []\n}\n', "m.jsonl: a JSON dict without the 'annotation' key"),
        ('{"data": []}', "a JSON dict without the 'annotation' key"),
        ('"a.wav"', "a JSON str without the 'annotation' key"),
        (json.dumps({"annotation": {"path": "a.wav"}}), "'annotation' must be a list of entries"),
        (jsonl({"audio": "a.wav", "text": 5}), "line 1: 'text' must be a string, got int 5"),
        (jsonl({**GOOD, "id": 7}), "line 1: 'id' must be a string, got int 7"),
        (jsonl({**GOOD, "id": ""}), "line 1: the utterance id is empty"),
        (jsonl({**GOOD, "duration": -1}), "'duration' must be a positive number of seconds"),
        (
            jsonl({**GOOD, "origin_transcripts": []}),
            "'origin_transcripts' must be a string or a non-empty list of strings, got",
        ),
        ("[1]\n[2]\n", "line 1: expected a JSON object, got list"),
        ("", "m.jsonl: the manifest is empty"),
        (" \n\n", "the manifest is empty"),
        (json.dumps({"annotation": []}), "m.jsonl: the manifest holds no utterances"),
        (
            jsonl(GOOD, GOOD),
            "m.jsonl: duplicate utterance id 'a' at line 1 and line 2; ids (the 'id' field, else "
            "the audio file's name) must be unique",
        ),
        (
            jsonl({"id": "r", "sources": [], "sampling_rate": 16000}),
            "line 1: a lhotse recording or supervision manifest; decode a CutSet",
        ),
    ],
)
def test_malformed_manifests_raise(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        read_manifest(write_text(tmp_path / "m.jsonl", content))


def test_duplicate_stems_in_the_authors_json_name_both_entries(tmp_path: Path) -> None:
    entries = [{"path": f"{d}/same.flac", "text": "x"} for d in ("clean", "other", "clean")]
    manifest = write_text(tmp_path / "m.json", json.dumps({"annotation": entries}))
    with pytest.raises(
        ManifestError, match=re.escape("id 'same' at annotation[0] and annotation[1]")
    ):
        read_manifest(manifest)


def test_a_gzip_that_is_not_text_raises(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(ManifestError, match=r"cannot read the manifest as \(gzipped\) UTF-8 text"):
        read_manifest(tmp_path / "m.jsonl.gz")


def test_a_cut_of_a_url_source_raises(tmp_path: Path) -> None:
    url = AudioSource(type="url", channels=[0], source="https://example.com/a.wav")
    recording = Recording("r", [url], SAMPLE_RATE, num_samples=SAMPLE_RATE, duration=1.0)
    cut = MonoCut(id="c", start=0.0, duration=1.0, channel=0, recording=recording)
    CutSet.from_cuts([cut]).to_file(tmp_path / "cuts.jsonl")
    with pytest.raises(
        ManifestError,
        match=re.escape("line 1: cut 'c' reads from sources ['url']; only a recording stored"),
    ):
        read_manifest(tmp_path / "cuts.jsonl")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"type": "MonoCut", "id": "c"}, "line 1: not a valid lhotse MonoCut (TypeError("),
        ({"type": "MixedCut", "id": "m", "tracks": []}, "line 1: a MixedCut; only cuts of one"),
        (
            {"type": "MonoCut", "id": "c", "start": 0, "duration": 1, "channel": 0},
            "line 1: cut 'c' has no recording to decode",
        ),
    ],
)
def test_cuts_without_one_recording_raise(tmp_path: Path, record: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        read_manifest(write_text(tmp_path / "cuts.jsonl", jsonl(record)))


def test_cuts_whose_audio_load_audio_cannot_reproduce_raise(tmp_path: Path) -> None:
    stereo = np.zeros((SAMPLE_RATE, 2), dtype=np.float32)
    sf.write(tmp_path / "stereo.wav", stereo, SAMPLE_RATE)
    recording = Recording.from_file(tmp_path / "stereo.wav")
    one_channel = MonoCut(id="left", start=0.0, duration=1.0, channel=1, recording=recording)
    CutSet.from_cuts([one_channel]).to_file(tmp_path / "channel.jsonl")
    with pytest.raises(
        ManifestError, match=re.escape("cut 'left' selects channels [1] of a recording with")
    ):
        read_manifest(tmp_path / "channel.jsonl")
    mono = Recording.from_file(write_noise(tmp_path / "mono.wav", 1.0, seed=3)).to_cut()
    CutSet.from_cuts([mono.perturb_speed(1.1)]).to_file(tmp_path / "speed.jsonl")
    with pytest.raises(ManifestError, match=r"cut 'mono_sp1.1' has lhotse audio transforms"):
        read_manifest(tmp_path / "speed.jsonl")
    # Resampling is the one transform allowed: load_audio resamples to 16 kHz anyway.
    CutSet.from_cuts([mono.resample(8000)]).to_file(tmp_path / "resampled.jsonl")
    assert read_manifest(tmp_path / "resampled.jsonl") == [
        Utterance("mono", str(tmp_path / "mono.wav"), "", 0.0, 1.0)
    ]


def test_a_missing_audio_file_fails_only_when_loaded(tmp_path: Path, audio_dir: Path) -> None:
    manifest = write_text(tmp_path / "m.jsonl", jsonl({"audio": "gone.wav", "text": "x"}))
    [utt] = read_manifest(manifest)
    assert utterance_seconds(utt) is None
    missing = re.escape(f"{tmp_path / 'gone.wav'}: audio file not found")
    with pytest.raises(AudioError, match=missing):
        load_wave(utt, max_seconds=30, too_long="error")
    with pytest.raises(AudioError, match=missing):  # a segment of a missing file too
        load_wave(Utterance("s", utt.audio, "", 1.0, 0.5), max_seconds=None, too_long="error")


def test_load_wave_of_a_whole_file_equals_load_audio(audio_dir: Path) -> None:
    utt = Utterance("long", str(audio_dir / "long.wav"), "")
    with pytest.warns(UserWarning, match="keeping the first 2 s"):
        expected = load_audio(utt.audio, max_seconds=2.0, too_long="truncate")
    with pytest.warns(UserWarning, match="keeping the first 2 s"):
        wave = load_wave(utt, max_seconds=2.0, too_long="truncate")
    np.testing.assert_array_equal(wave, expected)
    assert len(wave) == 2 * SAMPLE_RATE


def test_load_wave_of_a_segment_cut_is_the_slice_of_the_file(
    tmp_path: Path, audio_dir: Path
) -> None:
    long = Recording.from_file(audio_dir / "long.wav")
    cut = MonoCut(id="seg", start=2.25, duration=0.5, channel=0, recording=long)
    CutSet.from_cuts([cut]).to_file(tmp_path / "cuts.jsonl.gz")
    [utt] = read_manifest(tmp_path / "cuts.jsonl.gz")
    full = load_audio(audio_dir / "long.wav", max_seconds=None)
    # max_seconds limits the segment, not the 3 s recording it starts 2.25 s into.
    wave = load_wave(utt, max_seconds=1.0, too_long="error")
    assert wave.dtype == np.float32
    np.testing.assert_array_equal(wave, full[36000:44000])  # 2.25 s and 2.75 s at 16 kHz
    assert utterance_seconds(utt) == 0.5


def test_load_wave_applies_the_too_long_policy_to_the_segment(audio_dir: Path) -> None:
    utt = Utterance("seg", str(audio_dir / "long.wav"), "", start=0.5, duration=2.0)
    full = load_audio(utt.audio, max_seconds=None)
    with pytest.raises(
        AudioError, match=re.escape("utterance 'seg' from 0.500 s is 2.00 s, longer than")
    ):
        load_wave(utt, max_seconds=1.5, too_long="error")
    with pytest.warns(UserWarning, match="keeping the first 1.5 s"):
        wave = load_wave(utt, max_seconds=1.5, too_long="truncate")
    np.testing.assert_array_equal(wave, full[8000:32000])


@pytest.mark.parametrize(("start", "duration"), [(2.5, 1.0), (3.5, None), (0.0, 1e-6)])
def test_a_segment_outside_its_file_raises(audio_dir: Path, start, duration) -> None:
    utt = Utterance("seg", str(audio_dir / "long.wav"), "", start=start, duration=duration)
    with pytest.raises(
        AudioError, match=re.escape(f"{utt.audio}: utterance 'seg' spans {start:.3f} s to")
    ):
        load_wave(utt, max_seconds=None, too_long="error")


def timed(**seconds: float | None) -> list[Utterance]:
    """Utterances named by the keywords, with those durations (None: read from a missing file)."""
    return [Utterance(name, f"/nowhere/{name}.wav", "", duration=s) for name, s in seconds.items()]


def names(batches: list[list[Utterance]]) -> list[list[str]]:
    return [[utt.id for utt in batch] for batch in batches]


def test_make_batches_by_count_sorts_longest_first() -> None:
    utts = timed(a=1.0, b=3.0, c=2.0, gone=None, d=3.0, e=0.5)
    assert names(make_batches(utts, batch_size=2)) == [["b", "d"], ["c", "a"], ["e", "gone"]]
    assert names(make_batches(utts, batch_size=10)) == [["b", "d", "c", "a", "e", "gone"]]


def test_make_batches_by_duration_packs_up_to_the_limit() -> None:
    utts = timed(a=1.0, b=3.0, c=2.0, gone=None, d=3.0, e=0.5, huge=7.0)
    # huge is over the limit alone; b + d = 6 s > 5 s; d + c = 5 s fits; a + e + gone = 1.5 s.
    assert names(make_batches(utts, max_duration=5.0)) == [
        ["huge"],
        ["b"],
        ["d", "c"],
        ["a", "e", "gone"],
    ]


def test_make_batches_reads_durations_from_file_headers(audio_dir: Path) -> None:
    utts = [
        Utterance("short", str(audio_dir / "short.wav"), ""),
        Utterance("flac", str(audio_dir / f"{FLAC_ID}.flac"), ""),
        Utterance("long", str(audio_dir / "long.wav"), "", start=1.0),
    ]
    assert [utterance_seconds(u) for u in utts] == [0.5, 1.0, 2.0]
    # 1.0 s + 0.5 s = 1.5 s: "at most max_duration" includes the limit.
    assert names(make_batches(utts, max_duration=1.5)) == [["long"], ["flac", "short"]]
    assert names(make_batches(utts, max_duration=1.4)) == [["long"], ["flac"], ["short"]]


@pytest.mark.parametrize("mode", [{"batch_size": 3}, {"max_duration": 4.0}])
def test_make_batches_is_deterministic_and_complete(mode: dict) -> None:
    rng = random.Random(0)
    utts = [Utterance(f"u{i:02d}", "", "", duration=rng.choice([0.5, 1.0, 2.5])) for i in range(20)]
    batches = make_batches(utts, **mode)
    assert sorted(u.id for batch in batches for u in batch) == sorted(u.id for u in utts)
    for _ in range(3):
        rng.shuffle(utts)
        assert make_batches(utts, **mode) == batches


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of batch_size"),
        ({"batch_size": 2, "max_duration": 3.0}, "give exactly one of batch_size"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"max_duration": 0.0}, "max_duration must be positive seconds, got 0.0"),
    ],
)
def test_make_batches_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_batches(timed(a=1.0), **kwargs)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 3, 5, 7])
def test_shards_partition_the_utterances(world_size: int, count: int) -> None:
    utts = timed(**{f"u{i}": float(i) for i in range(count)})
    shards = [shard(utts, rank, world_size) for rank in range(world_size)]
    ids = [u.id for part in shards for u in part]
    assert sorted(ids) == sorted(u.id for u in utts)  # every utterance, none twice
    assert len(ids) == len(set(ids)) == count
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard(utts, rank, world_size) for rank in range(world_size)]


def test_shard_takes_every_world_size_th_utterance() -> None:
    utts = timed(a=1.0, b=1.0, c=1.0, d=1.0, e=1.0)
    assert [u.id for u in shard(utts, 1, 2)] == ["b", "d"]
    assert [u.id for u in shard(utts, 0, 2)] == ["a", "c", "e"]
    with pytest.raises(ValueError, match=re.escape("rank must be in [0, 2) for world_size 2")):
        shard(utts, 2, 2)
    with pytest.raises(ValueError, match="world_size must be >= 1, got 0"):
        shard(utts, 0, 0)
