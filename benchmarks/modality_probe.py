"""What each modality carries alone: macro-F1 of simple per-segment classifiers under session-grouped CV.

    python benchmarks/modality_probe.py [--preset demo] [--seed 0] [--folds 5] [--data PATH]

Without --data it generates the synthetic `--preset` (seed `--seed`) in a temporary folder; with --data it
reads that KEMDy20-format root (a real download works) through the project's own loaders
(frames.build_frames, dataset.load_segments), in memory: nothing is written under the root.

Per segment it computes the hand-crafted features of encoder/core/handcrafted.py (the classical system's):
EDA (level, slope, sd, range, count of skin-conductance responses and the largest one's size), TEMP
(level, slope, sd, range), audio (the eGeMAPS-like set: F0 in semitones, voicing, loudness, MFCC 1-13,
spectral shape, alpha ratio, Hammarberg index, voiced-run and pause rates, duration) and the transcript.
Each feature set is scored by a class-balanced logistic regression under GroupKFold by session, raw (a
feature a segment lacks, such as F0 without a voiced frame, imputed by the training folds' mean) and
participant-normalised (handcrafted.participant_normalise: each feature z-scored over the segments of its
(session, participant), no label used). Text is scored by character TF-IDF + logistic regression and by
a fixed word-list rule with no training (the class whose
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
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from encoder.core import config, dataset, frames, handcrafted, synthetic, util


def load_table(root: Path) -> pd.DataFrame:
    """One row per usable labelled segment: session, participant, target, transcript and hand features."""
    built = frames.build_frames(root)
    sessions = sorted(int(s) for s in built.gt["session"].unique())
    segments = dataset.load_segments(built, root, splits={"all": sessions}, wanted=("all",)).by_split["all"]
    if not segments:
        raise util.DataError("no usable labelled segment to probe", root)
    groups = ("audio", "eda", "temp")
    features = handcrafted.segment_features(segments, handcrafted.FeatureCache(None), groups)
    table = pd.DataFrame({"segment": [seg.segment_id for seg in segments],
                          "session": [seg.session for seg in segments],
                          "participant": [f"{seg.session}_{seg.identity}" for seg in segments],
                          "target": [seg.target for seg in segments],
                          "transcript": [seg.transcript or "" for seg in segments]})
    return pd.concat([table, pd.DataFrame(features, columns=handcrafted.column_names(groups))], axis=1)


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
        return make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(),
                             LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed))

    rows = [("majority", "-", score(DummyClassifier(strategy="most_frequent"), np.zeros((len(y), 1))))]
    eda, temp = handcrafted.EDA_NAMES, handcrafted.TEMP_NAMES
    feature_sets = {"EDA": eda, "TEMP": temp, "EDA+TEMP": eda + temp, "audio (eGeMAPS-like)": handcrafted.SPEECH_NAMES}
    for name, columns in feature_sets.items():
        values = table[list(columns)].to_numpy(dtype=np.float64)
        rows.append((name, "raw", score(logistic(), values)))
        normalised = handcrafted.participant_normalise(values, table["participant"].tolist())
        rows.append((name, "participant-normalised", score(logistic(), normalised)))
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
