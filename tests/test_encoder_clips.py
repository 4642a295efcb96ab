"""Clips, audio reading and the per-segment spectrogram (encoder stage, no dataset needed)."""

import librosa
import numpy as np
import pytest
import soundfile as sf

from encoder.core import clip_utils, io, util
from encoder.core.custom_transforms import (
    AMIN,
    SpectrogramParams,
    clip_spectrogram,
    segment_spectrogram,
    slice_clip,
)

SMALL = SpectrogramParams(sample_rate=4000, n_fft=256, win_length=250, hop_length=250, n_mels=16, fmax=None)


def test_reflect_indices_match_numpy_pad():
    signal = np.arange(5.0)
    padded = np.pad(signal, 3, mode="reflect")
    assert np.array_equal(clip_utils.reflect_span(signal, -3, 11), padded)
    assert np.array_equal(clip_utils.reflect_indices(np.array([-1, 5, 8, 13]), 5), [1, 3, 0, 3])
    assert np.array_equal(clip_utils.reflect_indices(np.array([-2, 0, 3]), 1), [0, 0, 0])


def test_bio_clips_are_centred_and_edge_padded():
    values = np.array([10.0, 11.0, 12.0, 13.0])
    clips = clip_utils.bio_clips(values, 5)
    assert clips.shape == (4, 5)
    assert np.array_equal(clips[0], [10, 10, 10, 11, 12])
    assert np.array_equal(clips[2], [10, 11, 12, 13, 13])
    assert np.array_equal(clips[3], [11, 12, 13, 13, 13])
    assert np.array_equal(clip_utils.bio_clips(values, 3, np.array([1])), [[10, 11, 12]])


def test_audio_clip_span_and_reflect_padding():
    wav = np.arange(20.0)  # 5 steps of 4 samples
    clip = clip_utils.audio_clip(wav, step=0, clip_length=3, step_samples=4)
    assert np.array_equal(clip, [4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7])  # starts one step before the wav
    clip = clip_utils.audio_clip(wav, step=4, clip_length=3, step_samples=4)
    assert np.array_equal(clip, [12, 13, 14, 15, 16, 17, 18, 19, 18, 17, 16, 15])
    assert np.array_equal(clip_utils.audio_clip(wav, 2, 3, 4), np.arange(4.0, 16.0))


def test_fit_length_pads_by_reflection_and_crops_the_centre():
    assert np.array_equal(clip_utils.fit_length(np.arange(10.0), 4), [3, 4, 5, 6])
    assert np.array_equal(clip_utils.fit_length(np.arange(3.0), 6), [1, 0, 1, 2, 1, 0])


def test_spectrogram_params_must_tile_the_step():
    with pytest.raises(ValueError, match="hop_length"):
        SpectrogramParams(sample_rate=16000, hop_length=300)
    assert SpectrogramParams(sample_rate=8000, hop_length=200, fmax=8000.0).fmax == 4000.0
    assert SMALL.frames_per_step == 4 and SMALL.clip_frames(11) == 44


def test_sliced_segment_spectrogram_equals_each_clips_own():
    rng = np.random.default_rng(0)
    params = SpectrogramParams(sample_rate=8000, n_fft=256, win_length=200, hop_length=100, n_mels=24)
    n_steps, clip_length = 9, 5
    wav = rng.standard_normal(n_steps * params.step_samples + 777).astype(np.float32)
    fps = params.frames_per_step
    segment = segment_spectrogram(wav, (n_steps - 1) * fps, clip_length, params)
    half = params.n_fft // 2 // params.hop_length + 1
    for step in range(n_steps):
        own = clip_spectrogram(wav, step * fps, clip_length, params)
        assert np.allclose(slice_clip(segment, step * fps, clip_length, params), own, atol=1e-3)
        # librosa's own spectrogram of the bare clip agrees on the frames whose window stays inside it
        clip = clip_utils.audio_clip(wav, step, clip_length, params.step_samples)
        mel = librosa.feature.melspectrogram(y=clip, sr=params.sample_rate, n_fft=params.n_fft,
                                             hop_length=params.hop_length, win_length=params.win_length,
                                             n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax)
        ref = librosa.power_to_db(mel, ref=1.0, amin=AMIN, top_db=None)[:, : own.shape[1]]
        assert np.allclose(ref[:, half:-half], own[:, half:-half], atol=1e-3)


def _write(path, data, rate):
    sf.write(path, data, rate, subtype="PCM_16")
    return path


def test_read_wav_resamples_and_averages_channels(tmp_path):
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    mono = io.read_wav(_write(tmp_path / "a.wav", tone, 8000), 16000)
    assert mono.dtype == np.float32 and abs(len(mono) - 16000) <= 2
    stereo = io.read_wav(_write(tmp_path / "b.wav", np.stack([tone, -tone], axis=1), 8000), 8000)
    assert np.allclose(stereo, 0.0, atol=1e-4)


def test_bad_wavs_raise_data_error_naming_the_file(tmp_path):
    empty = _write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not a wav at all")
    for path, reason in ((empty, "empty"), (garbage, "unreadable"), (tmp_path / "none.wav", "missing")):
        with pytest.raises(util.DataError, match=reason) as err:
            io.read_wav(path, 16000)
        assert str(path) in str(err.value)
        assert reason in io.check_wav(path)
