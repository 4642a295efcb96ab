"""Hand-crafted per-segment features (encoder/core/handcrafted.py): values worked out by hand on synthetic
tones, glides and EDA / TEMP series, participant normalisation (offline and causal prefix statistics) on
small tables, and the on-disk speech feature cache."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from encoder.core import handcrafted, util
from encoder.core.handcrafted import EDA_NAMES, SPEECH_NAMES, TEMP_NAMES

REF = handcrafted.DEFAULTS["f0_ref_hz"]
COL = {name: i for i, name in enumerate(SPEECH_NAMES)}
F0_COLUMNS = [COL[n] for n in SPEECH_NAMES if n.startswith("f0_")]
VOICED_SPECTRAL = [COL[n] for n in ("spectral_centroid_hz", "spectral_rolloff_hz", "spectral_flatness",
                                    "alpha_ratio_db", "hammarberg_db")]


def harmonic(phase: np.ndarray, amplitude: float = 0.3, harmonics: int = 4) -> np.ndarray:
    """A voiced-like tone: harmonics 1..n of `phase` (radians) with amplitudes 1/k."""
    tone = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    return amplitude * tone / np.abs(tone).max()


def tone(f0: float, sr: int, seconds: float = 1.5, amplitude: float = 0.3) -> np.ndarray:
    return harmonic(2 * np.pi * f0 * np.arange(int(seconds * sr)) / sr, amplitude)


def speech(audio: np.ndarray, sr: int, **settings: object) -> dict[str, float]:
    return dict(zip(SPEECH_NAMES, handcrafted.speech_features(audio, sr, settings or None), strict=True))


# --------------------------------------------------------------------------- speech


@pytest.mark.parametrize("sr", [16000, 8000])
def test_a_steady_tone_has_its_f0_in_semitones_and_is_voiced_throughout(sr: int) -> None:
    f = speech(tone(200.0, sr), sr)
    assert f["f0_mean_st"] == pytest.approx(12 * np.log2(200 / REF), abs=0.2)  # 34.35 st above 27.5 Hz
    assert f["f0_p50_st"] == pytest.approx(f["f0_mean_st"], abs=0.05)
    assert f["f0_sd_st"] < 0.05 and f["f0_range2080_st"] < 0.05 and abs(f["f0_slope_st_per_s"]) < 0.05
    assert f["voiced_share"] > 0.98 and f["voiced_runs_per_s"] == pytest.approx(1 / 1.5)
    assert f["pauses_per_s"] == 0 and f["duration_s"] == 1.5
    assert np.isfinite(list(f.values())).all()  # the alpha ratio's and Hammarberg's upper bands end at Nyquist


def test_a_tone_at_220_hz_is_1_65_semitones_above_one_at_200_hz() -> None:
    low, high = speech(tone(200.0, 16000), 16000), speech(tone(220.0, 16000), 16000)
    assert high["f0_mean_st"] - low["f0_mean_st"] == pytest.approx(12 * np.log2(1.1), abs=0.05)


def test_a_glide_of_an_octave_over_two_seconds_rises_six_semitones_per_second() -> None:
    sr, seconds = 16000, 2.0
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * 150 * 2 / np.log(2) * (2 ** (t / 2) - 1)  # f(t) = 150 Hz * 2^(t/2): 150 -> 300 Hz
    f = speech(harmonic(phase), sr)
    assert f["f0_slope_st_per_s"] == pytest.approx(6.0, abs=0.1)
    assert f["f0_abs_delta_st_per_s"] == pytest.approx(6.0, abs=0.3)
    assert f["f0_range2080_st"] == pytest.approx(0.6 * 12, abs=0.3)


def test_doubling_the_amplitude_adds_6_02_db_of_loudness() -> None:
    quiet, loud = speech(tone(200.0, 16000, amplitude=0.1), 16000), speech(tone(200.0, 16000, amplitude=0.2), 16000)
    assert loud["loudness_mean_db"] - quiet["loudness_mean_db"] == pytest.approx(20 * np.log10(2), abs=0.01)
    assert loud["loudness_sd_db"] < 0.05 and loud["loudness_range2080_db"] < 0.1
    assert loud["f0_mean_st"] == pytest.approx(quiet["f0_mean_st"], abs=0.01)


def test_pauses_between_voiced_runs_are_counted() -> None:
    sr = 16000
    gap = np.zeros(int(0.3 * sr))
    audio = np.concatenate([tone(200.0, sr, 0.5), gap, tone(200.0, sr, 0.5), gap, tone(200.0, sr, 0.5)])
    f = speech(audio, sr)
    assert f["duration_s"] == pytest.approx(2.1)
    assert f["voiced_runs_per_s"] == pytest.approx(3 / 2.1) and f["pauses_per_s"] == pytest.approx(2 / 2.1)


def test_white_noise_is_not_voiced() -> None:
    f = speech(np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    assert f["voiced_share"] < 0.02


@pytest.mark.parametrize("samples", [0, 1, 100, 16000])
def test_silence_and_very_short_audio_give_documented_nans_and_finite_rest(samples: int) -> None:
    values = handcrafted.speech_features(np.zeros(samples), 16000)
    nan = np.isnan(values)
    assert set(np.flatnonzero(nan)) == set(F0_COLUMNS) | set(VOICED_SPECTRAL)  # no voiced frame to describe
    f = dict(zip(SPEECH_NAMES, values, strict=True))
    assert f["voiced_share"] == 0 and f["loudness_mean_db"] == pytest.approx(-100)
    assert f["duration_s"] == samples / 16000 and f["voiced_runs_per_s"] == 0 and f["pauses_per_s"] == 0
    short = speech(tone(200.0, 16000, seconds=0.02), 16000)  # half a frame of tone, zero-padded to one frame
    assert short["f0_mean_st"] == pytest.approx(12 * np.log2(200 / REF), abs=0.2) and short["f0_sd_st"] == 0
    assert np.isnan(short["f0_slope_st_per_s"]) and np.isnan(short["f0_abs_delta_st_per_s"])  # one voiced frame
    assert short["duration_s"] == 0.02 and np.isfinite(short["loudness_mean_db"])


def test_pyin_gives_the_same_f0_on_a_steady_tone() -> None:
    f = speech(tone(200.0, 8000, seconds=0.6), 8000, f0_method="pyin")
    assert f["f0_mean_st"] == pytest.approx(12 * np.log2(200 / REF), abs=0.2) and f["voiced_share"] > 0.9


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="f0_mni_hz"):
        handcrafted.speech_features(np.zeros(100), 8000, {"f0_mni_hz": 50})


# --------------------------------------------------------------------------- EDA and TEMP


def rows(values: np.ndarray, start: float = 100.0) -> np.ndarray:
    return np.column_stack([start + np.arange(len(values)) / 4.0, values])


def eda(values: np.ndarray) -> dict[str, float]:
    return dict(zip(EDA_NAMES, handcrafted.eda_features(rows(values)), strict=True))


def test_an_eda_ramp_has_its_slope_and_slow_drift_is_no_response() -> None:
    t = np.arange(41) / 4.0  # 10 s at 4 Hz
    f = eda(1.0 + 0.001 * t)  # 0.005 µS in any 5 s: drift, not a response
    assert f["eda_slope"] == pytest.approx(0.001) and f["eda_level"] == pytest.approx(1.005)
    assert f["eda_range"] == pytest.approx(0.01) and f["eda_sd"] == pytest.approx(0.001 * t.std())
    assert f["eda_scr_count"] == 0 and f["eda_scr_max_amp"] == 0


def test_a_planted_response_of_0_1_us_is_counted_once_with_its_size() -> None:
    t = np.arange(49) / 4.0  # 12 s
    rise = np.clip((t - 3.0) / 1.5, 0, 1) * 0.1  # onset at 3 s, peak 0.1 µS at 4.5 s
    decay = np.where(t > 4.5, 0.1 * (1 - np.exp(-(t - 4.5) / 4.0)), 0.0)  # recovery with a 4 s time constant
    noise = np.random.default_rng(0).normal(0, 0.001, len(t))
    f = eda(2.0 + rise - decay + noise)
    assert f["eda_scr_count"] == 1 and f["eda_scr_max_amp"] == pytest.approx(0.1, abs=0.005)
    flat = eda(np.full(40, 2.0) + noise[:40])
    assert flat["eda_scr_count"] == 0 and flat["eda_scr_max_amp"] == 0


def test_two_responses_and_one_still_rising_at_the_end() -> None:
    values = np.array([1.0, 1.0, 1.03, 1.05, 1.04, 1.02, 1.0, 1.0, 1.01, 1.03, 1.08])  # 0.05, then 0.08 rising
    f = eda(values)
    assert f["eda_scr_count"] == 2 and f["eda_scr_max_amp"] == pytest.approx(0.08)


def test_temp_level_slope_sd_and_range_by_hand() -> None:
    f = dict(zip(TEMP_NAMES, handcrafted.temp_features(np.array([[0, 30.0], [1, 30.1], [2, 30.2], [3, 30.3]])),
                 strict=True))
    assert f == pytest.approx({"temp_level": 30.15, "temp_slope": 0.1, "temp_sd": 0.1 * np.sqrt(1.25),
                               "temp_range": 0.3})


def test_no_rows_give_nan_and_one_row_has_no_slope() -> None:
    assert np.isnan(handcrafted.eda_features(np.zeros((0, 2)))).all()
    assert np.isnan(handcrafted.temp_features(np.zeros((0, 2)))).all()
    one = handcrafted.temp_features(np.array([[5.0, 31.0]]))
    assert np.isnan(one[1]) and one[0] == 31.0 and one[2] == 0 and one[3] == 0


# --------------------------------------------------------------------------- participant normalisation


def test_participant_normalise_by_hand() -> None:
    values = np.array([[1.0, 7.0, 2.0], [3.0, 7.0, np.nan], [10.0, 2.0, 0.0], [5.0, 7.0, 4.0], [20.0, 4.0, 0.0]])
    keys = [(1, "A"), (1, "A"), (1, "B"), (1, "A"), (1, "B")]
    z = np.sqrt(1.5)  # A's first column 1, 3, 5: mean 3, sd sqrt(8/3); (5 - 3) / sqrt(8/3) = sqrt(1.5)
    expected = np.array([[-z, 0, -1], [0, 0, 0], [-1, -1, 0], [z, 0, 1], [1, 1, 0]])
    # A's second column is constant (centred: 0); its NaN is left out (2, 4: mean 3, sd 1) and becomes 0;
    # B's third column is constant
    assert handcrafted.participant_normalise(values, keys) == pytest.approx(expected)


def test_causal_normalisation_uses_prefix_statistics_with_ties() -> None:
    values = np.array([[5.0], [1.0], [3.0], [9.0]])
    keys = ["A", "A", "A", "B"]
    starts = [20.0, 0.0, 10.0, 0.0]  # A in time order: 1, 3, 5
    out = handcrafted.participant_normalise(values, keys, starts, causal=True)
    # 1: alone -> 0; 3: over {1, 3}, mean 2, sd 1 -> 1; 5: over {1, 3, 5} -> sqrt(1.5); B's first row -> 0
    assert out[:, 0] == pytest.approx([np.sqrt(1.5), 0.0, 1.0, 0.0])
    tied = handcrafted.participant_normalise(values, keys, [10.0, 0.0, 10.0, 0.0], causal=True)
    assert tied[:, 0] == pytest.approx([np.sqrt(1.5), 0.0, 0.0, 0.0])  # 3 and 5 start together: both see all three
    offline = handcrafted.participant_normalise(values, keys, starts)  # causal=False ignores the starts
    assert offline[:, 0] == pytest.approx([np.sqrt(1.5), -np.sqrt(1.5), 0.0, 0.0])


def test_causal_normalisation_of_a_large_constant_stays_zero() -> None:
    values = np.full((5, 1), 33.27)  # a TEMP level: no float noise may be divided by a tiny sd
    out = handcrafted.participant_normalise(values, ["A"] * 5, [0, 1, 2, 3, 4], causal=True)
    assert (out == 0).all()
    with pytest.raises(ValueError, match="starts"):
        handcrafted.participant_normalise(values, ["A"] * 5, causal=True)


# --------------------------------------------------------------------------- cache and tables


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "Sess01_script01_User001F_001.wav"
    sf.write(path, tone(200.0, 8000, seconds=0.5), 8000, subtype="PCM_16")
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts speech_features computations."""
    counted: list[int] = []
    original = handcrafted.speech_features

    def counting(audio: np.ndarray, sr: int, settings: dict | None = None) -> np.ndarray:
        counted.append(sr)
        return original(audio, sr, settings)

    monkeypatch.setattr(handcrafted, "speech_features", counting)
    return counted


def test_the_cache_reads_its_file_instead_of_recomputing(tmp_path: Path, wav: Path, calls: list[int]) -> None:
    first = handcrafted.FeatureCache(tmp_path / "cache").speech(wav)
    files = list((tmp_path / "cache").rglob("*"))
    expected = tmp_path / "cache" / handcrafted.digest(None) / f"{hashlib.sha256(wav.read_bytes()).hexdigest()}.npy"
    assert [f for f in files if f.is_file()] == [expected] and calls == [8000]
    again = handcrafted.FeatureCache(tmp_path / "cache").speech(wav)  # a new cache: from disk
    assert calls == [8000] and np.array_equal(first, again, equal_nan=True)
    other = handcrafted.FeatureCache(tmp_path / "cache", {"hop_s": 0.02})
    assert other.folder != expected.parent
    other.speech(wav)
    assert len(calls) == 2 and (other.folder / expected.name).is_file()


def test_a_corrupt_cache_file_is_recomputed(tmp_path: Path, wav: Path, calls: list[int]) -> None:
    cache = handcrafted.FeatureCache(tmp_path / "cache")
    values = cache.speech(wav)
    path = next(cache.folder.glob("*.npy"))
    path.write_bytes(b"\x93NUMPY half a file")
    assert np.array_equal(handcrafted.FeatureCache(tmp_path / "cache").speech(wav), values, equal_nan=True)
    assert len(calls) == 2 and np.array_equal(np.load(path), values, equal_nan=True)
    assert sorted(p.name for p in cache.folder.iterdir()) == [path.name]  # no temporary file left behind


def test_a_memory_cache_writes_nothing_and_a_bad_wav_is_named(tmp_path: Path, wav: Path, calls: list[int]) -> None:
    cache = handcrafted.FeatureCache(None)
    cache.speech(wav)
    cache.speech(wav)
    assert calls == [8000] and sorted(tmp_path.iterdir()) == [wav]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    with pytest.raises(util.DataError, match="broken.wav"):
        cache.speech(broken)


def test_segment_features_concatenate_the_groups_in_the_order_given(wav: Path) -> None:
    segment = SimpleNamespace(wav=wav, rows={"eda": rows(np.linspace(1.0, 1.1, 12)), "temp": rows(np.full(12, 32.0))})
    cache = handcrafted.FeatureCache(None)
    table = handcrafted.segment_features([segment, segment], cache, ("temp", "audio", "eda"), progress=False)
    assert handcrafted.column_names(("temp", "audio", "eda")) == [*TEMP_NAMES, *SPEECH_NAMES, *EDA_NAMES]
    assert table.shape == (2, len(TEMP_NAMES) + len(SPEECH_NAMES) + len(EDA_NAMES))
    assert table[0, 0] == 32.0 and table[0, len(TEMP_NAMES) + COL["duration_s"]] == 0.5
    assert table[1, -5] == pytest.approx(0.1 / 2.75)  # the EDA slope: 0.1 µS over 11 steps of 0.25 s
    with pytest.raises(ValueError, match="prosody"):
        handcrafted.column_names(("prosody",))
