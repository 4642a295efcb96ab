"""Per-segment hand-crafted features: an eGeMAPS-like speech set and EDA / TEMP statistics.

They feed the classical system (participant-normalised, then standardised into a class-balanced logistic
regression, fitted elsewhere) and the `prosody` node block. Computed with librosa, NumPy and SciPy only
(no openSMILE, parselmouth or GPL code), at the wav's own sample rate: real KEMDy20 is 16 kHz, so the
spectral features of an 8 kHz file (upper bands capped at Nyquist) are not comparable with a 16 kHz one.

Speech (SPEECH_NAMES, 59 columns). Frames of `frame_s` (40 ms) every `hop_s` (10 ms), not centred (frame i
covers samples [i*hop, i*hop + frame), its time is its middle); audio shorter than one frame is zero-padded
to one frame.
* F0 by YIN (librosa.yin, `f0_min_hz`..`f0_max_hz`) in semitones above `f0_ref_hz` (27.5 Hz), over voiced
  frames only: mean, sd, 20/50/80th percentiles, 80-20 range, least-squares slope over the voiced frames'
  times (st/s) and the mean absolute change between adjacent frames that are both voiced (st/s, so the hop
  does not matter). librosa.yin has no voicing output, so a frame is voiced when its normalised
  autocorrelation at the YIN period is at least `voicing_min_periodicity` AND its RMS is within
  `voicing_db_below_max` dB of the segment's loudest frame. `f0_method` "pyin" uses librosa.pyin's
  voiced flag instead of the periodicity test (with the same energy test); it costs 7x as much.
* voiced share (of frames), voiced runs per second, pauses per second (unvoiced runs of at least
  `min_pause_s` between two voiced runs; leading and trailing silence is not a pause), duration (s).
* loudness: frame RMS in dB (power floored at `power_floor`, so digital silence is -100 dB) over all
  frames: mean, sd, 80-20 percentile range (a max-min range would measure the pauses' floor).
* MFCC 1-13 (c0, the energy term, left out: loudness covers it; `n_mels` mel bands up to Nyquist, dB with
  no segment-relative clipping), over all frames: mean and sd of each, and sd of its delta (librosa's
  9-frame regression).
* over voiced frames: spectral centroid (Hz), 85% roll-off (Hz), flatness, alpha ratio (power 50-1000 Hz
  over 1-5 kHz, dB) and Hammarberg index (strongest bin 0-2 kHz over strongest bin 2-5 kHz, dB), each
  per frame and then averaged; the upper bands end at Nyquist (4 kHz for an 8 kHz wav).
A statistic with nothing to describe is NaN, never an invented number: F0 statistics and the voiced-frame
spectral features without a voiced frame, the slope without two voiced frames, the mean absolute change
without two adjacent voiced frames. participant_normalise turns a NaN into 0 (the participant's mean);
a raw model must impute. Silence, a single sample or an empty array give such NaNs and finite rest.

EDA (µS) and TEMP (°C) rows (seconds, value): level (mean), least-squares slope per second, sd, range;
EDA also the count of skin-conductance responses in the segment and the largest one's amplitude (0 when
none). An SCR is an upward swing of at least `scr_min_amp` µS: a trough-to-peak rise, the trough being
the lowest value within `scr_max_rise_s` before the peak (a slower rise is tonic drift, not a response),
ended by a fall of at least `scr_min_amp`; a rise still going at the segment's end counts. No rows: all
NaN; one row: slope NaN.

Cost (speech; EDA and TEMP are negligible), CPU time on one core of this project's 2-core VM with BLAS on
one thread, over 60 demo wavs (348 s of 16 kHz audio), other jobs running: about 5 ms per second of 16 kHz
audio (2.3 ms at 8 kHz), half of it YIN and the periodicity test. The demo's 490 segments (2880 s) take
about 15 s, full KEMDy20 (~13.5k segments of ~6 s) about 7 min, once: FeatureCache keeps the result.
pyin, even coarse (20 thresholds, 0.2 st resolution), cost 36 ms per second, 7x, hence yin by default.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf
from tqdm import tqdm

from encoder.core import config, util

FORMAT = "handcrafted-1"  # bump when a feature's computation changes: it is part of the cache's digest

DEFAULTS: dict[str, Any] = config.HANDCRAFTED  # the settings (config.py's section, commented there)

MFCCS = range(1, 14)  # c1..c13 (n_mfcc 13; c0 left out)
SPEECH_NAMES: tuple[str, ...] = (
    "f0_mean_st", "f0_sd_st", "f0_p20_st", "f0_p50_st", "f0_p80_st", "f0_range2080_st", "f0_slope_st_per_s",
    "f0_abs_delta_st_per_s", "voiced_share", "loudness_mean_db", "loudness_sd_db", "loudness_range2080_db",
    *(f"mfcc{k}_mean" for k in MFCCS), *(f"mfcc{k}_sd" for k in MFCCS), *(f"mfcc{k}_delta_sd" for k in MFCCS),
    "spectral_centroid_hz", "spectral_rolloff_hz", "spectral_flatness", "alpha_ratio_db", "hammarberg_db",
    "voiced_runs_per_s", "pauses_per_s", "duration_s",
)
EDA_NAMES: tuple[str, ...] = ("eda_level", "eda_slope", "eda_sd", "eda_range", "eda_scr_count", "eda_scr_max_amp")
TEMP_NAMES: tuple[str, ...] = ("temp_level", "temp_slope", "temp_sd", "temp_range")
GROUPS: dict[str, tuple[str, ...]] = {"audio": SPEECH_NAMES, "eda": EDA_NAMES, "temp": TEMP_NAMES}
SD_FLOOR = 1e-9  # participant_normalise: an sd at most this (relative to 1 + |mean|) is a constant column


def resolve(settings: dict | None) -> dict[str, Any]:
    """DEFAULTS updated by `settings`; an unknown key (a typo) raises ValueError."""
    unknown = sorted(set(settings or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown hand-crafted feature settings: {unknown}")
    resolved = {**DEFAULTS, **(settings or {})}
    if resolved["n_mfcc"] != len(MFCCS):
        raise ValueError(f"n_mfcc {resolved['n_mfcc']}: SPEECH_NAMES has {len(MFCCS)} MFCCs")
    return resolved


def digest(settings: dict | None) -> str:
    """First 16 hex digits of sha256 over the resolved settings (sorted JSON) and FORMAT."""
    text = json.dumps(resolve(settings), sort_keys=True) + FORMAT
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- speech


def _slope(times: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope per second; NaN for fewer than two points or no time spread."""
    if len(values) < 2:
        return float("nan")
    t = times - times.mean()
    spread = float((t * t).sum())
    return float((t * (values - values.mean())).sum() / spread) if spread > 0 else float("nan")


def _runs(mask: np.ndarray) -> list[tuple[bool, int]]:
    """(value, length) of each run of equal values in a boolean array."""
    if len(mask) == 0:
        return []
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [len(mask)]])
    return [(bool(mask[a]), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def periodicity(frames: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of each frame (n, L) at its period (samples, fractional: the larger of
    the two neighbouring integer lags); 0 where the frame is silent."""
    n, length = frames.shape
    acf = np.fft.irfft(np.abs(np.fft.rfft(frames, n=2 * length, axis=1)) ** 2, axis=1)[:, :length]
    energy = np.concatenate([np.zeros((n, 1)), np.cumsum(frames ** 2, axis=1)], axis=1)  # energy[:, j] = sum x[:j]
    best = np.zeros(n)
    for lag in (np.floor(period), np.ceil(period)):
        lag = np.clip(lag.astype(int), 1, length - 1)
        rows = np.arange(n)
        head = energy[rows, length - lag]  # sum of x[:L - lag]^2
        tail = energy[rows, length] - energy[rows, lag]  # sum of x[lag:]^2
        denom = np.sqrt(head * tail)
        value = np.divide(acf[rows, lag], denom, out=np.zeros(n), where=denom > 0)
        best = np.maximum(best, value)
    return best


def _band_power(power: np.ndarray, freqs: np.ndarray, band: Sequence[float], reduce: str) -> np.ndarray:
    """Sum (or max) of the power spectrum (bins, frames) over [lo, hi) Hz per frame, hi capped at Nyquist."""
    inside = (freqs >= band[0]) & (freqs < min(band[1], freqs[-1] + 1e-9))
    if not inside.any():
        return np.full(power.shape[1], np.nan)
    part = power[inside]
    return part.sum(axis=0) if reduce == "sum" else part.max(axis=0)


def speech_features(audio: np.ndarray, sr: int, settings: dict | None = None) -> np.ndarray:
    """SPEECH_NAMES of mono float audio at `sr` Hz (see the module docstring), float64."""
    s = resolve(settings)
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    duration = len(audio) / sr
    frame, hop = int(round(s["frame_s"] * sr)), max(1, int(round(s["hop_s"] * sr)))
    hop_s = hop / sr  # the hop actually used (hop_s rounded to samples)
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    audio = np.nan_to_num(audio)
    frames = librosa.util.frame(audio, frame_length=frame, hop_length=hop, axis=0)  # (n, frame)
    n = len(frames)
    times = (np.arange(n) * hop + frame / 2) / sr

    power_mean = (frames ** 2).mean(axis=1)
    loud = 10 * np.log10(np.maximum(power_mean, s["power_floor"]))
    energetic = loud >= loud.max() - s["voicing_db_below_max"]
    fmin, fmax = s["f0_min_hz"], min(s["f0_max_hz"], sr / 2 * 0.95)
    if s["f0_method"] == "yin":
        f0 = librosa.yin(audio, fmin=fmin, fmax=fmax, sr=sr, frame_length=frame, hop_length=hop, center=False,
                         trough_threshold=s["yin_trough_threshold"])[:n]
        periodic = periodicity(frames, sr / f0) >= s["voicing_min_periodicity"]
    elif s["f0_method"] == "pyin":
        f0, periodic, _ = librosa.pyin(audio, fmin=fmin, fmax=fmax, sr=sr, frame_length=frame, hop_length=hop,
                                       center=False, n_thresholds=20, resolution=0.2)
        f0, periodic = f0[:n], periodic[:n]
    else:
        raise ValueError(f"unknown f0_method {s['f0_method']!r} (yin or pyin)")
    voiced = energetic & periodic & (power_mean > s["power_floor"]) & np.isfinite(f0)
    semitones = 12 * np.log2(np.where(voiced, f0, s["f0_ref_hz"]) / s["f0_ref_hz"])
    st = semitones[voiced]
    nan = float("nan")
    if len(st):
        p20, p50, p80 = np.percentile(st, [20, 50, 80])
        f0_stats = [st.mean(), st.std(), p20, p50, p80, p80 - p20]
    else:
        f0_stats = [nan] * 6
    pairs = voiced[1:] & voiced[:-1]
    abs_delta = float(np.abs(np.diff(semitones))[pairs].mean() / hop_s) if pairs.any() else nan
    f0_stats += [_slope(times[voiced], st), abs_delta]

    runs = _runs(voiced)
    per_s = 1.0 / max(duration, hop_s)
    voiced_runs = sum(1 for v, _ in runs if v)
    min_pause = int(np.ceil(s["min_pause_s"] / hop_s - 1e-9))
    pauses = sum(1 for k, (v, length) in enumerate(runs) if not v and 0 < k < len(runs) - 1 and length >= min_pause)
    p20, p80 = np.percentile(loud, [20, 80])

    window = librosa.filters.get_window("hann", frame, fftbins=True)
    power = np.abs(np.fft.rfft(frames * window, axis=1)).T ** 2  # (bins, n)
    freqs = np.fft.rfftfreq(frame, 1.0 / sr)
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_fft=frame, n_mels=s["n_mels"], fmax=sr / 2)
    mel_db = librosa.power_to_db(mel, ref=1.0, amin=s["power_floor"], top_db=None)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=s["n_mfcc"] + 1)[1:]
    delta = librosa.feature.delta(mfcc, width=9, mode="interp" if n >= 9 else "nearest", axis=1)

    spectral = [nan] * 5
    if voiced.any():
        vp = power[:, voiced]
        mag = np.sqrt(vp)
        total = mag.sum(axis=0)
        centroid = np.divide((mag * freqs[:, None]).sum(axis=0), total, out=np.full(len(total), nan), where=total > 0)
        cum = np.cumsum(vp, axis=0)
        rolloff = freqs[np.argmax(cum >= s["rolloff_share"] * cum[-1:], axis=0)]
        floor = s["power_floor"]
        flatness = np.exp(np.log(vp + floor).mean(axis=0)) / (vp.mean(axis=0) + floor)
        alpha = 10 * np.log10((_band_power(vp, freqs, s["alpha_bands_hz"][0], "sum") + floor)
                              / (_band_power(vp, freqs, s["alpha_bands_hz"][1], "sum") + floor))
        hammarberg = 10 * np.log10((_band_power(vp, freqs, s["hammarberg_bands_hz"][0], "max") + floor)
                                   / (_band_power(vp, freqs, s["hammarberg_bands_hz"][1], "max") + floor))
        spectral = [float(np.nanmean(v)) if np.isfinite(v).any() else nan
                    for v in (centroid, rolloff, flatness, alpha, hammarberg)]

    values = [*f0_stats, voiced.mean(), loud.mean(), loud.std(), p80 - p20,
              *mfcc.mean(axis=1), *mfcc.std(axis=1), *delta.std(axis=1), *spectral,
              voiced_runs * per_s, pauses * per_s, duration]
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------- EDA and TEMP


def _series_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(times, values, [level, slope, sd, range]) of (seconds, value) rows; NaN where undefined."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    t, x = rows[:, 0], rows[:, 1]
    if len(x) == 0:
        return t, x, [float("nan")] * 4
    return t, x, [float(x.mean()), _slope(t, x), float(x.std()), float(np.ptp(x))]


def scr_amplitudes(times: np.ndarray, values: np.ndarray, min_amp: float, max_rise_s: float) -> list[float]:
    """Amplitude of each skin-conductance response (see the module docstring) in one EDA series."""
    swings, trough, peak = [], 0, None
    for i in range(1, len(values)):
        if peak is None:
            if values[i] < values[trough]:
                trough = i
            elif values[i] - values[trough] >= min_amp:
                peak = i
        elif values[i] > values[peak]:
            peak = i
        elif values[peak] - values[i] >= min_amp:
            swings.append((trough, peak))
            trough, peak = i, None
    if peak is not None:
        swings.append((trough, peak))
    amplitudes = []
    for start, top in swings:
        window = np.arange(start, top + 1)
        window = window[times[window] >= times[top] - max_rise_s]
        amp = float(values[top] - values[window].min())
        if amp >= min_amp:
            amplitudes.append(amp)
    return amplitudes


def eda_features(rows: np.ndarray, settings: dict | None = None) -> np.ndarray:
    """EDA_NAMES of (seconds, µS) rows in time order, float64."""
    s = resolve(settings)
    t, x, stats = _series_stats(rows)
    if len(x) == 0:
        return np.full(len(EDA_NAMES), np.nan)
    amps = scr_amplitudes(t, x, s["scr_min_amp"], s["scr_max_rise_s"])
    return np.asarray([*stats, len(amps), max(amps, default=0.0)], dtype=np.float64)


def temp_features(rows: np.ndarray, settings: dict | None = None) -> np.ndarray:
    """TEMP_NAMES of (seconds, °C) rows in time order, float64."""
    resolve(settings)
    return np.asarray(_series_stats(rows)[2], dtype=np.float64)


# --------------------------------------------------------------------------- cache and tables


class FeatureCache:
    """Speech features per wav, kept in memory and, with a folder, on disk as
    folder/<settings digest>/<sha256 of the wav's bytes>.npy (written atomically; a file that fails to
    load, or has the wrong shape, is recomputed). Keyed by content, so a renamed or copied wav is not
    recomputed and a changed one is."""

    def __init__(self, folder: Path | None, settings: dict | None = None):
        self.settings = resolve(settings)
        self.folder = None if folder is None else Path(folder) / digest(self.settings)
        self.memory: dict[str, np.ndarray] = {}

    def speech(self, wav: Path) -> np.ndarray:
        """speech_features of `wav` at its own rate (first channel if several). A missing, unreadable or
        empty wav raises util.DataError naming it."""
        wav = Path(wav)
        try:
            data = wav.read_bytes()
        except OSError:
            raise util.DataError("wav missing" if not wav.is_file() else "wav unreadable", wav) from None
        key = hashlib.sha256(data).hexdigest()
        if key in self.memory:
            return self.memory[key].copy()
        path = None if self.folder is None else self.folder / f"{key}.npy"
        values = self._load(path)
        if values is None:
            try:
                audio, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise util.DataError(f"wav unreadable ({err})", wav) from None
            if audio.shape[0] == 0:
                raise util.DataError("wav empty", wav)
            values = speech_features(audio[:, 0], sr, self.settings)
            if path is not None:
                with util.atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, values)
        self.memory[key] = values
        return values.copy()

    @staticmethod
    def _load(path: Path | None) -> np.ndarray | None:
        if path is None or not path.is_file():
            return None
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return values if values.shape == (len(SPEECH_NAMES),) and values.dtype == np.float64 else None


def column_names(groups: Sequence[str]) -> list[str]:
    """Column names of segment_features(…, groups) in order; an unknown group raises ValueError."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown feature groups {unknown} (known: {sorted(GROUPS)})")
    return [name for g in groups for name in GROUPS[g]]


def segment_features(segments: Sequence, cache: FeatureCache, groups: Sequence[str] = ("audio", "eda", "temp"),
                     progress: bool = True) -> np.ndarray:
    """One float64 row per dataset.Segment (its .wav, .rows["eda"], .rows["temp"]): the named groups' columns
    concatenated in the order given (column_names(groups))."""
    width = len(column_names(groups))
    compute = {"audio": lambda seg: cache.speech(seg.wav),
               "eda": lambda seg: eda_features(seg.rows["eda"], cache.settings),
               "temp": lambda seg: temp_features(seg.rows["temp"], cache.settings)}
    rows = np.empty((len(segments), width), dtype=np.float64)
    for i, seg in enumerate(tqdm(segments, desc="hand-crafted features", unit="segment", disable=not progress)):
        rows[i] = np.concatenate([compute[g](seg) for g in groups]) if groups else []
    return rows


def participant_normalise(values: np.ndarray, participants: Sequence, starts: Sequence[float] | None = None,
                          causal: bool = False) -> np.ndarray:
    """Each column z-scored (population sd) over the rows of the same participant key; no label is read.

    causal=False: over all of the participant's rows. causal=True: prefix statistics, over the
    participant's rows whose start (`starts`, seconds) is at most the row's own (ties included), what an
    online system that labels a segment when it ends has seen; a participant's first row becomes 0.
    An sd at most SD_FLOOR * (1 + |mean|) leaves the column centred only (0 where constant). Non-finite
    values (a segment without a voiced frame has no F0) are left out of the statistics and become 0, the
    participant's mean, so the result is always finite."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) != len(participants):
        raise ValueError(f"values {values.shape} need one row per participant key ({len(participants)})")
    if causal and starts is None:
        raise ValueError("causal normalisation needs the rows' starts")
    starts = np.zeros(len(values)) if starts is None or not causal else np.asarray(starts, dtype=np.float64)
    if len(starts) != len(values):
        raise ValueError(f"{len(starts)} starts for {len(values)} rows")
    out = np.zeros_like(values)
    index: dict[Any, list[int]] = {}
    for i, key in enumerate(participants):
        index.setdefault(key, []).append(i)
    for rows in index.values():
        rows = np.asarray(rows)
        rows = rows[np.argsort(starts[rows], kind="stable")]
        x = values[rows]
        finite = np.isfinite(x)
        first = np.argmax(finite, axis=0)  # the earliest finite value shifts the sums (numerics only)
        shift = np.where(finite.any(axis=0), x[first, np.arange(x.shape[1])], 0.0)
        y = np.where(finite, x - shift, 0.0)
        count, total, squares = (np.cumsum(a, axis=0) for a in (finite.astype(float), y, y * y))
        end = np.searchsorted(starts[rows], starts[rows], side="right") - 1  # last row of each prefix
        count, total, squares = count[end], total[end], squares[end]
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        sd = np.sqrt(np.maximum(np.divide(squares, count, out=np.zeros_like(total), where=count > 0) - mean ** 2, 0))
        centred = y - mean
        scale = np.where(sd > SD_FLOOR * (1 + np.abs(mean + shift)), sd, 1.0)
        out[rows] = np.where(finite, centred / scale, 0.0)
    return out
