"""What each modality carries alone: macro-F1 of simple per-segment classifiers under session-grouped CV.

    python benchmarks/modality_probe.py [--preset demo] [--seed 0] [--folds 5] [--data PATH]

Without --data it generates the synthetic `--preset` (seed `--seed`) in a temporary folder; with --data it
reads that KEMDy20-format root (a real download works) through the project's own loaders
(frames.build_frames, dataset.load_segments), in memory: nothing is written under the root.

Per segment it computes hand features: EDA (level, slope, range, sd, count of rises above 0.01 µS and
the largest rise), TEMP (level, slope, sd), audio (duration, log-energy mean/sd, voiced share, spectral
centroid, zero-crossing rate, autocorrelation pitch) and the transcript. Each feature set is scored by
a class-balanced logistic regression under GroupKFold by session, raw and participant-normalised (each
feature z-scored over the segments of its (session, participant): no label is used). Text is scored by
character TF-IDF + logistic regression and by a fixed word-list rule with no training (the class whose
synthetic.EMOTION_WORDS list has most words in the transcript, neutral when none). The table's
macro-F1 is over the pooled out-of-fold predictions; the target is the first listed label (as in
docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import find_peaks
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from encoder.core import config, dataset, frames, synthetic, util

EDA_FEATURES = ("eda_level", "eda_slope", "eda_range", "eda_sd", "eda_rises", "eda_max_rise")
TEMP_FEATURES = ("temp_level", "temp_slope", "temp_sd")
AUDIO_FEATURES = ("duration", "log_energy_mean", "log_energy_sd", "voiced_share", "centroid", "zcr", "pitch")
SCR_MIN_RISE = 0.01  # µS: a rise smaller than this is not counted as a skin-conductance response


def slope(times: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope per second (0 for fewer than two rows)."""
    if len(values) < 2:
        return 0.0
    t = times - times.mean()
    return float((t * (values - values.mean())).sum() / max((t * t).sum(), 1e-12))


def bio_features(segment: dataset.Segment) -> dict[str, float]:
    """EDA and TEMP hand features of one segment, from all of its rows."""
    eda_t, eda = segment.eda_rows[:, 0], segment.eda_rows[:, 1]
    temp_t, temp = segment.temp_rows[:, 0], segment.temp_rows[:, 1]
    peaks, props = find_peaks(eda, prominence=SCR_MIN_RISE)
    return {
        "eda_level": float(eda.mean()), "eda_slope": slope(eda_t, eda), "eda_range": float(np.ptp(eda)),
        "eda_sd": float(eda.std()), "eda_rises": len(peaks) / max(len(eda) * config.BIO_STEP_S, 1.0),
        "eda_max_rise": float(props["prominences"].max()) if len(peaks) else 0.0,
        "temp_level": float(temp.mean()), "temp_slope": slope(temp_t, temp), "temp_sd": float(temp.std()),
    }


def audio_features(path: Path, frame: int = 512, hop: int = 256) -> dict[str, float]:
    """Cheap prosodic statistics of one wav (mono or first channel)."""
    audio, sr = sf.read(str(path), dtype="float64", always_2d=True)
    audio = audio[:, 0]
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    windows = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    energy = np.log10((windows ** 2).mean(axis=1) + 1e-10)
    voiced = energy > energy.max() - 2.0  # frames within 20 dB of the loudest
    spectrum = np.abs(np.fft.rfft(windows[voiced] * np.hanning(frame), axis=1))
    freqs = np.fft.rfftfreq(frame, 1.0 / sr)
    centroid = (spectrum * freqs).sum(axis=1) / (spectrum.sum(axis=1) + 1e-12)
    zcr = (np.diff(np.signbit(windows[voiced]), axis=1) != 0).mean(axis=1)
    power = np.abs(np.fft.rfft(windows[voiced] - windows[voiced].mean(axis=1, keepdims=True), n=2 * frame,
                               axis=1)) ** 2
    autocorr = np.fft.irfft(power, axis=1)[:, :frame]
    lo, hi = int(sr / 400), min(int(sr / 60), frame - 1)
    pitch = sr / (lo + autocorr[:, lo:hi].argmax(axis=1))
    return {"duration": len(audio) / sr, "log_energy_mean": float(energy.mean()), "log_energy_sd": float(energy.std()),
            "voiced_share": float(voiced.mean()), "centroid": float(np.median(centroid)),
            "zcr": float(np.median(zcr)), "pitch": float(np.log(np.median(pitch)))}


def load_table(root: Path) -> pd.DataFrame:
    """One row per usable labelled segment: session, participant, target, transcript and hand features."""
    built = frames.build_frames(root)
    sessions = sorted(int(s) for s in built.gt["session"].unique())
    segments = dataset.load_segments(built, root, splits={"all": sessions}, wanted=("all",)).by_split["all"]
    if not segments:
        raise util.DataError("no usable labelled segment to probe", root)
    rows = []
    for seg in segments:
        rows.append({"segment": seg.segment_id, "session": seg.session, "participant": f"{seg.session}_{seg.identity}",
                     "target": seg.target, "transcript": seg.transcript or "",
                     **bio_features(seg), **audio_features(seg.wav)})
    return pd.DataFrame(rows)


def participant_normalised(table: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Each column z-scored over the segments of its (session, participant) (sd 0: centred only)."""
    values = table[list(columns)]
    groups = values.groupby(table["participant"])
    sd = groups.transform("std").fillna(0.0).to_numpy()
    centred = (values - groups.transform("mean")).to_numpy()
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 1e-12)


def word_list_rule(transcripts: list[str]) -> np.ndarray:
    """No training: the class whose EMOTION_WORDS list holds most of the transcript's words (first class on a
    tie, neutral when none)."""
    lists = [set(words) for words in synthetic.EMOTION_WORDS]
    hits = np.array([[sum(w in words for w in text.split()) for words in lists] for text in transcripts])
    return hits.argmax(axis=1)


def probe(table: pd.DataFrame, folds: int, seed: int) -> list[tuple[str, str, float]]:
    """(row name, variant, macro-F1) of every probe over the pooled out-of-fold predictions."""
    y = table["target"].to_numpy(dtype=int)
    groups = table["session"].to_numpy()
    cv = GroupKFold(n_splits=min(folds, len(np.unique(groups))))

    def score(model: object, x: object) -> float:
        pred = cross_val_predict(model, x, y, groups=groups, cv=cv)
        return float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0))

    def logistic() -> object:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced",
                                                                  random_state=seed))

    rows = [("majority", "-", score(DummyClassifier(strategy="most_frequent"), np.zeros((len(y), 1))))]
    feature_sets = {"EDA": EDA_FEATURES, "TEMP": TEMP_FEATURES, "EDA+TEMP": EDA_FEATURES + TEMP_FEATURES,
                    "audio (prosodic stats)": AUDIO_FEATURES}
    for name, columns in feature_sets.items():
        rows.append((name, "raw", score(logistic(), table[list(columns)].to_numpy())))
        rows.append((name, "participant-normalised", score(logistic(), participant_normalised(table, columns))))
    tfidf = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
                          LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed))
    rows.append(("text char TF-IDF + LR", "-", score(tfidf, table["transcript"].to_numpy())))
    rule = word_list_rule(table["transcript"].tolist())
    rows.append(("text word-list rule (no training)", "-",
                 float(f1_score(y, rule, average="macro", labels=np.unique(y), zero_division=0))))
    return rows


def format_table(rows: list[tuple[str, str, float]], header: str) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [header, f"| {'probe':<{width}} | {'features':<22} | macro-F1 |",
             f"|{'-' * (width + 2)}|{'-' * 24}|----------|"]
    lines += [f"| {name:<{width}} | {variant:<22} | {f1:8.3f} |" for name, variant, f1 in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(synthetic.PRESETS), default="demo")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of the classifiers")
    parser.add_argument("--folds", type=int, default=5, help="GroupKFold folds over sessions")
    parser.add_argument("--data", type=Path, default=None, help="probe this KEMDy20-format root instead")
    args = parser.parse_args()
    if args.data is not None:
        table, source = load_table(args.data), str(args.data)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "KEMDy20"
            synthetic.make_dataset(root, args.preset, args.seed)
            table = load_table(root)
        source = f"synthetic {args.preset} seed {args.seed} (generator {synthetic.GENERATOR_VERSION})"
    counts = np.bincount(table["target"], minlength=config.NUM_CLASSES)
    header = (f"{source}: {len(table)} segments, {table['session'].nunique()} sessions, "
              f"{table['participant'].nunique()} participants, {args.folds}-fold GroupKFold by session; "
              f"classes {dict(zip(config.EMOTIONS, counts.tolist(), strict=True))}")
    print(format_table(probe(table, args.folds, args.seed), header))


if __name__ == "__main__":
    util.run_cli(main)
