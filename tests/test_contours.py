"""Contour rows (encoder/core/contours.py, STE_inputs["contour"]): pitch the encoder can see. A tone's F0
in semitones, the +9% the log-mel hides, silence and noise unvoiced; the rows follow the log-mel's frame
convention; NaN (unvoiced F0) is no value in every statistic; the audio stream reads the rows with a 1-D
ResNet18. A checkpoint carrying the option to extraction and online embedding, and causal inputs equal to the
online embedder's, are tests/test_participant.py's, with the other input options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.core import contours, frames, participant, util
from encoder.core.custom_transforms import (
    Normalization,
    SpecAugment,
    SpectrogramParams,
    clip_spectrogram,
    mean_std,
    segment_spectrogram,
)
from encoder.core.dataset import load_segments
from encoder.core.models import STEncoder, inference_model
from encoder.core.participant import InputOptions, Moments

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO = SpectrogramParams(sample_rate=8000, n_fft=256, win_length=200, hop_length=200, n_mels=32, fmax=4000.0,
                         contour=True)
UNIT = Normalization.unit(("eda", "temp"))


def tone(f0: float, sr: int, seconds: float = 2.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


@pytest.mark.parametrize(("f0", "sr"), [(118.0, 8000), (205.0, 8000), (200.0, 16000), (220.0, 16000)])
def test_a_tone_has_its_f0_in_semitones_full_periodicity_and_its_loudness(f0: float, sr: int) -> None:
    rows = contours.contour_frames(tone(f0, sr), 0, 60, sr // 100, sr)[:, 2:-2]  # the two ends read a reflection
    assert rows.shape == (3, 56)
    np.testing.assert_allclose(rows[0], 12 * np.log2(f0 / 27.5), atol=0.2)  # 118 Hz: 25.22 st; YIN within 1%
    assert rows[1].min() > 0.99
    np.testing.assert_allclose(rows[2], 10 * np.log10(0.3**2 / 2), atol=0.2)  # -13.47 dB; part-periods in a window


def test_nine_percent_of_pitch_is_one_and_a_half_semitones() -> None:
    """The shift issue 35 measured at 0.24 dB of the demo's mean log-mel profile is 1.49 st in the F0 row."""
    low, high = (np.nanmedian(contours.contour_frames(tone(f, 8000), 0, 60, 200, 8000)[0])
                 for f in (118.0, 118.0 * 1.09))
    assert high - low == pytest.approx(12 * np.log2(1.09), abs=0.1)


def test_silence_and_noise_are_unvoiced() -> None:
    silent = contours.contour_frames(np.zeros(16000, np.float32), 0, 40, 200, 8000)
    assert np.isnan(silent[0]).all() and (silent[1] == 0).all() and (silent[2] == -100).all()
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    assert np.isnan(contours.contour_frames(noise, 0, 40, 200, 8000)[0]).all()
    quiet = tone(150.0, 8000, amplitude=1e-4)  # -83 dB: under MIN_DB, silence with a hum
    assert np.isnan(contours.contour_frames(quiet, 0, 40, 200, 8000)[0]).all()


def test_the_rows_follow_the_log_mels_frame_convention() -> None:
    """A clip's rows are its segment's columns, as the log-mel's are: one pass per segment serves every node."""
    wav = np.concatenate([tone(130.0, 8000, 1.0), np.zeros(4000, np.float32), tone(180.0, 8000, 1.5)])
    segment = segment_spectrogram(wav, 100, 11, DEMO)
    assert segment.shape[0] == DEMO.n_rows == 35
    for offset in (0, 37, 100):
        clip = clip_spectrogram(wav, offset, 11, DEMO)
        np.testing.assert_array_equal(clip, segment[:, offset : offset + DEMO.clip_frames(11)])
    plain = replace(DEMO, contour=False)
    np.testing.assert_array_equal(segment[:32], segment_spectrogram(wav, 100, 11, plain))
    assert np.isnan(segment[32]).any() and np.isfinite(segment[32]).any()


def test_params_record_the_option_only_when_on() -> None:
    plain = replace(DEMO, contour=False)
    assert "contour" not in plain.to_dict() and plain.n_rows == 32  # records from before the option stay equal
    assert DEMO.to_dict()["contour"] is True and SpectrogramParams.from_dict(DEMO.to_dict()) == DEMO
    assert SpectrogramParams.from_dict(plain.to_dict()).contour is False


def test_nan_is_no_value_in_every_statistic() -> None:
    moments = Moments(2)
    moments.add(np.array([[1.0, np.nan], [3.0, 4.0]]))
    moments.add(np.array([[np.nan, np.nan]]))
    mean, std = moments.mean_std(floor=0.5)
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(std, [1.0, 0.5])  # one value: sd 0, floored
    empty = Moments(1)
    empty.add(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="no value"):
        empty.mean_std(floor=1.0)
    assert mean_std([np.array([1.0, np.nan]), np.array([3.0])]) == pytest.approx((2.0, 1.0))
    assert mean_std([np.array([1.0, 3.0])]) == (2.0, 1.0)  # without NaN: as before


def test_an_unvoiced_frame_reads_as_the_mean_once_normalised(session: list) -> None:
    spec = np.array([[1.0, 2.0], [np.nan, 5.0]], dtype=np.float32)
    out = participant.audio_input(session[0], spec, Normalization(1.0, 2.0), InputOptions(11))
    np.testing.assert_allclose(out, [[0.0, 0.5], [0.0, 2.0]])


def test_contour_norm_standardises_the_contour_rows_alone(session: list) -> None:
    """Two mel bands and three contour rows: the participant's statistics reach the contour rows only; the
    training-set normalisation (mean 1, sd 2) then applies to every row, as without the option."""
    spec = np.array([[3.0, 5.0], [7.0, 9.0], [30.0, np.nan], [0.5, 1.0], [-20.0, -10.0]], dtype=np.float32)
    seg = replace(session[0], participant=participant.ParticipantStats(
        {"eda": (0.0, 1.0), "temp": (0.0, 1.0)}, mel_mean=np.array([100.0, 100.0, 28.0, 0.5, -15.0]),
        mel_std=np.array([10.0, 10.0, 2.0, 1.0, 5.0])))
    norm = Normalization(1.0, 2.0)
    out = participant.audio_input(seg, spec, norm, InputOptions(11, contour_norm=True))
    np.testing.assert_allclose(out[:2], [[1.0, 2.0], [3.0, 4.0]])  # (x - 1) / 2, no participant step
    np.testing.assert_allclose(out[2:], [[0.0, 0.0], [-0.5, -0.25], [-1.0, 0.0]])  # ((x - m) / s - 1) / 2; NaN → 0
    both = participant.audio_input(seg, spec, norm, InputOptions(11, participant_norm=True))
    np.testing.assert_allclose(both[:2], [[-5.35, -5.25], [-5.15, -5.05]], rtol=1e-6)  # ((x - 100) / 10 - 1) / 2
    assert InputOptions(11, contour_norm=True).signature()["contour_norm"] is True
    assert "contour_norm" not in InputOptions(11).signature()  # records from before the option stay equal
    assert InputOptions.from_inputs({"clip_length": 11, "contour_norm": True}).audio_statistics


def test_frequency_masks_leave_the_contour_rows() -> None:
    masks = SpecAugment(freq_masks=4, freq_width=32)
    spec = np.ones((35, 44), dtype=np.float32)
    for seed in range(20):
        masked = masks(spec, np.random.default_rng(seed), bands=32)
        assert (masked[32:] == 1).all()
    assert any((masks(spec, np.random.default_rng(s))[32:] == 0).any() for s in range(20))  # without bands: all rows


def test_the_audio_stream_reads_the_rows_with_a_one_dimensional_resnet() -> None:
    torch.manual_seed(0)
    model = STEncoder(contour_channels=3).eval()
    assert model.contour.stem[0].in_channels == 3
    clips = torch.randn(4, 1, 35, 44)
    out = model(clips, {"eda": torch.randn(4, 1, 11), "temp": torch.randn(4, 1, 11)})
    assert out.embedding.shape == (4, 1536) and out.fused.shape == (4, 7)
    moved = clips.clone()
    moved[:, :, 32:] += 1.0  # the contour rows alone change the audio vector
    bio = {"eda": torch.zeros(4, 1, 11), "temp": torch.zeros(4, 1, 11)}
    assert not torch.allclose(model(moved, bio).embedding[:, :512], model(clips, bio).embedding[:, :512])
    folded = inference_model(model)
    with torch.no_grad():
        np.testing.assert_allclose(folded(clips, bio).embedding.numpy(), model(clips, bio).embedding.numpy(),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="per-clip"):
        STEncoder(contour_channels=3, audio_pass="segment")


def test_run_pipeline_names_the_option_and_refuses_it_with_the_segment_pass() -> None:
    from encoder.core import config
    from temporal_gnn import pipeline_run

    settings, tags = pipeline_run.with_input_options(config.DEMO, pipeline_run.parse_args(["--contour"]))
    assert tags == ["contour"] and settings["STE_inputs"]["contour"] is True
    with pytest.raises(util.DataError, match="--contour needs the per-clip audio pass"):
        pipeline_run.check_inputs(pipeline_run.parse_args(["--contour", "--audio_pass", "segment"]))
    with pytest.raises(util.DataError, match="--contour_norm .* needs --contour"):
        pipeline_run.check_inputs(pipeline_run.parse_args(["--contour_norm"]))
    _, tags = pipeline_run.with_input_options(config.DEMO, pipeline_run.parse_args(["--contour", "--contour_norm"]))
    assert tags == ["contour", "cnorm"]


@pytest.fixture(scope="module")
def session(tiny_root: Path) -> list:
    table = load_segments(frames.load_frames(tiny_root), tiny_root, {"x": (1,)}, wanted=("x",))
    return table.by_split["x"]
