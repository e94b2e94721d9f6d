"""Tests for the audio front end: file reading, resampling, Whisper log-mel features, batching."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper

from whisper_llada.data.audio import (
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    as_waveform,
    audio_seconds,
    batch_features,
    load_audio,
    log_mel_spectrogram,
)

TOLERANCE = 1e-5  # the spec's bound against openai-whisper
TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5


def noise_and_tone(seconds: float, seed: int = 0) -> np.ndarray:
    """(N,) float32 at 16 kHz: a 440 Hz tone plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * rng.standard_normal(n)
    return wave.astype(np.float32)


def tone(seconds: float, rate: int) -> np.ndarray:
    """(N,) float32 1 kHz sine at `rate` Hz."""
    t = np.arange(round(seconds * rate)) / rate
    return (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def peak_hz(wave: np.ndarray) -> float:
    """Frequency of the largest FFT bin of a 16 kHz wave."""
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[spectrum.argmax()])


def assert_tone(wave: np.ndarray, seconds: float) -> None:
    """A resampled 1 kHz tone: float32 mono, 16 kHz length, same pitch."""
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - seconds * SAMPLE_RATE) <= 1
    assert abs(peak_hz(wave) - TONE_HZ) <= SAMPLE_RATE / len(wave)  # within one FFT bin


# ---------------------------------------------------------------- log-mel vs openai-whisper


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("padded", [True, False], ids=["padded_30s", "short"])
def test_log_mel_matches_whisper(n_mels: int, padded: bool) -> None:
    wave = noise_and_tone(1.37)  # 21920 samples: not a multiple of the hop
    audio = torch.from_numpy(whisper.pad_or_trim(wave) if padded else wave)
    ours = log_mel_spectrogram(audio, n_mels)
    reference = whisper.log_mel_spectrogram(audio, n_mels)
    assert ours.shape == (n_mels, N_FRAMES if padded else 21920 // 160)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, atol=TOLERANCE, rtol=0)


def test_log_mel_rejects_bad_input() -> None:
    audio = torch.zeros(1000)
    with pytest.raises(ValueError, match=r"n_mels must be one of \(80, 128\).*got 64"):
        log_mel_spectrogram(audio, 64)
    with pytest.raises(ValueError, match=r"shape \(2, 1000\); use batch_features"):
        log_mel_spectrogram(torch.zeros(2, 1000))
    with pytest.raises(ValueError, match="200 samples, fewer than the 201 the STFT needs"):
        log_mel_spectrogram(torch.zeros(200))


# ---------------------------------------------------------------- batch_features


def test_batch_features_pad_to_30s_equals_whisper_per_row() -> None:
    waves = [noise_and_tone(0.5, seed=1), noise_and_tone(2.3, seed=2), noise_and_tone(30.0)]
    mel, mel_lengths = batch_features(waves)
    assert mel.shape == (3, 128, 3000) and mel.dtype == torch.float32
    assert N_SAMPLES == 480000 and N_FRAMES == 3000
    assert mel_lengths.dtype == torch.int64
    assert mel_lengths.tolist() == [3000, 3000, 3000]
    for row, wave in zip(mel, waves, strict=True):
        reference = whisper.log_mel_spectrogram(whisper.pad_or_trim(wave), 128)
        torch.testing.assert_close(row, reference, atol=TOLERANCE, rtol=0)


def test_batch_features_true_length_equals_per_utterance() -> None:
    waves = [noise_and_tone(0.5, seed=1), noise_and_tone(1.2345, seed=2), noise_and_tone(0.3)]
    mel, mel_lengths = batch_features(waves, 80, pad_to_30s=False)
    # 8000 -> 8000 samples, 19752 -> 19840, 4800 -> 4800: next multiple of 320, / 160 frames.
    assert mel_lengths.tolist() == [50, 124, 30]
    assert mel.shape == (3, 80, 124)
    for b, wave in enumerate(waves):
        length = int(mel_lengths[b])
        alone, alone_length = batch_features([wave], 80, pad_to_30s=False)
        assert alone_length.tolist() == [length]
        assert torch.equal(mel[b, :, :length], alone[0])
        padded = torch.nn.functional.pad(torch.from_numpy(wave), (0, length * 160 - len(wave)))
        assert torch.equal(mel[b, :, :length], log_mel_spectrogram(padded, 80))
        torch.testing.assert_close(
            mel[b, :, :length], whisper.log_mel_spectrogram(padded, 80), atol=TOLERANCE, rtol=0
        )
        padding = mel[b, :, length:]
        assert torch.equal(padding, torch.full_like(padding, float(mel[b, :, :length].min())))
    assert mel[0, :, 50:].numel() > 0 and mel[2, :, 30:].numel() > 0  # padding was checked


def test_batch_features_min_seconds_pads_with_silence() -> None:
    wave = noise_and_tone(0.25)
    mel, mel_lengths = batch_features([wave], pad_to_30s=False, min_seconds=1.0)
    assert mel_lengths.tolist() == [100]
    padded = torch.from_numpy(np.pad(wave, (0, SAMPLE_RATE - len(wave))))
    assert torch.equal(mel[0], log_mel_spectrogram(padded))
    long_mel, long_lengths = batch_features([noise_and_tone(1.5)], min_seconds=1.0)
    assert long_lengths.tolist() == [3000] and long_mel.shape == (1, 128, 3000)


def test_batch_features_errors() -> None:
    with pytest.raises(ValueError, match="waves is empty"):
        batch_features([])
    with pytest.raises(ValueError, match=r"waves\[1\] is 30.01 s, longer than the 30 s window"):
        batch_features([noise_and_tone(1.0), np.zeros(N_SAMPLES + 160, np.float32)])
    with pytest.raises(ValueError, match=r"waves\[0\] has shape \(2, 1600\)"):
        batch_features([np.zeros((2, 1600), np.float32)])
    with pytest.raises(ValueError, match=r"waves\[0\] has shape \(0,\)"):
        batch_features([np.zeros(0, np.float32)], pad_to_30s=False)
    with pytest.raises(ValueError, match=r"waves\[0\] has dtype int16"):
        batch_features([np.zeros(1600, np.int16)])


def test_batch_features_true_length_allows_long_audio() -> None:
    mel, mel_lengths = batch_features([np.zeros(N_SAMPLES + 160, np.float32)], pad_to_30s=False)
    assert mel_lengths.tolist() == [3002] and mel.shape == (1, 128, 3002)


# ---------------------------------------------------------------- load_audio: formats


def test_load_audio_16k_float_wav_is_unchanged(tmp_path) -> None:
    wave = noise_and_tone(0.7)
    path = tmp_path / "a.wav"
    sf.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
    loaded = load_audio(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, wave)
    assert audio_seconds(loaded) == 0.7


def test_load_audio_44k_stereo_flac_to_16k_mono(tmp_path) -> None:
    rate, seconds = 44100, 1.5
    left = tone(seconds, rate)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), rate)  # (N, 2)
    wave = load_audio(path)
    assert_tone(wave, seconds)
    # Mean over channels: a tone in one channel only comes back at half its amplitude.
    middle = wave[SAMPLE_RATE // 4 : -SAMPLE_RATE // 4]
    assert np.abs(middle).max() == pytest.approx(TONE_AMPLITUDE / 2, rel=0.01)


def test_load_audio_8k_wav(tmp_path) -> None:
    path = tmp_path / "narrow.wav"
    sf.write(path, tone(2.0, 8000), 8000, subtype="PCM_16")
    assert_tone(load_audio(path), 2.0)


def test_load_audio_ogg(tmp_path) -> None:
    path = tmp_path / "a.ogg"
    sf.write(path, tone(1.0, 22050), 22050, format="OGG", subtype="VORBIS")
    assert_tone(load_audio(path), 1.0)


def test_load_audio_mp3(tmp_path) -> None:
    path = tmp_path / "a.mp3"
    try:
        sf.write(path, tone(1.0, 24000), 24000, format="MP3")
    except (sf.SoundFileError, TypeError, ValueError) as error:
        pytest.skip(f"this libsndfile cannot write mp3: {error}")
    wave = load_audio(path)
    # MP3 adds encoder delay/padding frames, so only the pitch and rough length are exact.
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(audio_seconds(wave) - 1.0) < 0.1
    assert abs(peak_hz(wave) - TONE_HZ) <= 2 * SAMPLE_RATE / len(wave)


# ---------------------------------------------------------------- load_audio: errors


def test_load_audio_missing_file(tmp_path) -> None:
    path = tmp_path / "nowhere.wav"
    with pytest.raises(AudioError, match=re.escape(f"{path}: audio file not found")):
        load_audio(path)


def test_load_audio_directory(tmp_path) -> None:
    with pytest.raises(AudioError, match=re.escape(f"{tmp_path}: not a regular file")):
        load_audio(tmp_path)


def test_load_audio_corrupt_file(tmp_path) -> None:
    path = tmp_path / "x.flac"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(AudioError, match=re.escape(f"{path}: cannot read audio")) as caught:
        load_audio(path)
    assert isinstance(caught.value.__cause__, sf.SoundFileError)
    assert "re-encode" in str(caught.value)


def test_load_audio_empty_wav(tmp_path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=re.escape(f"{path}: audio file is empty (0 samples)")):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_audio_non_finite(tmp_path, bad: float) -> None:
    wave = noise_and_tone(0.1)
    wave[100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=re.escape(f"{path}: audio holds NaN or inf samples")):
        load_audio(path)


@pytest.mark.parametrize("scale", [32768.0, 1e6])
def test_load_audio_float_samples_at_another_scale(tmp_path, scale: float) -> None:
    path = tmp_path / "int16_scale.wav"
    sf.write(
        path,
        noise_and_tone(0.1) / np.abs(noise_and_tone(0.1)).max() * scale,
        SAMPLE_RATE,
        subtype="FLOAT",
    )
    with pytest.raises(
        AudioError, match=re.escape(f"{path}: samples reach ") + r".* outside the \[-1, 1\]"
    ):
        load_audio(path)
    slightly_clipped = tmp_path / "clipped.wav"  # a float file a little past full scale is fine
    sf.write(
        slightly_clipped,
        noise_and_tone(0.1) / np.abs(noise_and_tone(0.1)).max() * 1.2,
        SAMPLE_RATE,
        subtype="FLOAT",
    )
    assert np.abs(load_audio(slightly_clipped)).max() > 1.0


def test_load_audio_too_long_error(tmp_path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, noise_and_tone(1.25), SAMPLE_RATE)
    message = re.escape(f"{path}: audio is 1.25 s, longer than the 0.5 s limit; split the file")
    with pytest.raises(AudioError, match=message):
        load_audio(path, max_seconds=0.5, too_long="error")


def test_load_audio_too_long_truncates_with_warning(tmp_path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, noise_and_tone(1.25), SAMPLE_RATE, subtype="FLOAT")
    full = load_audio(path, max_seconds=None)
    assert len(full) == 20000
    message = re.escape(f"{path}: audio is 1.25 s, longer than the 0.5 s limit; keeping the first")
    with pytest.warns(UserWarning, match=message):
        cut = load_audio(path, max_seconds=0.5)
    assert len(cut) == 8000
    np.testing.assert_array_equal(cut, full[:8000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(path, max_seconds=1.25)) == 20000  # exactly at the limit: no cut


def test_load_audio_default_limit_is_30s(tmp_path) -> None:
    path = tmp_path / "31s.flac"
    sf.write(path, np.zeros(31 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with pytest.warns(
        UserWarning, match=re.escape(f"{path}: audio is 31.00 s, longer than the 30 s")
    ):
        assert len(load_audio(path)) == N_SAMPLES


def test_load_audio_rejects_bad_options(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"too_long must be one of \('truncate', 'error'\)"):
        load_audio(tmp_path / "a.wav", too_long="cut")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_seconds must be positive or None"):
        load_audio(tmp_path / "a.wav", max_seconds=0)


# ---------------------------------------------------------------- waveforms given in memory


def test_a_waveform_is_checked_and_cut_as_its_file_would_be(tmp_path) -> None:
    wave = noise_and_tone(2.5)
    path = tmp_path / "clip.wav"
    sf.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
    for limits in (
        {"max_seconds": None, "too_long": "truncate"},
        {"max_seconds": 30.0, "too_long": "error"},
    ):
        assert np.array_equal(as_waveform(wave, "w", **limits), load_audio(path, **limits))
    with pytest.warns(UserWarning, match=r"^w: audio is 2\.50 s, longer than the 1 s limit"):
        cut = as_waveform(wave, "w", max_seconds=1.0, too_long="truncate")
    with pytest.warns(UserWarning):
        assert np.array_equal(cut, load_audio(path, max_seconds=1.0, too_long="truncate"))
    with pytest.raises(AudioError, match=r"^w: audio is 2\.50 s, longer than the 1 s limit; split"):
        as_waveform(wave, "w", max_seconds=1.0, too_long="error")


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (np.zeros(0), "w: a waveform must be a non-empty (N,) array, got (0,)"),
        (np.zeros((2, 5)), "w: a waveform must be a non-empty (N,) array, got (2, 5)"),
        (np.array([0.1, np.nan]), "w: audio holds NaN or inf samples"),
        (np.array([0.1, 3000.0]), "w: samples reach 3000, far outside the [-1, 1] of float audio"),
    ],
)
def test_a_bad_waveform_is_refused_naming_it(wave, message) -> None:
    with pytest.raises(AudioError, match="^" + re.escape(message)):
        as_waveform(wave, "w", max_seconds=None, too_long="truncate")
