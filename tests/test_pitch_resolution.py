"""Pitch the encoder can see (issue 35): a spectrogram window and mel grid that resolve a voice's F0
harmonics are STE_inputs settings alone. Overlapping (hop < window) and 64 ms windows keep the frame
convention, and on a harmonic tone of known F0 such a spectrogram resolves the harmonics and moves them
with a semitone where the demo's (8 kHz, 25 ms window without overlap, 32 mels) does not."""

import numpy as np
import pytest

from encoder.core.custom_transforms import SpectrogramParams, clip_spectrogram, log_mel_frames, segment_spectrogram

DEMO = SpectrogramParams(sample_rate=8000, n_fft=256, win_length=200, hop_length=200, n_mels=32, fmax=4000.0)
# 64 ms window every 10 ms, 64 mels: 15.6 Hz FFT bins, mel bands narrower than half a male F0 below 1 kHz
PITCH = SpectrogramParams(sample_rate=8000, n_fft=512, win_length=512, hop_length=80, n_mels=64, fmax=4000.0)
SEMITONE = 2 ** (1 / 12)
MALE_F0 = 100 * SEMITONE ** np.arange(8)  # 100 to 150 Hz


def harmonic_tone(f0: float, sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    """Every harmonic of `f0` up to Nyquist, the k-th at amplitude 1/k (a sawtooth-like glottal source)."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    harmonics = np.arange(1, int(sample_rate / 2 / f0) + 1)
    return (0.1 * (np.sin(2 * np.pi * np.outer(harmonics, t) * f0) / harmonics[:, None]).sum(axis=0)).astype(
        np.float32)


def profile(f0: float, params: SpectrogramParams) -> np.ndarray:
    """The tone's mean log-mel profile (dB per band), frames clear of its edges."""
    wav = harmonic_tone(f0, params.sample_rate)
    frames = (len(wav) - 2 * params.n_fft) // params.hop_length
    return log_mel_frames(wav, params.n_fft, frames, params).mean(axis=1).astype(np.float64)


def harmonic_peaks(bands: np.ndarray, prominence_db: float = 3.0) -> list[int]:
    """Bands above both neighbours by `prominence_db` over the lower one: harmonics the mel grid resolves."""
    return [i for i in range(1, len(bands) - 1) if bands[i] > max(bands[i - 1], bands[i + 1])
            and bands[i] - min(bands[i - 1], bands[i + 1]) > prominence_db]


def test_overlapping_and_long_windows_keep_the_frame_convention():
    wav = np.random.default_rng(0).normal(size=8000 * 3).astype(np.float32)
    for params in (PITCH, SpectrogramParams(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160)):
        assert params.win_length > params.hop_length and params.win_length / params.sample_rate == 0.064
        whole = segment_spectrogram(wav, 20 * params.frames_per_step, 11, params)
        offset = 7 * params.frames_per_step
        clip = clip_spectrogram(wav, offset, 11, params)
        assert clip.shape == (params.n_mels, 11 * params.frames_per_step)
        assert np.allclose(clip, whole[:, offset : offset + clip.shape[1]], atol=1e-3)


@pytest.mark.parametrize("f0", MALE_F0)
def test_a_64_ms_window_and_64_mels_resolve_male_harmonics_and_follow_a_semitone(f0):
    low, high = profile(f0, PITCH), profile(f0 * SEMITONE, PITCH)
    assert len(harmonic_peaks(low)) >= 10
    assert harmonic_peaks(low) != harmonic_peaks(high)  # the resolved harmonics move with F0
    assert np.abs(high - low).mean() > 4.0  # dB


@pytest.mark.parametrize("f0", MALE_F0[:3])
def test_the_demo_spectrogram_does_not_resolve_a_low_male_voice(f0):
    low, high = profile(f0, DEMO), profile(f0 * SEMITONE, DEMO)
    assert harmonic_peaks(low) == []
    assert np.abs(high - low).mean() < 1.0  # dB
